#!/usr/bin/env bash
# Installation and site tools, each with the real tool: ffi/install.sh into fresh prefixes, the
# SONAME and its links, the exports of libdomalloc.so and libdomalloc.a (next to another Rust
# static library), pkg-config (shared, static, relocated, without rpath, ldconfig), the CMake
# package, the man pages (man --warnings), the launcher and LD_PRELOAD, the Lmod modulefiles (real
# Lmod), the EasyBuild easyconfig (EasyBuild from PyPI: checksums, dry runs, a real install), the
# crate's packaging (cargo package, cargo publish --dry-run) and its examples.
# The Spack recipe is NOT run with Spack (Spack cannot be installed here); only its Python syntax
# is checked.
#
#   scripts/test-site.sh            everything
#   scripts/test-site.sh lmod       only the checks whose name contains "lmod"
#   SITE_EB_INSTALL=0 scripts/test-site.sh   EasyBuild dry runs only (no real EasyBuild install)
#
# As root on Debian it installs what it needs: lmod, cmake, man-db, python3-venv, gcc, binutils,
# pkg-config (apt), EasyBuild 5.4.1 from PyPI in a venv under target/site-tools/. Prints one line
# per check and a final "N passed, M failed, K skipped"; exits non-zero on any failure.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$CARGO_TARGET_DIR/release
FILTER=${1:-}
SITE_EB_INSTALL=${SITE_EB_INSTALL:-1}
TOOLS=$CARGO_TARGET_DIR/site-tools
WORK=$(mktemp -d "${TMPDIR:-/tmp}/domalloc-site.XXXXXX")
KEEP_WORK=${KEEP_WORK:-}
LDCONF=/etc/ld.so.conf.d/domalloc-test-site-$$.conf
cleanup() {
    if [ -f "$LDCONF" ]; then rm -f "$LDCONF"; ldconfig 2>/dev/null; fi
    [ -n "$KEEP_WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
export ROOT REL WORK TOOLS LDCONF SITE_EB_INSTALL
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' ffi/Cargo.toml | head -1)
MAJOR=${VERSION%%.*}
export VERSION MAJOR
P=$WORK/prefix            # the main installation
export P
. "$ROOT/scripts/lib.sh"
# A test is a function run under set -e (not pipefail: `cmd | grep -q` would fail whenever grep
# exits before cmd finished); PASS shows its log's last line starting with "ok:".
TEST_PRELUDE="set -e;"
fail() { echo "FAILED: $*" >&2; return 1; }

# ---- packages ----

# lmod, cmake, man, EasyBuild's venv; the compilers; hwloc and udev for the launcher's build.
ensure_packages lmod cmake man-db groff-base python3-venv gcc g++ gfortran libc6-dev binutils pkg-config file \
    libhwloc-dev libudev-dev git tar
build_release

# A small C program: malloc must be domalloc's (domalloc_node_of knows only its own blocks), the
# header and the library must agree on the version. Linked against the extras.
cat >"$WORK/app.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <domalloc.h>
int main(void) {
    char *p = malloc(100);
    if (p == NULL || domalloc_node_of(p) < 0) { fprintf(stderr, "malloc is not domalloc's\n"); return 1; }
    if (strcmp(domalloc_version(), DOMALLOC_VERSION) != 0) { fprintf(stderr, "version mismatch\n"); return 1; }
    char buf[256];
    size_t need = domalloc_stats_json(NULL, 0);
    if (need == 0 || domalloc_stats_json(buf, sizeof buf) != need || (need < sizeof buf && buf[need] != 0)) {
        fprintf(stderr, "domalloc_stats_json\n"); return 1;
    }
    printf("app: domalloc %s (header %d.%d.%d), %d node(s)\n", domalloc_version(), DOMALLOC_VERSION_MAJOR,
           DOMALLOC_VERSION_MINOR, DOMALLOC_VERSION_PATCH, domalloc_node_count());
    free(p);
    return 0;
}
EOF
# A program that knows nothing of domalloc: is it preloaded?
cat >"$WORK/plain.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    void *p = malloc(1000);
    const char *(*version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "domalloc_version");
    int (*node_of)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "domalloc_node_of");
    if (version == NULL || node_of == NULL) { printf("plain: glibc malloc\n"); return 3; }
    if (node_of(p) < 0) { printf("plain: domalloc loaded but malloc is not its\n"); return 4; }
    printf("plain: malloc is domalloc %s\n", version());
    free(p);
    return 0;
}
EOF
gcc -O1 -o "$WORK/plain" "$WORK/plain.c" || { say "0 passed, 1 failed"; exit 1; }

# ---- the library ----

check_soname() {
    local so=$REL/libdomalloc.so
    readelf -d "$so" | grep SONAME
    readelf -d "$so" | grep -q "SONAME.*\[libdomalloc.so.$MAJOR\]" || fail "SONAME is not libdomalloc.so.$MAJOR"
    # The crate versions the ABI names (ffi and the core) and the header's macros agree.
    local core
    core=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
    [ "$core" = "$VERSION" ] || fail "Cargo.toml $core, ffi/Cargo.toml $VERSION"
    local h=include/domalloc.h
    grep -q "^#define DOMALLOC_VERSION \"$VERSION\"" $h || fail "DOMALLOC_VERSION is not \"$VERSION\""
    local a b c
    IFS=. read -r a b c <<<"$VERSION"
    grep -q "^#define DOMALLOC_VERSION_MAJOR $a\$" $h && grep -q "^#define DOMALLOC_VERSION_MINOR $b\$" $h &&
        grep -q "^#define DOMALLOC_VERSION_PATCH $c\$" $h || fail "DOMALLOC_VERSION_MAJOR/MINOR/PATCH are not $VERSION"
    if [ -f /work/baseline/libdomalloc.so ]; then
        echo "baseline (before): $(readelf -d /work/baseline/libdomalloc.so | grep SONAME)"
    fi
    echo "ok: SONAME libdomalloc.so.$MAJOR, version $VERSION everywhere"
}
run_test library-soname-version 60 check_soname

