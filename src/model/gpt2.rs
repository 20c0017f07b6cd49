//! The whole model: embeddings, the blocks, ln_f and the lm_head tied to wte. One forward pass
//! serves validation and generation; checkpoints are recorded on the tape as it goes.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use ndarray::{Array1, Array2, Axis, s};

use super::block::Block;
use super::config::Config;
use super::kv_cache::KvCache;
use super::layer_norm::LayerNorm;
use super::linear::{matmul, matmul_by_rows};
use super::weights::{Param, Weights};
use crate::checkpoint::Checkpoint;
use crate::plant::{self, Variant};
use crate::tape::{NoTape, Site, Tape, hook, stage};

pub struct Gpt2 {
    pub config: Config,
    wte: Param, // [V, C], also the lm_head (tied)
    wpe: Param, // [n_positions, C]
    h: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt2 {
    /// Loads `config.json` and `model.safetensors` from an HF model directory.
    pub fn load_dir(dir: &Path) -> Result<Gpt2> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let weights = Weights::open(&dir.join("model.safetensors"))?;
        Gpt2::load(&weights, config)
    }

    pub fn load(weights: &Weights, config: Config) -> Result<Gpt2> {
        let c = config.n_embd;
        Ok(Gpt2 {
            wte: weights.get_aligned("wte.weight", [config.vocab_size, c], false)?,
            wpe: weights.get("wpe.weight", &[config.n_positions, c])?,
            h: (0..config.n_layer).map(|l| Block::load(weights, l, &config)).collect::<Result<_>>()?,
            ln_f: LayerNorm::load(weights, "ln_f", c, config.layer_norm_epsilon)?,
            config,
        })
    }

    /// Runs `tokens` at positions cache.len().. and returns the logits of the last position
    /// [V]. `None` when the tape had all it wanted before the end and the pass stopped early.
    pub fn forward_recorded(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Option<Array1<f32>>> {
        let (t, past) = (tokens.len(), cache.len());
        ensure!(t > 0, "no tokens to run");
        ensure!(
            past + t <= cache.capacity(),
            "{} tokens exceed the KV cache of {} positions (model context {})",
            past + t,
            cache.capacity(),
            self.config.n_positions
        );
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            anyhow::bail!("token id {bad} is outside the vocabulary (size {})", self.config.vocab_size);
        }

        // wte[ids] + wpe[positions]
        let (wte, wpe) = (self.wte.view2(), self.wpe.view2());
        let mut x = Array2::<f32>::zeros((t, self.config.n_embd)); // [T, C]
        for (i, (mut row, &id)) in x.rows_mut().into_iter().zip(tokens).enumerate() {
            let position = if plant::active(Variant::DecodePositionsRestart) { i } else { past + i };
            row.assign(&(&wte.row(id as usize) + &wpe.row(position)));
        }
        stage(tape, Site::new(Checkpoint::Embeddings, None, "embeddings"), x.view_mut())?;
        if tape.is_complete() {
            return Ok(None);
        }

        for block in &self.h {
            x = block.forward(x, cache, tape)?; // [T, C]
            if tape.is_complete() {
                return Ok(None);
            }
        }
        cache.advance(t);

        // A test build's planted bug skips ln_f.
        let mut x = if plant::active(Variant::LnFSkipped) { x } else { self.ln_f.forward(x.view()) }; // [T, C]
        stage(tape, Site::new(Checkpoint::Logits, None, "ln_f"), x.view_mut())?;
        if tape.wants(Checkpoint::Logits, None) {
            // Summed row by row as the last-position path below sums its one row, so that
            // checkpoint 9's bitwise invariant holds by construction, not by luck.
            let logits = matmul_by_rows(x.view(), wte.t()); // [T, V]
            tape.record(Site::new(Checkpoint::Logits, None, "logits"), logits.view().into_dyn())?;
        }
        // Only the last position's logits are needed to pick the next token: [1, C]·[C, V].
        let last = matmul(x.slice(s![t - 1..t, ..]), wte.t()).remove_axis(Axis(0)); // [V]
        hook(tape, Site::new(Checkpoint::SelectedLogits, None, "selected_logits"), last.view())?;
        Ok(Some(last))
    }

    /// Every position's logits [T, V], as validation computes them (checkpoint 8).
    pub fn forward_all_logits(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Array2<f32>> {
        struct LogitsTape(Option<Array2<f32>>);
        impl Tape for LogitsTape {
            fn wants(&self, checkpoint: Checkpoint, _: Option<usize>) -> bool {
                checkpoint == Checkpoint::Logits
            }
            fn record(&mut self, site: Site, tensor: ndarray::ArrayViewD<'_, f32>) -> Result<()> {
                if site.name == "logits" {
                    self.0 = Some(tensor.to_owned().into_dimensionality()?);
                }
                Ok(())
            }
        }
        let mut tape = LogitsTape(None);
        self.forward_recorded(tokens, cache, &mut tape)?;
        tape.0.context("the pass recorded no logits")
    }

    /// The plain forward pass of generation: no checkpoints recorded.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Array1<f32>> {
        self.forward_recorded(tokens, cache, &mut NoTape)?
            .context("the pass stopped early although no tape asked it to")
    }
}
