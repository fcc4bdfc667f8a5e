#!/usr/bin/env bash
# Reliability checks beyond `cargo test`: fuzzing, model checking, sanitizers, Miri, soak.
#
#   scripts/reliability.sh quick   fuzz (60 s) + loom: what scripts/test.sh runs
#   scripts/reliability.sh fuzz    replay the seed corpus, then fuzz alloc_ops for FUZZ_SECS (60)
#   scripts/reliability.sh loom    loom on the page remote-free protocol's real code (loom-model/)
#   scripts/reliability.sh tsan    ThreadSanitizer on smoke, random_ops and the full-page scenario
#   scripts/reliability.sh miri    Miri on the pure modules (size_class, util, layout::codec)
#   scripts/reliability.sh soak    tests/soak.rs for DOMALLOC_SOAK_SECS (60), plus misuse and
#                                  faults in both build modes
#   scripts/reliability.sh all     everything above
#
# Fuzzing, TSan and Miri need the nightly toolchain (and cargo-fuzz, installed from crates.io
# when missing); without them those steps are reported as skipped, not failed. Logs go to
# $CARGO_TARGET_DIR/reliability/ (default target/reliability/). The last line is
# `N passed, M failed, K skipped`; the exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
LOGS=$TARGET/reliability
mkdir -p "$LOGS"
FUZZ_SECS=${FUZZ_SECS:-60}

passed=0 failed=0 skipped=0
results=()
record() { # name status detail
    results+=("$(printf '%-8s %-7s %s' "$1" "$2" "$3")")
    case $2 in
        pass) passed=$((passed + 1)) ;;
        FAIL) failed=$((failed + 1)) ;;
        skip) skipped=$((skipped + 1)) ;;
    esac
}
step() { echo; echo "== $*"; }
have_nightly() { cargo +nightly --version >/dev/null 2>&1; }

ensure_cargo_fuzz() {
    cargo fuzz --version >/dev/null 2>&1 && return 0
    echo "cargo-fuzz missing: installing it from crates.io (cargo install cargo-fuzz)"
    timeout 900 cargo install --locked cargo-fuzz >"$LOGS/install-cargo-fuzz.log" 2>&1 ||
        timeout 900 cargo install cargo-fuzz >>"$LOGS/install-cargo-fuzz.log" 2>&1
}

run_fuzz() {
    step "fuzz: alloc_ops (seed corpus replay, then ${FUZZ_SECS} s)"
    if ! have_nightly; then record fuzz skip "no nightly toolchain"; return; fi
    if ! ensure_cargo_fuzz; then record fuzz skip "cargo-fuzz not installable (see $LOGS/install-cargo-fuzz.log)"; return; fi
    local t0=$SECONDS bin="$TARGET/fuzz/x86_64-unknown-linux-gnu/release/alloc_ops"
    # No sanitizer: domalloc's memory is its own mmap, invisible to ASan; the harness's shadow
    # model does the checking. Debug assertions on (the core's debug_assert!s run).
    if ! cargo +nightly fuzz build -s none -a --target-dir "$TARGET/fuzz" alloc_ops >"$LOGS/fuzz-build.log" 2>&1; then
        tail -20 "$LOGS/fuzz-build.log"; record fuzz FAIL "build failed ($LOGS/fuzz-build.log)"; return
    fi
    local work="$TARGET/fuzz-corpus/alloc_ops" arts="$ROOT/fuzz/artifacts/alloc_ops/"
    mkdir -p "$work" "$arts"
    local opts=(-max_len=4096 -rss_limit_mb=4096 -timeout=60 "-artifact_prefix=$arts" -print_final_stats=1)
    if ! "$bin" "${opts[@]}" -runs=0 fuzz/corpus/alloc_ops >"$LOGS/fuzz-replay.log" 2>&1; then
        tail -40 "$LOGS/fuzz-replay.log"; record fuzz FAIL "a seed input fails ($LOGS/fuzz-replay.log)"; return
    fi
    # New inputs go to the scratch corpus under the target dir, never into fuzz/corpus.
    if ! "$bin" "${opts[@]}" -max_total_time="$FUZZ_SECS" "$work" fuzz/corpus/alloc_ops >"$LOGS/fuzz.log" 2>&1; then
        grep -E "panicked|ERROR|SUMMARY|Test unit written|^thread" "$LOGS/fuzz.log" | head -20
        record fuzz FAIL "crash found, input saved under fuzz/artifacts/alloc_ops/ ($LOGS/fuzz.log)"; return
    fi
    local runs; runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOGS/fuzz.log" | grep -o '[0-9]*$')
    record fuzz pass "${runs:-?} inputs in $((SECONDS - t0)) s"
}

