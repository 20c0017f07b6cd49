//! Turning the last position's logits into a next token: HF's logits warpers (temperature,
//! top-k, top-p, in the order `generate` applies them), softmax, argmax and seeded sampling.
//! Checkpoints 10 and 11 validate exactly this code; `llorch generate` runs it.

use anyhow::Result;
use rand::Rng;

/// Sampling settings. `temperature` 0 means greedy (argmax); top-k and top-p are off when None.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling { temperature: 0.0, top_k: None, top_p: None };

    pub fn new(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> Result<Sampling, BadSetting> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(BadSetting::new(
                "temperature",
                format!("must be 0 (greedy) or positive, not {temperature}"),
            ));
        }
        if top_k == Some(0) {
            return Err(BadSetting::new(
                "top_k",
                "must be at least 1 (leave it out to keep every token)".into(),
            ));
        }
        if let Some(p) = top_p.filter(|&p| !(p > 0.0 && p <= 1.0)) {
            return Err(BadSetting::new("top_p", format!("must be in (0, 1], not {p}")));
        }
        Ok(Sampling { temperature, top_k, top_p })
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A sampling setting out of its range: which one (`temperature`, `top_k`, `top_p`) and why.
#[derive(Debug)]
pub struct BadSetting {
    pub setting: &'static str,
    pub problem: String,
}

impl BadSetting {
    fn new(setting: &'static str, problem: String) -> BadSetting {
        BadSetting { setting, problem }
    }
}

impl std::fmt::Display for BadSetting {
    /// "top-k must be at least 1 (...)", in the command line's words.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.setting.replace('_', "-"), self.problem)
    }
}

impl std::error::Error for BadSetting {}

/// The warpers' working memory, kept by a sampler from one token to the next so that picking a
/// token allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct Buffers {
    values: Vec<f32>,
    order: Vec<usize>,
}

/// Applies HF's warpers in place: TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper.
/// Removed tokens become −∞. Requires temperature > 0.
pub fn warp(logits: &mut [f32], s: &Sampling, buffers: &mut Buffers) {
    // HF adds the temperature warper only when temperature != 1; dividing by 1 is exact anyway.
    if s.temperature != 1.0 {
        logits.iter_mut().for_each(|x| *x /= s.temperature);
    }
    if let Some(k) = s.top_k {
        top_k(logits, k, &mut buffers.values);
    }
    if let Some(p) = s.top_p.filter(|&p| p < 1.0) {
        top_p(logits, p, buffers);
    }
}

/// TopKLogitsWarper: removes every logit below the k-th largest (ties with it survive).
fn top_k(logits: &mut [f32], k: usize, sorted: &mut Vec<f32>) {
    let k = k.min(logits.len());
    sorted.clear();
    sorted.extend_from_slice(logits);
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    logits.iter_mut().filter(|x| **x < kth).for_each(|x| *x = f32::NEG_INFINITY);
}

/// TopPLogitsWarper, step for step: sort ascending, softmax, cumulative sum, remove the tokens
/// whose cumulative probability is <= 1 − p, but always keep the most likely one.
fn top_p(logits: &mut [f32], p: f32, buffers: &mut Buffers) {
    let Buffers { values: sorted, order } = buffers;
    order.clear();
    order.extend(0..logits.len());
    // Ascending, ties in index order: the order a stable sort gives, without its allocation.
    order.sort_unstable_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(a.cmp(&b)));
    sorted.clear();
    sorted.extend(order.iter().map(|&i| logits[i]));
    crate::engine::softmax_in_place(sorted);
    // HF compares float32 cumulative sums with the threshold cast to float32. torch's CPU cumsum
    // accumulates in double and rounds each partial sum to float32; so does this loop.
    let threshold = (1.0 - p as f64) as f32;
    let last = order.len() - 1;
    let mut cumulative = 0.0f64;
    for (rank, &index) in order.iter().enumerate() {
        cumulative += sorted[rank] as f64;
        if (cumulative as f32) <= threshold && rank != last {
            logits[index] = f32::NEG_INFINITY;
        }
    }
}

