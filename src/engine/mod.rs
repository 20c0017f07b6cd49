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
pub use mlp::gelu_new;
pub use tape::{NoTape, Site, Tape};