run_loom() {
    step "loom: page remote-free protocol, the real src/layout/remote.rs (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2})"
    local t0=$SECONDS
    # loom-model/ compiles src/sys/sync.rs and src/layout/remote.rs with cfg(loom) (its build.rs sets it).
    if (cd loom-model && cargo test --release -- --nocapture --test-threads=1) >"$LOGS/loom.log" 2>&1; then
        local sum; sum=$(awk '/loom explored/ { n++; for (i = 1; i < NF; i++) if ($i == "explored") e += $(i + 1) } END { print n + 0 " models, " e + 0 }' "$LOGS/loom.log")
        record loom pass "$sum executions in $((SECONDS - t0)) s"
    else
        grep -E "^test |panicked|Causality|events of|^ThreadId" "$LOGS/loom.log" | head -40
        record loom FAIL "see $LOGS/loom.log"
    fi
}

run_tsan() {
    step "tsan: ThreadSanitizer (smoke, random_ops, soak::full_pages_freed_by_two_threads)"
    if ! have_nightly; then record tsan skip "no nightly toolchain"; return; fi
    local t0=$SECONDS ok=1
    export RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" TSAN_OPTIONS="halt_on_error=0 ${TSAN_OPTIONS:-}"
    local common=(+nightly test -Zbuild-std --target x86_64-unknown-linux-gnu -p domalloc)
    cargo "${common[@]}" --test smoke --test random_ops >"$LOGS/tsan.log" 2>&1 || ok=0
    cargo "${common[@]}" --test soak full_pages >>"$LOGS/tsan.log" 2>&1 || ok=0
    unset RUSTFLAGS RUSTDOCFLAGS
    local races; races=$(grep -c "WARNING: ThreadSanitizer" "$LOGS/tsan.log")
    if [ "$ok" = 1 ] && [ "$races" = 0 ]; then
        record tsan pass "no reports in $((SECONDS - t0)) s"
    else
        grep -A12 "WARNING: ThreadSanitizer" "$LOGS/tsan.log" | grep -E "WARNING|Write|Read|#[0-4] " | head -30
        record tsan FAIL "$races report(s), tests ok=$ok ($LOGS/tsan.log)"
    fi
}

run_miri() {
    step "miri: size_class, util and the link codec"
    if ! have_nightly; then record miri skip "no nightly toolchain"; return; fi
    if ! cargo +nightly miri --version >/dev/null 2>&1 && ! rustup +nightly component add miri >/dev/null 2>&1; then
        record miri skip "miri not installed and not installable"; return
    fi
    local t0=$SECONDS
    if cargo +nightly miri test -p domalloc --lib -- size_class util codec >"$LOGS/miri.log" 2>&1; then
        record miri pass "$(grep -o '[0-9]* passed' "$LOGS/miri.log" | tail -1) in $((SECONDS - t0)) s"
    else
        tail -30 "$LOGS/miri.log"; record miri FAIL "see $LOGS/miri.log"
    fi
}

run_soak() {
    local secs=${DOMALLOC_SOAK_SECS:-60}
    step "soak: tests/soak.rs for $secs s; misuse and faults, default and --features debug-invariants"
    local t0=$SECONDS ok=1
    DOMALLOC_SOAK_SECS=$secs cargo test -p domalloc --test soak -- --nocapture >"$LOGS/soak.log" 2>&1 || ok=0
    for feat in "" "--features debug-invariants"; do
        # shellcheck disable=SC2086
        cargo test -p domalloc $feat --test misuse --test faults >>"$LOGS/soak.log" 2>&1 || ok=0
    done
    if [ "$ok" = 1 ]; then
        record soak pass "$(grep -o 'soak: [^;]*' "$LOGS/soak.log" | head -1) ($((SECONDS - t0)) s)"
    else
        grep -E "^test .*FAILED|panicked|did not|hung" "$LOGS/soak.log" | head -20
        record soak FAIL "see $LOGS/soak.log"
    fi
}

what=${1:-quick}
case $what in
    quick) run_fuzz; run_loom ;;
    fuzz) run_fuzz ;;
    loom) run_loom ;;
    tsan) run_tsan ;;
    miri) run_miri ;;
    soak) run_soak ;;
    all) run_fuzz; run_loom; run_miri; run_soak; run_tsan ;;
    -h | --help | help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "usage: $0 [quick|fuzz|loom|tsan|miri|soak|all]" >&2; exit 2 ;;
esac

echo
echo "== reliability ($what)"
for r in "${results[@]}"; do echo "  $r"; done
echo "reliability: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
