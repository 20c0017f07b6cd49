//! How each of the 13 checkpoints of the forward pass (`engine::Checkpoint`) is checked,
//! described once, as data: the tensors each one records and their shapes, which entries are
//! masked, the kind of check, the default tolerance and the accuracy rule against a float64
//! truth. `llorch checkpoints` prints this table (as
//! JSON for the Python scripts); CHECKPOINTS.md is its prose version, with the reasons.

use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::compare::{Mask, Tolerance};
use super::systematic::Bias;
pub use crate::engine::Checkpoint;

/// Which pass of the forward computation a tensor belongs to: the prompt (prefill), or a decode
/// step after it, where the bugs of start positions, masks and caches live. Decode step k
/// (from 1) feeds token k of the greedy continuation (token 1 is the argmax after the prompt)
/// at position T + k − 1, through the KV cache; bugs that grow with the context (a cache that
/// goes wrong after a few steps, a position read past its table) show only at later steps.
/// Written "prefill", "decode" (step 1, as every dump has it) and "decode:K".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    #[default]
    Prefill,
    Decode(u16),
}

impl Phase {
    /// The first decode step: the argmax token after the prompt.
    pub const DECODE: Phase = Phase::Decode(1);

    /// The decode step's number, from 1; None for the prompt's pass.
    pub fn step(self) -> Option<u16> {
        match self {
            Phase::Prefill => None,
            Phase::Decode(step) => Some(step),
        }
    }

    pub fn is_decode(self) -> bool {
        matches!(self, Phase::Decode(_))
    }

    /// The name in dumps and JSON.
    pub fn name(self) -> String {
        match self {
            Phase::Prefill => "prefill".into(),
            Phase::Decode(1) => "decode".into(),
            Phase::Decode(step) => format!("decode:{step}"),
        }
    }
}

impl std::str::FromStr for Phase {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Phase> {
        match s {
            "prefill" => Ok(Phase::Prefill),
            "decode" => Ok(Phase::DECODE),
            _ => match s.strip_prefix("decode:").map(str::parse::<u16>) {
                Some(Ok(step)) if step >= 1 => Ok(Phase::Decode(step)),
                _ => bail!("unknown phase {s:?}: prefill, decode or decode:K (a decode step from 1)"),
            },
        }
    }
}

impl Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Phase, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Prefill => f.write_str("prefill"),
            Phase::Decode(1) => f.write_str("decode step"),
            Phase::Decode(step) => write!(f, "decode step {step}"),
        }
    }
}

/// How our engine's stages get their inputs. *Chained*: each stage runs on our own previous
/// stage's output, as in generation, so an early error reaches every later stage. *Isolated*:
/// each stage runs on the reference's own input to it (the pass continues with the reference's
/// tensor after every stage), so a stage is judged alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Chained,
    Isolated,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Chained => "chained",
            Mode::Isolated => "isolated",
        })
    }
}

/// Where a check is made in a case: the pass (the prompt or the decode step), the checkpoint,
/// and the layer for checkpoints 1–7. Ordered as the forward pass reaches them within a layer
/// range; `run::plan` gives the order of a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub phase: Phase,
    pub checkpoint: Checkpoint,
    pub layer: Option<usize>,
}

impl Place {
    pub fn new(phase: Phase, checkpoint: Checkpoint, layer: Option<usize>) -> Place {
        Place { phase, checkpoint, layer }
    }
}

/// What a recorded value is, and so how it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// A float tensor: compared within the checkpoint's tolerance with every source, and with
    /// a float64 truth under the accuracy rule. `mask` says which entries take part.
    Float { mask: Mask },
    /// Token ids: equal or not.
    Tokens,
    /// Decoded text: equal or not.
    Text,
}

/// One value a checkpoint records, by its manifest name.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TensorSpec {
    pub name: &'static str,
    /// In the notation of CHECKPOINTS.md: T prompt tokens, C width, H heads, D head width,
    /// V vocabulary; the batch dimension is dropped. On the decode step T is 1 and the keys
    /// number T_prompt + 1.
    pub shape: &'static str,
    #[serde(flatten)]
    pub kind: Kind,
    /// A tolerance of this tensor's own, where the checkpoint's does not fit it (ln_f, a
    /// LayerNorm output, beside the logits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Tolerance>,
}

