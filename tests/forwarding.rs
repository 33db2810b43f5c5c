//! Gemini forwarding through the real binary: request hygiene, streaming, errors, audit.

mod common;

use std::time::Duration;

use common::{event, field, Stack};
use gcp_wif_emulator::{Fault, StatusCode, Target};
use serde_json::{json, Value};

fn with_path(mut event: Value, path: &str) -> Value {
    event["rawPath"] = Value::String(path.to_owned());
    event["requestContext"]["http"]["path"] = Value::String(path.to_owned());
    event
}

fn with_body(mut event: Value, body: &Value) -> Value {
    event["body"] = Value::String(body.to_string());
    event
}

fn header<'a>(request: &'a gcp_wif_emulator::RecordedRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn generate_content_is_forwarded_with_the_brokers_headers_only() {
    let stack = Stack::start(&[]).await;
    let mut generate = event("generate-function-url.json");
    generate["headers"]["cookie"] = json!("session=abc");
    generate["headers"]["x-goog-api-key"] = json!("caller-key");
    generate["headers"]["x-forwarded-for"] = json!("10.0.0.1");
    let caller_body = generate["body"].as_str().unwrap().to_owned();

    let answer = stack.invoke(&generate).await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert!(answer.body["usageMetadata"]["totalTokenCount"].is_number());

    let requests = stack.google.vertex_requests();
    assert_eq!(requests.len(), 1);
    let upstream = &requests[0];
    assert_eq!(
        upstream.path,
        "/v1/projects/local-project/locations/global/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        String::from_utf8_lossy(&upstream.body),
        caller_body,
        "body must pass unchanged"
    );
    let bearer = header(upstream, "authorization").expect("the broker's bearer");
    let token = bearer.strip_prefix("Bearer ").expect("a bearer token");
    assert!(
        stack.google.access_token_info(token).is_some(),
        "not the broker's token"
    );
    assert_eq!(header(upstream, "content-type"), Some("application/json"));
    for (name, _) in &upstream.headers {
        assert!(
            !name.starts_with("x-amz")
                && !name.starts_with("x-forwarded")
                && name != "cookie"
                && name != "x-goog-api-key"
                && !name.starts_with("x-amzn"),
            "caller header {name} was forwarded"
        );
    }
    assert!(
        !bearer.contains("AWS4-HMAC-SHA256"),
        "the caller's SigV4 authorization must not be forwarded"
    );
}

#[tokio::test]
async fn quota_project_is_sent_as_user_project() {
    let google = common::google_emulator().await;
    let mut env = common::broker_env(&google);
    let mut config = common::credential_config(&google);
    config["quota_project_id"] = json!("billing-project");
    env.insert("BROKER_CREDENTIAL_CONFIG".into(), config.to_string());
    let stack = Stack::start_with(google, env).await;
    assert_eq!(
        stack.invoke_file("generate-function-url.json").await.status,
        200
    );
    let requests = stack.google.vertex_requests();
    assert_eq!(
        header(&requests[0], "x-goog-user-project"),
        Some("billing-project")
    );
}

#[tokio::test]
async fn short_routes_use_the_configured_project_and_location() {
    let stack = Stack::start(&[("GOOGLE_CLOUD_LOCATION", "us-central1")]).await;
    let count = with_path(
        event("generate-function-url.json"),
        "/v1/models/gemini-2.5-pro:countTokens",
    );
    let answer = stack.invoke(&count).await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert!(answer.body["totalTokens"].is_number());
    assert_eq!(
        stack.google.vertex_requests()[0].path,
        "/v1/projects/local-project/locations/us-central1/publishers/google/models/gemini-2.5-pro:countTokens"
    );

    let other_location = with_path(
        event("generate-function-url.json"),
        "/v1/projects/local-project/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent",
    );
    assert_eq!(
        stack.invoke(&other_location).await.status,
        400,
        "not in the allowlist"
    );
}

