//! The emulated Vertex AI over a real loopback connection, as the broker meets it: events that
//! arrive one at a time in their time, a stream broken off by a fault, and what the emulator
//! records of it.

use std::time::{Duration, Instant};

use gcp_wif_emulator::{spawn, EmulatorConfig, Fault, RunningEmulator, Target};
use serde_json::{json, Value};

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const SERVICE_ACCOUNT: &str = "broker@local-project.iam.gserviceaccount.com";
const MODEL_PATH: &str =
    "/v1/projects/local-project/locations/global/publishers/google/models/gemini-2.5-flash";
const CHAT_PATH: &str =
    "/v1/projects/local-project/locations/global/endpoints/openapi/chat/completions";
const DELAY: Duration = Duration::from_millis(200);

/// An emulator streaming 3 events [`DELAY`] apart, and a bearer it accepts.
async fn emulator() -> (RunningEmulator, String) {
    let config = EmulatorConfig {
        stream_events: 3,
        stream_event_delay: DELAY,
        ..EmulatorConfig::default()
    };
    let emulator = spawn(config, "127.0.0.1:0".parse().expect("a loopback address"))
        .await
        .expect("the emulator binds a free loopback port");
    let token = emulator.issue_access_token(
        SERVICE_ACCOUNT,
        &[CLOUD_PLATFORM],
        Duration::from_secs(3600),
    );
    (emulator, token)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a plain HTTP client")
}

fn prompt() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Stream me a story"}]}]})
}

/// What a streaming client saw: each complete event with the instant it was complete, and
/// how the body ended (`Ok` for a clean end, the error's text otherwise).
struct Received {
    events: Vec<(String, Instant)>,
    ending: Result<(), String>,
}

/// Reads `response` chunk by chunk, cutting events at `separator`.
async fn read_events(mut response: reqwest::Response, separator: &str) -> Received {
    let mut events = vec![];
    let mut pending = String::new();
    let ending = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let arrived = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find(separator) {
                    let event: String = pending.drain(..end + separator.len()).collect();
                    events.push((event, arrived));
                }
            }
            Ok(None) if pending.is_empty() => break Ok(()),
            Ok(None) => break Err(format!("the body ended inside an event: {pending:?}")),
            Err(error) => break Err(error.to_string()),
        }
    };
    Received { events, ending }
}

/// The JSON after `data: ` of an event framed with `separator`.
fn data(event: &str, separator: &str) -> Value {
    let payload = event
        .strip_prefix("data: ")
        .and_then(|rest| rest.strip_suffix(separator))
        .unwrap_or_else(|| panic!("not a data event: {event:?}"));
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("{payload:?} is not JSON: {e}"))
}

#[tokio::test]
async fn sse_events_arrive_one_at_a_time_spaced_by_the_delay() {
    let (emulator, token) = emulator().await;
    let url = format!(
        "{}{MODEL_PATH}:streamGenerateContent?alt=sse",
        emulator.base_url()
    );

    let response = client()
        .post(url)
        .bearer_auth(&token)
        .json(&prompt())
        .send()
        .await
        .expect("the emulator answers");
    let content_type = response.headers().get("content-type").cloned();
    let received = read_events(response, "\r\n\r\n").await;

    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    assert_eq!(received.ending, Ok(()));
    assert_eq!(received.events.len(), 3, "events: {:?}", received.events);
    let chunks: Vec<Value> = received
        .events
        .iter()
        .map(|(event, _)| data(event, "\r\n\r\n"))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(
        text,
        "Emulated gemini-2.5-flash answer to: Stream me a story"
    );
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[2]["usageMetadata"]["promptTokenCount"], 4);

    // Loopback adds little, and a late first event can only shorten the first gap, so half
    // the delay is a safe lower bound on a busy machine.
    for pair in received.events.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= DELAY / 2,
            "events {gap:?} apart, expected about {DELAY:?}"
        );
    }
    let first_event_at = received.events[0].1;

    let recorded = emulator.vertex_requests();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].query.as_deref(), Some("alt=sse"));
    let finished_at = recorded[0]
        .stream_finished_at
        .unwrap_or_else(|| panic!("the stream's end was not noted: {recorded:?}"));
    assert!(
        first_event_at < finished_at,
        "the first event reached the client only after the stream finished"
    );
    assert!(recorded[0].received_at <= finished_at);
}

