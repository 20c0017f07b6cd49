//! The body of `POST /execute`, checked field by field: a bad request is answered with the
//! name of the field at fault and why, never with a panic or a bare "invalid".

use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::Config;
use crate::engine::generate::fits_context;
use crate::engine::sampling::Sampling;
use crate::engine::tokenizer::Gpt2Tokenizer;

/// Bodies larger than this are refused before they are parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The fields `/execute` takes; any other is refused, so a typo (`max_token`) is an error
/// instead of a default silently used.
const FIELDS: [&str; 7] = ["prompt", "token_ids", "max_tokens", "temperature", "top_k", "top_p", "seed"];

/// Defaults, as `llorch generate` has them.
const DEFAULT_MAX_TOKENS: usize = 50;
const DEFAULT_TEMPERATURE: f32 = 1.0;

/// A checked request: everything the worker needs to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct Execute {
    pub prompt_ids: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
}

/// Why a request was refused (400): the field at fault ("body" for the body as a whole).
#[derive(Debug, PartialEq, Serialize)]
pub struct BadRequest {
    pub field: String,
    pub error: String,
}

impl BadRequest {
    pub fn new(field: &str, error: impl Into<String>) -> BadRequest {
        BadRequest { field: field.to_string(), error: error.into() }
    }
}

/// Parses and checks a body against the model it will run on.
pub fn parse(body: &[u8], config: &Config, tokenizer: Option<&Gpt2Tokenizer>) -> Result<Execute, BadRequest> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest::new("body", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(BadRequest::new("body", "the body must be a JSON object"));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(BadRequest::new(unknown, format!("unknown field; the fields are {}", FIELDS.join(", "))));
    }

    let prompt_ids = prompt_ids(&fields, config, tokenizer)?;
    let context = config.n_positions;
    if prompt_ids.len() >= context {
        let field = if fields.contains_key("prompt") { "prompt" } else { "token_ids" };
        return Err(BadRequest::new(
            field,
            format!("the prompt is {} tokens; the model's context is {context}", prompt_ids.len()),
        ));
    }
    let max_tokens = match fields.get("max_tokens") {
        None => DEFAULT_MAX_TOKENS.min(context - prompt_ids.len()),
        Some(v) => {
            let n = unsigned(v, "max_tokens")?;
            if n == 0 {
                return Err(BadRequest::new("max_tokens", "must be at least 1"));
            }
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            fits_context(prompt_ids.len(), n, context).map_err(|e| BadRequest::new("max_tokens", e))?;
            n
        }
    };

    let temperature = match fields.get("temperature") {
        None => DEFAULT_TEMPERATURE,
        Some(v) => number(v, "temperature")?,
    };
    let top_k = match fields.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(usize::try_from(unsigned(v, "top_k")?).unwrap_or(usize::MAX)),
    };
    let top_p = match fields.get("top_p") {
        None | Some(Value::Null) => None,
        Some(v) => Some(number(v, "top_p")?),
    };
    let seed = match fields.get("seed") {
        None => 0,
        Some(v) => unsigned(v, "seed")?,
    };
    let sampling =
        Sampling::new(temperature, top_k, top_p).map_err(|e| BadRequest::new(e.setting, e.problem))?;
    Ok(Execute { prompt_ids, max_tokens, sampling, seed })
}

/// The prompt as token ids: `prompt` (text, through the model's tokenizer) or `token_ids`.
fn prompt_ids(
    fields: &Map<String, Value>,
    config: &Config,
    tokenizer: Option<&Gpt2Tokenizer>,
) -> Result<Vec<u32>, BadRequest> {
    let ids = match (fields.get("prompt"), fields.get("token_ids")) {
        (Some(_), Some(_)) => return Err(BadRequest::new("token_ids", "give prompt or token_ids, not both")),
        (None, None) => return Err(BadRequest::new("prompt", "missing: give prompt (text) or token_ids")),
        (Some(Value::String(text)), None) => {
            let tokenizer = tokenizer.ok_or_else(|| {
                BadRequest::new("prompt", "this model has no tokenizer: give token_ids instead")
            })?;
            tokenizer
                .encode(text)
                .map_err(|e| BadRequest::new("prompt", format!("cannot be tokenized: {e}")))?
        }
        (Some(_), None) => return Err(BadRequest::new("prompt", "must be a string")),
        (None, Some(Value::Array(items))) => items
            .iter()
            .map(|item| match item.as_u64() {
                Some(id) if id < config.vocab_size as u64 => Ok(id as u32),
                _ => Err(BadRequest::new(
                    "token_ids",
                    format!("{item} is not a token id of this model (0 to {})", config.vocab_size - 1),
                )),
            })
            .collect::<Result<_, _>>()?,
        (None, Some(_)) => return Err(BadRequest::new("token_ids", "must be an array of token ids")),
    };
    if ids.is_empty() {
        let field = if fields.contains_key("prompt") { "prompt" } else { "token_ids" };
        return Err(BadRequest::new(field, "is empty: there is nothing to continue"));
    }
    Ok(ids)
}