check_exports_list() {
    local want exported
    want=$(grep -v '^#' ffi/exports.txt | grep . | sort)
    exported=$(nm -D --defined-only "$REL/libdomalloc.so" | awk '$2 == "T" || $2 == "W" || $2 == "i" { print $3 }' | sed 's/@.*//' | sort -u)
    [ "$want" = "$exported" ] || fail "libdomalloc.so exports differ from ffi/exports.txt: $(comm -3 <(echo "$want") <(echo "$exported") | tr -s ' \t\n' ' ')"
    local s
    for s in $want; do
        grep -q "\`$s\`" docs/ABI.md || fail "docs/ABI.md does not list $s"
    done
    for s in $(echo "$want" | grep '^domalloc_'); do
        grep -Eq "\b$s\(" include/domalloc.h || fail "include/domalloc.h does not declare $s"
        grep -q "$s" docs/man/domalloc.3 || fail "domalloc(3) does not document $s"
    done
    echo "ok: $(echo "$want" | wc -l) symbols: ffi/exports.txt = nm -D = docs/ABI.md; extras in domalloc.h and domalloc(3)"
}
run_test library-exports-documented 60 check_exports_list

check_licenses() {
    [ -s LICENSE-MIT ] && [ -s LICENSE-APACHE ] || fail "LICENSE-MIT or LICENSE-APACHE missing"
    grep -q "Permission is hereby granted, free of charge" LICENSE-MIT || fail "LICENSE-MIT is not the MIT text"
    if [ -f /usr/share/common-licenses/Apache-2.0 ]; then
        cmp LICENSE-APACHE /usr/share/common-licenses/Apache-2.0 || fail "LICENSE-APACHE differs from the Apache License 2.0 text"
    else
        grep -q "Version 2.0, January 2004" LICENSE-APACHE || fail "LICENSE-APACHE is not the Apache 2.0 text"
    fi
    grep -q '^license = "MIT OR Apache-2.0"' Cargo.toml || fail "Cargo.toml license"
    echo "ok: LICENSE-MIT, LICENSE-APACHE (= Debian's Apache-2.0 text), Cargo.toml MIT OR Apache-2.0"
}
run_test licenses 30 check_licenses

# ---- install ----

check_install() {
    NO_BUILD=1 ffi/install.sh "$P" > "$WORK/install.out"
    cat "$WORK/install.out"
    local L=$P/lib f
    [ -f "$L/libdomalloc.so.$VERSION" ] && [ ! -L "$L/libdomalloc.so.$VERSION" ] || fail "no file libdomalloc.so.$VERSION"
    [ "$(readlink "$L/libdomalloc.so.$MAJOR")" = "libdomalloc.so.$VERSION" ] || fail "libdomalloc.so.$MAJOR is not a link to libdomalloc.so.$VERSION"
    [ "$(readlink "$L/libdomalloc.so")" = "libdomalloc.so.$VERSION" ] || fail "libdomalloc.so is not a link to libdomalloc.so.$VERSION"
    for f in lib/libdomalloc.a include/domalloc.h lib/pkgconfig/domalloc.pc lib/pkgconfig/domalloc-static.pc \
        lib/cmake/domalloc/domallocConfig.cmake lib/cmake/domalloc/domallocConfigVersion.cmake \
        share/man/man1/domalloc.1 share/man/man3/domalloc.3 share/man/man3/domalloc_version.3 bin/domalloc \
        share/modulefiles/domalloc/$VERSION.lua share/modulefiles/domalloc-preload/$VERSION.lua \
        share/doc/domalloc/LICENSE-MIT share/doc/domalloc/LICENSE-APACHE share/doc/domalloc/ABI.md; do
        [ -f "$P/$f" ] || fail "$f not installed"
    done
    # What it says about finding the library at run time.
    grep -q -- "-Wl,-rpath,$L" "$WORK/install.out" && grep -q "ldconfig" "$WORK/install.out" &&
        grep -q "module load domalloc" "$WORK/install.out" && grep -q "LD_PRELOAD=$L/libdomalloc.so.$MAJOR" "$WORK/install.out" ||
        fail "install.sh does not print the rpath, ldconfig, module and LD_PRELOAD ways"
    # DESTDIR staging: the same tree under DESTDIR, the paths inside for the prefix.
    DESTDIR="$WORK/stage" NO_BUILD=1 ffi/install.sh /opt/domalloc >/dev/null
    [ -f "$WORK/stage/opt/domalloc/lib/libdomalloc.so.$VERSION" ] || fail "DESTDIR: nothing under $WORK/stage/opt/domalloc"
    grep -q 'local prefix = "/opt/domalloc"' "$WORK/stage/opt/domalloc/share/modulefiles/domalloc/$VERSION.lua" || fail "DESTDIR: modulefile prefix"
    echo "ok: $(find "$P" -type f | wc -l) files, links libdomalloc.so{,.$MAJOR} -> libdomalloc.so.$VERSION, DESTDIR staging"
}
run_test install 120 check_install
# The other checks use the installation, also when a filter left the install check out.
[ -f "$P/lib/libdomalloc.so.$VERSION" ] || NO_BUILD=1 ffi/install.sh "$P" >"$WORK/install.out" 2>&1
[ -f "$P/lib/libdomalloc.so.$VERSION" ] || { say "install failed: the other checks need it"; say "$PASSED passed, $((FAILED + 1)) failed"; exit 1; }
# Set only inside the checks that use it: hwloc's build script reruns when it changes, and cargo
# would rebuild the launcher for every later cargo command.
PC_PATH=$P/lib/pkgconfig
export PC_PATH

