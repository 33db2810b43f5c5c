//! Vertex AI's OpenAI-compatible endpoint:
//! `POST .../locations/{location}/endpoints/openapi/chat/completions`, with models named
//! `google/<model id>`, answering a `chat.completion`, or with `"stream": true` server-sent
//! `chat.completion.chunk` events ending in `data: [DONE]`.
//!
//! Limitation: refusals use the same `google.rpc.Status` object as the native routes, because
//! the emulator does not model the shapes the real endpoint varies between.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::answer::{self, Usage};
use super::{admit, serves_model, Rpc, VertexError};
use crate::faults::StreamAbort;
use crate::recorder::Received;
use crate::sse::{self, Event, Framing};
use crate::state::EmulatorState;

/// What the JSON body must look like, for refusals.
const EXPECTED_BODY: &str =
    "{\"model\": \"google/MODEL\", \"messages\": [{\"role\": \"user\", \"content\": \"...\"}]}";

/// The prefix of every model name on this endpoint.
const MODEL_PREFIX: &str = "google/";

/// The parts of a chat completion request that the answer depends on.
///
/// Limitation: other fields (`temperature`, `tools`, ...) are accepted unread, because the
/// emulator only needs to stand in for Vertex while a client forwards bodies it does not write.
#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<MessageContent>,
}

/// A message's content: a string, or a list of typed parts of which the text ones count.
#[derive(Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    text: Option<String>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl Message {
    fn texts(&self) -> Vec<&str> {
        match &self.content {
            None => vec![],
            Some(MessageContent::Text(text)) => vec![text.as_str()],
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter_map(|part| part.text.as_deref())
                .collect(),
        }
    }
}

impl ChatRequest {
    fn parse(body: &[u8]) -> Result<Self, VertexError> {
        let request: Self = serde_json::from_slice(body)
            .map_err(|error| VertexError::malformed_body(&error, EXPECTED_BODY))?;
        if request.messages.is_empty() {
            return Err(VertexError::invalid(
                "messages",
                "Unable to submit request because it has no messages; add at least one.",
            ));
        }
        Ok(request)
    }

    fn texts(&self) -> impl Iterator<Item = &str> {
        self.messages.iter().flat_map(Message::texts)
    }

    /// What the answer quotes: the first text of the last message, the latest turn.
    fn prompt(&self) -> &str {
        self.messages
            .last()
            .and_then(|message| message.texts().first().copied())
            .unwrap_or_default()
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|options| options.include_usage)
    }
}

pub(super) async fn serve(
    State(state): State<EmulatorState>,
    Path((project, location)): Path<(String, String)>,
    headers: HeaderMap,
    abort: Option<Extension<StreamAbort>>,
    Extension(received): Extension<Received>,
) -> Response {
    let resource = format!("projects/{project}/locations/{location}/endpoints/openapi");
    let abort = abort.map(|Extension(abort)| abort);

    match answer(&state, &project, &resource, &headers, abort, received) {
        Ok((model, stream, response)) => {
            info!(
                method = Rpc::ChatCompletions.name(),
                model = %model,
                location = %location,
                stream,
                "vertex answer served"
            );
            response
        }
        Err(error) => error.refuse(Some(Rpc::ChatCompletions)),
    }
}

/// The answer, with the model it names and whether it streams.
fn answer(
    state: &EmulatorState,
    project: &str,
    resource: &str,
    headers: &HeaderMap,
    abort: Option<StreamAbort>,
    received: Received,
) -> Result<(String, bool, Response), VertexError> {
    admit(state, headers, project, resource)?;
    let body = received.body.ok_or_else(VertexError::unreadable_body)?;
    let request = ChatRequest::parse(&body)?;
    let model = request.model.as_deref().unwrap_or_default();
    let config = state.config();
    let model_id = model
        .strip_prefix(MODEL_PREFIX)
        .filter(|id| serves_model(config, id))
        .ok_or_else(|| {
            VertexError::invalid(
                "model",
                format!(
                    "Unable to submit request because the model {model:?} is not served here; \
                     name a model google/MODEL_ID, one of {:?}.",
                    config.vertex_models
                ),
            )
        })?;

    let text = answer::text(model_id, request.prompt());
    let usage = Usage {
        prompt: answer::tokens(request.texts()),
        answer: answer::tokens([text.as_str()]),
    };
    let completion = Completion {
        id: format!("chatcmpl-{}", hex::encode(rand::random::<[u8; 12]>())),
        created: state.now().unix_timestamp(),
        model,
    };
    let stream = request.stream.unwrap_or(false);
    let response = if stream {
        let events = completion.events(
            &text,
            usage,
            request.include_usage(),
            config.stream_events,
            config.stream_event_delay,
        );
        sse::response(events, abort, received.stream_end)
    } else {
        Json(completion.whole(&text, usage)).into_response()
    };
    Ok((model.to_string(), stream, response))
}

/// What every object of one answer shares.
struct Completion<'a> {
    id: String,
    created: i64,
    model: &'a str,
}

impl Completion<'_> {
    /// The `chat.completion` object of an answer that does not stream.
    fn whole(&self, text: &str, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }],
            "usage": usage_object(usage),
        })
    }

    /// The events of a streamed answer: `text` in `count` `chat.completion.chunk`s, `delay`
    /// apart, the last with `finish_reason`; then, if asked for, a chunk with the usage and no
    /// choices; then `[DONE]`.
    fn events(
        &self,
        text: &str,
        usage: Usage,
        include_usage: bool,
        count: usize,
        delay: Duration,
    ) -> Vec<Event> {
        let pieces = answer::split(text, count);
        let last = pieces.len() - 1;
        let chunks: Vec<String> = pieces
            .into_iter()
            .enumerate()
            .map(|(index, piece)| {
                let finish_reason = (index == last).then_some("stop");
                let choice = json!({
                    "index": 0,
                    "delta": {"role": "assistant", "content": piece},
                    "finish_reason": finish_reason,
                });
                self.chunk(vec![choice]).to_string()
            })
            .collect();

        let mut events = sse::paced(&chunks, Framing::Lf, delay);
        if include_usage {
            let mut usage_chunk = self.chunk(vec![]);
            usage_chunk["usage"] = usage_object(usage);
            events.push(Event::new(
                &usage_chunk.to_string(),
                Framing::Lf,
                Duration::ZERO,
            ));
        }
        events.push(Event::new("[DONE]", Framing::Lf, Duration::ZERO));
        events
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

fn usage_object(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.answer,
        "total_tokens": usage.total(),
    })
}
