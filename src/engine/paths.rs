//! The engine's remainder paths: the branches of its fast code that only some shapes take (a
//! tile's leftover rows, a last panel of fewer than 16 columns, a second block of keys, ...).
//! A bug there passes every check of a model and prompt that never take them, so the bundled
//! validation must reach each one. In a build with the `path-counters` cargo feature (the test
//! suite's) every path counts the times it was taken, and `llorch validate --path-counts FILE`
//! writes the counts; in every other build `reached!` compiles to nothing.

use std::fmt;

#[cfg(feature = "path-counters")]
pub use counters::{count, counts};

/// A remainder path of the engine's kernels, attention or element-wise loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A product's run of panels has fewer left than the tile's panels: the rest go one at a
    /// time (`tile::panels`).
    PanelRunTail,
    /// A product of many rows runs whole tiles of the kernel set's rows (`tile::rows`).
    WholeRowTiles,
    /// The rows left after the whole tiles, in tiles of 8, 4, 2 and 1 (`tile::rows`).
    RowTail8,
    RowTail4,
    RowTail2,
    RowTail1,
    /// K is not a multiple of the sums' block: the last block is short (`tile::tile`).
    ShortSumBlock,
    /// The last panel of a product has fewer than 16 columns: stored through a line, with the
    /// bias added there, or without one (`tile::tile`).
    PartialPanelBias,
    PartialPanelNoBias,
    /// A thread done with its own slab takes panels from another's (`driver::share_out`). When
    /// it happens depends on the machine's timing: counted, never required.
    PanelsTakenFromAnother,
    /// A query sees more than one block of keys (`attention::query_key`).
    LaterKeyBlock,
    /// A query's last block of keys is partial (`attention::query_key`).
    PartialKeyBlock,
    /// A head's dimensions fill whole value blocks of 64, more than one (a head of 128 or more
    /// dimensions: the later blocks read the values at an offset), or leave a shorter one
    /// (`attention::weighted_values`).
    WholeValueBlock,
    LaterWholeValueBlock,
    PartialValueBlock,
    /// A row's length is not a multiple of the interleaved partial results (`math::sum_f64`,
    /// `attention::softmax_in_place`).
    SumTail,
    /// A team's job of several chunks, shared out between its threads, and its last chunk
    /// shorter than the others (`team::for_each_chunk`).
    SeveralChunks,
    ShortLastChunk,
}

impl Path {
    pub const ALL: [Path; 18] = [
        Path::PanelRunTail,
        Path::WholeRowTiles,
        Path::RowTail8,
        Path::RowTail4,
        Path::RowTail2,
        Path::RowTail1,
        Path::ShortSumBlock,
        Path::PartialPanelBias,
        Path::PartialPanelNoBias,
        Path::PanelsTakenFromAnother,
        Path::LaterKeyBlock,
        Path::PartialKeyBlock,
        Path::WholeValueBlock,
        Path::LaterWholeValueBlock,
        Path::PartialValueBlock,
        Path::SumTail,
        Path::SeveralChunks,
        Path::ShortLastChunk,
    ];

    /// Whether the kernel set this machine runs has this path (a set whose tile is 6 rows has
    /// no tail of 8) and it does not depend on the threads' timing: the paths a validation
    /// must reach.
    pub fn required(self) -> bool {
        let tile_rows = super::kernels::tile_rows(super::math::Simd::best());
        match self {
            Path::PanelsTakenFromAnother => false,
            Path::RowTail8 => tile_rows > 8,
            Path::RowTail4 => tile_rows > 4,
            Path::RowTail2 => tile_rows > 2,
            _ => true,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The variant's name in kebab case, as the counts' file and the tests name it.
        let name = format!("{self:?}");
        let mut out = String::new();
        for (i, c) in name.char_indices() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        f.write_str(&out)
    }
}

#[cfg(feature = "path-counters")]
mod counters {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::Path;

    static COUNTS: [AtomicU64; Path::ALL.len()] = [const { AtomicU64::new(0) }; Path::ALL.len()];

    pub fn count(path: Path) {
        COUNTS[path as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts() -> Vec<(Path, u64)> {
        Path::ALL.iter().map(|&p| (p, COUNTS[p as usize].load(Ordering::Relaxed))).collect()
    }
}

/// Counts a path taken, in a build with the `path-counters` feature; nothing otherwise.
/// `reached!(Path if condition)` counts it when the condition holds: the condition is written
/// inside the macro so that it too vanishes from a normal build (and a mutation tool, which
/// leaves macro arguments alone, does not report mutants of a condition that only feeds a
/// counter as missed).
macro_rules! reached {
    ($path:ident) => {
        $crate::engine::paths::reached!($path if true)
    };
    ($path:ident if $taken:expr) => {
        #[cfg(feature = "path-counters")]
        {
            if $taken {
                $crate::engine::paths::count($crate::engine::paths::Path::$path);
            }
        }
    };
}
pub(crate) use reached;

#[cfg(test)]
mod tests {
    use super::Path;

    #[test]
    fn every_path_is_listed_once_in_order() {
        for (i, p) in Path::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i, "{p}");
        }
        assert_eq!(Path::RowTail8.to_string(), "row-tail8");
        assert_eq!(Path::PanelsTakenFromAnother.to_string(), "panels-taken-from-another");
    }
}
