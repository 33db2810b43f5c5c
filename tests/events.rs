//! Every event in `events/` through the real binary, in both response modes.

mod common;

use common::{event_files, field, Answer, Stack};
use serde_json::json;

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Each event file and the status it must get; env.json is tested in startup.rs.
const EXPECTED: &[(&str, u16)] = &[
    ("chat-http-api.json", 200),
    ("generate-function-url.json", 200),
    ("healthz-function-url.json", 200),
    ("model-not-allowed.json", 400),
    ("model-path-traversal.json", 400),
    ("stream-function-url.json", 200),
    ("token-caller-not-allowed.json", 403),
    ("token-function-url.json", 200),
    ("token-http-api.json", 200),
    ("token-malformed-body.json", 400),
    ("token-no-identity.json", 403),
    ("token-rest-api.json", 200),
];

#[test]
fn every_event_file_is_in_the_table() {
    let mut covered: Vec<&str> = EXPECTED.iter().map(|(n, _)| *n).collect();
    covered.push("env.json");
    covered.sort();
    assert_eq!(
        event_files(),
        covered,
        "every file in events/ must be exercised (env.json by startup.rs)"
    );
}

async fn run_all(stack: &Stack) -> Vec<(&'static str, Answer)> {
    let mut answers = Vec::new();
    for (name, status) in EXPECTED {
        let answer = stack.invoke_file(name).await;
        assert_eq!(answer.status, *status, "{name}: {}", answer.raw);
        assert_eq!(
            answer.headers.get("cache-control").map(String::as_str),
            Some("no-store"),
            "{name}: {:?}",
            answer.headers
        );
        if *status != 200 {
            assert_eq!(
                answer.body["error"]["code"], *status,
                "{name}: {}",
                answer.raw
            );
        }
        answers.push((*name, answer));
    }
    answers
}

fn answer<'a>(answers: &'a [(&str, Answer)], name: &str) -> &'a Answer {
    &answers.iter().find(|(n, _)| *n == name).expect(name).1
}

async fn every_event_gets_its_documented_answer(mode: &str) {
    let stack = Stack::start(&[("BROKER_RESPONSE_MODE", mode)]).await;
    let answers = run_all(&stack).await;

    let url = answer(&answers, "token-function-url.json");
    assert_eq!(url.body["token_type"], "Bearer");
    assert_eq!(url.body["scopes"], json!([CLOUD_PLATFORM]));
    assert_eq!(
        url.body["service_account"],
        gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT
    );
    let expires_in = url.body["expires_in"].as_u64().expect("expires_in");
    assert!(
        (1700..=1800).contains(&expires_in),
        "lifetime 1800 asked, got {expires_in}"
    );
    assert!(url.body["expire_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(url.headers["pragma"], "no-cache");
    let token = url.body["access_token"].as_str().expect("access_token");
    assert!(
        stack.google.access_token_info(token).is_some(),
        "not issued by the emulator"
    );

    let rest = answer(&answers, "token-rest-api.json").body["expires_in"]
        .as_u64()
        .unwrap();
    assert!((800..=900).contains(&rest), "REST asked 900 s, got {rest}");
    let http = answer(&answers, "token-http-api.json").body["expires_in"]
        .as_u64()
        .unwrap();
    assert!(
        http > 1800,
        "GET /token defaults to the maximum, got {http}"
    );

    let generated = answer(&answers, "generate-function-url.json");
    assert!(
        generated.body["candidates"][0]["content"]["parts"][0]["text"].is_string(),
        "{}",
        generated.raw
    );
    let streamed = answer(&answers, "stream-function-url.json");
    assert!(streamed.headers["content-type"].starts_with("text/event-stream"));
    assert!(
        streamed.text.matches("data: ").count() >= 3,
        "{}",
        streamed.text
    );
    let chat = answer(&answers, "chat-http-api.json");
    assert_eq!(chat.body["object"], "chat.completion", "{}", chat.raw);

    assert_eq!(
        answer(&answers, "token-no-identity.json").body,
        answer(&answers, "token-caller-not-allowed.json").body,
        "refusals must be indistinguishable"
    );
    let reasons: Vec<String> = stack
        .events_named("caller_refused")
        .iter()
        .map(|r| field(r, "reason").as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(reasons.contains(&"no IAM identity in the request context".to_owned()));
    assert!(reasons.contains(&"caller does not match BROKER_ALLOWED_CALLERS".to_owned()));

    let vertex_paths: Vec<String> = stack
        .google
        .vertex_requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        vertex_paths.len(),
        3,
        "refused events must not reach Vertex: {vertex_paths:?}"
    );
}

#[tokio::test]
async fn every_event_gets_its_documented_answer_buffered() {
    every_event_gets_its_documented_answer("buffered").await;
}

#[tokio::test]
async fn every_event_gets_its_documented_answer_streaming() {
    every_event_gets_its_documented_answer("streaming").await;
}
