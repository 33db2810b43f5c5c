//! Injected failures and call counts, per emulated service.
//!
//! Each [`Target`] has a first-in, first-out queue of [`Fault`]s. A request to a target counts
//! one call and takes one use of the fault at the head of its queue: the fault's delay passes,
//! then its status is answered, or, for a fault without a status, the request is served
//! normally (a hang, to test a client's timeout), and a streamed answer breaks off if the fault
//! says so.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::state::EmulatorState;
use crate::{rpc_status, sts};

/// An emulated Google service whose requests can be counted and made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Target {
    /// Security Token Service: `POST /v1/token`.
    Sts,
    /// IAM Credentials: `generateAccessToken`.
    Iam,
    /// Vertex AI: Gemini's `generateContent`, `streamGenerateContent`, `countTokens` and the
    /// OpenAI-compatible `chat/completions`.
    Vertex,
}

impl Target {
    /// Every target, in the order the admin routes list them.
    pub const ALL: [Target; 3] = [Target::Sts, Target::Iam, Target::Vertex];

    /// The target's name in admin routes and logs: `sts`, `iam`, `vertex`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Sts => "sts",
            Target::Iam => "iam",
            Target::Vertex => "vertex",
        }
    }
}

/// A failure to inject: an answer (status and body), a delay before it, a stream that breaks
/// off, and how many requests it applies to.
///
/// ```
/// use std::time::Duration;
/// use gcp_wif_emulator::{Fault, StatusCode};
///
/// // Two 503s, each after half a second.
/// let flaky = Fault::status(StatusCode::SERVICE_UNAVAILABLE)
///     .with_delay(Duration::from_millis(500))
///     .times(2);
/// // One request that hangs for a minute, then succeeds.
/// let slow = Fault::hang(Duration::from_secs(60));
/// // One streamed Vertex AI answer that sends two events, then loses its connection.
/// let broken = Fault::abort_stream_after(2);
/// # let _ = (flaky, slow, broken);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    status: Option<StatusCode>,
    body: Option<String>,
    delay: Duration,
    abort_after_events: Option<u32>,
    count: u32,
}

impl Fault {
    /// Answer one request with `status` and the Google-shaped error body of the target.
    pub fn status(status: StatusCode) -> Self {
        Fault {
            status: Some(status),
            body: None,
            delay: Duration::ZERO,
            abort_after_events: None,
            count: 1,
        }
    }

    /// Hold one request for `delay`, then serve it normally.
    pub fn hang(delay: Duration) -> Self {
        Fault {
            status: None,
            body: None,
            delay,
            abort_after_events: None,
            count: 1,
        }
    }

    /// Let one streamed answer send its first `events` server-sent events (all of them if it
    /// has fewer), then break the connection off: the chunked body ends without its final
    /// chunk, as when an upstream dies mid-stream, and the client reads an error.
    ///
    /// A request whose answer does not stream (a buffered call, or a target other than
    /// [`Target::Vertex`]) is served normally.
    pub fn abort_stream_after(events: u32) -> Self {
        Fault {
            status: None,
            body: None,
            delay: Duration::ZERO,
            abort_after_events: Some(events),
            count: 1,
        }
    }

    /// Answer with `body` instead of the default error body; sent as JSON when it parses as
    /// JSON, as plain text otherwise. Ignored by a fault without a status.
    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Wait `delay` before answering.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Apply to the next `count` requests instead of one; a count of 0 counts as 1.
    pub fn times(mut self, count: u32) -> Self {
        self.count = count.max(1);
        self
    }
}

/// The fault queues and call counters of every target.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    faults: HashMap<Target, VecDeque<Fault>>,
    calls: HashMap<Target, u64>,
}

impl Traffic {
    pub(crate) fn inject(&mut self, target: Target, fault: Fault) {
        self.faults.entry(target).or_default().push_back(fault);
    }

    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    pub(crate) fn calls(&self, target: Target) -> u64 {
        self.calls.get(&target).copied().unwrap_or(0)
    }

