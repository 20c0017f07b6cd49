//! Each checkpoint's own hypotheses, computed from the stage's inputs in the reference and
//! the model's weights.

use anyhow::Result;
use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, Axis, Ix2, Ix3, IxDyn};

use super::stages::{self, QkvLayout};
use super::{Candidate, Evidence, candidate};
use crate::validation::spec::Checkpoint;

/// The checkpoint's own hypotheses, from the stage's inputs.
pub fn specific(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    use Checkpoint::*;
    match (e.checkpoint, e.name) {
        (Embeddings, _) => embeddings(e),
        (LayerNorm, _) | (Ffn, "ln_2") | (Logits, "ln_f") => layer_norms(e),
        (Qkv, _) => qkv(e),
        (KvCache, _) => cache_rows(e),
        (AttnScores, "scores") => scores(e),
        (AttnScores, _) => probs(e),
        (AttnOutput, _) => attn_out(e),
        (Ffn, "gelu") => gelu(e),
        (Ffn, _) => {
            let g = e.fetch2(Ffn, e.layer, "gelu")?;
            e.linear_family(g.view(), &e.prefix("mlp.c_proj"), e.config.n_inner, e.config.n_embd)
        }
        (BlockOutput, _) => block_out(e),
        (Logits, _) => logits(e),
        (SelectedLogits, _) => selected(e),
        (Probabilities, _) => sampling_probs(e),
        (Argmax | Generation, _) => Ok(Vec::new()),
    }
}

impl Evidence<'_> {
    fn fetch(&self, cp: Checkpoint, layer: Option<usize>, name: &str) -> Result<ArrayD<f64>> {
        (self.reference)(cp, layer, name)
    }

    fn fetch2(&self, cp: Checkpoint, layer: Option<usize>, name: &str) -> Result<Array2<f64>> {
        Ok(self.fetch(cp, layer, name)?.into_dimensionality::<Ix2>()?)
    }

    fn fetch3(&self, cp: Checkpoint, layer: Option<usize>, name: &str) -> Result<ndarray::Array3<f64>> {
        Ok(self.fetch(cp, layer, name)?.into_dimensionality::<Ix3>()?)
    }

    /// A weight as our engine computes with it (a matrix rounded to the engine's format).
    fn weight(&self, name: &str, shape: &[usize]) -> Result<ArrayD<f64>> {
        let values = self.weights.as_computed(name, shape)?;
        Ok(ArrayD::from_shape_vec(shape, values.into_iter().map(f64::from).collect())?)
    }

    fn weight1(&self, name: &str, n: usize) -> Result<ndarray::Array1<f64>> {
        Ok(self.weight(name, &[n])?.into_dimensionality()?)
    }

    fn weight2(&self, name: &str, rows: usize, cols: usize) -> Result<Array2<f64>> {
        Ok(self.weight(name, &[rows, cols])?.into_dimensionality()?)
    }

    /// "h.{layer}.{module}" for this tensor's layer.
    fn prefix(&self, module: &str) -> String {
        format!("h.{}.{module}", self.layer.unwrap_or(0))
    }

    /// The residual stream entering this tensor's block.
    fn block_input(&self) -> Result<Array2<f64>> {
        match self.layer {
            Some(0) | None => self.fetch2(Checkpoint::Embeddings, None, "embeddings"),
            Some(l) => self.fetch2(Checkpoint::BlockOutput, Some(l - 1), "block_out"),
        }
    }

    /// A linear layer's mistakes: weight read transposed, bias dropped, layer not applied.
    fn linear_family(
        &self,
        x: ArrayView2<'_, f64>,
        module: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Vec<Candidate>> {
        let w = self.weight2(&format!("{module}.weight"), n_in, n_out)?;
        let b = self.weight1(&format!("{module}.bias"), n_out)?;
        let short = module.rsplit_once('.').map_or(module, |(_, m)| m);
        let mut out = vec![
            candidate(
                format!("{short} weight read transposed (as nn.Linear's [out, in])"),
                stages::linear_read_transposed(x, w.view(), b.view()),
            ),
            candidate(format!("{short} bias dropped"), stages::linear(x, w.view(), None)),
        ];
        if n_in == n_out {
            out.push(candidate(format!("{short} not applied"), x.to_owned()));
        }
        for n in self.neighbour_layers() {
            let other = in_layer(module, n);
            let w = self.weight2(&format!("{other}.weight"), n_in, n_out)?;
            let b = self.weight1(&format!("{other}.bias"), n_out)?;
            let cause = format!("layer {n}'s {short} weights (a layer index off by one)");
            out.push(candidate(cause, stages::linear(x, w.view(), Some(b.view()))));
        }
        Ok(out)
    }

    /// The layers next to this tensor's: a layer index off by one loads their weights.
    fn neighbour_layers(&self) -> Vec<usize> {
        let Some(l) = self.layer else { return Vec::new() };
        [l.checked_sub(1), Some(l + 1)].into_iter().flatten().filter(|&n| n < self.config.n_layer).collect()
    }
}

