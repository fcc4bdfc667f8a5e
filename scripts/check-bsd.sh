#!/usr/bin/env bash
# Compile checks for the BSD ports: `cargo check` and `cargo clippy -- -D warnings` of every
# workspace crate that can be built for
#   - x86_64-unknown-freebsd   (tier 2: stable toolchain, `rustup target add`)
#   - x86_64-unknown-dragonfly (tier 3: no prebuilt std, so nightly with -Zbuild-std)
# Nothing is linked or run: there is no BSD machine here. Installs the rustup pieces it needs.
# Exits non-zero if any check fails (all checks run first, then a summary is printed).
#
# Crates whose normal dependencies include hwlocality-sys (bindings to the hwloc C library, which
# its build script finds with pkg-config for the host only) cannot be cross-checked; they are
# listed as skipped with that reason. Tests are not checked for the BSDs either: they need the
# dev-dependencies, hwlocality among them.
set -uo pipefail
cd "$(dirname "$0")/.."

FREEBSD=x86_64-unknown-freebsd
DRAGONFLY=x86_64-unknown-dragonfly
NIGHTLY=${DOMALLOC_NIGHTLY:-nightly}

failures=()
step_start=0
step() { echo; echo "== $*"; step_start=$SECONDS; }
done_step() { echo "   ($((SECONDS - step_start)) s)"; }
fail() { echo "FAILED: $*" >&2; failures+=("$*"); }

command -v rustup >/dev/null || { echo "check-bsd: rustup is required to add the BSD targets" >&2; exit 1; }

step "toolchains"
if ! rustup target list --installed | grep -qx "$FREEBSD"; then
    rustup target add "$FREEBSD" || { echo "check-bsd: cannot install the $FREEBSD target" >&2; exit 1; }
fi
rustup component list --installed | grep -q '^clippy' || rustup component add clippy \
    || { echo "check-bsd: cannot install clippy" >&2; exit 1; }
have_nightly=1
if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src || have_nightly=0
fi
if [ $have_nightly = 1 ] && ! rustup component list --toolchain "$NIGHTLY" --installed | grep -q '^rust-src'; then
    rustup component add rust-src --toolchain "$NIGHTLY" || have_nightly=0
fi
[ $have_nightly = 1 ] || fail "no $NIGHTLY toolchain with rust-src: $DRAGONFLY cannot be checked"
nightly_clippy=0
if [ $have_nightly = 1 ]; then
    if rustup component list --toolchain "$NIGHTLY" --installed | grep -q '^clippy' \
        || rustup component add clippy --toolchain "$NIGHTLY" >/dev/null 2>&1; then
        nightly_clippy=1
    fi
fi
rustc --version
[ $have_nightly = 1 ] && rustup run "$NIGHTLY" rustc --version
done_step

# Workspace members, minus those that need the hwloc C library for the target.
crates_for() {
    local target=$1 name
    for name in $(cargo tree --workspace --depth 0 --prefix none -e normal --target "$target" 2>/dev/null \
                  | awk 'NF {print $1}' | sort -u); do
        if cargo tree -p "$name" -e normal --target "$target" --prefix none 2>/dev/null \
            | grep -q '^hwlocality-sys '; then
            echo "skipped: $name depends on hwlocality-sys (the hwloc C library, found with" \
                 "pkg-config for the host only); it cannot be cross-checked for $target" >&2
        else
            echo "$name"
        fi
    done
}

step "crates to check"
mapfile -t crates < <(crates_for "$FREEBSD")
[ ${#crates[@]} -gt 0 ] || { echo "check-bsd: no crates found (cargo tree failed?)" >&2; exit 1; }
pkgs=()
for c in "${crates[@]}"; do pkgs+=(-p "$c"); done
echo "checking: ${crates[*]}"
done_step

step "cargo check --target $FREEBSD"
cargo check "${pkgs[@]}" --target "$FREEBSD" || fail "cargo check ($FREEBSD)"
done_step

step "cargo clippy --target $FREEBSD -- -D warnings"
cargo clippy "${pkgs[@]}" --target "$FREEBSD" -- -D warnings || fail "cargo clippy ($FREEBSD)"
done_step

if [ $have_nightly = 1 ]; then
    build_std=(-Zbuild-std=std,panic_abort --target "$DRAGONFLY")

    step "cargo +$NIGHTLY check -Zbuild-std --target $DRAGONFLY"
    cargo "+$NIGHTLY" check "${pkgs[@]}" "${build_std[@]}" || fail "cargo check ($DRAGONFLY)"
    done_step

    if [ $nightly_clippy = 1 ]; then
        step "cargo +$NIGHTLY clippy -Zbuild-std --target $DRAGONFLY -- -D warnings"
        cargo "+$NIGHTLY" clippy "${pkgs[@]}" "${build_std[@]}" -- -D warnings || fail "cargo clippy ($DRAGONFLY)"
        done_step
    else
        echo "note: clippy is not available for $NIGHTLY; $DRAGONFLY is compile-checked only"
    fi
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
    echo "check-bsd: ${#failures[@]} failed: ${failures[*]} (${SECONDS} s)" >&2
    exit 1
fi
echo "check-bsd: all BSD checks passed (${SECONDS} s)"
