//! The GPT-2 engine: one struct per HF module, each with `load` and `forward` (field names are
//! HF's tensor names), the KV cache outside the weights, the products' kernels, sampling,
//! tokenizer and generation. It knows nothing of validation: the forward pass exposes its
//! intermediate tensors at named checkpoints on a `Tape`, and whoever holds the tape decides
//! what they are for.
//!
//! Read top-down: `gpt2` (the whole pass) → `block` → `attention`, `mlp`, `layer_norm` →
//! `linear` (HF's Conv1D) → `kernels` (the products) on `packed` weights, `team` threads and
//! `math` (vector units, exp, sums).

mod attention;
mod block;
pub(crate) mod checkpoint;
mod claim;
pub(crate) mod config;
pub mod format;
pub mod generate;
mod gpt2;
mod kernels;
pub(crate) mod kv_cache;
mod layer_norm;
pub(crate) mod linear;
mod math;
mod mlp;
pub(crate) mod packed;
pub mod paths;
pub mod sampling;
mod scratch;
pub(crate) mod tape;
pub(crate) mod team;
pub mod tokenizer;
pub mod weights;

pub use attention::softmax_in_place;
pub use checkpoint::Checkpoint;
pub use config::Config;
pub use format::WeightFormat;
pub use gpt2::Gpt2;
pub use kv_cache::KvCache;
pub use math::Simd;
pub use mlp::gelu_new;
pub use tape::{LogitsTape, NoTape, Site, Tape};

/// How this process runs the engine: its threads (`--threads`) and kernel set (`--kernels`),
/// each None for the default (every core, the widest kernels the CPU has). Before the engine has
/// run anything. The numbers of a correct engine do not depend on the threads; the kernel sets
/// differ in rounding (fused multiply-adds or not), within float32 noise.
pub fn run_on(threads: Option<usize>, kernels: Option<Simd>) -> anyhow::Result<()> {
    let mut chosen = Vec::new();
    if let Some(threads) = threads {
        team::use_threads(threads)?;
        chosen.push(format!("{threads} thread{}", if threads == 1 { "" } else { "s" }));
    }
    if let Some(kernels) = kernels {
        Simd::choose(kernels)?;
        chosen.push(format!("{} kernels", kernels.name()));
    }
    if !chosen.is_empty() {
        let _ = CHOSEN.set(chosen.join(", "));
    }
    Ok(())
}

/// The settings `run_on` was given, in words ("1 thread, portable kernels"); None for the
/// defaults. Reports print them beside the weights' format.
pub fn chosen_settings() -> Option<&'static str> {
    CHOSEN.get().map(String::as_str)
}

static CHOSEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
