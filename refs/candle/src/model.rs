//! GPT-2 written here on candle-core's tensor operations: the model code is ours (it follows
//! HF's GPT-2: Conv1D weights as [in, out], tanh GELU, the lm_head tied to wte), the kernels are
//! candle's (matmul, exp, sum, gelu, index_select, ...). It shares no code with llorch's engine.
//!
//! LayerNorm and softmax are composed from tensor ops: `candle_nn::LayerNorm` runs in float32
//! only and takes the variance as E[x²]−E[x]², which loses digits a float64 truth needs.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{D, DType, Device, IndexOp, Tensor};

/// The model's sizes, from config.json.
#[derive(serde::Deserialize, Clone)]
pub struct Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    pub n_inner: Option<usize>,
    pub eos_token_id: Option<u32>,
}

fn default_eps() -> f64 {
    1e-5
}

/// The checkpoint's tensors by their HF names (without the `transformer.` prefix), in the
/// compute dtype.
pub struct Gpt2 {
    pub cfg: Config,
    w: HashMap<String, Tensor>,
}

/// Sees every checkpoint tensor of a pass: (checkpoint, layer, name, tensor).
pub type Tap<'a> = dyn FnMut(u8, Option<usize>, &str, &Tensor) -> Result<()> + 'a;

/// Per layer, the keys and values seen so far: [H, n, D] each.
pub type Cache = Vec<Option<(Tensor, Tensor)>>;

impl Gpt2 {
    pub fn load(dir: &Path, dtype: DType) -> Result<Gpt2> {
        let text = std::fs::read_to_string(dir.join("config.json")).context("reading config.json")?;
        let cfg: Config = serde_json::from_str(&text).context("parsing config.json")?;
        let raw = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
            .context("reading model.safetensors")?;
        let mut w = HashMap::new();
        for (name, t) in raw {
            let name = name.strip_prefix("transformer.").unwrap_or(&name).to_string();
            w.insert(name, t.to_dtype(DType::F32)?.to_dtype(dtype)?);
        }
        Ok(Gpt2 { cfg, w })
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        self.w.get(name).with_context(|| format!("model.safetensors has no {name}"))
    }

    pub fn new_cache(&self) -> Cache {
        vec![None; self.cfg.n_layer]
    }

