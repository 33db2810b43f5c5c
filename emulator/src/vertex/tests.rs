//! The Vertex AI routes through the router, in memory: answers, refusals, faults and
//! recording. Streaming over a real connection is tested in `tests/vertex.rs`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use time::macros::datetime;

use super::CLOUD_PLATFORM;
use crate::clock::ManualClock;
use crate::config::EmulatorConfig;
use crate::faults::{Fault, Target};
use crate::server::tests::send;
use crate::state::EmulatorState;
use crate::tokens::Principal;

const FLASH: &str =
    "/v1/projects/local-project/locations/us-central1/publishers/google/models/gemini-2.5-flash";
const CHAT: &str = "/v1/projects/local-project/locations/global/endpoints/openapi/chat/completions";
const PROMPT: &str =
    r#"{"contents": [{"role": "user", "parts": [{"text": "Say hello to the world"}]}]}"#;
const CHAT_PROMPT: &str = r#"{"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": "Say hello to the world"}]}"#;
const LIFETIME: Duration = Duration::from_secs(3600);

fn emulator() -> (EmulatorState, ManualClock) {
    let clock = ManualClock::new(datetime!(2025-01-01 00:00 UTC));
    let state = EmulatorState::new(EmulatorConfig {
        clock: clock.clone().into(),
        ..EmulatorConfig::default()
    });
    (state, clock)
}

fn service_account_token(state: &EmulatorState, scopes: &[&str]) -> String {
    let principal = Principal::ServiceAccount {
        email: "broker@local-project.iam.gserviceaccount.com".to_string(),
    };
    let scopes = scopes.iter().map(|scope| scope.to_string()).collect();
    state.issue_token(principal, scopes, LIFETIME).0
}

fn federated_token(state: &EmulatorState) -> String {
    let principal = Principal::Federated {
        audience: "//iam.googleapis.com/aud".to_string(),
        aws_access_key_id: "AKID".to_string(),
    };
    state
        .issue_token(principal, vec![CLOUD_PLATFORM.to_string()], LIFETIME)
        .0
}

fn call(uri: &str, authorization: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::post(uri).header("content-type", "application/json");
    if let Some(authorization) = authorization {
        builder = builder.header("authorization", authorization);
    }
    builder
        .body(Body::from(body.to_string()))
        .expect("a valid test request")
}

/// Calls `uri` with a fresh cloud-platform service account token.
async fn authorized(state: &EmulatorState, uri: &str, body: &str) -> (StatusCode, Value) {
    let bearer = format!("Bearer {}", service_account_token(state, &[CLOUD_PLATFORM]));
    send(state, call(uri, Some(&bearer), body)).await
}

const ANSWER: &str = "Emulated gemini-2.5-flash answer to: Say hello to the world";

#[tokio::test]
async fn generate_content_answers_deterministic_text_and_word_counts() {
    let (state, _) = emulator();

    let (status, answer) = authorized(&state, &format!("{FLASH}:generateContent"), PROMPT).await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": ANSWER}]},
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14},
            "modelVersion": "gemini-2.5-flash",
        })
    );
}

#[tokio::test]
async fn the_answer_quotes_the_last_turn_and_counts_every_text_part() {
    let (state, _) = emulator();
    let body = json!({
        "systemInstruction": {"parts": [{"text": "Be brief"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "First question"}]},
            {"role": "model", "parts": [{"text": "First answer"}]},
            {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}, {"text": "Second"}]},
        ],
        "generationConfig": {"temperature": 0.2},
    })
    .to_string();

    let (status, answer) = authorized(&state, &format!("{FLASH}:generateContent"), &body).await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        "Emulated gemini-2.5-flash answer to: Second"
    );
    assert_eq!(answer["usageMetadata"]["promptTokenCount"], 7, "{answer}");
}

#[tokio::test]
async fn count_tokens_counts_words_and_billable_characters() {
    let (state, _) = emulator();

    let (status, answer) = authorized(&state, &format!("{FLASH}:countTokens"), PROMPT).await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"totalTokens": 5, "totalBillableCharacters": 18})
    );
}

