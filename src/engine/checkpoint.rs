//! The checkpoints of the forward pass: where the pass exposes its intermediate tensors, by
//! identity only. What a checkpoint's tensors are checked against, and how closely, is
//! validation's business (`validation::spec`); the engine only names the places.

use std::fmt;

use anyhow::{Result, bail};

/// One checkpoint of the forward pass, in forward order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checkpoint {
    Embeddings = 0,
    LayerNorm = 1,
    Qkv = 2,
    KvCache = 3,
    AttnScores = 4,
    AttnOutput = 5,
    Ffn = 6,
    BlockOutput = 7,
    Logits = 8,
    SelectedLogits = 9,
    Argmax = 10,
    Probabilities = 11,
    Generation = 12,
}

impl Checkpoint {
    pub const ALL: [Checkpoint; 13] = [
        Checkpoint::Embeddings,
        Checkpoint::LayerNorm,
        Checkpoint::Qkv,
        Checkpoint::KvCache,
        Checkpoint::AttnScores,
        Checkpoint::AttnOutput,
        Checkpoint::Ffn,
        Checkpoint::BlockOutput,
        Checkpoint::Logits,
        Checkpoint::SelectedLogits,
        Checkpoint::Argmax,
        Checkpoint::Probabilities,
        Checkpoint::Generation,
    ];

    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn from_index(index: u64) -> Result<Checkpoint> {
        match Checkpoint::ALL.get(index as usize) {
            Some(&cp) => Ok(cp),
            None => bail!("checkpoint {index} does not exist: checkpoints are numbered 0 to 12"),
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Checkpoint::Embeddings => "embeddings",
            Checkpoint::LayerNorm => "layer norm",
            Checkpoint::Qkv => "Q/K/V",
            Checkpoint::KvCache => "KV cache",
            Checkpoint::AttnScores => "attention scores",
            Checkpoint::AttnOutput => "attention output",
            Checkpoint::Ffn => "FFN",
            Checkpoint::BlockOutput => "block output",
            Checkpoint::Logits => "full logits",
            Checkpoint::SelectedLogits => "selected logits",
            Checkpoint::Argmax => "argmax",
            Checkpoint::Probabilities => "softmax probabilities",
            Checkpoint::Generation => "end-to-end generation",
        }
    }

    /// Checkpoints 1–7 exist once per transformer block; the others once per pass.
    pub fn per_layer(self) -> bool {
        (1..=7).contains(&self.index())
    }

    /// Whether a decode step (one token through the KV cache) has this checkpoint: 0–9, the
    /// tensors of a forward pass. 10–12 are what is done with a pass's logits.
    pub fn on_decode_step(self) -> bool {
        self.index() <= 9
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.index())
    }
}

#[cfg(test)]
mod tests {
    use super::Checkpoint;

    #[test]
    fn indices_round_trip() {
        for (i, cp) in Checkpoint::ALL.iter().enumerate() {
            assert_eq!(cp.index() as usize, i);
            assert_eq!(Checkpoint::from_index(i as u64).unwrap(), *cp);
        }
        assert!(Checkpoint::from_index(13).is_err());
    }
}
