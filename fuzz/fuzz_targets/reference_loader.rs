//! A reference dump as a user could hand it to llorch: manifest.json and one .npy. Whatever the
//! bytes, opening the dump and loading its tensors end in Ok or Err, never a panic or an abort.
//! Input: manifest JSON, a 0xFF byte, then the bytes of case "c"'s file "c/t.npy".
#![no_main]

use libfuzzer_sys::fuzz_target;
use llorch::validation::reference::Reference;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xFF).unwrap_or(data.len());
    let (manifest, rest) = data.split_at(split);
    let npy = rest.get(1..).unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    std::fs::create_dir(dir.path().join("c")).unwrap();
    std::fs::write(dir.path().join("c/t.npy"), npy).unwrap();
    let Ok(reference) = Reference::open(dir.path()) else { return };
    for case in &reference.manifest.cases {
        for entry in &case.tensors {
            let _ = reference.load(entry);
        }
    }
});
