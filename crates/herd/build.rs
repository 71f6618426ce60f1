//! Link options for the `herd` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    // Identical code folding: monomorphized copies that compile to the same machine code (common
    // with generics over types of the same layout) are kept once. The default linker on this
    // target is rust-lld, which supports it; release builds only (debug builds link faster
    // without it).
    if target == "x86_64-unknown-linux-gnu" && profile == "release" {
        println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    }
}
