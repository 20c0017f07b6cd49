//! Engine variants for proving the validator: planted bugs it must catch at the stage that
//! holds them, and correct-but-different numerics it must pass. This module exists only in
//! builds with the `planted-bugs` cargo feature (the test suite's), selected by the hidden
//! `--plant` flag of such a build; never an environment variable, so nothing a user sets can
//! change the engine.
//!
//! The engine itself has no variant in it. A planted engine is the real one run through a
//! tape (`rewrite.rs`) that, at the output of the stage holding the variant, hands the pass what
//! the variant computes from that stage's inputs, exactly as the engine's own stages continue
//! with the reference's tensor in isolated mode. What the pass records, and goes on with, is
//! what an engine with that bug (or those numerics) would compute: later stages, the KV cache,
//! the logits and generation all inherit it. Two variants need more than a stage's output: the
//! LayerNorm epsilon is a changed config, and the cache bug also leaves the cache as the bug
//! would (`Planted::forward`).

mod arithmetic;
mod rewrite;

use std::path::Path;

use anyhow::Result;
use ndarray::{Array1, Array3};

use crate::engine::sampling::{self, Sampling};
use crate::engine::weights::Weights;
use crate::engine::{Config, Gpt2, KvCache, Tape, WeightFormat};
use crate::validation::runner::Runner;
use arithmetic::Params;
use rewrite::Rewriter;

