//! Runs the real broker binary under cargo-lambda's Runtime API emulator, against the Google
//! emulator in this process, all on loopback.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gcp_wif_emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The role the sample events are signed by.
pub const ALLOWED_CALLERS: &str = "arn:aws:iam::123456789012:role/app-role";

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from the project's venv, made by `scripts/bootstrap`.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/bootstrap (the README's test command does)",
        path.display()
    );
    path
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not start listening on port {port}");
}

/// The Google emulator with its default test keys, audience and service account.
pub async fn google_emulator() -> RunningEmulator {
    gcp_wif_emulator::spawn(
        EmulatorConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("the Google emulator starts")
}

/// An `external_account` configuration pointing at `emulator`.
pub fn credential_config(emulator: &RunningEmulator) -> Value {
    let base = emulator.base_url();
    serde_json::json!({
        "type": "external_account",
        "audience": gcp_wif_emulator::DEFAULT_AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "service_account_impersonation_url": format!(
            "{base}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
            gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT
        ),
        "service_account_impersonation": {"token_lifetime_seconds": 3600},
        "token_url": format!("{base}/v1/token"),
        "credential_source": {
            "environment_id": "aws1",
            "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
            "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "imdsv2_session_token_url": "http://169.254.169.254/latest/api/token"
        },
        "universe_domain": "googleapis.com"
    })
}

/// The environment a broker needs to run against `emulator` with the emulator's AWS keys,
/// Gemini forwarding included.
pub fn broker_env(emulator: &RunningEmulator) -> HashMap<String, String> {
    [
        (
            "BROKER_CREDENTIAL_CONFIG",
            credential_config(emulator).to_string(),
        ),
        ("BROKER_ALLOW_LOOPBACK_ENDPOINTS", "true".into()),
        ("BROKER_ALLOWED_CALLERS", ALLOWED_CALLERS.into()),
        (
            "AWS_ACCESS_KEY_ID",
            gcp_wif_emulator::DEFAULT_ACCESS_KEY_ID.into(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY.into(),
        ),
        ("AWS_SESSION_TOKEN", "local-session-token-for-tests".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".into()),
        ("GOOGLE_CLOUD_PROJECT", "local-project".into()),
        ("BROKER_VERTEX_ENDPOINT", emulator.base_url()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A child process whose output is collected for assertions.
pub struct Process {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Starts `command` with its stdout and stderr collected.
    pub fn spawn(mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the process starts");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(collect(stdout, output.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(collect(stderr, output.clone()));
        }
        Self {
            child,
            output,
            readers,
        }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Waits for the process to exit, up to `limit`, and for its output to be read to the end.
    pub async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)?;
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(limit, reader).await;
        }
        Some(status)
    }
}

fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut output = into.lock().expect("output lock");
            output.push_str(&line);
            output.push('\n');
        }
    })
}

/// cargo-lambda's Runtime API emulator.
pub struct RuntimeEmulator {
    pub port: u16,
    _process: Process,
}

impl RuntimeEmulator {
    /// Starts `cargo lambda watch --only-lambda-apis` on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with_args(&[]).await
    }

    /// Starts the emulator with extra arguments, e.g. `["--timeout", "3"]`.
    pub async fn start_with_args(args: &[&str]) -> Self {
        let port = free_port();
        let mut command = Command::new(venv_tool("cargo-lambda"));
        command
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .args(args)
            .current_dir(root());
        let process = Process::spawn(command);
        wait_for_port(port, "cargo lambda watch").await;
        Self {
            port,
            _process: process,
        }
    }

    /// The `AWS_LAMBDA_RUNTIME_API` value for a function served by this emulator.
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }
}

/// The broker binary, started against a runtime emulator.
pub fn start_broker(runtime: &RuntimeEmulator, env: &HashMap<String, String>) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gcp-wif-broker"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", scratch_dir("home"))
        .env("AWS_LAMBDA_RUNTIME_API", runtime.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .envs(env);
    Process::spawn(command)
}

/// A directory for test scratch files, unique per call.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gcp-wif-broker-test-{}-{name}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// An API Gateway / Function URL style response, decoded.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    /// The body as JSON when it parses, else as a string.
    pub body: Value,
    /// The body as received.
    pub text: String,
    /// Streaming mode: each chunk of the body with the moment it arrived.
    pub chunks: Vec<(Instant, Vec<u8>)>,
    /// Buffered mode: the function's whole JSON answer; streaming mode: the text.
    pub raw: Value,
}

/// Sends invocations to a runtime emulator; cheap to clone for concurrent calls.
#[derive(Clone)]
pub struct Invoker {
    client: reqwest::Client,
    port: u16,
    streaming: bool,
}

