//! The GPT-2 byte-level BPE tokenizer of a model directory (the `tokenizers` crate), and the
//! `--tokens 15496,13` escape hatch for models that come without one.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecodeStream, Tokenizer};

pub struct Gpt2Tokenizer {
    inner: Tokenizer,
}

impl Gpt2Tokenizer {
    /// Finds the tokenizer of an HF model directory: `tokenizer.json` if present, else the
    /// `vocab.json` + `merges.txt` pair that the published GPT-2 checkpoints also carry.
    /// `Ok(None)` when the directory has neither.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Gpt2Tokenizer>> {
        let json = dir.join("tokenizer.json");
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if json.is_file() {
            let inner = Tokenizer::from_file(&json)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("reading tokenizer {}", json.display()))?;
            Ok(Some(Gpt2Tokenizer { inner }))
        } else if vocab.is_file() && merges.is_file() {
            Ok(Some(Gpt2Tokenizer::from_vocab_and_merges(&vocab, &merges)?))
        } else {
            Ok(None)
        }
    }

    /// The classic GPT-2 set-up: byte-level pre-tokenizer without a prefix space, byte-level
    /// decoder, and `<|endoftext|>` as a special token.
    pub fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> Result<Gpt2Tokenizer> {
        let (v, m) = (path_str(vocab)?, path_str(merges)?);
        let bpe = BPE::from_file(v, m).build().map_err(|e| anyhow!("{e}")).with_context(|| {
            format!("reading tokenizer files {} and {}", vocab.display(), merges.display())
        })?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
        Ok(Gpt2Tokenizer { inner })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(|e| anyhow!("tokenizing the prompt: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| anyhow!("decoding token ids: {e}"))
    }

    /// The text of new tokens as they arrive after `prompt`: primed with the prompt, so that
    /// the first new token joins it as it would in the whole text.
    pub fn stream_after(&self, prompt: &[u32]) -> Result<TextStream<'_>> {
        let mut stream = TextStream { inner: self.inner.decode_stream(false) };
        for &id in prompt {
            stream.next(id)?;
        }
        Ok(stream)
    }
}

/// Turns token ids into text as they arrive, holding back incomplete UTF-8.
pub struct TextStream<'t> {
    inner: DecodeStream<
        't,
        tokenizers::ModelWrapper,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    >,
}

impl TextStream<'_> {
    /// The text `id` adds: empty while it ends inside a character that later ids complete.
    pub fn next(&mut self, id: u32) -> Result<String> {
        let piece = self.inner.step(id).map_err(|e| anyhow!("decoding: {e}"))?;
        Ok(piece.unwrap_or_default())
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().with_context(|| format!("path {} is not valid UTF-8", path.display()))
}

/// Parses `--tokens 15496,13` (commas and/or spaces) into token ids.
pub fn parse_token_ids(spec: &str) -> Result<Vec<u32>> {
    let ids = spec
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| anyhow!("{s:?} in --tokens is not a token id")))
        .collect::<Result<Vec<u32>>>()?;
    if ids.is_empty() {
        bail!("--tokens holds no token ids");
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_id_lists_parse() {
        assert_eq!(parse_token_ids("15496,13").unwrap(), vec![15496, 13]);
        assert_eq!(parse_token_ids(" 1, 2 3 ").unwrap(), vec![1, 2, 3]);
        assert!(parse_token_ids("").is_err());
        assert!(parse_token_ids("1,-2").is_err());
        assert!(parse_token_ids("hello").is_err());
    }
}
