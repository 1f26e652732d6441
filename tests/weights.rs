//! Weights folders that cannot hurt: a checksum of `model.safetensors` recorded in
//! `config.json` at export and checked at load, and tensors holding NaN or infinity refused,
//! each with one clear error (before this, such files loaded and wrote empty songs).

use candle_core::{DType, Device, Tensor};
use cp_piano::model::config::Config;
use cp_piano::model::weights::{export_weights, Weights, CHECKSUM_KEY, CONFIG_FILE, WEIGHTS_FILE};
use cp_piano::model::Trainable;

fn tiny_tensors() -> (String, Vec<(String, Tensor)>) {
    tensors_of("tiny", 2)
}

fn tensors_of(preset: &str, seed: u64) -> (String, Vec<(String, Tensor)>) {
    let config = Config::preset(preset).unwrap();
    let model = Trainable::new(&config, seed, &Device::Cpu).unwrap();
    let mut tensors: Vec<(String, Tensor)> = model.named_tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (serde_json::to_string(&cp_piano::model::ModelConfig::from(&config)).unwrap(), tensors)
}

fn error_of(dir: &std::path::Path) -> String {
    match Weights::load_dir(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn exported_weights_carry_a_checksum_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tensors) = tiny_tensors();
    export_weights(dir.path(), &config, &tensors, DType::BF16).unwrap();
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
    assert!(written[CHECKSUM_KEY].as_str().unwrap().starts_with("fnv1a64:"));
    let weights = Weights::load_dir(dir.path()).unwrap();
    assert_eq!(weights.tensors.len(), tensors.len());
    weights.cp_config().unwrap();
    // A folder from before checksums (none recorded) still loads.
    std::fs::write(dir.path().join(CONFIG_FILE), &config).unwrap();
    Weights::load_dir(dir.path()).unwrap();
}

#[test]
fn a_changed_byte_is_refused_with_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tensors) = tiny_tensors();
    export_weights(dir.path(), &config, &tensors, DType::BF16).unwrap();
    let path = dir.path().join(WEIGHTS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let error = error_of(dir.path());
    assert!(error.contains("does not match the checksum in config.json"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn nan_or_infinite_tensors_are_refused_with_their_name() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut tensors) = tiny_tensors();
        let (name, t) = tensors[3].clone();
        let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let middle = values.len() / 2;
        values[middle] = bad;
        tensors[3].1 = Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap();
        // The checksum is right (the export wrote these bytes): only the values are wrong.
        export_weights(dir.path(), &config, &tensors, DType::F32).unwrap();
        let error = error_of(dir.path());
        assert!(error.contains(&format!("tensor {name} holds NaN or infinite values")), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
}

#[test]
fn the_shipped_weights_record_a_checksum_that_matches() {
    let config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/config.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&config).unwrap();
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/model.safetensors")).unwrap();
    assert_eq!(value[CHECKSUM_KEY].as_str(), Some(cp_piano::model::weights::checksum(&bytes).as_str()));
}

#[test]
fn averaged_weights_are_the_elementwise_mean_and_other_models_are_refused() {
    let load = |preset: &str, seed: u64| {
        let dir = tempfile::tempdir().unwrap();
        let (config, tensors) = tensors_of(preset, seed);
        export_weights(dir.path(), &config, &tensors, DType::F32).unwrap();
        Weights::load_dir(dir.path()).unwrap()
    };
    let (a, b, c) = (load("tiny", 1), load("tiny", 2), load("tiny", 3));
    let mean = Weights::average(&[a, b, c]).unwrap();
    let (a, b, c) = (load("tiny", 1), load("tiny", 2), load("tiny", 3));
    let values = |w: &Weights, name: &str| w.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for name in a.tensors.keys() {
        let (m, x, y, z) = (values(&mean, name), values(&a, name), values(&b, name), values(&c, name));
        for i in 0..m.len() {
            assert!((m[i] - (x[i] + y[i] + z[i]) / 3.0).abs() < 1e-6, "{name}[{i}]: {} is not the mean of {}, {}, {}", m[i], x[i], y[i], z[i]);
        }
    }
    mean.cp_config().unwrap();
    // Weights of another shape of model cannot be averaged with these.
    let error = Weights::average(&[a, load("small", 1)]).err().expect("a tiny and a small model were averaged").to_string();
    assert!(error.starts_with("cannot average: weights 2 have another config"), "{error}");
    assert!(Weights::average(&[]).is_err());
}
