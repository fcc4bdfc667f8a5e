//! Linker flags for `libdomalloc.so`.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    if family == "unix" && os != "macos" && os != "ios" {
        // A stable name for `-ldomalloc` links, whatever path the library was linked from.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdomalloc.so");
        // Never unload the allocator: blocks it handed out outlive a dlclose, and its thread-exit
        // destructor must stay mapped.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
