//! Gemini forwarding: the broker calls Vertex AI with its own token on the caller's behalf.
//!
//! Callers never hold a Google token. The upstream request is built from scratch: the URL from
//! the broker's settings and checked path segments, the headers from the broker alone (its
//! bearer, the content type, the quota project), and the caller's body unchanged (or, for chat
//! completions, with the model name normalised). Google's own errors pass through as they are,
//! so clients behave as they would against Vertex.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::error::ApiError;
use crate::metrics;
use crate::reply::{self, Reply, ReplyBody};
use crate::vertex::{Method, VertexSettings};

/// Lambda's payload limit for a synchronous invocation; a buffered answer cannot exceed it.
pub const MAX_BUFFERED_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// Time kept back from the invocation's deadline to send an answer before Lambda stops us.
const DEADLINE_RESERVE: Duration = Duration::from_millis(750);

/// Used when the runtime gives no deadline (never on Lambda; only in unusual local runs).
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunks in flight between the upstream reader and the Lambda response stream.
const STREAM_BUFFER: usize = 16;

/// A forwarded call the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `publishers/google/models/{model}:{method}`.
    Model {
        /// An allowed location.
        location: String,
        /// An allowed model id.
        model: String,
        /// The Gemini method.
        method: Method,
    },
    /// `endpoints/openapi/chat/completions`; the model is in the body.
    Chat {
        /// An allowed location.
        location: String,
    },
}

/// Who asked, and until when an answer is useful.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Lambda's request id.
    pub request_id: String,
    /// The caller's ARN.
    pub caller: String,
    /// When Lambda ends the invocation.
    pub deadline: Option<SystemTime>,
    /// When the invocation began, for latency.
    pub started: Instant,
}

/// Forwards calls to Vertex AI.
#[derive(Debug)]
pub struct Forwarder {
    vertex: VertexSettings,
    quota_project: Option<String>,
    client: reqwest::Client,
}

/// Token counts reported by Vertex (`usageMetadata`) or the OpenAI-compatible API (`usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    prompt: Option<u64>,
    output: Option<u64>,
    total: Option<u64>,
}

impl Forwarder {
    /// A forwarder for `vertex`, billing `quota_project` through `x-goog-user-project` if set.
    pub fn new(
        vertex: VertexSettings,
        quota_project: Option<String>,
    ) -> Result<Self, reqwest::Error> {
        // No overall timeout on the client: each call gets the invocation's remaining time,
        // because a long answer or stream is fine as long as it ends before Lambda's deadline.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gcp-wif-broker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            vertex,
            quota_project,
            client,
        })
    }

    /// The forwarding settings.
    pub fn vertex(&self) -> &VertexSettings {
        &self.vertex
    }

    /// Forwards `call` with `body` and answers as Vertex did; streams when the call streams.
    pub async fn forward(
        &self,
        broker: &Broker,
        call: Call,
        body: Bytes,
        invocation: Invocation,
    ) -> Reply {
        let (url, body, model, method, streaming) = match self.prepare(&call, body) {
            Ok(prepared) => prepared,
            Err(error) => {
                audit_refused(&invocation, &call, &error);
                return reply::error(&error);
            }
        };
        let mut record = Record {
            invocation,
            route: match call {
                Call::Model { .. } => "model",
                Call::Chat { .. } => "chat",
            },
            model,
            method,
            status: 0,
            usage: Usage::default(),
        };

        let Some(remaining) = remaining(record.invocation.deadline) else {
            let error = ApiError::new(504, "Too little time is left in this invocation.");
            record.finish_error(&error);
            return reply::error(&error);
        };
        let token = match broker
            .token(&broker.default_request(), record.invocation.deadline)
            .await
        {
            Ok((token, _)) => token,
            Err(error) => {
                let error = ApiError::from(&error);
                record.finish_error(&error);
                return reply::error(&error);
            }
        };

        let mut request = self
            .client
            .post(url)
            .bearer_auth(token.token.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .timeout(remaining)
            .body(body);
        if let Some(project) = &self.quota_project {
            request = request.header("x-goog-user-project", project);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let error = transport_error(&error);
                record.finish_error(&error);
                return reply::error(&error);
            }
        };
        record.status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();

        if streaming && response.status().is_success() {
            let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
            tokio::spawn(pump(response, sender, record));
            return reply::with_status(200, &content_type, ReplyBody::Stream(receiver));
        }
        buffered(response, &content_type, record).await
    }

    /// The upstream URL and body, the model and method for the audit, and whether it streams.
    fn prepare(
        &self,
        call: &Call,
        body: Bytes,
    ) -> Result<(String, Bytes, String, &'static str, bool), ApiError> {
        match call {
            Call::Model {
                location,
                model,
                method,
            } => Ok((
                self.vertex.model_url(location, model, *method),
                body,
                model.clone(),
                method.as_str(),
                *method == Method::StreamGenerateContent,
            )),
            Call::Chat { location } => {
                let (body, model, streaming) = self.chat_body(&body)?;
                Ok((
                    self.vertex.chat_url(location),
                    body,
                    model,
                    "chat.completions",
                    streaming,
                ))
            }
        }
    }

    /// Checks the chat body's model against the allowlist and names it `google/<id>`, the form
    /// Vertex's OpenAI-compatible endpoint expects.
    fn chat_body(&self, body: &[u8]) -> Result<(Bytes, String, bool), ApiError> {
        let mut value: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::new(400, "The body must be a JSON chat completions request."))?;
        let Some(object) = value.as_object_mut() else {
            return Err(ApiError::new(400, "The body must be a JSON object."));
        };
        let model = object.get("model").and_then(Value::as_str).ok_or_else(|| {
            ApiError::new(
                400,
                "model must be a string such as google/gemini-2.5-flash.",
            )
        })?;
        let id = model.strip_prefix("google/").unwrap_or(model).to_owned();
        if !self.vertex.allows_model(&id) {
            return Err(model_refused());
        }
        let streaming = object.get("stream").and_then(Value::as_bool) == Some(true);
        object.insert("model".to_owned(), Value::String(format!("google/{id}")));
        Ok((Bytes::from(value.to_string()), id, streaming))
    }
}

