# Spack recipe for domalloc. Copy this folder into a Spack package repository
# (`spack repo create`, then packages/domalloc/package.py) and `spack install domalloc`.
#
# NOT TESTED WITH SPACK: Spack cannot be installed on domalloc's test machines (it is not on PyPI
# or in Debian, and its git repository is out of reach there). scripts/test-site.sh only checks
# that this file is valid Python; what it runs (ffi/install.sh PREFIX after a cargo build) is what
# the rest of scripts/test-site.sh tests.

from spack.package import *


class Domalloc(Package):
    """NUMA-aware memory allocator: memory a thread gets comes from the NUMA node it runs on now,
    and blocks freed on another node go home. A drop-in malloc (LD_PRELOAD or -ldomalloc, with
    pkg-config and CMake files), the `domalloc` launcher with numactl-style placement options,
    and a Rust global allocator."""

    homepage = "https://github.com/domalloc/domalloc"
    git = "https://github.com/domalloc/domalloc.git"

    license("MIT OR Apache-2.0")

    version("main", branch="main")
    version("0.2.0", tag="v0.2.0")

    # cargo links through the C compiler (Spack's wrapper, which adds the RPATHs).
    depends_on("c", type="build")
    depends_on("rust@1.75:", type="build")
    depends_on("pkgconfig", type="build")
    # The launcher's `domalloc topo` compares with hwloc; the library itself needs only libc.
    depends_on("hwloc@2.8:")

    def setup_build_environment(self, env):
        # Crates downloaded by cargo stay in the build stage.
        env.set("CARGO_HOME", join_path(self.stage.path, "cargo-home"))

    def install(self, spec, prefix):
        # Builds with `cargo build --release -p domalloc-ffi -p domalloc-tools`, then installs
        # lib/ (libdomalloc.so.0.2.0, .so.0, .so, .a), include/, lib/pkgconfig/,
        # lib/cmake/domalloc/, share/man/, bin/domalloc and share/modulefiles/.
        bash = which("bash")
        bash(join_path("ffi", "install.sh"), prefix)

    def setup_run_environment(self, env):
        # The library `domalloc run` preloads.
        env.set("DOMALLOC_LIB", join_path(self.prefix.lib, "libdomalloc.so.0"))

    def test_launcher(self):
        """domalloc --version prints the package's version"""
        domalloc = which(self.prefix.bin.domalloc)
        out = domalloc("--version", output=str.split, error=str.split)
        assert str(self.spec.version) in out or self.spec.satisfies("@main")