check_static_exports() {
    local a=$P/lib/libdomalloc.a globals want
    want=$(grep -v '^#' ffi/exports.txt | grep . | sort)
    globals=$(nm -g --defined-only "$a" | awk 'NF == 3 { print $3 }' | sort -u)
    [ "$globals" = "$want" ] || fail "libdomalloc.a globals differ from ffi/exports.txt: $(comm -3 <(echo "$want") <(echo "$globals") | tr -s ' \t\n' ' ')"
    local bad
    bad=$(nm -g --defined-only "$a" | grep -E ' (rust_eh_personality|DW\.ref\.|__rust|_ZN|_RN|__udivti3|__muloti4|__popcount|__ashl|compiler_builtins)' || true)
    [ -z "$bad" ] || fail "Rust runtime symbols are global: $bad"
    nm "$a" | grep -q ' t rust_eh_personality$' || fail "rust_eh_personality is not in the archive as a local symbol"
    echo "cargo's own archive: $(nm -g --defined-only "$REL/libdomalloc.a" 2>/dev/null | grep -cE ' [TDBRVW] ') global symbols"
    echo "ok: libdomalloc.a exports the $(echo "$want" | wc -l) names of ffi/exports.txt; rust_eh_personality, __udivti3, std are local"
}
run_test static-archive-exports 60 check_static_exports

# Another Rust static library in the same link (the case that failed: rust_eh_personality and
# std's statics defined twice).
check_static_with_other_rust_lib() {
    local d=$WORK/other-rust
    mkdir -p "$d/src"
    cat >"$d/Cargo.toml" <<'EOF'
[package]
name = "other_rust"
version = "0.1.0"
edition = "2021"
[lib]
crate-type = ["staticlib"]
[workspace]
EOF
    cat >"$d/src/lib.rs" <<'EOF'
/// Sums 1..=n in a Vec, under catch_unwind (pulls in std's panic runtime).
#[no_mangle]
pub extern "C" fn other_rust_sum(n: u64) -> u64 {
    let v: Vec<u64> = (1..=n).collect();
    std::panic::catch_unwind(|| v.iter().sum()).unwrap_or(0)
}
EOF
    cargo build --release --offline --quiet --manifest-path "$d/Cargo.toml" --target-dir "$d/target" ||
        cargo build --release --quiet --manifest-path "$d/Cargo.toml" --target-dir "$d/target"
    cat >"$WORK/two.c" <<'EOF'
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <domalloc.h>
uint64_t other_rust_sum(uint64_t);
int main(void) {
    void *p = malloc(10);
    uint64_t s = other_rust_sum(100);
    printf("two Rust static libraries: sum %llu, node_of %d\n", (unsigned long long)s, domalloc_node_of(p));
    free(p);
    return s == 5050 && domalloc_node_of(p) != -2 ? 0 : 1;
}
EOF
    gcc -o "$WORK/two" "$WORK/two.c" -I"$P/include" "$P/lib/libdomalloc.a" "$d/target/release/libother_rust.a" -lpthread
    "$WORK/two"
    gcc -o "$WORK/two_rev" "$WORK/two.c" -I"$P/include" "$d/target/release/libother_rust.a" "$P/lib/libdomalloc.a" -lpthread
    "$WORK/two_rev"
    # The same link with cargo's unprocessed archive (the issue): reported, not required.
    if gcc -o "$WORK/two_raw" "$WORK/two.c" -I"$P/include" "$REL/libdomalloc.a" "$d/target/release/libother_rust.a" -lpthread 2>"$WORK/raw.err"; then
        echo "control: cargo's own libdomalloc.a links too"
    else
        echo "control: cargo's own libdomalloc.a does not link: $(grep -o 'multiple definition of `[^'\'']*' "$WORK/raw.err" | head -1)"
    fi
    echo "ok: libdomalloc.a + another Rust staticlib link and run, in both orders"
}
run_test static-archive-next-to-rust-staticlib 300 check_static_with_other_rust_lib

# ---- pkg-config ----

check_pc_shared() {
    export PKG_CONFIG_PATH=$PC_PATH
    pkg-config --modversion domalloc | grep -qx "$VERSION" || fail "pkg-config --modversion"
    echo "flags: $(pkg-config --cflags --libs domalloc)"
    cd "$WORK"
    # The command of the issue, literally: it must build a program that starts.
    cc app.c $(pkg-config --cflags --libs domalloc) -o app_pc
    env -u LD_LIBRARY_PATH ./app_pc
    readelf -d app_pc | grep -q "NEEDED.*\[libdomalloc.so.$MAJOR\]" || fail "the program does not record libdomalloc.so.$MAJOR"
    readelf -d app_pc | grep -E 'RUNPATH|RPATH'
    ldd app_pc | grep -q "libdomalloc.so.$MAJOR => $P/lib/pkgconfig/../../lib/libdomalloc.so.$MAJOR" || fail "not loaded from the prefix: $(ldd app_pc | grep domalloc)"
    # C++ and Fortran link the same way.
    if have g++; then
        cp app.c app.cc && g++ app.cc $(pkg-config --cflags --libs domalloc) -o app_pc_cxx && ./app_pc_cxx >/dev/null
    fi
    echo "ok: cc app.c \$(pkg-config --cflags --libs domalloc) starts without LD_LIBRARY_PATH (RUNPATH)"
}
run_test pkg-config-shared-starts 120 check_pc_shared

