//! One transformer block: x + attn(ln_1(x)), then + mlp(ln_2(·)).

use anyhow::Result;
use ndarray::Array2;

use super::attention::Attention;
use super::config::Config;
use super::kv_cache::KvCache;
use super::layer_norm::LayerNorm;
use super::mlp::Mlp;
use super::weights::Weights;
use crate::checkpoint::Checkpoint;
use crate::plant::{self, Variant};
use crate::tape::{Site, Tape, stage};

pub struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
    layer: usize,
}

impl Block {
    pub fn load(weights: &Weights, layer: usize, config: &Config) -> Result<Block> {
        let p = format!("h.{layer}");
        let (c, eps) = (config.n_embd, config.layer_norm_epsilon);
        Ok(Block {
            ln_1: LayerNorm::load(weights, &format!("{p}.ln_1"), c, eps)?,
            attn: Attention::load(weights, &format!("{p}.attn"), config)?,
            ln_2: LayerNorm::load(weights, &format!("{p}.ln_2"), c, eps)?,
            mlp: Mlp::load(weights, &format!("{p}.mlp"), config)?,
            layer,
        })
    }

    /// x [T, C] -> [T, C], the residual stream after this block.
    pub fn forward(
        &self,
        mut x: Array2<f32>,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Array2<f32>> {
        let l = Some(self.layer);
        let mut h = self.ln_1.forward(x.view()); // [T, C]
        stage(tape, Site::new(Checkpoint::LayerNorm, l, "ln_1"), h.view_mut())?;
        x += &self.attn.forward(h.view(), self.layer, cache, tape)?; // [T, C]
        let mut h = self.ln_2.forward(x.view()); // [T, C]
        stage(tape, Site::new(Checkpoint::Ffn, l, "ln_2"), h.view_mut())?;
        let mlp_out = self.mlp.forward(h.view(), self.layer, tape)?; // [T, C]
        if plant::active(Variant::ResidualDropped) {
            // A test build's planted bug: the block's output is the MLP's, without the residual.
            x = mlp_out;
        } else {
            x += &mlp_out;
        }
        stage(tape, Site::new(Checkpoint::BlockOutput, l, "block_out"), x.view_mut())?;
        Ok(x)
    }
}
