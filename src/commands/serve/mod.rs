//! `llorch serve`: the validated engine as an HTTP inference worker (axum on tokio).
//!
//! - `GET /health`: status, the model's shape and parameter count, uptime, queue depth and
//!   counters of the requests served.
//! - `POST /execute`: a JSON request (`request.rs`) answered with Server-Sent Events: `token`
//!   events as the tokens are picked, then one `done` (all ids, stop reason, timings) or one
//!   `error`. Generations run one at a time on the worker thread (`worker.rs`) from a bounded
//!   queue; a full queue is answered 503 with Retry-After.
//!
//! The HTTP side runs on one tokio thread: it only parses, queues and forwards events, while the
//! engine's products use every core.

mod http;
pub mod request;
mod worker;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::commands::cli::ServeArgs;
use crate::commands::options::model_dir;
use crate::engine::Gpt2;
use crate::engine::tokenizer::Gpt2Tokenizer;

/// Loads the model, serves until Ctrl-C or SIGTERM, then waits for the streams in flight.
pub fn run(args: ServeArgs) -> Result<()> {
    anyhow::ensure!(
        args.queue > 0,
        "--queue must be at least 1: every request passes through the queue to the worker"
    );
    let dir = model_dir(args.model)?;
    eprintln!("llorch serve: loading {}", dir.display());
    let loading = Instant::now();
    let model = Arc::new(Gpt2::load_dir(&dir, args.weights)?);
    let tokenizer = Gpt2Tokenizer::from_model_dir(&dir)?.map(Arc::new);
    let config = &model.config;
    eprintln!(
        "llorch serve: loaded in {:.1} s: {} layers, {} heads, width {}, vocabulary {}, context {}, \
         {} parameters{}",
        loading.elapsed().as_secs_f64(),
        config.n_layer,
        config.n_head,
        config.n_embd,
        config.vocab_size,
        config.n_positions,
        config.parameter_count(),
        if tokenizer.is_some() { "" } else { "; no tokenizer: requests must give token_ids" }
    );

    let (worker, thread) = worker::Worker::start(model.clone(), tokenizer.clone(), args.queue)?;
    let app = Arc::new(http::App { model, tokenizer, worker, started: Instant::now() });
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(http::serve(app, args.bind))?;
    // The worker thread ends once the queue is empty: the app and its Worker handle are gone.
    thread.join().map_err(|_| anyhow::anyhow!("the generation thread panicked"))?;
    eprintln!("llorch serve: stopped");
    Ok(())
}
