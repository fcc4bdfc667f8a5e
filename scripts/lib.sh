# The harness shared by the shell test scripts (sourced, not run): one line per test (PASS,
# FAIL with the log's tail, SKIP), a name filter, the Debian packages, the release build and the
# closing "N passed, M failed, K skipped" line.
#
# Before sourcing, set WORK (a folder for the logs) and FILTER (run only the tests whose name
# contains it; empty: all). After sourcing, a script may redefine test_info (the summary shown
# after PASS) and set TEST_PRELUDE (shell code run before a test function, e.g. "set -e;").

PASSED=0
FAILED=0
SKIPPED=0
FAILED_NAMES=()
TEST_PRELUDE=${TEST_PRELUDE:-}

say() { printf '%s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
selected() { [ -z "$FILTER" ] || [[ "$1" == *"$FILTER"* ]]; }

# test_info LOG: what PASS shows of a test's log: its last line starting with "ok: ".
test_info() { grep '^ok: ' "$1" | tail -1 | cut -c5-120; }

# run_test NAME TIMEOUT CMD...: runs CMD (output to $WORK/NAME.log); PASS on exit 0. A shell
# function runs in a child bash that has every function of the script.
run_test() {
    local name=$1 limit=$2
    shift 2
    selected "$name" || return 0
    local log="$WORK/$name.log" t0 rc secs
    t0=$(date +%s.%N)
    if declare -F "$1" >/dev/null; then
        timeout -k 10 "$limit" bash -c "$TEST_PRELUDE $(declare -f); \"\$@\"" _ "$@" >"$log" 2>&1
    else
        timeout -k 10 "$limit" "$@" >"$log" 2>&1
    fi
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ]; then
        PASSED=$((PASSED + 1))
        local info
        info=$(test_info "$log")
        say "PASS  $name (${secs}s)${info:+  -- $info}"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        [ $rc -eq 124 ] && say "FAIL  $name: timed out after ${limit}s" || say "FAIL  $name (exit $rc, ${secs}s)"
        tail -n 30 "$log" | sed 's/^/      | /'
    fi
}

# skip NAME WHY
skip() {
    selected "$1" || return 0
    SKIPPED=$((SKIPPED + 1))
    say "SKIP  $1: $2"
}

# ensure_packages PKG...: as root on Debian, installs those not installed (all at once, else one
# by one: a package this release lacks must not stop the rest), keeping package scripts from
# starting services (redis-server) meanwhile; without recommended packages unless APT_RECOMMENDS=1.
# Elsewhere it does nothing.
ensure_packages() {
    if [ "$(id -u)" != 0 ] || ! have apt-get || ! have dpkg-query; then return 0; fi
    local missing=() p policy=/usr/sbin/policy-rc.d made= opt=--no-install-recommends
    [ -z "${APT_RECOMMENDS:-}" ] || opt=--install-recommends
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    [ -e $policy ] || { printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made=1; }
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq $opt "${missing[@]}" >/dev/null 2>&1 ||
        for p in "${missing[@]}"; do
            apt-get install -y -qq $opt "$p" >/dev/null 2>&1 || say "  (could not install $p)"
        done
    [ -z "$made" ] || rm -f $policy
}

# build_release [ARGS...]: cargo build --release ARGS (default: -p domalloc-ffi -p domalloc-tools,
# libdomalloc and the launcher) into $CARGO_TARGET_DIR; on failure the build log's tail,
# "FAIL  build" and exit 1.
build_release() {
    [ $# -gt 0 ] || set -- -p domalloc-ffi -p domalloc-tools
    say "building (cargo build --release $*) in $CARGO_TARGET_DIR"
    local t0=$SECONDS
    if ! cargo build --release "$@" >"$WORK/build.log" 2>&1; then
        tail -n 40 "$WORK/build.log"
        say "FAIL  build"
        say "0 passed, 1 failed"
        exit 1
    fi
    say "built in $((SECONDS - t0))s"
}

# summary: the failed tests' names and the closing line; returns non-zero on any failure.
summary() {
    say ""
    [ $FAILED -gt 0 ] && say "failed: ${FAILED_NAMES[*]}"
    [ -n "${KEEP_WORK:-}" ] && say "logs kept in $WORK"
    if [ $SKIPPED -gt 0 ]; then
        say "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    else
        say "$PASSED passed, $FAILED failed"
    fi
    [ $FAILED -eq 0 ]
}
