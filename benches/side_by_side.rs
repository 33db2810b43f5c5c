//! The release broker measured side by side with the Python peer (`bench/python_peer.py`:
//! google-auth behind a plain Runtime API loop), against one Google emulator, on loopback.
//!
//! `scripts/bench` builds both sides and runs this with `BENCH_*` variables naming them; alone,
//! `cargo bench` skips it. Phases, each with fresh processes:
//!
//! 1. Cold start, under this harness's own Runtime API: a process is spawned and handed a token
//!    event at its first `GET /next`. "Ready" is spawn to that first poll (configuration
//!    loaded); "first token" is spawn to the answer's `POST /response` (cache empty). The broker
//!    runs with and without `BROKER_PREFETCH_TOKEN`.
//! 2. Warm, under cargo-lambda's Runtime API emulator: 1,000 invocations with RSS sampled from
//!    /proc (the broker also in concurrent mode), then interleaved round trips of `/healthz`
//!    (the floor), `/token` (cache hit), generateContent through the broker and straight to the
//!    emulator.
//! 3. Streaming: the broker in streaming mode, time to the first server-sent event through the
//!    broker and straight to the emulator; again with `BENCH_NODELAY_SHIM` preloaded when set
//!    (see `bench/nodelay.c`).
//! 4. Upstream economy: 64 concurrent invocations per wave with `AWS_LAMBDA_MAX_CONCURRENCY=64`,
//!    counting STS and IAM calls at the emulator.
//!
//! It prints a table of medians, ratios and targets, and writes the numbers as JSON to
//! `BENCH_JSON` when set.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

const TOKEN_EVENT: &str = include_str!("../events/token-function-url.json");
const HEALTHZ_EVENT: &str = include_str!("../events/healthz-function-url.json");
const GENERATE_EVENT: &str = include_str!("../events/generate-function-url.json");
const STREAM_EVENT: &str = include_str!("../events/stream-function-url.json");
const GENERATE_BODY: &str =
    r#"{"contents": [{"role": "user", "parts": [{"text": "Say hello in one word."}]}]}"#;
const ALLOWED_CALLERS: &str = "arn:aws:iam::123456789012:role/app-role";
const MODEL_PATH: &str =
    "/v1/projects/local-project/locations/global/publishers/google/models/gemini-2.5-flash";
/// The pause between streamed events: the first event is sent at once, so time to first event
/// does not include it; a short pause keeps each stream, and so the run, short.
const STREAM_EVENT_DELAY_MS: &str = "10";
const CONCURRENCY: usize = 64;
const MIB: f64 = 1024.0 * 1024.0;

/// What `scripts/bench` hands over.
struct Setup {
    broker: PathBuf,
    emulator: PathBuf,
    python: PathBuf,
    peer: PathBuf,
    cargo_lambda: PathBuf,
    criterion: PathBuf,
    logs: PathBuf,
    cold_runs: usize,
    warm_runs: usize,
    stream_runs: usize,
    memory_invocations: usize,
    /// A preload library that forces TCP_NODELAY, for the streaming experiment (optional).
    nodelay_shim: Option<PathBuf>,
}

impl Setup {
    fn from_env() -> Option<Self> {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let count = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Some(Self {
            broker: path("BENCH_BROKER")?,
            emulator: path("BENCH_EMULATOR")?,
            python: path("BENCH_PYTHON")?,
            peer: path("BENCH_PEER")?,
            cargo_lambda: path("BENCH_CARGO_LAMBDA")?,
            criterion: path("BENCH_CRITERION_DIR")?,
            logs: path("BENCH_LOGS")?,
            cold_runs: count("BENCH_COLD_RUNS", 15),
            warm_runs: count("BENCH_WARM_RUNS", 400),
            stream_runs: count("BENCH_STREAM_RUNS", 200),
            memory_invocations: count("BENCH_MEMORY_INVOCATIONS", 1000),
            nodelay_shim: path("BENCH_NODELAY_SHIM"),
        })
    }
}

