#!/usr/bin/env bash
# Builds and installs libdomalloc.so, libdomalloc.a, include/domalloc.h, domalloc.pc and the
# `domalloc` command.
#
#   ffi/install.sh [PREFIX]          (default PREFIX=/usr/local; DESTDIR is honoured)
#   LIBDIR=/usr/lib64 ffi/install.sh /usr
#   NO_BUILD=1 ffi/install.sh PREFIX   (install what is already in $CARGO_TARGET_DIR/release)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${1:-${PREFIX:-/usr/local}}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
BINDIR=${BINDIR:-$PREFIX/bin}
DESTDIR=${DESTDIR:-}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release -p domalloc-ffi -p domalloc-tools)
fi

VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/ffi/Cargo.toml" | head -1)
# What a static link needs besides libdomalloc.a (rustc --print native-static-libs on Linux/glibc).
LIBS_PRIVATE=${LIBS_PRIVATE:--lgcc_s -lutil -lrt -lpthread -lm -ldl -lc}

install -d "$DESTDIR$LIBDIR/pkgconfig" "$DESTDIR$INCLUDEDIR" "$DESTDIR$BINDIR"
install -m 755 "$TARGET/libdomalloc.so" "$DESTDIR$LIBDIR/libdomalloc.so"
install -m 644 "$TARGET/libdomalloc.a" "$DESTDIR$LIBDIR/libdomalloc.a"
install -m 644 "$ROOT/include/domalloc.h" "$DESTDIR$INCLUDEDIR/domalloc.h"
if [ -f "$TARGET/domalloc" ]; then
    install -m 755 "$TARGET/domalloc" "$DESTDIR$BINDIR/domalloc"
fi
sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@INCLUDEDIR@|$INCLUDEDIR|" \
    -e "s|@VERSION@|$VERSION|" -e "s|@LIBS_PRIVATE@|$LIBS_PRIVATE|" \
    "$ROOT/ffi/domalloc.pc.in" > "$DESTDIR$LIBDIR/pkgconfig/domalloc.pc"
chmod 644 "$DESTDIR$LIBDIR/pkgconfig/domalloc.pc"
echo "installed libdomalloc $VERSION under $DESTDIR$PREFIX"
