//! The activations of a forward pass, in buffers a sequence keeps from one pass to the next (as
//! llm.c keeps its activation tensors): a decode step writes into the same memory every token
//! and allocates nothing. Every buffer is overwritten whole before it is read.

use ndarray::{ArrayViewMut2, ArrayViewMut3};

use super::config::Config;

#[derive(Clone, Default)]
pub struct Scratch {
    pub x: Vec<f32>,      // [T, C] the residual stream
    pub logits: Vec<f32>, // [V] the last position's logits
    pub layer: LayerScratch,
}

/// What one block needs besides the residual stream.
#[derive(Clone, Default)]
pub struct LayerScratch {
    pub h: Vec<f32>, // [T, C] a LayerNorm's output
    pub attn: AttnScratch,
    pub attn_out: Vec<f32>, // [T, C]
    pub fc: Vec<f32>,       // [T, 4C] c_fc's output, then GELU's
    pub mlp_out: Vec<f32>,  // [T, C]
}

#[derive(Clone, Default)]
pub struct AttnScratch {
    pub qkv: Vec<f32>,     // [T, 3C] c_attn's output
    pub scores: Vec<f32>,  // [nh, T, S] scores, then probabilities
    pub context: Vec<f32>, // [nh, T, hd] each head's weighted values
    pub merged: Vec<f32>,  // [T, C] the heads' outputs side by side
}

impl Scratch {
    /// Buffers sized for decode steps up to `capacity` positions, so that no step grows one. A
    /// prompt of several tokens grows them once.
    pub fn for_decoding(config: &Config, capacity: usize) -> Scratch {
        let (c, nh) = (config.n_embd, config.n_head);
        Scratch {
            x: vec![0.0; c],
            logits: vec![0.0; config.vocab_size],
            layer: LayerScratch {
                h: vec![0.0; c],
                attn: AttnScratch {
                    qkv: vec![0.0; 3 * c],
                    scores: vec![0.0; nh * capacity],
                    context: vec![0.0; c],
                    merged: vec![0.0; c],
                },
                attn_out: vec![0.0; c],
                fc: vec![0.0; config.n_inner],
                mlp_out: vec![0.0; c],
            },
        }
    }
}

/// The first `len` values of `buffer`, grown to that if it is shorter.
pub fn take(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

pub fn view2(buffer: &mut Vec<f32>, shape: (usize, usize)) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape(shape, take(buffer, shape.0 * shape.1)).expect("the length is the shape's")
}

pub fn view3(buffer: &mut Vec<f32>, shape: (usize, usize, usize)) -> ArrayViewMut3<'_, f32> {
    ArrayViewMut3::from_shape(shape, take(buffer, shape.0 * shape.1 * shape.2))
        .expect("the length is the shape's")
}

/// A scratch view's elements, in order (the views above are contiguous by construction).
pub fn contiguous<'a, D: ndarray::Dimension>(
    view: &'a mut ndarray::ArrayViewMut<'_, f32, D>,
) -> &'a mut [f32] {
    view.as_slice_mut().expect("a scratch view is contiguous")
}