/// The accuracy rule against a float64 truth, the peer being a float32 reference (PyTorch's).
/// Ours fails when its worst error is more than k times the peer's, or its RMS error more than
/// k_rms times the peer's, each plus a floor:
///
///   max |ours − truth| > k·max |peer − truth|     + floor + floor_eps·ε·max |truth|,  or
///   rms(ours − truth)  > k_rms·rms(peer − truth)  + floor + floor_eps·ε·rms(truth),
///
/// ε being float32's machine epsilon (2^-23). The max rule catches a bug in a few elements;
/// the RMS rule a small systematic error (a wrong constant that moves every element by a few
/// ulps), whose max hides in the peer's worst-case rounding but whose RMS stands out. The
/// floors keep the yardstick from shrinking below what float32 can resolve: `floor` for
/// tensors near zero, `floor_eps` for a peer that is luckily exact on a small tensor (the
/// decode step's single row). All were chosen by measurement on every model CI validates
/// (CHECKPOINTS.md, "The accuracy verdict").
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AccuracyRule {
    pub k: f64,
    pub k_rms: f64,
    pub floor: f64,
    pub floor_eps: f64,
    /// The systematic error (isolated mode): the bias of ours − peer over bins of the truth's
    /// value may be at most this many float32 epsilons of rms(truth) where it is significant
    /// (`systematic::Bias`, CHECKPOINTS.md "Systematic error").
    pub bias_eps: f64,
}

/// float32's machine epsilon, 2^-23.
pub const F32_EPSILON: f64 = f32::EPSILON as f64;

/// How closely two float64 truths must agree, |a − b| ≤ atol + rtol·|b| on every element,
/// before either judges anyone (their rows fail otherwise, and the run says which is off). On
/// the bundled model, PyTorch, Flax, tinygrad and Candle in float64, every checkpoint of both
/// phases, agreed within |Δ| 2.8e-14 (1.5e-15 of the tensor's largest value); a float32
/// source is some 1e-7 off. 1e-12 + 1e-11·|b| sits 35 times above the one and 10⁴ below the other.
pub const TRUTHS_AGREE: Tolerance = Tolerance::Close { atol: 1e-12, rtol: 1e-11 };

impl AccuracyRule {
    /// The largest max error against the truth ours may have, given the peer's and the
    /// truth's largest magnitude.
    pub fn allowed(&self, err_peer: f64, truth_max_abs: f64) -> f64 {
        self.k * err_peer + self.floor + self.floor_eps * F32_EPSILON * truth_max_abs
    }

    /// The largest RMS error against the truth ours may have, given the peer's and the truth's
    /// RMS.
    pub fn allowed_rms(&self, rms_peer: f64, truth_rms: f64) -> f64 {
        self.k_rms * rms_peer + self.floor + self.floor_eps * F32_EPSILON * truth_rms
    }

    /// Whether a bias of ours − peer fails: significant (its χ² beyond what noise reaches once
    /// in 10⁹ tensors), larger than `bias_eps` epsilons of the truth's RMS, and ours's (ours's
    /// bins are farther from the truth than the peer's: a biased peer is no fault of ours).
    pub fn bias_fails(&self, bias: &Bias) -> bool {
        bias.chi2 > chi2_limit(bias.bins)
            && bias.in_epsilons() > self.bias_eps
            && bias.ours_bias_rms > bias.peer_bias_rms
    }
}

/// The χ² with `dof` degrees of freedom that unbiased noise exceeds with probability 1e-9
/// (Wilson–Hilferty: (χ²/k)^(1/3) is close to normal with mean 1 − 2/(9k), variance 2/(9k);
/// 1e-9 is 6.0 of its standard deviations). 16 bins: 77.7.
pub fn chi2_limit(dof: usize) -> f64 {
    const Z: f64 = 6.0;
    let v = 2.0 / (9.0 * dof as f64);
    dof as f64 * (1.0 - v + Z * v.sqrt()).powi(3)
}

/// Everything llorch knows about one checkpoint.
#[derive(Debug)]
pub struct Spec {
    pub id: Checkpoint,
    pub tensors: &'static [TensorSpec],
    /// Bit-for-bit invariants between tensors of our own engine, checked beside the tensors.
    pub invariants: &'static [&'static str],
    /// Default tolerance of the float tensors, or `Exact` for tokens and text.
    pub tolerance: Tolerance,
    /// None for checkpoints with nothing to measure against a truth (tokens).
    pub accuracy: Option<AccuracyRule>,
    /// What usually goes wrong here: the diagnosis of a failing tensor lists them after the
    /// hypotheses the data decided (CHECKPOINTS.md, "Common failures").
    pub common_failures: &'static [&'static str],
}

