//! One HTTP exchange with a Google service, classified as success, transient or permanent.

use reqwest::header::RETRY_AFTER;
use serde::de::DeserializeOwned;

use crate::error::{Stage, UpstreamError, UpstreamFailure};

/// Google's token responses are a few hundred bytes; anything far larger is not one of them,
/// and reading it whole would only waste the function's memory.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A response that arrived, not yet judged.
pub(crate) struct UpstreamResponse {
    stage: Stage,
    status: u16,
    retry_after: Option<u64>,
    body: Vec<u8>,
}

/// Sends `request` and reads the response body, bounded in size.
///
/// Transport errors are described without the URL or headers: reqwest's own messages print
/// the URL, and a credential must never reach a log through them.
pub(crate) async fn send(
    stage: Stage,
    request: reqwest::RequestBuilder,
) -> Result<UpstreamResponse, UpstreamError> {
    let transport = |error: reqwest::Error| UpstreamError {
        stage,
        failure: if error.is_timeout() {
            UpstreamFailure::Timeout
        } else {
            UpstreamFailure::Unavailable {
                status: None,
                retry_after: None,
            }
        },
    };
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());

    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(UpstreamError::refused(
                stage,
                Some(status),
                "the response is far larger than any Google token response",
                "check that the configured endpoint is really a Google API",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(UpstreamResponse {
        stage,
        status,
        retry_after,
        body,
    })
}

impl UpstreamResponse {
    /// Parses a 2xx body as `T`; classes any other status as transient (408, 429, 5xx) or as a
    /// refusal explained by `explain`, which turns the status and body into Google's message
    /// and a hint.
    pub(crate) fn parse<T: DeserializeOwned>(
        self,
        explain: impl FnOnce(u16, &[u8]) -> (String, &'static str),
    ) -> Result<T, UpstreamError> {
        let stage = self.stage;
        match self.status {
            200..=299 => serde_json::from_slice(&self.body).map_err(|_| {
                UpstreamError::refused(
                    stage,
                    Some(self.status),
                    "the success response could not be parsed",
                    "check that the configured endpoint is really a Google API",
                )
            }),
            408 | 429 | 500..=599 => Err(UpstreamError {
                stage,
                failure: UpstreamFailure::Unavailable {
                    status: Some(self.status),
                    retry_after: self.retry_after,
                },
            }),
            status => {
                let (message, hint) = explain(status, &self.body);
                Err(UpstreamError::refused(stage, Some(status), message, hint))
            }
        }
    }
}

/// Shortens an upstream message so a log line or an error body stays readable.
pub(crate) fn clip(message: &str) -> String {
    const LIMIT: usize = 300;
    match message.char_indices().nth(LIMIT) {
        Some((at, _)) => format!("{}...", &message[..at]),
        None => message.to_owned(),
    }
}