/// One engine variant. Bugs first, then correct variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Bug: LayerNorm uses epsilon 1e-6 instead of the config's (1e-5).
    LnEpsilon,
    /// Bug: a constant 3e-6 added to every attention output, a few float32 ulps: inside every
    /// fixed tolerance.
    AttnOutShift,
    /// Bug: GELU's cubic coefficient 0.0447 instead of 0.044715.
    GeluCoefficient,
    /// Bug: the causal mask ignores the cached positions, so the decode step's query sees only
    /// the first key (the prompt's pass has no cache and is unaffected).
    DecodeMaskIgnoresCache,
    /// Bug: position ids restart at 0 after the cache (the decode step embeds its token at
    /// position 0).
    DecodePositionsRestart,
    /// Bug: the decode step writes its K and V over row 0 of the cache instead of row T.
    DecodeCacheOverwrite,
    /// Bug of a later decode step: the position id stops advancing after the first decode
    /// step (every step embeds its token at position T).
    DecodePositionStuck,
    /// Bug of a later decode step: the cache holds the prompt and 4 decode positions as a ring
    /// of the wrong capacity: from step 5 on, each step writes its K and V over row T (the
    /// first decode position's), its own row left empty.
    DecodeCacheRing,
    /// Bug: LayerNorm divides the squared deviations by n − 1 (unbiased variance).
    UnbiasedVariance,
    /// Bug: q and k taken from each other's third of c_attn's output.
    QkSwapped,
    /// Bug: the attention scores are not scaled by 1/√head_dim.
    MissingAttnScale,
    /// Bug: the causal mask lets each query see the next key too.
    MaskOffByOne,
    /// Bug: the heads are merged as [T, head_dim, n_head] before c_proj.
    HeadMergeOrder,
    /// Bug: the attention's c_proj weight read transposed (as nn.Linear's [out, in]).
    AttnProjTransposed,
    /// Bug: the erf GELU instead of GPT-2's tanh approximation.
    ErfGelu,
    /// Bug: the MLP's c_fc bias is dropped.
    MlpBiasDropped,
    /// Bug: the block's second residual is dropped: its output is the MLP's output alone.
    ResidualDropped,
    /// Bug: the final LayerNorm is skipped.
    LnFSkipped,
    /// Bug of a kernel path: the MLP's c_proj skips the pass's last row when it has more than
    /// one (a many-row kernel's row remainder), leaving it zero.
    MlpOutLastRowSkipped,
    /// Bug of a kernel path: the GELU leaves columns 48–63 (one 16-column panel) unwritten,
    /// zero.
    GeluPanelUnwritten,
    /// Bug of a kernel path: head 1's attention scores are head 0's (a head loop's offset).
    ScoresHeadOffset,
    /// Bug of a kernel path: the scores are computed for the first block of 64 keys only; a
    /// query that sees more keys has the later ones' scores 0 (the buffer as it was).
    ScoresFirstKeyBlockOnly,
    /// Bug of a kernel path: a product whose columns make an odd number of 16-column panels
    /// loses its last panel (a work split that rounds the panels per thread down), its columns
    /// left zero.
    OddLastPanelDropped,
    /// Bug: sampling multiplies the logits by the temperature instead of dividing.
    TemperatureMultiplied,
    /// Bug below the noise: GELU's cubic coefficient 0.04472 instead of 0.044715, off by 5e-6
    /// (about 30 float32 ulps of the constant), always the same way.
    GeluCubicNudged,
    /// Bug below the noise: GELU's √(2/π) written 0.79788 (0.7978845608…), 5.7e-6 low.
    GeluSqrtTwoOverPiRounded,
    /// Bug below the noise: the attention's 1/√head_dim four float32 ulps high (a scale
    /// computed another way and rounded up, say).
    ScoresScaleUlps,
    /// Bug below the noise: LayerNorm's 1/σ four float32 ulps high (an rsqrt approximation
    /// that errs one way).
    LayerNormInvStdUlps,
    /// Bug below the noise: the softmax divides by its sum taken four float32 ulps low, so every
    /// probability is 4 ulps high.
    SoftmaxSumUlps,
    /// Bug in the Q8_0 kernels (--weights q8_0): every product widens each odd block of 32
    /// lines with the scales of the block before it (one block's scales reused for the next).
    Q8ScaleOfPreviousBlock,
    /// Bug in the Q8_0 kernels (--weights q8_0): every product widens a panel's column j with
    /// column j + 1's scale (a wrong scale index; the panel's last column takes its first's).
    Q8ScaleOfNextColumn,
    /// Bug in the BF16 weights (--weights bf16): truncated to bfloat16 instead of rounded to
    /// nearest (what torch, and the references, do).
    Bf16Truncated,
    /// Correct arithmetic on another path: a pass of one token (the decode step's) sums the
    /// MLP's c_fc products from the last k to the first, a prompt's pass as the engine does.
    /// Every comparison with a reference passes; one pass and token by token differ.
    DecodePathSumsReversed,
    /// Correct: LayerNorm statistics accumulated in float32, as PyTorch's kernel does.
    F32LayerNormStats,
    /// Correct: GELU evaluated in float32 instead of float64.
    F32Gelu,
    /// Correct: the softmax's sum accumulated in float32, in order (the engine sums in float64).
    F32SoftmaxSums,
    /// Correct: every matrix product as a plain loop accumulating in float32 in reverse order.
    ReverseOrderMatmul,
    /// Correct (--weights q8_0): every product sums each Q8_0 block's 32 terms x·q in float32,
    /// then multiplies by the block's scale (as llama.cpp's Q8_0 kernels scale per block).
    Q8ScaleAfterBlockSum,
}

impl Variant {
    /// The weight format a variant of the reduced-precision kernels needs our engine in.
    pub fn format(self) -> Option<WeightFormat> {
        match self {
            Variant::Q8ScaleOfPreviousBlock
            | Variant::Q8ScaleOfNextColumn
            | Variant::Q8ScaleAfterBlockSum => Some(WeightFormat::Q8_0),
            Variant::Bf16Truncated => Some(WeightFormat::Bf16),
            _ => None,
        }
    }

    /// Whether the variant computes every product with a weight matrix its own way.
    pub fn in_every_product(self) -> bool {
        matches!(
            self,
            Variant::ReverseOrderMatmul
                | Variant::Q8ScaleOfPreviousBlock
                | Variant::Q8ScaleOfNextColumn
                | Variant::Bf16Truncated
                | Variant::Q8ScaleAfterBlockSum
        )
    }
}

/// The pass a variant runs in: its tokens, the positions cached before it, and the prompt's
/// length.
#[derive(Clone, Copy)]
pub struct Pass<'a> {
    pub tokens: &'a [u32],
    pub past: usize,
    pub prompt_len: usize,
}