/// `module` ("h.3.mlp.c_fc") with another layer's index ("h.4.mlp.c_fc").
fn in_layer(module: &str, layer: usize) -> String {
    match module.strip_prefix("h.").and_then(|rest| rest.split_once('.')) {
        Some((_, tail)) => format!("h.{layer}.{tail}"),
        None => module.to_string(),
    }
}

fn embeddings(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let (v, c, n_pos) = (e.config.vocab_size, e.config.n_embd, e.config.n_positions);
    let (wte, wpe) = (e.weight2("wte.weight", v, c)?, e.weight2("wpe.weight", n_pos, c)?);
    let t = e.tokens.len();
    let at = |first: usize| -> Vec<usize> { (first..first + t).collect() };
    let mut out = vec![
        candidate(
            "no position embedding (wte only)",
            stages::embeddings(Some(wte.view()), None, e.tokens, &at(0)),
        ),
        candidate(
            "no token embedding (wpe only)",
            stages::embeddings(None, Some(wpe.view()), e.tokens, &at(e.past)),
        ),
    ];
    if e.past > 0 {
        let cause = format!("position ids restart at 0, not offset by the {} cached positions", e.past);
        out.push(candidate(cause, stages::embeddings(Some(wte.view()), Some(wpe.view()), e.tokens, &at(0))));
        out.push(candidate(
            "position ids off by one (one less)",
            stages::embeddings(Some(wte.view()), Some(wpe.view()), e.tokens, &at(e.past - 1)),
        ));
    }
    if e.past + t < n_pos {
        out.push(candidate(
            "position ids off by one (one more)",
            stages::embeddings(Some(wte.view()), Some(wpe.view()), e.tokens, &at(e.past + 1)),
        ));
    }
    Ok(out)
}

