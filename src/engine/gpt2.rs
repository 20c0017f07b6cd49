//! The whole model: embeddings, the blocks, ln_f and the lm_head tied to wte. One forward pass
//! serves validation and generation; checkpoints are recorded on the tape as it goes.

use std::path::Path;

use anyhow::{Result, ensure};
use ndarray::{Array1, Array2, s};

use super::block::Block;
use super::checkpoint::Checkpoint;
use super::config::Config;
use super::format::WeightFormat;
use super::kv_cache::KvCache;
use super::layer_norm::LayerNorm;
use super::linear::matmul;
use super::packed::PackedMatrix;
use super::scratch::{Scratch, view2};
use super::tape::{NoTape, Site, Tape, hook, stage};
use super::weights::{Orientation, Param, Weights};

pub struct Gpt2 {
    pub config: Config,
    /// The token embedding [V, C], held as the tied lm_head's W = wteᵀ [C, V] for the kernels
    /// (an embedding row is a column of it).
    wte: PackedMatrix,
    wpe: Param, // [n_positions, C]
    h: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt2 {
    /// Loads `config.json` and `model.safetensors` from an HF model directory, the matrices in
    /// `format`.
    pub fn load_dir(dir: &Path, format: WeightFormat) -> Result<Gpt2> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let weights = Weights::open(&dir.join("model.safetensors"), format)?;
        Gpt2::load(&weights, config)
    }

    /// The format the matrices are held in.
    pub fn format(&self) -> WeightFormat {
        self.wte.format()
    }

    /// Bytes of the weights as held: the products' matrices in their format, every other
    /// weight (wpe, biases, LayerNorm) float32; the last panels' padding not counted.
    pub fn weight_bytes(&self) -> u64 {
        let (c, inner) = (self.config.n_embd as u64, self.config.n_inner as u64);
        let matrices =
            self.config.vocab_size as u64 * c + self.config.n_layer as u64 * (4 * c * c + 2 * c * inner);
        let format = self.format();
        format.bytes_of(matrices as usize) as u64 + 4 * (self.config.parameter_count() - matrices)
    }

    pub fn load(weights: &Weights, config: Config) -> Result<Gpt2> {
        let c = config.n_embd;
        Ok(Gpt2 {
            wte: weights.get_packed("wte.weight", [config.vocab_size, c], Orientation::Transposed)?,
            wpe: weights.get("wpe.weight", &[config.n_positions, c])?,
            h: (0..config.n_layer).map(|l| Block::load(weights, l, &config)).collect::<Result<_>>()?,
            ln_f: LayerNorm::load(weights, "ln_f", c, config.layer_norm_epsilon)?,
            config,
        })
    }