/// The answer for a model outside `BROKER_ALLOWED_MODELS` or with a malformed id.
pub fn model_refused() -> ApiError {
    ApiError::new(
        400,
        "The model is not a valid model id or is not among the models this broker forwards \
         (BROKER_ALLOWED_MODELS).",
    )
}

fn remaining(deadline: Option<SystemTime>) -> Option<Duration> {
    let Some(deadline) = deadline else {
        return Some(FALLBACK_TIMEOUT);
    };
    deadline
        .duration_since(SystemTime::now())
        .ok()
        .and_then(|left| left.checked_sub(DEADLINE_RESERVE))
        .filter(|left| *left >= Duration::from_millis(250))
}

fn transport_error(error: &reqwest::Error) -> ApiError {
    if error.is_timeout() {
        ApiError::new(
            504,
            "Vertex AI did not answer before the invocation's deadline.",
        )
    } else {
        let mut api = ApiError::new(503, "Vertex AI could not be reached; try again shortly.");
        api.retry_after = Some(1);
        api
    }
}

async fn buffered(
    mut response: reqwest::Response,
    content_type: &str,
    mut record: Record,
) -> Reply {
    let status = record.status;
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BUFFERED_RESPONSE_BYTES {
                    let error = ApiError::new(
                        502,
                        "The answer exceeds Lambda's 6 MB response limit; use streaming.",
                    );
                    record.finish_error(&error);
                    return reply::error(&error);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => {
                let error = transport_error(&error);
                record.finish_error(&error);
                return reply::error(&error);
            }
        }
    }
    if content_type.starts_with("text/event-stream") {
        let mut scanner = SseUsage::default();
        scanner.feed(&body);
        record.usage = scanner.usage;
    } else if let Ok(value) = serde_json::from_slice::<Value>(&body) {
        record.usage = usage_of(&value).unwrap_or_default();
    }
    record.finish(false);
    reply::with_status(
        status,
        content_type,
        ReplyBody::Full(Some(Bytes::from(body))),
    )
}

/// Copies the upstream stream to the caller chunk by chunk; a failure after the first byte
/// becomes an SSE error event, since the status line has already gone out.
async fn pump(mut response: reqwest::Response, sender: mpsc::Sender<Bytes>, mut record: Record) {
    let mut scanner = SseUsage::default();
    let failure = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                scanner.feed(&chunk);
                if sender.send(chunk).await.is_err() {
                    break Some(ApiError::new(499, "the caller went away"));
                }
            }
            Ok(None) => break None,
            Err(error) if error.is_timeout() => break Some(transport_error(&error)),
            Err(_) => {
                break Some(ApiError::new(
                    502,
                    "The Vertex AI stream broke off before it finished.",
                ))
            }
        }
    };
    record.usage = scanner.usage;
    match failure {
        None => record.finish(true),
        Some(error) => {
            if error.status != 499 {
                let event = format!("data: {}\n\n", error.body());
                let _ = sender.send(Bytes::from(event)).await;
            }
            record.finish_error(&error);
        }
    }
}

