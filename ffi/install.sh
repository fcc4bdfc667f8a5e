#!/usr/bin/env bash
# Builds and installs domalloc for C, C++ and Fortran users:
#
#   lib/libdomalloc.so.X.Y.Z, libdomalloc.so.X -> it, libdomalloc.so -> it   (SONAME libdomalloc.so.X)
#   lib/libdomalloc.a                  exports only ffi/exports.txt (no Rust runtime symbols)
#   include/domalloc.h, include/hbwmalloc.h (memkind's hbwmalloc(3) interface)
#   lib/pkgconfig/domalloc.pc          shared; domalloc-static.pc: libdomalloc.a
#   lib/cmake/domalloc/                find_package(domalloc): domalloc::domalloc, domalloc::domalloc_static
#   share/man/man1/domalloc.1, share/man/man3/domalloc.3, hbwmalloc.3 (+ one page name per function)
#   bin/domalloc                       the launcher (domalloc run / topo / report), debug information stripped
#   share/modulefiles/domalloc/X.Y.Z.lua, share/modulefiles/domalloc-preload/X.Y.Z.lua   (Lmod)
#   share/doc/domalloc/                LICENSE-MIT, LICENSE-APACHE, ABI.md
#
#   ffi/install.sh [PREFIX]            default PREFIX=/usr/local
#   DESTDIR=/tmp/stage ffi/install.sh /usr     stage for a package (paths inside are for /usr)
#   LIBDIR=/usr/lib64 ffi/install.sh /usr      also INCLUDEDIR, BINDIR, MANDIR, DOCDIR, MODULEFILESDIR
#   NO_BUILD=1 ffi/install.sh PREFIX   install what is built in $CARGO_TARGET_DIR/release
#   RPATH=no ffi/install.sh PREFIX     domalloc.pc without -Wl,-rpath (default auto: with it, unless
#                                      LIBDIR is one of the dynamic loader's default folders)
#
# Needs cargo (unless NO_BUILD), binutils (ld, objcopy, ar, readelf, strip), sed, realpath.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${1:-${PREFIX:-/usr/local}}
case $PREFIX in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
PREFIX=$(realpath -m -s "$PREFIX")
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
BINDIR=${BINDIR:-$PREFIX/bin}
MANDIR=${MANDIR:-$PREFIX/share/man}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/domalloc}
MODULEFILESDIR=${MODULEFILESDIR:-$PREFIX/share/modulefiles}
DESTDIR=${DESTDIR:-}
RPATH=${RPATH:-auto}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

die() { echo "install.sh: $*" >&2; exit 1; }

if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release -p domalloc-ffi -p domalloc-tools)
fi

VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/ffi/Cargo.toml" | head -1)
MAJOR=${VERSION%%.*}
SONAME=libdomalloc.so.$MAJOR
REALNAME=libdomalloc.so.$VERSION
[ -f "$TARGET/libdomalloc.so" ] || die "$TARGET/libdomalloc.so is not built"
readelf -d "$TARGET/libdomalloc.so" | grep -q "SONAME.*\[$SONAME\]" ||
    die "$TARGET/libdomalloc.so does not have the SONAME $SONAME (rebuild: cargo build --release -p domalloc-ffi)"

# What a static link needs besides libdomalloc.a and the C library: the POSIX thread calls
# (pthread_atfork, pthread_key_create, ...), in libpthread before glibc 2.34. The unwinder the Rust
# runtime refers to (_Unwind_*) comes with the compiler driver (libgcc_eh for -static, libgcc_s
# otherwise), so it is not named: -lgcc_s does not exist for -static links.
LIBS_PRIVATE=${LIBS_PRIVATE:--lpthread}

EXPORTS=$(grep -v '^#' "$ROOT/ffi/exports.txt" | grep .)

# libdomalloc.a as cargo builds it holds the Rust runtime and compiler-builtins as separate global
# symbols (rust_eh_personality, __udivti3, std's statics, ...) that collide with another Rust
# static library in the same link. One relocatable object instead, with only the exports global.
make_static_lib() {
    local in=$1 out=$2 tmp
    tmp=$(mktemp -d)
    printf '%s\n' "$EXPORTS" > "$tmp/keep"
    ld -r --whole-archive "$in" -o "$tmp/merged.o"
    # A COMDAT group is merged with any group of the same name in the link: rename ours (the
    # personality routine's DW.ref.rust_eh_personality), or the other library's copy is dropped.
    local redefine=() g
    for g in $(readelf -gW "$tmp/merged.o" | awk -F'[][]' '/^COMDAT group section/ { print $4 }'); do
        grep -qxF "$g" "$tmp/keep" || redefine+=(--redefine-sym "$g=domalloc_private.$g")
    done
    # .llvmbc/.llvmcmd: bitcode embedded in the prebuilt compiler-builtins objects; concatenated by
    # ld -r it is no longer valid, and LLVM's linker plugin (nm, ar, ld with LLVMgold) aborts on it.
    objcopy -R .llvmbc -R .llvmcmd "${redefine[@]}" --keep-global-symbols="$tmp/keep" \
        "$tmp/merged.o" "$tmp/domalloc.o"
    rm -f "$out"
    ar rcs "$out" "$tmp/domalloc.o"
    local globals
    globals=$(readelf -sW "$tmp/domalloc.o" | awk '($5 == "GLOBAL" || $5 == "WEAK") && $7 != "UND" { print $8 }' | sort)
    rm -rf "$tmp"
    [ "$globals" = "$(printf '%s\n' "$EXPORTS" | sort)" ] ||
        die "libdomalloc.a: the global symbols are not those of ffi/exports.txt: $(comm -3 <(echo "$globals") <(printf '%s\n' "$EXPORTS" | sort) | tr -s ' \t\n' ' ')"
}