#[tokio::test]
async fn stream_generate_content_without_sse_answers_the_chunks_as_one_array() {
    let (state, _) = emulator();

    let (status, answer) =
        authorized(&state, &format!("{FLASH}:streamGenerateContent"), PROMPT).await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    let chunks = answer.as_array().cloned().unwrap_or_default();
    assert_eq!(chunks.len(), 3, "{answer}");
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(text, ANSWER);
    for chunk in &chunks[..2] {
        assert_eq!(chunk["candidates"][0].get("finishReason"), None, "{chunk}");
        assert_eq!(chunk.get("usageMetadata"), None, "{chunk}");
    }
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[2]["usageMetadata"]["totalTokenCount"], 14);
    assert_eq!(chunks[2]["modelVersion"], "gemini-2.5-flash");
}

#[tokio::test]
async fn chat_completion_answers_an_openai_object() {
    let (state, _) = emulator();

    let (status, answer) = authorized(&state, CHAT, CHAT_PROMPT).await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["id"].as_str().unwrap_or_default();
    assert!(id.starts_with("chatcmpl-"), "{answer}");
    assert_eq!(
        answer,
        json!({
            "id": id,
            "object": "chat.completion",
            "created": 1_735_689_600,
            "model": "google/gemini-2.5-flash",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        })
    );
}

#[tokio::test]
async fn chat_reads_text_parts_and_quotes_the_last_message() {
    let (state, _) = emulator();
    let body = json!({
        "model": "google/gemini-2.5-pro",
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": [{"type": "text", "text": "Two words"}]},
        ],
        "stream": false,
    })
    .to_string();

    let (status, answer) = authorized(&state, CHAT, &body).await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Emulated gemini-2.5-pro answer to: Two words"
    );
    assert_eq!(answer["usage"]["prompt_tokens"], 4, "{answer}");
}

