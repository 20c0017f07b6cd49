//! `llorch serve` through the real binary on a loopback port: /health, streamed /execute
//! against `llorch generate`, every kind of bad request, a full queue, a bounded load, a client
//! that leaves mid-stream, and shutdown with a stream in flight.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{fixture, run};

/// A server on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    url: String,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("llorch"))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("llorch serve starts");
        let (lines, stderr) = mpsc::channel();
        let pipe = BufReader::new(child.stderr.take().expect("stderr is piped"));
        thread::spawn(move || {
            for line in pipe.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        // Made before waiting, so that a server that fails to start is still killed.
        let mut server = Server { child, url: String::new(), stderr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.url.is_empty() {
            let line = server
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the server says where it listens within a minute");
            if let Some(url) = line.strip_prefix("llorch serve: listening on ") {
                server.url = url.to_string();
            }
        }
        server
    }

    fn health(&self) -> Value {
        let text = ureq::get(&format!("{}/health", self.url)).call().expect("/health answers").into_string();
        serde_json::from_str(&text.expect("a body")).expect("JSON")
    }

    /// POSTs a body to /execute: the status, the Retry-After header, and the body (the JSON
    /// error of a refusal, else the raw event stream).
    fn post(&self, body: &str) -> (u16, Option<String>, String) {
        let response = match ureq::post(&format!("{}/execute", self.url)).send_string(body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("POST /execute: {e}"),
        };
        let (status, retry) = (response.status(), response.header("retry-after").map(str::to_string));
        (status, retry, response.into_string().expect("a body"))
    }

    fn execute(&self, body: Value) -> Stream {
        let (status, _, text) = self.post(&body.to_string());
        assert_eq!(status, 200, "{body}: {text}");
        Stream::parse(&text)
    }

    /// SIGTERM, then the exit status and everything the server wrote on stderr after starting.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
        let status = self.child.wait().expect("the server exits");
        (status, self.stderr.iter().collect())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events of one /execute response.
#[derive(Debug)]
struct Stream {
    tokens: Vec<Value>,
    end: (String, Value),
}

impl Stream {
    fn parse(text: &str) -> Stream {
        let mut events = Vec::new();
        for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()))
                    .unwrap_or_else(|| panic!("event without {name} {block:?}"))
            };
            let data: Value = serde_json::from_str(&field("data:")).expect("event data is JSON");
            events.push((field("event:"), data));
        }
        let end = events.pop().expect("at least the final event");
        assert!(events.iter().all(|(name, _)| name == "token"), "only tokens before the end: {events:?}");
        Stream { tokens: events.into_iter().map(|(_, data)| data).collect(), end }
    }

    /// The final event's data, which must be `done`.
    fn done(&self) -> &Value {
        assert_eq!(self.end.0, "done", "the stream ended with {:?}", self.end);
        &self.end.1
    }

    fn ids(&self) -> Vec<u64> {
        self.tokens.iter().map(|t| t["id"].as_u64().expect("token id")).collect()
    }
}

/// What `llorch generate --format json` makes of the same settings.
fn generate(args: &[&str]) -> Vec<u64> {
    let out = run(&[&["generate", "--format", "json"], args].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: Value = serde_json::from_str(&out.stdout).expect("generate's JSON");
    json["generated_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id")).collect()
}

#[test]
fn health_describes_the_model_and_the_queue() {
    let server = Server::start(&[]);
    let health = server.health();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["model"]["weights"], "f32");
    let q8 = Server::start(&["--weights", "q8_0"]);
    assert_eq!(q8.health()["model"]["weights"], "q8_0", "the format the server's engine runs in");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap()).unwrap();
    for (ours, theirs) in [
        ("layers", "n_layer"),
        ("heads", "n_head"),
        ("width", "n_embd"),
        ("vocab", "vocab_size"),
        ("context", "n_positions"),
    ] {
        assert_eq!(health["model"][ours], config[theirs], "{ours}");
    }
    // The weights counted from the file's own header, not from the config.
    let file = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let in_file: u64 = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(_, t)| t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product::<u64>())
        .sum();
    assert_eq!(health["parameters"], in_file);
    assert_eq!(health["queue"], json!({"waiting": 0, "running": 0}));
    assert!(health["uptime_s"].as_f64().unwrap() >= 0.0);
}

