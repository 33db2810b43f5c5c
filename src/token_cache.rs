//! Access tokens kept across invocations, refreshed before they expire.
//!
//! One exchange costs two Google calls against per-project quotas (STS 6,000 per minute, IAM
//! Credentials 60,000), so each token is fetched once per lifetime per environment, and
//! callers that arrive while it is being fetched wait for that one fetch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::error::UpstreamError;
use crate::impersonation::AccessToken;

/// Above this many keys, entries whose token is stale are dropped when a new key arrives, so
/// that callers asking for many scope and lifetime combinations cannot grow memory unbounded.
const MAX_IDLE_KEYS: usize = 256;

/// What a token is for; tokens are shared only between requests with equal keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The impersonated service account, or `None` for the federated token itself (in the
    /// metadata proxy: the broker's own account, when not configured).
    pub service_account: Option<String>,
    /// Sorted, without duplicates.
    pub scopes: Vec<String>,
    /// The lifetime asked of IAM Credentials.
    pub lifetime_seconds: u32,
}

/// Whether a token came from the cache or from Google.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from the cache (including waiting for another request's fetch).
    Hit,
    /// Fetched from Google for this request.
    Miss,
}

impl CacheOutcome {
    /// `"hit"` or `"miss"`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

/// The cache, shared by every invocation in the process.
///
/// `E` is the failure of a fetch: the broker's [`UpstreamError`]; the metadata proxy's own
/// error for the tokens it gets from the broker.
#[derive(Debug)]
pub struct TokenCache<E = UpstreamError> {
    clock: SharedClock,
    refresh_margin: Duration,
    slots: Mutex<HashMap<TokenKey, Arc<Slot<E>>>>,
}

#[derive(Debug)]
struct Slot<E> {
    /// Fetches finished so far; a waiter that sees it move knows a fetch ended while it waited.
    completed: AtomicU64,
    state: tokio::sync::Mutex<SlotState<E>>,
}

impl<E> Default for Slot<E> {
    fn default() -> Self {
        Self {
            completed: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(SlotState {
                token: None,
                last_failure: None,
            }),
        }
    }
}

#[derive(Debug)]
struct SlotState<E> {
    token: Option<AccessToken>,
    last_failure: Option<E>,
}

impl<E: Clone> TokenCache<E> {
    /// A cache that treats a token as stale `refresh_margin` before it expires (at most half
    /// its lifetime, so short-lived tokens are still reused).
    pub fn new(clock: SharedClock, refresh_margin: Duration) -> Self {
        Self {
            clock,
            refresh_margin,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The cached token for `key` if it is fresh; otherwise the result of `fetch`, which runs
    /// once for all requests waiting on the same key. Requests that waited for a fetch that
    /// failed share its error rather than each trying again.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: &TokenKey,
        fetch: F,
    ) -> Result<(AccessToken, CacheOutcome), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken, E>>,
    {
        let slot = self.slot(key);
        let completed_before = slot.completed.load(Ordering::SeqCst);
        let mut state = slot.state.lock().await;

        let margin = self
            .refresh_margin
            .min(Duration::from_secs(u64::from(key.lifetime_seconds) / 2));
        if let Some(token) = &state.token {
            if token.expires_at > self.clock.now() + margin {
                return Ok((token.clone(), CacheOutcome::Hit));
            }
        }
        if slot.completed.load(Ordering::SeqCst) != completed_before {
            if let Some(failure) = &state.last_failure {
                return Err(failure.clone());
            }
        }

        let result = fetch().await;
        slot.completed.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(token) => {
                state.token = Some(token.clone());
                state.last_failure = None;
                Ok((token, CacheOutcome::Miss))
            }
            Err(failure) => {
                state.token = None;
                state.last_failure = Some(failure.clone());
                Err(failure)
            }
        }
    }

    fn slot(&self, key: &TokenKey) -> Arc<Slot<E>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= MAX_IDLE_KEYS {
            let now = self.clock.now();
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot
                        .state
                        .try_lock()
                        .map(|s| s.token.as_ref().is_some_and(|t| t.expires_at > now))
                        .unwrap_or(true)
            });
        }
        slots.entry(key.clone()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::error::{Stage, UpstreamFailure};
    use crate::secret::SecretString;
    use std::sync::atomic::AtomicUsize;
    use std::time::SystemTime;

    fn key(lifetime_seconds: u32) -> TokenKey {
        TokenKey {
            service_account: Some("sa@p.iam.gserviceaccount.com".into()),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            lifetime_seconds,
        }
    }

    fn setup() -> (Arc<TokenCache>, ManualClock) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let cache = TokenCache::new(Arc::new(clock.clone()), Duration::from_secs(300));
        (Arc::new(cache), clock)
    }

    fn token(clock: &ManualClock, n: usize, lifetime: u64) -> AccessToken {
        AccessToken {
            token: SecretString::new(format!("token-{n}")),
            expires_at: clock.now() + Duration::from_secs(lifetime),
        }
    }

    #[tokio::test]
    async fn token_is_reused_until_the_refresh_margin() {
        let (cache, clock) = setup();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            Ok(token(&clock, n, 3600))
        };

        let (first, outcome) = cache.get_or_fetch(&key(3600), fetch).await.unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        clock.advance(Duration::from_secs(3600 - 301));
        let (second, outcome) = cache.get_or_fetch(&key(3600), fetch).await.unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
        assert_eq!(first.token, second.token);

        clock.advance(Duration::from_secs(2));
        let (third, outcome) = cache.get_or_fetch(&key(3600), fetch).await.unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(third.token.expose(), "token-1");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_lifetimes_use_half_their_lifetime_as_margin() {
        let (cache, clock) = setup();
        let fetch = || async { Ok(token(&clock, 0, 300)) };
        cache.get_or_fetch(&key(300), fetch).await.unwrap();
        clock.advance(Duration::from_secs(149));
        let (_, outcome) = cache.get_or_fetch(&key(300), fetch).await.unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }

    #[tokio::test]
    async fn different_keys_do_not_share_tokens() {
        let (cache, clock) = setup();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            Ok(token(&clock, n, 3600))
        };
        cache.get_or_fetch(&key(3600), fetch).await.unwrap();
        let (other, outcome) = cache.get_or_fetch(&key(1800), fetch).await.unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(other.token.expose(), "token-1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_fetch() {
        let (cache, clock) = setup();
        let fetches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let cache = cache.clone();
                let clock = clock.clone();
                let fetches = fetches.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(&key(3600), || async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let n = fetches.fetch_add(1, Ordering::SeqCst);
                            Ok(token(&clock, n, 3600))
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            let (token, _) = task.await.unwrap().unwrap();
            assert_eq!(token.token.expose(), "token-0");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_share_a_failure_and_the_next_request_tries_again() {
        let (cache, clock) = setup();
        let fetches = Arc::new(AtomicUsize::new(0));
        let failing = |fetches: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            fetches.fetch_add(1, Ordering::SeqCst);
            Err(UpstreamError {
                stage: Stage::Sts,
                failure: UpstreamFailure::Timeout,
            })
        };
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let cache = cache.clone();
                let fetches = fetches.clone();
                tokio::spawn(
                    async move { cache.get_or_fetch(&key(3600), || failing(fetches)).await },
                )
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_err());
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "waiters should share the failure"
        );

        let (token, outcome) = cache
            .get_or_fetch(&key(3600), || async { Ok(token(&clock, 9, 3600)) })
            .await
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(token.token.expose(), "token-9");
    }
}
