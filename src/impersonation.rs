//! IAM Credentials: the federated token is exchanged for a service account's access token.

use std::time::SystemTime;

use serde::Deserialize;

use crate::credential_config::Impersonation;
use crate::error::{Stage, UpstreamError};
use crate::hints;
use crate::secret::SecretString;
use crate::sts::FederatedToken;
use crate::upstream::{clip, Attempts};

/// A Google OAuth 2.0 access token, the broker's product.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When Google stops accepting it.
    pub expires_at: SystemTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateAccessTokenResponse {
    access_token: String,
    expire_time: String,
}

#[derive(Deserialize)]
struct StatusEnvelope {
    error: Option<Status>,
}

#[derive(Deserialize)]
struct Status {
    message: Option<String>,
}

/// Calls `generateAccessToken` as the federated principal for `scopes` and `lifetime_seconds`.
pub(crate) async fn generate_access_token(
    client: &reqwest::Client,
    attempts: &Attempts,
    impersonation: &Impersonation,
    federated: &FederatedToken,
    scopes: &[String],
    lifetime_seconds: u32,
) -> Result<AccessToken, UpstreamError> {
    let body = serde_json::json!({
        "scope": scopes,
        "lifetime": format!("{lifetime_seconds}s"),
    });
    let response: GenerateAccessTokenResponse = attempts
        .call(
            Stage::Impersonation,
            || {
                client
                    .post(impersonation.url.clone())
                    .bearer_auth(federated.token.expose())
                    .json(&body)
            },
            explain,
        )
        .await?;
    let expires_at = time::OffsetDateTime::parse(
        &response.expire_time,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| {
        UpstreamError::refused(
            Stage::Impersonation,
            Some(200),
            "expireTime is not an RFC 3339 time",
            hints::NOT_GOOGLE,
        )
    })?;
    Ok(AccessToken {
        token: SecretString::new(response.access_token),
        expires_at: expires_at.into(),
    })
}

fn explain(status: u16, body: &[u8]) -> (String, &'static str) {
    let message = serde_json::from_slice::<StatusEnvelope>(body)
        .ok()
        .and_then(|e| e.error)
        .and_then(|e| e.message)
        .map(|m| clip(&m))
        .unwrap_or_else(|| "no error message".to_owned());
    let hint = hints::for_impersonation(status, &message);
    (message, hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_print_redacted() {
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let access = AccessToken {
            token: SecretString::new("ya29.secret-access"),
            expires_at,
        };
        let federated = FederatedToken {
            token: SecretString::new("ya29.secret-federated"),
            expires_at,
        };
        for printed in [format!("{access:?}"), format!("{federated:?}")] {
            assert!(!printed.contains("ya29"), "{printed}");
            assert!(printed.contains("<redacted>"), "{printed}");
        }
    }
}
