//! Vertex AI: Gemini's `generateContent`, `streamGenerateContent` and `countTokens` on
//! `publishers/google/models/{model}`, and the OpenAI-compatible `endpoints/openapi/chat/completions`,
//! answering deterministic text.
//!
//! Every call checks, in this order, what Vertex checks: a bearer this emulator issued and that
//! has not expired (`UNAUTHENTICATED`), its `cloud-platform` scope (`PERMISSION_DENIED`), the
//! project (`PERMISSION_DENIED`), the model (`NOT_FOUND`) and the body (`INVALID_ARGUMENT`).
//! Refusals use `google.rpc.Status`. Any location is accepted: which host serves which
//! location is the client's business, and the emulator is one host.

mod answer;
mod chat;
mod gemini;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tracing::info;

use crate::config::EmulatorConfig;
use crate::faults::{intercepted, Target};
use crate::recorder::{self, MAX_BODY_BYTES};
use crate::rpc_status;
use crate::state::EmulatorState;
use crate::tokens::bearer_token;

/// The OAuth scope Vertex AI requires of an access token.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The IAM permission a prediction needs; Vertex names it when it refuses a project.
const PREDICT_PERMISSION: &str = "aiplatform.endpoints.predict";

/// The Vertex AI routes, recorded, counted and faulted as [`Target::Vertex`].
pub(crate) fn routes(state: &EmulatorState) -> Router<EmulatorState> {
    let routes = Router::new()
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/google/models/{model_and_method}",
            post(gemini::serve),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/endpoints/openapi/chat/completions",
            post(chat::serve),
        );
    recorder::recorded(intercepted(routes, Target::Vertex, state), state)
}

/// The Vertex AI method a request calls, as Google names it in error details.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    GenerateContent,
    StreamGenerateContent,
    CountTokens,
    ChatCompletions,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::GenerateContent => "google.cloud.aiplatform.v1.PredictionService.GenerateContent",
            Rpc::StreamGenerateContent => {
                "google.cloud.aiplatform.v1.PredictionService.StreamGenerateContent"
            }
            Rpc::CountTokens => "google.cloud.aiplatform.v1.PredictionService.CountTokens",
            Rpc::ChatCompletions => "google.cloud.aiplatform.v1.PredictionService.ChatCompletions",
        }
    }
}

/// Why a Vertex AI call is refused; the text becomes the status message, so it never quotes a
/// token.
#[derive(Debug, thiserror::Error)]
enum VertexError {
    #[error("Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")]
    MissingCredentials,
    #[error("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")]
    InvalidCredentials,
    #[error("Request had invalid authentication credentials: the access token has expired.")]
    ExpiredCredentials,
    #[error("Request had insufficient authentication scopes.")]
    InsufficientScope,
    #[error("Permission '{PREDICT_PERMISSION}' denied on resource '//aiplatform.googleapis.com/{resource}' (or it may not exist).")]
    PermissionDenied { resource: String },
    #[error("Publisher Model `{name}` was not found or your project does not have access to it.")]
    UnknownModel { name: String },
    #[error("The emulator implements only generateContent, streamGenerateContent and countTokens on publisher models.")]
    UnknownMethod,
    #[error("{description}")]
    InvalidArgument { field: String, description: String },
}

impl VertexError {
    fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        VertexError::InvalidArgument {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The refusal of a body that could not be read whole.
    fn unreadable_body() -> Self {
        VertexError::invalid(
            "body",
            format!(
                "The request body could not be read whole; it may exceed the limit of \
                 {MAX_BODY_BYTES} bytes."
            ),
        )
    }

    /// The refusal of a body that is not the JSON a method expects.
    fn malformed_body(error: &serde_json::Error, expected: &str) -> Self {
        VertexError::invalid(
            "body",
            format!(
                "Invalid JSON payload received: expected {expected} (line {}, column {}).",
                error.line(),
                error.column()
            ),
        )
    }

    fn status(&self) -> StatusCode {
        match self {
            VertexError::MissingCredentials
            | VertexError::InvalidCredentials
            | VertexError::ExpiredCredentials => StatusCode::UNAUTHORIZED,
            VertexError::InsufficientScope | VertexError::PermissionDenied { .. } => {
                StatusCode::FORBIDDEN
            }
            VertexError::UnknownModel { .. } | VertexError::UnknownMethod => StatusCode::NOT_FOUND,
            VertexError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn details(&self, rpc: Option<Rpc>) -> Option<Value> {
        let error_info = |reason: &str| {
            let mut metadata = json!({"service": "aiplatform.googleapis.com"});
            if let Some(rpc) = rpc {
                metadata["method"] = rpc.name().into();
            }
            json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": metadata,
            }])
        };
        match self {
            VertexError::MissingCredentials => Some(error_info("CREDENTIALS_MISSING")),
            VertexError::InvalidCredentials => Some(error_info("ACCESS_TOKEN_TYPE_UNSUPPORTED")),
            VertexError::ExpiredCredentials => Some(error_info("ACCESS_TOKEN_EXPIRED")),
            VertexError::InsufficientScope => Some(error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT")),
            VertexError::PermissionDenied { resource } => Some(json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "aiplatform.googleapis.com",
                "metadata": {
                    "permission": PREDICT_PERMISSION,
                    "resource": resource,
                },
            }])),
            VertexError::InvalidArgument { field, description } => Some(json!([{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": description}],
            }])),
            VertexError::UnknownModel { .. } | VertexError::UnknownMethod => None,
        }
    }

    /// The `google.rpc.Status` answer, logged as one refusal.
    fn refuse(self, rpc: Option<Rpc>) -> Response {
        let status = self.status();
        info!(
            method = rpc.map(Rpc::name),
            status = rpc_status::code_name(status),
            reason = %self,
            "vertex request refused"
        );
        rpc_status::response(status, self.to_string(), self.details(rpc))
    }
}

/// Checks what every call checks before its model and body: an unexpired bearer this emulator
/// issued (service account or federated, as Vertex accepts both), with the `cloud-platform`
/// scope, for a project Vertex serves. `resource` names what the call acts on,
/// `projects/P/locations/L/...`.
fn admit(
    state: &EmulatorState,
    headers: &HeaderMap,
    project: &str,
    resource: &str,
) -> Result<(), VertexError> {
    let token = bearer_token(headers).ok_or(VertexError::MissingCredentials)?;
    let info = state
        .issued_token(token)
        .ok_or(VertexError::InvalidCredentials)?;
    if info.expires_at <= state.now() {
        return Err(VertexError::ExpiredCredentials);
    }
    if !info.scopes.iter().any(|scope| scope == CLOUD_PLATFORM) {
        return Err(VertexError::InsufficientScope);
    }

    if !accepts(&state.config().vertex_projects, project) {
        return Err(VertexError::PermissionDenied {
            resource: resource.to_string(),
        });
    }
    Ok(())
}

/// Whether `config` serves publisher model `model` (an id such as `gemini-2.5-flash`).
fn serves_model(config: &EmulatorConfig, model: &str) -> bool {
    accepts(&config.vertex_models, model)
}

/// Whether a configured list accepts `name`: an empty list accepts any.
fn accepts(allowed: &[String], name: &str) -> bool {
    allowed.is_empty() || allowed.iter().any(|allowed| allowed == name)
}

#[cfg(test)]
mod tests;
