//! Two 32-bit counters in one atomic word, changed together by compare-and-swap: what the
//! team's job claims (job number, next part) and the kernels' slabs (front, back) are made of.
//! One word, so that no thread ever sees one half of a change.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Pair(AtomicU64);

impl Pair {
    pub const fn new(high: u32, low: u32) -> Pair {
        Pair(AtomicU64::new(pack(high, low)))
    }

    pub fn load(&self) -> (u32, u32) {
        unpack(self.0.load(Ordering::Acquire))
    }

    pub fn store(&self, high: u32, low: u32) {
        self.0.store(pack(high, low), Ordering::Release);
    }

    /// Replaces the pair by what `change` makes of it, unless `change` declines (None): its
    /// result beside the new pair, retried until no other thread changed the pair in between.
    pub fn update<R>(&self, change: impl Fn(u32, u32) -> Option<(R, (u32, u32))>) -> Option<R> {
        let mut now = self.0.load(Ordering::Acquire);
        loop {
            let (high, low) = unpack(now);
            let (result, (new_high, new_low)) = change(high, low)?;
            match self.0.compare_exchange_weak(
                now,
                pack(new_high, new_low),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(result),
                Err(actual) => now = actual,
            }
        }
    }
}

const fn pack(high: u32, low: u32) -> u64 {
    (high as u64) << 32 | low as u64
}

const fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

#[cfg(test)]
mod tests {
    use super::Pair;

    #[test]
    fn updates_both_halves_or_neither() {
        let pair = Pair::new(3, 10);
        assert_eq!(pair.update(|a, b| Some((a + b, (a + 1, b - 1)))), Some(13));
        assert_eq!(pair.load(), (4, 9));
        assert_eq!(pair.update(|_, _| None::<((), (u32, u32))>), None);
        assert_eq!(pair.load(), (4, 9));
        pair.store(0, u32::MAX);
        assert_eq!(pair.load(), (0, u32::MAX));
    }
}