fn main() -> ExitCode {
    let Some(setup) = Setup::from_env() else {
        eprintln!("side_by_side: skipped; scripts/bench builds both sides and runs it");
        return ExitCode::SUCCESS;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(run(&setup));
    println!("{}", report.table());
    if let Some(path) = std::env::var_os("BENCH_JSON") {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&report.json).expect("json"),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", Path::new(&path).display()));
    }
    let strict = std::env::var("BENCH_STRICT").is_ok_and(|v| v == "1");
    if strict && report.rows.iter().any(|r| r.verdict == Verdict::Miss) {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

async fn run(setup: &Setup) -> Report {
    std::fs::create_dir_all(&setup.logs).expect("log directory");
    let google = GoogleEmulator::start(setup).await;
    let mut report = Report {
        invocations: setup.memory_invocations,
        ..Report::default()
    };

    eprintln!(
        "side_by_side: cold starts ({} runs per side)",
        setup.cold_runs
    );
    let cold = cold_starts(setup, &google).await;

    eprintln!("side_by_side: warm broker (buffered)");
    let broker = warm_broker(setup, &google).await;
    eprintln!("side_by_side: broker memory in concurrent mode");
    let concurrent_rss = concurrent_mode_memory(setup, &google).await;
    eprintln!("side_by_side: warm Python peer");
    let python = warm_python(setup, &google).await;
    eprintln!("side_by_side: streaming broker");
    let stream = streaming(setup, &google, &[], "stream-broker").await;
    let nodelay = match &setup.nodelay_shim {
        Some(shim) => {
            eprintln!("side_by_side: streaming broker, TCP_NODELAY forced (experiment)");
            let shim = shim.to_string_lossy();
            Some(streaming(setup, &google, &[("LD_PRELOAD", &shim)], "stream-nodelay").await)
        }
        None => None,
    };
    eprintln!("side_by_side: upstream economy ({CONCURRENCY} concurrent)");
    let economy = economy(setup, &google).await;
    let handler = criterion_median(&setup.criterion, "handler_token_cache_hit");
    let healthz_handler = criterion_median(&setup.criterion, "handler_healthz");
    let size = std::fs::metadata(&setup.broker)
        .expect("broker binary")
        .len();

    report.cold(&cold);
    report.warm(handler, healthz_handler, &broker, &python);
    report.forwarding(&broker, &stream, nodelay.as_ref());
    report.memory(&broker, &python, &concurrent_rss);
    report.size(size);
    report.economy(&economy, &broker, &python);
    report.prefetch(&cold);
    report
}

// ---------------------------------------------------------------------------------------------
// Processes

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not listen on port {port}");
}

fn log_file(setup: &Setup, name: &str) -> std::fs::File {
    std::fs::File::create(setup.logs.join(name)).expect("log file")
}

/// The Google emulator's release binary, shared by every phase.
struct GoogleEmulator {
    base: String,
    _child: Child,
}

impl GoogleEmulator {
    async fn start(setup: &Setup) -> Self {
        let mut child = Command::new(&setup.emulator)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--stream-event-delay-ms", STREAM_EVENT_DELAY_MS])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(setup, "google-emulator.log"))
            .kill_on_drop(true)
            .spawn()
            .expect("the Google emulator starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .expect("the listening line");
        let base = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|url| url.starts_with("http://"))
            .unwrap_or_else(|| panic!("unexpected first line from the emulator: {line}"))
            .to_owned();
        Self {
            base,
            _child: child,
        }
    }

    async fn calls(&self, client: &reqwest::Client) -> (u64, u64) {
        let calls: Value = client
            .get(format!("{}/emulator/calls", self.base))
            .send()
            .await
            .expect("emulator calls")
            .json()
            .await
            .expect("calls JSON");
        (
            calls["sts"].as_u64().unwrap_or(0),
            calls["iam"].as_u64().unwrap_or(0),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Broker,
    BrokerPrefetch,
    Python,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Broker => "broker",
            Side::BrokerPrefetch => "broker-prefetch",
            Side::Python => "python",
        }
    }
}

fn credential_config(google: &GoogleEmulator) -> String {
    let base = &google.base;
    json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/local-pool/providers/local-aws",
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "service_account_impersonation_url": format!(
            "{base}/v1/projects/-/serviceAccounts/broker@local-project.iam.gserviceaccount.com:generateAccessToken"
        ),
        "service_account_impersonation": {"token_lifetime_seconds": 3600},
        "token_url": format!("{base}/v1/token"),
        "credential_source": {
            "environment_id": "aws1",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
        },
        "universe_domain": "googleapis.com"
    })
    .to_string()
}

/// A function process for `side`, with exactly the environment Lambda and the broker give it.
fn function(
    setup: &Setup,
    side: Side,
    google: &GoogleEmulator,
    runtime_api: &str,
    extra: &[(&str, &str)],
    log: &str,
) -> Command {
    let mut command = match side {
        Side::Python => {
            let mut command = Command::new(&setup.python);
            command.arg(&setup.peer);
            command
        }
        Side::Broker | Side::BrokerPrefetch => Command::new(&setup.broker),
    };
    let output = log_file(setup, log);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &setup.logs)
        .env("LANG", "C.UTF-8")
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .env("AWS_ACCESS_KEY_ID", gcp_wif_emulator::DEFAULT_ACCESS_KEY_ID)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY,
        )
        .env("AWS_SESSION_TOKEN", "bench-session-token")
        .env("AWS_REGION", "us-east-1")
        .env("BROKER_CREDENTIAL_CONFIG", credential_config(google))
        .env("BROKER_ALLOW_LOOPBACK_ENDPOINTS", "true")
        .env("BROKER_ALLOWED_CALLERS", ALLOWED_CALLERS)
        .env("GOOGLE_CLOUD_PROJECT", "local-project")
        .env("BROKER_VERTEX_ENDPOINT", &google.base)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("log file"))
        .stderr(output)
        .kill_on_drop(true);
    if side == Side::BrokerPrefetch {
        command.env("BROKER_PREFETCH_TOKEN", "true");
    }
    command
}

