//! The command line, as clap derive structs. Parsing only: the work happens in lib.rs.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Proves an in-repo GPT-2 inference engine correct, checkpoint by checkpoint, against
/// reference dumps from Hugging Face transformers.
#[derive(Parser, Debug)]
#[command(name = "llorch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Threads the engine runs on, the caller among them (default: every core). A correct
    /// engine computes the same numbers, bit for bit, on any number.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    /// The engine's kernel set: portable, avx2 or avx512 (default: the widest this CPU has).
    /// The sets round differently (fused multiply-adds or not), within float32 noise: validate
    /// passes on each.
    #[arg(long, global = true, value_name = "SET")]
    pub kernels: Option<KernelSet>,
}

/// The kernel sets of `--kernels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelSet {
    Portable,
    Avx2,
    Avx512,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the forward pass and compare every checkpoint tensor with the reference dumps.
    ///
    /// Exit status: 0 when every check passes, 1 when one fails (a tolerance, the accuracy
    /// verdict against a float64 truth, or two references that disagree), 2 on any error.
    Validate(Box<ValidateArgs>),
    /// What each weight format costs: ours and every dump made at the format against the
    /// float64 truth on the checkpoint's own weights, stage by stage, the weights' rounding shown
    /// apart, judged against PyTorch at that precision (or llama.cpp at Q8_0).
    ///
    /// Exit status: 0 when ours is no less accurate than the yardstick at every format that has
    /// one, 1 when it is, 2 on any error.
    Cost(CostArgs),
    /// Generate text with the same engine (greedy with --temp 0, or sampled).
    Generate(GenerateArgs),
    /// List the 13 checkpoints: their tensors, tolerances and accuracy rules.
    Checkpoints(CheckpointsArgs),
    /// Time the engine on a model (decode ms/token, prefill ms) beside the machine's read
    /// bandwidth, which bounds decoding. scripts/bench.py compares it with PyTorch.
    Bench(BenchArgs),
    /// Serve the same engine over HTTP: GET /health, POST /execute (tokens as Server-Sent
    /// Events). Runs until Ctrl-C or SIGTERM, then lets the streams in flight finish.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// HF model directory. Default: the bundled tiny random GPT-2.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,

    /// The format the engine holds its weight matrices in: f32, bf16, f16 or q8_0 (llama.cpp's
    /// types; Q8_0 = blocks of 32 int8 with an F16 scale). The checkpoint (F32, F16 or BF16) is
    /// converted at load; activations stay float32 (CHECKPOINTS.md, "Weight formats").
    #[arg(long, default_value = "f32", value_name = "FORMAT")]
    pub weights: crate::engine::WeightFormat,

    /// Address to listen on; port 0 picks a free port (the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub bind: std::net::SocketAddr,

    /// Requests that may wait while one generates; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub queue: usize,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// HF model directory. Default: the bundled tiny random GPT-2.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,

    /// The format the engine holds its weight matrices in: f32, bf16, f16 or q8_0 (llama.cpp's
    /// types; Q8_0 = blocks of 32 int8 with an F16 scale). The checkpoint (F32, F16 or BF16) is
    /// converted at load; activations stay float32 (CHECKPOINTS.md, "Weight formats").
    #[arg(long, default_value = "f32", value_name = "FORMAT")]
    pub weights: crate::engine::WeightFormat,

    /// Prompt length of the prefill timing (and before the decode steps).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub prompt_tokens: usize,

    /// Decode steps timed after the prompt; the median is reported.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub decode_tokens: usize,

    /// Prefill runs; the best is reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeats: usize,

    /// Output: lines for people, or JSON for scripts/bench.py.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(clap::Args, Debug)]
pub struct CheckpointsArgs {
    /// Output: a table for people, or JSON (the Python scripts read their tolerances from it).
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// HF model directory (config.json, model.safetensors, tokenizer files).
    /// Default: the bundled tiny random GPT-2, fixtures/tiny-gpt2.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,

