//! The threads of the decode step's one-row products. A decoded token is some fifty products of
//! 2–150 MB each, microseconds apart; a pool whose workers fall asleep between jobs (rayon's)
//! spends a wake-up on every one. The team's helpers spin for a few milliseconds after each job
//! before they park, so within a token every product starts on every core at once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks: longer than the gaps inside a token's
/// forward pass, short enough not to hold a core while nothing is decoded.
const SPIN: Duration = Duration::from_millis(2);

type Job = &'static (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per job; helper i runs part i + 1 of it.
    epoch: AtomicUsize,
    /// Helpers finished with the current job.
    done: AtomicUsize,
    /// A helper's part panicked.
    panicked: AtomicBool,
    job: Mutex<Option<Job>>,
    parked: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
}

pub struct Team {
    shared: &'static Shared,
    /// One caller at a time.
    turn: Mutex<()>,
}

/// The process's team: as many threads as rayon's pool (RAYON_NUM_THREADS, else the cores).
pub fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| Team::new(rayon::current_num_threads()))
}

impl Team {
    fn new(threads: usize) -> Team {
        let helpers = threads.saturating_sub(1);
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            epoch: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
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
        Team { shared, turn: Mutex::new(()) }
    }

    /// How many parts `run` splits a job into.
    pub fn size(&self) -> usize {
        self.shared.parked.len() + 1
    }

    /// Runs `part(0)` .. `part(size - 1)`, one per thread (0 on the caller), and returns when
    /// all are done.
    pub fn run(&self, part: &(dyn Fn(usize) + Sync)) {
        let shared = self.shared;
        if shared.parked.is_empty() {
            return part(0);
        }
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        // Safety: the reference is only used by the helpers between the epoch bump below and
        // their `done` increments, and this function does not return before all of those.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(part) };
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        shared.done.store(0, Ordering::SeqCst);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        for (parked, thread) in shared.parked.iter().zip(shared.threads.get().expect("set at start")) {
            if parked.load(Ordering::SeqCst) {
                thread.unpark();
            }
        }
        let mine = catch_unwind(AssertUnwindSafe(|| part(0)));
        while shared.done.load(Ordering::Acquire) < shared.parked.len() {
            std::hint::spin_loop();
        }
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(panic) = mine {
            std::panic::resume_unwind(panic);
        }
        assert!(!shared.panicked.swap(false, Ordering::SeqCst), "a team thread panicked");
    }
}

fn helper(shared: &'static Shared, index: usize) {
    // The epoch the team was made with, not whatever it is by the time this thread starts: a
    // job published before then is still this helper's to run.
    let mut seen = 0;
    loop {
        let idle = Instant::now();
        let mut spins = 0u32;
        while shared.epoch.load(Ordering::Acquire) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && idle.elapsed() > SPIN {
                shared.parked[index].store(true, Ordering::SeqCst);
                // Parked only if no job came meanwhile; `run` unparks after bumping the epoch,
                // and an unpark before the park makes it return at once.
                if shared.epoch.load(Ordering::SeqCst) == seen {
                    thread::park();
                }
                shared.parked[index].store(false, Ordering::SeqCst);
            }
        }
        seen = shared.epoch.load(Ordering::Acquire);
        let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| job(index + 1))).is_err()
        {
            shared.panicked.store(true, Ordering::SeqCst);
        }
        shared.done.fetch_add(1, Ordering::Release);
    }
}
