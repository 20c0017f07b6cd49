//! What the variants compute, each as a plain function of a stage's inputs, and the weights
//! they read. Where a variant's stage shares arithmetic with the engine's (a product with a
//! weight matrix, the scaled dot products of the scores, the weighted values) it is computed the
//! same way, term for term, so that the variant differs from the engine by its planted change
//! alone.

use anyhow::Result;
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, Axis, Zip};

use super::Variant;
use crate::engine::format::Q8_0_BLOCK;
use crate::engine::linear::matmul;
use crate::engine::packed::{PANEL, PackedMatrix};
use crate::engine::weights::{Orientation, Weights};
use crate::engine::{Config, WeightFormat};

/// A Conv1D's W [in, out] (packed as the engine has it) and bias [out]; for the variants of the
/// reduced-precision kernels, also the weights as the variant widens them.
pub struct Linear {
    weight: PackedMatrix,
    bias: Array1<f32>,
    /// What a misreading variant's kernels make of W, laid out in F32 for the engine's kernels:
    /// the F32 kernels on widened weights are the format's kernels, bit for bit, so the variant
    /// differs from the engine by its misreading alone.
    misread: Option<PackedMatrix>,
}

impl Linear {
    fn load(weights: &Weights, prefix: &str, n_in: usize, n_out: usize, variant: Variant) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        let weight = weights.get_packed(&name, [n_in, n_out], Orientation::AsIs)?;
        let bias = weights.get(&format!("{prefix}.bias"), &[n_out])?.view1().to_owned();
        Linear::new(weights, &name, weight, bias, Orientation::AsIs, variant)
    }

    fn new(
        weights: &Weights,
        name: &str,
        weight: PackedMatrix,
        bias: Array1<f32>,
        orientation: Orientation,
        variant: Variant,
    ) -> Result<Linear> {
        let misread = match variant {
            Variant::Q8ScaleOfPreviousBlock | Variant::Q8ScaleOfNextColumn => {
                Some(misread(&weight, |i, j| {
                    let (_, q) = weight.q8_parts(i, j);
                    let (i, j) = match variant {
                        // Odd blocks take the scales of the block before them.
                        Variant::Q8ScaleOfPreviousBlock if (i / Q8_0_BLOCK) % 2 == 1 => (i - Q8_0_BLOCK, j),
                        Variant::Q8ScaleOfNextColumn => (i, j / PANEL * PANEL + (j % PANEL + 1) % PANEL),
                        _ => (i, j),
                    };
                    // A padding column of the last panel has scale 0.
                    let scale = if j < weight.n() { weight.q8_parts(i, j).0 } else { 0.0 };
                    scale * f32::from(q)
                })?)
            }
            Variant::Bf16Truncated => {
                let original = weights.reopened_as(WeightFormat::F32)?;
                let (k, n) = (weight.k(), weight.n());
                let shape = match orientation {
                    Orientation::AsIs => [k, n],
                    Orientation::Transposed => [n, k],
                };
                let values = original.get(name, &shape)?;
                let values = values.view2();
                Some(misread(&weight, |i, j| {
                    let v = match orientation {
                        Orientation::AsIs => values[[i, j]],
                        Orientation::Transposed => values[[j, i]],
                    };
                    f32::from_bits(v.to_bits() & 0xffff_0000)
                })?)
            }
            _ => None,
        };
        Ok(Linear { weight, bias, misread })
    }

    /// x [T, in] -> x·W (+ b) [T, out], through the engine's kernels.
    pub fn forward(&self, x: ArrayView2<'_, f32>, with_bias: bool) -> Array2<f32> {
        Linear::product(x, &self.weight, with_bias.then_some(&self.bias))
    }

    fn product(x: ArrayView2<'_, f32>, weight: &PackedMatrix, bias: Option<&Array1<f32>>) -> Array2<f32> {
        let mut out = Array2::zeros((x.nrows(), weight.n()));
        let bias = bias.map(|b| b.as_slice().expect("contiguous"));
        matmul(x.as_standard_layout().view(), weight, bias, out.view_mut());
        out
    }

    /// x [T, in] -> x·W' + b with W' the variant's misreading of W, through the engine's kernels.
    pub fn forward_misread(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        Linear::product(x, self.misread.as_ref().expect("a misreading variant"), Some(&self.bias))
    }

    /// x [T, in] -> x·W + b with each Q8_0 block's 32 terms x·q summed in float32 and then
    /// multiplied by the block's scale, the blocks' sums added in order.
    pub fn forward_scaled_per_block(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let (k, n) = (self.weight.k(), self.weight.n());
        let parts = Array2::from_shape_fn((k, n), |(i, j)| self.weight.q8_parts(i, j));
        Array2::from_shape_fn((x.nrows(), n), |(t, j)| {
            let block_sum = |b: usize| {
                let terms =
                    (b * Q8_0_BLOCK..(b + 1) * Q8_0_BLOCK).map(|i| x[[t, i]] * f32::from(parts[[i, j]].1));
                terms.fold(0.0f32, |acc, term| acc + term) * parts[[b * Q8_0_BLOCK, j]].0
            };
            (0..k / Q8_0_BLOCK).map(block_sum).fold(0.0f32, |acc, s| acc + s) + self.bias[j]
        })
    }

    /// x [T, C] -> x·Wᵀ + b: a square W read as nn.Linear's [out, in].
    pub fn forward_transposed(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        x.dot(&self.weight.to_dense().t()) + &self.bias
    }

    /// x [T, in] -> x·W + b, each output summed over k from last to first in one float32
    /// accumulator: another summation order than the kernels'.
    pub fn forward_reverse_order(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        reverse_order_product(x, self.weight.to_dense().t()) + &self.bias
    }

    /// The product as `variant` computes every product with a weight matrix.
    pub fn forward_as(&self, x: ArrayView2<'_, f32>, variant: Variant) -> Array2<f32> {
        match variant {
            Variant::ReverseOrderMatmul => self.forward_reverse_order(x),
            Variant::Q8ScaleAfterBlockSum => self.forward_scaled_per_block(x),
            _ if self.misread.is_some() => self.forward_misread(x),
            _ => self.forward(x, true),
        }
    }
}

