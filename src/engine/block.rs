//! One transformer block: x + attn(ln_1(x)), then + mlp(ln_2(·)).

use anyhow::Result;
use ndarray::ArrayViewMut2;

use super::attention::Attention;
use super::checkpoint::Checkpoint;
use super::config::Config;
use super::kv_cache::KvCache;
use super::layer_norm::LayerNorm;
use super::mlp::Mlp;
use super::scratch::{LayerScratch, view2};
use super::tape::{Site, Tape, stage};
use super::weights::Weights;

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

    /// x [T, C], the residual stream, becomes the stream after this block, in place.
    pub fn forward(
        &self,
        x: &mut ArrayViewMut2<'_, f32>,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
        s: &mut LayerScratch,
    ) -> Result<()> {
        let l = Some(self.layer);
        let shape = x.dim(); // (T, C)
        let mut h = view2(&mut s.h, shape); // [T, C]
        self.ln_1.forward(x.view(), h.view_mut());
        stage(tape, Site::new(Checkpoint::LayerNorm, l, "ln_1"), h.view_mut())?;
        let mut attn_out = view2(&mut s.attn_out, shape); // [T, C]
        self.attn.forward(h.view(), self.layer, cache, tape, &mut s.attn, attn_out.view_mut())?;
        *x += &attn_out;
        self.ln_2.forward(x.view(), h.view_mut());
        stage(tape, Site::new(Checkpoint::Ffn, l, "ln_2"), h.view_mut())?;
        let mut mlp_out = view2(&mut s.mlp_out, shape); // [T, C]
        self.mlp.forward(h.view(), self.layer, tape, &mut s.fc, mlp_out.view_mut())?;
        *x += &mlp_out;
        stage(tape, Site::new(Checkpoint::BlockOutput, l, "block_out"), x.view_mut())
    }
}