/// The JSON of `llorch checkpoints --format json`: the engine's identity of the checkpoint
/// (number, title, where it exists) beside the checks.
impl Serialize for Spec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut row = s.serialize_struct("Spec", 9)?;
        row.serialize_field("checkpoint", &self.id.index())?;
        row.serialize_field("title", self.id.title())?;
        row.serialize_field("per_layer", &self.id.per_layer())?;
        row.serialize_field("decode", &self.id.on_decode_step())?;
        row.serialize_field("tensors", self.tensors)?;
        row.serialize_field("invariants", self.invariants)?;
        row.serialize_field("tolerance", &self.tolerance)?;
        row.serialize_field("accuracy", &self.accuracy)?;
        row.serialize_field("common_failures", self.common_failures)?;
        row.end()
    }
}

const fn float(name: &'static str, shape: &'static str) -> TensorSpec {
    TensorSpec { name, shape, kind: Kind::Float { mask: Mask::All }, tolerance: None }
}

/// The tolerance of LayerNorm outputs wherever they are recorded: 1e-4, not 1e-5, because HF's
/// own float32 ln_1 drifts 8.9e-6 from its float64 value at depth (CHECKPOINTS.md, "Where the
/// float32 noise floor is").
const LAYER_NORM: Tolerance = close(1e-4, 1e-5);

/// The least rtol of any float tensor: float32's rounding of the value itself, one ulp
/// (2^-23 relative, twice the half ulp a correctly rounded float32 lies from the exact value), so
/// that no tensor is held closer to a float64 truth than float32 can be. A sum of an embedding
/// row and a position row at 47.8 is 1.8e-6 from its exact value: an atol of 1e-6 alone failed
/// every correct float32 engine there, and blamed the truth as the odd one out.
const F32_ROUNDING: f64 = F32_EPSILON;

const fn close(atol: f64, rtol: f64) -> Tolerance {
    Tolerance::Close { atol, rtol }
}

/// How much larger than the peer's our errors against the truth may be, for the max and for the
/// RMS, and the relative floor. Chosen by measurement on every model CI validates, both phases
/// (CHECKPOINTS.md, "The accuracy verdict"): our engine uses at most 0.25 of the allowance;
/// correct engines with other numerics at most 0.59 (a plain float32 loop for every matrix
/// product, as llm.c's reference kernels, reaches 7.5× PyTorch's worst error on the decode
/// step's scores); a constant 3e-6 shift of one stage exceeds it 1.4× to 3.9× where it happens.
const K_MAX: f64 = 12.0;
const FLOOR_EPS: f64 = 2.0;
const K_RMS: f64 = 6.0;
/// The bias of ours − peer allowed, in epsilons of rms(truth), where it is significant
/// (CHECKPOINTS.md, "Systematic error").
const BIAS_EPS: f64 = 1.0;

const fn rule(k: f64, floor: f64) -> Option<AccuracyRule> {
    Some(AccuracyRule { k, k_rms: K_RMS, floor, floor_eps: FLOOR_EPS, bias_eps: BIAS_EPS })
}

