//! The token broker end to end: the real binary, cargo-lambda's Runtime API emulator and the
//! Google emulator, with the events in `events/`.

mod common;

use std::time::Duration;

use common::{event, field, Stack};
use gcp_wif_emulator::{Fault, StatusCode, Target};
use serde_json::Value;

fn with_body(mut event: Value, body: &str) -> Value {
    event["body"] = Value::String(body.to_owned());
    event
}

fn with_path(mut event: Value, method: &str, path: &str) -> Value {
    event["rawPath"] = Value::String(path.to_owned());
    event["requestContext"]["http"]["path"] = Value::String(path.to_owned());
    event["requestContext"]["http"]["method"] = Value::String(method.to_owned());
    event
}

fn assert_google_error(answer: &common::Answer, status: u16, canonical: &str) {
    assert_eq!(answer.status, status, "unexpected answer: {}", answer.raw);
    assert_eq!(answer.body["error"]["code"], status, "{}", answer.raw);
    assert_eq!(answer.body["error"]["status"], canonical, "{}", answer.raw);
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.raw
    );
}

#[tokio::test]
async fn tokens_are_cached_across_invocations_per_lifetime() {
    let stack = Stack::start(&[]).await;
    for _ in 0..3 {
        assert_eq!(
            stack.invoke_file("token-function-url.json").await.status,
            200
        );
    }
    assert_eq!(
        stack.google.calls(Target::Sts),
        1,
        "one STS exchange for three requests"
    );
    assert_eq!(
        stack.google.calls(Target::Iam),
        1,
        "one impersonation for three requests"
    );

    assert_eq!(stack.invoke_file("token-rest-api.json").await.status, 200);
    assert_eq!(
        stack.google.calls(Target::Iam),
        2,
        "another lifetime is another token"
    );

    let issued = stack.events_named("token_issued");
    let caches: Vec<&Value> = issued.iter().map(|r| field(r, "cache")).collect();
    assert_eq!(
        caches,
        vec!["miss", "hit", "hit", "miss"],
        "audit lines: {issued:?}"
    );
    let first = &issued[0];
    assert_eq!(
        field(first, "caller"),
        "arn:aws:sts::123456789012:assumed-role/app-role/app-session"
    );
    assert_eq!(
        field(first, "service_account"),
        gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT
    );
    assert_eq!(field(first, "lifetime_seconds"), 1800);
    assert!(field(first, "latency_ms").is_number());
    assert!(!field(first, "request_id")
        .as_str()
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test]
async fn bad_requests_get_google_errors_and_the_function_keeps_serving() {
    let stack = Stack::start(&[]).await;
    let base = event("token-function-url.json");
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "scope beyond the ceiling",
            with_body(
                base.clone(),
                r#"{"scopes": ["https://www.googleapis.com/auth/gmail.send"]}"#,
            ),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "empty scopes",
            with_body(base.clone(), r#"{"scopes": []}"#),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "lifetime over the maximum",
            with_body(base.clone(), r#"{"lifetime_seconds": 3601}"#),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "negative lifetime",
            with_body(base.clone(), r#"{"lifetime_seconds": -1}"#),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown field",
            with_body(base.clone(), r#"{"scope": ["x"]}"#),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "oversized body",
            with_body(
                base.clone(),
                &format!(r#"{{"scopes": ["{}"]}}"#, "a".repeat(20_000)),
            ),
            413,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown route",
            with_path(base.clone(), "GET", "/tokens"),
            404,
            "NOT_FOUND",
        ),
        (
            "wrong method",
            with_path(base.clone(), "DELETE", "/token"),
            405,
            "UNIMPLEMENTED",
        ),
    ];
    for (name, event, status, canonical) in cases {
        let answer = stack.invoke(&event).await;
        assert_eq!(answer.status, status, "{name}: {}", answer.raw);
        assert_google_error(&answer, status, canonical);
    }
    let method = stack
        .invoke(&with_path(base.clone(), "PUT", "/token"))
        .await;
    assert_eq!(method.headers["allow"], "GET, POST");

    assert_eq!(
        stack.google.calls(Target::Sts),
        0,
        "bad requests must not reach Google"
    );
    assert_eq!(
        stack.invoke(&base).await.status,
        200,
        "the function keeps serving"
    );
}

#[tokio::test]
async fn upstream_failures_map_to_gateway_errors_with_hints() {
    let stack = Stack::start(&[("BROKER_UPSTREAM_TIMEOUT_SECONDS", "1")]).await;
    let token = event("token-function-url.json");

    stack.google.inject(
        Target::Sts,
        Fault::status(StatusCode::BAD_REQUEST).with_body(
            r#"{"error": "invalid_target", "error_description": "The target service indicated by the \"audience\" parameters is invalid."}"#,
        ),
    );
    let answer = stack.invoke(&token).await;
    assert_google_error(&answer, 502, "FAILED_PRECONDITION");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid_target"), "{message}");
    assert!(
        message.contains("workload identity pool provider"),
        "{message}"
    );

    stack
        .google
        .inject(Target::Iam, Fault::status(StatusCode::FORBIDDEN));
    let answer = stack.invoke(&token).await;
    assert_google_error(&answer, 502, "FAILED_PRECONDITION");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("roles/iam.workloadIdentityUser"),
        "{message}"
    );

    stack.google.inject(
        Target::Sts,
        Fault::status(StatusCode::SERVICE_UNAVAILABLE).times(3),
    );
    let answer = stack.invoke(&token).await;
    assert_google_error(&answer, 503, "UNAVAILABLE");
    assert!(
        answer.headers.contains_key("retry-after"),
        "{:?}",
        answer.headers
    );

    stack
        .google
        .inject(Target::Sts, Fault::hang(Duration::from_secs(3)).times(3));
    let started = std::time::Instant::now();
    let answer = stack.invoke(&token).await;
    assert_google_error(&answer, 504, "DEADLINE_EXCEEDED");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a hung STS must fail well before Lambda's 30 s timeout, took {:?}",
        started.elapsed()
    );

    let failures = stack.events_named("token_failed");
    let stages: Vec<&Value> = failures.iter().map(|r| field(r, "stage")).collect();
    assert_eq!(
        stages,
        vec!["sts", "impersonation", "sts", "sts"],
        "{failures:?}"
    );

    assert_eq!(
        stack.invoke(&token).await.status,
        200,
        "the function recovers"
    );
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let stack = Stack::start(&[]).await;
    let answer = stack.invoke_file("token-function-url.json").await;
    let token = answer.body["access_token"].as_str().unwrap().to_owned();
    stack
        .google
        .inject(Target::Iam, Fault::status(StatusCode::FORBIDDEN));
    stack.invoke_file("token-rest-api.json").await;

    let logs = stack.broker.output();
    assert!(!logs.is_empty());
    for secret in [
        token.as_str(),
        gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY,
        "local-session-token-for-tests",
        "Signature=",
        "AWS4-HMAC-SHA256",
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret}:\n{logs}");
    }
}

#[tokio::test]
async fn concurrent_requests_share_one_exchange() {
    let stack = Stack::start(&[("AWS_LAMBDA_MAX_CONCURRENCY", "8")]).await;
    let token = event("token-function-url.json");
    let answers = futures_join(&stack, &token, 16).await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.raw);
    }
    let first = &answers[0].body["access_token"];
    assert!(answers.iter().all(|a| &a.body["access_token"] == first));
    assert_eq!(stack.google.calls(Target::Sts), 1);
    assert_eq!(stack.google.calls(Target::Iam), 1);
}