#[test]
fn streams_the_tokens_of_llorch_generate_greedy_and_seeded() {
    let server = Server::start(&[]);
    let greedy = server.execute(json!({"prompt": "Hello.", "max_tokens": 12, "temperature": 0}));
    assert_eq!(greedy.ids(), generate(&["Hello.", "--temp", "0", "--max-tokens", "12"]));
    let done = greedy.done();
    assert_eq!(done["token_ids"].as_array().unwrap().len(), 12);
    assert_eq!(done["stop_reason"], "max_tokens");
    assert_eq!(done["prompt_tokens"], 2);
    assert!(
        done["prefill_ms"].as_f64().unwrap() > 0.0 && done["decode_ms_per_token"].as_f64().unwrap() > 0.0
    );
    let pieces: String = greedy.tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(done["text"], pieces);

    let body = json!({"token_ids": [15496, 13], "max_tokens": 16, "temperature": 0.8, "top_k": 40,
                      "top_p": 0.95, "seed": 7});
    let sampled = server.execute(body);
    let flags = ["--tokens", "15496,13", "--temp", "0.8", "--top-k", "40", "--top-p", "0.95", "--seed", "7"];
    assert_eq!(sampled.ids(), generate(&[&flags[..], &["--max-tokens", "16"]].concat()));
    assert_eq!(
        sampled.ids(),
        serde_json::from_value::<Vec<u64>>(sampled.done()["token_ids"].clone()).unwrap()
    );
}

