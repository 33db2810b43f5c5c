//! No credential reaches a log line or an error body, on success and failure paths alike.

mod common;

use std::time::Duration;

use common::{event, Stack};
use gcp_wif_emulator::{Fault, StatusCode, Target};
use serde_json::json;

/// Fragments that only a credential contains: emulator tokens, the AWS secret and session
/// token, SigV4 signatures, and the encoded subject token.
fn forbidden() -> Vec<&'static str> {
    vec![
        "emulator-federated.",
        "emulator-access.",
        gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY,
        "local-session-token-for-tests",
        "Signature=",
        "AWS4-HMAC-SHA256",
        "x-amz-security-token",
        "%22headers%22",
        "credential_source",
    ]
}

fn assert_clean(what: &str, text: &str) {
    for fragment in forbidden() {
        assert!(
            !text.contains(fragment),
            "{what} contains {fragment:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn no_credential_in_any_log_line_or_error_body() {
    let stack = Stack::start(&[
        ("BROKER_UPSTREAM_TIMEOUT_SECONDS", "1"),
        ("BROKER_PREFETCH_TOKEN", "true"),
    ])
    .await;
    let mut bodies = Vec::new();
    let mut diagnose = event("healthz-function-url.json");
    diagnose["rawPath"] = json!("/diagnose");
    diagnose["rawQueryString"] = json!("model=gemini-2.5-flash");

    // Success paths; the token answer itself is the one place a token belongs.
    let token = stack.invoke_file("token-function-url.json").await;
    assert_eq!(token.status, 200);
    for name in [
        "generate-function-url.json",
        "stream-function-url.json",
        "chat-http-api.json",
    ] {
        bodies.push((name.to_owned(), stack.invoke_file(name).await.text));
    }
    bodies.push(("diagnose".to_owned(), stack.invoke(&diagnose).await.text));

    // Failure paths at every stage.
    let faults = [
        (Target::Sts, Fault::status(StatusCode::BAD_REQUEST)),
        (
            Target::Sts,
            Fault::status(StatusCode::SERVICE_UNAVAILABLE).times(3),
        ),
        (Target::Sts, Fault::hang(Duration::from_secs(2)).times(3)),
        (Target::Iam, Fault::status(StatusCode::FORBIDDEN)),
        (Target::Iam, Fault::status(StatusCode::UNAUTHORIZED)),
    ];
    for (i, (target, fault)) in faults.into_iter().enumerate() {
        stack.google.inject(target, fault);
        let mut request = event("token-function-url.json");
        request["body"] = json!(format!("{{\"lifetime_seconds\": {}}}", 600 + i));
        let answer = stack.invoke(&request).await;
        assert!(answer.status >= 500, "fault {i}: {}", answer.raw);
        bodies.push((format!("fault {i}"), answer.text));
    }
    stack
        .google
        .inject(Target::Vertex, Fault::status(StatusCode::FORBIDDEN));
    bodies.push((
        "vertex 403".to_owned(),
        stack.invoke_file("generate-function-url.json").await.text,
    ));
    stack
        .google
        .inject(Target::Vertex, Fault::abort_stream_after(1));
    let mut streaming = event("stream-function-url.json");
    streaming["body"] =
        json!("{\"contents\": [{\"role\": \"user\", \"parts\": [{\"text\": \"x\"}]}]}");
    bodies.push((
        "broken stream".to_owned(),
        stack.invoke(&streaming).await.text,
    ));
    for name in [
        "token-malformed-body.json",
        "token-no-identity.json",
        "model-not-allowed.json",
    ] {
        bodies.push((name.to_owned(), stack.invoke_file(name).await.text));
    }

    for (what, body) in &bodies {
        assert_clean(what, body);
    }
    let logs = stack.broker.output();
    assert!(
        logs.lines().count() > 20,
        "too few log lines to mean anything:\n{logs}"
    );
    assert_clean("the broker's log", &logs);
}

#[tokio::test]
async fn a_failed_start_prints_no_credential() {
    let google = common::google_emulator().await;
    let runtime = common::RuntimeEmulator::start().await;
    let mut env = common::broker_env(&google);
    let mut config: serde_json::Value =
        serde_json::from_str(&env["BROKER_CREDENTIAL_CONFIG"]).unwrap();
    config["token_url"] = json!("https://sts.googleapis.com.evil.example/v1/token");
    env.insert("BROKER_CREDENTIAL_CONFIG".into(), config.to_string());
    let mut broker = common::start_broker(&runtime, &env);
    broker
        .wait(Duration::from_secs(20))
        .await
        .expect("the broker exits");
    assert_clean("the failed start's output", &broker.output());
}
