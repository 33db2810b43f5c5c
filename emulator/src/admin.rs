//! Routes under `/emulator/` that let a script drive faults and read call counts, as the
//! [`crate::RunningEmulator`] methods do in process. They are neither counted nor faulted.
//!
//! - `POST /emulator/faults` queues a fault: `{"target": "sts"|"iam"|"vertex", "status": 503,
//!   "body": {...} or "text", "delay_ms": 0, "abort_after_events": 2, "count": 1}` (`status`,
//!   `delay_ms` or `abort_after_events` required; a string `body` is sent as it is, any other
//!   JSON value serialised; `abort_after_events`, for `vertex` only and never with a `status`,
//!   is [`Fault::abort_stream_after`]). Answers 204, or 400 with `{"error": "..."}`.
//! - `DELETE /emulator/faults` drops every queued fault. Answers 204.
//! - `GET /emulator/calls` answers the call counts, `{"sts": 2, "iam": 1, "vertex": 0}`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::info;

use crate::faults::{Fault, Target};
use crate::state::EmulatorState;

/// The admin routes.
pub(crate) fn routes() -> Router<EmulatorState> {
    Router::new()
        .route("/emulator/faults", post(add_fault).delete(clear_faults))
        .route("/emulator/calls", get(calls))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    target: Target,
    status: Option<u16>,
    body: Option<Value>,
    #[serde(default)]
    delay_ms: u64,
    abort_after_events: Option<u32>,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

impl FaultRequest {
    fn into_fault(self) -> Result<Fault, String> {
        if self.count == 0 {
            return Err("count must be at least 1".to_string());
        }
        let delay = Duration::from_millis(self.delay_ms);
        let fault = match (self.status, self.abort_after_events) {
            (Some(_), Some(_)) => {
                return Err(
                    "abort_after_events cannot be combined with a status: a status is \
                            answered before any stream starts"
                        .into(),
                )
            }
            (Some(code), None) => {
                let status = StatusCode::from_u16(code)
                    .map_err(|_| format!("status {code} is not an HTTP status"))?;
                Fault::status(status).with_delay(delay)
            }
            (None, Some(_)) if self.target != Target::Vertex => {
                return Err(
                    "abort_after_events applies only to target vertex, whose answers \
                            stream"
                        .into(),
                )
            }
            (None, Some(events)) => Fault::abort_stream_after(events).with_delay(delay),
            (None, None) if delay.is_zero() => {
                return Err("a fault needs a status, a delay_ms or abort_after_events".into())
            }
            (None, None) => Fault::hang(delay),
        };
        let fault = match self.body {
            None => fault,
            Some(Value::String(text)) => fault.with_body(text),
            Some(value) => fault.with_body(value.to_string()),
        };
        Ok(fault.times(self.count))
    }
}

async fn add_fault(State(state): State<EmulatorState>, body: Bytes) -> Response {
    let request = serde_json::from_slice::<FaultRequest>(&body).map_err(|e| e.to_string());
    match request.and_then(|request| Ok((request.target, request.into_fault()?))) {
        Ok((target, fault)) => {
            info!(service = target.name(), ?fault, "fault queued");
            state.inject(target, fault);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(reason) => (StatusCode::BAD_REQUEST, Json(json!({"error": reason}))).into_response(),
    }
}

async fn clear_faults(State(state): State<EmulatorState>) -> StatusCode {
    state.clear_faults();
    info!("faults cleared");
    StatusCode::NO_CONTENT
}

async fn calls(State(state): State<EmulatorState>) -> Json<Map<String, Value>> {
    let counts = Target::ALL
        .iter()
        .map(|target| (target.name().to_string(), state.calls(*target).into()))
        .collect();
    Json(counts)
}