    /// The format the engine holds its weight matrices in: f32, bf16, f16 or q8_0 (llama.cpp's
    /// types; Q8_0 = blocks of 32 int8 with an F16 scale). The checkpoint (F32, F16 or BF16) is
    /// converted at load; activations stay float32 (CHECKPOINTS.md, "Weight formats").
    #[arg(long, default_value = "f32", value_name = "FORMAT")]
    pub weights: crate::engine::WeightFormat,

    /// Reference dump directory (manifest.json + .npy files); repeat it to compare several
    /// references with ours and with each other in one run. A float64 dump is the truth of
    /// the accuracy verdict, the first float32 dump its peer. Default: every MODEL/reference*.
    #[arg(long, value_name = "DIR")]
    pub reference: Vec<PathBuf>,

    /// Checkpoints to check: a number 0-12, a list and ranges ("1,2,7", "0-7"), or "all".
    #[arg(long, short = 'c', value_name = "N|LIST|all", default_value = "all")]
    pub checkpoint: String,

    /// Transformer layer for the per-layer checkpoints 1-7: a number or "all".
    /// Default: 0, or all with --until-fail and --bisect.
    #[arg(long, short = 'l', value_name = "L|all")]
    pub layer: Option<String>,

    /// Absolute tolerance for every float checkpoint, replacing the defaults of CHECKPOINTS.md.
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub atol: Option<f64>,

    /// Relative tolerance for every float checkpoint, replacing the defaults of CHECKPOINTS.md.
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub rtol: Option<f64>,

    /// Multiply the tolerances of every comparison with SOURCE (a reference's name as the
    /// tables show it, e.g. llama.cpp-f32) by FACTOR, for a peer engine known to compute some
    /// stage less exactly. Every other pair keeps its tolerances; repeatable.
    #[arg(long, value_name = "SOURCE=FACTOR")]
    pub tolerance_scale: Vec<String>,

    /// Which pass to check: the prompt's (prefill), the decode step after it, or both.
    #[arg(long, value_enum, default_value_t = PhaseArg::Both)]
    pub phase: PhaseArg,

    /// Run every stage on the reference's own input to it (ln_1 on the reference's block
    /// input, attention on its ln_1 output, ...), so each stage is judged alone. Same as
    /// --mode isolated.
    #[arg(long, conflicts_with = "mode")]
    pub isolated: bool,

    /// chained (each stage on our own previous output, as generation runs), isolated, or both
    /// ("chained,isolated": side by side, a failing stage labelled as drift from an earlier
    /// stage or wrong itself).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MODE[,MODE]")]
    pub mode: Vec<ModeArg>,

    /// Validate only this case of the reference dump (default: every case).
    #[arg(long, value_name = "NAME")]
    pub case: Option<String>,

    /// Walk the checkpoints in forward order, layer by layer (one forward run per site), and
    /// stop at the first failing tensor. The last line of stdout names it.
    #[arg(long, conflicts_with = "bisect")]
    pub until_fail: bool,

    /// Binary-search the first failing (checkpoint, layer) with as few forward runs as
    /// possible. The last line of stdout names it.
    #[arg(long)]
    pub bisect: bool,

    /// Output: a table for people, or one JSON document for scripts.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,

    /// Write the report to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also write JUnit XML to FILE: one test case per (pair, checkpoint, layer, tensor), so CI
    /// systems list failing checkpoints like failing tests.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Also write a self-contained HTML report to DIR/index.html: error growth through the
    /// layers per checkpoint, |diff| heatmaps of failing tensors, diagnoses, sources.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,

    /// Also draw the |diff| heatmap of every tensor of this name in the HTML report (failing
    /// tensors always get one); repeatable.
    #[arg(long, value_name = "TENSOR", requires = "report")]
    pub heatmap: Vec<String>,

