//! `llorch bench`: the engine's own speed on one model, and the machine's read bandwidth that
//! bounds it. A decoded token reads every weight matrix once, so bytes / bandwidth is the floor
//! no engine can beat on this machine. `scripts/bench.py` runs this beside PyTorch (and
//! llama.cpp) and prints the table of README.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use std::process::ExitCode;

use super::cli::{BenchArgs, ReportFormat};
use super::options::model_dir;
use super::print_out;
use crate::engine::{Gpt2, KvCache, LogitsTape, WeightFormat};

/// `llorch bench --model DIR`: measures, then prints the table (or the JSON scripts/bench.py
/// reads).
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let dir = model_dir(args.model)?;
    let model = Gpt2::load_dir(&dir, args.weights)?;
    eprintln!(
        "llorch bench: {} in {} on {} threads",
        dir.display(),
        model.format(),
        rayon::current_num_threads()
    );
    let result = measure(&model, args.prompt_tokens, args.decode_tokens, args.repeats)?;
    let text = match args.format {
        ReportFormat::Json => serde_json::to_string_pretty(&result)? + "\n",
        ReportFormat::Table => format!(
            "weights             {}\n\
             read bandwidth      {:.1} GB/s ({} threads, best of {} passes; slowest {:.1}, median {:.1})\n\
             weights per token   {:.1} MB: floor {:.2} ms/token\n\
             decode              {:.2} ms/token ({:.2}x the floor), median of {}\n\
             prefill {} tokens   {:.1} ms (last position's logits), {:.1} ms (all logits), best of {}\n",
            result.weights,
            result.read_bandwidth_gbs,
            result.threads,
            result.read_passes,
            result.read_bandwidth_spread_gbs[0],
            result.read_bandwidth_spread_gbs[1],
            result.bytes_per_token as f64 / 1e6,
            result.floor_ms_per_token,
            result.decode_ms_per_token,
            result.decode_ms_per_token / result.floor_ms_per_token,
            result.decode_tokens,
            result.prompt_tokens,
            result.prefill_ms_last_logits,
            result.prefill_ms_all_logits,
            result.repeats,
        ),
    };
    print_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
pub struct BenchResult {
    /// The format the weight matrices were held in.
    pub weights: WeightFormat,
    pub threads: usize,
    /// The best pass of the decode step's threads reading a buffer of 1 GiB or 256 MiB in the
    /// one-row product's pattern (`BandwidthProbe`), GB/s (1e9 bytes); one pass after every
    /// `STEPS_PER_PASS` decode steps (this machine's bandwidth moves by half from one minute to
    /// the next, so the floor is measured under the conditions the decode steps ran in), and a
    /// few after them.
    pub read_bandwidth_gbs: f64,
    /// The passes' slowest, median and best, GB/s.
    pub read_bandwidth_spread_gbs: [f64; 3],
    pub read_passes: usize,
    /// Bytes of weights a decoded token reads, in the format: every layer's matrices and
    /// vectors, ln_f and the tied lm_head (wpe contributes one row: left out).
    pub bytes_per_token: u64,
    /// bytes_per_token / read bandwidth.
    pub floor_ms_per_token: f64,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    /// Median over the decode steps after the prompt, each a forward of one token through the
    /// cache with the last position's logits.
    pub decode_ms_per_token: f64,
    /// Best of `repeats`: the prompt's forward pass with the last position's logits (as
    /// generation runs it).
    pub prefill_ms_last_logits: f64,
    /// Best of `repeats`: the same with every position's logits (as validation needs them).
    pub prefill_ms_all_logits: f64,
    pub repeats: usize,
}

/// Times `model` on a prompt of `prompt_tokens` token ids (1, 2, 3, ...: the ids do not change
/// the work) and `decode_tokens` decode steps after it.
pub fn measure(
    model: &Gpt2,
    prompt_tokens: usize,
    decode_tokens: usize,
    repeats: usize,
) -> Result<BenchResult> {
    let config = &model.config;
    ensure!(prompt_tokens > 0 && decode_tokens > 0 && repeats > 0, "every count must be at least 1");
    ensure!(
        prompt_tokens + decode_tokens <= config.n_positions,
        "{prompt_tokens} prompt + {decode_tokens} decoded tokens exceed the model's context of {}",
        config.n_positions
    );
    let prompt: Vec<u32> = (0..prompt_tokens).map(|i| (i % config.vocab_size) as u32).collect();

    // Warm-up: the first pass faults the memory-mapped weights in.
    model.forward(&prompt, &mut KvCache::new(config, prompt_tokens)?)?;
    let mut prefill_last = Duration::MAX;
    let mut prefill_all = Duration::MAX;
    for _ in 0..repeats {
        let mut cache = KvCache::new(config, prompt_tokens)?;
        let start = Instant::now();
        model.forward(&prompt, &mut cache)?;
        prefill_last = prefill_last.min(start.elapsed());
        let mut cache = KvCache::new(config, prompt_tokens)?;
        let start = Instant::now();
        // Every position's logits, as validation's passes compute them (checkpoint 8).
        model.forward_recorded(&prompt, &mut cache, &mut LogitsTape::default())?;
        prefill_all = prefill_all.min(start.elapsed());
    }

    let mut cache = KvCache::new(config, prompt_tokens + decode_tokens)?;
    model.forward(&prompt, &mut cache)?;
    let reader = BandwidthProbe::new()?;
    let mut steps = Vec::with_capacity(decode_tokens);
    let mut passes = Vec::with_capacity(decode_tokens);
    let mut token = 0u32;
    for step in 1..=decode_tokens {
        let start = Instant::now();
        let logits = model.forward(&[token], &mut cache)?;
        steps.push(start.elapsed());
        token = crate::engine::sampling::argmax(logits);
        if step % STEPS_PER_PASS == 0 || step == decode_tokens {
            let size = BandwidthProbe::SIZES[passes.len() % BandwidthProbe::SIZES.len()];
            passes.push(reader.pass(size));
        }
    }
    // A few more passes (decode steps were few), so that the best is a best.
    while passes.len() < 2 * BandwidthProbe::SIZES.len() * 3 {
        passes.push(reader.pass(BandwidthProbe::SIZES[passes.len() % BandwidthProbe::SIZES.len()]));
    }
    let decode = median(steps);
    passes.sort_by(f64::total_cmp);
    let bandwidth = *passes.last().expect("passes ran");
    let bytes = bytes_per_token(model);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(BenchResult {
        weights: model.format(),
        threads: rayon::current_num_threads(),
        read_bandwidth_gbs: bandwidth,
        read_bandwidth_spread_gbs: [passes[0], passes[passes.len() / 2], bandwidth],
        read_passes: passes.len(),
        bytes_per_token: bytes,
        floor_ms_per_token: bytes as f64 / (bandwidth * 1e9) * 1e3,
        prompt_tokens,
        decode_tokens,
        decode_ms_per_token: ms(decode),
        prefill_ms_last_logits: ms(prefill_last),
        prefill_ms_all_logits: ms(prefill_all),
        repeats,
    })
}

