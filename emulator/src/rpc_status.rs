//! Google's `google.rpc.Status` error body, `{"error": {"code", "message", "status", "details"}}`,
//! with which the JSON APIs (IAM Credentials, Vertex AI) refuse a request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The `google.rpc.Code` name Google pairs with an HTTP status.
pub(crate) fn code_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// A refusal with `status`, `message` and, when given, `details` (a JSON array of typed
/// detail objects such as `google.rpc.ErrorInfo`).
pub(crate) fn response(status: StatusCode, message: String, details: Option<Value>) -> Response {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": code_name(status),
    });
    if let Some(details) = details {
        error["details"] = details;
    }
    (status, Json(json!({"error": error}))).into_response()
}

/// The default body of an injected fault with `status`.
pub(crate) fn fault_body(status: StatusCode) -> String {
    json!({"error": {
        "code": status.as_u16(),
        "message": "The emulator answered with an injected fault.",
        "status": code_name(status),
    }})
    .to_string()
}
