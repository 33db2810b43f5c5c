//! Gemini on Vertex AI: `POST .../publishers/google/models/{model}:{method}` with the methods
//! `generateContent`, `streamGenerateContent` (server-sent events with `alt=sse`, else one JSON
//! array) and `countTokens`.

use axum::extract::{Path, RawQuery, State};
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
use crate::sse::{self, Framing};
use crate::state::EmulatorState;

/// What the JSON body of a `generateContent` request must look like, for refusals.
const EXPECTED_BODY: &str =
    "{\"contents\": [{\"role\": \"user\", \"parts\": [{\"text\": \"...\"}]}]}";

/// The parts of a `GenerateContentRequest` (also the body of `countTokens`) that the answer
/// depends on.
///
/// Limitation: other fields (`generationConfig`, `tools`, `safetySettings`, ...) are accepted
/// unread, and unknown ones are not refused as Vertex refuses them, because the emulator only
/// needs to stand in for Vertex while a client forwards bodies it does not write.
#[derive(Deserialize)]
struct GenerateContentRequest {
    #[serde(default)]
    contents: Vec<Content>,
    #[serde(default, rename = "systemInstruction")]
    system_instruction: Option<Content>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
}

impl GenerateContentRequest {
    fn parse(body: &[u8]) -> Result<Self, VertexError> {
        let request: Self = serde_json::from_slice(body)
            .map_err(|error| VertexError::malformed_body(&error, EXPECTED_BODY))?;
        if request.contents.is_empty() {
            return Err(VertexError::invalid(
                "contents",
                "Unable to submit request because it has no contents; add at least one content \
                 with parts.",
            ));
        }
        if let Some(index) = request.contents.iter().position(|c| c.parts.is_empty()) {
            return Err(VertexError::invalid(
                format!("contents[{index}].parts"),
                "Unable to submit request because a content has no parts; each content needs at \
                 least one part.",
            ));
        }
        Ok(request)
    }

    /// Every text part, the system instruction's first.
    fn texts(&self) -> impl Iterator<Item = &str> {
        self.system_instruction
            .iter()
            .chain(&self.contents)
            .flat_map(|content| &content.parts)
            .filter_map(|part| part.text.as_deref())
    }

    /// What the answer quotes: the first text part of the last content, the latest turn.
    fn prompt(&self) -> &str {
        self.contents
            .last()
            .and_then(|content| content.parts.iter().find_map(|part| part.text.as_deref()))
            .unwrap_or_default()
    }
}

/// The method after the colon of `{model}:{method}`.
#[derive(Clone, Copy, Debug)]
enum Method {
    GenerateContent,
    StreamGenerateContent,
    CountTokens,
}

impl Method {
    /// Splits `model:method`; `None` for a method the emulator does not implement.
    fn parse(model_and_method: &str) -> Option<(&str, Method)> {
        let (model, method) = model_and_method.rsplit_once(':')?;
        let method = match method {
            "generateContent" => Method::GenerateContent,
            "streamGenerateContent" => Method::StreamGenerateContent,
            "countTokens" => Method::CountTokens,
            _ => return None,
        };
        Some((model, method))
    }

    fn rpc(self) -> Rpc {
        match self {
            Method::GenerateContent => Rpc::GenerateContent,
            Method::StreamGenerateContent => Rpc::StreamGenerateContent,
            Method::CountTokens => Rpc::CountTokens,
        }
    }
}

/// What names a call: the path's project, location and model.
struct Call<'a> {
    project: &'a str,
    location: &'a str,
    model: &'a str,
}

impl Call<'_> {
    fn resource(&self) -> String {
        format!(
            "projects/{}/locations/{}/publishers/google/models/{}",
            self.project, self.location, self.model
        )
    }
}

pub(super) async fn serve(
    State(state): State<EmulatorState>,
    Path((project, location, model_and_method)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    abort: Option<Extension<StreamAbort>>,
    Extension(received): Extension<Received>,
) -> Response {
    let Some((model, method)) = Method::parse(&model_and_method) else {
        return VertexError::UnknownMethod.refuse(None);
    };
    let call = Call {
        project: &project,
        location: &location,
        model,
    };
    let sse = query.as_deref().is_some_and(asks_for_sse);
    let abort = abort.map(|Extension(abort)| abort);

    match answer(&state, &call, method, sse, &headers, abort, received) {
        Ok(response) => {
            info!(
                method = method.rpc().name(),
                model,
                location = %location,
                sse,
                "vertex answer served"
            );
            response
        }
        Err(error) => error.refuse(Some(method.rpc())),
    }
}

/// Whether a query string holds `alt=sse`.
fn asks_for_sse(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(key, value)| key == "alt" && value == "sse")
}

fn answer(
    state: &EmulatorState,
    call: &Call<'_>,
    method: Method,
    sse: bool,
    headers: &HeaderMap,
    abort: Option<StreamAbort>,
    received: Received,
) -> Result<Response, VertexError> {
    admit(state, headers, call.project, &call.resource())?;
    if !serves_model(state.config(), call.model) {
        return Err(VertexError::UnknownModel {
            name: call.resource(),
        });
    }
    let body = received.body.ok_or_else(VertexError::unreadable_body)?;
    let request = GenerateContentRequest::parse(&body)?;

    let text = answer::text(call.model, request.prompt());
    let usage = Usage {
        prompt: answer::tokens(request.texts()),
        answer: answer::tokens([text.as_str()]),
    };
    let response = match method {
        Method::GenerateContent => Json(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": usage_metadata(usage),
            "modelVersion": call.model,
        }))
        .into_response(),
        Method::CountTokens => Json(json!({
            "totalTokens": usage.prompt,
            "totalBillableCharacters": answer::billable_characters(request.texts()),
        }))
        .into_response(),
        Method::StreamGenerateContent => {
            let config = state.config();
            let chunks = chunks(call.model, &text, usage, config.stream_events);
            if sse {
                let payloads: Vec<String> = chunks.iter().map(Value::to_string).collect();
                let events = sse::paced(&payloads, Framing::Crlf, config.stream_event_delay);
                sse::response(events, abort, received.stream_end)
            } else {
                // Limitation: without alt=sse the array is sent whole, not streamed element by
                // element as Vertex does, because a client reads it whole either way.
                Json(Value::Array(chunks)).into_response()
            }
        }
    };
    Ok(response)
}

fn usage_metadata(usage: Usage) -> Value {
    json!({
        "promptTokenCount": usage.prompt,
        "candidatesTokenCount": usage.answer,
        "totalTokenCount": usage.total(),
    })
}

/// The `GenerateContentResponse` chunks of a streamed answer: `text` in `count` pieces, the
/// last carrying `finishReason` and `usageMetadata`.
fn chunks(model: &str, text: &str, usage: Usage, count: usize) -> Vec<Value> {
    let pieces = answer::split(text, count);
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(index, piece)| {
            let mut chunk = json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [{"text": piece}]},
                    "index": 0,
                }],
                "modelVersion": model,
            });
            if index == last {
                chunk["candidates"][0]["finishReason"] = "STOP".into();
                chunk["usageMetadata"] = usage_metadata(usage);
            }
            chunk
        })
        .collect()
}
