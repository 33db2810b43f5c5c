//! IAM Credentials: `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken`,
//! impersonating a service account with a federated token.
//!
//! Refusals use Google's `google.rpc.Status` JSON, `{"error": {"code", "message", "status",
//! "details"}}`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use tracing::info;

use crate::rpc_status;
use crate::state::EmulatorState;
use crate::tokens::{bearer_token, Principal};

/// What Google grants when a request names no lifetime.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

const METHOD: &str = "generateAccessToken";
const PERMISSION: &str = "iam.serviceAccounts.getAccessToken";

/// The IAM Credentials routes, to be counted and faulted as [`crate::Target::Iam`].
pub(crate) fn routes() -> Router<EmulatorState> {
    Router::new().route(
        "/v1/projects/{project}/serviceAccounts/{account_and_method}",
        post(generate_access_token),
    )
}

/// Why `generateAccessToken` is refused; the text becomes the status message, so it never
/// quotes a token.
#[derive(Debug, thiserror::Error)]
enum IamError {
    #[error("Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")]
    MissingCredentials,
    #[error("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")]
    InvalidCredentials,
    #[error("{description}")]
    InvalidArgument {
        field: &'static str,
        description: String,
    },
    #[error("Permission '{PERMISSION}' denied on resource (or it may not exist).")]
    PermissionDenied,
    #[error("The emulator implements only {METHOD} on service accounts.")]
    UnknownMethod,
    #[error("The expiry time cannot be written as RFC 3339.")]
    ExpiryOutOfRange,
}

impl IamError {
    fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        IamError::InvalidArgument {
            field,
            description: description.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            IamError::MissingCredentials | IamError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            IamError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            IamError::PermissionDenied => StatusCode::FORBIDDEN,
            IamError::UnknownMethod => StatusCode::NOT_FOUND,
            IamError::ExpiryOutOfRange => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn details(&self) -> Option<Value> {
        let unauthenticated = |reason: &str| {
            json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {
                    "service": "iamcredentials.googleapis.com",
                    "method": "google.iam.credentials.v1.IAMCredentials.GenerateAccessToken",
                },
            }])
        };
        match self {
            IamError::MissingCredentials => Some(unauthenticated("CREDENTIALS_MISSING")),
            IamError::InvalidCredentials => Some(unauthenticated("ACCESS_TOKEN_TYPE_UNSUPPORTED")),
            IamError::InvalidArgument { field, description } => Some(json!([{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": description}],
            }])),
            IamError::PermissionDenied => Some(json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": PERMISSION},
            }])),
            IamError::UnknownMethod | IamError::ExpiryOutOfRange => None,
        }
    }
}