async fn stop(mut child: Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

// ---------------------------------------------------------------------------------------------
// Phase 1: cold starts under the harness's own Runtime API

/// `POST /token` without a body: the default request, the one `BROKER_PREFETCH_TOKEN` fetches.
fn default_token_event() -> String {
    let mut event: Value = serde_json::from_str(TOKEN_EVENT).expect("the token event");
    event["body"] = Value::Null;
    event["headers"]["content-length"] = json!("0");
    event.to_string()
}

/// One cold start as the harness's Runtime API saw it.
#[derive(Default)]
struct ColdRun {
    event: String,
    served: bool,
    next_at: Option<Instant>,
    answer: Option<(Instant, String)>,
    done: Option<oneshot::Sender<()>>,
}

type ColdState = Arc<Mutex<ColdRun>>;

async fn next_invocation(State(state): State<ColdState>) -> axum::response::Response {
    let event = {
        let mut run = state.lock().expect("cold run");
        if run.served {
            None
        } else {
            run.served = true;
            run.next_at = Some(Instant::now());
            Some(run.event.clone())
        }
    };
    let Some(event) = event else {
        // One invocation per process: later polls wait until the harness ends the process.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_millis()
        + 600_000;
    (
        [
            ("content-type", "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", "cold-start".to_owned()),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:bench".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".to_owned(),
            ),
        ],
        event,
    )
        .into_response()
}

async fn invocation_answer(State(state): State<ColdState>, body: Bytes) -> StatusCode {
    let mut run = state.lock().expect("cold run");
    run.answer = Some((Instant::now(), String::from_utf8_lossy(&body).into_owned()));
    if let Some(done) = run.done.take() {
        let _ = done.send(());
    }
    StatusCode::ACCEPTED
}

struct ColdSample {
    ready: Duration,
    first_token: Duration,
    /// With `BROKER_PREFETCH_TOKEN`: the `latency_ms` of the broker's `token_prefetched` line.
    prefetch_ms: Option<f64>,
}

struct Cold {
    samples: HashMap<&'static str, Vec<ColdSample>>,
    /// STS and IAM calls one cold start of each side made.
    calls: HashMap<&'static str, (u64, u64)>,
}

async fn cold_starts(setup: &Setup, google: &GoogleEmulator) -> Cold {
    let state: ColdState = Arc::default();
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_answer),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_answer),
        )
        .route("/2018-06-01/runtime/init/error", post(invocation_answer))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("a loopback port");
    // Real Lambda's form: host and port, no scheme.
    let runtime_api = listener.local_addr().expect("address").to_string();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = client();

    let sides = [Side::Broker, Side::BrokerPrefetch, Side::Python];
    let mut cold = Cold {
        samples: HashMap::new(),
        calls: HashMap::new(),
    };
    // Round 0 warms the page cache and Python's bytecode cache; it is not counted.
    for round in 0..=setup.cold_runs {
        for side in sides {
            let before = google.calls(&client).await;
            let sample = cold_run(setup, google, &state, &runtime_api, side).await;
            let after = google.calls(&client).await;
            if round > 0 {
                cold.samples.entry(side.name()).or_default().push(sample);
                cold.calls
                    .insert(side.name(), (after.0 - before.0, after.1 - before.1));
            }
        }
    }
    server.abort();
    cold
}

async fn cold_run(
    setup: &Setup,
    google: &GoogleEmulator,
    state: &ColdState,
    runtime_api: &str,
    side: Side,
) -> ColdSample {
    let (done, finished) = oneshot::channel();
    *state.lock().expect("cold run") = ColdRun {
        event: default_token_event(),
        done: Some(done),
        ..ColdRun::default()
    };
    let log = format!("cold-{}.log", side.name());
    let mut command = function(setup, side, google, runtime_api, &[], &log);
    let started = Instant::now();
    let child = command.spawn().expect("the function starts");
    if tokio::time::timeout(Duration::from_secs(60), finished)
        .await
        .is_err()
    {
        stop(child).await;
        panic!(
            "{} gave no answer within 60 s; see {}",
            side.name(),
            setup.logs.join(&log).display()
        );
    }
    stop(child).await;

    let run = std::mem::take(&mut *state.lock().expect("cold run"));
    let (answered_at, answer) = run.answer.expect("an answer");
    let answer: Value = serde_json::from_str(&answer).expect("the answer is JSON");
    assert_eq!(
        answer["statusCode"],
        200,
        "{} cold start answered {answer}",
        side.name()
    );
    ColdSample {
        ready: run.next_at.expect("a poll") - started,
        first_token: answered_at - started,
        prefetch_ms: prefetch_latency(&setup.logs.join(&log)),
    }
}

/// The `latency_ms` of a `token_prefetched` line in a broker's JSON log, if there is one.
fn prefetch_latency(log: &Path) -> Option<f64> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|record| record["fields"]["event"] == "token_prefetched")
        .and_then(|record| record["fields"]["latency_ms"].as_f64())
}

// ---------------------------------------------------------------------------------------------
// Phases 2 and 3: warm, under cargo-lambda's Runtime API emulator

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// A client that opens a new connection per request. cargo-lambda's emulator never sets
/// TCP_NODELAY, so on a kept-alive connection, where Linux delays ACKs, a streamed body's
/// chunks wait ~40 ms behind its headers on the way to the client: the emulator's cost, not the
/// broker's. A fresh connection is still in quick-ACK mode.
fn fresh_connection_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client")
}

