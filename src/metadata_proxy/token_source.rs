//! Tokens from the broker, kept until shortly before they expire, and what the broker's
//! answers say about the service account.
//!
//! Each set of scopes is a separate token; requests that arrive while one is being fetched
//! wait for that one broker call (the broker's own [`TokenCache`] does the waiting).

use std::sync::{Mutex, PoisonError};

use super::broker_client::{BrokerClient, BrokerRequest};
use super::error::ProxyError;
use super::settings::ProxySettings;
use crate::clock::SharedClock;
use crate::impersonation::AccessToken;
use crate::token_cache::{CacheOutcome, TokenCache, TokenKey};

/// The lifetime assumed for a token whose lifetime is the broker's choice: the broker's own
/// default maximum. It only bounds the refresh margin (at most half a lifetime).
const ASSUMED_LIFETIME_SECONDS: u32 = 3600;

/// What the broker's answers taught the proxy.
#[derive(Debug, Default)]
struct Learned {
    service_account: Option<String>,
    default_scopes: Option<Vec<String>>,
}

/// Hands out access tokens, asking the broker only when the cached one nears expiry.
#[derive(Debug)]
pub struct TokenSource {
    broker: BrokerClient,
    cache: TokenCache<ProxyError>,
    clock: SharedClock,
    configured_account: Option<String>,
    configured_scopes: Option<Vec<String>>,
    lifetime_seconds: Option<u32>,
    learned: Mutex<Learned>,
}

impl TokenSource {
    /// A source that asks `broker` as `settings` say.
    pub fn new(broker: BrokerClient, settings: &ProxySettings, clock: SharedClock) -> Self {
        Self {
            broker,
            cache: TokenCache::new(clock.clone(), settings.refresh_margin),
            clock,
            configured_account: settings.service_account.clone(),
            configured_scopes: settings.scopes.clone(),
            lifetime_seconds: settings.lifetime_seconds,
            learned: Mutex::new(Learned::default()),
        }
    }

    /// The clock tokens expire by.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// A token for `scopes` (sorted, without duplicates), or for the default scopes when
    /// `scopes` is empty.
    pub async fn token(
        &self,
        scopes: &[String],
    ) -> Result<(AccessToken, CacheOutcome), ProxyError> {
        let asked = if scopes.is_empty() {
            self.configured_scopes.clone()
        } else {
            Some(scopes.to_vec())
        };
        let key = TokenKey {
            service_account: self.configured_account.clone(),
            scopes: asked.clone().unwrap_or_default(),
            lifetime_seconds: self.lifetime_seconds.unwrap_or(ASSUMED_LIFETIME_SECONDS),
        };
        let request = BrokerRequest {
            scopes: asked,
            lifetime_seconds: self.lifetime_seconds,
        };
        self.cache
            .get_or_fetch(&key, || async {
                let answer = self.broker.token(&request).await?;
                let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
                if answer.service_account.is_some() {
                    learned.service_account = answer.service_account;
                }
                if request.scopes.is_none() && answer.scopes.is_some() {
                    learned.default_scopes = answer.scopes;
                }
                Ok(answer.token)
            })
            .await
    }

    /// The service account's email: configured, or named by the broker's answers (asking for
    /// the default token first if no answer has named it yet).
    pub async fn service_account(&self) -> Result<String, ProxyError> {
        if let Some(account) = &self.configured_account {
            return Ok(account.clone());
        }
        if let Some(account) = self.learned().service_account {
            return Ok(account);
        }
        self.token(&[]).await?;
        self.learned().service_account.ok_or_else(|| {
            ProxyError::Malformed(
                "it names no service_account; set METADATA_PROXY_SERVICE_ACCOUNT".to_owned(),
            )
        })
    }

    /// The scopes a token has when a client names none: configured, or as the broker's
    /// default answer named them (asking for it first if needed).
    pub async fn default_scopes(&self) -> Result<Vec<String>, ProxyError> {
        if let Some(scopes) = &self.configured_scopes {
            return Ok(scopes.clone());
        }
        if let Some(scopes) = self.learned().default_scopes {
            return Ok(scopes);
        }
        self.token(&[]).await?;
        self.learned().default_scopes.ok_or_else(|| {
            ProxyError::Malformed("it names no scopes; set METADATA_PROXY_SCOPES".to_owned())
        })
    }