/// softmax(warp(logits)): the distribution tokens are drawn from (checkpoint 11).
pub fn probabilities(logits: &[f32], s: &Sampling) -> Vec<f32> {
    let mut p = Vec::new();
    probabilities_into(logits, s, &mut p, &mut Buffers::default());
    p
}

/// `probabilities` into `p`, with the warpers' memory from `buffers`.
pub fn probabilities_into(logits: &[f32], s: &Sampling, p: &mut Vec<f32>, buffers: &mut Buffers) {
    p.clear();
    p.extend_from_slice(logits);
    warp(p, s, buffers);
    crate::engine::softmax_in_place(p);
}

/// The index of the largest logit; the first one on ties, as torch.argmax.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Draws a token from `probs` (which sum to 1) with one uniform number from `rng`.
pub fn draw(probs: &[f32], rng: &mut impl Rng) -> u32 {
    let u: f64 = rng.random();
    let mut cumulative = 0.0f64;
    for (i, &p) in probs.iter().enumerate() {
        cumulative += p as f64;
        if u < cumulative {
            return i as u32;
        }
    }
    // Rounding left the total a hair under u: take the last token that has any probability.
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn top_k_keeps_the_k_largest_and_ties() {
        let mut l = vec![1.0, 5.0, 3.0, 5.0, 2.0];
        top_k(&mut l, 2, &mut Vec::new());
        assert_eq!(l, vec![f32::NEG_INFINITY, 5.0, f32::NEG_INFINITY, 5.0, f32::NEG_INFINITY]);
        let mut l = vec![1.0, 4.0, 3.0];
        top_k(&mut l, 10, &mut Vec::new()); // more than the vocabulary: nothing removed
        assert_eq!(l, vec![1.0, 4.0, 3.0]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.5, 0.25, 0.125, 0.125 (logits ln of those)
        let logits: Vec<f32> = [0.5f32, 0.25, 0.125, 0.125].iter().map(|p| p.ln()).collect();
        let mut l = logits.clone();
        top_p(&mut l, 0.7, &mut Buffers::default()); // 0.5 + 0.25 reach 0.7: the two 0.125s go
        assert!(l[0].is_finite() && l[1].is_finite());
        assert!(l[2] == f32::NEG_INFINITY && l[3] == f32::NEG_INFINITY);
        let mut l = logits.clone();
        top_p(&mut l, 0.01, &mut Buffers::default()); // the most likely token always stays
        assert_eq!(l.iter().filter(|x| x.is_finite()).count(), 1);
        assert!(l[0].is_finite());
    }

    #[test]
    fn temperature_sharpens_the_distribution() {
        let logits = [1.0f32, 2.0];
        let hot = probabilities(&logits, &Sampling::new(2.0, None, None).unwrap());
        let cold = probabilities(&logits, &Sampling::new(0.5, None, None).unwrap());
        assert!(cold[1] > hot[1]);
        let e = (1.0f64).exp();
        assert!((cold[1] as f64 - e * e / (1.0 + e * e)).abs() < 1e-6); // softmax([2, 4])
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
    }

    #[test]
    fn seeded_draws_repeat_and_follow_the_distribution() {
        let probs = [0.0f32, 0.7, 0.3, 0.0];
        let run = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (0..1000).map(|_| draw(&probs, &mut rng)).collect::<Vec<u32>>()
        };
        assert_eq!(run(7), run(7));
        let draws = run(7);
        assert!(draws.iter().all(|&t| t == 1 || t == 2));
        let ones = draws.iter().filter(|&&t| t == 1).count();
        assert!((600..800).contains(&ones), "{ones} of 1000 draws hit p=0.7");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Sampling::new(-1.0, None, None).is_err());
        assert!(Sampling::new(1.0, Some(0), None).is_err());
        assert!(Sampling::new(1.0, None, Some(0.0)).is_err());
        assert!(Sampling::new(1.0, None, Some(1.5)).is_err());
        assert!(Sampling::new(0.0, None, None).unwrap().is_greedy());
    }
}