    /// Runs `tokens` at positions cache.seq_len().. and returns the logits of the last position
    /// [V]. `None` when the tape had all it wanted before the end and the pass stopped early.
    pub fn forward_recorded(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Option<Array1<f32>>> {
        Ok(self.pass(tokens, cache, tape)?.then(|| Array1::from(cache.logits().to_vec())))
    }

    /// The forward pass of `tokens` at positions cache.seq_len()..: the last position's logits are
    /// left in `cache.logits()`. False when the tape had all it wanted before the end and the
    /// pass stopped early. Writes into the cache's buffers: a decode step allocates nothing.
    pub fn pass(&self, tokens: &[u32], cache: &mut KvCache, tape: &mut dyn Tape) -> Result<bool> {
        let (t, past) = (tokens.len(), cache.seq_len());
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
        let mut scratch = cache.take_scratch();
        let complete = self.pass_with(tokens, cache, tape, &mut scratch);
        cache.put_scratch(scratch);
        complete
    }

    fn pass_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        tape: &mut dyn Tape,
        s: &mut Scratch,
    ) -> Result<bool> {
        let (t, past, c) = (tokens.len(), cache.seq_len(), self.config.n_embd);

        // wte[ids] + wpe[positions]
        let wpe = self.wpe.view2();
        let mut x = view2(&mut s.x, (t, c)); // [T, C]
        for (i, (mut row, &id)) in x.rows_mut().into_iter().zip(tokens).enumerate() {
            for (channel, (x, &p)) in row.iter_mut().zip(wpe.row(past + i)).enumerate() {
                *x = self.wte.get(channel, id as usize) + p;
            }
        }
        stage(tape, Site::new(Checkpoint::Embeddings, None, "embeddings"), x.view_mut())?;
        if tape.is_complete() {
            return Ok(false);
        }

        for block in &self.h {
            block.forward(&mut x, cache, tape, &mut s.layer)?; // [T, C]
            if tape.is_complete() {
                return Ok(false);
            }
        }
        cache.advance(t);

        let mut h = view2(&mut s.layer.h, (t, c)); // [T, C]
        self.ln_f.forward(x.view(), h.view_mut());
        stage(tape, Site::new(Checkpoint::Logits, None, "ln_f"), h.view_mut())?;
        if tape.wants(Checkpoint::Logits, None) {
            // Every row summed as the last-position product below sums its one row (the
            // kernels' contract), so checkpoint 9's bitwise invariant holds by construction.
            let mut logits = Array2::<f32>::zeros((t, self.config.vocab_size)); // [T, V]
            matmul(h.view(), &self.wte, None, logits.view_mut());
            tape.record_owned(Site::new(Checkpoint::Logits, None, "logits"), logits.into_dyn())?;
        }
        // Only the last position's logits are needed to pick the next token: [1, C]·[C, V].
        let v = self.config.vocab_size;
        let mut last = view2(&mut s.logits, (1, v)); // [1, V]
        matmul(h.slice(s![t - 1..t, ..]), &self.wte, None, last.view_mut());
        hook(tape, Site::new(Checkpoint::SelectedLogits, None, "selected_logits"), last.row(0))?;
        Ok(true)
    }

    /// The plain forward pass of generation, no checkpoints recorded: the last position's
    /// logits [V], in the cache's buffer.
    pub fn forward<'c>(&self, tokens: &[u32], cache: &'c mut KvCache) -> Result<&'c [f32]> {
        ensure!(
            self.pass(tokens, cache, &mut NoTape)?,
            "the pass stopped early although no tape asked it to"
        );
        Ok(cache.logits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LogitsTape;
    use safetensors::tensor::TensorView;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gpt2")
    }

    /// The engine in a format is the F32 engine on the rounded weights, bit for bit: the model
    /// loaded in each format gives the very logits, at every position, of the F32 model loaded
    /// from a checkpoint of the weights `Weights::as_computed` gives (what references round to).
    #[test]
    fn every_format_is_the_f32_engine_on_its_rounded_weights() {
        let tokens = [15496, 13, 314, 716, 257, 1332, 13, 632, 373];
        let dir = tempfile::tempdir().unwrap();
        for format in WeightFormat::ALL {
            let weights = Weights::open(&fixture().join("model.safetensors"), format).unwrap();
            let rounded: Vec<(String, Vec<usize>, Vec<u8>)> = weights
                .tensors()
                .into_iter()
                .map(|(name, shape)| {
                    let values = weights.as_computed(&name, &shape).unwrap();
                    (name, shape, bytemuck::cast_slice(&values).to_vec())
                })
                .collect();
            let views = rounded.iter().map(|(n, s, b)| {
                (n.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
            });
            let path = dir.path().join(format!("{format}.safetensors"));
            safetensors::serialize_to_file(views, None, &path).unwrap();
            let config = Config::from_file(&fixture().join("config.json")).unwrap();
            let ours = Gpt2::load(&weights, config.clone()).unwrap();
            let plain = Gpt2::load(&Weights::open(&path, WeightFormat::F32).unwrap(), config).unwrap();
            assert_eq!(ours.format(), format);
            let logits = |model: &Gpt2| {
                let mut cache = KvCache::new(&model.config, tokens.len()).unwrap();
                let mut tape = LogitsTape::default();
                model.forward_recorded(&tokens, &mut cache, &mut tape).unwrap();
                tape.0.expect("every position's logits")
            };
            let (a, b) = (logits(&ours), logits(&plain));
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{format}");
            if format != WeightFormat::F32 {
                let f32s = Gpt2::load_dir(&fixture(), WeightFormat::F32).unwrap();
                assert_ne!(a, logits(&f32s), "{format} rounds the weights");
            }
        }
    }
}
