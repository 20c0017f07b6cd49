//! `llorch validate --corpus FILE`: distribution metrics over a text, not one next token per
//! case. The text is tokenized and cut into consecutive windows (as the corpus dumps were,
//! `dump_reference.py --corpus`); our engine runs each window and every position's next-token
//! distribution of every source is compared with the truth's (the float64 dump): llama.cpp's
//! `llama-perplexity --kl-divergence` statistics (KLD mean, median, 99th and 99.9th percentile,
//! max; top-1 agreement; mean |Δp| of the truth's top token; perplexity), for every source of
//! the run at once. Where a source's top token differs from the truth's and the truth's own
//! logits of the two are within the float32 noise there (twice what checkpoint 9's accuracy
//! rule lets a logit err by, from the float32 peer's error at that position), the position
//! counts as a near tie, not a disagreement.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use ndarray::{Array2, ArrayView1, Axis};
use rayon::prelude::*;
use serde::Serialize;

use super::reference::{CorpusInfo, Precision, Tensor};
use super::result::OURS;
use super::run::RefSource;
use super::runner::Runner;
use super::spec::{Checkpoint, Checks, Phase};
use crate::engine::tokenizer::Gpt2Tokenizer;
use crate::engine::{Config, KvCache, LogitsTape, WeightFormat};

/// KLD(truth ‖ source) over the positions.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Kld {
    pub mean: f64,
    pub median: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One source's distributions against the truth's.
#[derive(Serialize, Clone, Debug)]
pub struct SourceStats {
    pub name: String,
    pub weights: WeightFormat,
    pub precision: Precision,
    /// Positions compared (every position of every window).
    pub positions: usize,
    pub kld: Kld,
    /// Positions whose top token is the truth's.
    pub top1_agree: usize,
    /// Positions whose top token differs where the truth's logits of the two are within the
    /// noise: near ties, not disagreements.
    pub top1_ties: usize,
    /// Mean |p_source − p_truth| of the truth's top token.
    pub mean_abs_dp_top: f64,
    /// exp(mean −log p(next token)) over every position but each window's last.
    pub perplexity: f64,
}

impl SourceStats {
    /// Top-1 agreement, a near tie counting as agreement.
    pub fn top1_rate(&self) -> f64 {
        (self.top1_agree + self.top1_ties) as f64 / self.positions.max(1) as f64
    }
}

/// `--max-kld X`: ours's mean KLD against the truth must not exceed X.
#[derive(Serialize, Clone, Debug)]
pub struct Gate {
    pub max_kld: f64,
    pub ours_mean_kld: f64,
    pub passed: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct CorpusReport {
    pub model: String,
    pub file: String,
    pub corpus: CorpusInfo,
    pub truth: String,
    pub truth_perplexity: f64,
    /// The float32 dump whose error sets the near-tie threshold, if any.
    pub peer: Option<String>,
    /// Ours first, then every dump but the truth.
    pub sources: Vec<SourceStats>,
    pub gate: Option<Gate>,
}

impl CorpusReport {
    pub fn passed(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| g.passed)
    }
}

/// The dumps of a corpus run, checked against the text, and their parts.
pub struct CorpusRun {
    dumps: Vec<RefSource>,
    truth: usize,
    peer: Option<usize>,
    info: CorpusInfo,
    file: String,
}