#[tokio::test]
async fn hostile_model_names_and_paths_never_reach_vertex() {
    let stack = Stack::start(&[]).await;
    let base = event("generate-function-url.json");
    let long = format!("/v1/models/gemini-{}:generateContent", "a".repeat(300));
    let paths = [
        "/v1/models/../models/gemini-2.5-flash:generateContent",
        "/v1/models/gemini-2.5-flash/..:generateContent",
        "/v1/models/gemini/2.5:generateContent",
        "/v1/models/gemini-2.5-flash%2F..%2Fx:generateContent",
        "/v1/models/gemini-2.5-flash@latest:generateContent",
        "/v1/models/gemini-2.5-flash?alt=json:generateContent",
        "/v1/models/gemini-2.5-flash#x:generateContent",
        "/v1/models/gemini-2.5-flásh:generateContent",
        "/v1/models/GEMINI-2.5-FLASH:generateContent",
        "/v1/models/text-bison:generateContent",
        "/v1/models/gemini-2.5-flash:predict",
        "/v1/models/gemini-2.5-flash",
        "/v1/models/gemini-2.5-flash\\x:generateContent",
        long.as_str(),
        "/v1/projects/other-project/locations/global/publishers/google/models/gemini-2.5-flash:generateContent",
        "/v1/projects/local-project/locations/global.evil.com/publishers/google/models/gemini-2.5-flash:generateContent",
        "/v1/projects/local-project/locations/global/publishers/google/models/gemini-2.5-flash/x:generateContent",
    ];
    for path in paths {
        let answer = stack.invoke(&with_path(base.clone(), path)).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.raw);
        assert_eq!(answer.body["error"]["status"], "INVALID_ARGUMENT", "{path}");
    }
    for model in [
        "text-bison",
        "google/../x",
        "google/gemini-2.5-flash/../../x",
        "",
    ] {
        let chat = with_body(
            event("chat-http-api.json"),
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        );
        let answer = stack.invoke(&chat).await;
        assert_eq!(answer.status, 400, "chat model {model:?}: {}", answer.raw);
    }
    assert_eq!(
        stack.google.calls(Target::Vertex),
        0,
        "a hostile request reached Vertex"
    );
    assert_eq!(
        stack.invoke(&base).await.status,
        200,
        "the function keeps serving"
    );
}

#[tokio::test]
async fn chat_completions_name_the_model_as_vertex_expects() {
    let stack = Stack::start(&[]).await;
    let chat = with_body(
        event("chat-http-api.json"),
        &json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}),
    );
    let answer = stack.invoke(&chat).await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(answer.body["object"], "chat.completion");
    let upstream = &stack.google.vertex_requests()[0];
    assert_eq!(
        upstream.path,
        "/v1/projects/local-project/locations/global/endpoints/openapi/chat/completions"
    );
    let sent: Value = serde_json::from_slice(&upstream.body).unwrap();
    assert_eq!(sent["model"], "google/gemini-2.5-flash");
    assert_eq!(sent["temperature"], 0.2, "other fields pass unchanged");
}

#[tokio::test]
async fn stream_events_reach_the_caller_before_the_upstream_finishes() {
    let stack = Stack::start(&[("BROKER_RESPONSE_MODE", "streaming")]).await;
    let answer = stack.invoke_file("stream-function-url.json").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.headers["content-type"].starts_with("text/event-stream"));
    let events = answer.text.matches("data: ").count();
    assert_eq!(
        events,
        gcp_wif_emulator::EmulatorConfig::default().stream_events,
        "{}",
        answer.text
    );
    assert!(
        answer.chunks.len() >= 2,
        "the body arrived in one piece: {:?}",
        answer.chunks.len()
    );

    let upstream = &stack.google.vertex_requests()[0];
    assert!(
        upstream
            .query
            .as_deref()
            .unwrap_or_default()
            .contains("alt=sse"),
        "{upstream:?}"
    );
    let finished = upstream
        .stream_finished_at
        .expect("the emulator finished its stream");
    let (first_at, first) = &answer.chunks[0];
    assert!(
        *first_at < finished,
        "the first event ({:?}) reached the caller only after the upstream finished",
        String::from_utf8_lossy(first)
    );
}