impl IntoResponse for IamError {
    fn into_response(self) -> Response {
        rpc_status::response(self.status(), self.to_string(), self.details())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateAccessTokenRequest {
    #[serde(default)]
    scope: Vec<String>,
    lifetime: Option<String>,
    // Limitation: delegates are accepted but not checked, because the emulator has no model of
    // the IAM policies that would let one service account act for another.
    #[serde(rename = "delegates")]
    _delegates: Option<Vec<String>>,
}

async fn generate_access_token(
    State(state): State<EmulatorState>,
    Path((project, account_and_method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match generate(&state, &project, &account_and_method, &headers, &body) {
        Ok(response) => response,
        Err(error) => {
            info!(
                status = rpc_status::code_name(error.status()),
                reason = %error,
                "access token refused"
            );
            error.into_response()
        }
    }
}

fn generate(
    state: &EmulatorState,
    project: &str,
    account_and_method: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, IamError> {
    let email = match account_and_method.rsplit_once(':') {
        Some((email, METHOD)) => email,
        _ => return Err(IamError::UnknownMethod),
    };
    check_federated_bearer(state, headers)?;
    if project != "-" {
        return Err(IamError::invalid(
            "name",
            "The project must be the wildcard '-': projects/-/serviceAccounts/EMAIL.",
        ));
    }

    let request: GenerateAccessTokenRequest = serde_json::from_slice(body).map_err(|e| {
        IamError::invalid(
            "body",
            format!(
                "Invalid JSON payload received: expected {{\"scope\": [...], \"lifetime\": \"Ns\", \
                 \"delegates\": [...]}} (line {}, column {}).",
                e.line(),
                e.column()
            ),
        )
    })?;
    if request.scope.is_empty() {
        return Err(IamError::invalid(
            "scope",
            "At least one scope is required.",
        ));
    }
    let max = state.config().max_token_lifetime;
    let lifetime = match request.lifetime {
        None => DEFAULT_LIFETIME.min(max),
        Some(text) => parse_lifetime(&text).ok_or_else(|| {
            IamError::invalid(
                "lifetime",
                "The lifetime must be a duration such as \"3600s\".",
            )
        })?,
    };
    if lifetime.is_zero() || lifetime > max {
        return Err(IamError::invalid(
            "lifetime",
            format!(
                "The lifetime must be more than 0s and at most {}s (above 3600s Google needs the \
                 organisation policy constraints/iam.allowServiceAccountCredentialLifetimeExtension).",
                max.as_secs()
            ),
        ));
    }

    let allowed = &state.config().service_accounts;
    if !allowed.is_empty() && !allowed.iter().any(|allowed| allowed == email) {
        return Err(IamError::PermissionDenied);
    }

    let principal = Principal::ServiceAccount {
        email: email.to_string(),
    };
    let (token, info) = state.issue_token(principal, request.scope, lifetime);
    let expire_time = info
        .expires_at
        .format(&Rfc3339)
        .map_err(|_| IamError::ExpiryOutOfRange)?;
    info!(service_account = %email, lifetime_s = lifetime.as_secs(), "access token issued");
    Ok(Json(json!({"accessToken": token, "expireTime": expire_time})).into_response())
}

/// Accepts only an unexpired federated token that this emulator's STS issued.
///
/// Limitation: a service account's own access token is refused as the caller, because the
/// broker never chains impersonations and the emulator has no IAM policies to allow it.
fn check_federated_bearer(state: &EmulatorState, headers: &HeaderMap) -> Result<(), IamError> {
    let token = bearer_token(headers).ok_or(IamError::MissingCredentials)?;
    match state.access_token_info(token) {
        Some(info) if matches!(info.principal, Principal::Federated { .. }) => Ok(()),
        _ => Err(IamError::InvalidCredentials),
    }
}

/// Parses a protobuf JSON duration in seconds, `"3600s"` or `"1.5s"`.
fn parse_lifetime(text: &str) -> Option<Duration> {
    let number = text.strip_suffix('s')?;
    let (seconds, fraction) = match number.split_once('.') {
        Some((seconds, fraction)) if !fraction.is_empty() => (seconds, fraction),
        Some(_) => return None,
        None => (number, ""),
    };
    let all_digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if seconds.is_empty() || !all_digits(seconds) || fraction.len() > 9 || !all_digits(fraction) {
        return None;
    }
    let nanos = format!("{fraction:0<9}").parse().ok()?;
    Some(Duration::new(seconds.parse().ok()?, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{EmulatorConfig, DEFAULT_SERVICE_ACCOUNT};
    use crate::server::tests::send;
    use axum::body::Body;
    use axum::http::Request;
    use time::macros::datetime;

    const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

    fn url(email: &str) -> String {
        format!("/v1/projects/-/serviceAccounts/{email}:generateAccessToken")
    }

    fn emulator(config: EmulatorConfig) -> (EmulatorState, ManualClock) {
        let clock = ManualClock::new(datetime!(2025-01-01 00:00 UTC));
        let state = EmulatorState::new(EmulatorConfig {
            clock: clock.clone().into(),
            ..config
        });
        (state, clock)
    }

    fn federated_token(state: &EmulatorState) -> String {
        let principal = Principal::Federated {
            audience: "//iam.googleapis.com/aud".to_string(),
            aws_access_key_id: "AKID".to_string(),
        };
        state
            .issue_token(principal, vec![SCOPE.to_string()], DEFAULT_LIFETIME)
            .0
    }

    fn request(uri: &str, authorization: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::post(uri).header("content-type", "application/json");
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        builder
            .body(Body::from(body.to_string()))
            .expect("a valid test request")
    }

    #[tokio::test]
    async fn generate_access_token_issues_a_recorded_token_with_rfc3339_expiry() {
        let (state, _) = emulator(EmulatorConfig::default());
        let bearer = format!("Bearer {}", federated_token(&state));
        let cases = [
            (
                r#"{"scope": ["https://www.googleapis.com/auth/cloud-platform"]}"#,
                "2025-01-01T01:00:00Z",
            ),
            (
                r#"{"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "1800s"}"#,
                "2025-01-01T00:30:00Z",
            ),
            (
                r#"{"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "3600s", "delegates": []}"#,
                "2025-01-01T01:00:00Z",
            ),
        ];

        for (body, expire_time) in cases {
            let (status, answer) = send(
                &state,
                request(&url(DEFAULT_SERVICE_ACCOUNT), Some(&bearer), body),
            )
            .await;

            assert_eq!(status, StatusCode::OK, "{body}: {answer}");
            assert_eq!(answer["expireTime"], expire_time, "{body}");
            let token = answer["accessToken"].as_str().unwrap_or_default();
            let info = state
                .access_token_info(token)
                .map(|info| (info.principal, info.scopes));
            let expected = Principal::ServiceAccount {
                email: DEFAULT_SERVICE_ACCOUNT.to_string(),
            };
            assert_eq!(info, Some((expected, vec![SCOPE.to_string()])), "{body}");
        }
    }

    #[tokio::test]
    async fn refusals_use_google_rpc_status() {
        let (state, _) = emulator(EmulatorConfig::default());
        let federated = federated_token(&state);
        let bearer = format!("Bearer {federated}");
        let service_account_token = state
            .issue_token(
                Principal::ServiceAccount {
                    email: DEFAULT_SERVICE_ACCOUNT.to_string(),
                },
                vec![SCOPE.to_string()],
                DEFAULT_LIFETIME,
            )
            .0;
        let service_account_bearer = format!("Bearer {service_account_token}");
        let good = format!(r#"{{"scope": ["{SCOPE}"]}}"#);
        let lifetime = |value: &str| format!(r#"{{"scope": ["{SCOPE}"], "lifetime": "{value}"}}"#);
        let to_default = |authorization: Option<&str>, body: &str| {
            request(&url(DEFAULT_SERVICE_ACCOUNT), authorization, body)
        };
        let with_bearer = |uri: &str| request(uri, Some(&bearer), &good);
        let other_project = url(DEFAULT_SERVICE_ACCOUNT).replace("/-/", "/my-project/");
        let other_method = url(DEFAULT_SERVICE_ACCOUNT).replace(":generate", ":sign");
        let unauthenticated = (401, "UNAUTHENTICATED");
        let invalid = (400, "INVALID_ARGUMENT");

        let cases = [
            (
                "no credentials",
                to_default(None, &good),
                unauthenticated,
                "CREDENTIALS_MISSING",
            ),
            (
                "basic credentials",
                to_default(Some("Basic dXNlcjpwYXNz"), &good),
                unauthenticated,
                "CREDENTIALS_MISSING",
            ),
            (
                "unknown bearer",
                to_default(Some("Bearer ya29.elsewhere"), &good),
                unauthenticated,
                "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            ),
            (
                "service account bearer",
                to_default(Some(&service_account_bearer), &good),
                unauthenticated,
                "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            ),
            (
                "empty scope",
                to_default(Some(&bearer), r#"{"scope": []}"#),
                invalid,
                "\"scope\"",
            ),
            (
                "no scope",
                to_default(Some(&bearer), r#"{"lifetime": "60s"}"#),
                invalid,
                "\"scope\"",
            ),
            (
                "malformed lifetime",
                to_default(Some(&bearer), &lifetime("an hour")),
                invalid,
                "\"lifetime\"",
            ),
            (
                "zero lifetime",
                to_default(Some(&bearer), &lifetime("0s")),
                invalid,
                "\"lifetime\"",
            ),
            (
                "negative lifetime",
                to_default(Some(&bearer), &lifetime("-60s")),
                invalid,
                "\"lifetime\"",
            ),
            (
                "lifetime over the maximum",
                to_default(Some(&bearer), &lifetime("3601s")),
                invalid,
                "at most 3600s",
            ),
            (
                "unknown field",
                to_default(Some(&bearer), r#"{"scope": ["x"], "colour": "red"}"#),
                invalid,
                "\"body\"",
            ),
            (
                "not JSON",
                to_default(Some(&bearer), "scope=x"),
                invalid,
                "\"body\"",
            ),
            (
                "project instead of wildcard",
                with_bearer(&other_project),
                invalid,
                "\"name\"",
            ),
            (
                "unknown service account",
                with_bearer(&url("x@p.iam.gserviceaccount.com")),
                (403, "PERMISSION_DENIED"),
                "IAM_PERMISSION_DENIED",
            ),
            (
                "other method",
                with_bearer(&other_method),
                (404, "NOT_FOUND"),
                "generateAccessToken",
            ),
        ];

        for (case, request, (code, status_name), detail) in cases {
            let (status, answer) = send(&state, request).await;

            assert_eq!(status.as_u16(), code, "{case}: {answer}");
            assert_eq!(answer["error"]["code"], code, "{case}: {answer}");
            assert_eq!(answer["error"]["status"], status_name, "{case}: {answer}");
            assert!(
                answer.to_string().contains(detail),
                "{case}: {answer} lacks {detail:?}"
            );
            for secret in [&federated, &service_account_token] {
                assert!(
                    !answer.to_string().contains(secret.as_str()),
                    "{case}: quotes a token"
                );
            }
        }
    }

    #[tokio::test]
    async fn permission_denied_reads_as_google_writes_it() {
        let (state, _) = emulator(EmulatorConfig::default());
        let bearer = format!("Bearer {}", federated_token(&state));
        let body = format!(r#"{{"scope": ["{SCOPE}"]}}"#);

        let (_, answer) = send(
            &state,
            request(&url("x@p.iam.gserviceaccount.com"), Some(&bearer), &body),
        )
        .await;

        assert_eq!(
            answer["error"]["message"],
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
        );
        let details = &answer["error"]["details"][0];
        assert_eq!(details["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
        assert_eq!(details["reason"], "IAM_PERMISSION_DENIED");
        assert_eq!(details["domain"], "iam.googleapis.com");
    }

    #[tokio::test]
    async fn an_expired_federated_token_is_refused() {
        let (state, clock) = emulator(EmulatorConfig::default());
        let bearer = format!("Bearer {}", federated_token(&state));
        clock.advance(DEFAULT_LIFETIME);

        let (status, _) = send(
            &state,
            request(
                &url(DEFAULT_SERVICE_ACCOUNT),
                Some(&bearer),
                r#"{"scope": ["x"]}"#,
            ),
        )
        .await;

        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn issued_access_token_expires_on_the_emulator_clock() {
        let (state, clock) = emulator(EmulatorConfig::default());
        let bearer = format!("Bearer {}", federated_token(&state));
        let body = format!(r#"{{"scope": ["{SCOPE}"], "lifetime": "600s"}}"#);

        let (_, answer) = send(
            &state,
            request(&url(DEFAULT_SERVICE_ACCOUNT), Some(&bearer), &body),
        )
        .await;
        let token = answer["accessToken"].as_str().unwrap_or_default();

        clock.advance(Duration::from_secs(599));
        assert!(state.access_token_info(token).is_some(), "expired early");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            state.access_token_info(token),
            None,
            "still valid after its lifetime"
        );
    }

    #[tokio::test]
    async fn configuration_sets_the_maximum_lifetime_and_the_allowed_accounts() {
        let (state, _) = emulator(EmulatorConfig {
            service_accounts: vec![],
            max_token_lifetime: Duration::from_secs(7200),
            ..EmulatorConfig::default()
        });
        let bearer = format!("Bearer {}", federated_token(&state));
        let body = format!(r#"{{"scope": ["{SCOPE}"], "lifetime": "7200s"}}"#);

        let (status, answer) = send(
            &state,
            request(&url("any@p.iam.gserviceaccount.com"), Some(&bearer), &body),
        )
        .await;

        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["expireTime"], "2025-01-01T02:00:00Z");
    }

    #[test]
    fn lifetimes_parse_as_protobuf_durations() {
        let cases = [
            ("3600s", Some(Duration::from_secs(3600))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("0.000000001s", Some(Duration::from_nanos(1))),
            ("0s", Some(Duration::ZERO)),
            ("3600", None),
            ("s", None),
            ("-5s", None),
            ("1.s", None),
            (".5s", None),
            ("1.0000000001s", None),
            ("1e3s", None),
            (" 60s", None),
            ("99999999999999999999999s", None),
        ];

        for (text, expected) in cases {
            assert_eq!(parse_lifetime(text), expected, "{text:?}");
        }
    }
}