fn layer_norms(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let c = e.config.n_embd;
    let (x, module, what) = match e.name {
        "ln_1" => (e.block_input()?, e.prefix("ln_1"), "ln_1"),
        "ln_2" => {
            let attn = e.fetch2(Checkpoint::AttnOutput, e.layer, "attn_out")?;
            (e.block_input()? + attn, e.prefix("ln_2"), "ln_2")
        }
        _ => {
            let last = Some(e.config.n_layer - 1);
            (e.fetch2(Checkpoint::BlockOutput, last, "block_out")?, "ln_f".to_string(), "ln_f")
        }
    };
    let (w, b) = (e.weight1(&format!("{module}.weight"), c)?, e.weight1(&format!("{module}.bias"), c)?);
    let eps = e.config.layer_norm_epsilon;
    let ln = |w: ArrayView1<'_, f64>, b: ArrayView1<'_, f64>, eps, unbiased, rms_only| {
        stages::layer_norm(x.view(), w, b, eps, unbiased, rms_only)
    };
    let mut out = vec![
        candidate(
            format!("{what}: unbiased variance (divided by C − 1)"),
            ln(w.view(), b.view(), eps, true, false),
        ),
        candidate(
            format!("{what}: the mean not subtracted (RMSNorm)"),
            ln(w.view(), b.view(), eps, false, true),
        ),
        candidate(format!("{what}: weight and bias swapped"), ln(b.view(), w.view(), eps, false, false)),
        candidate(
            format!("{what}: weight and bias not applied"),
            ln(ndarray::Array1::ones(c).view(), ndarray::Array1::zeros(c).view(), eps, false, false),
        ),
        candidate(format!("{what} skipped (its input passed on)"), x.clone()),
    ];
    if module.starts_with("h.") {
        for n in e.neighbour_layers() {
            let other = in_layer(&module, n);
            let (w, b) = (e.weight1(&format!("{other}.weight"), c)?, e.weight1(&format!("{other}.bias"), c)?);
            let cause = format!("layer {n}'s {what} weights (a layer index off by one)");
            out.push(candidate(cause, ln(w.view(), b.view(), eps, false, false)));
        }
    }
    for other in [0.0, 1e-12, 1e-8, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2] {
        if other != eps {
            let cause = format!("{what}: epsilon {other:e} instead of the config's {eps:e}");
            out.push(candidate(cause, ln(w.view(), b.view(), other, false, false)));
        }
    }
    Ok(out)
}

fn qkv(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let c = e.config.n_embd;
    let x = e.fetch2(Checkpoint::LayerNorm, e.layer, "ln_1")?;
    let module = e.prefix("attn.c_attn");
    let (w, b) =
        (e.weight2(&format!("{module}.weight"), c, 3 * c)?, e.weight1(&format!("{module}.bias"), 3 * c)?);
    let which = ["q", "k", "v"].iter().position(|n| *n == e.name).unwrap_or(0);
    let nh = e.config.n_head;
    let qkv = stages::linear(x.view(), w.view(), Some(b.view())); // [T, 3C]
    let mut out = Vec::new();
    for (other, name) in ["q", "k", "v"].iter().enumerate().filter(|(i, _)| *i != which) {
        let cause = format!("q/k/v split in another order: ours {} is c_attn's {name} third", e.name);
        out.push(candidate(cause, stages::split_heads(qkv.view(), nh, other, QkvLayout::Hf)));
    }
    out.push(candidate(
        "heads split as [T, H, 3, D] (q, k, v interleaved per head)",
        stages::split_heads(qkv.view(), nh, which, QkvLayout::PerHead),
    ));
    out.push(candidate(
        "heads split as [T, 3, D, H] (each head's channels strided)",
        stages::split_heads(qkv.view(), nh, which, QkvLayout::Strided),
    ));
    let transposed = stages::linear_read_transposed(x.view(), w.view(), b.view());
    out.push(candidate(
        "c_attn weight read transposed (as nn.Linear's [out, in])",
        stages::split_heads(transposed.view(), nh, which, QkvLayout::Hf),
    ));
    let unbiased = stages::linear(x.view(), w.view(), None);
    out.push(candidate(
        "c_attn bias dropped",
        stages::split_heads(unbiased.view(), nh, which, QkvLayout::Hf),
    ));
    Ok(out)
}

/// Our cache rows matched to the reference's: a row that holds another position's keys, or
/// nothing, is named.
fn cache_rows(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let reference = e.fetch3(Checkpoint::KvCache, e.layer, e.name)?; // [H, S, D]
    let Ok(ours) = e.ours.view().into_dimensionality::<Ix3>() else { return Ok(Vec::new()) };
    if ours.dim() != reference.dim() {
        return Ok(Vec::new());
    }
    let rows = reference.len_of(Axis(1));
    let mut placed = ndarray::Array3::<f64>::zeros(reference.dim());
    let mut moves = Vec::new();
    for j in 0..rows {
        let ours_row = ours.index_axis(Axis(1), j);
        if ours_row.iter().all(|&x| x == 0.0) {
            moves.push(format!("row {j} empty (never written)"));
            continue;
        }
        let far = |r: usize| {
            let theirs = reference.index_axis(Axis(1), r);
            ours_row.iter().zip(theirs.iter()).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()))
        };
        let best = (0..rows).min_by(|&a, &b| far(a).total_cmp(&far(b))).expect("rows > 0");
        placed.index_axis_mut(Axis(1), j).assign(&reference.index_axis(Axis(1), best));
        if best != j {
            moves.push(format!("row {j} holds position {best}"));
        }
    }
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let cause = format!("cache rows out of place: {}", moves.join(", "));
    Ok(vec![candidate(cause, placed)])
}