/// W' [K, N] with W'[i, j] = `value(i, j)`, laid out in F32.
fn misread(w: &PackedMatrix, value: impl Fn(usize, usize) -> f32) -> Result<PackedMatrix> {
    PackedMatrix::from_fn(w.k(), w.n(), WeightFormat::F32, value, |_| {})
        .map_err(|e| anyhow::anyhow!("a planted misreading cannot be packed: {e:?}"))
}

/// x [T, K] · w_t [N, K]ᵀ, each output summed over k from last to first in float32.
pub fn reverse_order_product(x: ArrayView2<'_, f32>, w_t: ArrayView2<'_, f32>) -> Array2<f32> {
    let w_t = w_t.as_standard_layout(); // [N, K]: each output one dot product
    Array2::from_shape_fn((x.nrows(), w_t.nrows()), |(i, j)| {
        let (x_row, column) = (x.row(i), w_t.row(j));
        (0..x_row.len()).rev().fold(0.0f32, |acc, k| acc + x_row[k] * column[k])
    })
}

/// A LayerNorm's weight and bias [C].
pub struct Norm {
    pub weight: Array1<f32>,
    pub bias: Array1<f32>,
}

impl Norm {
    fn load(weights: &Weights, prefix: &str, c: usize) -> Result<Norm> {
        Ok(Norm {
            weight: weights.get(&format!("{prefix}.weight"), &[c])?.view1().to_owned(),
            bias: weights.get(&format!("{prefix}.bias"), &[c])?.view1().to_owned(),
        })
    }
}

pub struct LayerParams {
    pub ln_1: Norm,
    pub c_attn: Linear,
    pub attn_c_proj: Linear,
    pub ln_2: Norm,
    pub c_fc: Linear,
    pub mlp_c_proj: Linear,
}

/// Every weight of the model, as the variants read them.
pub struct Params {
    /// As the engine computes with it: rounded to the engine's format.
    pub wte: Array2<f32>, // [V, C]
    /// The tied lm_head: W = wteᵀ [C, V] packed as the engine has it, no bias.
    pub lm_head: Linear,
    pub wpe: Array2<f32>, // [n_positions, C]
    pub h: Vec<LayerParams>,
    pub ln_f: Norm,
}

