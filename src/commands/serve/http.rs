//! The HTTP surface: routes, the answers to bad requests, the event stream, and shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::request::{self, BadRequest, MAX_BODY_BYTES};
use super::worker::{Event, Refused, Worker};
use crate::engine::Gpt2;
use crate::engine::tokenizer::Gpt2Tokenizer;

/// Seconds a client refused for a full queue is asked to wait.
const RETRY_AFTER_SECONDS: u32 = 1;

pub struct App {
    pub model: Arc<Gpt2>,
    pub tokenizer: Option<Arc<Gpt2Tokenizer>>,
    pub worker: Worker,
    pub started: Instant,
}

/// Serves until Ctrl-C or SIGTERM; then stops accepting and waits for the open streams (and
/// the requests queued behind them) to finish.
pub async fn serve(app: Arc<App>, bind: SocketAddr) -> Result<()> {
    let router = Router::new()
        .route("/health", get(health))
        .route("/execute", post(execute))
        .fallback(not_found)
        .with_state(app);
    let listener =
        tokio::net::TcpListener::bind(bind).await.with_context(|| format!("listening on {bind}"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    eprintln!("llorch serve: listening on http://{address}");
    axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await.context("serving HTTP")?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    eprintln!("llorch serve: shutting down: no new requests; the streams in flight finish first");
}

async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let config = &app.model.config;
    let stats = &app.worker.stats;
    Json(json!({
        "status": "ok",
        "model": {
            "weights": app.model.format(),
            "layers": config.n_layer,
            "heads": config.n_head,
            "width": config.n_embd,
            "vocab": config.vocab_size,
            "context": config.n_positions,
            "tokenizer": app.tokenizer.is_some(),
        },
        "parameters": config.parameter_count(),
        "uptime_s": app.started.elapsed().as_secs_f64(),
        "queue": {
            "waiting": app.worker.waiting(),
            "running": stats.running.load(Ordering::Relaxed),
        },
        "requests": {
            "completed": stats.completed.load(Ordering::Relaxed),
            "cancelled": stats.cancelled.load(Ordering::Relaxed),
            "failed": stats.failed.load(Ordering::Relaxed),
            "rejected": stats.rejected.load(Ordering::Relaxed),
        },
    }))
}

async fn execute(State(app): State<Arc<App>>, body: Body) -> Response {
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        let error =
            format!("the body could not be read whole, or is over the limit of {MAX_BODY_BYTES} bytes");
        return bad_request(BadRequest::new("body", error));
    };
    let request = match request::parse(&bytes, &app.model.config, app.tokenizer.as_deref()) {
        Ok(request) => request,
        Err(bad) => return bad_request(bad),
    };
    match app.worker.submit(request) {
        Ok(events) => Sse::new(ReceiverStream::new(events).map(sse_event)).into_response(),
        Err(Refused::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())],
            Json(json!({"error": "the queue is full; retry later"})),
        )
            .into_response(),
        Err(Refused::Closed) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "the server is shutting down"})))
                .into_response()
        }
    }
}

fn sse_event(event: Event) -> Result<SseEvent, Infallible> {
    let named = SseEvent::default().event(event.name());
    // Serialising these plain structs cannot fail; if it ever did, the client still gets an
    // event saying so instead of a stream cut short.
    Ok(named.json_data(&event).unwrap_or_else(|e| {
        SseEvent::default().event("error").data(format!("{{\"error\": \"serialising an event: {e}\"}}"))
    }))
}

fn bad_request(bad: BadRequest) -> Response {
    (StatusCode::BAD_REQUEST, Json(bad)).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such endpoint; there are GET /health and POST /execute"})),
    )
        .into_response()
}
