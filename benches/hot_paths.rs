//! The broker's per-invocation hot paths, in process, against the Google emulator on loopback.
//!
//! - `subject_token/sign`: the SigV4-signed `GetCallerIdentity` document, the CPU part of a
//!   token exchange.
//! - `request/parse_function_url_event`: lambda_http turning a Function URL event into a
//!   `Request`, which it does for every invocation before the handler runs.
//! - `cache/hit`: [`Broker::token`] on a warm cache.
//! - `handler/*`: [`routes::handle`] plus the buffered reply, as `main` runs them, with the JSON
//!   audit line formatted (into a sink) as on Lambda. `handler/token_cache_hit` is the number
//!   the "warm token under 100 µs p50" target reads.
//! - `forward/*`: generateContent straight to the emulator, and through the handler.
//!
//! `scripts/bench` runs these and reads the medians from `target/criterion`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gcp_wif_broker::aws_credentials::AwsCredentialSource;
use gcp_wif_broker::broker::{Broker, BrokerParts};
use gcp_wif_broker::clock::{SharedClock, SystemClock};
use gcp_wif_broker::credential_config::CredentialConfig;
use gcp_wif_broker::endpoint::EndpointPolicy;
use gcp_wif_broker::forward::Forwarder;
use gcp_wif_broker::reply;
use gcp_wif_broker::routes::{self, App};
use gcp_wif_broker::settings::Settings;
use gcp_wif_broker::subject_token::SubjectToken;
use gcp_wif_broker::vertex::VertexSettings;
use gcp_wif_emulator::{EmulatorConfig, RunningEmulator};
use lambda_http::{Context, Request, RequestExt};
use tokio::runtime::Runtime;
use url::Url;

const TOKEN_EVENT: &str = include_str!("../events/token-function-url.json");
const HEALTHZ_EVENT: &str = include_str!("../events/healthz-function-url.json");
const GENERATE_EVENT: &str = include_str!("../events/generate-function-url.json");
const GENERATE_BODY: &str =
    r#"{"contents": [{"role": "user", "parts": [{"text": "Say hello in one word."}]}]}"#;

/// The Google emulator and an App pointed at it, built from parts as the forwarding tests do.
struct Fixture {
    google: RunningEmulator,
    app: App,
}

