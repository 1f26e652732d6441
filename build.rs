//! Embeds the shipped weights when `weights/` holds them (see src/weights.rs).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(shipped_weights)");
    println!("cargo::rerun-if-changed=weights/model.safetensors");
    println!("cargo::rerun-if-changed=weights/config.json");
    if std::path::Path::new("weights/model.safetensors").exists() && std::path::Path::new("weights/config.json").exists() {
        println!("cargo::rustc-cfg=shipped_weights");
    }
}
