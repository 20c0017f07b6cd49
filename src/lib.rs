//! llorch proves a GPT-2 inference engine correct, one checkpoint at a time, against
//! independent references, and runs that same engine fast. Three layers, each using only the
//! ones above it:
//!
//! - [`engine`]: the GPT-2 forward pass, its kernels, KV cache, sampling, tokenizer and
//!   generation. It exposes its intermediate tensors at named checkpoints on a tape and knows
//!   nothing of what they are checked against.
//! - [`validation`]: the checkpoint table (tolerances, accuracy rules), the reference dumps,
//!   the comparisons, the run → checks → result pipeline, search, diagnosis and the reports.
//! - [`commands`]: the command line: options resolved once, one module per command, each
//!   owning its own output.
//!
//! `plant` (only with the `planted-bugs` cargo feature, the test suite's) wraps the engine in
//! planted bugs and correct-but-different numerics that the validator must catch or pass.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod commands;
pub mod engine;
#[cfg(feature = "planted-bugs")]
pub(crate) mod plant;
pub mod validation;

pub use commands::{DEFAULT_MODEL_DIR, run};
