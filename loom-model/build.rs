//! Compiles the allocator's `src/sys/sync.rs` and `src/layout/remote.rs` (included by `src/lib.rs`) with
//! `cfg(loom)`, which swaps in loom's atomics and spin wait. Only this package gets the cfg:
//! loom and its dependencies build as usual (no `RUSTFLAGS`, so no rebuild of everything).
fn main() {
    println!("cargo:rustc-check-cfg=cfg(loom)");
    println!("cargo:rustc-cfg=loom");
}
