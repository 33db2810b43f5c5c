//! Google Security Token Service: `POST /v1/token`, exchanging an AWS subject token for a
//! federated access token (RFC 8693 token exchange).
//!
//! Refusals use Google's STS error shape, `{"error", "error_description"}`, with status 400
//! throughout, as RFC 6749 prescribes for token endpoint errors.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tracing::info;

use crate::sigv4::{self, SigV4Error};
use crate::state::EmulatorState;
use crate::subject_token::{SubjectToken, SubjectTokenError};
use crate::tokens::Principal;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const AWS_SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";
const TARGET_HEADER: &str = "x-goog-cloud-target-resource";

/// The STS routes, to be counted and faulted as [`crate::Target::Sts`].
pub(crate) fn routes() -> Router<EmulatorState> {
    Router::new().route("/v1/token", post(exchange_token))
}

/// Why a token exchange is refused; the text becomes `error_description`, so it never quotes
/// the subject token or its signature.
#[derive(Debug, thiserror::Error)]
enum StsError {
    #[error("The request is missing the required parameter \"{0}\".")]
    MissingParameter(&'static str),
    #[error("The grant type is not supported; use \"{GRANT_TYPE}\".")]
    GrantType,
    #[error("Invalid value for \"{name}\"; expected \"{expected}\".")]
    InvalidParameter {
        name: &'static str,
        expected: &'static str,
    },
    #[error("The target service indicated by the \"audience\" parameter is invalid: the workload identity pool or provider does not exist or is disabled.")]
    UnknownAudience,
    #[error("{0}")]
    MalformedSubjectToken(#[from] SubjectTokenError),
    #[error("The subject token has no \"x-goog-cloud-target-resource\" header; it must name the audience.")]
    MissingTargetHeader,
    #[error("The \"x-goog-cloud-target-resource\" header of the subject token does not match the \"audience\" parameter.")]
    TargetMismatch,
    #[error("Received invalid AWS response of type {} with error message: {}", .0.aws_error_type(), .0)]
    AwsRefused(#[from] SigV4Error),
}

impl StsError {
    fn code(&self) -> &'static str {
        match self {
            StsError::MissingParameter(_)
            | StsError::InvalidParameter { .. }
            | StsError::MalformedSubjectToken(_)
            | StsError::MissingTargetHeader => "invalid_request",
            StsError::GrantType => "unsupported_grant_type",
            StsError::UnknownAudience => "invalid_target",
            StsError::TargetMismatch => "unauthorized_client",
            StsError::AwsRefused(_) => "invalid_grant",
        }
    }
}

impl IntoResponse for StsError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code(), "error_description": self.to_string()});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// The default body of an injected STS fault with `status`.
pub(crate) fn fault_body(status: StatusCode) -> String {
    let code = match status.as_u16() {
        401 => "invalid_client",
        403 => "access_denied",
        429 | 503 => "temporarily_unavailable",
        500..=599 => "server_error",
        _ => "invalid_request",
    };
    let description = format!("The emulator answered with an injected fault (HTTP {status}).");
    json!({"error": code, "error_description": description}).to_string()
}

/// The form parameters of a token exchange that the emulator checks.
///
/// Limitation: only form-encoded requests without client authentication are understood, and
/// `options` is ignored, because AWS workload identity federation uses nothing else.
struct ExchangeForm {
    audience: String,
    scopes: Vec<String>,
    subject_token: String,
}

impl ExchangeForm {
    fn parse(body: &[u8]) -> Result<Self, StsError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &'static str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
                .ok_or(StsError::MissingParameter(name))
        };
        let require = |name: &'static str, expected: &'static str| match field(name)? {
            value if value == expected => Ok(()),
            _ => Err(StsError::InvalidParameter { name, expected }),
        };

        if field("grant_type")? != GRANT_TYPE {
            return Err(StsError::GrantType);
        }
        require("requested_token_type", ACCESS_TOKEN_TYPE)?;
        require("subject_token_type", AWS_SUBJECT_TOKEN_TYPE)?;
        Ok(ExchangeForm {
            audience: field("audience")?.to_string(),
            scopes: field("scope")?
                .split_whitespace()
                .map(String::from)
                .collect(),
            subject_token: field("subject_token")?.to_string(),
        })
    }
}

