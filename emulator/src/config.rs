//! What the emulator accepts: AWS keys, audiences, service accounts, token lifetimes, and the
//! Vertex AI projects and models it serves.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::Clock;

/// Access key id of the built-in AWS test key pair.
///
/// The pair only opens this emulator; it is published so that scripts and tests can sign
/// subject tokens without real AWS credentials.
pub const DEFAULT_ACCESS_KEY_ID: &str = "AKIDEMULATOR0000TEST";

/// Secret access key of the built-in AWS test key pair (see [`DEFAULT_ACCESS_KEY_ID`]).
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "emulatorTestSecretKey/DoNotUseInAws+0000";

/// The workload identity provider the emulator accepts as `audience` unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/local-pool/providers/local-aws";

/// The service account the emulator lets callers impersonate unless configured otherwise.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "broker@local-project.iam.gserviceaccount.com";

/// How far a subject token's `x-amz-date` may be from the emulator's clock: AWS refuses SigV4
/// signatures more than 15 minutes away from its own time, and Google STS relays that refusal.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The longest access token `generateAccessToken` grants: 3600 s is Google's limit unless the
/// organisation policy `constraints/iam.allowServiceAccountCredentialLifetimeExtension` applies.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The lifetime of federated tokens: Google STS issues them for one hour.
pub const DEFAULT_FEDERATED_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The most [`EmulatorConfig::max_token_lifetime`] may be: Google's ceiling of 12 hours with the
/// lifetime-extension organisation policy.
pub const MAX_TOKEN_LIFETIME_CEILING: Duration = Duration::from_secs(12 * 3600);

/// The project Vertex AI serves unless configured otherwise, the one of
/// [`DEFAULT_SERVICE_ACCOUNT`].
pub const DEFAULT_VERTEX_PROJECT: &str = "local-project";

/// The publisher models Vertex AI serves unless configured otherwise.
pub const DEFAULT_VERTEX_MODELS: [&str; 3] =
    ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash-001"];

/// How many events a streamed Vertex AI answer has unless configured otherwise: enough for a
/// client to see a first event before the last, few enough to keep tests quick.
pub const DEFAULT_STREAM_EVENTS: usize = 3;

/// The pause between two events of a streamed answer unless configured otherwise: long enough
/// that a test can tell events apart in time, short enough not to slow a suite.
pub const DEFAULT_STREAM_EVENT_DELAY: Duration = Duration::from_millis(100);

/// Everything the emulator accepts; [`Default`] gives the documented built-in values.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// AWS key pairs whose signatures the emulator accepts; any other access key id is refused
    /// as AWS refuses an unknown key (`InvalidClientTokenId`).
    pub aws_keys: Vec<AwsKey>,
    /// Workload identity provider names accepted as the STS `audience`; any other is refused with
    /// `invalid_target`, as Google refuses a missing or disabled pool or provider.
    pub audiences: Vec<String>,
    /// Service account emails that may be impersonated; an empty list allows any email.
    pub service_accounts: Vec<String>,
    /// The longest lifetime `generateAccessToken` grants, at most [`MAX_TOKEN_LIFETIME_CEILING`].
    pub max_token_lifetime: Duration,
    /// The lifetime of the federated tokens STS issues.
    pub federated_token_lifetime: Duration,
    /// How far a subject token's `x-amz-date` may be from [`clock`](Self::clock).
    pub max_clock_skew: Duration,
    /// Where the emulator reads the time: the system clock, or a test's manual clock.
    pub clock: Clock,
    /// Google Cloud projects in whose name Vertex AI answers; any other is refused with
    /// `PERMISSION_DENIED`, as Vertex refuses a project the caller may not use or that does not
    /// exist. An empty list accepts any project.
    pub vertex_projects: Vec<String>,
    /// Publisher model ids (`gemini-2.5-flash`) Vertex AI serves; any other is `NOT_FOUND`
    /// (`INVALID_ARGUMENT` on `chat/completions`, which names models `google/<id>`). An empty
    /// list accepts any model.
    pub vertex_models: Vec<String>,
    /// How many events a streamed answer has, at least 1: content events for Gemini's
    /// `streamGenerateContent?alt=sse`, content chunks for a streamed `chat/completions`.
    pub stream_events: usize,
    /// The pause before each event of a streamed answer but the first.
    pub stream_event_delay: Duration,
}

impl EmulatorConfig {
    /// Why the emulator cannot serve with this configuration, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.max_token_lifetime > MAX_TOKEN_LIFETIME_CEILING {
            return Some(format!(
                "max_token_lifetime may be at most {} s, as at Google",
                MAX_TOKEN_LIFETIME_CEILING.as_secs()
            ));
        }
        if self.stream_events == 0 {
            return Some("stream_events must be at least 1: a stream needs a last event".into());
        }
        None
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            aws_keys: vec![AwsKey::new(
                DEFAULT_ACCESS_KEY_ID,
                DEFAULT_SECRET_ACCESS_KEY,
            )],
            audiences: vec![DEFAULT_AUDIENCE.to_string()],
            service_accounts: vec![DEFAULT_SERVICE_ACCOUNT.to_string()],
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            federated_token_lifetime: DEFAULT_FEDERATED_TOKEN_LIFETIME,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            clock: Clock::System,
            vertex_projects: vec![DEFAULT_VERTEX_PROJECT.to_string()],
            vertex_models: DEFAULT_VERTEX_MODELS.map(String::from).to_vec(),
            stream_events: DEFAULT_STREAM_EVENTS,
            stream_event_delay: DEFAULT_STREAM_EVENT_DELAY,
        }
    }
}

/// An AWS access key id and its secret; `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKey {
    access_key_id: String,
    secret_access_key: String,
}

impl AwsKey {
    /// A key pair from its two halves.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        AwsKey {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }

    /// The public half, as it appears in a SigV4 `Credential=`.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub(crate) fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }
}

impl fmt::Debug for AwsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Why a `ACCESS_KEY_ID:SECRET_ACCESS_KEY` string is not a key pair; never quotes the input.
#[derive(Debug, thiserror::Error)]
#[error("an AWS key must be written ACCESS_KEY_ID:SECRET_ACCESS_KEY with neither half empty")]
pub struct InvalidAwsKey;

impl FromStr for AwsKey {
    type Err = InvalidAwsKey;

    /// Parses `ACCESS_KEY_ID:SECRET_ACCESS_KEY`, splitting at the first colon.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(AwsKey::new(id, secret))
            }
            _ => Err(InvalidAwsKey),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_key_debug_redacts_the_secret() {
        let shown = format!("{:?}", AwsKey::new("AKIDEXAMPLE", "very-secret"));

        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(
            !shown.contains("very-secret"),
            "secret leaked into Debug: {shown}"
        );
    }

    #[test]
    fn aws_key_parses_at_the_first_colon_and_refuses_empty_halves() {
        let key: AwsKey = "AKID:se:cret".parse().expect("a well-formed key");
        assert_eq!(key.access_key_id(), "AKID");
        assert_eq!(key.secret_access_key(), "se:cret");

        for text in ["AKID", "AKID:", ":secret", ""] {
            assert!(
                text.parse::<AwsKey>().is_err(),
                "{text:?} should be refused"
            );
        }
    }
}