#[tokio::test]
async fn federated_tokens_are_accepted_as_vertex_accepts_them() {
    let (state, _) = emulator();
    let bearer = format!("Bearer {}", federated_token(&state));

    let (status, answer) = send(
        &state,
        call(&format!("{FLASH}:generateContent"), Some(&bearer), PROMPT),
    )
    .await;

    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn refusals_use_google_rpc_status_in_vertex_order() {
    let (state, _) = emulator();
    let good = format!(
        "Bearer {}",
        service_account_token(&state, &[CLOUD_PLATFORM])
    );
    let narrow_token =
        service_account_token(&state, &["https://www.googleapis.com/auth/userinfo.email"]);
    let narrow = format!("Bearer {narrow_token}");
    let generate = format!("{FLASH}:generateContent");
    let other_project = generate.replace("local-project", "someone-else");
    let unknown_model = generate.replace("gemini-2.5-flash", "gemini-9");
    let chat = |body: &str| call(CHAT, Some(&good), body);
    let gemini = |body: &str| call(&generate, Some(&good), body);
    let unauthenticated = (401, "UNAUTHENTICATED");
    let denied = (403, "PERMISSION_DENIED");
    let invalid = (400, "INVALID_ARGUMENT");

    let cases = [
        (
            "no credentials",
            call(&generate, None, PROMPT),
            unauthenticated,
            "CREDENTIALS_MISSING",
        ),
        (
            "basic credentials",
            call(&generate, Some("Basic dXNlcjpwYXNz"), PROMPT),
            unauthenticated,
            "CREDENTIALS_MISSING",
        ),
        (
            "unknown bearer",
            call(&generate, Some("Bearer ya29.elsewhere"), PROMPT),
            unauthenticated,
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        ),
        (
            "unknown bearer on chat",
            call(CHAT, Some("Bearer ya29.elsewhere"), CHAT_PROMPT),
            unauthenticated,
            "PredictionService.ChatCompletions",
        ),
        (
            "insufficient scope",
            call(&generate, Some(&narrow), PROMPT),
            denied,
            "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        ),
        (
            "unknown project",
            call(&other_project, Some(&good), PROMPT),
            denied,
            "IAM_PERMISSION_DENIED",
        ),
        (
            "unknown project on chat",
            call(
                &CHAT.replace("local-project", "x"),
                Some(&good),
                CHAT_PROMPT,
            ),
            denied,
            "projects/x/locations/global/endpoints/openapi",
        ),
        (
            "unknown model",
            call(&unknown_model, Some(&good), PROMPT),
            (404, "NOT_FOUND"),
            "publishers/google/models/gemini-9` was not found",
        ),
        (
            "unknown method",
            call(&format!("{FLASH}:predict"), Some(&good), PROMPT),
            (404, "NOT_FOUND"),
            "generateContent",
        ),
        (
            "no method",
            call(FLASH, Some(&good), PROMPT),
            (404, "NOT_FOUND"),
            "generateContent",
        ),
        (
            "not JSON",
            gemini("contents=hello"),
            invalid,
            "Invalid JSON payload",
        ),
        ("no contents", gemini("{}"), invalid, "\"contents\""),
        (
            "empty contents",
            gemini(r#"{"contents": []}"#),
            invalid,
            "\"contents\"",
        ),
        (
            "content without parts",
            gemini(r#"{"contents": [{"role": "user", "parts": []}]}"#),
            invalid,
            "contents[0].parts",
        ),
        (
            "text of the wrong type",
            gemini(r#"{"contents": [{"parts": [{"text": 1}]}]}"#),
            invalid,
            "\"body\"",
        ),
        (
            "chat without model",
            chat(r#"{"messages": [{"role": "user", "content": "hi"}]}"#),
            invalid,
            "\"model\"",
        ),
        (
            "chat model without prefix",
            chat(
                r#"{"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}"#,
            ),
            invalid,
            "google/MODEL_ID",
        ),
        (
            "chat with unknown model",
            chat(
                r#"{"model": "google/gemini-9", "messages": [{"role": "user", "content": "hi"}]}"#,
            ),
            invalid,
            "\"model\"",
        ),
        (
            "chat without messages",
            chat(r#"{"model": "google/gemini-2.5-flash", "messages": []}"#),
            invalid,
            "\"messages\"",
        ),
        (
            "chat not JSON",
            chat("hello"),
            invalid,
            "Invalid JSON payload",
        ),
    ];

    for (case, request, (code, status_name), detail) in cases {
        let (status, answer) = send(&state, request).await;

        assert_eq!(status.as_u16(), code, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{case}: {answer}");
        assert_eq!(answer["error"]["status"], status_name, "{case}: {answer}");
        assert!(
            answer.to_string().contains(detail),
            "{case}: {answer} lacks {detail:?}"
        );
        for token in [&good, &narrow] {
            let token = token.trim_start_matches("Bearer ");
            assert!(
                !answer.to_string().contains(token),
                "{case}: quotes a token"
            );
        }
    }
}

#[tokio::test]
async fn refusals_read_as_vertex_writes_them() {
    let (state, _) = emulator();
    let generate = format!("{FLASH}:generateContent");

    let (_, denied) = authorized(&state, &generate.replace("local-project", "other"), PROMPT).await;
    let (_, missing) = authorized(&state, &generate.replace("2.5-flash", "1.0-pro"), PROMPT).await;

    assert_eq!(
        denied["error"]["message"],
        "Permission 'aiplatform.endpoints.predict' denied on resource \
         '//aiplatform.googleapis.com/projects/other/locations/us-central1/publishers/google/models/gemini-2.5-flash' \
         (or it may not exist)."
    );
    assert_eq!(
        missing["error"]["message"],
        "Publisher Model `projects/local-project/locations/us-central1/publishers/google/models/gemini-1.0-pro` \
         was not found or your project does not have access to it."
    );
}

#[tokio::test]
async fn an_expired_bearer_is_refused_whichever_kind_it_is() {
    let (state, clock) = emulator();
    let tokens = [
        service_account_token(&state, &[CLOUD_PLATFORM]),
        federated_token(&state),
    ];
    clock.advance(LIFETIME);

    for token in tokens {
        let bearer = format!("Bearer {token}");
        let (status, answer) = send(
            &state,
            call(&format!("{FLASH}:generateContent"), Some(&bearer), PROMPT),
        )
        .await;

        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(
            answer["error"]["details"][0]["reason"], "ACCESS_TOKEN_EXPIRED",
            "{answer}"
        );
    }
}

#[tokio::test]
async fn configuration_chooses_projects_and_models_and_any_location_is_served() {
    let clock = ManualClock::new(datetime!(2025-01-01 00:00 UTC));
    let state = EmulatorState::new(EmulatorConfig {
        clock: clock.into(),
        vertex_projects: vec!["mine".to_string()],
        vertex_models: vec![],
        ..EmulatorConfig::default()
    });
    let cases = [
        (
            "/v1/projects/mine/locations/global/publishers/google/models/any-model:countTokens",
            StatusCode::OK,
        ),
        (
            "/v1/projects/mine/locations/eu/publishers/google/models/gemini-2.5-flash:countTokens",
            StatusCode::OK,
        ),
        (
            "/v1/projects/mine/locations/europe-west4/publishers/google/models/x:countTokens",
            StatusCode::OK,
        ),
        (
            "/v1/projects/local-project/locations/global/publishers/google/models/x:countTokens",
            StatusCode::FORBIDDEN,
        ),
    ];

    for (uri, expected) in cases {
        let (status, answer) = authorized(&state, uri, PROMPT).await;

        assert_eq!(status, expected, "{uri}: {answer}");
    }
}

#[tokio::test]
async fn every_vertex_request_is_recorded_and_counted_refused_and_faulted_ones_too() {
    let (state, _) = emulator();
    state.inject(Target::Vertex, Fault::status(StatusCode::TOO_MANY_REQUESTS));
    let bearer = format!(
        "Bearer {}",
        service_account_token(&state, &[CLOUD_PLATFORM])
    );
    let generate = format!("{FLASH}:generateContent");
    let with_headers = Request::post(format!("{FLASH}:streamGenerateContent?alt=sse"))
        .header("Authorization", &bearer)
        .header("X-Goog-User-Project", "billing-project")
        .body(Body::from(PROMPT))
        .expect("a valid test request");

    let (faulted, body) = send(&state, call(&generate, Some(&bearer), PROMPT)).await;
    let (refused, _) = send(&state, call(&generate, None, "{}")).await;
    send(&state, with_headers).await;
    send(
        &state,
        call(
            "/v1/projects/p/locations/l/publishers/other/models/m:x",
            None,
            "",
        ),
    )
    .await;

    assert_eq!(faulted, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
    let recorded = state.vertex_requests();
    let summary: Vec<(String, Option<String>, Vec<u8>)> = recorded
        .iter()
        .map(|r| (r.path.clone(), r.query.clone(), r.body.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (generate.clone(), None, PROMPT.as_bytes().to_vec()),
            (generate, None, b"{}".to_vec()),
            (
                format!("{FLASH}:streamGenerateContent"),
                Some("alt=sse".to_string()),
                PROMPT.as_bytes().to_vec()
            ),
        ],
        "an unrouted path must be neither recorded nor counted"
    );
    let streamed = &recorded[2];
    assert_eq!(streamed.method, "POST");
    assert_eq!(
        streamed.header("x-goog-user-project"),
        Some("billing-project")
    );
    assert_eq!(streamed.header("authorization"), Some(bearer.as_str()));
    assert!(
        streamed.stream_finished_at.is_some(),
        "the stream's end was not noted"
    );
    assert!(
        streamed
            .headers
            .iter()
            .all(|(name, _)| *name == name.to_lowercase()),
        "{:?}",
        streamed.headers
    );
    assert!(recorded[0].received_at <= recorded[1].received_at);
    assert_eq!(
        recorded[0].stream_finished_at, None,
        "a buffered answer has no stream end"
    );
    assert_eq!(state.calls(Target::Vertex), 3);
}

#[tokio::test]
async fn a_stream_abort_leaves_a_buffered_answer_alone() {
    let (state, _) = emulator();
    state.inject(Target::Vertex, Fault::abort_stream_after(0));

    let (status, answer) = authorized(&state, &format!("{FLASH}:generateContent"), PROMPT).await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        ANSWER
    );
}
