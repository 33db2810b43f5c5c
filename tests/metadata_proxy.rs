//! gcp-metadata-proxy end to end, on loopback: Google's own clients (Python google-auth, Rust
//! google-cloud-auth, LiteLLM) ask the proxy as they would ask a Compute Engine metadata
//! server; the proxy signs its call to the emulator's Function URL front with the workload's
//! AWS key; the front checks the signature and invokes the real broker binary under
//! cargo-lambda's runtime emulator; the broker gets the token from the Google emulator, whose
//! Vertex AI accepts only tokens it issued.
//!
//! ```text
//! client --metadata API--> proxy --SigV4 (lambda)--> front --event--> broker --> emulator
//! ```

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use common::{field, free_port, scratch_dir, venv_tool, wait_for_port, Process, Stack};
use gcp_wif_emulator::{spawn_front, FrontConfig, Principal, RunningFront};
use serde_json::{json, Value};
use tokio::process::Command;
use tokio::sync::Notify;

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// The broker, the front before it, and a proxy in front of that.
struct ProxyStack {
    stack: Stack,
    front: RunningFront,
    proxy: Process,
    port: u16,
    http: reqwest::Client,
}

impl ProxyStack {
    /// The whole chain with the broker streaming (as behind the deployed Function URL) and
    /// the proxy's environment changed by `proxy_env`.
    async fn start(proxy_env: &[(&str, &str)]) -> Self {
        Self::start_with(&[("BROKER_RESPONSE_MODE", "streaming")], proxy_env).await
    }

