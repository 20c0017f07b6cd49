//! Engine variants for proving the validator: planted bugs it must catch at the stage that
//! holds them, and correct-but-different numerics it must pass. They exist only in builds with
//! the `planted-bugs` cargo feature (the test suite's), selected by the hidden `--plant` flag of
//! such a build; in every other build `active` is a constant `false` and the variants compile
//! away. Never an environment variable: nothing a user sets can change the engine.

/// One engine variant. Bugs first, then correct variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "planted-bugs", derive(clap::ValueEnum))]
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
    /// Bug: sampling multiplies the logits by the temperature instead of dividing.
    TemperatureMultiplied,
    /// Correct: LayerNorm statistics accumulated in float32, as PyTorch's kernel does.
    F32LayerNormStats,
    /// Correct: GELU evaluated in float32 instead of float64.
    F32Gelu,
    /// Correct: every matrix product as a plain loop accumulating in float32 in reverse order.
    ReverseOrderMatmul,
}

#[cfg(feature = "planted-bugs")]
static ACTIVE: std::sync::OnceLock<Variant> = std::sync::OnceLock::new();

/// Selects the variant of this process (once, at start-up).
#[cfg(feature = "planted-bugs")]
pub fn select(variant: Variant) {
    let _ = ACTIVE.set(variant);
}

/// Whether the engine runs `variant`. Always false without the `planted-bugs` feature.
#[inline(always)]
pub fn active(variant: Variant) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.get() == Some(&variant)
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = variant;
        false
    }
}
