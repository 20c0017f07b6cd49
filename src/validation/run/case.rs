//! One case of a validation run: our forward pass over the prompt with a checking tape, the
//! decode steps after it (the greedy continuation's tokens through the cache) with others, then
//! the checks that need a whole pass (the cache, the selected logits, our engine against itself,
//! the next token, the probabilities, the generated text).

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use ndarray::{Array1, ArrayView1, ArrayViewD, Axis, Ix3, s};

use super::Validator;
use super::checks::{CaseContext, Checked};
use super::invariance;
use super::tape::{CheckingTape, Feed, Kept, Wanted};
use super::ties::{self, Evidence};
use crate::engine::sampling::{self, Sampling};
use crate::engine::tape::Site;
use crate::engine::{KvCache, NoTape};
use crate::validation::reference::Case;
use crate::validation::result::{Pair, Row};
use crate::validation::spec::{Checkpoint, Checks, Mode, Phase, Place};

pub struct CaseRun<'a> {
    validator: &'a Validator,
    ctx: CaseContext<'a>,
    sites: BTreeSet<Place>,
    /// The decode steps among the sites, first to last.
    decode_steps: Vec<u16>,
    stop_at_first_failure: bool,
    pub rows: Vec<Row>,
}

impl<'a> CaseRun<'a> {
    pub fn new(
        validator: &'a Validator,
        ctx: CaseContext<'a>,
        sites: BTreeSet<Place>,
        stop_at_first_failure: bool,
    ) -> CaseRun<'a> {
        let steps: BTreeSet<u16> = sites.iter().filter_map(|s| s.phase.step()).collect();
        let decode_steps = steps.into_iter().collect();
        CaseRun { validator, ctx, sites, decode_steps, stop_at_first_failure, rows: Vec::new() }
    }

    /// The layers among the sites of a per-layer checkpoint.
    fn layers_of(&self, phase: Phase, checkpoint: Checkpoint) -> Vec<usize> {
        self.sites
            .iter()
            .filter(|s| (s.phase, s.checkpoint) == (phase, checkpoint))
            .filter_map(|s| s.layer)
            .collect()
    }

    fn wants(&self, phase: Phase, checkpoint: Checkpoint) -> bool {
        self.sites.iter().any(|s| (s.phase, s.checkpoint) == (phase, checkpoint))
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
        let t = self.tokens().len();
        // Each decode step needs one more cache row than the prompt.
        let last_step = self.decode_steps.last().map_or(1, |&s| usize::from(s));
        let mut cache = KvCache::new(self.validator.engine.config(), t + last_step)?;
        // Everything after the prompt's pass needs all of it, cache included.
        let after_prefill = self.wants(Phase::Prefill, Checkpoint::KvCache)
            || !self.decode_steps.is_empty()
            || [Checkpoint::Argmax, Checkpoint::Probabilities, Checkpoint::Generation]
                .iter()
                .any(|&cp| self.wants(Phase::Prefill, cp));
        let tokens = self.tokens().to_vec();
        let (logits, kept) = self.pass(Phase::Prefill, &tokens, &mut cache, after_prefill)?;
        if self.wants(Phase::Prefill, Checkpoint::KvCache) && !self.stopped() {
            self.prefill_cache(&cache, &kept)?;
        }
        if let Some(logits) = &logits {
            self.selected_logits_invariant(Phase::Prefill, logits, &kept)?;
        }
        if !self.decode_steps.is_empty() && !self.stopped() {
            self.decode(&mut cache)?;
        }
        // Our engine against itself: once per case, whatever the mode, with the last pass checked
        // (its rows follow every step's own checks: a bug of the decode path is first named at
        // its stage there).
        let last = self.decode_steps.last().map_or(Phase::Prefill, |&s| Phase::Decode(s));
        if self.wants(last, Checkpoint::Logits) && self.ctx.ref_pairs && !self.stopped() {
            self.splits_invariance(last)?;
        }
        let Some(logits) = logits else { return Ok(()) };
        // Isolated, sampling is judged on the reference's logits.
        let logits = match self.ctx.mode {
            Mode::Chained => logits.to_vec(),
            Mode::Isolated => {
                let cp = Checkpoint::SelectedLogits;
                self.ctx.stage_input(Phase::Prefill, cp, None, "selected_logits")?.into_iter().collect()
            }
        };
        let logits = logits.as_slice();
        if self.wants(Phase::Prefill, Checkpoint::Argmax) && !self.stopped() {
            self.argmax(logits)?;
        }
        if self.wants(Phase::Prefill, Checkpoint::Probabilities) && !self.stopped() {
            self.probabilities(logits)?;
        }
        if self.wants(Phase::Prefill, Checkpoint::Generation) && !self.stopped() {
            self.generation()?;
        }
        Ok(())
    }

    /// One forward pass of `phase` over `tokens`: the tape checks the float checkpoints among
    /// that phase's sites as they are recorded and keeps what the invariants of checkpoints 3
    /// and 9 need. With `full_pass` it runs to the end even when the tape has all it wants.
    fn pass(
        &mut self,
        phase: Phase,
        tokens: &[u32],
        cache: &mut KvCache,
        full_pass: bool,
    ) -> Result<(Option<Array1<f32>>, Kept)> {
        let mut wanted = Wanted { phase, ..Wanted::default() };
        let Wanted { compare, keep, .. } = &mut wanted;
        for &Place { checkpoint: cp, layer, .. } in self.sites.iter().filter(|s| s.phase == phase) {
            match cp {
                Checkpoint::KvCache => {
                    keep.insert(Place::new(phase, Checkpoint::Qkv, layer));
                }
                Checkpoint::SelectedLogits => {
                    compare.insert(Place::new(phase, cp, None));
                    keep.insert(Place::new(phase, Checkpoint::Logits, None));
                }
                Checkpoint::Argmax | Checkpoint::Probabilities | Checkpoint::Generation => {}
                _ => {
                    compare.insert(Place::new(phase, cp, layer));
                }
            }
        }
        let full_pass = full_pass || self.wants(phase, Checkpoint::KvCache);
        let ctx = &self.ctx;
        let n_refs = ctx.sources.refs.len();
        let past = cache.seq_len();
        // Chained, only the first failure of the pass (Validator::check keeps the first in
        // forward order, the cache being checked after the pass); isolated, each failing
        // tensor until one of its name is explained (the same stage of every layer usually
        // holds the same bug). (tensor name, explained) of the diagnosed ones:
        let mut diagnosed: Vec<(&str, bool)> = Vec::new();
        let mut check = |site: Site, ours: ArrayViewD<'_, f32>| {
            let mut rows =
                ctx.float_rows(phase, site.checkpoint, site.layer, site.name, &vec![ours.view(); n_refs])?;
            let at = Checked {
                phase,
                checkpoint: site.checkpoint,
                layer: site.layer,
                name: site.name,
                tokens,
                past,
            };
            let wanted = match ctx.mode {
                Mode::Chained => diagnosed.is_empty(),
                Mode::Isolated => !diagnosed.contains(&(site.name, true)),
            };
            ctx.diagnose(&mut rows, &at, ours, wanted);
            if let Some(d) = rows.iter().find_map(|r| r.diagnosis.as_ref()) {
                diagnosed.push((site.name, !d.findings.is_empty()));
            }
            Ok(rows)
        };
        let mut feed = |site: Site| ctx.stage_input(phase, site.checkpoint, site.layer, site.name);
        let feed: Option<&mut Feed<'_>> = (ctx.mode == Mode::Isolated).then_some(&mut feed);
        let progress = &self.validator.progress;
        progress.set_message(format!("case {}: {phase}, {}", ctx.name, ctx.mode));
        let mut tape =
            CheckingTape::new(wanted, full_pass, self.stop_at_first_failure, &mut check, feed, progress);
        let logits = self.validator.engine.forward(tokens, cache, &mut tape)?;
        let CheckingTape { rows, kept, .. } = tape;
        self.rows.extend(rows);
        Ok((logits, kept))
    }

    /// Checkpoint 9's invariant: the selected logits (the generation path, last position only)
    /// are bit for bit the last row of checkpoint 8's full logits.
    fn selected_logits_invariant(&mut self, phase: Phase, logits: &Array1<f32>, kept: &Kept) -> Result<()> {
        let cp = Checkpoint::SelectedLogits;
        if !self.wants(phase, cp) || self.stopped() {
            return Ok(());
        }
        let full = kept.get(&Site::new(Checkpoint::Logits, None, "logits")).context("full logits kept")?;
        let last_row = full.index_axis(Axis(0), full.shape()[0] - 1);
        let what = cp.spec().invariants[0];
        let ours = ArrayView1::from(logits.as_slice().expect("contiguous")).into_dyn();
        self.rows.push(self.ctx.bitwise_row(phase, cp, None, what, ours, last_row)?);
        Ok(())
    }

    /// Checkpoint 3's cache of `layer` against the references, `tokens` being the pass's.
    fn cache_rows(&mut self, phase: Phase, tokens: &[u32], cache: &KvCache, layer: usize) -> Result<()> {
        let n_refs = self.ctx.sources.refs.len();
        let cp = Checkpoint::KvCache;
        for (name, tensor) in [("k_cache", cache.keys(layer)), ("v_cache", cache.values(layer))] {
            let ours = vec![tensor.into_dyn(); n_refs];
            let mut rows = self.ctx.float_rows(phase, cp, Some(layer), name, &ours)?;
            let past = cache.seq_len() - tokens.len();
            let at = Checked { phase, checkpoint: cp, layer: Some(layer), name, tokens, past };
            self.ctx.diagnose(&mut rows, &at, tensor.into_dyn(), self.diagnose_more(phase, cp, name));
            self.rows.extend(rows);
        }
        Ok(())
    }

    /// Whether a failure of `checkpoint`'s tensor `name`, checked after the pass, is worth a
    /// diagnosis: in chained mode the phase's first of the checkpoint (the rest are mostly its
    /// drift); in isolated mode each until one of that name is explained.
    fn diagnose_more(&self, phase: Phase, checkpoint: Checkpoint, name: &str) -> bool {
        let mut diagnosed =
            self.rows.iter().filter(|r| r.phase == phase).filter_map(|r| Some((r, r.diagnosis.as_ref()?)));
        match self.ctx.mode {
            Mode::Chained => !diagnosed.any(|(r, _)| r.checkpoint == checkpoint),
            Mode::Isolated => !diagnosed.any(|(r, d)| r.tensor == name && !d.findings.is_empty()),
        }
    }

    /// Checkpoint 3 after the prompt: the cache against the references, and bit for bit the K
    /// and V that checkpoint 2 recorded.
    fn prefill_cache(&mut self, cache: &KvCache, kept: &Kept) -> Result<()> {
        let (phase, cp) = (Phase::Prefill, Checkpoint::KvCache);
        let invariants = cp.spec().invariants;
        for l in self.layers_of(phase, cp) {
            let tokens = self.tokens().to_vec();
            self.cache_rows(phase, &tokens, cache, l)?;
            let (k, v) = (cache.keys(l).into_dyn(), cache.values(l).into_dyn());
            for (name, cached, what) in [("k", &k, invariants[0]), ("v", &v, invariants[1])] {
                let from_qkv =
                    kept.get(&Site::new(Checkpoint::Qkv, Some(l), name)).context("checkpoint 2 kept")?;
                self.rows.push(self.ctx.bitwise_row(
                    phase,
                    cp,
                    Some(l),
                    what,
                    cached.view(),
                    from_qkv.view(),
                )?);
            }
        }
        Ok(())
    }

    /// The decode steps: the references' greedy continuation fed one token at a time through
    /// the cache (step k feeds its token k, token 1 being the argmax after the prompt), so that
    /// every step's tensors answer the same question as theirs. The steps among the sites are
    /// checked as their passes record them; the steps between only run, on our own arithmetic
    /// (the dumps hold no tensors to feed them). In isolated mode a checked step after such a
    /// gap starts from the feeding reference's cache (its k_cache and v_cache before the step),
    /// which is that step's input too.
    fn decode(&mut self, cache: &mut KvCache) -> Result<()> {
        let steps = self.decode_steps.clone();
        let Some(&last) = steps.last() else { return Ok(()) };
        let fed = |c: &Case| -> Vec<u32> { fed_tokens(c).collect() };
        let ours = fed(self.ctx.cases[0]);
        // Every reference must have fed the same tokens up to a step, or their tensors there
        // answer different questions.
        let mut checkable = usize::from(last).min(ours.len());
        let refs = &self.ctx.sources.refs;
        for (i, case) in self.ctx.cases.iter().enumerate().skip(1) {
            let theirs = fed(case);
            let Some(k) = (0..checkable).find(|&k| theirs.get(k) != Some(&ours[k])) else { continue };
            let why = if k == 0 {
                format!(
                    "the references disagree on the token after the prompt ({} {}, {} {}): their \
                     decode steps cannot both be compared with ours; see checkpoint 10",
                    refs[0].name, ours[0], refs[i].name, theirs[0]
                )
            } else {
                format!(
                    "the references' greedy continuations differ at token {} ({} {}, {} {:?}): their \
                     decode steps from {} on cannot both be compared with ours; see checkpoint 12",
                    k + 1,
                    refs[0].name,
                    ours[k],
                    refs[i].name,
                    theirs.get(k),
                    k + 1
                )
            };
            let pair = Pair::new(&refs[0].name, &refs[i].name);
            let phase = Phase::Decode(k as u16 + 1);
            self.rows.push(self.ctx.cannot_check(phase, Checkpoint::Embeddings, "next_token", pair, why));
            checkable = k;
        }
        for step in 1..=checkable as u16 {
            let token = ours[usize::from(step) - 1];
            // A pass that stops once its checks are made leaves the cache short: every step
            // before the last runs to the end.
            let more_follow = usize::from(step) < checkable;
            if steps.contains(&step) {
                let after_gap = step > 1 && !steps.contains(&(step - 1));
                if after_gap && self.ctx.mode == Mode::Isolated {
                    self.feed_cache(Phase::Decode(step), cache)?;
                }
                self.decode_step(Phase::Decode(step), token, cache, more_follow)?;
                if self.stopped() {
                    break;
                }
            } else {
                self.validator.engine.forward(&[token], cache, &mut NoTape)?;
            }
        }
        Ok(())
    }

    /// Checkpoint 8's invariants, at the last pass checked (`phase`): the prompt and its
    /// continuation (as far as the decode steps go, at least one token) give the same logits at
    /// every position in one pass, one token at a time, and in chunks (`invariance.rs`).
    fn splits_invariance(&mut self, phase: Phase) -> Result<()> {
        let steps = self.decode_steps.last().map_or(1, |&s| usize::from(s));
        let continuation = fed_tokens(self.ctx.cases[0]).take(steps);
        let tokens: Vec<u32> = self.tokens().iter().copied().chain(continuation).collect();
        let engine = self.validator.engine.as_ref();
        let whole = invariance::logits_in_chunks(engine, &tokens, &[tokens.len()])?;
        for (what, chunks) in invariance::splits(self.tokens().len(), tokens.len()) {
            let split = invariance::logits_in_chunks(engine, &tokens, &chunks)?;
            let (a, b) = (whole.view().into_dyn(), split.view().into_dyn());
            self.rows.push(self.ctx.bitwise_row(phase, Checkpoint::Logits, None, what, a, b)?);
        }
        Ok(())
    }

    /// Isolated mode's cache before a decode step: the feeding reference's k_cache and v_cache
    /// of the step, all but the step's own row, over every layer's rows.
    fn feed_cache(&self, phase: Phase, cache: &mut KvCache) -> Result<()> {
        let past = cache.seq_len();
        for l in 0..self.validator.engine.config().n_layer {
            let keys = self.ctx.stage_input(phase, Checkpoint::KvCache, Some(l), "k_cache")?;
            let values = self.ctx.stage_input(phase, Checkpoint::KvCache, Some(l), "v_cache")?;
            let (keys, values) = (keys.into_dimensionality::<Ix3>()?, values.into_dimensionality::<Ix3>()?);
            ensure!(
                keys.len_of(Axis(1)) == past + 1,
                "the dump's cache at the {phase} holds {} positions, ours {past} before the step",
                keys.len_of(Axis(1))
            );
            cache.overwrite(l, 0, keys.slice(s![.., ..past, ..]), values.slice(s![.., ..past, ..]));
        }
        Ok(())
    }

    /// One checked decode step: `token` through the cache, checkpoints 0–9 checked as the pass
    /// records them, then the cache after the step and the selected logits.
    fn decode_step(&mut self, phase: Phase, token: u32, cache: &mut KvCache, full_pass: bool) -> Result<()> {
        // The cache before the step, for the invariant that the step leaves its rows alone:
        // copied only when checkpoint 3 is checked (on the medium shape it is 68 MB).
        let before = self.wants(phase, Checkpoint::KvCache).then(|| cache.clone());
        let (logits, kept) = self.pass(phase, &[token], cache, full_pass)?;
        if let Some(before) = before.filter(|_| !self.stopped()) {
            self.decode_cache(phase, token, cache, &before, &kept)?;
        }
        if let Some(logits) = &logits {
            self.selected_logits_invariant(phase, logits, &kept)?;
        }
        Ok(())
    }

    /// Checkpoint 3 after a decode step: the cache against the references; rows 0..P bit for
    /// bit what the passes before wrote (P positions), row P bit for bit the step's own K and V.
    fn decode_cache(
        &mut self,
        phase: Phase,
        token: u32,
        cache: &KvCache,
        before: &KvCache,
        kept: &Kept,
    ) -> Result<()> {
        let cp = Checkpoint::KvCache;
        let invariants = cp.spec().invariants;
        let t = before.seq_len();
        for l in self.layers_of(phase, cp) {
            self.cache_rows(phase, &[token], cache, l)?;
            let (k, v) = (cache.keys(l).into_dyn(), cache.values(l).into_dyn());
            let olds = [
                (&k, before.keys(l), invariants[2], "k", invariants[4]),
                (&v, before.values(l), invariants[3], "v", invariants[5]),
            ];
            for (after, old, unchanged, name, new_row) in olds {
                let kept_rows = after.slice(s![.., ..t, ..]).into_dyn();
                self.rows.push(self.ctx.bitwise_row(
                    phase,
                    cp,
                    Some(l),
                    unchanged,
                    kept_rows,
                    old.into_dyn(),
                )?);
                let step =
                    kept.get(&Site::new(Checkpoint::Qkv, Some(l), name)).context("checkpoint 2 kept")?;
                let written = after.slice(s![.., t..t + 1, ..]).into_dyn();
                self.rows.push(self.ctx.bitwise_row(phase, cp, Some(l), new_row, written, step.view())?);
            }
        }
        Ok(())
    }

    /// Checkpoint 10: our next token must be every reference's, or a near tie with it
    /// (`ties.rs`).
    fn argmax(&mut self, logits: &[f32]) -> Result<()> {
        let ours = sampling::argmax(logits);
        let theirs: Vec<u32> = self.ctx.cases.iter().map(|c| c.next_token).collect();
        let describe = |a_name: &str, a: &u32, b_name: &str, b: &u32| {
            if a == b {
                format!("{a_name} {a} = {b_name} {b}")
            } else if a_name == crate::validation::result::OURS {
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
        let mut rows = self.ctx.equal_rows(Checkpoint::Argmax, "next_token", &[], &ours, &theirs, describe);
        if rows.iter().any(|r| !r.passed)
            && let Some(evidence) = Evidence::at(&self.ctx, Phase::Prefill)?
        {
            for row in &mut rows {
                let (a, b) =
                    (self.token_of(&row.pair.0, &ours, &theirs), self.token_of(&row.pair.1, &ours, &theirs));
                ties::mark(row, evidence.tie(a, b));
            }
        }
        self.rows.extend(rows);
        Ok(())
    }

    /// What source `name` has among `ours` and the references' `theirs` (in the order of the
    /// run's dumps).
    fn token_of<T: Clone>(&self, name: &str, ours: &T, theirs: &[T]) -> T {
        match self.ctx.sources.refs.iter().position(|r| r.name == name) {
            Some(i) => theirs[i].clone(),
            None => ours.clone(),
        }
    }

    /// Checkpoint 11: softmax(warp(logits)) with the case's sampling settings.
    fn probabilities(&mut self, logits: &[f32]) -> Result<()> {
        let case = self.ctx.cases[0];
        let s = &case.sampling;
        let sampling = Sampling::new(s.temperature as f32, s.top_k, s.top_p.map(|p| p as f32))
            .with_context(|| format!("case {:?} has invalid sampling settings", case.name))?;
        ensure!(!sampling.is_greedy(), "case {:?}: checkpoint 11 needs a temperature above 0", case.name);
        let probs = self.validator.engine.probabilities(logits, &sampling);
        let view = ArrayView1::from(&probs).into_dyn();
        let (phase, cp) = (Phase::Prefill, Checkpoint::Probabilities);
        let mut rows =
            self.ctx.float_rows(phase, cp, None, "probs", &vec![view.view(); self.ctx.cases.len()])?;
        let tokens = self.tokens().to_vec();
        let at = Checked { phase, checkpoint: cp, layer: None, name: "probs", tokens: &tokens, past: 0 };
        self.ctx.diagnose(&mut rows, &at, view, self.diagnose_more(phase, cp, "probs"));
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
        // Each new token's logits, to word a divergence: our logit gap between the two tokens.
        let mut logits_at: Vec<Vec<f32>> = Vec::with_capacity(n);
        let (progress, name) = (&self.validator.progress, self.ctx.name);
        let ours = self.validator.engine.generate(self.tokens(), n, &mut |_, logits| {
            progress.set_message(format!("case {name}: generating token {}/{n}", logits_at.len() + 1));
            logits_at.push(logits.to_vec());
            Ok(())
        })?;
        let describe = |a_name: &str, a: &Vec<u32>, b_name: &str, b: &Vec<u32>| match a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
        {
            None if a == b => format!("{} tokens, {a_name} = {b_name}: {a:?}", a.len()),
            None => format!("{a_name} {a:?} and {b_name} {b:?} differ in length"),
            Some(i) if a_name == crate::validation::result::OURS => {
                let gap = logits_at[i][a[i] as usize] - logits_at[i][b[i] as usize];
                format!(
                    "first difference at new token {i}: ours {}, {b_name} {}, our logit gap {gap:.3e}; \
                     ours {a:?}, {b_name} {b:?}",
                    a[i], b[i]
                )
            }
            Some(i) => format!("first difference at new token {i}: {a_name} {a:?}, {b_name} {b:?}"),
        };
        let mut rows = self.ctx.equal_rows(cp, "generated_ids", &[n], &ours, &theirs, describe);
        // A near tie where a pair first differs, at a step the truth has logits for: the token
        // after the prompt, or the one after that if both picked the truth's first token.
        let mut tied = Vec::new();
        for row in rows.iter_mut().filter(|r| !r.passed) {
            let (a, b) =
                (self.token_of(&row.pair.0, &ours, &theirs), self.token_of(&row.pair.1, &ours, &theirs));
            let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) else { continue };
            let truth_first = self.ctx.sources.truth.map(|t| self.ctx.cases[t].next_token);
            let phase = match i {
                0 => Phase::Prefill,
                1 if Some(a[0]) == truth_first => Phase::DECODE,
                _ => continue,
            };
            if let Some(evidence) = Evidence::at(&self.ctx, phase)? {
                ties::mark(row, evidence.tie(a[i], b[i]));
                if row.tie.is_some() {
                    tied.push((row.pair.clone(), row.tie.clone()));
                }
            }
        }
        let texts: Option<Vec<String>> = self.ctx.cases.iter().map(|c| c.generated_text.clone()).collect();
        if let (Some(tokenizer), Some(texts)) = (&self.validator.tokenizer, texts) {
            let all: Vec<u32> = self.tokens().iter().chain(&ours).copied().collect();
            let decoded = tokenizer.decode(&all)?;
            let describe = |a_name: &str, a: &String, b_name: &str, b: &String| {
                if a == b { format!("{a:?}") } else { format!("{a_name} {a:?}, {b_name} {b:?}") }
            };
            let mut text_rows = self.ctx.equal_rows(cp, "generated_text", &[], &decoded, &texts, describe);
            // The text of tied tokens differs as the tokens do.
            for row in &mut text_rows {
                if let Some((_, tie)) = tied.iter().find(|(pair, _)| *pair == row.pair) {
                    ties::mark(row, tie.clone());
                }
            }
            rows.extend(text_rows);
        }
        // Generation has no isolated form: it is our engine end to end in either mode.
        rows.iter_mut().for_each(|r| r.mode = Mode::Chained);
        self.rows.extend(rows);
        Ok(())
    }
}

/// The tokens a case's decode steps feed, step 1 first: the argmax after the prompt, then the
/// greedy continuation's next ones (its first token is that argmax).
fn fed_tokens(case: &Case) -> impl Iterator<Item = u32> + '_ {
    std::iter::once(case.next_token).chain(case.generated_ids.iter().skip(1).copied())
}