fn scores(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let q = e.fetch3(Checkpoint::Qkv, e.layer, "q")?; // [H, T, D]
    let k = e.fetch3(Checkpoint::KvCache, e.layer, "k_cache")?; // [H, S, D]
    let (t, d) = (q.len_of(Axis(1)), q.len_of(Axis(2)) as f64);
    let past = k.len_of(Axis(1)) - t;
    let scale = d.powf(-0.5);
    let causal = |i: usize| past + i + 1;
    let mut out = vec![
        candidate("the 1/√D scale missing", stages::scores(q.view(), k.view(), 1.0, causal)),
        candidate("scaled by 1/D instead of 1/√D", stages::scores(q.view(), k.view(), scale * scale, causal)),
        candidate(
            "mask off by one: each query also sees the next key",
            stages::scores(q.view(), k.view(), scale, |i| past + i + 2),
        ),
        candidate(
            "mask off by one: no query sees its own key",
            stages::scores(q.view(), k.view(), scale, |i| past + i),
        ),
    ];
    if past > 0 {
        let cause = format!("the mask ignores the {past} cached positions (query i sees keys 0..=i)");
        out.push(candidate(cause, stages::scores(q.view(), k.view(), scale, |i| i + 1)));
    }
    if t > 1 {
        out.push(candidate("no causal mask", stages::scores(q.view(), k.view(), scale, |_| usize::MAX)));
    }
    Ok(out)
}

fn probs(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let s = e.fetch3(Checkpoint::AttnScores, e.layer, "scores")?; // [H, T, S]
    Ok(vec![candidate("softmax over the query axis instead of the key axis", stages::softmax(s.view(), 1))])
}

fn attn_out(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let c = e.config.n_embd;
    let p = e.fetch3(Checkpoint::AttnScores, e.layer, "attn_probs")?; // [H, T, S]
    let v = e.fetch3(Checkpoint::KvCache, e.layer, "v_cache")?; // [H, S, D]
    let y = stages::weighted_values(p.view(), v.view()); // [H, T, D]
    let module = e.prefix("attn.c_proj");
    let (w, b) = (e.weight2(&format!("{module}.weight"), c, c)?, e.weight1(&format!("{module}.bias"), c)?);
    let strided = stages::merge_heads(y.view(), true);
    let mut out = vec![candidate(
        "heads merged as [T, D, H] before c_proj",
        stages::linear(strided.view(), w.view(), Some(b.view())),
    )];
    out.extend(e.linear_family(stages::merge_heads(y.view(), false).view(), &module, c, c)?);
    Ok(out)
}