async fn exchange_token(State(state): State<EmulatorState>, body: Bytes) -> Response {
    match exchange(&state, &body) {
        Ok(response) => response,
        Err(error) => {
            info!(error = error.code(), reason = %error, "token exchange refused");
            error.into_response()
        }
    }
}

fn exchange(state: &EmulatorState, body: &[u8]) -> Result<Response, StsError> {
    let form = ExchangeForm::parse(body)?;
    let config = state.config();
    if !config.audiences.contains(&form.audience) {
        return Err(StsError::UnknownAudience);
    }

    let subject_token = SubjectToken::decode(&form.subject_token)?;
    match subject_token.header(TARGET_HEADER) {
        None => return Err(StsError::MissingTargetHeader),
        Some(target) if target != form.audience => return Err(StsError::TargetMismatch),
        Some(_) => {}
    }
    let signer = sigv4::verify(
        &subject_token,
        &config.aws_keys,
        state.now(),
        config.max_clock_skew,
    )?;

    let lifetime = config.federated_token_lifetime;
    let principal = Principal::Federated {
        audience: form.audience.clone(),
        aws_access_key_id: signer.access_key_id.clone(),
    };
    let (token, _) = state.issue_token(principal, form.scopes, lifetime);
    info!(
        audience = %form.audience,
        aws_access_key_id = %signer.access_key_id,
        region = %signer.region,
        "federated token issued"
    );
    Ok(Json(json!({
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{AwsKey, EmulatorConfig};
    use crate::server::tests::{post, send};
    use crate::sigv4::tests::{vectors, Vector};
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
    use serde_json::Value;
    use std::time::Duration;

    const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

    /// What Python's `urllib.parse.quote` leaves alone: unreserved characters and `/`.
    const PYTHON_QUOTE_SAFE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');

    /// The ways Google's client libraries write the same subject token.
    #[derive(Clone, Copy, Debug)]
    enum ClientStyle {
        /// google-auth: `json.dumps` spacing, URL as configured, spaces quoted as `%20`.
        Python,
        /// oauth2/google: capitalised header names, form encoding with `+`.
        Go,
        /// google-cloud-auth: URL normalised to `/?`, lowercase headers, a `body`, `+`.
        Rust,
    }

    impl ClientStyle {
        /// The percent-encoded token JSON for `vector`'s request with `headers`.
        fn encode(self, vector: &Vector, headers: &[(&str, String)]) -> String {
            let mut headers: Vec<(String, &str)> = headers
                .iter()
                .map(|(key, value)| (self.header_name(key), value.as_str()))
                .collect();
            let (url, space, body) = match self {
                ClientStyle::Python => (vector.url.clone(), " ", ""),
                ClientStyle::Go => (vector.url.clone(), "", ""),
                ClientStyle::Rust => {
                    headers.sort();
                    (vector.url.replace(".com?", ".com/?"), "", r#","body":"""#)
                }
            };
            let entries: Vec<String> = headers
                .iter()
                .map(|(key, value)| {
                    let (key, value) = (Value::from(key.as_str()), Value::from(*value));
                    format!(r#"{{"key":{space}{key},{space}"value":{space}{value}}}"#)
                })
                .collect();
            let json = format!(
                r#"{{"url":{space}{},{space}"method":{space}"POST",{space}"headers":{space}[{}]{body}}}"#,
                Value::from(url),
                entries.join(&format!(",{space}"))
            );

            match self {
                ClientStyle::Python => {
                    percent_encoding::utf8_percent_encode(&json, PYTHON_QUOTE_SAFE).to_string()
                }
                ClientStyle::Go | ClientStyle::Rust => {
                    form_urlencoded::byte_serialize(json.as_bytes()).collect()
                }
            }
        }

        fn header_name(self, key: &str) -> String {
            match self {
                ClientStyle::Python => key.to_string(),
                ClientStyle::Go => key
                    .split('-')
                    .map(|word| word[..1].to_ascii_uppercase() + &word[1..])
                    .collect::<Vec<_>>()
                    .join("-"),
                ClientStyle::Rust => key.to_ascii_lowercase(),
            }
        }
    }

    fn form(pairs: &[(&str, &str)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    fn exchange_form(audience: &str, subject_token: &str) -> String {
        form(&[
            ("grant_type", GRANT_TYPE),
            ("audience", audience),
            ("scope", CLOUD_PLATFORM),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token_type", AWS_SUBJECT_TOKEN_TYPE),
            ("subject_token", subject_token),
        ])
    }

    /// An emulator that accepts `vector`'s key and audience, with its clock at the signing time.
    fn config_for(vector: &Vector) -> (EmulatorConfig, ManualClock) {
        let clock = ManualClock::new(vector.signed_at());
        let config = EmulatorConfig {
            aws_keys: vec![vector.key()],
            audiences: vec![vector.audience.clone()],
            clock: clock.clone().into(),
            ..EmulatorConfig::default()
        };
        (config, clock)
    }

    async fn exchange_at(state: &EmulatorState, form: String) -> (StatusCode, Value) {
        send(
            state,
            post("/v1/token", "application/x-www-form-urlencoded", form),
        )
        .await
    }

    #[tokio::test]
    async fn every_conformance_vector_exchanges_in_every_client_style() {
        for vector in vectors() {
            for style in [ClientStyle::Python, ClientStyle::Go, ClientStyle::Rust] {
                let (config, _) = config_for(&vector);
                let state = EmulatorState::new(config);
                let subject_token = style.encode(&vector, &vector.headers(&vector.signature));

                let (status, body) =
                    exchange_at(&state, exchange_form(&vector.audience, &subject_token)).await;

                let case = format!("{} in {style:?} style", vector.name);
                assert_eq!(status, StatusCode::OK, "{case}: {body}");
                assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE, "{case}");
                assert_eq!(body["token_type"], "Bearer", "{case}");
                assert_eq!(body["expires_in"], 3600, "{case}");
                let token = body["access_token"].as_str().unwrap_or_default();
                let info = state.access_token_info(token);
                assert_eq!(
                    info.map(|info| (info.principal, info.scopes)),
                    Some((
                        Principal::Federated {
                            audience: vector.audience.clone(),
                            aws_access_key_id: vector.access_key_id.clone(),
                        },
                        vec![CLOUD_PLATFORM.to_string()]
                    )),
                    "{case}: the issued token is not recognised"
                );
            }
        }
    }

    #[tokio::test]
    async fn refusals_use_google_sts_error_codes_and_never_quote_secrets() {
        let vector = vectors()
            .into_iter()
            .find(|v| v.name.ends_with("/session-token/target-unsigned"))
            .expect("a vector with a session token and an unsigned target header");
        let session_token = vector.session_token.clone().unwrap_or_default();
        let good_token = ClientStyle::Rust.encode(&vector, &vector.headers(&vector.signature));
        let token_with = |headers: Vec<(&str, String)>| ClientStyle::Rust.encode(&vector, &headers);

        let mut flipped = vector.signature.clone();
        flipped.replace_range(..1, if flipped.starts_with('0') { "1" } else { "0" });
        let other_target = vector
            .headers(&vector.signature)
            .into_iter()
            .map(|(key, value)| match key {
                TARGET_HEADER => (key, "//iam.googleapis.com/projects/1/other".to_string()),
                _ => (key, value),
            })
            .collect();
        let no_target = vector
            .headers(&vector.signature)
            .into_iter()
            .filter(|(key, _)| *key != TARGET_HEADER)
            .collect();
        let without = |name: &str| {
            let pairs: Vec<(&str, &str)> = [
                ("grant_type", GRANT_TYPE),
                ("audience", vector.audience.as_str()),
                ("scope", CLOUD_PLATFORM),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
                ("subject_token_type", AWS_SUBJECT_TOKEN_TYPE),
                ("subject_token", good_token.as_str()),
            ]
            .into_iter()
            .filter(|(key, _)| *key != name)
            .collect();
            form(&pairs)
        };
        let replacing = |name: &str, value: &str| {
            let form = without(name);
            format!("{form}&{}", super::tests::form(&[(name, value)]))
        };

        let (config, clock) = config_for(&vector);
        let state = EmulatorState::new(config.clone());
        let other_keys = EmulatorState::new(EmulatorConfig {
            aws_keys: vec![AwsKey::new("AKIDSOMEONEELSE", "secret")],
            ..config.clone()
        });
        let late_clock = ManualClock::new(clock.now());
        late_clock.advance(Duration::from_secs(16 * 60));
        let late = EmulatorState::new(EmulatorConfig {
            clock: late_clock.into(),
            ..config
        });

        let cases = [
            (
                "grant type",
                &state,
                replacing("grant_type", "client_credentials"),
                "unsupported_grant_type",
                "grant type",
            ),
            (
                "requested token type",
                &state,
                replacing(
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
                "invalid_request",
                "requested_token_type",
            ),
            (
                "subject token type",
                &state,
                replacing("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                "invalid_request",
                "subject_token_type",
            ),
            (
                "no scope",
                &state,
                without("scope"),
                "invalid_request",
                "\"scope\"",
            ),
            (
                "no subject token",
                &state,
                without("subject_token"),
                "invalid_request",
                "\"subject_token\"",
            ),
            (
                "no audience",
                &state,
                without("audience"),
                "invalid_request",
                "\"audience\"",
            ),
            (
                "unknown audience",
                &state,
                replacing("audience", "//iam.googleapis.com/projects/1/other"),
                "invalid_target",
                "does not exist or is disabled",
            ),
            (
                "garbage token",
                &state,
                replacing("subject_token", "not-json"),
                "invalid_request",
                "not JSON",
            ),
            (
                "no target header",
                &state,
                exchange_form(&vector.audience, &token_with(no_target)),
                "invalid_request",
                "x-goog-cloud-target-resource",
            ),
            (
                "other target header",
                &state,
                exchange_form(&vector.audience, &token_with(other_target)),
                "unauthorized_client",
                "does not match",
            ),
            (
                "flipped signature",
                &state,
                exchange_form(&vector.audience, &token_with(vector.headers(&flipped))),
                "invalid_grant",
                "of type SignatureDoesNotMatch",
            ),
            (
                "unknown key",
                &other_keys,
                exchange_form(&vector.audience, &good_token),
                "invalid_grant",
                "of type InvalidClientTokenId",
            ),
            (
                "stale date",
                &late,
                exchange_form(&vector.audience, &good_token),
                "invalid_grant",
                "Signature expired",
            ),
        ];

        for (case, state, form, code, fragment) in cases {
            let (status, body) = exchange_at(state, form).await;

            assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
            assert_eq!(body["error"], code, "{case}: {body}");
            let description = body["error_description"].as_str().unwrap_or_default();
            assert!(
                description.contains(fragment),
                "{case}: {description:?} lacks {fragment:?}"
            );
            let text = body.to_string();
            for secret in [&vector.signature, &flipped, &session_token] {
                assert!(
                    !text.contains(secret.as_str()),
                    "{case}: the body quotes a secret: {text}"
                );
            }
        }
    }

    #[tokio::test]
    async fn federated_token_is_recognised_until_its_lifetime_ends() {
        let vector = &vectors()[0];
        let (config, clock) = config_for(vector);
        let state = EmulatorState::new(config);
        let subject_token = ClientStyle::Go.encode(vector, &vector.headers(&vector.signature));

        let (_, body) = exchange_at(&state, exchange_form(&vector.audience, &subject_token)).await;
        let token = body["access_token"].as_str().unwrap_or_default();

        clock.advance(Duration::from_secs(3599));
        assert!(state.access_token_info(token).is_some(), "expired early");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            state.access_token_info(token),
            None,
            "still valid after 3600 s"
        );
    }
}
