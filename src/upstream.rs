//! Calls to Google services: each response classified as success, transient or permanent,
//! and transient failures retried with jittered exponential backoff until a deadline.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{Stage, UpstreamError, UpstreamFailure};
use crate::{hints, metrics};

/// Three tries ride out a brief Google hiccup without turning one caller's request into a burst
/// against a service that is already struggling.
const MAX_ATTEMPTS: u32 = 3;

/// The first backoff; each later one doubles, up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);

/// No single wait is longer than this; a longer `Retry-After` ends the retries instead.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// An attempt with less time than this left is not started.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// When a call must be done by, and how long any one attempt may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempts {
    /// No attempt runs, and no backoff waits, past this instant.
    pub(crate) deadline: Instant,
    /// The longest a single attempt may take (`BROKER_UPSTREAM_TIMEOUT_SECONDS`).
    pub(crate) per_attempt: Duration,
}

impl Attempts {
    /// Sends the request `build` makes, retrying transient failures; `explain` turns a refusal
    /// into Google's message and a hint.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        stage: Stage,
        build: impl Fn() -> reqwest::RequestBuilder,
        explain: fn(u16, &[u8]) -> (String, &'static str),
    ) -> Result<T, UpstreamError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT {
                return Err(UpstreamError {
                    stage,
                    failure: UpstreamFailure::Timeout,
                });
            }
            let request = build().timeout(self.per_attempt.min(left));
            let started = Instant::now();
            let result = match send(stage, request).await {
                Ok(response) => response.parse(explain),
                Err(error) => Err(error),
            };
            let class = result.as_ref().err().map(|e| e.class());
            metrics::upstream(stage.as_str(), millis(started), class);
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) if !error.is_transient() || attempt >= MAX_ATTEMPTS => {
                    return Err(error)
                }
                Err(error) => error,
            };
            let wait = match error.failure {
                UpstreamFailure::Unavailable {
                    retry_after: Some(seconds),
                    ..
                } => Duration::from_secs(seconds),
                _ => backoff(attempt),
            };
            if wait > MAX_BACKOFF || Instant::now() + wait + MIN_ATTEMPT >= self.deadline {
                return Err(error);
            }
            tracing::debug!(stage = %stage, attempt, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Full jitter over an exponentially growing window, so that many environments failing at
/// once do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let window = BASE_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(MAX_BACKOFF);
    window.mul_f64(0.5 + fastrand::f64() / 2.0)
}

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

/// Sends `request` once and reads the response body, bounded in size.
///
/// Transport errors are described without the URL or headers: reqwest's own messages print
/// the URL, and a credential must never reach a log through them.
async fn send(
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
                hints::NOT_GOOGLE,
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
    fn parse<T: DeserializeOwned>(
        self,
        explain: fn(u16, &[u8]) -> (String, &'static str),
    ) -> Result<T, UpstreamError> {
        let stage = self.stage;
        match self.status {
            200..=299 => serde_json::from_slice(&self.body).map_err(|_| {
                UpstreamError::refused(
                    stage,
                    Some(self.status),
                    "the success response could not be parsed",
                    hints::NOT_GOOGLE,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(
                first >= BASE_BACKOFF / 2 && first <= BASE_BACKOFF,
                "{first:?}"
            );
            let second = backoff(2);
            assert!(
                second >= BASE_BACKOFF && second <= BASE_BACKOFF * 2,
                "{second:?}"
            );
            assert!(backoff(30) <= MAX_BACKOFF);
        }
    }
}