# rel FROM TO: TO relative to the folder FROM (lexically, no symlinks resolved).
rel() { realpath -m -s --relative-to="$1" "$2"; }
# under VAR DIR BASE: DIR as ${VAR}/rest when it is inside BASE, else DIR itself.
under() {
    case $2 in
        "$3") echo "\${$1}" ;;
        "$3"/*) echo "\${$1}/${2#"$3"/}" ;;
        *) echo "$2" ;;
    esac
}

system_libdir() {
    case $1 in
        /lib | /usr/lib | /lib64 | /usr/lib64 | /lib/*-linux-gnu* | /usr/lib/*-linux-gnu*) return 0 ;;
        *) return 1 ;;
    esac
}
case $RPATH in
    auto) if system_libdir "$LIBDIR"; then RPATH=no; else RPATH=yes; fi ;;
    yes | no) ;;
    *) die "RPATH=$RPATH: expected auto, yes or no" ;;
esac
RPATH_FLAG=
[ "$RPATH" = yes ] && RPATH_FLAG='-Wl,-rpath,${libdir} '

D=$DESTDIR
install -d "$D$LIBDIR/pkgconfig" "$D$LIBDIR/cmake/domalloc" "$D$INCLUDEDIR" "$D$BINDIR" \
    "$D$MANDIR/man1" "$D$MANDIR/man3" "$D$DOCDIR" "$D$MODULEFILESDIR/domalloc" "$D$MODULEFILESDIR/domalloc-preload"

# Libraries.
install -m 755 "$TARGET/libdomalloc.so" "$D$LIBDIR/$REALNAME"
ln -sfn "$REALNAME" "$D$LIBDIR/$SONAME"
ln -sfn "$REALNAME" "$D$LIBDIR/libdomalloc.so"
make_static_lib "$TARGET/libdomalloc.a" "$D$LIBDIR/libdomalloc.a.tmp"
mv -f "$D$LIBDIR/libdomalloc.a.tmp" "$D$LIBDIR/libdomalloc.a"
chmod 644 "$D$LIBDIR/libdomalloc.a"
install -m 644 "$ROOT/include/domalloc.h" "$D$INCLUDEDIR/domalloc.h"
install -m 644 "$ROOT/include/hbwmalloc.h" "$D$INCLUDEDIR/hbwmalloc.h"

# pkg-config: paths relative to the .pc file's folder.
PC_PREFIX="\${pcfiledir}/$(rel "$LIBDIR/pkgconfig" "$PREFIX")"
PC_LIBDIR=$(under prefix "$LIBDIR" "$PREFIX")
PC_INCLUDEDIR=$(under prefix "$INCLUDEDIR" "$PREFIX")
for pc in domalloc domalloc-static; do
    sed -e "s|@PC_PREFIX@|$PC_PREFIX|" -e "s|@PC_LIBDIR@|$PC_LIBDIR|" -e "s|@PC_INCLUDEDIR@|$PC_INCLUDEDIR|" \
        -e "s|@PC_RPATH_FLAG@|$RPATH_FLAG|" -e "s|@VERSION@|$VERSION|" -e "s|@LIBS_PRIVATE@|$LIBS_PRIVATE|" \
        "$ROOT/ffi/$pc.pc.in" > "$D$LIBDIR/pkgconfig/$pc.pc"
    chmod 644 "$D$LIBDIR/pkgconfig/$pc.pc"
done

# CMake package: paths relative to the config file's folder.
CMAKEDIR=$LIBDIR/cmake/domalloc
PREFIX_CODE="get_filename_component(_domalloc_prefix \"\${CMAKE_CURRENT_LIST_DIR}/$(rel "$CMAKEDIR" "$PREFIX")\" ABSOLUTE)"
CM_LIBDIR=$(under _domalloc_prefix "$LIBDIR" "$PREFIX")
CM_INCLUDEDIR=$(under _domalloc_prefix "$INCLUDEDIR" "$PREFIX")
for f in domallocConfig domallocConfigVersion; do
    sed -e "s|@PACKAGE_PREFIX_CODE@|$PREFIX_CODE|" -e "s|@CM_LIBDIR@|$CM_LIBDIR|g" \
        -e "s|@CM_INCLUDEDIR@|$CM_INCLUDEDIR|g" -e "s|@VERSION@|$VERSION|g" -e "s|@MAJOR@|$MAJOR|g" \
        -e "s|@SIZEOF_VOID_P@|8|g" -e "s|@BITS@|64|g" \
        "$ROOT/ffi/cmake/$f.cmake.in" > "$D$CMAKEDIR/$f.cmake"
    chmod 644 "$D$CMAKEDIR/$f.cmake"
done

# Man pages; `man domalloc_malloc_on_node` etc. open domalloc(3).
install -m 644 "$ROOT/docs/man/domalloc.1" "$D$MANDIR/man1/domalloc.1"
install -m 644 "$ROOT/docs/man/domalloc.3" "$D$MANDIR/man3/domalloc.3"
for f in $(printf '%s\n' "$EXPORTS" | grep '^domalloc_'); do
    echo ".so man3/domalloc.3" > "$D$MANDIR/man3/$f.3"
    chmod 644 "$D$MANDIR/man3/$f.3"
done
# hbwmalloc(3); `man hbw_malloc` etc. open it.
install -m 644 "$ROOT/docs/man/hbwmalloc.3" "$D$MANDIR/man3/hbwmalloc.3"
for f in $(printf '%s\n' "$EXPORTS" | grep '^hbw_'); do
    echo ".so man3/hbwmalloc.3" > "$D$MANDIR/man3/$f.3"
    chmod 644 "$D$MANDIR/man3/$f.3"
done

# The launcher, without the line tables of the release profile (`debug = 1` in Cargo.toml): about
# 3 MB instead of 15. The libraries keep theirs.
if [ -f "$TARGET/domalloc" ]; then
    install -m 755 "$TARGET/domalloc" "$D$BINDIR/domalloc"
    strip --strip-debug "$D$BINDIR/domalloc"
else
    echo "install.sh: $TARGET/domalloc is not built (cargo build --release -p domalloc-tools): no bin/domalloc" >&2
fi

# Lmod modulefiles (absolute paths: sites copy modulefiles into their own trees).
for m in domalloc domalloc-preload; do
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@LIBDIR@|$LIBDIR|g" -e "s|@BINDIR@|$BINDIR|g" \
        -e "s|@INCLUDEDIR@|$INCLUDEDIR|g" -e "s|@MANDIR@|$MANDIR|g" -e "s|@VERSION@|$VERSION|g" \
        -e "s|@MAJOR@|$MAJOR|g" "$ROOT/packaging/lmod/$m.lua.in" > "$D$MODULEFILESDIR/$m/$VERSION.lua"
    chmod 644 "$D$MODULEFILESDIR/$m/$VERSION.lua"
done

install -m 644 "$ROOT/LICENSE-MIT" "$ROOT/LICENSE-APACHE" "$ROOT/docs/ABI.md" "$D$DOCDIR/"

# The loader's cache, for folders it is configured to search (e.g. /usr/local/lib on Debian).
LDCONFIG_RAN=
if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null &&
    ldconfig -v -N 2>/dev/null | sed -n 's|^\(/[^:]*\):.*|\1|p' | grep -qxF "$LIBDIR"; then
    ldconfig && LDCONFIG_RAN=1
fi

cat <<EOF
installed domalloc $VERSION under $DESTDIR$PREFIX (library $LIBDIR/$REALNAME, SONAME $SONAME)

Programs linked with -ldomalloc must find $SONAME when they start:
EOF
if [ "$RPATH" = yes ]; then
    echo "  - pkg-config --libs domalloc records $LIBDIR in the program (-Wl,-rpath):"
else
    echo "  - pkg-config --libs domalloc adds no rpath ($LIBDIR is a default folder of the loader, or RPATH=no):"
fi
cat <<EOF
      export PKG_CONFIG_PATH=$LIBDIR/pkgconfig
      cc app.c \$(pkg-config --cflags --libs domalloc)
  - linking by hand: cc app.c -I$INCLUDEDIR -L$LIBDIR -Wl,-rpath,$LIBDIR -ldomalloc
  - CMake: cmake -DCMAKE_PREFIX_PATH=$PREFIX ..., then find_package(domalloc) and
      target_link_libraries(app PRIVATE domalloc::domalloc)   (or domalloc::domalloc_static)
  - Lmod: module use $MODULEFILESDIR; module load domalloc   (sets LD_LIBRARY_PATH and the rest)
EOF
if [ -n "$LDCONFIG_RAN" ]; then
    echo "  - $LIBDIR is in the loader's configuration: ldconfig has run, nothing else is needed"
else
    echo "  - system-wide, as root: echo $LIBDIR > /etc/ld.so.conf.d/domalloc.conf && ldconfig"
fi
cat <<EOF
Unmodified programs: LD_PRELOAD=$LIBDIR/$SONAME ./app   or   $BINDIR/domalloc run -- ./app
Static: cc app.c \$(pkg-config --cflags --libs domalloc-static)   or   cc -static app.c \$(pkg-config --static --cflags --libs domalloc)
EOF