/// The table. Tolerances: CHECKPOINTS.md gives the reason for each; the accuracy rules, the
/// worst ratios measured on the models CI validates.
static SPECS: [Spec; 13] = [
    Spec {
        id: Checkpoint::Embeddings,
        tensors: &[float("embeddings", "[T, C]")],
        invariants: &[],
        tolerance: close(1e-6, F32_ROUNDING),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "position ids not offset by the cache on the decode step",
            "wpe indexed off by one",
            "wte and wpe not both added",
        ],
    },
    Spec {
        id: Checkpoint::LayerNorm,
        tensors: &[float("ln_1", "[T, C]")],
        invariants: &[],
        tolerance: LAYER_NORM,
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "LayerNorm epsilon other than the config's layer_norm_epsilon",
            "unbiased variance (divided by C − 1)",
            "weight and bias swapped, or not applied",
            "mean not subtracted (RMSNorm)",
        ],
    },
    Spec {
        id: Checkpoint::Qkv,
        tensors: &[float("q", "[H, T, D]"), float("k", "[H, T, D]"), float("v", "[H, T, D]")],
        invariants: &[],
        tolerance: close(1e-4, 1e-5),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "c_attn weight read transposed (Conv1D stores [in, out])",
            "q, k, v split from c_attn in another order",
            "heads split as [T, D, H] instead of [T, H, D]",
            "c_attn bias dropped",
        ],
    },
    Spec {
        id: Checkpoint::KvCache,
        tensors: &[
            float("k_cache", "[H, T, D]; decode: [H, T+1, D]"),
            float("v_cache", "[H, T, D]; decode: [H, T+1, D]"),
        ],
        invariants: &[
            "k_cache = checkpoint 2 k (ours)",
            "v_cache = checkpoint 2 v (ours)",
            "decode: k_cache rows 0..T unchanged",
            "decode: v_cache rows 0..T unchanged",
            "decode: k_cache row T = checkpoint 2 k (ours)",
            "decode: v_cache row T = checkpoint 2 v (ours)",
        ],
        tolerance: close(1e-4, 1e-5),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "the step's K and V written at the wrong row (not at the cache length)",
            "the cache not advanced after a pass",
            "keys stored before the split into heads",
        ],
    },
    Spec {
        id: Checkpoint::AttnScores,
        tensors: &[
            TensorSpec {
                name: "scores",
                shape: "[H, T, T]",
                kind: Kind::Float { mask: Mask::Causal },
                tolerance: None,
            },
            float("attn_probs", "[H, T, T]"),
        ],
        invariants: &[],
        tolerance: close(1e-4, 1e-5),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "the 1/√D scale missing or applied twice",
            "a causal mask off by one",
            "a mask that ignores the cached positions on the decode step",
            "softmax over the wrong axis",
        ],
    },
    Spec {
        id: Checkpoint::AttnOutput,
        tensors: &[float("attn_out", "[T, C]")],
        invariants: &[],
        tolerance: close(1e-4, 1e-5),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "heads merged in another order before c_proj",
            "c_proj weight read transposed",
            "c_proj bias dropped",
        ],
    },
    Spec {
        id: Checkpoint::Ffn,
        tensors: &[float("ln_2", "[T, C]"), float("gelu", "[T, 4C]"), float("mlp_out", "[T, C]")],
        invariants: &[],
        tolerance: close(1e-4, 1e-5),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "the erf GELU instead of the tanh approximation (gelu_new)",
            "the tanh GELU with a wrong constant",
            "c_fc or c_proj bias dropped",
            "c_fc or c_proj weight read transposed",
        ],
    },
    Spec {
        id: Checkpoint::BlockOutput,
        tensors: &[float("block_out", "[T, C]")],
        invariants: &[],
        tolerance: close(1e-4, 1e-5),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "a residual add dropped",
            "the residual added to the LayerNorm output instead of its input",
        ],
    },
    Spec {
        id: Checkpoint::Logits,
        tensors: &[
            TensorSpec { tolerance: Some(LAYER_NORM), ..float("ln_f", "[T, C]") },
            float("logits", "[T, V]"),
        ],
        invariants: &["logits: one pass = token by token (ours)", "logits: one pass = in chunks (ours)"],
        tolerance: close(1e-3, 1e-5),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &["ln_f skipped", "the lm_head not tied to wte, or wte read transposed"],
    },
    Spec {
        id: Checkpoint::SelectedLogits,
        tensors: &[float("selected_logits", "[V]")],
        invariants: &["selected_logits = logits[T-1] (ours)"],
        tolerance: close(1e-3, 1e-5),
        accuracy: rule(K_MAX, 1e-7),
        common_failures: &[
            "logits of another position than the last selected",
            "a fast last-row path that computes differently from the full product",
        ],
    },
    Spec {
        id: Checkpoint::Argmax,
        tensors: &[TensorSpec { name: "next_token", shape: "[]", kind: Kind::Tokens, tolerance: None }],
        invariants: &[],
        tolerance: Tolerance::Exact,
        accuracy: None,
        common_failures: &[
            "ties broken differently (torch takes the first index)",
            "argmax over the wrong logits (see checkpoint 9)",
        ],
    },
    Spec {
        id: Checkpoint::Probabilities,
        tensors: &[float("probs", "[V]")],
        invariants: &[],
        // A probability carries its logit's error relative to the others' (|Δp| ≈ p·|Δz|), and
        // float32 logits of a trained model (tens in magnitude) carry 1e-6 to 1e-5 of it: an
        // rtol of 1e-4 covers that, where an atol alone failed PyTorch float32 against float64
        // by 5.8× on the bundled trained model's peaked distribution.
        tolerance: close(1e-6, 1e-4),
        accuracy: rule(K_MAX, 1e-9),
        common_failures: &[
            "temperature not applied, or multiplied instead of divided",
            "top-k keeping one token too many or too few",
            "top-p keeping the boundary token differently",
            "warpers applied in another order than HF's (temperature, top-k, top-p)",
        ],
    },
    Spec {
        id: Checkpoint::Generation,
        tensors: &[
            TensorSpec { name: "generated_ids", shape: "[N]", kind: Kind::Tokens, tolerance: None },
            TensorSpec { name: "generated_text", shape: "[]", kind: Kind::Text, tolerance: None },
        ],
        invariants: &[],
        tolerance: Tolerance::Exact,
        accuracy: None,
        common_failures: &[
            "end-of-text not stopping generation",
            "the KV cache not reused between steps (see the decode step's checkpoints)",
            "decoding the tokens differently from the tokenizer",
        ],
    },
];