/// Decode steps between two bandwidth passes. A pass evicts the weights that the steps, run
/// back to back as generation runs them, find in the last-level cache: the step after a pass
/// measured ~15% slower on an Intel Xeon. With one pass per four steps, the median step is
/// one that runs as in generation.
const STEPS_PER_PASS: usize = 4;

/// Bytes of weights a decode step reads, in the model's format: all of them but wpe (float32),
/// of which it reads one row (left out).
fn bytes_per_token(model: &Gpt2) -> u64 {
    let c = &model.config;
    model.weight_bytes() - 4 * (c.n_positions * c.n_embd) as u64
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Streaming reads on the decode step's threads over buffers larger than any cache, in the
/// pattern of the one-row product: each thread its own contiguous share, read as four streams in
/// step (as the one-row kernel reads four panels at once), with the same prefetch hint one
/// stream line ahead. Integers are summed, so the sums vectorise and nothing but reading limits
/// them. The floor takes the best pass: an engine reading its weights once cannot beat it.
struct BandwidthProbe {
    /// In huge pages where the system grants them, as the weights are (`packed::huge_pages`):
    /// with 4 KiB pages the probe read ~10% slower than the decode step on an Intel Xeon.
    memory: memmap2::MmapMut,
}

impl BandwidthProbe {
    /// Passes read the whole buffer or its first quarter (two sizes, both far beyond the
    /// last-level cache), alternately.
    const BYTES: usize = 1 << 30;
    const SIZES: [usize; 2] = [Self::BYTES, Self::BYTES / 4];

    fn new() -> Result<BandwidthProbe> {
        let mut memory = crate::engine::packed::huge_pages(Self::BYTES)
            .context("1 GiB of memory for the bandwidth probe")?;
        let words: &mut [u64] = bytemuck::cast_slice_mut(&mut memory[..]);
        words.iter_mut().enumerate().for_each(|(i, w)| *w = i as u64);
        let probe = BandwidthProbe { memory };
        probe.pass(Self::BYTES); // warm-up
        Ok(probe)
    }

    /// GB/s of one pass over the first `bytes` of the buffer, on the decode step's own threads
    /// (`team`): a second pool (rayon's, whose workers spin for a while after a job) would still
    /// be spinning when the next decode step starts and slow it down.
    fn pass(&self, bytes: usize) -> f64 {
        const STREAMS: usize = 4;
        const LINE: usize = 8; // u64 words per cache line
        let data: &[u64] = bytemuck::cast_slice(&self.memory[..bytes]);
        let team = crate::engine::team::team();
        let share = data.len().div_ceil(team.size());
        let sums: Vec<AtomicU64> = (0..team.size()).map(|_| AtomicU64::new(0)).collect();
        let start = Instant::now();
        team.run(&|part| {
            let mine = data.chunks(share).nth(part).unwrap_or(&[]);
            let stream = mine.len() / STREAMS / LINE * LINE;
            let mut sum = [0u64; LINE];
            for line in (0..stream).step_by(LINE) {
                for s in 0..STREAMS {
                    let at = s * stream + line;
                    #[cfg(target_arch = "x86_64")]
                    if at + 2 * LINE < mine.len() {
                        // Safety: a prefetch reads nothing, whatever the address; SSE is part
                        // of x86-64.
                        unsafe {
                            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                                mine[at + 2 * LINE..].as_ptr().cast(),
                            )
                        };
                    }
                    for (sum, &w) in sum.iter_mut().zip(&mine[at..at + LINE]) {
                        *sum = sum.wrapping_add(w);
                    }
                }
            }
            let rest = mine[STREAMS * stream..].iter().fold(0u64, |a, &b| a.wrapping_add(b));
            sums[part].store(sum.iter().fold(rest, |a, &b| a.wrapping_add(b)), Ordering::Relaxed);
        });
        let elapsed = start.elapsed();
        std::hint::black_box(sums);
        bytes as f64 / elapsed.as_secs_f64() / 1e9
    }
}