impl Params {
    pub fn load(weights: &Weights, config: &Config, variant: Variant) -> Result<Params> {
        let (c, inner) = (config.n_embd, config.n_inner);
        let layer = |l: usize| -> Result<LayerParams> {
            let p = format!("h.{l}");
            Ok(LayerParams {
                ln_1: Norm::load(weights, &format!("{p}.ln_1"), c)?,
                c_attn: Linear::load(weights, &format!("{p}.attn.c_attn"), c, 3 * c, variant)?,
                attn_c_proj: Linear::load(weights, &format!("{p}.attn.c_proj"), c, c, variant)?,
                ln_2: Norm::load(weights, &format!("{p}.ln_2"), c)?,
                c_fc: Linear::load(weights, &format!("{p}.mlp.c_fc"), c, inner, variant)?,
                mlp_c_proj: Linear::load(weights, &format!("{p}.mlp.c_proj"), inner, c, variant)?,
            })
        };
        let v = config.vocab_size;
        let wte = Array2::from_shape_vec((v, c), weights.as_computed("wte.weight", &[v, c])?)?;
        let lm_head = Linear::new(
            weights,
            "wte.weight",
            weights.get_packed("wte.weight", [v, c], Orientation::Transposed)?,
            Array1::zeros(v),
            Orientation::Transposed,
            variant,
        )?;
        Ok(Params {
            wte,
            lm_head,
            wpe: weights.get("wpe.weight", &[config.n_positions, c])?.view2().to_owned(),
            h: (0..config.n_layer).map(layer).collect::<Result<_>>()?,
            ln_f: Norm::load(weights, "ln_f", c)?,
        })
    }
}

/// How a LayerNorm variant computes its statistics.
#[derive(Clone, Copy)]
pub enum Statistics {
    /// The squared deviations divided by C − 1 (torch.var's default), in float64.
    Unbiased,
    /// Mean and variance accumulated in float32, two passes, as PyTorch's CPU kernel does.
    Float32,
    /// As the engine's (float64), with 1/σ then made four float32 ulps higher.
    InvStdHigh,
}

/// (x − mean) / sqrt(var + eps) · weight + bias, row by row; x [T, C].
pub fn layer_norm(x: ArrayView2<'_, f32>, norm: &Norm, eps: f64, statistics: Statistics) -> Array2<f32> {
    let mut y = Array2::zeros(x.raw_dim());
    Zip::from(y.rows_mut()).and(x.rows()).for_each(|mut y, x| {
        let (w, b) = (&norm.weight, &norm.bias);
        match statistics {
            Statistics::Unbiased | Statistics::InvStdHigh => {
                let n = x.len() as f64;
                let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
                let divisor = if let Statistics::Unbiased = statistics { n - 1.0 } else { n };
                let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / divisor;
                let mut inv_std = 1.0 / (var + eps).sqrt();
                if let Statistics::InvStdHigh = statistics {
                    inv_std *= 1.0 + FOUR_ULPS;
                }
                Zip::from(&mut y).and(&x).and(w).and(b).for_each(|y, &x, &w, &b| {
                    *y = ((x as f64 - mean) * inv_std) as f32 * w + b;
                });
            }
            Statistics::Float32 => {
                let n = x.len() as f32;
                let mean = x.sum() / n;
                let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
                let inv_std = 1.0 / (var + eps as f32).sqrt();
                Zip::from(&mut y).and(&x).and(w).and(b).for_each(|y, &x, &w, &b| {
                    *y = (x - mean) * inv_std * w + b;
                });
            }
        }
    });
    y
}

/// Four float32 ulps of a value, relative: 4·2⁻²³.
pub const FOUR_ULPS: f64 = 4.0 / (1u32 << 23) as f64;

/// GELU variants.
#[derive(Clone, Copy)]
pub enum Gelu {
    /// The engine's own (`engine::gelu_new`).
    Tanh,
    /// The tanh form evaluated in float32.
    TanhFloat32,
    /// The tanh form, as the engine evaluates it, with other constants: the cubic coefficient
    /// (GPT-2: 0.044715) and √(2/π).
    Constants { cubic: f64, sqrt_2_over_pi: f64 },
    /// 0.5·x·(1 + erf(x/√2)), the exact GELU; GPT-2 uses the tanh form.
    Erf,
}