#[tokio::test]
async fn streamed_chat_sends_chunks_then_usage_then_done() {
    let (emulator, token) = emulator().await;
    let url = format!("{}{CHAT_PATH}", emulator.base_url());
    let cases = [(true, 5), (false, 4)];

    for (include_usage, expected_events) in cases {
        let body = json!({
            "model": "google/gemini-2.5-pro",
            "messages": [{"role": "user", "content": "Stream me a story"}],
            "stream": true,
            "stream_options": {"include_usage": include_usage},
        });

        let response = client()
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("the emulator answers");
        let received = read_events(response, "\n\n").await;

        let events: Vec<&str> = received.events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(received.ending, Ok(()), "include_usage {include_usage}");
        assert_eq!(events.len(), expected_events, "{events:?}");
        assert_eq!(events.last(), Some(&"data: [DONE]\n\n"), "{events:?}");
        let chunks: Vec<Value> = events[..expected_events - 1]
            .iter()
            .map(|event| data(event, "\n\n"))
            .collect();
        let finish_reasons: Vec<&Value> = chunks[..3]
            .iter()
            .map(|chunk| &chunk["choices"][0]["finish_reason"])
            .collect();
        assert_eq!(finish_reasons, [&Value::Null, &Value::Null, &json!("stop")]);
        let text: String = chunks[..3]
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Emulated gemini-2.5-pro answer to: Stream me a story");
        for chunk in &chunks {
            assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
            assert_eq!(chunk["model"], "google/gemini-2.5-pro", "{chunk}");
            assert_eq!(chunk["id"], chunks[0]["id"], "one id per answer");
        }
        if include_usage {
            assert_eq!(chunks[3]["choices"], json!([]));
            assert_eq!(
                chunks[3]["usage"],
                json!({"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12})
            );
        }
    }
}

#[tokio::test]
async fn an_abort_fault_breaks_one_stream_off_after_its_events() {
    let (emulator, token) = emulator().await;
    emulator.inject(Target::Vertex, Fault::abort_stream_after(1));
    let url = format!(
        "{}{MODEL_PATH}:streamGenerateContent?alt=sse",
        emulator.base_url()
    );
    let stream = || {
        client()
            .post(&url)
            .bearer_auth(&token)
            .json(&prompt())
            .send()
    };

    let broken = read_events(stream().await.expect("headers arrive"), "\r\n\r\n").await;
    let whole = read_events(stream().await.expect("headers arrive"), "\r\n\r\n").await;

    assert_eq!(broken.events.len(), 1, "{:?}", broken.events);
    assert!(
        broken.ending.is_err(),
        "the broken stream ended cleanly: the client cannot tell it from a whole one"
    );
    assert_eq!(whole.events.len(), 3, "the fault applied twice");
    assert_eq!(whole.ending, Ok(()));
    let recorded = emulator.vertex_requests();
    assert!(
        recorded.iter().all(|r| r.stream_finished_at.is_some()),
        "{recorded:?}"
    );
    assert_eq!(emulator.calls(Target::Vertex), 2);
}

#[tokio::test]
async fn admin_route_queues_a_stream_abort_for_vertex() {
    let (emulator, token) = emulator().await;
    let client = client();

    let queued = client
        .post(format!("{}/emulator/faults", emulator.base_url()))
        .json(&json!({"target": "vertex", "abort_after_events": 2}))
        .send()
        .await
        .expect("the admin route answers");
    assert_eq!(queued.status().as_u16(), 204);
    let response = client
        .post(format!("{}{CHAT_PATH}", emulator.base_url()))
        .bearer_auth(&token)
        .json(&json!({
            "model": "google/gemini-2.5-flash",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
        }))
        .send()
        .await
        .expect("headers arrive");
    let received = read_events(response, "\n\n").await;

    assert_eq!(received.events.len(), 2, "{:?}", received.events);
    assert!(received.ending.is_err(), "the stream ended cleanly");
    let calls: Value = client
        .get(format!("{}/emulator/calls", emulator.base_url()))
        .send()
        .await
        .expect("the admin route answers")
        .json()
        .await
        .expect("calls are JSON");
    assert_eq!(calls, json!({"sts": 0, "iam": 0, "vertex": 1}));
}