    async fn start_with(broker_env: &[(&str, &str)], proxy_env: &[(&str, &str)]) -> Self {
        let stack = Stack::start(broker_env).await;
        let front = spawn_front(
            FrontConfig::new(format!("http://127.0.0.1:{}", stack.runtime.port)),
            "127.0.0.1:0".parse().expect("a loopback address"),
        )
        .await
        .expect("the front binds a free port");
        let token_url = format!("{}/token", front.url());
        let mut env = vec![("METADATA_PROXY_TOKEN_URL", token_url.as_str())];
        env.extend_from_slice(proxy_env);
        let (proxy, port) = start_proxy(&env, &[]).await;
        Self {
            stack,
            front,
            proxy,
            port,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET path` with `Metadata-Flavor: Google`.
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nproxy log:\n{}", self.proxy.output()))
    }

    async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

/// The AWS environment of a workload whose key the emulator and its front know.
fn workload_aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", gcp_wif_emulator::DEFAULT_ACCESS_KEY_ID),
        (
            "AWS_SECRET_ACCESS_KEY",
            gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY,
        ),
        ("AWS_SESSION_TOKEN", "workload-session-token"),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// Starts the proxy binary with the workload's AWS keys, `env` and `extra` on a free port,
/// and waits until it listens.
async fn start_proxy(env: &[(&str, &str)], extra: &[(&str, &str)]) -> (Process, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = proxy_command();
    command
        .envs(workload_aws_env())
        .env("METADATA_PROXY_SIGNING_SERVICE", "lambda")
        .env("METADATA_PROXY_ADDR", &listen)
        .envs(env.iter().copied())
        .envs(extra.iter().copied());
    let process = Process::spawn(command);
    wait_for_port(port, "gcp-metadata-proxy").await;
    (process, port)
}

/// The proxy binary with a clean environment: JSON logs, no AWS profile, no proxy.
fn proxy_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gcp-metadata-proxy"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", scratch_dir("proxy-home"))
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO");
    command
}

/// The environment of a Python client that knows the proxy only through Google's variables.
/// Every address but loopback goes to a dead proxy, so nothing can reach the internet.
fn python_env(proxy_port: u16, vertex_base_url: &str) -> Vec<(String, String)> {
    let host = format!("127.0.0.1:{proxy_port}");
    [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", scratch_dir("python-home").display().to_string()),
        ("GCE_METADATA_HOST", host.clone()),
        ("GCE_METADATA_IP", host),
        ("NO_PROXY", "127.0.0.1,localhost".into()),
        ("HTTP_PROXY", "http://127.0.0.1:9".into()),
        ("HTTPS_PROXY", "http://127.0.0.1:9".into()),
        ("LITELLM_LOCAL_MODEL_COST_MAP", "True".into()),
        ("LITELLM_TELEMETRY", "False".into()),
        ("VERTEX_BASE_URL", vertex_base_url.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs `tests/python/SCRIPT` with the project's Python and answers the JSON it prints.
async fn run_python(script: &str, env: Vec<(String, String)>, proxy: &Process) -> Value {
    let path = common::root().join("tests/python").join(script);
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(venv_tool("python"))
            .arg(&path)
            .env_clear()
            .envs(env)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish within 120 s"))
    .unwrap_or_else(|e| panic!("{script} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stderr}\nproxy log:\n{}",
        output.status,
        proxy.output()
    );
    eprintln!("{script} ran in {:.1} s", started.elapsed().as_secs_f64());
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

fn proxy_events(proxy: &Process, name: &str) -> Vec<Value> {
    proxy
        .output()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| common::event_field(record) == Some(name))
        .collect()
}

#[tokio::test]
async fn python_google_auth_default_gets_a_token_through_the_proxy_and_calls_vertex() {
    let chain = ProxyStack::start(&[]).await;

    let result = run_python(
        "adc_vertex_client.py",
        python_env(chain.port, &chain.stack.google.base_url()),
        &chain.proxy,
    )
    .await;

    assert_eq!(result["is_compute_engine"], true, "{result}");
    assert_eq!(result["project"], "local-project", "{result}");
    assert_eq!(
        result["service_account"],
        gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT,
        "{result}"
    );
    assert_eq!(result["universe_domain"], "googleapis.com", "{result}");
    let token = result["token"].as_str().unwrap_or_default();
    let info = chain
        .stack
        .google
        .access_token_info(token)
        .unwrap_or_else(|| panic!("the emulator did not issue the client's token: {result}"));
    assert_eq!(
        info.principal,
        Principal::ServiceAccount {
            email: gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT.to_owned()
        }
    );
    assert_eq!(result["vertex_status"], 200, "{result}");
    let text = &result["vertex_answer"]["candidates"][0]["content"]["parts"][0]["text"];
    assert_eq!(
        text, "Emulated gemini-2.5-flash answer to: Say hello in one word.",
        "{result}"
    );
    let forwarded = chain.stack.google.vertex_requests();
    assert_eq!(
        forwarded.last().and_then(|r| r.header("authorization")),
        Some(format!("Bearer {token}").as_str()),
        "Vertex AI saw another bearer"
    );

    let issued = chain.stack.events_named("token_issued");
    assert!(!issued.is_empty(), "the broker issued no token");
    assert_eq!(
        field(&issued[0], "caller"),
        gcp_wif_emulator::DEFAULT_CALLER_ARN,
        "the broker should see the workload's own identity, through the front"
    );
}

#[tokio::test]
async fn rust_google_cloud_auth_metadata_credentials_get_a_token_vertex_accepts() {
    let chain = ProxyStack::start(&[]).await;
    // The only test in this file that reads the variable; set as a workload would set it.
    std::env::set_var("GCE_METADATA_HOST", format!("127.0.0.1:{}", chain.port));

    let credentials = google_cloud_auth::credentials::mds::Builder::default()
        .with_scopes([CLOUD_PLATFORM])
        .build_access_token_credentials()
        .expect("metadata credentials build");
    let token = credentials
        .access_token()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "google-cloud-auth got no token: {e}\n{}",
                chain.proxy.output()
            )
        })
        .token;

    assert!(
        chain.stack.google.access_token_info(&token).is_some(),
        "the emulator did not issue google-cloud-auth's token"
    );
    let url = format!(
        "{}/v1/projects/local-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
        chain.stack.google.base_url()
    );
    let answer = chain
        .http
        .post(url)
        .bearer_auth(&token)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}))
        .send()
        .await
        .expect("Vertex AI answers");
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let served = proxy_events(&chain.proxy, "token_served");
    assert_eq!(
        served.first().map(|r| field(r, "scopes").clone()),
        Some(json!(format!("[\"{CLOUD_PLATFORM}\"]"))),
        "google-cloud-auth's scopes should reach the proxy: {served:?}"
    );
}

#[tokio::test]
async fn litellm_completion_reaches_vertex_with_no_google_configuration() {
    let chain = ProxyStack::start(&[]).await;

    let result = run_python(
        "litellm_vertex_client.py",
        python_env(chain.port, &chain.stack.google.base_url()),
        &chain.proxy,
    )
    .await;

    assert_eq!(
        result["content"], "Emulated gemini-2.5-flash answer to: Say hello in one word.",
        "{result}"
    );
    let forwarded = chain.stack.google.vertex_requests();
    let last = forwarded.last().expect("Vertex AI received the call");
    assert_eq!(
        last.path,
        "/v1/projects/local-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
        "LiteLLM should take the project from the metadata server"
    );
    let bearer = last
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    assert!(
        chain.stack.google.access_token_info(bearer).is_some(),
        "LiteLLM's bearer was not issued by the emulator"
    );
}

#[tokio::test]
async fn concurrent_token_requests_share_one_broker_call() {
    let chain = Arc::new(ProxyStack::start(&[]).await);

    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move {
                let response = chain.get(TOKEN_PATH).await;
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.expect("token JSON");
                body["access_token"].as_str().unwrap_or_default().to_owned()
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.expect("the request task ends"));
    }

    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every caller should get the same token");
    assert_eq!(
        chain.stack.events_named("token_issued").len(),
        1,
        "32 concurrent requests should cost one broker invocation"
    );
    let served = proxy_events(&chain.proxy, "token_served");
    let misses = served
        .iter()
        .filter(|r| field(r, "cache") == "miss")
        .count();
    assert_eq!((served.len(), misses), (32, 1), "{served:?}");
}

#[tokio::test]
async fn metadata_paths_answer_as_compute_engine_does() {
    // Buffered, as behind an HTTP API: the front unpacks the function's JSON answer.
    let chain = ProxyStack::start_with(
        &[("BROKER_RESPONSE_MODE", "buffered")],
        &[("METADATA_PROXY_NUMERIC_PROJECT_ID", "123456789012")],
    )
    .await;
    let email = gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT;
    let account_json = json!({"aliases": ["default"], "email": email, "scopes": [CLOUD_PLATFORM]});
    let by_email = format!("/computeMetadata/v1/instance/service-accounts/{email}");
    let cases: Vec<(String, u16, Value)> =
        vec![
        ("/".into(), 200, json!("computeMetadata/\n")),
        (
            "/computeMetadata/v1/".into(),
            200,
            json!("instance/\nproject/\nuniverse/\n"),
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/default/email".into(),
            200,
            json!(email),
        ),
        (format!("{by_email}/email"), 200, json!(email)),
        (
            "/computeMetadata/v1/instance/service-accounts/default/scopes".into(),
            200,
            json!(format!("{CLOUD_PLATFORM}\n")),
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/default/".into(),
            200,
            json!("aliases\nemail\nscopes\ntoken\n"),
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/default/?recursive=true".into(),
            200,
            account_json.clone(),
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/?recursive=true".into(),
            200,
            json!({"default": account_json.clone(), email: account_json}),
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/".into(),
            200,
            json!(format!("default/\n{email}/\n")),
        ),
        (
            "/computeMetadata/v1/project/project-id".into(),
            200,
            json!("local-project"),
        ),
        (
            "/computeMetadata/v1/project/numeric-project-id".into(),
            200,
            json!("123456789012"),
        ),
        (
            "/computeMetadata/v1/project/?recursive=true".into(),
            200,
            json!({"projectId": "local-project", "numericProjectId": 123456789012_u64}),
        ),
        (
            "/computeMetadata/v1/universe/universe-domain".into(),
            200,
            json!("googleapis.com"),
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/other@p.iam.gserviceaccount.com/token"
                .into(),
            404,
            Value::Null,
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=x".into(),
            404,
            Value::Null,
        ),
        ("/computeMetadata/v1/instance/hostname".into(), 404, Value::Null),
        (
            "/computeMetadata/v1/project/project-id?wait_for_change=true".into(),
            400,
            Value::Null,
        ),
    ];

    for (path, status, expected) in cases {
        let response = chain.get(&path).await;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response
                .headers()
                .get("metadata-flavor")
                .map(|v| v.as_bytes()),
            Some(&b"Google"[..]),
            "{path}: every answer names its flavor"
        );
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<Value>(&text)
            .ok()
            .filter(Value::is_object)
            .unwrap_or(Value::String(text));
        if !expected.is_null() {
            assert_eq!(body, expected, "{path}");
        }
    }

    let response = chain
        .get(&format!("{by_email}/token?scopes={CLOUD_PLATFORM}"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let token: Value = response.json().await.expect("token JSON");
    assert_eq!(token["token_type"], "Bearer", "{token}");
    let expires_in = token["expires_in"].as_u64().unwrap_or_default();
    assert!(
        (3000..=3600).contains(&expires_in),
        "expires_in {expires_in}"
    );
    assert!(
        !chain
            .proxy
            .output()
            .contains(token["access_token"].as_str().unwrap_or("-")),
        "the token must never be logged"
    );
}

#[tokio::test]
async fn requests_without_the_flavor_header_or_relayed_are_refused() {
    let chain = ProxyStack::start(&[]).await;
    let url = chain.url(TOKEN_PATH);
    let cases = [
        (chain.http.get(&url), 403, "no Metadata-Flavor"),
        (
            chain.http.get(&url).header("Metadata-Flavor", "google"),
            403,
            "a wrong flavor",
        ),
        (
            chain
                .http
                .get(&url)
                .header("Metadata-Flavor", "Google")
                .header("X-Forwarded-For", "203.0.113.7"),
            403,
            "X-Forwarded-For",
        ),
        (
            chain.http.post(&url).header("Metadata-Flavor", "Google"),
            405,
            "a POST",
        ),
    ];

    for (request, status, what) in cases {
        let response = request.send().await.expect("the proxy answers");

        assert_eq!(response.status(), status, "{what}");
        assert_eq!(
            response
                .headers()
                .get("metadata-flavor")
                .map(|v| v.as_bytes()),
            Some(&b"Google"[..]),
            "{what}"
        );
        let body = response.text().await.unwrap_or_default();
        assert!(!body.contains("access_token"), "{what}: {body}");
    }
    assert!(
        chain.stack.events_named("token_issued").is_empty(),
        "a refused request must not reach the broker"
    );
    assert_eq!(proxy_events(&chain.proxy, "request_refused").len(), 4);
}

#[tokio::test]
async fn a_workload_the_broker_does_not_allow_gets_403_with_a_hint() {
    let chain = ProxyStack::start_with(
        &[
            ("BROKER_RESPONSE_MODE", "streaming"),
            (
                "BROKER_ALLOWED_CALLERS",
                "arn:aws:iam::123456789012:role/other-role",
            ),
        ],
        &[],
    )
    .await;

    let (status, body) = chain.get_text(TOKEN_PATH).await;

    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("The caller is not authorized to use this broker."),
        "{body}"
    );
    assert!(body.contains("BROKER_ALLOWED_CALLERS"), "no hint: {body}");
    let failed = proxy_events(&chain.proxy, "token_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(field(&failed[0], "transient"), false);
}

#[tokio::test]
async fn the_front_refuses_a_wrong_secret_and_an_unknown_key() {
    let stack = Stack::start(&[("BROKER_RESPONSE_MODE", "streaming")]).await;
    let front = spawn_front(
        FrontConfig::new(format!("http://127.0.0.1:{}", stack.runtime.port)),
        "127.0.0.1:0".parse().expect("a loopback address"),
    )
    .await
    .expect("the front binds a free port");
    let token_url = format!("{}/token", front.url());
    let cases = [
        (
            gcp_wif_emulator::DEFAULT_ACCESS_KEY_ID,
            "not-the-secret",
            "The request signature we calculated does not match",
        ),
        (
            "AKIDUNKNOWN000000000",
            gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY,
            "The security token included in the request is invalid.",
        ),
    ];

    for (key, secret, expected) in cases {
        let (proxy, port) = start_proxy(
            &[("METADATA_PROXY_TOKEN_URL", &token_url)],
            &[
                ("AWS_ACCESS_KEY_ID", key),
                ("AWS_SECRET_ACCESS_KEY", secret),
            ],
        )
        .await;
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}{TOKEN_PATH}"))
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .expect("the proxy answers");

        assert_eq!(response.status(), 403, "{key}");
        let body = response.text().await.unwrap_or_default();
        assert!(body.contains(expected), "{key}: {body}");
        assert!(!body.contains(secret), "{key}: the secret leaked: {body}");
        assert!(
            !proxy.output().contains(secret),
            "{key}: the secret was logged"
        );
    }
    assert!(
        stack.events_named("token_issued").is_empty(),
        "an unsigned caller must never reach the broker"
    );
}

#[tokio::test]
async fn an_unreachable_broker_answers_503_with_retry_after() {
    let closed = free_port();
    let url = format!("http://127.0.0.1:{closed}/token");
    let (proxy, port) = start_proxy(&[("METADATA_PROXY_TOKEN_URL", &url)], &[]).await;

    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{TOKEN_PATH}"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("the proxy answers");

    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body = response.text().await.unwrap_or_default();
    assert!(body.contains("the broker is unreachable"), "{body}");
    let failed = proxy_events(&proxy, "token_failed");
    assert_eq!(field(&failed[0], "transient"), true, "{failed:?}");
}

/// One call the extension made: which, its headers (lowercase names), its body.
type ExtensionCall = (String, HashMap<String, String>, String);

/// A stand-in for Lambda's Extensions API: records what the extension sends and holds `next`
/// until the test announces shutdown.
#[derive(Clone, Default)]
struct ExtensionsApi {
    calls: Arc<Mutex<Vec<ExtensionCall>>>,
    shutdown: Arc<Notify>,
}

impl ExtensionsApi {
    fn record(&self, call: &str, headers: &HeaderMap, body: String) {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        self.calls
            .lock()
            .expect("calls lock")
            .push((call.to_owned(), headers, body));
    }

    fn calls(&self) -> Vec<ExtensionCall> {
        self.calls.lock().expect("calls lock").clone()
    }

    async fn serve(&self) -> String {
        let app = Router::new()
            .route(
                "/2020-01-01/extension/register",
                post(
                    |State(api): State<Self>, headers: HeaderMap, body: String| async move {
                        api.record("register", &headers, body);
                        ([("lambda-extension-identifier", "ext-1")], "{}")
                    },
                ),
            )
            .route(
                "/2020-01-01/extension/event/next",
                get(|State(api): State<Self>, headers: HeaderMap| async move {
                    api.record("next", &headers, String::new());
                    api.shutdown.notified().await;
                    json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": 0})
                        .to_string()
                }),
            )
            .route(
                "/2020-01-01/extension/init/error",
                post(
                    |State(api): State<Self>, headers: HeaderMap, body: String| async move {
                        api.record("init/error", &headers, body);
                        (StatusCode::ACCEPTED, "{}")
                    },
                ),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("127.0.0.1:{}", address.port())
    }
}

#[tokio::test]
async fn as_a_lambda_extension_it_registers_serves_and_stops_at_shutdown() {
    let chain = ProxyStack::start(&[]).await;
    let api = ExtensionsApi::default();
    let runtime_api = api.serve().await;
    let port = free_port();
    // The binary's file name is already the one a layer gives it,
    // /opt/extensions/gcp-metadata-proxy, and so the extension's name.
    let mut command = proxy_command();
    command
        .envs(workload_aws_env())
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env(
            "METADATA_PROXY_TOKEN_URL",
            format!("{}/token", chain.front.url()),
        )
        .env("METADATA_PROXY_SIGNING_SERVICE", "lambda")
        .env("METADATA_PROXY_ADDR", format!("127.0.0.1:{port}"));
    let mut extension = Process::spawn(command);
    wait_for_port(port, "the extension").await;

    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{TOKEN_PATH}"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("the extension serves");
    assert_eq!(response.status(), 200, "{}", extension.output());
    let calls = api.calls();
    let (call, headers, body) = &calls[0];
    assert_eq!(call, "register");
    assert_eq!(
        headers.get("lambda-extension-name").map(String::as_str),
        Some("gcp-metadata-proxy"),
        "the name must be the file name under /opt/extensions"
    );
    assert_eq!(
        serde_json::from_str::<Value>(body).ok(),
        Some(json!({"events": ["SHUTDOWN"]}))
    );
    assert_eq!(
        calls
            .get(1)
            .and_then(|(_, h, _)| h.get("lambda-extension-identifier").cloned()),
        Some("ext-1".to_owned()),
        "next must carry the registered id: {calls:?}"
    );

    api.shutdown.notify_waiters();
    let status = extension.wait(Duration::from_secs(5)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the extension should exit cleanly at shutdown:\n{}",
        extension.output()
    );
    let shutdown = proxy_events(&extension, "shutdown");
    assert_eq!(
        shutdown.first().map(|r| field(r, "reason").clone()),
        Some(json!("spindown"))
    );
}

#[tokio::test]
async fn as_a_lambda_extension_a_bad_setting_fails_init_with_its_message() {
    let api = ExtensionsApi::default();
    let runtime_api = api.serve().await;
    let mut command = proxy_command();
    command
        .envs(workload_aws_env())
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api);
    let mut extension = Process::spawn(command);

    let status = extension.wait(Duration::from_secs(10)).await;

    assert_ne!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        extension.output()
    );
    let calls = api.calls();
    let names: Vec<&str> = calls.iter().map(|(call, _, _)| call.as_str()).collect();
    assert_eq!(names, ["register", "init/error"], "{}", extension.output());
    let (_, headers, body) = &calls[1];
    assert_eq!(
        headers
            .get("lambda-extension-function-error-type")
            .map(String::as_str),
        Some("Extension.ConfigInvalid")
    );
    assert!(
        body.contains("METADATA_PROXY_TOKEN_URL is required"),
        "the message should name the setting: {body}"
    );
}
