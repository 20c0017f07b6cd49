//! The tape that plants a variant: it wraps the validation's tape, sees every tensor the pass
//! records, and at the stages the variant changes hands the pass (and the validation's tape)
//! what the variant computes from that stage's inputs. It remembers every stage's output as the
//! pass went on with it (its own, the variant's, or, in isolated mode, the reference's), so a
//! variant's stage reads exactly the inputs the engine's stage would have read.

use std::collections::HashMap;

use anyhow::{Context, Result};
use ndarray::{Array1, Array2, Array3, ArrayD, ArrayViewD, Axis, Ix2, Ix3, concatenate, s};

use super::arithmetic::{self, Gelu, Params, Statistics};
use super::{Pass, Variant};
use crate::engine::kv_cache::KEY_BLOCK;
use crate::engine::packed::PANEL;
use crate::engine::{Checkpoint, Config, Site, Tape};

type Key = (Checkpoint, Option<usize>, &'static str);

pub struct Rewriter<'a> {
    variant: Variant,
    params: &'a Params,
    config: &'a Config,
    inner: &'a mut dyn Tape,
    tokens: &'a [u32],
    /// Positions cached before this pass.
    past: usize,
    /// The prompt's length.
    prompt_len: usize,
    /// The row a decode-cache bug writes this step's K and V over (instead of row `past`).
    overwrite: Option<usize>,
    /// Keys and values of those positions per layer, [nh, past, hd] each.
    cached: &'a [(Array3<f32>, Array3<f32>)],
    /// Every stage's output so far as the pass continued with it.
    seen: HashMap<Key, ArrayD<f32>>,
    /// The variant's tensor for the stage just recorded, handed to the pass as its replacement.
    pending: Option<(Key, ArrayD<f32>)>,
    /// The c_attn output [T, 3C] of the layer being run, when the variant recomputes it.
    qkv: Option<Array2<f32>>,
    /// The last position's logits [V] where the variant computes its own.
    pub last_logits: Option<Array1<f32>>,
}

fn key(site: Site) -> Key {
    (site.checkpoint, site.layer, site.name)
}