    /// Counts a request to `target` and takes one use of the fault at the head of its queue.
    pub(crate) fn record_call(&mut self, target: Target) -> Option<Fault> {
        *self.calls.entry(target).or_default() += 1;

        let queue = self.faults.get_mut(&target)?;
        let head = queue.front_mut()?;
        head.count -= 1;
        if head.count == 0 {
            queue.pop_front()
        } else {
            Some(head.clone())
        }
    }
}

/// Set on a request by a [`Fault::abort_stream_after`]: its streamed answer sends this many
/// events, then breaks off.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamAbort {
    pub(crate) after_events: u32,
}

#[derive(Clone)]
struct TargetState {
    state: EmulatorState,
    target: Target,
}

/// `routes` with every matched request counted against `target` and subject to its faults.
pub(crate) fn intercepted(
    routes: Router<EmulatorState>,
    target: Target,
    state: &EmulatorState,
) -> Router<EmulatorState> {
    let target_state = TargetState {
        state: state.clone(),
        target,
    };
    routes.route_layer(middleware::from_fn_with_state(target_state, intercept))
}

async fn intercept(State(route): State<TargetState>, mut request: Request, next: Next) -> Response {
    let target = route.target;
    let Some(fault) = route.state.record_call(target) else {
        return next.run(request).await;
    };

    tokio::time::sleep(fault.delay).await;
    let Some(status) = fault.status else {
        match fault.abort_after_events {
            Some(after_events) => {
                info!(
                    service = target.name(),
                    delay_ms = fault.delay.as_millis(),
                    after_events,
                    "injected stream abort armed"
                );
                request
                    .extensions_mut()
                    .insert(StreamAbort { after_events });
            }
            None => info!(
                service = target.name(),
                delay_ms = fault.delay.as_millis(),
                "injected delay served"
            ),
        }
        return next.run(request).await;
    };

    info!(
        service = target.name(),
        status = status.as_u16(),
        "injected fault served"
    );
    let body = fault.body.unwrap_or_else(|| default_body(target, status));
    let content_type = if serde_json::from_str::<IgnoredAny>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    (status, [(CONTENT_TYPE, content_type)], body).into_response()
}

fn default_body(target: Target, status: StatusCode) -> String {
    match target {
        Target::Sts => sts::fault_body(status),
        Target::Iam | Target::Vertex => rpc_status::fault_body(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(code: u16) -> Fault {
        Fault::status(StatusCode::from_u16(code).expect("valid status"))
    }

    #[test]
    fn faults_are_served_first_in_first_out_one_use_per_request() {
        let mut traffic = Traffic::default();
        traffic.inject(Target::Sts, fault(503).times(2));
        traffic.inject(Target::Sts, fault(500));

        let served: Vec<Option<u16>> = (0..4)
            .map(|_| {
                traffic
                    .record_call(Target::Sts)
                    .and_then(|f| f.status)
                    .map(|s| s.as_u16())
            })
            .collect();

        assert_eq!(served, [Some(503), Some(503), Some(500), None]);
        assert_eq!(traffic.calls(Target::Sts), 4);
    }

    #[test]
    fn faults_apply_only_to_their_target() {
        let mut traffic = Traffic::default();
        traffic.inject(Target::Iam, fault(429));

        assert_eq!(traffic.record_call(Target::Sts), None);
        let served = traffic.record_call(Target::Iam).and_then(|f| f.status);
        assert_eq!(served, Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(
            (traffic.calls(Target::Sts), traffic.calls(Target::Iam)),
            (1, 1)
        );
    }

    #[test]
    fn clearing_faults_empties_every_queue_but_keeps_counts() {
        let mut traffic = Traffic::default();
        traffic.inject(Target::Sts, fault(503).times(5));
        traffic.inject(Target::Iam, fault(503));
        traffic.record_call(Target::Sts);

        traffic.clear_faults();

        assert_eq!(traffic.record_call(Target::Sts), None);
        assert_eq!(traffic.record_call(Target::Iam), None);
        assert_eq!(traffic.calls(Target::Sts), 2);
    }

    #[test]
    fn a_count_of_zero_counts_as_one() {
        let mut traffic = Traffic::default();
        traffic.inject(Target::Sts, fault(503).times(0));

        assert!(traffic.record_call(Target::Sts).is_some());
        assert_eq!(traffic.record_call(Target::Sts), None);
    }
}
