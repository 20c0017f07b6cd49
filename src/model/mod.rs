//! The in-repo GPT-2 engine: one struct per HF module, each with `load` and `forward`.

mod attention;
mod block;
pub mod config;
mod gpt2;
mod kernels;
pub mod kv_cache;
mod layer_norm;
mod linear;
mod math;
mod mlp;
pub mod packed;
mod scratch;
pub(crate) mod team;
pub mod weights;

pub use attention::softmax_in_place;
pub use config::Config;
pub use gpt2::Gpt2;
pub use kv_cache::KvCache;