impl<'a> Rewriter<'a> {
    pub fn new(
        variant: Variant,
        params: &'a Params,
        config: &'a Config,
        inner: &'a mut dyn Tape,
        at: Pass<'a>,
        cached: &'a [(Array3<f32>, Array3<f32>)],
    ) -> Rewriter<'a> {
        Rewriter {
            variant,
            params,
            config,
            inner,
            tokens: at.tokens,
            past: at.past,
            prompt_len: at.prompt_len,
            overwrite: at.overwritten_row(variant),
            cached,
            seen: HashMap::new(),
            pending: None,
            qkv: None,
            last_logits: None,
        }
    }

    /// The keys and values this pass wrote, per layer ([nh, T, hd] each), as the pass went on
    /// with them.
    pub fn new_keys_and_values(&self) -> Vec<(Array3<f32>, Array3<f32>)> {
        (0..self.config.n_layer)
            .filter_map(|l| {
                Some((self.get3(Checkpoint::Qkv, l, "k").ok()?, self.get3(Checkpoint::Qkv, l, "v").ok()?))
            })
            .collect()
    }

    fn get(&self, checkpoint: Checkpoint, layer: Option<usize>, name: &'static str) -> Result<&ArrayD<f32>> {
        self.seen
            .get(&(checkpoint, layer, name))
            .with_context(|| format!("the pass recorded no {name} before"))
    }

    fn get2(&self, checkpoint: Checkpoint, layer: Option<usize>, name: &'static str) -> Result<Array2<f32>> {
        Ok(self.get(checkpoint, layer, name)?.clone().into_dimensionality::<Ix2>()?)
    }

    fn get3(&self, checkpoint: Checkpoint, layer: usize, name: &'static str) -> Result<Array3<f32>> {
        Ok(self.get(checkpoint, Some(layer), name)?.clone().into_dimensionality::<Ix3>()?)
    }

    /// The residual stream entering layer `l` (or, for l = n_layer, ln_f), [T, C].
    fn stream_into(&self, l: usize) -> Result<Array2<f32>> {
        match l {
            0 => self.get2(Checkpoint::Embeddings, None, "embeddings"),
            l => self.get2(Checkpoint::BlockOutput, Some(l - 1), "block_out"),
        }
    }

    /// The stream after layer `l`'s attention, ln_2's input: x + attn_out, [T, C].
    fn stream_after_attention(&self, l: usize) -> Result<Array2<f32>> {
        Ok(self.stream_into(l)? + &self.get2(Checkpoint::AttnOutput, Some(l), "attn_out")?)
    }

    /// Layer `l`'s keys or values over every position of the pass, [nh, S, hd]: the cached ones,
    /// then this pass's.
    fn all_positions(&self, l: usize, name: &'static str) -> Result<Array3<f32>> {
        let (k, v) = &self.cached[l];
        let before = if name == "k" { k } else { v };
        Ok(concatenate(Axis(1), &[before.view(), self.get3(Checkpoint::Qkv, l, name)?.view()])?)
    }

    /// A decode-cache bug's view of the keys or values: this step's row written over the bug's
    /// row, the step's own row `past` never written (zero).
    fn overwritten(&self, mut rows: Array3<f32>) -> Array3<f32> {
        let past = self.past;
        if let Some(row) = self.overwrite {
            let new = rows.slice(s![.., past..past + 1, ..]).to_owned();
            rows.slice_mut(s![.., row..row + 1, ..]).assign(&new);
            rows.slice_mut(s![.., past..past + 1, ..]).fill(0.0);
        }
        rows
    }

    fn attention_keys(&self, l: usize) -> Result<Array3<f32>> {
        Ok(self.overwritten(self.all_positions(l, "k")?))
    }

    fn attention_values(&self, l: usize) -> Result<Array3<f32>> {
        Ok(self.overwritten(self.all_positions(l, "v")?))
    }

    /// The scores of layer `l` with a scale and the keys each query sees.
    fn scores(&self, l: usize, scale: f32, visible: impl Fn(usize) -> usize) -> Result<ArrayD<f32>> {
        let q = self.get3(Checkpoint::Qkv, l, "q")?;
        Ok(arithmetic::scores(q.view(), self.attention_keys(l)?.view(), scale, visible).into_dyn())
    }

    /// Layer `l`'s heads weighted and merged, [T, C], from the probabilities the pass went on
    /// with.
    fn merged_heads(&self, l: usize, wrong_order: bool) -> Result<Array2<f32>> {
        let probs = self.get3(Checkpoint::AttnScores, l, "attn_probs")?;
        let context = arithmetic::weighted_values(probs.view(), self.attention_values(l)?.view());
        Ok(arithmetic::merge_heads(context.view(), wrong_order))
    }

    /// The variant's tensor at `site`, None where the variant leaves the engine's. `engine` is
    /// what the engine computed there.
    fn rewrite(&mut self, site: Site, engine: ArrayViewD<'_, f32>) -> Result<Option<ArrayD<f32>>> {
        use Checkpoint as Cp;
        use Variant as V;
        let (nh, hd) = (self.config.n_head, self.config.head_dim());
        let scale = (hd as f64).powf(-0.5) as f32;
        let past = self.past;
        let causal = move |i: usize| past + i + 1;
        let eps = self.config.layer_norm_epsilon;
        let p = self.params;
        let n_layer = self.config.n_layer;
        let planted = match (self.variant, site.checkpoint, site.layer, site.name) {
            (V::DecodePositionsRestart, Cp::Embeddings, ..) => {
                Some(arithmetic::embeddings(p, self.tokens, 0..self.tokens.len()).into_dyn())
            }
            (V::DecodePositionStuck, Cp::Embeddings, ..) if past > self.prompt_len => {
                let at = self.prompt_len;
                Some(arithmetic::embeddings(p, self.tokens, at..at + self.tokens.len()).into_dyn())
            }
            (
                V::UnbiasedVariance | V::F32LayerNormStats | V::LayerNormInvStdUlps,
                cp,
                layer,
                name @ ("ln_1" | "ln_2" | "ln_f"),
            ) => {
                let statistics = match self.variant {
                    V::UnbiasedVariance => Statistics::Unbiased,
                    V::F32LayerNormStats => Statistics::Float32,
                    _ => Statistics::InvStdHigh,
                };
                let (x, norm) = match (cp, layer, name) {
                    (_, Some(l), "ln_1") => (self.stream_into(l)?, &p.h[l].ln_1),
                    (_, Some(l), "ln_2") => (self.stream_after_attention(l)?, &p.h[l].ln_2),
                    _ => (self.stream_into(n_layer)?, &p.ln_f),
                };
                Some(arithmetic::layer_norm(x.view(), norm, eps, statistics).into_dyn())
            }
            (V::QkSwapped, Cp::Qkv, Some(l), name @ ("q" | "k")) => {
                if name == "q" {
                    let ln_1 = self.get2(Cp::LayerNorm, Some(l), "ln_1")?;
                    self.qkv = Some(p.h[l].c_attn.forward(ln_1.view(), true));
                }
                let qkv = self.qkv.as_ref().context("c_attn's output before k")?;
                Some(arithmetic::split_heads(qkv.view(), if name == "q" { 1 } else { 0 }, nh).into_dyn())
            }
            (v, Cp::Qkv, Some(l), name) if v.in_every_product() => {
                if name == "q" {
                    let ln_1 = self.get2(Cp::LayerNorm, Some(l), "ln_1")?;
                    self.qkv = Some(p.h[l].c_attn.forward_as(ln_1.view(), v));
                }
                let qkv = self.qkv.as_ref().context("c_attn's output before k and v")?;
                let third = ["q", "k", "v"].iter().position(|&n| n == name).context("a Q/K/V tensor")?;
                Some(arithmetic::split_heads(qkv.view(), third, nh).into_dyn())
            }
            (V::MissingAttnScale, Cp::AttnScores, Some(l), "scores") => Some(self.scores(l, 1.0, causal)?),
            (V::ScoresScaleUlps, Cp::AttnScores, Some(l), "scores") => {
                Some(self.scores(l, f32::from_bits(scale.to_bits() + 4), causal)?)
            }
            (V::SoftmaxSumUlps, Cp::AttnScores, Some(_), "attn_probs") => {
                Some(engine.mapv(|p| (p as f64 * (1.0 + arithmetic::FOUR_ULPS)) as f32))
            }
            (V::F32SoftmaxSums, Cp::AttnScores, Some(l), "attn_probs") => {
                let scores = self.get3(Cp::AttnScores, l, "scores")?;
                Some(arithmetic::softmax_f32_sum(scores.view()).into_dyn())
            }
            (V::MaskOffByOne, Cp::AttnScores, Some(l), "scores") => {
                Some(self.scores(l, scale, |i| past + i + 2)?)
            }
            (V::DecodeMaskIgnoresCache, Cp::AttnScores, Some(l), "scores") => {
                Some(self.scores(l, scale, |i| i + 1)?)
            }
            (V::DecodeCacheOverwrite | V::DecodeCacheRing, Cp::AttnScores, Some(l), "scores")
                if self.overwrite.is_some() =>
            {
                Some(self.scores(l, scale, causal)?)
            }
            (V::DecodeCacheOverwrite | V::DecodeCacheRing, Cp::AttnOutput, Some(l), _)
                if self.overwrite.is_some() =>
            {
                Some(p.h[l].attn_c_proj.forward(self.merged_heads(l, false)?.view(), true).into_dyn())
            }
            (V::HeadMergeOrder, Cp::AttnOutput, Some(l), _) => {
                Some(p.h[l].attn_c_proj.forward(self.merged_heads(l, true)?.view(), true).into_dyn())
            }
            (V::AttnProjTransposed, Cp::AttnOutput, Some(l), _) => {
                Some(p.h[l].attn_c_proj.forward_transposed(self.merged_heads(l, false)?.view()).into_dyn())
            }
            (v, Cp::AttnOutput, Some(l), _) if v.in_every_product() => {
                Some(p.h[l].attn_c_proj.forward_as(self.merged_heads(l, false)?.view(), v).into_dyn())
            }
            (V::AttnOutShift, Cp::AttnOutput, ..) => Some(&engine + 3e-6),
            (V::MlpOutLastRowSkipped, Cp::Ffn, Some(_), "mlp_out") if engine.shape()[0] > 1 => {
                let mut out = engine.to_owned();
                let last = out.shape()[0] - 1;
                out.index_axis_mut(Axis(0), last).fill(0.0);
                Some(out)
            }
            (V::GeluPanelUnwritten, Cp::Ffn, Some(_), "gelu") => {
                let mut out = engine.to_owned();
                out.slice_mut(s![.., 48..64]).fill(0.0);
                Some(out)
            }
            (V::ScoresHeadOffset, Cp::AttnScores, Some(_), "scores") => {
                let mut out = engine.to_owned();
                let head0 = out.index_axis(Axis(0), 0).to_owned();
                out.index_axis_mut(Axis(0), 1).assign(&head0);
                Some(out)
            }
            (V::ScoresFirstKeyBlockOnly, Cp::AttnScores, Some(_), "scores") => {
                let mut out = engine.into_dimensionality::<Ix3>()?.to_owned(); // [nh, T, S]
                for mut head in out.outer_iter_mut() {
                    for (i, mut row) in head.outer_iter_mut().enumerate() {
                        let seen = causal(i).min(row.len());
                        row.slice_mut(s![KEY_BLOCK.min(seen)..seen]).fill(0.0);
                    }
                }
                Some(out.into_dyn())
            }
            (V::OddLastPanelDropped, Cp::Qkv, Some(_), "v") => {
                // c_attn's last panel of [T, 3C] lies in v's third, [T, C] with head h at
                // columns h·hd..(h + 1)·hd.
                let c = nh * hd;
                let lost = last_odd_panel(3 * c).map(|cols| cols.start - 2 * c..c);
                lost.map(|cols| {
                    let mut out = engine.into_dimensionality::<Ix3>()?.to_owned(); // [nh, T, hd]
                    for j in cols {
                        out.slice_mut(s![j / hd, .., j % hd]).fill(0.0);
                    }
                    anyhow::Ok(out.into_dyn())
                })
                .transpose()?
            }
            (V::OddLastPanelDropped, Cp::AttnOutput | Cp::Ffn | Cp::Logits | Cp::SelectedLogits, _, name)
                if name != "ln_2" && name != "ln_f" =>
            {
                // The product's columns are the tensor's last axis: [T, N], or [N] for the
                // selected logits.
                let n = *engine.shape().last().context("a product's output")?;
                last_odd_panel(n).map(|cols| {
                    let mut out = engine.to_owned();
                    let last = Axis(out.ndim() - 1);
                    out.slice_axis_mut(last, cols.into()).fill(0.0);
                    if site.checkpoint == Cp::SelectedLogits {
                        self.last_logits = Some(out.clone().into_dimensionality().expect("[V]"));
                    }
                    out
                })
            }
            (v, Cp::Ffn, Some(l), "gelu")
                if v.in_every_product()
                    || matches!(
                        v,
                        V::ErfGelu
                            | V::F32Gelu
                            | V::GeluCoefficient
                            | V::GeluCubicNudged
                            | V::GeluSqrtTwoOverPiRounded
                            | V::MlpBiasDropped
                    )
                    || (v == V::DecodePathSumsReversed && self.tokens.len() == 1) =>
            {
                let ln_2 = self.get2(Cp::Ffn, Some(l), "ln_2")?;
                let c_fc = &p.h[l].c_fc;
                let (pre, form) = match self.variant {
                    V::ErfGelu => (c_fc.forward(ln_2.view(), true), Gelu::Erf),
                    V::F32Gelu => (c_fc.forward(ln_2.view(), true), Gelu::TanhFloat32),
                    V::GeluCoefficient => {
                        (c_fc.forward(ln_2.view(), true), constants(0.0447, SQRT_2_OVER_PI))
                    }
                    V::GeluCubicNudged => {
                        (c_fc.forward(ln_2.view(), true), constants(0.04472, SQRT_2_OVER_PI))
                    }
                    V::GeluSqrtTwoOverPiRounded => {
                        (c_fc.forward(ln_2.view(), true), constants(0.044715, 0.79788))
                    }
                    V::MlpBiasDropped => (c_fc.forward(ln_2.view(), false), Gelu::Tanh),
                    V::DecodePathSumsReversed => (c_fc.forward_reverse_order(ln_2.view()), Gelu::Tanh),
                    v => (c_fc.forward_as(ln_2.view(), v), Gelu::Tanh),
                };
                Some(pre.mapv(|x| arithmetic::gelu(x, form)).into_dyn())
            }
            (v, Cp::Ffn, Some(l), "mlp_out") if v.in_every_product() => {
                let gelu = self.get2(Cp::Ffn, Some(l), "gelu")?;
                Some(p.h[l].mlp_c_proj.forward_as(gelu.view(), v).into_dyn())
            }
            (V::ResidualDropped, Cp::BlockOutput, Some(l), _) => {
                Some(self.get(Cp::Ffn, Some(l), "mlp_out")?.clone())
            }
            (V::LnFSkipped, Cp::Logits, None, "ln_f") => Some(self.stream_into(n_layer)?.into_dyn()),
            (v, Cp::Logits, None, "logits") if v.in_every_product() => {
                let ln_f = self.get2(Cp::Logits, None, "ln_f")?;
                Some(p.lm_head.forward_as(ln_f.view(), v).into_dyn())
            }
            (v, Cp::SelectedLogits, None, _) if v.in_every_product() => {
                let ln_f = self.get2(Cp::Logits, None, "ln_f")?;
                let last = ln_f.slice(s![ln_f.nrows() - 1.., ..]);
                let logits = p.lm_head.forward_as(last, v).row(0).to_owned();
                self.last_logits = Some(logits.clone());
                Some(logits.into_dyn())
            }
            _ => None,
        };
        Ok(planted)
    }
}

