#!/usr/bin/env bash
# The whole test suite: the README's test command and what CI (.ci/run) runs.
# On a fresh Debian machine, as root, it installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(pkg-config libhwloc-dev libudev-dev hwloc gcc gfortran openmpi-bin libopenmpi-dev
          python3 sqlite3 git qemu-system-x86 linux-image-amd64 busybox-static)

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

step "unit and integration tests (cargo test --workspace)"
cargo test --workspace --exclude domalloc-numa-tests 2>&1

step "tests again with expensive invariant checks (--features check)"
cargo test -p domalloc --features check --tests 2>&1

if [ -x scripts/test-ffi.sh ]; then
    step "C ABI with real programs (scripts/test-ffi.sh)"
    scripts/test-ffi.sh
fi

if [ -f numa-tests/Cargo.toml ] && grep -q '\[\[test\]\]\|tests/' <(ls numa-tests/tests 2>/dev/null; cat numa-tests/Cargo.toml); then
    step "NUMA placement in QEMU guests with 2 and 4 nodes (cargo test -p domalloc-numa-tests)"
    cargo test -p domalloc-numa-tests --release 2>&1
fi

if [ -x scripts/check-bsd.sh ]; then
    step "FreeBSD and DragonFly compile checks (scripts/check-bsd.sh)"
    scripts/check-bsd.sh
fi

step "all tests passed"