impl CorpusRun {
    /// Checks that every dump is a corpus dump of `file` as our tokenizer cuts it, and picks the
    /// truth (the float64 dump on the checkpoint's weights, else the first float64 dump) and
    /// the peer (the first float32 dump on the truth's weights).
    pub fn open(
        file: &Path,
        dumps: Vec<RefSource>,
        tokenizer: &Gpt2Tokenizer,
        config: &Config,
    ) -> Result<CorpusRun> {
        ensure!(!dumps.is_empty(), "no corpus dumps to compare with");
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the corpus {}", file.display()))?;
        let tokens = tokenizer.encode(&text)?;
        let mut info: Option<CorpusInfo> = None;
        for dump in &dumps {
            let dir = dump.reference.dir.display();
            let Some(this) = &dump.reference.manifest.corpus else {
                bail!("{dir} is not a corpus dump: make one with `scripts/dump_reference.py --corpus FILE`")
            };
            if let Some(first) = &info {
                ensure!(first == this, "{dir} cut the corpus as {this:?}, another dump as {first:?}");
            }
            ensure!(
                this.window <= config.n_positions,
                "{dir}'s windows of {} tokens do not fit the model's context of {}",
                this.window,
                config.n_positions
            );
            ensure!(
                this.window >= 2 && this.tokens <= tokens.len() && this.windows == this.tokens / this.window,
                "{dir} says it cut {} tokens into {} windows of {}, but {} is {} tokens as the model's \
                 tokenizer reads it: the dump was made from another text",
                this.tokens,
                this.windows,
                this.window,
                file.display(),
                tokens.len()
            );
            let cases = &dump.reference.manifest.cases;
            ensure!(
                cases.len() == this.windows,
                "{dir} holds {} windows, its manifest says {}",
                cases.len(),
                this.windows
            );
            for (i, case) in cases.iter().enumerate() {
                let expected = &tokens[i * this.window..(i + 1) * this.window];
                ensure!(
                    case.token_ids == expected,
                    "window {i} ({:?}) of {dir} is not tokens {}..{} of {}: the dump was made from another \
                     text, or its windows overlap or leave gaps",
                    case.name,
                    i * this.window,
                    (i + 1) * this.window,
                    file.display()
                );
            }
            info = Some(this.clone());
        }
        let float64 = |d: &RefSource| d.precision == Precision::Float64;
        let truth = dumps
            .iter()
            .position(|d| float64(d) && d.weights == WeightFormat::F32)
            .or_else(|| dumps.iter().position(float64))
            .context("the corpus metrics are measured against a float64 truth: add a dump made with --dtype float64")?;
        let peer =
            dumps.iter().position(|d| d.precision == Precision::Float32 && d.weights == dumps[truth].weights);
        let file = file.display().to_string();
        Ok(CorpusRun { dumps, truth, peer, info: info.expect("at least one dump"), file })
    }

    /// Runs ours over every window and measures every source against the truth.
    pub fn measure(
        &self,
        model: &str,
        engine: &dyn Runner,
        max_kld: Option<f64>,
        progress: &indicatif::ProgressBar,
    ) -> Result<CorpusReport> {
        let others: Vec<usize> = (0..self.dumps.len()).filter(|&i| i != self.truth).collect();
        // Per source (ours, then others): every position's measures.
        let mut per_source: Vec<Vec<Position>> = vec![Vec::new(); 1 + others.len()];
        let mut truth_nll = Vec::new();
        let window_names: Vec<&str> =
            self.dumps[self.truth].reference.manifest.cases.iter().map(|c| c.name.as_str()).collect();
        for (w, name) in window_names.iter().enumerate() {
            progress.set_message(format!("corpus window {} of {}", w + 1, window_names.len()));
            let tokens = &self.dumps[self.truth].reference.manifest.cases[w].token_ids;
            let truth = self.logits(self.truth, w)?;
            let peer = self.peer.map(|p| self.logits(p, w)).transpose()?;
            let noise = peer.as_ref().map(|peer| noise(peer, &truth));
            truth_nll.extend(next_token_nll(&truth, tokens));
            let mut cache = KvCache::new(engine.config(), tokens.len())?;
            let mut tape = LogitsTape::default();
            engine.forward(tokens, &mut cache, &mut tape)?;
            let ours = tape.0.with_context(|| format!("our pass over window {name} recorded no logits"))?;
            let ours = ours.mapv(f64::from);
            per_source[0].extend(positions(&ours, &truth, tokens, noise.as_deref()));
            for (k, &i) in others.iter().enumerate() {
                // The peer's logits are in hand already.
                let loaded;
                let logits = match (&peer, Some(i) == self.peer) {
                    (Some(peer), true) => peer,
                    _ => {
                        loaded = self.logits(i, w)?;
                        &loaded
                    }
                };
                per_source[k + 1].extend(positions(logits, &truth, tokens, noise.as_deref()));
            }
            progress.inc(1);
        }
        let ours =
            RefLike { name: OURS.to_string(), weights: engine.weights(), precision: Precision::Float32 };
        let mut sources = vec![summarise(&ours, &per_source[0])];
        for (k, &i) in others.iter().enumerate() {
            let d = &self.dumps[i];
            let like = RefLike { name: d.name.clone(), weights: d.weights, precision: d.precision };
            sources.push(summarise(&like, &per_source[k + 1]));
        }
        let gate = max_kld.map(|max_kld| {
            let ours_mean_kld = sources[0].kld.mean;
            Gate { max_kld, ours_mean_kld, passed: ours_mean_kld <= max_kld }
        });
        Ok(CorpusReport {
            model: model.to_string(),
            file: self.file.clone(),
            corpus: self.info.clone(),
            truth: self.dumps[self.truth].name.clone(),
            truth_perplexity: perplexity(&truth_nll),
            peer: self.peer.map(|p| self.dumps[p].name.clone()),
            sources,
            gate,
        })
    }