/// √(2/π), as GELU's tanh form has it.
const SQRT_2_OVER_PI: f64 = 0.7978845608028654;

fn constants(cubic: f64, sqrt_2_over_pi: f64) -> Gelu {
    Gelu::Constants { cubic, sqrt_2_over_pi }
}

/// The columns of a product's last 16-column panel when N columns make an odd number of
/// panels.
fn last_odd_panel(n: usize) -> Option<std::ops::Range<usize>> {
    let panels = n.div_ceil(PANEL);
    (panels % 2 == 1).then(|| (panels - 1) * PANEL..n)
}

impl Tape for Rewriter<'_> {
    /// Everything: a variant's stage reads the outputs of the stages before it.
    fn wants(&self, _: Checkpoint, _: Option<usize>) -> bool {
        true
    }

    fn record(&mut self, site: Site, tensor: ArrayViewD<'_, f32>) -> Result<()> {
        let planted = self.rewrite(site, tensor.view())?;
        let recorded = planted.as_ref().map_or(tensor.view(), |t| t.view());
        if self.inner.wants(site.checkpoint, site.layer) {
            self.inner.record(site, recorded.view())?;
        }
        self.seen.insert(key(site), recorded.to_owned());
        self.pending = planted.map(|t| (key(site), t));
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.inner.is_complete()
    }

    /// The reference's tensor where the validation's tape has one (isolated mode), else the
    /// variant's, else the engine's own.
    fn replacement(&mut self, site: Site) -> Result<Option<ArrayD<f32>>> {
        let planted = self.pending.take().filter(|(k, _)| *k == key(site)).map(|(_, t)| t);
        let chosen = self.inner.replacement(site)?.or(planted);
        if let Some(tensor) = &chosen {
            self.seen.insert(key(site), tensor.clone());
        }
        Ok(chosen)
    }
}
