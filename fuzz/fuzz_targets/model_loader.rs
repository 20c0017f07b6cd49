//! config.json + model.safetensors as a user could hand them to llorch: whatever the bytes,
//! loading in every weight format and a one-token forward pass end in Ok or Err, never a panic
//! or an abort. Input: config JSON, a 0xFF byte, then the safetensors bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llorch::engine::{Config, Gpt2, KvCache, WeightFormat, weights::Weights};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xFF).unwrap_or(data.len());
    let (config, rest) = data.split_at(split);
    let tensors = rest.get(1..).unwrap_or_default();
    let Ok(config) = std::str::from_utf8(config) else { return };
    let Ok(config) = Config::from_json(config) else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, tensors).unwrap();
    for format in WeightFormat::ALL {
        let Ok(weights) = Weights::open(&path, format) else { return };
        let Ok(model) = Gpt2::load(&weights, config.clone()) else { continue };
        if let Ok(mut cache) = KvCache::new(&model.config, 2) {
            let _ = model.forward(&[0], &mut cache);
        }
    }
});
