#!/usr/bin/env bash
# The allocator comparison: domalloc against glibc, jemalloc, mimalloc 2 (Debian), mimalloc 3
# and tcmalloc on the workloads of bench-suite/, swapped in with LD_PRELOAD.
#
#   scripts/bench.sh --quick          # about two minutes; results in results/quick/ (not results/latest.*)
#   scripts/bench.sh                  # the full run (about 7 minutes on a 2-core machine; --numa adds ~1.5)
#   scripts/bench.sh --contention     # the contention report (a contention-stats domalloc, 2-64 threads)
#   scripts/bench.sh --guest          # test-stress in QEMU guests 1n8 and 4n2 (~5-10 minutes)
#   scripts/bench.sh --apps           # real programs: hpcc, LAMMPS, sqlite3, gcc, redis
#   scripts/bench.sh --icount         # malloc+free instructions per pair under callgrind (~1 minute)
#   scripts/bench.sh --help           # every option of the runner (filters, --threads, --part...)
#
# What it does:
#   1. installs the Debian packages it needs when run as root (hwloc/udev/pkg-config for the
#      thread pinning, and the peers libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4);
#   2. builds the suite (cargo build --release -p domalloc-bench-suite);
#   3. builds libdomalloc.so (cargo build --release -p domalloc-ffi); if that fails or produces
#      no library, domalloc is skipped with a clear line;
#   4. builds mimalloc v3 as a preloadable libmimalloc3.so from the C sources bundled in the
#      libmimalloc-sys crate (fetched with cargo);
#   5. for the contention part, builds the contention-stats library
#      (CARGO_TARGET_DIR=target/contention ... --features contention-stats); for --apps, installs
#      the apps' Debian packages (hpcc lammps sqlite3 redis-server redis-tools openmpi-bin gcc);
#      for --icount, valgrind;
#   6. runs the runner (target/release/bench) with the arguments given here; results go to
#      results/<date>/ and results/latest.{csv,md,svg} (--quick: results/quick/).
# A peer that cannot be found or does not take over malloc when preloaded is skipped with a
# line saying why. Honours CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TARGET="$CARGO_TARGET_DIR"
log() { printf '==> %s\n' "$*"; }
. "$ROOT/scripts/lib.sh"

QUICK= OUT_GIVEN= WANT_CONTENTION= WANT_APPS= WANT_ICOUNT=
prev=
for a in "$@"; do
  case "$a" in
    -h|--help) HELP=1 ;;
    --quick) QUICK=1 ;;
    --out|--out=*) OUT_GIVEN=1 ;;
    --contention) WANT_CONTENTION=1 ;;
    --apps) WANT_APPS=1 ;;
    --icount) WANT_ICOUNT=1 ;;
    --part=*) case "$a" in *contention*) WANT_CONTENTION=1 ;; esac; case "$a" in *apps*) WANT_APPS=1 ;; esac
              case "$a" in *icount*) WANT_ICOUNT=1 ;; esac ;;
  esac
  if [ "$prev" = --part ]; then
    case "$a" in *contention*) WANT_CONTENTION=1 ;; esac
    case "$a" in *apps*) WANT_APPS=1 ;; esac
    case "$a" in *icount*) WANT_ICOUNT=1 ;; esac
  fi
  prev=$a
done

# 1. System packages -----------------------------------------------------------------------
PKGS=(libhwloc-dev libudev-dev pkg-config libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4)
# The apps of --apps (ensure_packages keeps redis-server's postinst from starting a daemon).
[ -n "$WANT_APPS" ] && PKGS+=(hpcc lammps sqlite3 redis-server redis-tools openmpi-bin gcc)
# The instruction report runs the workloads under callgrind.
[ -n "$WANT_ICOUNT" ] && PKGS+=(valgrind)
APT_RECOMMENDS=1 ensure_packages "${PKGS[@]}"
have dpkg-query || log "not a Debian system: install hwloc (dev), libudev (dev), pkg-config, jemalloc, mimalloc and tcmalloc yourself; missing peers are skipped"

# 2. The suite -------------------------------------------------------------------------------
log "building the suite (cargo build --release -p domalloc-bench-suite)"
cargo build --release -p domalloc-bench-suite
BENCH="$TARGET/release/bench"
if [ -n "${HELP:-}" ]; then
  exec "$BENCH" --help
fi

# 3. domalloc ----------------------------------------------------------------------------------
ARGS=()
DOMALLOC_SO="$TARGET/release/libdomalloc.so"
log "building domalloc (cargo build --release -p domalloc-ffi)"
if cargo build --release -p domalloc-ffi; then
  if [ -f "$DOMALLOC_SO" ]; then
    ARGS+=(--domalloc "$DOMALLOC_SO")
  else
    log "SKIP domalloc: domalloc-ffi built but produced no $DOMALLOC_SO (the C ABI crate is not finished)"
    ARGS+=(--skip "domalloc=domalloc-ffi builds no libdomalloc.so yet")
  fi