async fn futures_join(stack: &Stack, event: &Value, n: usize) -> Vec<common::Answer> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let invoker = stack.invoker();
        let event = event.clone();
        set.spawn(async move { invoker.invoke(&event).await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = set.join_next().await {
        answers.push(answer.expect("invocation task"));
    }
    answers
}

#[tokio::test]
async fn prefetch_fetches_the_default_token_during_init() {
    let stack = Stack::start(&[("BROKER_PREFETCH_TOKEN", "true")]).await;
    assert_eq!(
        stack.invoke_file("healthz-function-url.json").await.status,
        200
    );
    assert_eq!(
        stack.google.calls(Target::Iam),
        1,
        "init should have fetched a token"
    );
    let prefetched = stack.events_named("token_prefetched");
    assert_eq!(field(&prefetched[0], "ok"), true, "{prefetched:?}");

    let answer = stack.invoke_file("token-http-api.json").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        stack.google.calls(Target::Iam),
        1,
        "GET /token is the default request"
    );
    let issued = stack.events_named("token_issued");
    assert_eq!(field(&issued[0], "cache"), "hit");
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_are_not() {
    let stack = Stack::start(&[]).await;
    let token = event("token-function-url.json");

    stack.google.inject(
        Target::Sts,
        Fault::status(StatusCode::SERVICE_UNAVAILABLE).times(2),
    );
    let answer = stack.invoke(&token).await;
    assert_eq!(answer.status, 200, "two 503s then success: {}", answer.raw);
    assert_eq!(stack.google.calls(Target::Sts), 3);

    let rest = event("token-rest-api.json");
    stack
        .google
        .inject(Target::Sts, Fault::status(StatusCode::BAD_REQUEST));
    let answer = stack.invoke(&rest).await;
    assert_eq!(answer.status, 502, "{}", answer.raw);
    assert_eq!(
        stack.google.calls(Target::Sts),
        4,
        "a 400 must not be retried"
    );

    stack.google.inject(
        Target::Iam,
        Fault::status(StatusCode::TOO_MANY_REQUESTS).times(1),
    );
    let answer = stack.invoke(&rest).await;
    assert_eq!(answer.status, 200, "one 429 then success: {}", answer.raw);
    assert_eq!(
        stack.google.calls(Target::Iam),
        3,
        "IAM: first token, 429, retry"
    );
}

#[tokio::test]
async fn metrics_are_written_in_embedded_metric_format() {
    let stack = Stack::start(&[]).await;
    let token = event("token-function-url.json");
    stack.invoke(&token).await;
    stack.invoke(&token).await;
    stack.invoke_file("token-no-identity.json").await;

    let emf: Vec<Value> = stack
        .log_records()
        .into_iter()
        .filter(|r| r.get("_aws").is_some())
        .collect();
    let namespaces: Vec<&Value> = emf
        .iter()
        .map(|r| &r["_aws"]["CloudWatchMetrics"][0]["Namespace"])
        .collect();
    assert!(
        namespaces.iter().all(|n| *n == "GcpWifBroker"),
        "{namespaces:?}"
    );
    let sum = |name: &str| -> f64 { emf.iter().filter_map(|r| r[name].as_f64()).sum() };
    assert_eq!(sum("TokensIssued"), 2.0, "{emf:?}");
    assert_eq!(sum("CacheHits"), 1.0);
    assert_eq!(sum("CacheMisses"), 1.0);
    assert_eq!(
        sum("Errors"),
        1.0,
        "the refused caller counts as a client error"
    );
    let stages: Vec<&str> = emf
        .iter()
        .filter(|r| r["UpstreamLatency"].is_number())
        .filter_map(|r| r["Stage"].as_str())
        .collect();
    assert_eq!(stages, ["sts", "impersonation"]);
}
