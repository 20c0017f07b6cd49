//! The threads of the engine's parallel work: the products (`kernels/`), attention's heads,
//! GELU's chunks. A decoded token is some fifty products of 2–150 MB each and three rounds of
//! heads per layer, microseconds apart; a pool whose workers fall asleep between jobs (rayon's)
//! spends a wake-up on every one. The team's helpers spin for a few milliseconds after each job
//! before they park, so within a token every product starts on every core at once.
//!
//! The parts of a job are claimed, not assigned: the caller and the helpers take the next
//! unclaimed part until none is left, and the caller waits only for parts a helper has begun.
//! A helper that the machine has not scheduled (more busy threads than cores: two servers, a
//! test suite running binaries side by side) then costs nothing; its part is done by whoever
//! is running.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::claim::Pair;
use super::paths::reached;
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks: longer than the gaps inside a token's
/// forward pass, short enough not to hold a core while nothing is decoded.
const SPIN: Duration = Duration::from_millis(2);

type Job = &'static (dyn Fn(usize) + Sync);

/// The current job's number and its next unclaimed part, in one word, so that a claim made for
/// one job can never take a part of the next.
struct Claims(Pair);

impl Claims {
    fn job(&self) -> u32 {
        self.0.load().0
    }

    /// Publishes job `job`, none of its parts claimed.
    fn publish(&self, job: u32) {
        self.0.store(job, 0);
    }

    /// The next part of job `job`, if that job is still current and has one left.
    fn claim(&self, job: u32, parts: usize) -> Option<usize> {
        self.0.update(|current, part| {
            (current == job && (part as usize) < parts).then_some((part as usize, (job, part + 1)))
        })
    }
}

struct Shared {
    claims: Claims,
    /// Parts of the current job finished.
    finished: AtomicUsize,
    /// A helper's part panicked.
    panicked: AtomicBool,
    /// Helpers that have started their loop.
    started: AtomicUsize,
    job: Mutex<Option<Job>>,
    parked: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
}

pub struct Team {
    shared: &'static Shared,
    /// One caller at a time.
    turn: Mutex<()>,
}

/// The process's team: as many threads as `use_threads` said, else as rayon's pool
/// (RAYON_NUM_THREADS, else the cores).
pub fn team() -> &'static Team {
    TEAM.get_or_init(|| Team::new(rayon::current_num_threads()))
}

static TEAM: OnceLock<Team> = OnceLock::new();

/// Runs the engine's work on `threads` threads (`--threads`), the caller among them: before the
/// team has run anything.
pub fn use_threads(threads: usize) -> anyhow::Result<()> {
    anyhow::ensure!(threads >= 1, "--threads takes 1 or more");
    let size = TEAM.get_or_init(|| Team::new(threads)).size();
    anyhow::ensure!(size == threads, "the engine's team of {size} threads had already run");
    Ok(())
}

impl Team {
    fn new(threads: usize) -> Team {
        let helpers = threads.saturating_sub(1);
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            claims: Claims(Pair::new(0, 0)),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            job: Mutex::new(None),
            parked: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
            threads: OnceLock::new(),
        }));
        let threads = (0..helpers)
            .map(|i| {
                thread::Builder::new()
                    .name(format!("llorch-team-{}", i + 1))
                    .spawn(move || helper(shared, i))
                    .expect("spawning a team thread")
                    .thread()
                    .clone()
            })
            .collect();
        let _ = shared.threads.set(threads);
        // A thread's start-up (its runtime's own bookkeeping) happens here, not during the
        // first tokens, which then allocate nothing.
        while shared.started.load(Ordering::Acquire) < helpers {
            thread::yield_now();
        }
        Team { shared, turn: Mutex::new(()) }
    }

    /// How many parts `run` splits a job into.
    pub fn size(&self) -> usize {
        self.shared.parked.len() + 1
    }

    /// Runs `part(0)` .. `part(size - 1)`, each once, on whichever threads claim them (the
    /// caller among them), and returns when all are done.
    pub fn run(&self, part: &(dyn Fn(usize) + Sync)) {
        let shared = self.shared;
        let parts = self.size();
        if parts == 1 {
            return part(0);
        }
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        // Safety: a helper calls the job only after claiming one of its parts, which it can do
        // only while this job is the current one: before all of its parts are claimed, and so
        // before this function (which waits for every claimed part to finish) returns.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(part) };
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        shared.finished.store(0, Ordering::SeqCst);
        let number = shared.claims.job().wrapping_add(1);
        shared.claims.publish(number);
        for (parked, thread) in shared.parked.iter().zip(shared.threads.get().expect("set at start")) {
            if parked.load(Ordering::SeqCst) {
                thread.unpark();
            }
        }
        let mine = catch_unwind(AssertUnwindSafe(|| {
            while let Some(p) = shared.claims.claim(number, parts) {
                part(p);
                shared.finished.fetch_add(1, Ordering::Release);
            }
        }));
        if let Err(panic) = mine {
            // The part that panicked was claimed but not counted as finished.
            shared.finished.fetch_add(1, Ordering::Release);
            // Parts may be left unclaimed; claiming them closes the job to the helpers.
            while shared.claims.claim(number, parts).is_some() {
                shared.finished.fetch_add(1, Ordering::Release);
            }
            while shared.finished.load(Ordering::Acquire) < parts {
                std::hint::spin_loop();
            }
            *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
            // A helper's panic in the same job is this one's: the next job starts clean.
            shared.panicked.store(false, Ordering::SeqCst);
            std::panic::resume_unwind(panic);
        }
        while shared.finished.load(Ordering::Acquire) < parts {
            std::hint::spin_loop();
        }
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        assert!(!shared.panicked.swap(false, Ordering::SeqCst), "a team thread panicked");
    }

    /// Runs `work(i, chunk)` for every chunk of `chunk_len` consecutive elements of `data` (the
    /// last may be shorter), the threads taking the next chunk as they finish one, so that a
    /// thread the machine slowed down takes fewer. Allocates nothing.
    pub fn for_each_chunk<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        work: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        struct Base<T>(*mut T);
        // Safety: the pointer is only used to hand out disjoint chunks, below.
        unsafe impl<T: Send> Sync for Base<T> {}
        let chunk_len = chunk_len.max(1);
        let (len, base) = (data.len(), Base(data.as_mut_ptr()));
        let chunks = len.div_ceil(chunk_len);
        if chunks <= 1 {
            return work(0, data);
        }
        reached!(SeveralChunks);
        reached!(ShortLastChunk if !len.is_multiple_of(chunk_len));
        let next = AtomicUsize::new(0);
        self.run(&|_| {
            let base = &base;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= chunks {
                    break;
                }
                let start = i * chunk_len;
                // Safety: chunk i is claimed by one thread only, the chunks do not overlap, and
                // `data` stays borrowed mutably until `run` returns, after every chunk.
                let chunk =
                    unsafe { std::slice::from_raw_parts_mut(base.0.add(start), chunk_len.min(len - start)) };
                work(i, chunk);
            }
        });
    }
}