else
  log "SKIP domalloc: cargo build --release -p domalloc-ffi failed (see above)"
  ARGS+=(--skip "domalloc=cargo build --release -p domalloc-ffi failed")
fi

# 4. mimalloc v3 -----------------------------------------------------------------------------
MI3_DIR="$TARGET/mimalloc3"
MI3="$MI3_DIR/libmimalloc3.so"
REGISTRY="${CARGO_HOME:-$HOME/.cargo}/registry/src"
find_mi3_src() {
  # Newest libmimalloc-sys that bundles the v3 sources.
  ls -d "$REGISTRY"/*/libmimalloc-sys-*/c_src/mimalloc/v3 2>/dev/null | sort -V | tail -n 1
}
MI3_SRC="$(find_mi3_src || true)"
if [ -z "$MI3_SRC" ]; then
  log "fetching the libmimalloc-sys crate (mimalloc v3 sources) with cargo"
  mkdir -p "$MI3_DIR/fetch/src"
  cat >"$MI3_DIR/fetch/Cargo.toml" <<'EOF'
[package]
name = "fetch-mimalloc-sources"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
libmimalloc-sys = { version = "0.1.44", features = ["v3"] }

[workspace]
EOF
  echo "" >"$MI3_DIR/fetch/src/lib.rs"
  (cd "$MI3_DIR/fetch" && cargo fetch -q) || log "WARNING: cargo fetch of libmimalloc-sys failed"
  MI3_SRC="$(find_mi3_src || true)"
fi
if [ -z "$MI3_SRC" ]; then
  log "SKIP mimalloc3: no libmimalloc-sys with c_src/mimalloc/v3 under $REGISTRY"
  ARGS+=(--skip "mimalloc3=mimalloc v3 sources not found (libmimalloc-sys crate)")
elif ! command -v cc >/dev/null 2>&1; then
  log "SKIP mimalloc3: no C compiler (cc)"
  ARGS+=(--skip "mimalloc3=no C compiler to build it")
else
  if [ ! -f "$MI3" ] || [ "$(cat "$MI3_DIR/SOURCE" 2>/dev/null)" != "$MI3_SRC" ]; then
    log "building mimalloc v3 from $MI3_SRC"
    mkdir -p "$MI3_DIR"
    # The flags of mimalloc's own CMake shared-library build. MI_MALLOC_OVERRIDE is essential:
    # without it the library exports only mi_* and preloading it replaces nothing.
    if cc -O2 -fPIC -shared -DNDEBUG -DMI_MALLOC_OVERRIDE -DMI_SHARED_LIB -DMI_SHARED_LIB_EXPORT \
        -fvisibility=hidden -ftls-model=initial-exec -fno-builtin-malloc \
        -I "$MI3_SRC/include" "$MI3_SRC/src/static.c" -o "$MI3.tmp" -lpthread; then
      mv "$MI3.tmp" "$MI3"
      echo "$MI3_SRC" >"$MI3_DIR/SOURCE"
    else
      log "SKIP mimalloc3: the C build failed"
      ARGS+=(--skip "mimalloc3=C build failed")
    fi
  fi
  # The runner checks that it really is v3 and that preloading it replaces malloc.
  [ -f "$MI3" ] && ARGS+=(--mimalloc3 "$MI3")
fi

# 5. The contention-stats library ------------------------------------------------------------
if [ -n "$WANT_CONTENTION" ]; then
  CONT_SO="$ROOT/target/contention/release/libdomalloc.so"
  log "building the contention-stats domalloc (CARGO_TARGET_DIR=target/contention ... --features contention-stats)"
  if CARGO_TARGET_DIR="$ROOT/target/contention" cargo build --release -p domalloc-ffi --features contention-stats \
      && [ -f "$CONT_SO" ]; then
    ARGS+=(--domalloc-contention "$CONT_SO")
  else
    log "SKIP contention report: the contention-stats build failed (see above)"
    ARGS+=(--skip "domalloc-contention=cargo build -p domalloc-ffi --features contention-stats failed")
  fi
fi

# 6. Run -------------------------------------------------------------------------------------
export BENCH_COMMAND="scripts/bench.sh $*"
OUT="$ROOT/results"
if [ -n "$QUICK" ] && [ -z "$OUT_GIVEN" ]; then
  # Quick runs do not overwrite the tracked results/latest.* of the full run.
  OUT="$ROOT/results/quick"
  log "--quick: results go to $OUT/<date>/ and $OUT/latest.* (not results/latest.*)"
fi
[ -n "$OUT_GIVEN" ] && OUTARG=() || OUTARG=(--out "$OUT")
log "running: $BENCH ${OUTARG[*]} ${ARGS[*]} $*"
exec "$BENCH" "${OUTARG[@]}" "${ARGS[@]}" "$@"
