//! Linker flags for `libdomalloc.so`.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    if family == "unix" && os != "macos" && os != "ios" {
        // The versioned name programs record (DT_NEEDED) when linked with `-ldomalloc`: the
        // major version, 0 while every change of the ABI only adds (docs/ABI.md). ffi/install.sh
        // installs libdomalloc.so.MAJOR.MINOR.PATCH with the links libdomalloc.so.MAJOR and
        // libdomalloc.so pointing to it.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdomalloc.so.{}", env!("CARGO_PKG_VERSION_MAJOR"));
        // Never unload the allocator: blocks it handed out outlive a dlclose, and its thread-exit
        // destructor must stay mapped.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
