//! Start-up: from the process environment to a ready broker.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::aws_credentials::AwsCredentialSource;
use crate::broker::{Broker, BrokerParts, BuildError};
use crate::clock::SharedClock;
use crate::config_source::{self, ConfigLoadError};
use crate::endpoint::EndpointPolicy;
use crate::forward::Forwarder;
use crate::routes::App;
use crate::settings::{Settings, SettingsError};
use crate::vertex::{VertexSettings, VertexSettingsError};

/// Why the function cannot start; the message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A broker setting is missing or wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The credential configuration could not be loaded or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigLoadError),
    /// No AWS region anywhere.
    #[error("no AWS region: set AWS_REGION (Lambda sets it for you)")]
    Region,
    /// No AWS credential provider anywhere.
    #[error("no AWS credential provider could be configured")]
    Credentials,
    /// A Gemini forwarding setting is wrong.
    #[error(transparent)]
    Vertex(#[from] VertexSettingsError),
    /// The broker could not be assembled.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Builds the broker and, when `GOOGLE_CLOUD_PROJECT` is set, Gemini forwarding, from `env` and aws-config's default chain (credentials, region, and the
/// Secrets Manager endpoint, which `AWS_ENDPOINT_URL_SECRETS_MANAGER` can override).
pub async fn from_environment(
    env: &HashMap<String, String>,
    clock: SharedClock,
) -> Result<App, InitError> {
    let settings = Settings::from_env(env)?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await;
    let config = config_source::load(&settings.source, settings.allow_loopback, &sdk).await?;
    let region = settings
        .region
        .clone()
        .or_else(|| sdk.region().map(|r| r.to_string()))
        .ok_or(InitError::Region)?;
    let provider: SharedCredentialsProvider =
        sdk.credentials_provider().ok_or(InitError::Credentials)?;
    let credentials = AwsCredentialSource::new(provider, clock.clone());

    let policy = EndpointPolicy::new(&config.universe_domain, settings.allow_loopback);
    let forwarder = VertexSettings::from_env(env, &policy)?
        .map(|vertex| Forwarder::new(vertex, config.quota_project_id.clone()))
        .transpose()
        .map_err(|e| BuildError::Client(e.without_url().to_string()))?;
    let broker = Broker::new(BrokerParts {
        config,
        settings,
        region,
        credentials,
        clock,
    })?;
    Ok(App { broker, forwarder })
}
