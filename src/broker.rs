//! The token path: AWS credentials, subject token, STS, impersonation, cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use url::Url;

use crate::aws_credentials::AwsCredentialSource;
use crate::clock::SharedClock;
use crate::credential_config::CredentialConfig;
use crate::diagnosis::Trace;
use crate::error::{Stage, UpstreamError};
use crate::impersonation::{self, AccessToken};
use crate::settings::Settings;
use crate::sts;
use crate::subject_token::SubjectToken;
use crate::token_cache::{CacheOutcome, TokenCache, TokenKey};
use crate::upstream::Attempts;

/// The time a token exchange may take when the caller gives no deadline (prefetch at init):
/// within Lambda's 30 s template timeout with room to answer.
const DEFAULT_BUDGET: Duration = Duration::from_secs(25);

/// Kept back from an invocation's deadline to send the answer before Lambda stops the function.
const DEADLINE_RESERVE: Duration = Duration::from_millis(750);

/// Scope asked of STS when impersonating: the federated token only needs to call IAM
/// Credentials; the service account token carries the caller's scopes.
const FEDERATION_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A validated request for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Within the broker's scope ceiling, sorted, no duplicates.
    pub scopes: Vec<String>,
    /// Within the broker's maximum lifetime.
    pub lifetime_seconds: u32,
}

/// Holds everything the token path needs; one per process, shared by every invocation.
#[derive(Debug)]
pub struct Broker {
    config: CredentialConfig,
    settings: Settings,
    region: String,
    verification_url: Url,
    credentials: AwsCredentialSource,
    client: reqwest::Client,
    cache: TokenCache,
    clock: SharedClock,
}

/// The parts a broker is built from; `main` makes the real ones, tests their own.
pub struct BrokerParts {
    /// The validated credential configuration.
    pub config: CredentialConfig,
    /// The broker's settings.
    pub settings: Settings,
    /// The AWS region whose STS endpoint the subject token names.
    pub region: String,
    /// The broker's AWS credentials.
    pub credentials: AwsCredentialSource,
    /// The time source.
    pub clock: SharedClock,
}

/// Building the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration cannot produce a valid verification URL for the region.
    #[error(transparent)]
    Config(#[from] crate::credential_config::CredentialConfigError),
    /// The HTTP client could not be built (TLS roots unavailable).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Broker {
    /// Builds a broker; fails if the region does not give a valid AWS STS URL.
    pub fn new(parts: BrokerParts) -> Result<Arc<Self>, BuildError> {
        let verification_url = parts.config.verification_url(&parts.region)?;
        let client = reqwest::Client::builder()
            .timeout(parts.settings.upstream_timeout)
            .connect_timeout(
                parts
                    .settings
                    .upstream_timeout
                    .min(std::time::Duration::from_secs(5)),
            )
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gcp-wif-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::Client(e.without_url().to_string()))?;
        let cache = TokenCache::new(parts.clock.clone(), parts.settings.refresh_margin);
        Ok(Arc::new(Self {
            config: parts.config,
            settings: parts.settings,
            region: parts.region,
            verification_url,
            credentials: parts.credentials,
            client,
            cache,
            clock: parts.clock,
        }))
    }

    /// The broker's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The service account tokens are issued for, if the configuration impersonates one.
    pub fn service_account(&self) -> Option<&str> {
        self.config
            .impersonation
            .as_ref()
            .map(|i| i.service_account.as_str())
    }

    /// The longest lifetime a caller may ask for.
    pub fn max_lifetime(&self) -> u32 {
        self.settings.max_lifetime(&self.config)
    }

    /// The time source, for callers that compute `expires_in`.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The request a caller makes without a body: every allowed scope, the longest lifetime.
    /// Gemini forwarding uses it too, so both share one cached token.
    pub fn default_request(&self) -> TokenRequest {
        TokenRequest {
            scopes: self.settings.scopes.clone(),
            lifetime_seconds: self.max_lifetime(),
        }
    }

    /// A token for `request`, from the cache or freshly exchanged, trying no longer than
    /// `deadline` (the invocation's; `None` allows 25 s).
    pub async fn token(
        &self,
        request: &TokenRequest,
        deadline: Option<SystemTime>,
    ) -> Result<(AccessToken, CacheOutcome), UpstreamError> {
        let key = TokenKey {
            service_account: self.service_account().map(str::to_owned),
            scopes: request.scopes.clone(),
            lifetime_seconds: request.lifetime_seconds,
        };
        self.cache
            .get_or_fetch(&key, || async move {
                self.exchange(request, self.attempts(deadline), &mut Trace::off())
                    .await
            })
            .await
    }

    /// The retry budget for a call that must be done by `deadline`.
    pub(crate) fn attempts(&self, deadline: Option<SystemTime>) -> Attempts {
        let now = tokio::time::Instant::now();
        let left = deadline
            .map(|d| {
                d.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .saturating_sub(DEADLINE_RESERVE)
            })
            .unwrap_or(DEFAULT_BUDGET);
        Attempts {
            deadline: now + left,
            per_attempt: self.settings.upstream_timeout,
        }
    }

    /// The token path without the cache; `trace` records each stage when diagnosing.
    pub(crate) async fn exchange(
        &self,
        request: &TokenRequest,
        attempts: Attempts,
        trace: &mut Trace,
    ) -> Result<AccessToken, UpstreamError> {
        let credentials = trace
            .run(Stage::AwsCredentials, self.credentials.credentials())
            .await?;
        let now = self.clock.now();
        let subject_token = trace
            .run(Stage::SubjectToken, async {
                SubjectToken::sign(
                    &self.verification_url,
                    &self.region,
                    &self.config.audience,
                    &credentials,
                    now,
                )
            })
            .await?;

        let federation_scope = [FEDERATION_SCOPE.to_owned()];
        let sts_scopes: &[String] = match self.config.impersonation {
            Some(_) => &federation_scope,
            None => &request.scopes,
        };
        let federated = trace
            .run(
                Stage::Sts,
                sts::exchange(
                    &self.client,
                    &attempts,
                    &self.config,
                    &subject_token,
                    sts_scopes,
                    now,
                ),
            )
            .await?;
        let Some(impersonation) = &self.config.impersonation else {
            return Ok(AccessToken {
                token: federated.token,
                expires_at: federated.expires_at,
            });
        };
        trace
            .run(
                Stage::Impersonation,
                impersonation::generate_access_token(
                    &self.client,
                    &attempts,
                    impersonation,
                    &federated,
                    &request.scopes,
                    request.lifetime_seconds,
                ),
            )
            .await
    }

    /// The credential configuration.
    pub(crate) fn config(&self) -> &CredentialConfig {
        &self.config
    }

    /// The AWS region the subject token names.
    pub(crate) fn region(&self) -> &str {
        &self.region
    }
}
