//! The recording side of the forward pass. The pass calls `tape.record(site, tensor)` at every
//! checkpoint hook; what happens to the tensor (compared, stored, ignored) is the tape's business.
//! At a stage's output the tape may also hand back the tensor the pass continues with (isolated
//! validation feeds every stage the reference's own input this way): one forward pass serves
//! generation, chained and isolated validation. The model never learns about references, and
//! generation pays one branch per hook.

use anyhow::Result;
use ndarray::{Array2, ArrayD, ArrayViewD, ArrayViewMut, Dimension};

use super::checkpoint::Checkpoint;

/// A hook point of the forward pass: checkpoint, transformer layer (for checkpoints 1–7) and the
/// tensor's manifest name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Site {
    pub checkpoint: Checkpoint,
    pub layer: Option<usize>,
    pub name: &'static str,
}

impl Site {
    pub fn new(checkpoint: Checkpoint, layer: Option<usize>, name: &'static str) -> Site {
        Site { checkpoint, layer, name }
    }
}

pub trait Tape {
    /// Whether `record` would use a tensor of this checkpoint and layer. The pass skips the work
    /// of building tensors (such as the full [T, vocab] logits) that nobody wants.
    fn wants(&self, checkpoint: Checkpoint, layer: Option<usize>) -> bool;

    /// Receives one checkpoint tensor. Only called when `wants` said yes.
    fn record(&mut self, site: Site, tensor: ArrayViewD<'_, f32>) -> Result<()>;

    /// Receives a checkpoint tensor the pass has no further use for (the full [T, vocab]
    /// logits): a tape that keeps it takes it instead of copying. Only called when `wants` said
    /// yes.
    fn record_owned(&mut self, site: Site, tensor: ArrayD<f32>) -> Result<()> {
        self.record(site, tensor.view())
    }

    /// True once everything the tape wants has been recorded: the pass may stop early.
    fn is_complete(&self) -> bool {
        false
    }

    /// The tensor the pass continues with in place of the one it just computed at `site`, or
    /// None to continue with its own. Asked at every stage output, recorded or not.
    fn replacement(&mut self, _site: Site) -> Result<Option<ArrayD<f32>>> {
        Ok(None)
    }
}

/// The tape of generation: wants nothing, so the hooks cost one branch each.
pub struct NoTape;

impl Tape for NoTape {
    fn wants(&self, _: Checkpoint, _: Option<usize>) -> bool {
        false
    }

    fn record(&mut self, _: Site, _: ArrayViewD<'_, f32>) -> Result<()> {
        Ok(())
    }
}

/// The tape of a pass whose every position's logits [T, V] are wanted (checkpoint 8's
/// `logits`, not `ln_f`, which shares the checkpoint): the prompt's for `llorch bench`, a
/// chunk's for validation's split invariants, a window's for its corpus run. Holds them once
/// the pass has run.
#[derive(Default)]
pub struct LogitsTape(pub Option<Array2<f32>>);

impl Tape for LogitsTape {
    fn wants(&self, checkpoint: Checkpoint, _: Option<usize>) -> bool {
        checkpoint == Checkpoint::Logits
    }

    /// The engine hands its logits over owned; a runner may lend them (ln_f, which shares the
    /// checkpoint, is not kept).
    fn record(&mut self, site: Site, tensor: ArrayViewD<'_, f32>) -> Result<()> {
        if site.name == "logits" {
            self.0 = Some(tensor.to_owned().into_dimensionality()?);
        }
        Ok(())
    }

    fn record_owned(&mut self, site: Site, tensor: ArrayD<f32>) -> Result<()> {
        if site.name == "logits" {
            self.0 = Some(tensor.into_dimensionality()?);
        }
        Ok(())
    }
}

/// Records a tensor the pass already has (a view costs nothing to build) if the tape wants it.
pub fn hook<D: Dimension>(
    tape: &mut dyn Tape,
    site: Site,
    tensor: ndarray::ArrayView<'_, f32, D>,
) -> Result<()> {
    if tape.wants(site.checkpoint, site.layer) {
        tape.record(site, tensor.into_dyn())?;
    }
    Ok(())
}

/// A stage's output: recorded like `hook`, then replaced in place by the tape's replacement if it
/// has one of the same shape. A replacement of another shape is ignored: the comparison of the
/// recorded tensor has already failed on the shape, and the pass goes on with its own.
pub fn stage<D: Dimension>(
    tape: &mut dyn Tape,
    site: Site,
    mut tensor: ArrayViewMut<'_, f32, D>,
) -> Result<()> {
    hook(tape, site, tensor.view())?;
    if let Some(replacement) = tape.replacement(site)?
        && replacement.shape() == tensor.shape()
    {
        tensor.assign(&replacement.into_dimensionality::<D>().expect("same shape, same rank"));
    }
    Ok(())
}
