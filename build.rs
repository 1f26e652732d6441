//! Embeds the shipped weights when `weights/` holds them (see src/model/weights.rs; the REMI-XL
//! baseline's in weights/remi-xl/ go into the command line only), and marks the
//! plugin library as never unloaded on Linux.
fn main() {
    // A host may dlclose the plugin right after destroying its editor, while the editor's window
    // thread (baseview) is still tearing down its GL context: with the code unmapped under it,
    // that thread crashes the host. `-z nodelete` keeps the library mapped once loaded.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo::rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
    println!("cargo::rustc-check-cfg=cfg(shipped_weights)");
    println!("cargo::rustc-check-cfg=cfg(shipped_remi_xl)");
    println!("cargo::rerun-if-changed=weights/remi-xl/model.safetensors");
    println!("cargo::rerun-if-changed=weights/remi-xl/config.json");
    // The REMI-XL baseline's weights go into the `cp-piano` binary only (see src/main.rs).
    if std::path::Path::new("weights/remi-xl/model.safetensors").exists() && std::path::Path::new("weights/remi-xl/config.json").exists() {
        println!("cargo::rustc-cfg=shipped_remi_xl");
    }
    println!("cargo::rerun-if-changed=weights/model.safetensors");
    println!("cargo::rerun-if-changed=weights/config.json");
    if std::path::Path::new("weights/model.safetensors").exists() && std::path::Path::new("weights/config.json").exists() {
        println!("cargo::rustc-cfg=shipped_weights");
    }
}