impl Pass<'_> {
    /// The cache row a decode-cache bug writes this step's K and V over instead of row `past`.
    pub fn overwritten_row(&self, variant: Variant) -> Option<usize> {
        match variant {
            Variant::DecodeCacheOverwrite if self.past > 0 => Some(0),
            Variant::DecodeCacheRing if self.past >= self.prompt_len + 4 => Some(self.prompt_len),
            _ => None,
        }
    }
}

/// The real engine with one variant planted.
pub struct Planted {
    /// The engine the variant wraps (its config changed for `LnEpsilon`).
    engine: Gpt2,
    /// The model's own configuration, which validation sees.
    config: Config,
    variant: Variant,
    /// The weights the variants' stages read.
    params: Params,
    /// The prompt's length, set by the pass that starts an empty cache: the later-step bugs
    /// count from it.
    prompt_len: std::cell::Cell<usize>,
}

impl Planted {
    pub fn load_dir(dir: &Path, variant: Variant, format: WeightFormat) -> Result<Planted> {
        if let Some(needed) = variant.format() {
            anyhow::ensure!(
                needed == format,
                "the planted variant {variant:?} is in the {needed} kernels: run it with --weights {needed}"
            );
        }
        let config = Config::from_file(&dir.join("config.json"))?;
        let weights = Weights::open(&dir.join("model.safetensors"), format)?;
        let mut engine_config = config.clone();
        if variant == Variant::LnEpsilon {
            engine_config.layer_norm_epsilon = 1e-6;
        }
        let engine = Gpt2::load(&weights, engine_config)?;
        let params = Params::load(&weights, &config, variant)?;
        Ok(Planted { engine, config, variant, params, prompt_len: std::cell::Cell::new(0) })
    }
}

impl Runner for Planted {
    fn config(&self) -> &Config {
        &self.config
    }

    fn weights(&self) -> WeightFormat {
        self.engine.format()
    }

    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Option<Array1<f32>>> {
        let past = cache.seq_len();
        // The keys and values of the positions before this pass, [n_head, past, head_dim] per
        // layer: the attention variants recompute the scores and the weighted values over them.
        let cached: Vec<(Array3<f32>, Array3<f32>)> = (0..self.config.n_layer)
            .map(|l| (cache.keys(l).to_owned(), cache.values(l).to_owned()))
            .collect();
        if past == 0 {
            self.prompt_len.set(tokens.len());
        }
        let at = Pass { tokens, past, prompt_len: self.prompt_len.get() };
        let overwrite = at.overwritten_row(self.variant);
        let mut rewriter = Rewriter::new(self.variant, &self.params, &self.config, tape, at, &cached);
        let logits = self.engine.forward_recorded(tokens, cache, &mut rewriter)?;
        let own_logits = rewriter.last_logits.take();
        if let Some(row) = overwrite.filter(|_| cache.seq_len() == past + tokens.len()) {
            // The bug writes the step's K and V over `row` and leaves row `past` as it was
            // (zero: the cache starts zeroed).
            for (l, (k, v)) in rewriter.new_keys_and_values().into_iter().enumerate() {
                let zeros = Array3::<f32>::zeros(k.raw_dim());
                cache.overwrite(l, past, zeros.view(), zeros.view());
                cache.overwrite(l, row, k.view(), v.view());
            }
        }
        Ok(logits.map(|engine_logits| own_logits.unwrap_or(engine_logits)))
    }

    fn probabilities(&self, logits: &[f32], s: &Sampling) -> Vec<f32> {
        if self.variant == Variant::TemperatureMultiplied && s.temperature != 1.0 {
            // The bug multiplies by the temperature where HF divides; the warpers then run
            // with nothing left to scale.
            let scaled: Vec<f32> = logits.iter().map(|x| x * s.temperature).collect();
            let unscaled = Sampling { temperature: 1.0, ..*s };
            return sampling::probabilities(&scaled, &unscaled);
        }
        sampling::probabilities(logits, s)
    }
}