fn helper(shared: &'static Shared, index: usize) {
    let parts = shared.parked.len() + 1;
    // The job the team was made with, not whatever it is by the time this thread starts: a
    // job published before then is still this helper's to help with.
    let mut seen = 0;
    shared.started.fetch_add(1, Ordering::Release);
    loop {
        let idle = Instant::now();
        let mut spins = 0u32;
        while shared.claims.job() == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && idle.elapsed() > SPIN {
                shared.parked[index].store(true, Ordering::SeqCst);
                // Parked only if no job came meanwhile; `run` unparks after publishing a job,
                // and an unpark before the park makes it return at once.
                if shared.claims.job() == seen {
                    thread::park();
                }
                shared.parked[index].store(false, Ordering::SeqCst);
            }
        }
        seen = shared.claims.job();
        // Read before claiming: a successful claim below proves this job `seen` was still the
        // current one, so the pointer read here is its job's.
        let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(p) = shared.claims.claim(seen, parts) {
            if let Some(job) = job
                && catch_unwind(AssertUnwindSafe(|| job(p))).is_err()
            {
                shared.panicked.store(true, Ordering::SeqCst);
            }
            shared.finished.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part runs exactly once per job, over many jobs in a row (the helpers racing the
    /// caller for parts, and late helpers finding a newer job than the one they woke for).
    #[test]
    fn every_part_runs_once_per_job() {
        let team = Team::new(3);
        for _ in 0..2000 {
            let runs: Vec<AtomicUsize> = (0..team.size()).map(|_| AtomicUsize::new(0)).collect();
            team.run(&|p| {
                runs[p].fetch_add(1, Ordering::Relaxed);
            });
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        }
    }

    /// A part that panics, on the caller or on a helper, makes `run` panic and not hang (a
    /// mutant of the engine found the caller's own panicking part never counted as finished:
    /// the caller waited for it forever), and the team runs the next job as usual.
    #[test]
    fn a_panicking_part_panics_the_caller_and_leaves_the_team_usable() {
        let (done, finished) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let team = Team::new(2);
            for panicking in [vec![0, 1], vec![0], vec![1]] {
                let result = catch_unwind(AssertUnwindSafe(|| {
                    team.run(&|p| {
                        // Time for the helper to claim the other part, so that each thread
                        // mostly runs one; whichever runs which, `run` must panic.
                        thread::sleep(Duration::from_millis(5));
                        assert!(!panicking.contains(&p), "part {p} panics");
                    })
                }));
                assert!(result.is_err(), "parts {panicking:?} panic");
                let runs = AtomicUsize::new(0);
                team.run(&|_| {
                    runs.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(runs.load(Ordering::Relaxed), 2);
            }
            done.send(()).unwrap();
        });
        finished.recv_timeout(Duration::from_secs(20)).expect("the team's run returned after a panic");
    }

    #[test]
    fn every_chunk_is_visited_once_with_its_own_elements() {
        let team = Team::new(3);
        for (len, chunk) in [(0, 4), (1, 4), (10, 3), (12, 4), (100, 1)] {
            let mut data = vec![0usize; len];
            team.for_each_chunk(&mut data, chunk, &|i, part| {
                assert!(part.len() <= chunk);
                part.iter_mut().for_each(|v| *v += i + 1);
            });
            let want: Vec<usize> = (0..len).map(|j| j / chunk + 1).collect();
            assert_eq!(data, want, "len {len}, chunk {chunk}");
        }
    }
}
