//! The token path: AWS credentials, subject token, STS, impersonation, cache.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use url::Url;

use crate::aws_credentials::AwsCredentialSource;
use crate::clock::SharedClock;
use crate::credential_config::CredentialConfig;
use crate::error::{UpstreamError, UpstreamFailure};
use crate::impersonation::{self, AccessToken};
use crate::settings::Settings;
use crate::sts::{self, FederatedToken};
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
            .get_or_fetch(&key, || self.exchange(request, self.attempts(deadline)))
            .await
    }

    /// The retry budget for a call that must be done by `deadline`.
    fn attempts(&self, deadline: Option<SystemTime>) -> Attempts {
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

    async fn exchange(
        &self,
        request: &TokenRequest,
        attempts: Attempts,
    ) -> Result<AccessToken, UpstreamError> {
        let credentials = self.credentials.credentials().await?;
        let now = self.clock.now();
        let subject_token = SubjectToken::sign(
            &self.verification_url,
            &self.region,
            &self.config.audience,
            &credentials,
            now,
        )?;

        let Some(impersonation) = &self.config.impersonation else {
            let federated = sts::exchange(
                &self.client,
                &attempts,
                &self.config,
                &subject_token,
                &request.scopes,
                now,
            )
            .await?;
            return Ok(into_access_token(federated));
        };
        let federation_scope = [FEDERATION_SCOPE.to_owned()];
        let federated = sts::exchange(
            &self.client,
            &attempts,
            &self.config,
            &subject_token,
            &federation_scope,
            now,
        )
        .await?;
        impersonation::generate_access_token(
            &self.client,
            &attempts,
            impersonation,
            &federated,
            &request.scopes,
            request.lifetime_seconds,
        )
        .await
    }
}

/// The outcome of one stage of [`Broker::diagnose`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageReport {
    /// The stage's name, as in logs.
    pub stage: &'static str,
    /// `ok`, `failed` or `skipped`.
    pub outcome: &'static str,
    /// How long the stage took.
    pub ms: f64,
    /// What the stage found; never a credential.
    pub detail: String,
    /// The setup step to check, for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<&'static str>,
}

impl StageReport {
    fn ok(stage: &'static str, started: Instant, detail: String) -> Self {
        Self {
            stage,
            outcome: "ok",
            ms: started.elapsed().as_secs_f64() * 1000.0,
            detail,
            hint: None,
        }
    }

    fn failed(started: Instant, error: &UpstreamError) -> Self {
        let hint = match &error.failure {
            UpstreamFailure::Refused { hint, .. } => Some(*hint),
            _ => None,
        };
        Self {
            stage: error.stage.as_str(),
            outcome: "failed",
            ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: error.to_string(),
            hint,
        }
    }

    /// A stage not run because an earlier one failed or it was not asked for.
    pub fn skipped(stage: &'static str, detail: &str) -> Self {
        Self {
            stage,
            outcome: "skipped",
            ms: 0.0,
            detail: detail.to_owned(),
            hint: None,
        }
    }
}

impl Broker {
    /// Runs every stage of the token path afresh, bypassing the cache, and reports each one's
    /// outcome and timing; stages after a failure are skipped.
    pub async fn diagnose(&self, deadline: Option<SystemTime>) -> Vec<StageReport> {
        let attempts = self.attempts(deadline);
        let mut reports = vec![StageReport::ok(
            "configuration",
            Instant::now(),
            format!(
                "audience {}; STS {}; service account {}; region {}",
                self.config.audience,
                self.config.token_url.host_str().unwrap_or("-"),
                self.service_account()
                    .unwrap_or("none (federated token only)"),
                self.region
            ),
        )];
        let skip_rest = |reports: &mut Vec<StageReport>, after: &str| {
            for stage in ["aws_credentials", "subject_token", "sts", "impersonation"]
                .into_iter()
                .skip_while(|s| *s != after)
                .skip(1)
            {
                reports.push(StageReport::skipped(stage, "an earlier stage failed"));
            }
        };

        let started = Instant::now();
        let credentials = match self.credentials.credentials().await {
            Ok(credentials) => credentials,
            Err(error) => {
                reports.push(StageReport::failed(started, &error));
                skip_rest(&mut reports, "aws_credentials");
                return reports;
            }
        };
        let expiry = credentials
            .expiry()
            .and_then(|e| e.duration_since(self.clock.now()).ok())
            .map_or("no expiry".to_owned(), |left| {
                format!("expire in {} s", left.as_secs())
            });
        reports.push(StageReport::ok(
            "aws_credentials",
            started,
            format!("loaded; {expiry}"),
        ));

        let started = Instant::now();
        let now = self.clock.now();
        let subject_token = match SubjectToken::sign(
            &self.verification_url,
            &self.region,
            &self.config.audience,
            &credentials,
            now,
        ) {
            Ok(token) => token,
            Err(error) => {
                reports.push(StageReport::failed(started, &error));
                skip_rest(&mut reports, "subject_token");
                return reports;
            }
        };
        reports.push(StageReport::ok(
            "subject_token",
            started,
            format!(
                "signed GetCallerIdentity for {}",
                self.verification_url.host_str().unwrap_or("-")
            ),
        ));

        let started = Instant::now();
        let scope = match &self.config.impersonation {
            Some(_) => vec![FEDERATION_SCOPE.to_owned()],
            None => self.settings.scopes.clone(),
        };
        let federated = match sts::exchange(
            &self.client,
            &attempts,
            &self.config,
            &subject_token,
            &scope,
            now,
        )
        .await
        {
            Ok(federated) => federated,
            Err(error) => {
                reports.push(StageReport::failed(started, &error));
                skip_rest(&mut reports, "sts");
                return reports;
            }
        };
        reports.push(StageReport::ok(
            "sts",
            started,
            "federated token issued".to_owned(),
        ));

        let Some(impersonation) = &self.config.impersonation else {
            reports.push(StageReport::skipped(
                "impersonation",
                "the configuration names no service account",
            ));
            return reports;
        };
        let started = Instant::now();
        let request = self.default_request();
        match impersonation::generate_access_token(
            &self.client,
            &attempts,
            impersonation,
            &federated,
            &request.scopes,
            request.lifetime_seconds,
        )
        .await
        {
            Ok(_) => reports.push(StageReport::ok(
                "impersonation",
                started,
                format!(
                    "access token issued for {} ({} s)",
                    impersonation.service_account, request.lifetime_seconds
                ),
            )),
            Err(error) => reports.push(StageReport::failed(started, &error)),
        }
        reports
    }
}

fn into_access_token(federated: FederatedToken) -> AccessToken {
    AccessToken {
        token: federated.token,
        expires_at: federated.expires_at,
    }
}
