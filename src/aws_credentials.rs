//! The broker's own AWS credentials, the identity Google federates.
//!
//! On Lambda they are the execution role's, in the environment; elsewhere aws-config's default
//! chain finds them (ECS and EKS container credentials, Pod Identity, IRSA, EC2 IMDSv2).
//! The chain does not cache, so this module keeps them until shortly before they expire.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use tokio::sync::Mutex;

use crate::clock::SharedClock;
use crate::error::{Stage, UpstreamError, UpstreamFailure};
use crate::hints;

/// Credentials are replaced this long before they expire, so that a subject token signed with
/// them is still valid when Google asks AWS to verify it a moment later.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Hands out valid AWS credentials, asking the provider only when the cached ones near expiry.
#[derive(Debug)]
pub struct AwsCredentialSource {
    provider: SharedCredentialsProvider,
    clock: SharedClock,
    cached: Mutex<Option<Credentials>>,
}

impl AwsCredentialSource {
    /// A source backed by `provider` (in `main`, aws-config's default chain).
    pub fn new(provider: SharedCredentialsProvider, clock: SharedClock) -> Self {
        Self {
            provider,
            clock,
            cached: Mutex::new(None),
        }
    }

    /// Credentials that will not expire within the next few minutes.
    ///
    /// Fails rather than return credentials that are already past their expiry: a subject
    /// token signed with them would only be refused by Google with a less helpful message.
    pub async fn credentials(&self) -> Result<Credentials, UpstreamError> {
        let mut cached = self.cached.lock().await;
        let now = self.clock.now();
        if let Some(credentials) = cached.as_ref().filter(|c| is_fresh(c, now)) {
            return Ok(credentials.clone());
        }

        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(classify)?;
        let now = self.clock.now();
        if credentials.expiry().is_some_and(|expiry| expiry <= now) {
            return Err(UpstreamError::refused(
                Stage::AwsCredentials,
                None,
                "the credential provider returned credentials that have already expired",
                hints::AWS_CREDENTIALS,
            ));
        }
        *cached = Some(credentials.clone());
        Ok(credentials)
    }
}

fn is_fresh(credentials: &Credentials, now: SystemTime) -> bool {
    credentials
        .expiry()
        .is_none_or(|expiry| expiry > now + EXPIRY_MARGIN)
}

fn classify(error: CredentialsError) -> UpstreamError {
    let failure = match &error {
        CredentialsError::ProviderTimedOut(_) => UpstreamFailure::Timeout,
        CredentialsError::ProviderError(_) | CredentialsError::Unhandled(_) => {
            UpstreamFailure::Unavailable {
                status: None,
                retry_after: None,
            }
        }
        _ => UpstreamFailure::Refused {
            status: None,
            message: "no AWS credentials could be loaded".to_owned(),
            hint: hints::AWS_CREDENTIALS,
        },
    };
    UpstreamError {
        stage: Stage::AwsCredentials,
        failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Debug)]
    struct CountingProvider {
        calls: Arc<AtomicUsize>,
        lifetime: Duration,
        clock: ManualClock,
    }

    impl ProvideCredentials for CountingProvider {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let credentials = Credentials::new(
                format!("AKID{call}"),
                "secret",
                None,
                Some(self.clock.now() + self.lifetime),
                "test",
            );
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(credentials))
        }
    }

    fn source(lifetime: Duration) -> (AwsCredentialSource, ManualClock, Arc<AtomicUsize>) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = CountingProvider {
            calls: calls.clone(),
            lifetime,
            clock: clock.clone(),
        };
        let source = AwsCredentialSource::new(
            SharedCredentialsProvider::new(provider),
            Arc::new(clock.clone()),
        );
        (source, clock, calls)
    }

    #[tokio::test]
    async fn credentials_are_reused_until_near_expiry() {
        let (source, clock, calls) = source(Duration::from_secs(3600));
        assert_eq!(source.credentials().await.unwrap().access_key_id(), "AKID0");
        clock.advance(Duration::from_secs(3000));
        assert_eq!(source.credentials().await.unwrap().access_key_id(), "AKID0");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        clock.advance(Duration::from_secs(400));
        assert_eq!(source.credentials().await.unwrap().access_key_id(), "AKID1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_credentials_are_never_handed_out() {
        let (source, _clock, _calls) = source(Duration::ZERO);
        let error = source.credentials().await.expect_err("already expired");
        assert_eq!(error.stage, Stage::AwsCredentials);
        assert!(!error.is_transient());
    }

    #[tokio::test]
    async fn missing_credentials_are_a_permanent_failure() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let provider = SharedCredentialsProvider::new(NoCredentials);
        let source = AwsCredentialSource::new(provider, Arc::new(clock));
        let error = source.credentials().await.expect_err("nothing loaded");
        assert!(matches!(error.failure, UpstreamFailure::Refused { .. }));
    }

    #[derive(Debug)]
    struct NoCredentials;

    impl ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                CredentialsError::not_loaded_no_source(),
            ))
        }
    }
}