/// cargo-lambda's Runtime API emulator and one function process under it.
struct Stack {
    pid: u32,
    client: reqwest::Client,
    invoker: Invoker,
    function: Child,
    runtime: Child,
}

/// Sends invocations to one runtime emulator; cheap to clone for concurrent ones.
#[derive(Clone)]
struct Invoker {
    client: reqwest::Client,
    url: String,
    streaming: bool,
}

impl Stack {
    async fn start(
        setup: &Setup,
        google: &GoogleEmulator,
        side: Side,
        extra: &[(&str, &str)],
        name: &str,
    ) -> Self {
        let port = free_port();
        let runtime = Command::new(&setup.cargo_lambda)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(log_file(setup, &format!("{name}-runtime.log")))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cargo lambda watch starts");
        wait_for_port(port, "cargo lambda watch").await;
        let runtime_api = format!("http://127.0.0.1:{port}/.rt");
        let function = function(
            setup,
            side,
            google,
            &runtime_api,
            extra,
            &format!("{name}.log"),
        )
        .spawn()
        .expect("the function starts");
        let client = client();
        let stack = Self {
            pid: function.id().expect("a pid"),
            invoker: Invoker {
                client: client.clone(),
                url: format!("http://127.0.0.1:{port}/2015-03-31/functions/_/invocations"),
                streaming: extra.contains(&("BROKER_RESPONSE_MODE", "streaming")),
            },
            client,
            function,
            runtime,
        };
        let (status, _) = stack.invoke(HEALTHZ_EVENT).await;
        assert_eq!(status, 200, "{name} is not healthy");
        stack
    }

    async fn stop(self) {
        stop(self.function).await;
        stop(self.runtime).await;
    }

    async fn invoke(&self, event: &str) -> (u16, String) {
        self.invoker.invoke(event).await
    }

    /// The round trip of one invocation that must answer 200.
    async fn timed(&self, event: &str) -> Duration {
        let started = Instant::now();
        let (status, body) = self.invoke(event).await;
        let elapsed = started.elapsed();
        assert_eq!(status, 200, "an invocation answered {status}: {body}");
        elapsed
    }

    /// Time to the first server-sent event of a streamed invocation; reads the stream to its end.
    async fn first_event(&self, event: &str) -> Duration {
        let started = Instant::now();
        let response = self
            .client
            .post(&self.invoker.url)
            .body(event.to_owned())
            .send()
            .await
            .expect("an invocation");
        assert_eq!(response.status(), 200);
        until_first_event(response, started).await
    }

    fn memory(&self) -> Memory {
        Memory::of(self.pid)
    }
}