#[test]
fn every_bad_request_is_a_400_naming_the_field() {
    let server = Server::start(&[]);
    let long_prompt = json!({"token_ids": vec![13; 1024]}).to_string();
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(70_000));
    for (body, field) in [
        ("{\"prompt\": ", "body"),
        ("[]", "body"),
        (huge.as_str(), "body"),
        (r#"{"prompt": "Hi", "colour": "red"}"#, "colour"),
        (r#"{"max_tokens": 4}"#, "prompt"),
        (r#"{"prompt": "Hi", "token_ids": [1]}"#, "token_ids"),
        (r#"{"prompt": ""}"#, "prompt"),
        (r#"{"token_ids": [50257]}"#, "token_ids"),
        (long_prompt.as_str(), "token_ids"),
        (r#"{"prompt": "Hi", "max_tokens": 0}"#, "max_tokens"),
        (r#"{"prompt": "Hi", "max_tokens": 5000}"#, "max_tokens"),
        (r#"{"prompt": "Hi", "temperature": -0.5}"#, "temperature"),
        (r#"{"prompt": "Hi", "top_k": 0}"#, "top_k"),
        (r#"{"prompt": "Hi", "top_p": 2}"#, "top_p"),
        (r#"{"prompt": "Hi", "seed": "x"}"#, "seed"),
    ] {
        let (status, _, text) = server.post(body);
        let short = &body[..body.len().min(60)];
        assert_eq!(status, 400, "{short}: {text}");
        let error: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{short}: not JSON: {text}"));
        assert_eq!(error["field"], field, "{short}: {text}");
        assert!(!error["error"].as_str().unwrap().is_empty());
    }
    // Still serving after all of them.
    assert_eq!(server.execute(json!({"prompt": "Hi", "max_tokens": 2})).ids().len(), 2);
}

#[test]
fn a_queue_of_no_places_is_refused_before_the_model_loads() {
    let out = run(&["serve", "--queue", "0", "--bind", "127.0.0.1:0"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--queue must be at least 1"), "{}", out.stderr);
    assert!(!out.stderr.contains("loading"), "{}", out.stderr);
}

#[test]
fn a_full_queue_is_a_503_with_retry_after() {
    let server = Server::start(&["--queue", "1"]);
    let long = json!({"token_ids": [13], "max_tokens": 1000, "temperature": 0}).to_string();
    // One runs, one waits, the third finds the queue full (the first takes far longer than the
    // two requests after it need to arrive).
    let (first, second) = {
        let (a, b) = (long.clone(), long.clone());
        let url = server.url.clone();
        let post = move |body: String, url: String| {
            thread::spawn(move || {
                let response = ureq::post(&format!("{url}/execute")).send_string(&body).expect("200");
                response.into_string().expect("a body")
            })
        };
        let first = post(a, url.clone());
        wait_for(&server, |h| h["queue"]["running"] == 1);
        let second = post(b, url);
        wait_for(&server, |h| h["queue"]["waiting"] == 1);
        (first, second)
    };
    let (status, retry_after, text) = server.post(&long);
    assert_eq!(status, 503, "{text}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    for request in [first, second] {
        let stream = Stream::parse(&request.join().expect("the request's thread"));
        assert_eq!(stream.done()["token_ids"].as_array().unwrap().len(), 1000);
    }
    assert_eq!(server.health()["requests"]["rejected"], 1);
}

/// Polls /health until `ready` holds (at most a minute).
fn wait_for(server: &Server, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = server.health();
        if ready(&health) {
            return health;
        }
        assert!(Instant::now() < deadline, "not reached within a minute: {health}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn eight_clients_at_once_each_get_their_own_tokens() {
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 20;
    let server = Server::start(&[]);
    let body = |client: usize, request: usize| {
        json!({"token_ids": [client * 100 + request], "max_tokens": 8, "temperature": 1.0,
               "seed": client * 1000 + request})
    };
    // Every request's answer, asked one at a time first.
    let expected: Vec<Vec<Vec<u64>>> =
        (0..CLIENTS).map(|c| (0..REQUESTS).map(|r| server.execute(body(c, r)).ids()).collect()).collect();
    let url = server.url.clone();
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let url = url.clone();
            thread::spawn(move || {
                (0..REQUESTS)
                    .map(|r| {
                        let response =
                            ureq::post(&format!("{url}/execute")).send_string(&body(c, r).to_string());
                        Stream::parse(&response.expect("200").into_string().expect("body")).ids()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let got: Vec<Vec<Vec<u64>>> = clients.into_iter().map(|c| c.join().expect("client thread")).collect();
    let elapsed = start.elapsed();
    assert_eq!(got, expected);
    let health = server.health();
    assert_eq!(health["requests"]["completed"], 2 * CLIENTS * REQUESTS);
    assert_eq!(health["requests"]["failed"], 0);
    assert_eq!(health["requests"]["rejected"], 0);
    eprintln!(
        "{CLIENTS} clients × {REQUESTS} requests × 8 tokens: {:.2} s, {:.0} requests/s",
        elapsed.as_secs_f64(),
        (CLIENTS * REQUESTS) as f64 / elapsed.as_secs_f64()
    );
}

#[test]
fn a_client_that_leaves_mid_stream_stops_its_generation() {
    let server = Server::start(&[]);
    let body = json!({"token_ids": [13], "max_tokens": 1000, "temperature": 0}).to_string();
    let response = ureq::post(&format!("{}/execute", server.url)).send_string(&body).expect("200");
    let mut reader = response.into_reader();
    let mut first = [0u8; 16];
    reader.read_exact(&mut first).expect("the first event arrives");
    drop(reader); // the connection closes mid-stream
    let health = wait_for(&server, |h| h["requests"]["cancelled"] == 1 && h["queue"]["running"] == 0);
    assert_eq!(health["requests"]["completed"], 0, "the generation ran to its end: {health}");
    assert_eq!(server.execute(json!({"prompt": "Hi", "max_tokens": 3})).ids().len(), 3);
}

#[test]
fn shutting_down_lets_the_stream_in_flight_finish() {
    let server = Server::start(&[]);
    let body = json!({"token_ids": [13], "max_tokens": 400, "temperature": 0}).to_string();
    let response = ureq::post(&format!("{}/execute", server.url)).send_string(&body).expect("200");
    let mut reader = BufReader::new(response.into_reader());
    let mut line = String::new();
    reader.read_line(&mut line).expect("the first event arrives");
    let (status, stderr) = {
        let reading = thread::spawn(move || {
            let mut rest = String::new();
            reader.read_to_string(&mut rest).map(|_| line + &rest)
        });
        let (status, stderr) = server.terminate();
        let stream = Stream::parse(&reading.join().unwrap().expect("the stream is read to its end"));
        assert_eq!(stream.done()["token_ids"].as_array().unwrap().len(), 400);
        (status, stderr)
    };
    assert!(status.success(), "{status}: {stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("shutting down")), "{stderr:?}");
}