    fn learned(&self) -> Learned {
        let learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        Learned {
            service_account: learned.service_account.clone(),
            default_scopes: learned.default_scopes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws_credentials::AwsCredentialSource;
    use crate::clock::{Clock, ManualClock};
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_credential_types::Credentials;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    const ACCOUNT: &str = "broker@p.iam.gserviceaccount.com";
    const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

    /// A broker on loopback that answers every `/token` with token `t-N`, valid one hour, and
    /// records the bodies it received.
    #[derive(Clone, Default)]
    struct FakeBroker {
        calls: Arc<AtomicUsize>,
        bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    }

    impl FakeBroker {
        async fn serve(&self) -> String {
            let broker = self.clone();
            let app = axum::Router::new().route(
                "/token",
                axum::routing::post(move |body: String| {
                    let broker = broker.clone();
                    async move {
                        let n = broker.calls.fetch_add(1, Ordering::SeqCst);
                        let body: serde_json::Value =
                            serde_json::from_str(&body).unwrap_or_default();
                        let scopes = body
                            .get("scopes")
                            .cloned()
                            .unwrap_or_else(|| serde_json::json!([CLOUD_PLATFORM]));
                        broker.bodies.lock().unwrap().push(body);
                        serde_json::json!({
                            "access_token": format!("t-{n}"),
                            "token_type": "Bearer",
                            "expires_in": 3600,
                            "service_account": ACCOUNT,
                            "scopes": scopes,
                        })
                        .to_string()
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://127.0.0.1:{port}/token")
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn source(url: &str, clock: &ManualClock, extra: &[(&str, &str)]) -> TokenSource {
        let mut env: HashMap<String, String> = [
            ("METADATA_PROXY_TOKEN_URL", url),
            ("METADATA_PROXY_SIGNING_SERVICE", "lambda"),
            ("METADATA_PROXY_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = ProxySettings::from_env(&env).expect("valid settings");
        let clock: SharedClock = Arc::new(clock.clone());
        let provider =
            SharedCredentialsProvider::new(Credentials::new("AKID", "secret", None, None, "test"));
        let credentials = AwsCredentialSource::new(provider, clock.clone());
        let broker = BrokerClient::new(&settings, credentials, clock.clone()).expect("a client");
        TokenSource::new(broker, &settings, clock)
    }

    fn clock() -> ManualClock {
        ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
    }

    #[tokio::test]
    async fn a_token_is_reused_until_the_refresh_margin_then_fetched_again() {
        let broker = FakeBroker::default();
        let clock = clock();
        let tokens = source(&broker.serve().await, &clock, &[]);

        let (first, outcome) = tokens.token(&[]).await.expect("a token");
        assert_eq!((first.token.expose(), outcome), ("t-0", CacheOutcome::Miss));
        clock.advance(Duration::from_secs(3600 - 301));
        let (second, outcome) = tokens.token(&[]).await.expect("a token");
        assert_eq!((second.token.expose(), outcome), ("t-0", CacheOutcome::Hit));
        clock.advance(Duration::from_secs(2));
        let (third, outcome) = tokens.token(&[]).await.expect("a token");
        assert_eq!((third.token.expose(), outcome), ("t-1", CacheOutcome::Miss));
        assert_eq!(third.expires_at, clock.now() + Duration::from_secs(3600));
        assert_eq!(broker.calls(), 2);
    }

    #[tokio::test]
    async fn the_account_and_default_scopes_are_learned_from_one_broker_answer() {
        let broker = FakeBroker::default();
        let tokens = source(&broker.serve().await, &clock(), &[]);

        assert_eq!(tokens.service_account().await.expect("an email"), ACCOUNT);
        assert_eq!(
            tokens.default_scopes().await.expect("scopes"),
            [CLOUD_PLATFORM]
        );
        tokens.token(&[]).await.expect("a token");

        assert_eq!(broker.calls(), 1, "one answer should teach everything");
        assert_eq!(*broker.bodies.lock().unwrap(), [serde_json::json!({})]);
    }

    #[tokio::test]
    async fn each_scope_set_is_its_own_token_and_is_asked_for_by_name() {
        let broker = FakeBroker::default();
        let tokens = source(
            &broker.serve().await,
            &clock(),
            &[("METADATA_PROXY_TOKEN_LIFETIME_SECONDS", "1800")],
        );
        let asked = ["https://www.googleapis.com/auth/devstorage.read_only".to_owned()];

        let (default, _) = tokens.token(&[]).await.expect("a token");
        let (scoped, _) = tokens.token(&asked).await.expect("a token");
        let (again, outcome) = tokens.token(&asked).await.expect("a token");

        assert_ne!(default.token, scoped.token);
        assert_eq!((again.token, outcome), (scoped.token, CacheOutcome::Hit));
        assert_eq!(
            *broker.bodies.lock().unwrap(),
            [
                serde_json::json!({"lifetime_seconds": 1800}),
                serde_json::json!({"lifetime_seconds": 1800, "scopes": asked}),
            ]
        );
    }

    #[tokio::test]
    async fn configured_account_and_scopes_need_no_broker_call() {
        let broker = FakeBroker::default();
        let tokens = source(
            &broker.serve().await,
            &clock(),
            &[
                (
                    "METADATA_PROXY_SERVICE_ACCOUNT",
                    "other@q.iam.gserviceaccount.com",
                ),
                ("METADATA_PROXY_SCOPES", CLOUD_PLATFORM),
            ],
        );

        assert_eq!(
            tokens.service_account().await.expect("an email"),
            "other@q.iam.gserviceaccount.com"
        );
        assert_eq!(
            tokens.default_scopes().await.expect("scopes"),
            [CLOUD_PLATFORM]
        );
        assert_eq!(broker.calls(), 0);
    }
}
