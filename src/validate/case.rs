//! One case of a validation run: our forward pass over the prompt with a checking tape, then
//! the checkpoints that need the whole pass (the cache and its decode step, the selected
//! logits, the next token, the probabilities, the generated text).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, ensure};
use ndarray::{Array1, Array3, ArrayView1, ArrayViewD, Axis, s};

use super::checks::CaseContext;
use super::tape::{CheckingTape, Kept};
use super::{SiteKey, Validator};
use crate::checkpoint::Checkpoint;
use crate::generate::Generation;
use crate::model::KvCache;
use crate::result::Row;
use crate::sampling::{self, Sampling};
use crate::tape::NoTape;

/// Our cache after one decode step: the keys and the values of the checked layers, in the
/// order of the layers checked, [H, T+1, D] each.
struct Decoded {
    keys: Vec<Array3<f32>>,
    values: Vec<Array3<f32>>,
}

pub struct CaseRun<'a> {
    pub validator: &'a Validator,
    pub ctx: CaseContext<'a>,
    pub sites: BTreeSet<SiteKey>,
    pub stop_at_first_failure: bool,
    pub rows: Vec<Row>,
}

impl CaseRun<'_> {
    /// The layers among the sites of a per-layer checkpoint.
    fn layers_of(&self, checkpoint: Checkpoint) -> Vec<usize> {
        self.sites.iter().filter(|(c, _)| *c == checkpoint).filter_map(|&(_, l)| l).collect()
    }

    fn wants(&self, checkpoint: Checkpoint) -> bool {
        self.sites.iter().any(|(c, _)| *c == checkpoint)
    }

    /// True once a row failed and the run is to stop there.
    fn stopped(&self) -> bool {
        self.stop_at_first_failure && self.rows.iter().any(|r| !r.passed)
    }

    /// The prompt's tokens (every dump has the same; checked at open).
    fn tokens(&self) -> &[u32] {
        &self.ctx.cases[0].token_ids
    }

    pub fn run(&mut self) -> Result<()> {
        let model = &self.validator.model;
        let t = self.tokens().len();
        // The decode step of checkpoint 3 needs one more cache row than the prompt.
        let mut cache = KvCache::new(&model.config, t + 1)?;
        let (logits, kept) = self.prefill(&mut cache)?;
        if self.wants(Checkpoint::KvCache) && !self.stopped() {
            self.kv_cache(&cache, &kept)?;
        }
        let Some(logits) = logits else { return Ok(()) };
        let logits = logits.as_slice().expect("contiguous");
        if self.wants(Checkpoint::SelectedLogits) && !self.stopped() {
            let cp = Checkpoint::SelectedLogits;
            let full = kept.get(&(Checkpoint::Logits, None, "logits")).context("full logits kept")?;
            let last_row = full.index_axis(Axis(0), t - 1);
            let what = cp.spec().invariants[0];
            self.rows.push(self.ctx.bitwise_row(
                cp,
                None,
                what,
                ArrayView1::from(logits).into_dyn(),
                last_row,
            )?);
        }
        if self.wants(Checkpoint::Argmax) && !self.stopped() {
            self.argmax(logits);
        }
        if self.wants(Checkpoint::Probabilities) && !self.stopped() {
            self.probabilities(logits)?;
        }
        if self.wants(Checkpoint::Generation) && !self.stopped() {
            self.generation()?;
        }
        Ok(())
    }

    /// The forward pass over the prompt: the tape checks the float checkpoints among the sites
    /// as they are recorded and keeps what the invariants of checkpoints 3 and 9 need.
    fn prefill(&mut self, cache: &mut KvCache) -> Result<(Option<Array1<f32>>, Kept)> {
        let mut compare = BTreeSet::new();
        let mut keep = BTreeSet::new();
        for &(cp, layer) in &self.sites {
            match cp {
                Checkpoint::KvCache => {
                    keep.insert((Checkpoint::Qkv, layer));
                }
                Checkpoint::SelectedLogits => {
                    compare.insert((cp, None));
                    keep.insert((Checkpoint::Logits, None));
                }
                Checkpoint::Argmax | Checkpoint::Probabilities | Checkpoint::Generation => {}
                _ => {
                    compare.insert((cp, layer));
                }
            }
        }
        let full_pass = self.sites.iter().any(|(c, _)| {
            matches!(
                c,
                Checkpoint::KvCache | Checkpoint::Argmax | Checkpoint::Probabilities | Checkpoint::Generation
            )
        });
        let ctx = &self.ctx;
        let n_refs = ctx.sources.refs.len();
        let mut check = |site: crate::tape::Site, ours: ArrayViewD<'_, f32>| {
            ctx.float_rows(site.checkpoint, site.layer, site.name, &vec![ours; n_refs])
        };
        let progress = &self.validator.progress;
        progress.set_message(format!("case {}: forward pass", ctx.name));
        let mut tape =
            CheckingTape::new(compare, keep, full_pass, self.stop_at_first_failure, &mut check, progress);
        let tokens = &ctx.cases[0].token_ids;
        let logits = self.validator.model.forward_recorded(tokens, cache, &mut tape)?;
        let CheckingTape { rows, kept, .. } = tape;
        self.rows.extend(rows);
        Ok((logits, kept))
    }

    /// Checkpoint 3: the cache after the prompt, then after one decode step fed each
    /// reference's argmax (one step per distinct token; normally all references agree).
    fn kv_cache(&mut self, cache: &KvCache, kept: &Kept) -> Result<()> {
        let cp = Checkpoint::KvCache;
        let invariants = cp.spec().invariants;
        let n_refs = self.ctx.sources.refs.len();
        let layers = self.layers_of(cp);
        for &l in &layers {
            let (k, v) = (cache.keys(l).into_dyn(), cache.values(l).into_dyn());
            let rows = self.ctx.float_rows(cp, Some(l), "k_cache", &vec![k.view(); n_refs])?;
            self.rows.extend(rows);
            let rows = self.ctx.float_rows(cp, Some(l), "v_cache", &vec![v.view(); n_refs])?;
            self.rows.extend(rows);
            for (name, cached, what) in [("k", &k, invariants[0]), ("v", &v, invariants[1])] {
                let from_qkv = kept.get(&(Checkpoint::Qkv, Some(l), name)).context("checkpoint 2 kept")?;
                self.rows.push(self.ctx.bitwise_row(cp, Some(l), what, cached.view(), from_qkv.view())?);
            }
        }
        // Our cache after a decode step with each distinct next token of the references.
        let mut decoded: BTreeMap<u32, Decoded> = BTreeMap::new();
        for case in &self.ctx.cases {
            if decoded.contains_key(&case.next_token) {
                continue;
            }
            self.validator.progress.set_message(format!("case {}: decode step", self.ctx.name));
            let mut after = cache.clone();
            self.validator.model.forward_recorded(&[case.next_token], &mut after, &mut NoTape)?;
            let keys = layers.iter().map(|&l| after.keys(l).to_owned()).collect();
            let values = layers.iter().map(|&l| after.values(l).to_owned()).collect();
            decoded.insert(case.next_token, Decoded { keys, values });
        }
        let t = cache.len();
        for (i, &l) in layers.iter().enumerate() {
            // What ours computed for each reference, fed that reference's token.
            let ks: Vec<ArrayViewD<'_, f32>> =
                self.ctx.cases.iter().map(|c| decoded[&c.next_token].keys[i].view().into_dyn()).collect();
            let vs: Vec<ArrayViewD<'_, f32>> =
                self.ctx.cases.iter().map(|c| decoded[&c.next_token].values[i].view().into_dyn()).collect();
            let rows = self.ctx.float_rows(cp, Some(l), "k_cache_decode", &ks)?;
            self.rows.extend(rows);
            let rows = self.ctx.float_rows(cp, Some(l), "v_cache_decode", &vs)?;
            self.rows.extend(rows);
            // The decode step writes row T only: rows 0..T are the prefill's, bit for bit.
            let (k_before, v_before) = (cache.keys(l).into_dyn(), cache.values(l).into_dyn());
            let unchanged = [(&ks[0], k_before, invariants[2]), (&vs[0], v_before, invariants[3])];
            for (after, before, what) in unchanged {
                let kept_rows = after.slice(s![.., ..t, ..]).into_dyn();
                self.rows.push(self.ctx.bitwise_row(cp, Some(l), what, kept_rows, before)?);
            }
        }
        Ok(())
    }

    /// Checkpoint 10: our next token must be every reference's.
    fn argmax(&mut self, logits: &[f32]) {
        let ours = sampling::argmax(logits);
        let theirs: Vec<u32> = self.ctx.cases.iter().map(|c| c.next_token).collect();
        let describe = |a_name: &str, a: &u32, b_name: &str, b: &u32| {
            if a == b {
                format!("{a_name} {a} = {b_name} {b}")
            } else if a_name == crate::result::OURS {
                let (a, b) = (*a as usize, *b as usize);
                format!(
                    "ours {a} (logit {:.6}), {b_name} {b} (our logit for it {:.6}), gap {:.3e}",
                    logits[a],
                    logits[b],
                    logits[a] - logits[b]
                )
            } else {
                format!("{a_name} {a}, {b_name} {b}")
            }
        };
        let rows = self.ctx.equal_rows(Checkpoint::Argmax, "next_token", &[], &ours, &theirs, describe);
        self.rows.extend(rows);
    }

    /// Checkpoint 11: softmax(warp(logits)) with the case's sampling settings.
    fn probabilities(&mut self, logits: &[f32]) -> Result<()> {
        let case = self.ctx.cases[0];
        let s = &case.sampling;
        let sampling = Sampling::new(s.temperature as f32, s.top_k, s.top_p.map(|p| p as f32))
            .with_context(|| format!("case {:?} has invalid sampling settings", case.name))?;
        ensure!(!sampling.is_greedy(), "case {:?}: checkpoint 11 needs a temperature above 0", case.name);
        let probs = sampling::probabilities(logits, &sampling);
        let view = ArrayView1::from(&probs).into_dyn();
        let rows = self.ctx.float_rows(
            Checkpoint::Probabilities,
            None,
            "probs",
            &vec![view; self.ctx.cases.len()],
        )?;
        self.rows.extend(rows);
        Ok(())
    }

    /// Checkpoint 12: greedy generation through the KV cache, token for token against every
    /// reference, then the decoded text.
    fn generation(&mut self) -> Result<()> {
        let cp = Checkpoint::Generation;
        let theirs: Vec<Vec<u32>> = self.ctx.cases.iter().map(|c| c.generated_ids.clone()).collect();
        // As many tokens as the longest reference has (HF may stop early at end-of-text).
        let n = theirs.iter().map(Vec::len).max().unwrap_or(0);
        ensure!(n > 0, "case {:?} has no generated tokens to compare", self.ctx.name);
        let mut generation = Generation::start(&self.validator.model, self.tokens(), n)?;
        let mut ours = Vec::with_capacity(n);
        // Each new token's logits, to word a divergence: our logit gap between the two tokens.
        let mut logits_at = Vec::with_capacity(n);
        let eos = self.validator.model.config.eos_token_id;
        for i in 0..n {
            self.validator.progress.set_message(format!(
                "case {}: generating token {}/{n}",
                self.ctx.name,
                i + 1
            ));
            let logits = generation.logits().to_vec();
            let token = sampling::argmax(&logits);
            ours.push(token);
            logits_at.push(logits);
            if i + 1 == n || Some(token) == eos {
                break;
            }
            generation.push(token)?;
        }
        let describe = |a_name: &str, a: &Vec<u32>, b_name: &str, b: &Vec<u32>| match a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
        {
            None if a == b => format!("{} tokens, {a_name} = {b_name}: {a:?}", a.len()),
            None => format!("{a_name} {a:?} and {b_name} {b:?} differ in length"),
            Some(i) if a_name == crate::result::OURS => {
                let gap = logits_at[i][a[i] as usize] - logits_at[i][b[i] as usize];
                format!(
                    "first difference at new token {i}: ours {}, {b_name} {}, our logit gap {gap:.3e}; \
                     ours {a:?}, {b_name} {b:?}",
                    a[i], b[i]
                )
            }
            Some(i) => format!("first difference at new token {i}: {a_name} {a:?}, {b_name} {b:?}"),
        };
        let rows = self.ctx.equal_rows(cp, "generated_ids", &[n], &ours, &theirs, describe);
        self.rows.extend(rows);
        let texts: Option<Vec<String>> = self.ctx.cases.iter().map(|c| c.generated_text.clone()).collect();
        if let (Some(tokenizer), Some(texts)) = (&self.validator.tokenizer, texts) {
            let all: Vec<u32> = self.tokens().iter().chain(&ours).copied().collect();
            let decoded = tokenizer.decode(&all)?;
            let describe = |a_name: &str, a: &String, b_name: &str, b: &String| {
                if a == b { format!("{a:?}") } else { format!("{a_name} {a:?}, {b_name} {b:?}") }
            };
            let rows = self.ctx.equal_rows(cp, "generated_text", &[], &decoded, &texts, describe);
            self.rows.extend(rows);
        }
        Ok(())
    }
}