fn fixture(runtime: &Runtime) -> Fixture {
    runtime.block_on(async {
        let google = gcp_wif_emulator::spawn(
            EmulatorConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("the Google emulator starts");
        let env = environment(&google);
        let settings = Settings::from_env(&env).expect("settings");
        let config =
            CredentialConfig::parse(&env["BROKER_CREDENTIAL_CONFIG"], settings.allow_loopback)
                .expect("credential config");
        let vertex = VertexSettings::from_env(&env, &EndpointPolicy::new("googleapis.com", true))
            .expect("vertex settings")
            .expect("forwarding configured");
        let clock: SharedClock = Arc::new(SystemClock);
        let broker = Broker::new(BrokerParts {
            config,
            settings,
            region: "us-east-1".into(),
            credentials: AwsCredentialSource::new(
                SharedCredentialsProvider::new(credentials()),
                clock.clone(),
            ),
            clock,
        })
        .expect("broker");
        let forwarder = Forwarder::new(vertex, None).expect("forwarder");
        let app = App {
            broker,
            forwarder: Some(forwarder),
        };
        for event in [TOKEN_EVENT, GENERATE_EVENT] {
            let reply = routes::handle(&app, request(event)).await;
            assert_eq!(reply.status(), 200, "warming up with {event}");
            reply::into_buffered(reply).await;
        }
        Fixture { google, app }
    })
}

fn credentials() -> Credentials {
    Credentials::new(
        gcp_wif_emulator::DEFAULT_ACCESS_KEY_ID,
        gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY,
        Some("bench-session-token".into()),
        None,
        "bench",
    )
}

fn environment(google: &RunningEmulator) -> HashMap<String, String> {
    let base = google.base_url();
    let config = serde_json::json!({
        "type": "external_account",
        "audience": gcp_wif_emulator::DEFAULT_AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "service_account_impersonation_url": google
            .generate_access_token_url(gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT),
        "service_account_impersonation": {"token_lifetime_seconds": 3600},
        "token_url": format!("{base}/v1/token"),
        "credential_source": {
            "environment_id": "aws1",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
        },
        "universe_domain": "googleapis.com"
    });
    [
        ("BROKER_CREDENTIAL_CONFIG", config.to_string()),
        ("BROKER_ALLOW_LOOPBACK_ENDPOINTS", "true".into()),
        (
            "BROKER_ALLOWED_CALLERS",
            "arn:aws:iam::123456789012:role/app-role".into(),
        ),
        ("AWS_REGION", "us-east-1".into()),
        ("GOOGLE_CLOUD_PROJECT", "local-project".into()),
        ("BROKER_VERTEX_ENDPOINT", base),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The event as lambda_http hands it to the handler, with the invocation's context attached.
fn request(event: &str) -> Request {
    let mut context = Context::default();
    context.request_id = "bench-request".into();
    lambda_http::request::from_str(event)
        .expect("a valid event")
        .with_lambda_context(context)
}

/// JSON log lines into a sink: the formatting cost stays in the measurement, the output goes.
fn json_logs_into_sink() {
    std::env::set_var("AWS_LAMBDA_LOG_FORMAT", "JSON");
    std::env::set_var("AWS_LAMBDA_LOG_LEVEL", "INFO");
    lambda_http::tracing::init_default_subscriber_with_writer(std::io::sink);
}

fn hot_paths(c: &mut Criterion) {
    json_logs_into_sink();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let fixture = fixture(&runtime);
    let app = &fixture.app;

    let verification_url = Url::parse(
        "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
    )
    .expect("url");
    let credentials = credentials();
    c.bench_function("subject_token/sign", |b| {
        b.iter(|| {
            SubjectToken::sign(
                &verification_url,
                "us-east-1",
                gcp_wif_emulator::DEFAULT_AUDIENCE,
                &credentials,
                SystemTime::now(),
            )
            .expect("signed")
        })
    });

    c.bench_function("request/parse_function_url_event", |b| {
        b.iter(|| lambda_http::request::from_str(TOKEN_EVENT).expect("parsed"))
    });

    let default_request = app.broker.default_request();
    c.bench_function("cache/hit", |b| {
        b.to_async(&runtime).iter(|| async {
            app.broker
                .token(&default_request, None)
                .await
                .expect("token")
        })
    });

    for (name, event) in [
        ("handler/token_cache_hit", TOKEN_EVENT),
        ("handler/healthz", HEALTHZ_EVENT),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&runtime).iter_batched(
                || request(event),
                |request| async move { reply::into_buffered(routes::handle(app, request).await).await },
                BatchSize::SmallInput,
            )
        });
    }

    let bearer = fixture.google.issue_access_token(
        gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT,
        &["https://www.googleapis.com/auth/cloud-platform"],
        Duration::from_secs(3600),
    );
    let direct_url = format!(
        "{}/v1/projects/local-project/locations/global/publishers/google/models/gemini-2.5-flash:generateContent",
        fixture.google.base_url()
    );
    let client = reqwest::Client::new();
    c.bench_function("forward/direct_to_emulator", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = client
                .post(&direct_url)
                .bearer_auth(&bearer)
                .header("content-type", "application/json")
                .body(GENERATE_BODY)
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("body")
        })
    });
    c.bench_function("forward/handler_generate_content", |b| {
        b.to_async(&runtime).iter_batched(
            || request(GENERATE_EVENT),
            |request| async move { reply::into_buffered(routes::handle(app, request).await).await },
            BatchSize::SmallInput,
        )
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = hot_paths
}
criterion_main!(benches);