impl Invoker {
    /// One invocation: its status and the answer's body.
    async fn invoke(&self, event: &str) -> (u16, String) {
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(event.to_owned())
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("an invocation");
        if self.streaming {
            let status = response.status().as_u16();
            return (status, response.text().await.expect("a streamed body"));
        }
        let answer: Value = response.json().await.expect("a JSON answer");
        let status = answer["statusCode"].as_u64().unwrap_or(0) as u16;
        (
            status,
            answer["body"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

async fn until_first_event(mut response: reqwest::Response, started: Instant) -> Duration {
    let mut seen = Vec::new();
    let mut first = None;
    while let Some(chunk) = response.chunk().await.expect("a streamed body") {
        seen.extend_from_slice(&chunk);
        if first.is_none() && seen.windows(5).any(|w| w == b"data:") {
            first = Some(started.elapsed());
        }
    }
    first.unwrap_or_else(|| panic!("no event in {}", String::from_utf8_lossy(&seen)))
}

/// VmRSS and VmHWM of a process, in bytes.
#[derive(Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        Self {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }
}

/// What one side showed while warm.
#[derive(Default)]
struct Warm {
    healthz: Vec<Duration>,
    token: Vec<Duration>,
    generate: Vec<Duration>,
    direct: Vec<Duration>,
    /// VmRSS every 100 invocations, from the ready process (index 0) to the last.
    rss: Vec<u64>,
    hwm: u64,
    /// STS and IAM calls during the memory run, the first cold ones included.
    calls: (u64, u64),
}

async fn memory_run(
    setup: &Setup,
    stack: &Stack,
    google: &GoogleEmulator,
    events: &[&str],
) -> (Vec<u64>, u64, (u64, u64)) {
    let before = google.calls(&stack.client).await;
    let mut rss = vec![stack.memory().rss];
    for i in 1..=setup.memory_invocations {
        stack.timed(events[i % events.len()]).await;
        if i % 100 == 0 {
            rss.push(stack.memory().rss);
        }
    }
    let after = google.calls(&stack.client).await;
    (
        rss,
        stack.memory().hwm,
        (after.0 - before.0, after.1 - before.1),
    )
}

async fn warm_broker(setup: &Setup, google: &GoogleEmulator) -> Warm {
    let stack = Stack::start(setup, google, Side::Broker, &[], "warm-broker").await;
    let mut warm = Warm::default();
    (warm.rss, warm.hwm, warm.calls) = memory_run(
        setup,
        &stack,
        google,
        &[TOKEN_EVENT, HEALTHZ_EVENT, GENERATE_EVENT],
    )
    .await;

    let (_, token) = stack.invoke(TOKEN_EVENT).await;
    let bearer: Value = serde_json::from_str(&token).expect("a token answer");
    let bearer = bearer["access_token"].as_str().expect("a token").to_owned();
    let direct_url = format!("{}{MODEL_PATH}:generateContent", google.base);
    let direct = |client: reqwest::Client| {
        let (url, bearer) = (direct_url.clone(), bearer.clone());
        async move {
            let started = Instant::now();
            let response = client
                .post(url)
                .bearer_auth(bearer)
                .header("content-type", "application/json")
                .body(GENERATE_BODY)
                .send()
                .await
                .expect("a direct call");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("a body");
            started.elapsed()
        }
    };
    for _ in 0..30 {
        direct(stack.client.clone()).await;
    }
    for _ in 0..setup.warm_runs {
        warm.healthz.push(stack.timed(HEALTHZ_EVENT).await);
        warm.token.push(stack.timed(TOKEN_EVENT).await);
        warm.generate.push(stack.timed(GENERATE_EVENT).await);
        warm.direct.push(direct(stack.client.clone()).await);
    }
    stack.stop().await;
    warm
}

/// The memory run again with `AWS_LAMBDA_MAX_CONCURRENCY=2`: lambda_runtime's concurrent mode
/// does not copy each invocation's trace id into the environment (`_X_AMZN_TRACE_ID`), which
/// glibc's setenv never frees; sequential mode does.
async fn concurrent_mode_memory(setup: &Setup, google: &GoogleEmulator) -> Vec<u64> {
    let stack = Stack::start(
        setup,
        google,
        Side::Broker,
        &[("AWS_LAMBDA_MAX_CONCURRENCY", "2")],
        "memory-concurrent-broker",
    )
    .await;
    let events = [TOKEN_EVENT, HEALTHZ_EVENT, GENERATE_EVENT];
    let (rss, _, _) = memory_run(setup, &stack, google, &events).await;
    stack.stop().await;
    rss
}

async fn warm_python(setup: &Setup, google: &GoogleEmulator) -> Warm {
    let stack = Stack::start(setup, google, Side::Python, &[], "warm-python").await;
    let mut warm = Warm::default();
    (warm.rss, warm.hwm, warm.calls) =
        memory_run(setup, &stack, google, &[TOKEN_EVENT, HEALTHZ_EVENT]).await;
    for _ in 0..setup.warm_runs {
        warm.healthz.push(stack.timed(HEALTHZ_EVENT).await);
        warm.token.push(stack.timed(TOKEN_EVENT).await);
    }
    stack.stop().await;
    warm
}

#[derive(Default)]
struct Streaming {
    healthz: Vec<Duration>,
    broker: Vec<Duration>,
    direct: Vec<Duration>,
}

async fn streaming(
    setup: &Setup,
    google: &GoogleEmulator,
    extra: &[(&str, &str)],
    name: &str,
) -> Streaming {
    let mut env = vec![("BROKER_RESPONSE_MODE", "streaming")];
    env.extend_from_slice(extra);
    let mut stack = Stack::start(setup, google, Side::Broker, &env, name).await;
    stack.client = fresh_connection_client();
    stack.invoker.client = stack.client.clone();
    let (_, token) = stack.invoke(TOKEN_EVENT).await;
    let bearer: Value = serde_json::from_str(&token).expect("a token answer");
    let bearer = bearer["access_token"].as_str().expect("a token").to_owned();
    let url = format!("{}{MODEL_PATH}:streamGenerateContent?alt=sse", google.base);
    let direct = || async {
        let started = Instant::now();
        let response = stack
            .client
            .post(&url)
            .bearer_auth(&bearer)
            .header("content-type", "application/json")
            .body(GENERATE_BODY)
            .send()
            .await
            .expect("a direct call");
        assert_eq!(response.status(), 200);
        until_first_event(response, started).await
    };
    let mut result = Streaming::default();
    for round in 0..setup.stream_runs + 10 {
        let healthz = stack.timed(HEALTHZ_EVENT).await;
        let broker = stack.first_event(STREAM_EVENT).await;
        let direct = direct().await;
        if round >= 10 {
            result.healthz.push(healthz);
            result.broker.push(broker);
            result.direct.push(direct);
        }
    }
    stack.stop().await;
    result
}

// ---------------------------------------------------------------------------------------------
// Phase 4: upstream economy

struct Economy {
    /// Per wave: its name, and the STS and IAM calls it caused.
    waves: Vec<(&'static str, u64, u64)>,
}

async fn economy(setup: &Setup, google: &GoogleEmulator) -> Economy {
    let concurrency = CONCURRENCY.to_string();
    let stack = Stack::start(
        setup,
        google,
        Side::Broker,
        &[("AWS_LAMBDA_MAX_CONCURRENCY", concurrency.as_str())],
        "economy-broker",
    )
    .await;
    let waves: [(&'static str, Vec<&'static str>); 3] = [
        (
            "64 x POST /token (lifetime 1800 s)",
            vec![TOKEN_EVENT; CONCURRENCY],
        ),
        (
            "64 x generateContent (default token)",
            vec![GENERATE_EVENT; CONCURRENCY],
        ),
        (
            "64 x both, mixed",
            [TOKEN_EVENT, GENERATE_EVENT].repeat(CONCURRENCY / 2),
        ),
    ];
    let mut economy = Economy { waves: Vec::new() };
    for (name, events) in waves {
        let before = google.calls(&stack.client).await;
        let answers = all_at_once(&stack, &events).await;
        let after = google.calls(&stack.client).await;
        for (status, body) in answers {
            assert_eq!(status, 200, "{name}: {body}");
        }
        economy
            .waves
            .push((name, after.0 - before.0, after.1 - before.1));
    }
    stack.stop().await;
    economy
}

async fn all_at_once(stack: &Stack, events: &[&'static str]) -> Vec<(u16, String)> {
    let mut set = tokio::task::JoinSet::new();
    for &event in events {
        let invoker = stack.invoker.clone();
        set.spawn(async move { invoker.invoke(event).await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = set.join_next().await {
        answers.push(answer.expect("an invocation task"));
    }
    answers
}

// ---------------------------------------------------------------------------------------------
// Criterion's result for the handler

/// The median, in nanoseconds, criterion estimated for `id` (its directory name).
fn criterion_median(dir: &Path, id: &str) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: Value = serde_json::from_str(&text).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

// ---------------------------------------------------------------------------------------------
// The report

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// p90, and how many samples took over 20 ms (a delayed-ACK stall is ~40 ms).
fn tail(samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let p90 = sorted[sorted.len() * 9 / 10];
    let stalled = sorted
        .iter()
        .filter(|d| **d > Duration::from_millis(20))
        .count();
    format!("{} ({stalled} of {})", ms(p90), sorted.len())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: f64) -> String {
    format!("{d:.0} µs")
}

fn ratio(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        f64::INFINITY
    } else {
        a / b
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Verdict {
    Pass,
    Miss,
    Info,
}

struct Row {
    measure: String,
    broker: String,
    python: String,
    result: String,
    target: String,
    verdict: Verdict,
}

#[derive(Default)]
struct Report {
    /// Invocations in the memory run.
    invocations: usize,
    rows: Vec<Row>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    fn row(
        &mut self,
        measure: &str,
        broker: String,
        python: String,
        result: String,
        target: &str,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            measure: measure.to_owned(),
            broker,
            python,
            result,
            target: target.to_owned(),
            verdict,
        });
    }

    fn check(
        &mut self,
        measure: &str,
        broker: String,
        python: String,
        result: String,
        target: &str,
        pass: bool,
    ) {
        let verdict = if pass { Verdict::Pass } else { Verdict::Miss };
        self.row(measure, broker, python, result, target, verdict);
    }

    fn record(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_owned(), value);
    }

    fn cold(&mut self, cold: &Cold) {
        let p50 = |side: &str, f: fn(&ColdSample) -> Duration| {
            median(&cold.samples[side].iter().map(f).collect::<Vec<_>>())
        };
        let ready = (p50("broker", |s| s.ready), p50("python", |s| s.ready));
        let first = (
            p50("broker", |s| s.first_token),
            p50("python", |s| s.first_token),
        );
        let ready_ratio = ratio(ready.1.as_secs_f64(), ready.0.as_secs_f64());
        let first_ratio = ratio(first.1.as_secs_f64(), first.0.as_secs_f64());
        self.check(
            "Cold start: process start to ready (p50)",
            ms(ready.0),
            ms(ready.1),
            format!("{ready_ratio:.1}x faster"),
            ">= 10x",
            ready_ratio >= 10.0,
        );
        self.check(
            "First token after cold start, end to end (p50)",
            ms(first.0),
            ms(first.1),
            format!("{first_ratio:.1}x faster"),
            ">= 5x",
            first_ratio >= 5.0,
        );
        for side in ["broker", "broker-prefetch", "python"] {
            let samples = &cold.samples[side];
            self.record(
                &format!("cold_{side}"),
                json!({
                    "ready_ms": samples.iter().map(|s| s.ready.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
                    "first_token_ms": samples.iter().map(|s| s.first_token.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
                    "calls_per_cold_start": {"sts": cold.calls[side].0, "iam": cold.calls[side].1},
                }),
            );
        }
    }

    fn warm(&mut self, handler: Option<f64>, healthz: Option<f64>, broker: &Warm, python: &Warm) {
        match handler {
            Some(ns) => self.check(
                "Warm token (cache hit) in the handler, criterion p50",
                us(ns / 1000.0),
                "-".into(),
                us(ns / 1000.0),
                "< 100 µs",
                ns < 100_000.0,
            ),
            None => self.row(
                "Warm token (cache hit) in the handler, criterion p50",
                "not run".into(),
                "-".into(),
                "criterion results missing".into(),
                "< 100 µs",
                Verdict::Miss,
            ),
        }
        let floor = median(&broker.healthz);
        let python_floor = median(&python.healthz);
        let token = (median(&broker.token), median(&python.token));
        self.row(
            "Warm /healthz round trip via runtime emulator (p50; broker's = floor)",
            ms(floor),
            ms(python_floor),
            "-".into(),
            "-",
            Verdict::Info,
        );
        self.row(
            "Warm /token (cache hit) round trip via runtime emulator (p50)",
            ms(token.0),
            ms(token.1),
            "-".into(),
            "-",
            Verdict::Info,
        );
        let above = |d: Duration| micros(d) - micros(floor);
        let (broker_above, python_above) = (above(token.0), above(token.1));
        // A round trip cannot resolve the broker's few microseconds above its floor (the
        // difference can come out at or below zero), so the ratio divides by no less than what
        // criterion measures in process between the two handlers.
        let in_process = match (handler, healthz) {
            (Some(token), Some(healthz)) => (token - healthz) / 1000.0,
            _ => 1.0,
        };
        let divisor = broker_above.max(in_process).max(1.0);
        let above_ratio = ratio(python_above, divisor);
        self.check(
            "Warm token above the floor (p50 - broker's /healthz p50)",
            format!("{} (in process: {})", us(broker_above), us(in_process)),
            us(python_above),
            format!("{above_ratio:.1}x less"),
            ">= 5x less",
            above_ratio >= 5.0,
        );
        let own = python_above - (micros(python_floor) - micros(floor));
        self.row(
            "  Python above its own /healthz instead",
            "-".into(),
            us(own),
            format!("{:.1}x less", ratio(own, divisor)),
            "-",
            Verdict::Info,
        );
        let durations =
            |v: &[Duration]| v.iter().map(|d| d.as_secs_f64() * 1e6).collect::<Vec<_>>();
        self.record("handler_token_cache_hit_ns", json!(handler));
        self.record(
            "warm_us",
            json!({
                "broker": {"healthz": durations(&broker.healthz), "token": durations(&broker.token)},
                "python": {"healthz": durations(&python.healthz), "token": durations(&python.token)},
            }),
        );
    }

    fn forwarding(&mut self, broker: &Warm, stream: &Streaming, nodelay: Option<&Streaming>) {
        let floor = median(&broker.healthz);
        let (through, direct) = (median(&broker.generate), median(&broker.direct));
        let added = micros(through) - micros(floor) - micros(direct);
        self.check(
            "generateContent added by the broker (p50 through - floor - direct)",
            format!("{} through, {} direct", ms(through), ms(direct)),
            "-".into(),
            us(added),
            "< 1 ms",
            added < 1000.0,
        );

        // The floor is the buffered /healthz round trip, as for every other row: a streamed
        // answer pays what the streaming path costs, the runtime connection's included. The
        // streamed calls open a connection each (see fresh_connection_client), which the
        // kept-alive floor does not: the difference errs against the broker.
        let (through, direct) = (median(&stream.broker), median(&stream.direct));
        let added = micros(through) - micros(floor) - micros(direct);
        self.check(
            "Streaming time to first event added (p50 through - floor - direct)",
            format!("{} through, {} direct", ms(through), ms(direct)),
            "-".into(),
            us(added),
            "< 2 ms",
            added < 2000.0,
        );
        self.row(
            "  streamed first event through the broker, p90 (over 20 ms)",
            tail(&stream.broker),
            "-".into(),
            "-".into(),
            "-",
            Verdict::Info,
        );
        let stream_floor = median(&stream.healthz);
        self.row(
            "  streaming-mode /healthz round trip",
            ms(stream_floor),
            "-".into(),
            "-".into(),
            "-",
            Verdict::Info,
        );
        if let Some(nodelay) = nodelay {
            let (through, direct, stream_floor) = (
                median(&nodelay.broker),
                median(&nodelay.direct),
                median(&nodelay.healthz),
            );
            self.row(
                "  first event added, TCP_NODELAY forced on the broker's sockets (experiment)",
                format!(
                    "{} through, p90 {}, /healthz {}",
                    ms(through),
                    tail(&nodelay.broker),
                    ms(stream_floor)
                ),
                "-".into(),
                us(micros(through) - micros(floor) - micros(direct)),
                "-",
                Verdict::Info,
            );
        }
        let durations = |v: &[Duration]| v.iter().map(|d| micros(*d)).collect::<Vec<_>>();
        self.record(
            "forward_us",
            json!({
                "generate_through": durations(&broker.generate),
                "generate_direct": durations(&broker.direct),
                "stream_floor": durations(&stream.healthz),
                "stream_first_event_through": durations(&stream.broker),
                "stream_first_event_direct": durations(&stream.direct),
                "nodelay": nodelay.map(|n| json!({
                    "stream_floor": durations(&n.healthz),
                    "stream_first_event_through": durations(&n.broker),
                    "stream_first_event_direct": durations(&n.direct),
                })),
            }),
        );
    }

    fn memory(&mut self, broker: &Warm, python: &Warm, concurrent: &[u64]) {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / MIB);
        self.check(
            &format!("Peak RSS (VmHWM), start + {} invocations", self.invocations),
            mib(broker.hwm),
            mib(python.hwm),
            format!("{:.1}x less", ratio(python.hwm as f64, broker.hwm as f64)),
            "< 30 MB",
            (broker.hwm as f64) < 30_000_000.0,
        );
        // Allocators, pools and buffers settle during the first few hundred invocations; a leak
        // keeps going, so growth is read over the second half of the run. 64 KiB allows for
        // allocator noise (a flat run moves by a few pages).
        let growth = |rss: &[u64]| rss[rss.len() - 1] as i64 - rss[rss.len() / 2] as i64;
        let kib = |b: i64| format!("{:+} KiB", b / 1024);
        let label = format!(
            "RSS growth over the second half, invocations {} to {} (VmRSS)",
            self.invocations / 2,
            self.invocations
        );
        self.check(
            &label,
            kib(growth(&broker.rss)),
            kib(growth(&python.rss)),
            format!("{} at the end", mib(broker.rss[broker.rss.len() - 1])),
            "no growth (<= 64 KiB)",
            growth(&broker.rss) <= 64 * 1024,
        );
        self.row(
            "  same, broker in concurrent mode (AWS_LAMBDA_MAX_CONCURRENCY=2)",
            kib(growth(concurrent)),
            "-".into(),
            "no per-invocation setenv".into(),
            "-",
            Verdict::Info,
        );
        self.record(
            "rss_bytes_every_100",
            json!({"broker": broker.rss, "python": python.rss, "broker_concurrent": concurrent,
                   "broker_hwm": broker.hwm, "python_hwm": python.hwm}),
        );
    }

    fn size(&mut self, size: u64) {
        self.check(
            "Release binary (x86_64, stripped)",
            format!("{:.2} MiB", size as f64 / MIB),
            "-".into(),
            format!("{size} bytes"),
            "< 12 MB",
            size < 12_000_000,
        );
        self.record("binary_bytes", json!(size));
    }

    fn economy(&mut self, economy: &Economy, broker: &Warm, python: &Warm) {
        for (name, sts, iam) in &economy.waves {
            let expected = if name.contains("mixed") { 0 } else { 1 };
            self.check(
                &format!("Upstream calls: {name}"),
                format!("STS {sts}, IAM {iam}"),
                "-".into(),
                format!("new key: {}", expected == 1),
                if expected == 1 {
                    "<= 1 STS, <= 1 IAM"
                } else {
                    "0 (cached)"
                },
                *sts <= expected && *iam <= expected,
            );
        }
        self.row(
            &format!(
                "Upstream calls over {} sequential invocations",
                self.invocations
            ),
            format!("STS {}, IAM {}", broker.calls.0, broker.calls.1),
            format!("STS {}, IAM {}", python.calls.0, python.calls.1),
            "-".into(),
            "-",
            Verdict::Info,
        );
        self.record(
            "economy",
            json!(economy
                .waves
                .iter()
                .map(|(n, s, i)| json!({"wave": n, "sts": s, "iam": i}))
                .collect::<Vec<_>>()),
        );
    }

    fn prefetch(&mut self, cold: &Cold) {
        let p50 = |side: &str, f: fn(&ColdSample) -> Duration| {
            median(&cold.samples[side].iter().map(f).collect::<Vec<_>>())
        };
        let after_ready = |s: &ColdSample| s.first_token - s.ready;
        let (plain_ready, prefetch_ready) = (
            p50("broker", |s| s.ready),
            p50("broker-prefetch", |s| s.ready),
        );
        let (plain_wait, prefetch_wait) = (
            p50("broker", after_ready),
            p50("broker-prefetch", after_ready),
        );
        let mut fetched: Vec<f64> = cold.samples["broker-prefetch"]
            .iter()
            .filter_map(|s| s.prefetch_ms)
            .collect();
        fetched.sort_by(f64::total_cmp);
        let fetched = fetched.get(fetched.len() / 2).copied().unwrap_or(f64::NAN);
        self.row(
            "BROKER_PREFETCH_TOKEN: init (ready) without / with; token fetch inside init",
            format!("{} / {}", ms(plain_ready), ms(prefetch_ready)),
            "-".into(),
            format!("+{fetched:.2} ms (token_prefetched)"),
            "-",
            Verdict::Info,
        );
        self.row(
            "BROKER_PREFETCH_TOKEN: first caller's wait after ready, without / with",
            format!("{} / {}", ms(plain_wait), ms(prefetch_wait)),
            "-".into(),
            format!("-{}", ms(plain_wait.saturating_sub(prefetch_wait))),
            "-",
            Verdict::Info,
        );
        self.row(
            "BROKER_PREFETCH_TOKEN: first token end to end, without / with",
            format!(
                "{} / {}",
                ms(p50("broker", |s| s.first_token)),
                ms(p50("broker-prefetch", |s| s.first_token))
            ),
            "-".into(),
            "-".into(),
            "-",
            Verdict::Info,
        );
    }

    fn table(&self) -> String {
        let mut out = String::from(
            "| Measure | Broker | Python peer | Result | Target | |\n|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            let verdict = match row.verdict {
                Verdict::Pass => "PASS",
                Verdict::Miss => "MISS",
                Verdict::Info => "",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                row.measure, row.broker, row.python, row.result, row.target, verdict
            ));
        }
        out
    }
}
