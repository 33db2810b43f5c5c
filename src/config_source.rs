//! Loading the credential configuration from wherever the operator put it.

use aws_config::SdkConfig;

use crate::credential_config::{CredentialConfig, CredentialConfigError};
use crate::settings::ConfigSource;

/// Loading the credential configuration failed; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// `GOOGLE_APPLICATION_CREDENTIALS` could not be read.
    #[error("GOOGLE_APPLICATION_CREDENTIALS: {0}")]
    File(String),
    /// The secret could not be fetched or holds no string.
    #[error("BROKER_CREDENTIAL_SECRET: {0}")]
    Secret(String),
    /// The JSON is not a valid configuration.
    #[error(transparent)]
    Invalid(#[from] CredentialConfigError),
}

/// Reads and validates the configuration from `source`; a secret is fetched through
/// Secrets Manager with `sdk` (whose endpoint honours `AWS_ENDPOINT_URL_SECRETS_MANAGER`).
pub async fn load(
    source: &ConfigSource,
    allow_loopback: bool,
    sdk: &SdkConfig,
) -> Result<CredentialConfig, ConfigLoadError> {
    let json = match source {
        ConfigSource::Inline(json) => json.clone(),
        ConfigSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigLoadError::File(format!("cannot read {path}: {}", e.kind())))?,
        ConfigSource::Secret(id) => read_secret(id, sdk).await?,
    };
    Ok(CredentialConfig::parse(&json, allow_loopback)?)
}

async fn read_secret(id: &str, sdk: &SdkConfig) -> Result<String, ConfigLoadError> {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let output = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|error| {
            let service = error.into_service_error();
            let code = aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&service)
                .unwrap_or("the request failed before Secrets Manager answered");
            ConfigLoadError::Secret(format!(
                "cannot read secret {id}: {code}; check that it exists in this region and that \
                 the execution role may call secretsmanager:GetSecretValue on it"
            ))
        })?;
    output.secret_string().map(str::to_owned).ok_or_else(|| {
        ConfigLoadError::Secret(format!(
            "secret {id} holds no SecretString; store the JSON as a string"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreadable_file_is_reported_without_content() {
        let sdk = SdkConfig::builder().build();
        let source = ConfigSource::File("/nonexistent/cred.json".into());
        let error = load(&source, false, &sdk).await.unwrap_err().to_string();
        assert_eq!(
            error,
            "GOOGLE_APPLICATION_CREDENTIALS: cannot read /nonexistent/cred.json: entity not found"
        );
    }

    #[tokio::test]
    async fn inline_json_is_validated() {
        let sdk = SdkConfig::builder().build();
        let source = ConfigSource::Inline("{\"type\": \"service_account\"}".into());
        let error = load(&source, false, &sdk).await.unwrap_err();
        assert!(matches!(
            error,
            ConfigLoadError::Invalid(CredentialConfigError { field: "type", .. })
        ));
    }
}