/// Finds token counts in SSE `data:` lines as they pass, without keeping the stream.
#[derive(Debug, Default)]
struct SseUsage {
    line: Vec<u8>,
    usage: Usage,
}

impl SseUsage {
    /// A line longer than this is an answer chunk too large to hold usage worth reading.
    const MAX_LINE: usize = 1024 * 1024;

    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                self.line_done();
            } else if self.line.len() < Self::MAX_LINE {
                self.line.push(byte);
            }
        }
    }

    fn line_done(&mut self) {
        let line = std::mem::take(&mut self.line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if let Ok(value) = serde_json::from_slice::<Value>(data.trim_ascii()) {
            if let Some(usage) = usage_of(&value) {
                self.usage = usage;
            }
        }
    }
}

fn usage_of(value: &Value) -> Option<Usage> {
    if let Some(meta) = value.get("usageMetadata").filter(|m| m.is_object()) {
        return Some(Usage {
            prompt: meta["promptTokenCount"].as_u64(),
            output: meta["candidatesTokenCount"].as_u64(),
            total: meta["totalTokenCount"].as_u64(),
        });
    }
    let usage = value.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt: usage["prompt_tokens"].as_u64(),
        output: usage["completion_tokens"].as_u64(),
        total: usage["total_tokens"].as_u64(),
    })
}

/// What the audit line of one forwarded call says.
struct Record {
    invocation: Invocation,
    route: &'static str,
    model: String,
    method: &'static str,
    status: u16,
    usage: Usage,
}

impl Record {
    fn finish(&self, streamed: bool) {
        let latency_ms = self.invocation.started.elapsed().as_secs_f64() * 1000.0;
        metrics::forwarded(self.route, latency_ms, self.usage.prompt, self.usage.output);
        tracing::info!(
            event = "forwarded",
            request_id = self.invocation.request_id,
            caller = self.invocation.caller,
            route = self.route,
            model = self.model,
            method = self.method,
            upstream_status = self.status,
            hint = crate::hints::for_vertex(self.status),
            streamed,
            latency_ms,
            prompt_tokens = self.usage.prompt,
            output_tokens = self.usage.output,
            total_tokens = self.usage.total,
        );
    }

    fn finish_error(&self, error: &ApiError) {
        metrics::error(error.class());
        tracing::warn!(
            event = "forward_failed",
            request_id = self.invocation.request_id,
            caller = self.invocation.caller,
            route = self.route,
            model = self.model,
            method = self.method,
            upstream_status = self.status,
            status = error.status,
            error = error.message,
            latency_ms = self.invocation.started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

fn audit_refused(invocation: &Invocation, call: &Call, error: &ApiError) {
    tracing::info!(
        event = "forward_refused",
        request_id = invocation.request_id,
        caller = invocation.caller,
        route = match call {
            Call::Model { .. } => "model",
            Call::Chat { .. } => "chat",
        },
        status = error.status,
        reason = error.message,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_found_in_sse_lines_split_across_chunks() {
        let mut scanner = SseUsage::default();
        let stream = b"data: {\"candidates\": []}\r\n\r\ndata: {\"usageMetadata\": {\"promptTokenCount\": 3, \"candidatesTokenCount\": 5, \"totalTokenCount\": 8}}\r\n\r\n";
        let (a, b) = stream.split_at(40);
        scanner.feed(a);
        scanner.feed(b);
        assert_eq!(
            scanner.usage,
            Usage {
                prompt: Some(3),
                output: Some(5),
                total: Some(8)
            }
        );
    }

    #[test]
    fn openai_usage_is_read_and_done_marker_ignored() {
        let mut scanner = SseUsage::default();
        scanner.feed(b"data: {\"usage\": {\"prompt_tokens\": 1, \"completion_tokens\": 2, \"total_tokens\": 3}}\n\ndata: [DONE]\n\n");
        assert_eq!(scanner.usage.total, Some(3));
    }

    #[test]
    fn remaining_time_keeps_a_reserve() {
        assert_eq!(remaining(None), Some(FALLBACK_TIMEOUT));
        assert_eq!(remaining(Some(SystemTime::now())), None);
        let left = remaining(Some(SystemTime::now() + Duration::from_secs(10))).unwrap();
        assert!(
            left <= Duration::from_secs(10) - DEADLINE_RESERVE,
            "{left:?}"
        );
        assert!(left > Duration::from_secs(8), "{left:?}");
    }
}
