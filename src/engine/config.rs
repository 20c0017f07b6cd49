//! GPT-2 hyper-parameters from an HF `config.json`, with a refusal for every option this engine
//! does not implement: running such a model would produce a confident wrong answer.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// The sizes the forward pass needs. Field names are HF's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub vocab_size: usize,
    pub layer_norm_epsilon: f64,
    /// Width of the MLP's hidden layer; HF's `n_inner`, 4·n_embd when null.
    pub n_inner: usize,
    pub eos_token_id: Option<u32>,
}

/// config.json as HF writes it; options that change the math are read so they can be refused.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
    n_positions: usize,
    vocab_size: usize,
    #[serde(default = "default_epsilon")]
    layer_norm_epsilon: f64,
    n_inner: Option<usize>,
    eos_token_id: Option<u32>,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    reorder_and_upcast_attn: bool,
    #[serde(default = "yes")]
    scale_attn_weights: bool,
    #[serde(default)]
    add_cross_attention: bool,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
}

fn default_epsilon() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn yes() -> bool {
    true
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading model config {}", path.display()))?;
        Config::from_json(&text).with_context(|| format!("in model config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Config> {
        let raw: RawConfig = serde_json::from_str(text).context("not a GPT-2 config.json")?;
        if let Some(t) = &raw.model_type {
            ensure!(t == "gpt2", "model_type is {t:?}; llorch runs GPT-2 (\"gpt2\") only");
        }
        let unsupported = |what: &str| -> Result<()> {
            bail!("{what} is set; llorch implements the standard GPT-2 block only")
        };
        if raw.activation_function != "gelu_new" {
            bail!(
                "activation_function is {:?}; GPT-2 uses \"gelu_new\" (the tanh approximation), \
                 the only one llorch implements",
                raw.activation_function
            );
        }
        if raw.scale_attn_by_inverse_layer_idx {
            unsupported("scale_attn_by_inverse_layer_idx")?;
        }
        if raw.reorder_and_upcast_attn {
            unsupported("reorder_and_upcast_attn")?;
        }
        if !raw.scale_attn_weights {
            unsupported("scale_attn_weights = false")?;
        }
        if raw.add_cross_attention {
            unsupported("add_cross_attention")?;
        }
        if !raw.tie_word_embeddings {
            unsupported("tie_word_embeddings = false")?;
        }
        for (name, value) in [
            ("n_layer", raw.n_layer),
            ("n_head", raw.n_head),
            ("n_embd", raw.n_embd),
            ("n_positions", raw.n_positions),
            ("vocab_size", raw.vocab_size),
        ] {
            ensure!(value > 0, "{name} is 0");
        }
        ensure!(
            raw.n_embd.is_multiple_of(raw.n_head),
            "n_embd ({}) is not divisible by n_head ({})",
            raw.n_embd,
            raw.n_head
        );
        ensure!(
            raw.layer_norm_epsilon.is_finite() && raw.layer_norm_epsilon > 0.0,
            "layer_norm_epsilon must be a positive number, not {}",
            raw.layer_norm_epsilon
        );
        Ok(Config {
            n_layer: raw.n_layer,
            n_head: raw.n_head,
            n_embd: raw.n_embd,
            n_positions: raw.n_positions,
            vocab_size: raw.vocab_size,
            layer_norm_epsilon: raw.layer_norm_epsilon,
            n_inner: raw.n_inner.unwrap_or(4 * raw.n_embd),
            eos_token_id: raw.eos_token_id,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Weights of the model, counting the tied lm_head once (as HF's `num_parameters()`).
    pub fn parameter_count(&self) -> u64 {
        let (c, inner) = (self.n_embd as u64, self.n_inner as u64);
        let per_layer = 2 * 2 * c          // ln_1, ln_2
            + c * 3 * c + 3 * c            // attn.c_attn
            + c * c + c                    // attn.c_proj
            + c * inner + inner            // mlp.c_fc
            + inner * c + c; // mlp.c_proj
        (self.vocab_size as u64 + self.n_positions as u64) * c // wte, wpe
            + self.n_layer as u64 * per_layer
            + 2 * c // ln_f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published GPT-2 (124M) has 124,439,808 weights (`num_parameters()` of HF's
    /// GPT2LMHeadModel).
    #[test]
    fn counts_the_parameters_of_gpt2_small() {
        assert_eq!(Config::from_json(GPT2).unwrap().parameter_count(), 124_439_808);
    }

    const GPT2: &str = r#"{"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768,
        "n_positions": 1024, "vocab_size": 50257, "layer_norm_epsilon": 1e-05,
        "activation_function": "gelu_new", "eos_token_id": 50256, "n_inner": null}"#;

    #[test]
    fn reads_published_gpt2_config() {
        let c = Config::from_json(GPT2).unwrap();
        assert_eq!((c.n_layer, c.n_head, c.n_embd, c.head_dim()), (12, 12, 768, 64));
        assert_eq!(c.n_inner, 3072);
        assert_eq!(c.eos_token_id, Some(50256));
    }

    #[test]
    fn refuses_what_the_engine_cannot_run() {
        let with = |extra: &str| GPT2.replacen('{', &format!("{{{extra},"), 1);
        let err = |json: String| format!("{:#}", Config::from_json(&json).unwrap_err());
        assert!(err(GPT2.replace(r#""gpt2""#, r#""llama""#)).contains("llama"));
        assert!(err(GPT2.replace("gelu_new", "relu")).contains("activation_function"));
        assert!(err(with(r#""scale_attn_by_inverse_layer_idx": true"#)).contains("inverse"));
        assert!(err(GPT2.replace(r#""n_head": 12"#, r#""n_head": 7"#)).contains("divisible"));
        assert!(err(GPT2.replace(r#""n_layer": 12,"#, "")).contains("n_layer"));
    }
}