/// The whole table, in forward order.
pub fn specs() -> &'static [Spec] {
    &SPECS
}

/// The checks of a checkpoint: its row of the table, and shortcuts into it.
pub trait Checks {
    /// This checkpoint's row of the table.
    fn spec(self) -> &'static Spec;

    /// The spec of one of this checkpoint's tensors.
    fn tensor(self, name: &str) -> Option<&'static TensorSpec>;

    /// The default tolerance of one of this checkpoint's tensors: its own, else the checkpoint's.
    fn tensor_tolerance(self, name: &str) -> Tolerance;

    fn accuracy(self) -> Option<AccuracyRule>;
}

impl Checks for Checkpoint {
    fn spec(self) -> &'static Spec {
        &SPECS[self as usize]
    }

    fn tensor(self, name: &str) -> Option<&'static TensorSpec> {
        self.spec().tensors.iter().find(|t| t.name == name)
    }

    fn tensor_tolerance(self, name: &str) -> Tolerance {
        self.tensor(name).and_then(|t| t.tolerance).unwrap_or(self.spec().tolerance)
    }

    fn accuracy(self) -> Option<AccuracyRule> {
        self.spec().accuracy
    }
}

/// Parses `--checkpoint`: `all`, a number, a list and ranges (`1,2,3,7,12`, `0-7`).
/// The result is sorted and free of duplicates, so the pass can run in forward order.
pub fn parse_selection(spec: &str) -> Result<Vec<Checkpoint>> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("all") {
        return Ok(Checkpoint::ALL.to_vec());
    }
    let number = |s: &str| -> Result<Checkpoint> {
        let s = s.trim();
        match s.parse::<u64>() {
            Ok(n) => Checkpoint::from_index(n),
            Err(_) => bail!("{s:?} is not a checkpoint number (0 to 12)"),
        }
    };
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    bail!("checkpoint range {part:?} runs backwards");
                }
                out.extend(Checkpoint::ALL.iter().filter(|c| (lo..=hi).contains(c)));
            }
            None => out.push(number(part)?),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn checkpoints_md_lists_every_common_failure() {
        let doc = include_str!("../../CHECKPOINTS.md");
        for spec in super::SPECS.iter() {
            for failure in spec.common_failures {
                assert!(doc.contains(failure), "CHECKPOINTS.md lacks checkpoint {}'s {failure:?}", spec.id);
            }
        }
    }

    use super::*;

    #[test]
    fn the_table_is_in_order() {
        for (i, cp) in Checkpoint::ALL.iter().enumerate() {
            assert_eq!(cp.spec().id, *cp, "SPECS[{i}] describes checkpoint {i}");
        }
    }

    /// No float tensor is held closer than float32 can represent it: a correctly rounded float32
    /// of a value in the thousands passes against its exact float64 value, two ulps off fails.
    #[test]
    fn no_float_tolerance_is_finer_than_float32_rounding() {
        for spec in specs() {
            for t in spec.tensors.iter().filter(|t| matches!(t.kind, Kind::Float { .. })) {
                let tolerance = t.tolerance.unwrap_or(spec.tolerance);
                let Tolerance::Close { rtol, .. } = tolerance else {
                    panic!("checkpoint {}: not close", spec.id)
                };
                assert!(rtol >= F32_EPSILON, "checkpoint {} {}: rtol {rtol}", spec.id, t.name);
            }
        }
        let allowed = |exact: f64| Checkpoint::Embeddings.tensor_tolerance("embeddings").allowed(exact);
        let (wte, wpe) = (2731.0431f32, 350.77017f32);
        let sum = wte + wpe; // float32's rounding of the exact sum
        let exact = wte as f64 + wpe as f64;
        assert!((sum as f64 - exact).abs() > 1e-6, "the case an atol alone fails");
        assert!((sum as f64 - exact).abs() <= allowed(exact));
        let two_ulps = f32::from_bits(sum.to_bits() + 2) as f64;
        assert!((two_ulps - exact).abs() > allowed(exact));
    }

    #[test]
    fn float_checkpoints_have_a_tolerance_and_an_accuracy_rule() {
        for spec in specs() {
            let has_float = spec.tensors.iter().any(|t| matches!(t.kind, Kind::Float { .. }));
            assert_eq!(has_float, spec.accuracy.is_some(), "checkpoint {}", spec.id);
            assert_eq!(
                has_float,
                matches!(spec.tolerance, Tolerance::Close { .. }),
                "checkpoint {}",
                spec.id
            );
        }
    }

    #[test]
    fn selections_parse_lists_and_ranges() {
        let ids = |s| -> Vec<u8> { parse_selection(s).unwrap().iter().map(|c| c.index()).collect() };
        assert_eq!(ids("4"), vec![4]);
        assert_eq!(ids("0-2"), vec![0, 1, 2]);
        assert_eq!(ids("12,1,2-3,2"), vec![1, 2, 3, 12]);
        assert_eq!(ids("all").len(), 13);
        assert!(parse_selection("13").is_err());
        assert!(parse_selection("3-1").is_err());
        assert!(parse_selection("x").is_err());
        assert!(parse_selection("").is_err());
    }

    #[test]
    fn accuracy_rule_allows_k_times_the_peer_plus_the_floor() {
        let r = AccuracyRule { k: 2.0, k_rms: 3.0, floor: 1e-7, floor_eps: 0.0, bias_eps: 1.0 };
        assert!((r.allowed(1e-6, 5.0) - 2.1e-6).abs() < 1e-18);
        assert!((r.allowed_rms(1e-6, 5.0) - 3.1e-6).abs() < 1e-18);
        assert_eq!(r.allowed(0.0, 5.0), 1e-7);
        // The relative floor: 2 float32 epsilons of the truth's magnitude.
        let r = AccuracyRule { floor_eps: 2.0, ..r };
        assert!((r.allowed(0.0, 4.0) - (1e-7 + 8.0 * F32_EPSILON)).abs() < 1e-18);
        assert!((r.allowed_rms(0.0, 0.5) - (1e-7 + F32_EPSILON)).abs() < 1e-18);
    }

    #[test]
    fn a_bias_fails_when_both_significant_and_large() {
        use crate::validation::systematic::{Bias, Bin};
        // 16 degrees of freedom: Wilson–Hilferty's 1e-9 point; the exact quantile is 78.2.
        assert!((chi2_limit(16) - 77.7).abs() < 0.1, "{}", chi2_limit(16));
        assert!(chi2_limit(8) < chi2_limit(16));
        let r = rule(K_MAX, 1e-7).unwrap();
        let worst =
            Bin { from: 0.0, to: 1.0, count: 100, mean: 0.0, se: 1.0, ours_mean: 0.0, peer_mean: 0.0 };
        let eps = F32_EPSILON;
        let bias = |chi2: f64, bias_rms: f64| Bias {
            compared: 800,
            rows: 10,
            bins: 8,
            chi2,
            bias_rms,
            truth_rms: 1.0,
            ours_bias_rms: bias_rms,
            peer_bias_rms: 0.1 * eps,
            worst: worst.clone(),
        };
        assert!(r.bias_fails(&bias(1e4, 2.0 * eps)));
        assert!(!r.bias_fails(&bias(1e4, 0.5 * eps)), "significant but a fraction of an ulp");
        assert!(!r.bias_fails(&bias(20.0, 2.0 * eps)), "large but what noise reaches");
        let peers = Bias { ours_bias_rms: 0.1 * eps, peer_bias_rms: 2.0 * eps, ..bias(1e4, 2.0 * eps) };
        assert!(!r.bias_fails(&peers), "the peer is the biased one");
    }
}