    /// Dump i's logits [W, V] of window w, in float64.
    fn logits(&self, i: usize, w: usize) -> Result<Array2<f64>> {
        let dump = &self.dumps[i];
        let case = &dump.reference.manifest.cases[w];
        let entry = case.require(Phase::Prefill, Checkpoint::Logits, None, "logits")?;
        let values = match dump.reference.load(entry)? {
            Tensor::F32(a) => a.mapv(f64::from),
            Tensor::F64(a) => a,
        };
        Ok(values.into_dimensionality()?)
    }
}

struct RefLike {
    name: String,
    weights: WeightFormat,
    precision: Precision,
}

/// What one position of one source came to.
#[derive(Clone, Copy, Debug)]
struct Position {
    kld: f64,
    agree: bool,
    tie: bool,
    abs_dp_top: f64,
    /// −log p(next token); None at a window's last position.
    nll: Option<f64>,
}

/// log-softmax of one row, in float64.
fn log_softmax(z: ArrayView1<'_, f64>) -> Vec<f64> {
    let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let lse = max + z.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
    z.iter().map(|&v| v - lse).collect()
}

fn argmax(z: ArrayView1<'_, f64>) -> usize {
    z.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
        .0
}

/// Per position, the near-tie threshold: twice what checkpoint 9's accuracy rule lets a logit
/// err by, given the peer's largest logit error at that position.
fn noise(peer: &Array2<f64>, truth: &Array2<f64>) -> Vec<f64> {
    let rule = Checkpoint::SelectedLogits.accuracy().expect("checkpoint 9 has an accuracy rule");
    peer.axis_iter(Axis(0))
        .zip(truth.axis_iter(Axis(0)))
        .map(|(p, t)| {
            let err = p.iter().zip(t).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            let truth_max = t.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            2.0 * rule.allowed(err, truth_max)
        })
        .collect()
}

fn next_token_nll(logits: &Array2<f64>, tokens: &[u32]) -> Vec<f64> {
    (0..tokens.len().saturating_sub(1)).map(|p| -log_softmax(logits.row(p))[tokens[p + 1] as usize]).collect()
}

