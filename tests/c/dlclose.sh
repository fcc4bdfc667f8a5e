#!/bin/sh
# A C plugin linked with libdomalloc.a (its own private copy of the allocator) survives dlclose:
# builds tests/c/dlclose_plugin.c into a .so with the static archive and -Wl,--exclude-libs,ALL,
# and tests/c/dlclose_host.c, then runs both host modes 10 times each, plain and under
# LD_PRELOAD=libdomalloc.so (the host's own malloc is then another domalloc).
#   tests/c/dlclose.sh [DIR-WITH-libdomalloc.a-AND-.so]   (default: target/release; build it with
#   `cargo build --release -p domalloc-ffi`)
# Before the fix (9545c7b): SIGSEGV in every run of both modes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
rel=${1:-${CARGO_TARGET_DIR:-$here/../../target}/release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -fPIC -shared -o "$work/plugin.so" "$here/dlclose_plugin.c" -Wl,--exclude-libs,ALL "$rel/libdomalloc.a" -pthread -ldl -lm
cc -O2 -o "$work/host" "$here/dlclose_host.c" -pthread -ldl
fail=0
for pre in "" "$rel/libdomalloc.so"; do
    for mode in purge thread; do
        ok=0
        for i in 1 2 3 4 5 6 7 8 9 10; do
            if env ${pre:+LD_PRELOAD=$pre} "$work/host" "$mode" "$work/plugin.so" >/dev/null 2>&1; then ok=$((ok + 1)); fi
        done
        echo "dlclose $mode${pre:+ (host under LD_PRELOAD)}: $ok of 10 runs survived"
        [ "$ok" = 10 ] || fail=1
    done
done
exit $fail