#[tokio::test]
async fn chat_stream_ends_with_done_in_streaming_mode() {
    let stack = Stack::start(&[("BROKER_RESPONSE_MODE", "streaming")]).await;
    let chat = with_body(
        event("chat-http-api.json"),
        &json!({"model": "google/gemini-2.5-flash", "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]}),
    );
    let answer = stack.invoke(&chat).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        answer.text.trim_end().ends_with("data: [DONE]"),
        "{}",
        answer.text
    );
    let forwarded = stack.events_named("forwarded");
    assert_eq!(field(&forwarded[0], "streamed"), true);
    assert!(
        field(&forwarded[0], "total_tokens").is_number(),
        "{forwarded:?}"
    );
}

#[tokio::test]
async fn buffered_mode_collects_a_stream_whole() {
    let stack = Stack::start(&[]).await;
    let answer = stack.invoke_file("stream-function-url.json").await;
    assert_eq!(answer.status, 200);
    assert!(answer.text.contains("finishReason"), "{}", answer.text);
}

#[tokio::test]
async fn google_errors_pass_through_unchanged() {
    let stack = Stack::start(&[]).await;
    for status in [400u16, 403, 404, 429] {
        let body = json!({"error": {"code": status, "message": format!("emulated {status}"), "status": "X"}});
        stack.google.inject(
            Target::Vertex,
            Fault::status(StatusCode::from_u16(status).unwrap()).with_body(body.to_string()),
        );
        let answer = stack.invoke_file("generate-function-url.json").await;
        assert_eq!(answer.status, status, "{}", answer.raw);
        assert_eq!(answer.body, body, "Google's body must pass unchanged");
    }
}

#[tokio::test]
async fn failure_after_the_stream_began_becomes_an_sse_error_event() {
    let stack = Stack::start(&[("BROKER_RESPONSE_MODE", "streaming")]).await;
    stack
        .google
        .inject(Target::Vertex, Fault::abort_stream_after(1));
    let answer = stack.invoke_file("stream-function-url.json").await;
    assert_eq!(answer.status, 200, "the status went out before the failure");
    let last = answer
        .text
        .rsplit("data: ")
        .next()
        .unwrap_or_default()
        .to_owned();
    let data: Value = serde_json::from_str(last.trim())
        .unwrap_or_else(|e| panic!("last event {last:?} is not JSON: {e}"));
    assert_eq!(data["error"]["code"], 502, "{data}");
    assert_eq!(stack.events_named("forward_failed").len(), 1);
}

/// cargo-lambda's runtime emulator gives every invocation the same far deadline, so the
/// deadline discipline is tested on the library with a deadline of its own.
#[tokio::test]
async fn a_hung_upstream_gets_504_before_the_invocation_deadline() {
    use gcp_wif_broker::aws_credentials::AwsCredentialSource;
    use gcp_wif_broker::broker::{Broker, BrokerParts};
    use gcp_wif_broker::credential_config::CredentialConfig;
    use gcp_wif_broker::endpoint::EndpointPolicy;
    use gcp_wif_broker::forward::{Call, Forwarder, Invocation};
    use gcp_wif_broker::settings::Settings;
    use gcp_wif_broker::vertex::{Method, VertexSettings};

    let google = common::google_emulator().await;
    let env = common::broker_env(&google);
    let settings = Settings::from_env(&env).unwrap();
    let config =
        CredentialConfig::parse(&env["BROKER_CREDENTIAL_CONFIG"], settings.allow_loopback).unwrap();
    let vertex = VertexSettings::from_env(&env, &EndpointPolicy::new("googleapis.com", true))
        .unwrap()
        .unwrap();
    let clock: gcp_wif_broker::clock::SharedClock =
        std::sync::Arc::new(gcp_wif_broker::clock::SystemClock);
    let credentials = aws_credential_types::Credentials::new(
        gcp_wif_emulator::DEFAULT_ACCESS_KEY_ID,
        gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    let broker = Broker::new(BrokerParts {
        config,
        settings,
        region: "us-east-1".into(),
        credentials: AwsCredentialSource::new(
            aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            clock.clone(),
        ),
        clock,
    })
    .unwrap();
    let forwarder = Forwarder::new(vertex, None).unwrap();

    google.inject(Target::Vertex, Fault::hang(Duration::from_secs(30)));
    let started = std::time::Instant::now();
    let reply = forwarder
        .forward(
            &broker,
            Call::Model {
                location: "global".into(),
                model: "gemini-2.5-flash".into(),
                method: Method::GenerateContent,
            },
            bytes::Bytes::from_static(br#"{"contents": [{"parts": [{"text": "hi"}]}]}"#),
            Invocation {
                request_id: "test".into(),
                caller: common::ALLOWED_CALLERS.into(),
                deadline: Some(std::time::SystemTime::now() + Duration::from_secs(3)),
                started,
            },
        )
        .await;
    assert_eq!(reply.status(), 504);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}; the deadline was 3 s away"
    );
}

#[tokio::test]
async fn audit_lines_carry_usage_but_no_prompt_or_answer_text() {
    let stack = Stack::start(&[]).await;
    let answer = stack.invoke_file("generate-function-url.json").await;
    let answer_text = answer.body["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let forwarded = stack.events_named("forwarded");
    assert_eq!(forwarded.len(), 1);
    let line = &forwarded[0];
    assert_eq!(field(line, "model"), "gemini-2.5-flash");
    assert_eq!(field(line, "method"), "generateContent");
    assert_eq!(field(line, "upstream_status"), 200);
    assert_eq!(
        field(line, "caller"),
        "arn:aws:sts::123456789012:assumed-role/app-role/app-session"
    );
    for name in [
        "prompt_tokens",
        "output_tokens",
        "total_tokens",
        "latency_ms",
    ] {
        assert!(field(line, name).is_number(), "{name} missing: {line}");
    }
    let logs = stack.broker.output();
    assert!(
        !logs.contains("Say hello in one word"),
        "the prompt reached the logs"
    );
    assert!(!logs.contains(&answer_text), "the answer reached the logs");
}
