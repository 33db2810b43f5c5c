//! Google STS: the subject token is exchanged for a federated access token.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::credential_config::{CredentialConfig, AWS_SUBJECT_TOKEN_TYPE};
use crate::error::{Stage, UpstreamError};
use crate::hints;
use crate::secret::SecretString;
use crate::subject_token::SubjectToken;
use crate::upstream::{clip, Attempts};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token for the federated principal, good for impersonation or for Google APIs directly.
#[derive(Debug, Clone)]
pub struct FederatedToken {
    /// The bearer token.
    pub token: SecretString,
    /// When Google stops accepting it.
    pub expires_at: SystemTime,
}

#[derive(Deserialize)]
struct ExchangeResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ExchangeError {
    error: Option<String>,
    error_description: Option<String>,
}

/// Exchanges `subject_token` at the configured STS endpoint for `scopes`.
///
/// No `Authorization` header is sent: Google authenticates the AWS signature inside the token.
pub(crate) async fn exchange(
    client: &reqwest::Client,
    attempts: &Attempts,
    config: &CredentialConfig,
    subject_token: &SubjectToken,
    scopes: &[String],
    now: SystemTime,
) -> Result<FederatedToken, UpstreamError> {
    let scope = scopes.join(" ");
    let form = [
        ("grant_type", GRANT_TYPE),
        ("audience", config.audience.as_str()),
        ("scope", scope.as_str()),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
        ("subject_token_type", AWS_SUBJECT_TOKEN_TYPE),
        ("subject_token", subject_token.expose()),
    ];
    let response: ExchangeResponse = attempts
        .call(
            Stage::Sts,
            || client.post(config.token_url.clone()).form(&form),
            explain,
        )
        .await?;
    // STS tokens last an hour; the field is optional in RFC 8693, so assume the usual.
    let lifetime = Duration::from_secs(response.expires_in.unwrap_or(3600));
    Ok(FederatedToken {
        token: SecretString::new(response.access_token),
        expires_at: now + lifetime,
    })
}

fn explain(_status: u16, body: &[u8]) -> (String, &'static str) {
    let parsed: Option<ExchangeError> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|e| e.error.clone())
        .unwrap_or_default();
    let description = parsed
        .and_then(|e| e.error_description)
        .unwrap_or_else(|| "no error description".to_owned());
    let hint = hints::for_sts(&code, &description);
    let message = if code.is_empty() {
        clip(&description)
    } else {
        format!("{code}: {}", clip(&description))
    };
    (message, hint)
}
