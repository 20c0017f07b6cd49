//! The integration tests, one module per area, all in one test binary (as ripgrep's tests/):
//! each runs the real `llorch` binary on the bundled model and its committed reference dumps.
//! `tests/allocations.rs` is apart, since it counts allocations with its own global allocator.

// The helpers serve many modules; not every module uses every one.
#[allow(dead_code)]
mod common;

mod corpus;
mod cost;
mod coverage;
mod diagnostics;
mod errors;
mod generate;
mod isolated;
mod model_formats;
mod peer;
mod planted_bugs;
mod real_weights;
mod references;
mod report;
mod serve;
mod ties;
mod validate;
mod weight_formats;