fn gelu(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let (c, inner) = (e.config.n_embd, e.config.n_inner);
    let x = e.fetch2(Checkpoint::Ffn, e.layer, "ln_2")?;
    let module = e.prefix("mlp.c_fc");
    let (w, b) =
        (e.weight2(&format!("{module}.weight"), c, inner)?, e.weight1(&format!("{module}.bias"), inner)?);
    let pre = stages::linear(x.view(), w.view(), Some(b.view())); // [T, 4C]
    let gpt2 = |x: f64| stages::gelu_tanh(x, 0.044715);
    let mut out = vec![
        candidate("the erf GELU instead of the tanh approximation (gelu_new)", pre.mapv(stages::gelu_erf)),
        candidate("the sigmoid GELU approximation x·σ(1.702x)", pre.mapv(stages::gelu_sigmoid)),
        candidate("ReLU instead of GELU", pre.mapv(|x| x.max(0.0))),
        candidate("no activation", pre.clone()),
        candidate("c_fc bias dropped", stages::linear(x.view(), w.view(), None).mapv(gpt2)),
        candidate(
            "c_fc weight read transposed (as nn.Linear's [out, in])",
            stages::linear_read_transposed(x.view(), w.view(), b.view()).mapv(gpt2),
        ),
    ];
    let ours: Vec<f64> = e.ours.iter().map(|&v| v as f64).collect();
    let inputs: Vec<f64> = pre.iter().copied().collect();
    if ours.len() == inputs.len()
        && let Some(a) = stages::fit_gelu_coefficient(&inputs, &ours)
        && ((a - 0.044715) / 0.044715).abs() > 1e-4
    {
        let cause = format!("the tanh GELU with cubic coefficient {a:.5} instead of 0.044715");
        out.push(candidate(cause, pre.mapv(|x| stages::gelu_tanh(x, a))));
    }
    Ok(out)
}

fn block_out(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let x = e.block_input()?;
    let a = e.fetch2(Checkpoint::AttnOutput, e.layer, "attn_out")?;
    let m = e.fetch2(Checkpoint::Ffn, e.layer, "mlp_out")?;
    Ok(vec![
        candidate("the MLP's residual dropped (block output = MLP output)", m.clone()),
        candidate("the attention's residual dropped (block input not added)", &a + &m),
        candidate("the MLP output not added to the residual stream", &x + &a),
        candidate("the attention output not added to the residual stream", &x + &m),
    ])
}

fn logits(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let (v, c) = (e.config.vocab_size, e.config.n_embd);
    let wte = e.weight2("wte.weight", v, c)?;
    let last = e.fetch2(Checkpoint::BlockOutput, Some(e.config.n_layer - 1), "block_out")?;
    Ok(vec![candidate("ln_f skipped before the lm_head", last.dot(&wte.t()))])
}

fn selected(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let full = e.fetch2(Checkpoint::Logits, None, "logits")?; // [T, V]
    let t = full.nrows();
    let mut out = Vec::new();
    if t > 1 {
        out.push(candidate("the first position's logits instead of the last", stages::row(full.view(), 0)));
        out.push(candidate(
            "position T − 2's logits instead of the last (off by one)",
            stages::row(full.view(), t - 2),
        ));
    }
    Ok(out)
}

fn sampling_probs(e: &Evidence<'_>) -> Result<Vec<Candidate>> {
    let Some(s) = e.sampling else { return Ok(Vec::new()) };
    let logits: Vec<f64> =
        e.fetch(Checkpoint::SelectedLogits, None, "selected_logits")?.iter().copied().collect();
    let (t, k, p) = (s.temperature as f64, s.top_k, s.top_p.map(f64::from));
    let with = |cause: String, t: f64, k: Option<usize>, p: Option<f64>| {
        let probs = stages::sampling_probs(&logits, t, k, p);
        candidate(cause, ArrayD::from_shape_vec(IxDyn(&[probs.len()]), probs).expect("[V]"))
    };
    let mut out = Vec::new();
    if t != 1.0 {
        out.push(with("temperature not applied".into(), 1.0, k, p));
        out.push(with("logits multiplied by the temperature instead of divided".into(), 1.0 / t, k, p));
    }
    if let Some(k) = k {
        out.push(with(format!("top-k keeping {} tokens instead of {k}", k + 1), t, Some(k + 1), p));
        if k > 1 {
            out.push(with(format!("top-k keeping {} tokens instead of {k}", k - 1), t, Some(k - 1), p));
        }
        out.push(with("top-k not applied".into(), t, None, p));
    }
    if p.is_some() {
        out.push(with("top-p not applied".into(), t, k, None));
    }
    Ok(out)
}
