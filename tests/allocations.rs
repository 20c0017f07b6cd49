//! A decoded token allocates nothing: the forward pass writes into the sequence's buffers and
//! the sampler into its own. Counted by a global allocator in this test binary, on the threads a
//! decode step runs on: the caller ("main") and the engine's team ("llorch-team-N"). Idle pool
//! threads of other libraries (rayon's, matrixmultiply's) allocate once when they first go to
//! sleep, which on a busy machine can happen at any time; they are not counted. No test harness either (Cargo.toml: harness = false), for the same reason.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use llorch::engine::generate::{Generation, Picker};
use llorch::engine::sampling::Sampling;
use llorch::engine::{Gpt2, WeightFormat};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// Safety: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

const UNKNOWN: u8 = 0;
const COUNTED: u8 = 1;
const NOT_COUNTED: u8 = 2;
const CHECKING: u8 = 3;

thread_local! {
    /// Whether this thread's allocations count, found out on its first one.
    static THREAD: Cell<u8> = const { Cell::new(UNKNOWN) };
}

fn count() {
    let counted = THREAD.with(|state| match state.get() {
        UNKNOWN => {
            // Reading the thread's name may allocate: those allocations are not counted.
            state.set(CHECKING);
            let ours =
                std::thread::current().name().is_some_and(|n| n == "main" || n.starts_with("llorch-team-"));
            state.set(if ours { COUNTED } else { NOT_COUNTED });
            ours
        }
        s => s == COUNTED,
    });
    if counted {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    decode_steps_allocate_nothing_greedy_or_sampled();
    println!("decode steps allocate nothing, greedy or sampled, in every weight format: ok");
}

fn decode_steps_allocate_nothing_greedy_or_sampled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gpt2");
    for format in WeightFormat::ALL {
        decode_steps_allocate_nothing(&Gpt2::load_dir(&dir, format).unwrap(), format);
    }
}

fn decode_steps_allocate_nothing(model: &Gpt2, format: WeightFormat) {
    let samplings = [
        Sampling::GREEDY,
        Sampling::new(0.8, None, None).unwrap(),
        Sampling::new(0.9, Some(40), Some(0.95)).unwrap(),
    ];
    for sampling in samplings {
        let mut picker = Picker::new(sampling, 7);
        let mut generation = Generation::start(model, &[15496, 13], 40).unwrap();
        // The first token sizes the sampler's buffers and starts the kernels' threads.
        let mut token = picker.pick(generation.logits());
        generation.push(token).unwrap();
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..30 {
            token = picker.pick(generation.logits());
            generation.push(token).unwrap();
        }
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(allocated, 0, "{format} {sampling:?}: {allocated} allocations in 30 decoded tokens");
    }
}
