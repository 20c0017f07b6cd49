//! The key/value cache, owned outside the weights (as in candle's llama.rs) so that validation,
//! generation and serving share it. Preallocated once; each step writes its rows in place at the
//! current position and never rebuilds what is already there. It also carries the sequence's
//! activation buffers (`scratch.rs`), so that a decode step allocates nothing.

use anyhow::{Result, ensure};
use ndarray::{Array3, ArrayView3, Axis, s};

use super::config::Config;
use super::scratch::Scratch;

/// K and V of one layer, positions 0..len filled. K is held transposed, [n_head, head_dim,
/// capacity rounded up to `KEY_BLOCK`] (key s of head h is column s), so that attention's scores
/// are computed a block of keys at a time, each key's dot product summed over the head's
/// dimensions in order, vectorised across the keys; V as HF has it, [n_head, capacity,
/// head_dim].
#[derive(Clone)]
pub struct LayerCache {
    k_t: Array3<f32>,
    v: Array3<f32>,
}

/// Keys whose scores attention computes together (`attention.rs`): K's rows are padded to a
/// multiple of it, so a block never runs past them.
pub const KEY_BLOCK: usize = 64;

#[derive(Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    capacity: usize,
    /// The sequence's activation buffers, reused by every pass (`scratch.rs`).
    scratch: Scratch,
}

impl KvCache {
    /// A cache for `capacity` positions (at most the model's context, n_positions).
    pub fn new(config: &Config, capacity: usize) -> Result<KvCache> {
        ensure!(
            capacity <= config.n_positions,
            "{capacity} positions do not fit the model's context of {} tokens",
            config.n_positions
        );
        let (nh, hd) = (config.n_head, config.head_dim());
        let padded = capacity.div_ceil(KEY_BLOCK) * KEY_BLOCK;
        let layers = (0..config.n_layer)
            .map(|_| LayerCache {
                k_t: Array3::zeros((nh, hd, padded)),
                v: Array3::zeros((nh, capacity, hd)),
            })
            .collect();
        Ok(KvCache { layers, len: 0, capacity, scratch: Scratch::for_decoding(config, capacity) })
    }

    /// The buffers, for the length of a pass (the pass also needs the cache itself).
    pub(super) fn take_scratch(&mut self) -> Scratch {
        std::mem::take(&mut self.scratch)
    }

    pub(super) fn put_scratch(&mut self, scratch: Scratch) {
        self.scratch = scratch;
    }

    /// The last position's logits [V] of the last complete pass.
    pub fn logits(&self) -> &[f32] {
        &self.scratch.logits
    }

    /// Positions already cached: the position of the next token.
    pub fn seq_len(&self) -> usize {
        self.len
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The cached keys of `layer`, [n_head, len, head_dim] (a view of the transposed storage).
    pub fn keys(&self, layer: usize) -> ArrayView3<'_, f32> {
        self.layers[layer].k_t.slice(s![.., .., ..self.len]).permuted_axes([0, 2, 1])
    }

    /// The cached values of `layer`, [n_head, len, head_dim].
    pub fn values(&self, layer: usize) -> ArrayView3<'_, f32> {
        self.layers[layer].v.slice(s![.., ..self.len, ..])
    }

    /// Writes the new keys and values, [n_head, T, head_dim] each, at positions len..len+T of
    /// `layer` and returns the layer's keys transposed with their padding, [n_head, head_dim,
    /// capacity rounded up to `KEY_BLOCK`] (columns 0..len+T filled), and its values for
    /// positions 0..len+T, [n_head, len+T, head_dim].
    pub fn append(
        &mut self,
        layer: usize,
        k_new: ArrayView3<'_, f32>,
        v_new: ArrayView3<'_, f32>,
    ) -> (ArrayView3<'_, f32>, ArrayView3<'_, f32>) {
        let end = self.len + k_new.len_of(Axis(1));
        self.overwrite(layer, self.len, k_new, v_new);
        let cache = &self.layers[layer];
        (cache.k_t.view(), cache.v.slice(s![.., ..end, ..]))
    }

    /// Writes keys and values, [n_head, T, head_dim] each, at positions at..at+T of `layer`,
    /// whatever is there: `append` at the cache's length, or a tool that edits a cache.
    pub fn overwrite(
        &mut self,
        layer: usize,
        at: usize,
        k_new: ArrayView3<'_, f32>,
        v_new: ArrayView3<'_, f32>,
    ) {
        assert!(at + k_new.len_of(Axis(1)) <= self.capacity, "KV cache overflow: checked by the caller");
        let cache = &mut self.layers[layer];
        // Plain loops over rows: ndarray's assign between differently strided views goes
        // element by element through its general iterator, several times slower for a prompt.
        let padded = cache.k_t.len_of(Axis(2));
        for (mut k_t, k_new) in cache.k_t.outer_iter_mut().zip(k_new.outer_iter()) {
            let k_t = k_t.as_slice_mut().expect("the cache is contiguous"); // [hd, padded]
            for (d, column) in k_new.columns().into_iter().enumerate() {
                let row = &mut k_t[d * padded + at..][..column.len()];
                row.iter_mut().zip(column).for_each(|(to, &value)| *to = value);
            }
        }
        for (mut v, v_new) in cache.v.outer_iter_mut().zip(v_new.outer_iter()) {
            for (mut row, value) in v.rows_mut().into_iter().skip(at).zip(v_new.rows()) {
                row.assign(&value);
            }
        }
    }

    /// Marks `n` more positions as cached, once every layer has written them.
    pub fn advance(&mut self, n: usize) {
        assert!(self.len + n <= self.capacity, "KV cache overflow: checked by the caller");
        self.len += n;
    }
}