    /// Print only failing rows and the summary.
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also print each failing tensor's first mismatching elements and a histogram of |diff|.
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// Compare next-token distributions over a text instead of checkpoints: FILE is cut into
    /// windows as the corpus dumps were (`dump_reference.py --corpus FILE`), and every source's
    /// KLD against the float64 truth, top-1 agreement, |Δp| of the top token and perplexity are
    /// reported. Default dumps: every MODEL/corpus*.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = [
            "until_fail", "bisect", "junit", "report", "case", "isolated", "mode", "checkpoint", "layer",
            "phase", "atol", "rtol", "tolerance_scale", "heatmap", "quiet", "verbose"
        ]
    )]
    pub corpus: Option<PathBuf>,

    /// With --corpus: fail (exit 1) when ours's mean KLD against the truth exceeds X.
    #[arg(long, value_name = "X", requires = "corpus", allow_negative_numbers = true)]
    pub max_kld: Option<f64>,

    /// Test builds only: run an engine with a planted bug (or a correct variant).
    #[cfg(feature = "planted-bugs")]
    #[arg(long, value_enum, hide = true)]
    pub plant: Option<crate::plant::Variant>,

    /// Test builds only: write how often the run took each of the engine's remainder paths
    /// (src/engine/paths.rs) to FILE, as JSON.
    #[cfg(feature = "path-counters")]
    #[arg(long, value_name = "FILE", hide = true)]
    pub path_counts: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CostArgs {
    /// HF model directory. Default: the bundled tiny random GPT-2.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,

    /// The formats to run our engine at, e.g. "bf16,q8_0". Default: f32 and every format a dump
    /// of the run was made at.
    #[arg(long, value_delimiter = ',', value_name = "FORMAT[,FORMAT]")]
    pub weights: Vec<crate::engine::WeightFormat>,

    /// A dump of the run (repeatable): the float64 truth on the checkpoint's weights, float64
    /// truths on rounded weights (`dump_reference.py --weights-as`), PyTorch at a precision
    /// (`--dtype bfloat16`), llama.cpp at a format (`dump_llamacpp.py --outtype`). Default: every
    /// MODEL/reference*.
    #[arg(long, value_name = "DIR")]
    pub reference: Vec<PathBuf>,

    /// Only this case of the dumps (default: every case).
    #[arg(long, value_name = "NAME")]
    pub case: Option<String>,

    /// Output: a table for people, or one JSON document for scripts.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,

    /// Write the report to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also write a self-contained HTML report to DIR/index.html: the error's growth through
    /// the layers, one line per format.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,

    /// Test builds only: run an engine with a planted bug (or a correct variant) at the formats
    /// it is planted in (every format for a variant of no format's kernels).
    #[cfg(feature = "planted-bugs")]
    #[arg(long, value_enum, hide = true)]
    pub plant: Option<crate::plant::Variant>,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// The text to continue.
    #[arg(required_unless_present = "tokens")]
    pub prompt: Option<String>,

    /// Prompt as token ids instead of text, e.g. "15496,13".
    #[arg(long, value_name = "IDS", conflicts_with = "prompt")]
    pub tokens: Option<String>,

    /// HF model directory. Default: the bundled tiny random GPT-2.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,

    /// The format the engine holds its weight matrices in: f32, bf16, f16 or q8_0 (llama.cpp's
    /// types; Q8_0 = blocks of 32 int8 with an F16 scale). The checkpoint (F32, F16 or BF16) is
    /// converted at load; activations stay float32 (CHECKPOINTS.md, "Weight formats").
    #[arg(long, default_value = "f32", value_name = "FORMAT")]
    pub weights: crate::engine::WeightFormat,

    /// Sampling temperature; 0 picks the most likely token every step (greedy).
    #[arg(long, default_value_t = 1.0, value_name = "T", allow_negative_numbers = true)]
    pub temp: f32,

    /// Keep only the K most likely tokens before sampling.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Keep the smallest set of tokens whose probability reaches P before sampling.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,

    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// How many tokens to generate at most (stops early at end-of-text).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max_tokens: usize,

    /// Output: text streamed as it is generated, or one JSON object at the end.
    #[arg(long, value_enum, default_value_t = TextFormat::Text)]
    pub format: TextFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum ReportFormat {
    Table,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum ModeArg {
    Chained,
    Isolated,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum PhaseArg {
    Prefill,
    Decode,
    Both,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum TextFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