check_pc_static() {
    export PKG_CONFIG_PATH=$PC_PATH
    cd "$WORK"
    echo "static flags: $(pkg-config --static --libs domalloc)"
    pkg-config --static --libs domalloc | grep -q -- -lgcc_s && fail "Libs.private names -lgcc_s (no libgcc_s.a for -static)"
    cc -static app.c $(pkg-config --static --cflags --libs domalloc) -o app_static 2>&1 | grep -v 'statically linked applications requires' || true
    [ -x app_static ] || fail "the -static link failed"
    file app_static | grep -q 'statically linked' || fail "not a static executable: $(file app_static)"
    ./app_static
    # libdomalloc.a in a program that uses the shared C library.
    echo "domalloc-static flags: $(pkg-config --libs domalloc-static)"
    cc app.c $(pkg-config --cflags --libs domalloc-static) -o app_static_lib
    ldd app_static_lib | grep -q domalloc && fail "domalloc-static.pc linked the shared library"
    ./app_static_lib
    # The pattern of scripts/test-ffi.sh: -Wl,-Bstatic around pkg-config's -ldomalloc.
    cc app.c $(pkg-config --cflags domalloc) -Wl,-Bstatic $(pkg-config --libs domalloc) -Wl,-Bdynamic \
        $(pkg-config --static --libs-only-l domalloc | sed 's/-ldomalloc//') -o app_bstatic
    ./app_bstatic
    echo "ok: cc -static with pkg-config --static; domalloc-static.pc; -Wl,-Bstatic"
}
run_test pkg-config-static 120 check_pc_static

check_pc_relocated() {
    cp -a "$P" "$WORK/moved"
    local PC=$WORK/moved/lib/pkgconfig
    [ "$(PKG_CONFIG_PATH=$PC pkg-config --variable=prefix domalloc)" = "$PC/../.." ] || fail "prefix is not \${pcfiledir}/../..: $(PKG_CONFIG_PATH=$PC pkg-config --variable=prefix domalloc)"
    grep -q "$P" "$PC/domalloc.pc" "$PC/domalloc-static.pc" && fail "a .pc file names the install prefix"
    grep -rq "$P" "$WORK/moved/lib/cmake" && fail "the CMake files name the install prefix"
    cd "$WORK"
    cc app.c $(PKG_CONFIG_PATH=$PC pkg-config --cflags --libs domalloc) -o app_moved
    ldd app_moved | grep -q "$WORK/moved/lib" || fail "the moved prefix is not used: $(ldd app_moved | grep domalloc)"
    ./app_moved
    echo "ok: a copied prefix works through pkg-config (paths relative to the .pc file)"
}
run_test pkg-config-relocatable 60 check_pc_relocated

# Without the rpath (RPATH=no): the failure of the issue, and the two fixes besides rpath:
# LD_LIBRARY_PATH and ldconfig.
check_pc_norpath_ldconfig() {
    local Q=$WORK/norpath
    RPATH=no NO_BUILD=1 "$ROOT/ffi/install.sh" "$Q" > "$WORK/norpath.out"
    grep -q 'rpath' "$Q/lib/pkgconfig/domalloc.pc" && grep -q -- '-Wl,-rpath' <(grep '^Libs:' "$Q/lib/pkgconfig/domalloc.pc") && fail "RPATH=no: Libs has -Wl,-rpath"
    cd "$WORK"
    cc app.c $(PKG_CONFIG_PATH=$Q/lib/pkgconfig pkg-config --cflags --libs domalloc) -o app_norpath
    if env -u LD_LIBRARY_PATH ./app_norpath 2>norpath.err; then fail "started without rpath, LD_LIBRARY_PATH or ldconfig?"; fi
    grep -q "libdomalloc.so.$MAJOR: cannot open shared object file" norpath.err || fail "unexpected error: $(cat norpath.err)"
    echo "without rpath: $(cat norpath.err)"
    LD_LIBRARY_PATH=$Q/lib ./app_norpath
    if [ "$(id -u)" = 0 ] && have ldconfig; then
        # A system folder: listed in the loader's configuration; install.sh runs ldconfig.
        echo "$Q/lib" > "$LDCONF"
        RPATH=no NO_BUILD=1 "$ROOT/ffi/install.sh" "$Q" > "$WORK/ldconfig.out"
        grep -q "ldconfig has run" "$WORK/ldconfig.out" || fail "install.sh did not run ldconfig for a configured folder"
        env -u LD_LIBRARY_PATH ./app_norpath
        rm -f "$LDCONF"
        ldconfig
        echo "ok: RPATH=no: does not start (as in the issue); starts with LD_LIBRARY_PATH, and after ldconfig"
    else
        echo "ok: RPATH=no: does not start (as in the issue); starts with LD_LIBRARY_PATH (ldconfig not tried: not root)"
    fi
}
run_test pkg-config-no-rpath-ldconfig 120 check_pc_norpath_ldconfig

# ---- CMake ----

