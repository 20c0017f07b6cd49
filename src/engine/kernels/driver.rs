//! The driver: one product's panels shared out between the threads of the team.

use std::ops::Range;

use super::Kernel;
use crate::engine::claim::Pair;
use crate::engine::packed::PackedMatrix;
use crate::engine::paths::reached;
use crate::engine::team::team;

/// Runs `kernel` over all of W's panels on the team's threads (`team.rs`). The panels are cut
/// into one slab per thread, which each thread streams from its front, so that the next panels
/// it prefetches are the ones it takes next; a thread done with its own takes runs of panels
/// from the back of the others', so that one the machine slowed down (two cores, shared) is not
/// waited for. (Taking runs from one shared queue instead measured ~12% slower for the decode
/// step: each thread's reads then jump instead of streaming.) Allocates nothing.
///
/// Safety: x holds `x.rows` rows of W's K floats; y has room for those rows of W's N floats.
pub(super) unsafe fn share_out(kernel: Kernel, x: Rows, w: &PackedMatrix, y: Out) {
    let team = team();
    let parts = team.size();
    let panels = w.panels();
    let per_part = panels.div_ceil(parts).max(1);
    let run = (per_part / 8).max(4); // panels taken at a time
    thread_local! {
        // Kept from one product to the next: the decode step allocates nothing here.
        static SLABS: std::cell::RefCell<Vec<Slab>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SLABS.with_borrow_mut(|slabs| {
        slabs.resize_with(parts, || Slab::new(0, 0));
        for (p, slab) in slabs.iter().enumerate() {
            slab.reset((p * per_part).min(panels), ((p + 1) * per_part).min(panels));
        }
        // Safety (every call of `kernel`): x and y as the caller promised; every run of panels
        // is taken from its slab once, by one thread, so the threads write disjoint columns of
        // y.
        team.run(&|part| {
            while let Some(run) = slabs[part].take_front(run) {
                // Safety: as above; this run was taken by this thread alone.
                unsafe { kernel(x, w, run, y) };
            }
            for other in (1..parts).map(|i| (part + i) % parts) {
                while let Some(run) = slabs[other].take_back(run / 4 + 1) {
                    reached!(PanelsTakenFromAnother);
                    // Safety: as above; this run was taken by this thread alone.
                    unsafe { kernel(x, w, run, y) };
                }
            }
        });
    });
}

/// The rows of x a kernel reads: `rows` rows of K floats, `stride` floats apart.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) at: *const f32,
    pub(super) stride: usize,
    pub(super) rows: usize,
}

/// Where a kernel writes y: row t at `at + t·stride`, N floats; each the sum plus `bias` (N
/// floats) unless that is null. Adding the bias as the sum is stored is the same float32
/// addition as adding it afterwards, without another pass over y.
#[derive(Clone, Copy)]
pub(super) struct Out {
    pub(super) at: *mut f32,
    pub(super) stride: usize,
    pub(super) bias: *const f32,
}

pub(super) fn bias_of(bias: Option<&[f32]>, w: &PackedMatrix) -> *const f32 {
    bias.map_or(std::ptr::null(), |b| {
        assert_eq!(b.len(), w.n(), "the bias has N elements");
        b.as_ptr()
    })
}

// Safety: shared with the threads of one product only, which read x and write disjoint columns
// of y while the caller's borrows of both are held.
unsafe impl Send for Rows {}
// Safety: as Send: the threads only read x.
unsafe impl Sync for Rows {}
// Safety: as for Rows: each thread writes its own columns of y.
unsafe impl Send for Out {}
// Safety: as Send.
unsafe impl Sync for Out {}

/// The panels front..back of a slab not yet taken, in one word so that the owner taking from
/// the front and a helper taking from the back never both take a panel.
struct Slab(Pair);

impl Slab {
    fn new(first: usize, last: usize) -> Slab {
        Slab(Pair::new(first as u32, last as u32))
    }

    fn reset(&self, first: usize, last: usize) {
        self.0.store(first as u32, last as u32);
    }

    fn take_front(&self, count: usize) -> Option<Range<usize>> {
        self.0.update(|front, back| {
            let (front, back) = (front as usize, back as usize);
            let end = (front + count).min(back);
            (front < back).then_some((front..end, (end as u32, back as u32)))
        })
    }

    fn take_back(&self, count: usize) -> Option<Range<usize>> {
        self.0.update(|front, back| {
            let (front, back) = (front as usize, back as usize);
            let start = back.saturating_sub(count).max(front);
            (front < back).then_some((start..back, (front as u32, start as u32)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    /// The owner taking from the front and helpers from the back, interleaved in every way a
    /// run of the team could: each panel is taken once, and all are taken. (Whether a helper
    /// takes any in a real product depends on the threads' timing.)
    #[test]
    fn front_and_back_takers_share_a_slab_without_overlap() {
        for (len, front, back) in [(10, 4, 3), (7, 4, 2), (1, 4, 1), (33, 5, 2), (0, 4, 1)] {
            for back_first in [false, true] {
                let slab = Slab::new(3, 3 + len);
                let mut taken = Vec::new();
                let mut turn = back_first;
                loop {
                    let run = if turn { slab.take_back(back) } else { slab.take_front(front) };
                    match run {
                        Some(run) => taken.extend(run),
                        None => break,
                    }
                    turn = !turn;
                }
                taken.sort_unstable();
                assert_eq!(taken, (3..3 + len).collect::<Vec<_>>(), "{len} {front} {back} {back_first}");
            }
        }
    }
}
