#!/usr/bin/env bash
# The whole test suite: the README's test command and what CI (.ci/run) runs.
# On a fresh Debian machine, as root, it installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(pkg-config libhwloc-dev libudev-dev hwloc gcc gfortran openmpi-bin libopenmpi-dev
          python3 sqlite3 git qemu-system-x86 linux-image-amd64 busybox-static valgrind)

missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing Debian packages: ${missing[*]} (run as root on Debian to install them)" >&2
        exit 1
    fi
fi

step() { echo; echo "== $*"; }

# Rust toolchains: the BSD targets and nightly (DragonFly build-std, fuzzing, loom, TSan, Miri).
if command -v rustup >/dev/null; then
    rustup target list --installed | grep -q x86_64-unknown-freebsd || rustup target add x86_64-unknown-freebsd
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    rustup +nightly component list --installed 2>/dev/null | grep -q rust-src || rustup +nightly component add rust-src
    rustup +nightly component list --installed 2>/dev/null | grep -q '^miri' || rustup +nightly component add miri
fi

T0=$SECONDS
step "formatting: the whole tree as rustfmt.toml says (cargo fmt --check)"
if command -v rustup >/dev/null; then
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
fi
cargo fmt --all -- --check
(cd loom-model && cargo fmt -- --check)
(cd fuzz && cargo fmt -- --check)

step "lints: clippy on every crate and target, warnings are errors"
if command -v rustup >/dev/null; then
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi
cargo clippy --workspace --all-targets -- -D warnings

step "unit and integration tests (cargo test --workspace)"
cargo test --workspace --exclude domalloc-numa-tests 2>&1

step "tests again with expensive invariant checks (--features debug-invariants)"
cargo test -p domalloc --features debug-invariants --tests 2>&1

step "tests again in the hardened build (--features hardened: guard pages, shuffled carving)"
cargo test -p domalloc --features hardened --tests 2>&1

step "tests again in the quarantine build (--features quarantine: quarantine, poisoning, guard pages)"
cargo test -p domalloc --features quarantine --tests 2>&1

step "lock counts of the contention-stats build (--features contention-stats)"
cargo test -p domalloc --features contention-stats --test contention_counts 2>&1

step "C ABI with real programs (scripts/test-ffi.sh)"
scripts/test-ffi.sh

step "HPC codes under domalloc: HPCC, LAMMPS (MPI, OpenMP), per-rank statistics (scripts/test-apps.sh)"
scripts/test-apps.sh

step "installation and site tools: pkg-config, CMake, man, Lmod, EasyBuild, crate packaging (scripts/test-site.sh)"
scripts/test-site.sh

step "NUMA placement in QEMU guests with 2 and 4 nodes (cargo test -p domalloc-numa-tests)"
cargo test -p domalloc-numa-tests --release 2>&1

step "FreeBSD and DragonFly compile checks (scripts/check-bsd.sh)"
scripts/check-bsd.sh

step "reliability: fuzzing (60 s), loom, Miri, ThreadSanitizer (scripts/reliability.sh)"
scripts/reliability.sh quick
scripts/reliability.sh miri
scripts/reliability.sh tsan

step "all tests passed ($(( (SECONDS - T0) / 60 )) min $(( (SECONDS - T0) % 60 )) s)"
