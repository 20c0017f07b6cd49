//! The generation worker: one thread that owns the engine's turn and runs the requests of a
//! bounded queue one at a time (the engine already spreads each product over every core, so
//! two generations at once would only take turns at finer grain). Each request streams its
//! events back through a channel of its own; a request whose client has gone is dropped from
//! the queue unrun, or stopped at its next token.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use anyhow::{Result, anyhow};
use serde::Serialize;
use tokio::sync::mpsc;

use super::request::Execute;
use crate::engine::Gpt2;
use crate::engine::generate::{self, Picker};
use crate::engine::tokenizer::Gpt2Tokenizer;

/// Events buffered per stream before the worker waits for its client to read them.
const EVENTS_BUFFERED: usize = 64;

/// What a stream carries, in order: tokens, then one `Done` or one `Error`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Event {
    Token(TokenEvent),
    Done(DoneEvent),
    Error { error: String },
}

#[derive(Debug, Serialize)]
pub struct TokenEvent {
    pub id: u32,
    /// The text this token adds (None when the model has no tokenizer; "" while a character's
    /// bytes are still incomplete).
    pub text: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DoneEvent {
    pub token_ids: Vec<u32>,
    pub text: Option<String>,
    /// "eos" (the model's end-of-text token, included) or "max_tokens".
    pub stop_reason: &'static str,
    pub prompt_tokens: usize,
    /// From the request's start to its first token: the prompt's forward pass and one pick.
    pub prefill_ms: f64,
    /// Mean time between the tokens after the first (None for one token).
    pub decode_ms_per_token: Option<f64>,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Token(_) => "token",
            Event::Done(_) => "done",
            Event::Error { .. } => "error",
        }
    }
}

/// Counters for /health, shared with the HTTP side.
#[derive(Default)]
pub struct Stats {
    pub running: AtomicUsize,
    pub completed: AtomicU64,
    /// Stopped (or never started) because the client disconnected.
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    /// Answered 503 because the queue was full.
    pub rejected: AtomicU64,
}

struct Job {
    request: Execute,
    events: mpsc::Sender<Event>,
}

/// The handle the HTTP side submits to.
pub struct Worker {
    queue: mpsc::Sender<Job>,
    pub stats: Arc<Stats>,
}

pub enum Refused {
    /// The queue is full: try again later.
    Busy,
    /// The worker is gone (the server is shutting down).
    Closed,
}

impl Worker {
    /// Starts the worker thread with room for `queue` waiting requests. The thread ends when
    /// the last `Worker` handle is dropped and the queue is empty.
    pub fn start(
        model: Arc<Gpt2>,
        tokenizer: Option<Arc<Gpt2Tokenizer>>,
        queue: usize,
    ) -> Result<(Worker, JoinHandle<()>)> {
        let (sender, mut receiver) = mpsc::channel::<Job>(queue.max(1));
        let stats = Arc::new(Stats::default());
        let shared = stats.clone();
        let thread = thread::Builder::new().name("llorch-generate".into()).spawn(move || {
            while let Some(job) = receiver.blocking_recv() {
                run_job(&model, tokenizer.as_deref(), job, &shared);
            }
        })?;
        Ok((Worker { queue: sender, stats }, thread))
    }

    /// Queues a request; its events arrive on the returned receiver.
    pub fn submit(&self, request: Execute) -> Result<mpsc::Receiver<Event>, Refused> {
        let (events, receiver) = mpsc::channel(EVENTS_BUFFERED);
        match self.queue.try_send(Job { request, events }) {
            Ok(()) => Ok(receiver),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Refused::Busy)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused::Closed),
        }
    }

    /// Requests waiting behind the one running.
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// The generation's end when its client has gone.
#[derive(Debug)]
struct Disconnected;

impl std::fmt::Display for Disconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client disconnected")
    }
}

impl std::error::Error for Disconnected {}

fn run_job(model: &Gpt2, tokenizer: Option<&Gpt2Tokenizer>, job: Job, stats: &Stats) {
    if job.events.is_closed() {
        stats.cancelled.fetch_add(1, Ordering::Relaxed);
        return;
    }
    stats.running.fetch_add(1, Ordering::Relaxed);
    let outcome = catch_unwind(AssertUnwindSafe(|| generate_events(model, tokenizer, &job)))
        .unwrap_or_else(|_| Err(anyhow!("the engine panicked; this is a bug in llorch")));
    stats.running.fetch_sub(1, Ordering::Relaxed);
    let counter = match outcome {
        Ok(done) => {
            // The client may leave between its last token and this: nothing is lost then.
            let _ = job.events.blocking_send(Event::Done(done));
            &stats.completed
        }
        Err(e) if e.is::<Disconnected>() => &stats.cancelled,
        Err(e) => {
            let _ = job.events.blocking_send(Event::Error { error: format!("{e:#}") });
            &stats.failed
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Runs `generate::generate` (the code `llorch generate` runs, so the same settings give the
/// same tokens), sending each token as it is picked.
fn generate_events(model: &Gpt2, tokenizer: Option<&Gpt2Tokenizer>, job: &Job) -> Result<DoneEvent> {
    let request = &job.request;
    let start = Instant::now();
    let mut first_token_at = None;
    let mut decoder = tokenizer.map(|t| t.stream_after(&request.prompt_ids)).transpose()?;
    let mut picker = Picker::new(request.sampling, request.seed);
    let eos = model.config.eos_token_id;
    let token_ids =
        generate::generate(model, &request.prompt_ids, request.max_tokens, &mut picker, eos, |id, _| {
            first_token_at.get_or_insert_with(Instant::now);
            let text = match decoder.as_mut() {
                Some(d) => Some(d.next(id)?),
                None => None,
            };
            job.events.blocking_send(Event::Token(TokenEvent { id, text })).map_err(|_| Disconnected)?;
            Ok(())
        })?;
    let end = Instant::now();
    let first = first_token_at.unwrap_or(end);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    Ok(DoneEvent {
        text: tokenizer.map(|t| t.decode(&token_ids)).transpose()?,
        stop_reason: if eos.is_some() && token_ids.last().copied() == eos { "eos" } else { "max_tokens" },
        prompt_tokens: request.prompt_ids.len(),
        prefill_ms: ms(first - start),
        decode_ms_per_token: (token_ids.len() > 1).then(|| ms(end - first) / (token_ids.len() - 1) as f64),
        token_ids,
    })
}