impl Invoker {
    /// Invokes the function with `event` and decodes its HTTP-shaped answer.
    pub async fn invoke(&self, event: &Value) -> Answer {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/_/invocations",
            self.port
        );
        let mut response = self
            .client
            .post(url)
            .json(event)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("invocation failed: {e}"));
        if self.streaming {
            // The runtime emulator answers with the function's prelude and streams its body.
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let mut chunks = Vec::new();
            while let Some(chunk) = response.chunk().await.expect("streamed body") {
                chunks.push((Instant::now(), chunk.to_vec()));
            }
            let bytes: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.clone()).collect();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
            return Answer {
                status,
                headers,
                body,
                raw: Value::String(text.clone()),
                text,
                chunks,
            };
        }
        let raw: Value = response.json().await.expect("invocation answer is JSON");
        if raw.get("statusCode").is_none() {
            // A raw (non-HTTP) event is answered with the body alone: the error envelope.
            let status = raw["error"]["code"]
                .as_u64()
                .unwrap_or_else(|| panic!("neither statusCode nor an error code in {raw}"))
                as u16;
            return Answer {
                status,
                headers: HashMap::new(),
                body: raw.clone(),
                text: raw.to_string(),
                chunks: Vec::new(),
                raw,
            };
        }
        let status = raw["statusCode"]
            .as_u64()
            .unwrap_or_else(|| panic!("no statusCode in {raw}")) as u16;
        // REST (v1) answers carry headers in multiValueHeaders, the others in headers.
        let mut headers: HashMap<String, String> = HashMap::new();
        if let Some(multi) = raw["multiValueHeaders"].as_object() {
            for (name, values) in multi {
                if let Some(first) = values.get(0).and_then(Value::as_str) {
                    headers.insert(name.to_ascii_lowercase(), first.to_owned());
                }
            }
        }
        if let Some(single) = raw["headers"].as_object() {
            for (name, value) in single {
                headers.insert(
                    name.to_ascii_lowercase(),
                    value.as_str().unwrap_or_default().to_owned(),
                );
            }
        }
        let text = raw["body"].as_str().unwrap_or_default().to_owned();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        Answer {
            status,
            headers,
            body,
            text,
            chunks: Vec::new(),
            raw,
        }
    }
}

/// A running broker with its emulators: the whole local stack.
pub struct Stack {
    pub google: RunningEmulator,
    pub runtime: RuntimeEmulator,
    pub broker: Process,
    invoker: Invoker,
}

impl Stack {
    /// Starts everything with the default broker environment changed by `overrides`.
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        let google = google_emulator().await;
        let mut env = broker_env(&google);
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        Self::start_with(google, env).await
    }

    /// Starts a runtime emulator and the broker with exactly `env`.
    pub async fn start_with(google: RunningEmulator, env: HashMap<String, String>) -> Self {
        Self::start_with_runtime(google, env, RuntimeEmulator::start().await).await
    }

    /// Starts the broker with exactly `env` under `runtime`.
    pub async fn start_with_runtime(
        google: RunningEmulator,
        env: HashMap<String, String>,
        runtime: RuntimeEmulator,
    ) -> Self {
        let broker = start_broker(&runtime, &env);
        let invoker = Invoker {
            client: reqwest::Client::new(),
            port: runtime.port,
            streaming: env.get("BROKER_RESPONSE_MODE").map(String::as_str) == Some("streaming"),
        };
        Self {
            google,
            runtime,
            broker,
            invoker,
        }
    }

    /// A handle for concurrent invocations.
    pub fn invoker(&self) -> Invoker {
        self.invoker.clone()
    }

    /// Invokes the function with `event`.
    pub async fn invoke(&self, event: &Value) -> Answer {
        self.invoker.invoke(event).await
    }

    /// Invokes the function with an event file from `events/`.
    pub async fn invoke_file(&self, name: &str) -> Answer {
        self.invoke(&event(name)).await
    }

    /// The broker's log lines that are JSON objects.
    pub fn log_records(&self) -> Vec<Value> {
        self.broker
            .output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// The broker's log records whose `event` field is `name`.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.log_records()
            .into_iter()
            .filter(|r| event_field(r) == Some(name))
            .collect()
    }
}

/// The `event` field of a JSON log record, wherever the subscriber put it.
pub fn event_field(record: &Value) -> Option<&str> {
    record
        .get("fields")
        .and_then(|f| f.get("event"))
        .or_else(|| record.get("event"))
        .and_then(Value::as_str)
}

/// A field of a JSON log record.
pub fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    record
        .get("fields")
        .and_then(|f| f.get(name))
        .or_else(|| record.get(name))
        .unwrap_or(&Value::Null)
}

/// An event from `events/`, parsed.
pub fn event(name: &str) -> Value {
    let path = root().join("events").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The file names in `events/`.
pub fn event_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("events"))
        .expect("events/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// `path` relative to the project root, for messages.
pub fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}