fn unsigned(value: &Value, field: &str) -> Result<u64, BadRequest> {
    value.as_u64().ok_or_else(|| BadRequest::new(field, format!("must be a whole number ≥ 0, not {value}")))
}

fn number(value: &Value, field: &str) -> Result<f32, BadRequest> {
    value
        .as_f64()
        .map(|v| v as f32)
        .ok_or_else(|| BadRequest::new(field, format!("must be a number, not {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_json(
            r#"{"n_layer": 2, "n_head": 2, "n_embd": 8, "n_positions": 16, "vocab_size": 100,
                "layer_norm_epsilon": 1e-05}"#,
        )
        .unwrap()
    }

    fn field_of(body: &str) -> String {
        parse(body.as_bytes(), &config(), None).unwrap_err().field
    }

    #[test]
    fn a_minimal_request_takes_generate_s_defaults() {
        let got = parse(br#"{"token_ids": [1, 2]}"#, &config(), None).unwrap();
        let sampling = Sampling::new(1.0, None, None).unwrap();
        assert_eq!(got, Execute { prompt_ids: vec![1, 2], max_tokens: 14, sampling, seed: 0 });
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of("[1]"), "body");
        assert_eq!(field_of(r#"{"token_ids": [1], "max_token": 3}"#), "max_token");
        assert_eq!(field_of(r#"{"max_tokens": 3}"#), "prompt");
        assert_eq!(field_of(r#"{"prompt": "hi", "token_ids": [1]}"#), "token_ids");
        assert_eq!(field_of(r#"{"prompt": "hi"}"#), "prompt"); // no tokenizer
        assert_eq!(field_of(r#"{"prompt": 3}"#), "prompt");
        assert_eq!(field_of(r#"{"token_ids": []}"#), "token_ids");
        assert_eq!(field_of(r#"{"token_ids": [100]}"#), "token_ids");
        assert_eq!(field_of(r#"{"token_ids": [-1]}"#), "token_ids");
        assert_eq!(field_of(r#"{"token_ids": "1,2"}"#), "token_ids");
        assert_eq!(field_of(r#"{"token_ids": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}"#), "token_ids");
        assert_eq!(field_of(r#"{"token_ids": [1], "max_tokens": 0}"#), "max_tokens");
        assert_eq!(field_of(r#"{"token_ids": [1], "max_tokens": 16}"#), "max_tokens");
        assert_eq!(field_of(r#"{"token_ids": [1], "max_tokens": 2.5}"#), "max_tokens");
        assert_eq!(field_of(r#"{"token_ids": [1], "temperature": -1}"#), "temperature");
        assert_eq!(field_of(r#"{"token_ids": [1], "temperature": "hot"}"#), "temperature");
        assert_eq!(field_of(r#"{"token_ids": [1], "top_k": 0}"#), "top_k");
        assert_eq!(field_of(r#"{"token_ids": [1], "top_p": 1.5}"#), "top_p");
        assert_eq!(field_of(r#"{"token_ids": [1], "top_p": 0}"#), "top_p");
        assert_eq!(field_of(r#"{"token_ids": [1], "seed": -3}"#), "seed");
    }

    #[test]
    fn the_prompt_may_fill_the_context_with_the_new_tokens() {
        let got = parse(
            br#"{"token_ids": [1], "max_tokens": 15, "top_k": 3, "top_p": 0.9, "seed": 7}"#,
            &config(),
            None,
        );
        assert_eq!(got.unwrap().max_tokens, 15);
    }
}