    /// The model on `ids` at positions `position..`, extending `cache`; returns the logits
    /// [T, V].
    pub fn forward(
        &self,
        ids: &[u32],
        position: usize,
        cache: &mut Cache,
        tap: &mut Tap<'_>,
    ) -> Result<Tensor> {
        let (t, n_head, c) = (ids.len(), self.cfg.n_head, self.cfg.n_embd);
        let d = c / n_head;
        let dev = Device::Cpu;
        let tokens = Tensor::new(ids, &dev)?;
        let positions = Tensor::arange(position as u32, (position + t) as u32, &dev)?;
        // [T, C]
        let mut x = (self.p("wte.weight")?.index_select(&tokens, 0)?
            + self.p("wpe.weight")?.index_select(&positions, 0)?)?;
        tap(0, None, "embeddings", &x)?;
        for (layer, layer_cache) in cache.iter_mut().enumerate() {
            let at = |name: &str| self.p(&format!("h.{layer}.{name}"));
            let h = self.layer_norm(&x, at("ln_1.weight")?, at("ln_1.bias")?)?; // [T, C]
            tap(1, Some(layer), "ln_1", &h)?;
            let qkv = conv1d(&h, at("attn.c_attn.weight")?, at("attn.c_attn.bias")?)?; // [T, 3C]
            let split = |i: usize| -> Result<Tensor> {
                Ok(qkv.narrow(1, i * c, c)?.reshape((t, n_head, d))?.transpose(0, 1)?.contiguous()?)
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?); // [H, T, D]
            tap(2, Some(layer), "q", &q)?;
            tap(2, Some(layer), "k", &k)?;
            tap(2, Some(layer), "v", &v)?;
            let (keys, values) = match layer_cache.take() {
                None => (k, v),
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
            }; // [H, n, D], n = position + T
            tap(3, Some(layer), "k_cache", &keys)?;
            tap(3, Some(layer), "v_cache", &values)?;
            let n = keys.dim(1)?;
            let scale = 1.0 / (d as f64).sqrt();
            let raw = (q.matmul(&keys.transpose(1, 2)?.contiguous()?)? * scale)?; // [H, T, n]
            let scores = causal_mask(&raw, position)?;
            tap(4, Some(layer), "scores", &scores)?;
            let probs = softmax_last(&scores)?; // [H, T, n]
            tap(4, Some(layer), "attn_probs", &probs)?;
            let merged = probs.matmul(&values)?.transpose(0, 1)?.contiguous()?.reshape((t, c))?; // [T, C]
            let attn_out = conv1d(&merged, at("attn.c_proj.weight")?, at("attn.c_proj.bias")?)?;
            tap(5, Some(layer), "attn_out", &attn_out)?;
            debug_assert_eq!(n, position + t);
            *layer_cache = Some((keys, values));
            x = (x + attn_out)?;
            let h = self.layer_norm(&x, at("ln_2.weight")?, at("ln_2.bias")?)?;
            tap(6, Some(layer), "ln_2", &h)?;
            let g = conv1d(&h, at("mlp.c_fc.weight")?, at("mlp.c_fc.bias")?)?.gelu()?; // [T, 4C], tanh GELU
            tap(6, Some(layer), "gelu", &g)?;
            let mlp_out = conv1d(&g, at("mlp.c_proj.weight")?, at("mlp.c_proj.bias")?)?;
            tap(6, Some(layer), "mlp_out", &mlp_out)?;
            x = (x + mlp_out)?;
            tap(7, Some(layer), "block_out", &x)?;
        }
        let h = self.layer_norm(&x, self.p("ln_f.weight")?, self.p("ln_f.bias")?)?;
        tap(8, None, "ln_f", &h)?;
        let logits = h.matmul(&self.p("wte.weight")?.t()?.contiguous()?)?; // [T, V]
        tap(8, None, "logits", &logits)?;
        Ok(logits)
    }

    /// (x − mean) / √(var + ε) · g + b over the last axis, the variance as the mean of the
    /// squared deviations (two passes).
    fn layer_norm(&self, x: &Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.cfg.layer_norm_epsilon)?.sqrt()?)?;
        Ok(normed.broadcast_mul(g)?.broadcast_add(b)?)
    }
}

/// HF's Conv1D: x [T, in] · w [in, out] + b.
fn conv1d(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(w)?.broadcast_add(b)?)
}

/// Scores [H, T, n] with −∞ where query i (at position + i) would see a later key.
fn causal_mask(scores: &Tensor, position: usize) -> Result<Tensor> {
    let (_, t, n) = scores.dims3()?;
    let future: Vec<u8> = (0..t).flat_map(|i| (0..n).map(move |j| u8::from(j > position + i))).collect();
    let future = Tensor::from_vec(future, (1, t, n), scores.device())?.broadcast_as(scores.shape())?;
    let minus_inf =
        Tensor::full(f32::NEG_INFINITY, scores.shape(), scores.device())?.to_dtype(scores.dtype())?;
    Ok(future.where_cond(&minus_inf, scores)?)
}

/// exp(x − max) / Σ exp(x − max) over the last axis.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// The last row of [T, V] logits.
pub fn last_row(logits: &Tensor) -> Result<Tensor> {
    let t = logits.dim(0)?;
    Ok(logits.i(t - 1)?)
}

/// The first index of the largest logit (candle's argmax over a row).
pub fn argmax(row: &Tensor) -> Result<u32> {
    Ok(row.argmax(0)?.to_scalar::<u32>()?)
}