check_cmake() {
    have cmake || fail "cmake is not installed"
    local b=$WORK/cmake-build
    cmake -S examples/cmake-consumer -B "$b" -DCMAKE_PREFIX_PATH="$P" >"$WORK/cmake.out"
    grep "domalloc $VERSION" "$WORK/cmake.out"
    cmake --build "$b"
    ctest --test-dir "$b" --output-on-failure
    ldd "$b/consumer_shared" | grep -q "libdomalloc.so.$MAJOR => $P/lib" || fail "consumer_shared: $(ldd "$b/consumer_shared" | grep domalloc)"
    ldd "$b/consumer_static" | grep -q domalloc && fail "consumer_static links libdomalloc.so"
    "$b/consumer_static"
    if have gfortran; then
        [ -x "$b/consumer_fortran" ] || fail "gfortran is installed but the Fortran consumer was not built"
        "$b/consumer_fortran"
    fi
    # Versions: same major and at least the version asked for.
    local want ok minor=${VERSION#*.}
    minor=${minor%%.*}
    for want in "0.1:yes" "$VERSION:yes" "$MAJOR.$((minor + 1)):no" "$((MAJOR + 1)).0:no"; do
        ok=no
        mkdir -p "$WORK/cmv/${want%%:*}"
        cat >"$WORK/cmv/${want%%:*}/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(v NONE)
find_package(domalloc ${want%%:*} REQUIRED)
EOF
        cmake -S "$WORK/cmv/${want%%:*}" -B "$WORK/cmv/${want%%:*}/b" -DCMAKE_PREFIX_PATH="$P" >/dev/null 2>&1 && ok=yes
        [ "$ok" = "${want#*:}" ] || fail "find_package(domalloc ${want%%:*}) with $VERSION installed: found=$ok"
    done
    # The moved copy of the prefix (pkg-config-relocatable) works too.
    if [ -d "$WORK/moved" ]; then
        cmake -S examples/cmake-consumer -B "$WORK/cmake-moved" -DCMAKE_PREFIX_PATH="$WORK/moved" >/dev/null
        cmake --build "$WORK/cmake-moved" >/dev/null && "$WORK/cmake-moved/consumer_shared"
        ldd "$WORK/cmake-moved/consumer_shared" | grep -q "$WORK/moved/lib" || fail "the moved CMake package points elsewhere"
    fi
    echo "ok: find_package(domalloc): domalloc::domalloc (C$(have gfortran && echo ', Fortran')) and domalloc::domalloc_static built and run; 0.1 ok, newer minor and 1.0 refused"
}
run_test cmake-package 240 check_cmake

# ---- man pages ----

check_man() {
    export PKG_CONFIG_PATH=$PC_PATH
    have man || fail "man is not installed"
    local page out err
    for page in "$P/share/man/man1/domalloc.1" "$P/share/man/man3/domalloc.3"; do
        out=$(MANWIDTH=80 man --warnings -l "$page" 2>"$WORK/man.err")
        err=$(cat "$WORK/man.err")
        [ -z "$err" ] || fail "$(basename "$page"): warnings: $err"
        [ "$(echo "$out" | wc -l)" -gt 40 ] || fail "$(basename "$page") renders to almost nothing"
    done
    # `man domalloc_version` (the .so alias pages) opens domalloc(3).
    MANWIDTH=80 man --warnings -M "$P/share/man" 3 domalloc_version 2>"$WORK/man.err" | grep -q "domalloc_stats_json" ||
        fail "man -M PREFIX/share/man domalloc_version"
    [ -s "$WORK/man.err" ] && fail "alias page: $(cat "$WORK/man.err")"
    # domalloc(1) documents every option the installed launcher shows.
    local help opt
    help=$({ "$P/bin/domalloc" help; "$P/bin/domalloc" --help; "$P/bin/domalloc" run --help;
             "$P/bin/domalloc" report --help; "$P/bin/domalloc" topo --help; } 2>&1 || true)
    for opt in $(echo "$help" | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
        case $opt in --help | --version) continue ;; esac
        grep -q -- "$(echo "$opt" | sed 's/-/\\\\-/g')" docs/man/domalloc.1 || fail "domalloc(1) does not document $opt"
    done
    # domalloc(3) documents every allocator option of the README's options table (the table after
    # "## Options", before the table of variables the tools read).
    local v
    for v in $(awk '/^## Options/ { on = 1; next } /^Variables read by/ || /^## / { on = 0 } on' README.md |
               grep -oE '^\| `DOMALLOC_[A-Z_]+` \|' | grep -oE 'DOMALLOC_[A-Z_]+'); do
        grep -q "^\.B $v\$" docs/man/domalloc.3 || fail "domalloc(3) does not document $v (README options table)"
    done
    # The example of domalloc(3) compiles and runs.
    sed -n '/^\.SH EXAMPLES/,/^\.SH/p' docs/man/domalloc.3 | sed -n '/^\.EX/,/^\.EE/p' | sed '1d;$d' |
        sed 's/\\e/\\/g' > "$WORK/man_example.c"
    gcc "$WORK/man_example.c" $(pkg-config --cflags --libs domalloc) -o "$WORK/man_example"
    "$WORK/man_example"
    echo "ok: domalloc(1), domalloc(3) render without warnings; every launcher option and README option documented; the example runs"
}
run_test man-pages 120 check_man

# ---- launcher and LD_PRELOAD ----

check_launcher_preload() {
    local D=$P/bin/domalloc
    [ "$("$D" lib)" = "$(readlink -f "$P/lib/libdomalloc.so.$MAJOR")" ] || fail "domalloc lib: $("$D" lib)"
    "$D" --version | grep -q "$VERSION" || echo "note: launcher reports $("$D" --version) (tools/ has its own version)"
    "$D" run -- "$WORK/plain"
    local rc=0
    "$D" run -- sh -c 'exit 7' || rc=$?
    [ $rc -eq 7 ] || fail "domalloc run: exit status $rc, not the program's 7"
    LD_PRELOAD=$P/lib/libdomalloc.so.$MAJOR "$WORK/plain"
    rc=0
    "$WORK/plain" || rc=$?
    [ $rc -eq 3 ] || fail "without the preload the control program says $rc"
    echo "ok: domalloc run and LD_PRELOAD=PREFIX/lib/libdomalloc.so.$MAJOR replace malloc of an unmodified program"
}
run_test launcher-and-ld-preload 60 check_launcher_preload

# ---- Lmod ----

lmod_init() {
    local f
    for f in /usr/share/lmod/lmod/init/bash /usr/share/lmod/*/init/bash; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}
check_lmod() {
    local init
    init=$(lmod_init) || fail "Lmod is not installed"
    # A login-like shell with nothing of domalloc on its paths.
    env -i HOME="$HOME" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$(dirname "$(command -v cargo)") \
        TERM=dumb P="$P" WORK="$WORK" VERSION="$VERSION" MAJOR="$MAJOR" INIT="$init" bash --norc --noprofile -c '
set -e
fail() { echo "FAILED: $*" >&2; exit 1; }
source "$INIT"
module use "$P/share/modulefiles"
module -t avail 2>&1 | grep -q "^domalloc/$VERSION" || fail "module avail does not list domalloc/$VERSION"
module load domalloc
module -t list 2>&1 | grep -qx "domalloc/$VERSION" || fail "not loaded"
case ":$PATH:" in *":$P/bin:"*) ;; *) fail "PATH";; esac
for v in LD_LIBRARY_PATH LIBRARY_PATH; do case ":${!v}:" in *":$P/lib:"*) ;; *) fail "$v=${!v}";; esac; done
case ":$CPATH:" in *":$P/include:"*) ;; *) fail "CPATH";; esac
case ":$PKG_CONFIG_PATH:" in *":$P/lib/pkgconfig:"*) ;; *) fail "PKG_CONFIG_PATH";; esac
case ":$CMAKE_PREFIX_PATH:" in *":$P:"*) ;; *) fail "CMAKE_PREFIX_PATH";; esac
[ "$DOMALLOC_LIB" = "$P/lib/libdomalloc.so.$MAJOR" ] || fail "DOMALLOC_LIB=$DOMALLOC_LIB"
[ -z "${LD_PRELOAD:-}" ] || fail "module domalloc preloads: LD_PRELOAD=$LD_PRELOAD"
[ "$(command -v domalloc)" = "$P/bin/domalloc" ] || fail "domalloc is $(command -v domalloc)"
man -w domalloc | grep -q "^$P/share/man/man1/domalloc.1" || fail "man domalloc: $(man -w domalloc 2>&1)"
man -w 3 domalloc >/dev/null || fail "man 3 domalloc"
if [ -n "$(ls /usr/share/man/man1 2>/dev/null | head -1)" ]; then
    man -w man >/dev/null 2>&1 || man -w ls >/dev/null 2>&1 || fail "the system man pages are no longer found (MANPATH=$MANPATH)"
fi
module help domalloc 2>&1 | grep -q "domalloc run" || fail "module help"
cd "$WORK"
cc app.c $(pkg-config --cflags --libs domalloc) -o app_mod_pc && ./app_mod_pc
cc app.c -ldomalloc -o app_mod_plain && ./app_mod_plain      # CPATH, LIBRARY_PATH, LD_LIBRARY_PATH
domalloc run -- ./plain                                      # DOMALLOC_LIB
module load domalloc-preload
[ "$LD_PRELOAD" = "$P/lib/libdomalloc.so.$MAJOR" ] || fail "LD_PRELOAD=${LD_PRELOAD:-}"
./plain
module unload domalloc-preload
[ -z "${LD_PRELOAD:-}" ] || fail "unload left LD_PRELOAD=$LD_PRELOAD"
rc=0; ./plain >/dev/null || rc=$?; [ $rc -eq 3 ] || fail "still preloaded after unload"
module -t list 2>&1 | grep -qx "domalloc/$VERSION" || fail "unloading domalloc-preload unloaded domalloc"
module unload domalloc
[ -z "${DOMALLOC_LIB:-}" ] || fail "unload left DOMALLOC_LIB"
case ":${PKG_CONFIG_PATH:-}:" in *":$P/lib/pkgconfig:"*) fail "unload left PKG_CONFIG_PATH";; esac
# domalloc-preload alone loads domalloc (depends_on).
module load domalloc-preload
module -t list 2>&1 | grep -qx "domalloc/$VERSION" || fail "domalloc-preload did not load domalloc"
./plain
echo "ok: module load domalloc: paths, pkg-config and -ldomalloc programs run; domalloc-preload preloads until unloaded"
'
}
run_test lmod-modulefiles 120 check_lmod

# ---- EasyBuild ----

eb_venv() {
    local venv=$TOOLS/eb-venv
    if [ ! -x "$venv/bin/eb" ]; then
        local py=/usr/bin/python3
        [ -x $py ] || py=python3
        rm -rf "$venv"
        $py -m venv "$venv"
        "$venv/bin/pip" install -q easybuild-framework==5.4.1 easybuild-easyblocks==5.4.1 >&2
    fi
    echo "$venv"
}
# The README's EasyBuild commands: the lines of its ```sh block that starts with
# "mkdir -p target/sources && git archive" (the source tarball from HEAD, then eb as root).
readme_eb_block() {
    awk '/^ *```/ { inside = !inside; if (!inside && want) exit; first = inside; next }
         inside && first { first = 0; want = ($0 ~ /^ *mkdir -p target\/sources && git archive /) }
         inside && want' README.md | sed 's/^ *//'
}
check_easybuild() {
    local init venv block
    init=$(lmod_init) || fail "Lmod is not installed (EasyBuild needs a modules tool)"
    venv=$(eb_venv)
    export EB_PYTHON=$venv/bin/python
    # The same environment in every run (hwloc's build script reruns when PKG_CONFIG_PATH changes).
    unset PKG_CONFIG_PATH
    source "$init"
    local EBP=$CARGO_TARGET_DIR/site-eb/prefix
    rm -rf "$EBP/software/domalloc" "$EBP/modules"
    block=$(readme_eb_block)
    [ -n "$block" ] || fail "README.md has no \`\`\`sh block starting with 'mkdir -p target/sources && git archive'"
    echo "the README's commands:"; echo "$block"
    grep -q "^EASYBUILD_ALLOW_USE_AS_ROOT_AND_ACCEPT_CONSEQUENCES=1 eb packaging/easybuild/domalloc-$VERSION.eb " <<<"$block" ||
        fail "the README's block does not run eb on packaging/easybuild/domalloc-$VERSION.eb as root"
    # They run as written, from the repository's root (git archive takes HEAD: a change not
    # committed yet is not in the tarball), with the venv's eb on PATH and the prefix from
    # EasyBuild's environment configuration. In the real install EasyBuild runs cargo,
    # ffi/install.sh and its sanity checks (the files, domalloc --version, domalloc run -- true,
    # pkg-config); SITE_EB_INSTALL=0 makes eb an extended dry run instead.
    local path=$venv/bin:$PATH
    if [ "$SITE_EB_INSTALL" = 0 ]; then
        mkdir -p "$WORK/eb-dry"
        printf '#!/bin/sh\nexec "%s" --extended-dry-run "$@"\n' "$venv/bin/eb" > "$WORK/eb-dry/eb"
        chmod +x "$WORK/eb-dry/eb"
        path=$WORK/eb-dry:$path
    fi
    rm -f "$ROOT/target/sources/domalloc-$VERSION.tar.gz"
    (cd "$ROOT" && PATH=$path EASYBUILD_PREFIX=$EBP bash -e -c "$block") > "$WORK/eb-readme.out" 2>&1 ||
        { tail -40 "$WORK/eb-readme.out"; fail "the README's EasyBuild commands"; }
    [ -f "$ROOT/target/sources/domalloc-$VERSION.tar.gz" ] || fail "no target/sources/domalloc-$VERSION.tar.gz"
    tar -tzf "$ROOT/target/sources/domalloc-$VERSION.tar.gz" | grep -qx "domalloc-$VERSION/ffi/install.sh" ||
        fail "the tarball does not unpack to domalloc-$VERSION/"
    if [ "$SITE_EB_INSTALL" != 0 ]; then
        grep -q "SUCCESS.*domalloc/$VERSION" "$WORK/eb-readme.out" || fail "eb did not report success: $(tail -5 "$WORK/eb-readme.out")"
    fi
    # The release step and dry runs, on a copy with the checksum put in.
    local E="$venv/bin/eb --allow-use-as-root-and-accept-consequences --prefix=$EBP --sourcepath=$ROOT/target/sources --rebuild"
    mkdir -p "$WORK/eb-ec"
    cp packaging/easybuild/domalloc-$VERSION.eb "$WORK/eb-ec/"
    local ec=$WORK/eb-ec/domalloc-$VERSION.eb
    $venv/bin/eb --version
    $E "$ec" --inject-checksums > "$WORK/eb-inject.out" 2>&1 || { cat "$WORK/eb-inject.out"; fail "eb --inject-checksums"; }
    grep -q "^checksums = \['[0-9a-f]\{64\}'\]" "$ec" || fail "no checksum injected"
    # Parses, resolves, and shows what it would do.
    $E "$ec" --dry-run > "$WORK/eb-D.out" 2>&1 || { cat "$WORK/eb-D.out"; fail "eb --dry-run"; }
    grep -q "domalloc-$VERSION.eb (module: domalloc/$VERSION)" "$WORK/eb-D.out" || fail "eb -D: $(cat "$WORK/eb-D.out")"
    $E "$ec" --extended-dry-run > "$WORK/eb-x.out" 2>&1 || { tail -40 "$WORK/eb-x.out"; fail "eb -x"; }
    grep -q "cargo build --release --locked -p domalloc-ffi -p domalloc-tools" "$WORK/eb-x.out" || fail "eb -x: no cargo build"
    grep -q "bash ffi/install.sh $EBP/software/domalloc/$VERSION" "$WORK/eb-x.out" || fail "eb -x: no ffi/install.sh"
    grep -q "setenv(\"DOMALLOC_LIB\"" "$WORK/eb-x.out" || fail "eb -x: the module does not set DOMALLOC_LIB"
    echo "eb -x: $(grep -c 'running shell command' "$WORK/eb-x.out") commands"
    if [ "$SITE_EB_INSTALL" = 0 ]; then
        echo "ok: EasyBuild $($venv/bin/eb --version | grep -oE "[0-9]+\.[0-9]+\.[0-9]+" | head -1): the README's commands (eb as a dry run), checksums injected, -D and -x (SITE_EB_INSTALL=0: no install)"
        return 0
    fi
    # The module of the README's install works like ours: build through pkg-config and run.
    module use "$EBP/modules/all"
    module load "domalloc/$VERSION"
    [ -n "${EBROOTDOMALLOC:-}" ] || fail "the EasyBuild module did not load"
    cd "$WORK"
    cc app.c $(pkg-config --cflags --libs domalloc) -o app_eb && ./app_eb
    ldd app_eb | grep -q "$EBROOTDOMALLOC" || fail "app_eb does not use the EasyBuild install: $(ldd app_eb | grep domalloc); pkg-config: $(pkg-config --libs domalloc)"
    domalloc run -- ./plain
    echo "ok: EasyBuild $($venv/bin/eb --version | grep -oE "[0-9]+\.[0-9]+\.[0-9]+" | head -1): the README's commands as written (a real install with its sanity checks; its module builds and runs a program), checksums, -D, -x"
}
run_test easybuild 900 check_easybuild

# ---- Spack ----

if have spack; then
    check_spack() {
        local repo=$WORK/spack-repo
        spack repo create "$repo" site >/dev/null
        cp -r packaging/spack/domalloc "$repo/packages/"
        spack repo add "$repo"
        spack info domalloc
        spack spec domalloc
        echo "ok: spack info / spack spec domalloc"
    }
    run_test spack 600 check_spack
else
    skip spack "Spack is not installed and cannot be installed here (not on PyPI or in Debian; its git repository is not reachable): packaging/spack/domalloc/package.py is not tested with Spack"
fi
check_spack_syntax() {
    python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' packaging/spack/domalloc/package.py
    echo "ok: package.py is valid Python (syntax only; not run by Spack)"
}
run_test spack-recipe-syntax-only 30 check_spack_syntax

# ---- the crate ----

check_crate_metadata() {
    cargo metadata --no-deps --format-version 1 --offline > "$WORK/meta.json" 2>/dev/null ||
        cargo metadata --no-deps --format-version 1 > "$WORK/meta.json"
    python3 - "$WORK/meta.json" <<'EOF'
import json, sys
meta = json.load(open(sys.argv[1]))
pkg = next(p for p in meta["packages"] if p["name"] == "domalloc")
for key in ("description", "license", "repository", "documentation", "homepage", "readme"):
    assert pkg.get(key), f"Cargo.toml: no {key}"
assert 1 <= len(pkg["keywords"]) <= 5, "keywords: 1 to 5"
assert all(len(k) <= 20 for k in pkg["keywords"]), "keywords: at most 20 characters"
assert pkg["categories"], "no categories"
print("ok: metadata:", ", ".join(f"{k}={pkg[k]}" for k in ("version", "license", "repository", "documentation")),
      "keywords", pkg["keywords"], "categories", pkg["categories"])
EOF
}
run_test crate-metadata 60 check_crate_metadata

check_crate_package() {
    cargo package --list --allow-dirty > "$WORK/package.list"
    local f
    for f in Cargo.toml README.md LICENSE-MIT LICENSE-APACHE src/lib.rs src/api/node_api.rs examples/global_allocator.rs \
        examples/node_local_vec.rs examples/interleaved_array.rs examples/stats.rs; do
        grep -qx "$f" "$WORK/package.list" || fail "the package lacks $f"
    done
    grep -E '^(results|bench-suite|numa-tests|ffi|tools|fuzz|loom-model|target|scripts|tests/c|tests/python)/' "$WORK/package.list" &&
        fail "the package carries workspace folders it does not need"
    # Packs, builds the packed crate on its own (verification), and stops before uploading.
    cargo publish --dry-run --allow-dirty -p domalloc > "$WORK/publish.out" 2>&1 || { tail -30 "$WORK/publish.out"; fail "cargo publish --dry-run"; }
    cat "$WORK/publish.out"
    grep -q "aborting upload due to dry run" "$WORK/publish.out" || fail "cargo publish --dry-run did not reach the upload step"
    grep -E '^(warning|error)' "$WORK/publish.out" | grep -v 'aborting upload due to dry run' && fail "cargo publish --dry-run is not clean"
    local crate size
    crate=$(find "$CARGO_TARGET_DIR/package" -name "domalloc-$VERSION.crate" | head -1)
    [ -n "$crate" ] || fail "no domalloc-$VERSION.crate under $CARGO_TARGET_DIR/package"
    size=$(stat -c %s "$crate")
    [ "$size" -lt 1048576 ] || fail "the .crate is $size bytes"
    echo "ok: cargo package: $(wc -l < "$WORK/package.list") files, $((size / 1024)) KiB; cargo publish --dry-run clean"
}
run_test crate-package-publish-dry-run 600 check_crate_package

check_examples() {
    local ex out
    # One build for the four (in parallel), then each run with the command a user types.
    cargo build --release --quiet --examples
    for ex in global_allocator node_local_vec interleaved_array stats; do
        out=$(cargo run --release --quiet --example "$ex" 2>"$WORK/ex-$ex.err") || { cat "$WORK/ex-$ex.err"; fail "example $ex"; }
        echo "$ex: $out" | head -3
    done
    grep -Eq "^domalloc: +node " "$WORK/ex-stats.err" || fail "the stats example printed no report"
    echo "ok: examples global_allocator, node_local_vec, interleaved_array, stats built (--release) and ran"
}
run_test rust-examples 900 check_examples

summary