fn positions(
    source: &Array2<f64>,
    truth: &Array2<f64>,
    tokens: &[u32],
    noise: Option<&[f64]>,
) -> Vec<Position> {
    (0..truth.nrows())
        .into_par_iter()
        .map(|p| {
            let (s, t) = (source.row(p), truth.row(p));
            let (ls, lt) = (log_softmax(s), log_softmax(t));
            let kld = lt.iter().zip(&ls).map(|(&a, &b)| a.exp() * (a - b)).sum::<f64>().max(0.0);
            let (top_t, top_s) = (argmax(t), argmax(s));
            let agree = top_t == top_s;
            let tie = !agree && noise.is_some_and(|n| (t[top_t] - t[top_s]).abs() <= n[p]);
            let abs_dp_top = (ls[top_t].exp() - lt[top_t].exp()).abs();
            let nll = tokens.get(p + 1).map(|&next| -ls[next as usize]);
            Position { kld, agree, tie, abs_dp_top, nll }
        })
        .collect()
}

fn perplexity(nll: &[f64]) -> f64 {
    (nll.iter().sum::<f64>() / nll.len().max(1) as f64).exp()
}

/// The value at quantile q of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summarise(source: &RefLike, positions: &[Position]) -> SourceStats {
    let mut kld: Vec<f64> = positions.iter().map(|p| p.kld).collect();
    kld.sort_by(f64::total_cmp);
    let n = positions.len().max(1) as f64;
    let nll: Vec<f64> = positions.iter().filter_map(|p| p.nll).collect();
    SourceStats {
        name: source.name.clone(),
        weights: source.weights,
        precision: source.precision,
        positions: positions.len(),
        kld: Kld {
            mean: kld.iter().sum::<f64>() / n,
            median: quantile(&kld, 0.5),
            p99: quantile(&kld, 0.99),
            p999: quantile(&kld, 0.999),
            max: kld.last().copied().unwrap_or(0.0),
        },
        top1_agree: positions.iter().filter(|p| p.agree).count(),
        top1_ties: positions.iter().filter(|p| p.tie).count(),
        mean_abs_dp_top: positions.iter().map(|p| p.abs_dp_top).sum::<f64>() / n,
        perplexity: perplexity(&nll),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kld_of_a_distribution_with_itself_is_zero_and_grows_with_a_shift() {
        let truth = Array2::from_shape_vec((1, 4), vec![1.0, 2.0, 3.0, 0.5]).unwrap();
        let same = positions(&truth, &truth, &[0], None);
        assert!(same[0].kld.abs() < 1e-15 && same[0].agree);
        let shifted = Array2::from_shape_vec((1, 4), vec![1.0, 2.0, 3.1, 0.5]).unwrap();
        let moved = positions(&shifted, &truth, &[0], None);
        assert!(moved[0].kld > 1e-4 && moved[0].agree);
        // Uniform logits against a peaked truth: KLD = log 4 − H(truth).
        let uniform = Array2::zeros((1, 4));
        let lt = log_softmax(truth.row(0));
        let entropy: f64 = -lt.iter().map(|&l| l.exp() * l).sum::<f64>();
        let flat = positions(&uniform, &truth, &[0], None);
        assert!((flat[0].kld - (4f64.ln() - entropy)).abs() < 1e-12);
    }

    #[test]
    fn a_differing_top_token_is_a_tie_only_within_the_noise() {
        let truth = Array2::from_shape_vec((1, 3), vec![2.0, 2.0 - 1e-6, 0.0]).unwrap();
        let other = Array2::from_shape_vec((1, 3), vec![2.0, 2.0 + 1e-6, 0.0]).unwrap();
        let within = positions(&other, &truth, &[0], Some(&[1e-5]));
        assert!(!within[0].agree && within[0].tie);
        let beyond = positions(&other, &truth, &[0], Some(&[1e-7]));
        assert!(!beyond[0].agree && !beyond[0].tie);
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 500.0);
        assert_eq!(quantile(&v, 0.99), 990.0);
        assert_eq!(quantile(&v, 0.999), 999.0);
        assert_eq!(quantile(&[3.0], 0.999), 3.0);
    }

    #[test]
    fn perplexity_of_a_uniform_guess_is_the_vocabulary() {
        let logits = Array2::zeros((3, 8));
        let nll = next_token_nll(&logits, &[1, 2, 3]);
        assert!((perplexity(&nll) - 8.0).abs() < 1e-12);
    }
}