pub fn gelu(x: f32, form: Gelu) -> f32 {
    match form {
        Gelu::Tanh => crate::engine::gelu_new(x),
        Gelu::TanhFloat32 => {
            let inner = (2.0f32 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + inner.tanh())
        }
        Gelu::Constants { cubic, sqrt_2_over_pi } => {
            let x = x as f64;
            let inner = sqrt_2_over_pi * (x + cubic * x * x * x);
            (x / (1.0 + (-2.0 * inner).exp())) as f32
        }
        Gelu::Erf => {
            let x = x as f64;
            (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
        }
    }
}

/// The softmax of every row of scores [nh, T, S] with its sum accumulated in float32 in order,
/// each exp in float64 and rounded, the division a multiplication by the rounded 1/sum.
pub fn softmax_f32_sum(scores: ArrayView3<'_, f32>) -> Array3<f32> {
    let mut probs = scores.to_owned();
    for mut row in probs.rows_mut() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|x| if x == f32::NEG_INFINITY { 0.0 } else { ((x - max) as f64).exp() as f32 });
        let sum = row.iter().fold(0.0f32, |acc, &e| acc + e);
        let inv = (1.0 / sum as f64) as f32;
        row.mapv_inplace(|e| e * inv);
    }
    probs
}

/// Scores [nh, T, S]: scale · Σ_d q[h, i, d]·k[h, s, d] for the keys s < visible(i), −∞ for the
/// others; q [nh, T, hd], keys [nh, S, hd]. Summed over d in order from zero, then scaled, as the
/// engine's attention does.
pub fn scores(
    q: ArrayView3<'_, f32>,
    keys: ArrayView3<'_, f32>,
    scale: f32,
    visible: impl Fn(usize) -> usize,
) -> Array3<f32> {
    let (nh, t, _) = q.dim();
    let s_len = keys.len_of(Axis(1));
    Array3::from_shape_fn((nh, t, s_len), |(h, i, s)| {
        if s >= visible(i).min(s_len) {
            return f32::NEG_INFINITY;
        }
        let dot = q
            .slice(ndarray::s![h, i, ..])
            .iter()
            .zip(keys.slice(ndarray::s![h, s, ..]))
            .fold(0.0f32, |sum, (&q, &k)| sum + q * k);
        dot * scale
    })
}

/// Weighted values [nh, T, hd]: Σ_s p[h, i, s]·v[h, s, :] over s in order, up to the row's last
/// nonzero probability, as the engine's attention sums them; probs [nh, T, S], values [nh, S, hd].
pub fn weighted_values(probs: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Array3<f32> {
    let (nh, t, _) = probs.dim();
    let hd = values.len_of(Axis(2));
    let mut out = Array3::zeros((nh, t, hd));
    for h in 0..nh {
        for i in 0..t {
            let p = probs.slice(ndarray::s![h, i, ..]);
            let seen = p.iter().rposition(|&p| p != 0.0).map_or(0, |last| last + 1);
            for d in 0..hd {
                out[[h, i, d]] = (0..seen).fold(0.0f32, |sum, s| sum + p[s] * values[[h, s, d]]);
            }
        }
    }
    out
}

/// The heads [nh, T, hd] side by side, [T, C]: merged[:, h·hd + d], or, with `wrong_order`,
/// as [T, hd, nh]: merged[:, d·nh + h].
pub fn merge_heads(context: ArrayView3<'_, f32>, wrong_order: bool) -> Array2<f32> {
    let (nh, t, hd) = context.dim();
    Array2::from_shape_fn((t, nh * hd), |(i, j)| {
        let (h, d) = if wrong_order { (j % nh, j / nh) } else { (j / hd, j % hd) };
        context[[h, i, d]]
    })
}

/// Head `h`'s slice of a [T, 3C] c_attn output's third `third` (0 q, 1 k, 2 v), as [nh, T, hd].
pub fn split_heads(qkv: ArrayView2<'_, f32>, third: usize, nh: usize) -> Array3<f32> {
    let (t, three_c) = qkv.dim();
    let hd = three_c / 3 / nh;
    Array3::from_shape_fn((nh, t, hd), |(h, i, d)| qkv[[i, third * nh * hd + h * hd + d]])
}

/// wte[id] + wpe[position] for each token; [T, C].
pub fn embeddings(params: &Params, tokens: &[u32], positions: impl Iterator<Item = usize>) -> Array2<f32> {
    let c = params.wte.ncols();
    let mut x = Array2::zeros((tokens.len(), c));
    for ((mut row, &id), position) in x.rows_mut().into_iter().zip(tokens).zip(positions) {
        let (wte, wpe): (ArrayView1<'_, f32>, ArrayView1<'_, f32>) =
            (params.wte.row(id as usize), params.wpe.row(position));
        Zip::from(&mut row).and(&wte).and(&wpe).for_each(|x, &e, &p| *x = e + p);
    }
    x
}
