//! The tokens the emulator has issued, so that later calls can check a bearer.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use time::OffsetDateTime;

use crate::clock::later_by;

/// What the emulator knows about a token it issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenInfo {
    /// Who the token stands for.
    pub principal: Principal,
    /// The OAuth scopes it was issued for.
    pub scopes: Vec<String>,
    /// When it stops being accepted.
    pub expires_at: OffsetDateTime,
}

/// Who a token issued by the emulator stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A federated token from STS: the AWS identity, through a workload identity provider.
    Federated {
        /// The workload identity provider the token was exchanged at.
        audience: String,
        /// The AWS access key id that signed the subject token (not a role ARN: the emulator
        /// asks no AWS who the caller is).
        aws_access_key_id: String,
    },
    /// An access token from `generateAccessToken`, acting as a service account.
    ServiceAccount {
        /// The impersonated service account.
        email: String,
    },
}

/// Every unexpired token the emulator issued, keyed by the token itself.
#[derive(Debug, Default)]
pub(crate) struct IssuedTokens(HashMap<String, AccessTokenInfo>);

impl IssuedTokens {
    /// Mints an opaque token for `principal`, valid for `lifetime` from `now`, and records it.
    ///
    /// Expired tokens are forgotten here, so a long-running emulator does not grow without end.
    pub(crate) fn issue(
        &mut self,
        principal: Principal,
        scopes: Vec<String>,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> (String, AccessTokenInfo) {
        self.0.retain(|_, info| info.expires_at > now);

        let prefix = match principal {
            Principal::Federated { .. } => "emulator-federated",
            Principal::ServiceAccount { .. } => "emulator-access",
        };
        let token = format!("{prefix}.{}", hex::encode(rand::random::<[u8; 32]>()));
        let info = AccessTokenInfo {
            principal,
            scopes,
            // Google reports expiry to the second; storing the same instant keeps the reported
            // `expireTime` and the emulator's own check in agreement.
            expires_at: later_by(now, lifetime).replace_nanosecond(0).unwrap_or(now),
        };
        self.0.insert(token.clone(), info.clone());
        (token, info)
    }

    /// The record of `token` if the emulator issued it and it has not expired at `now`.
    pub(crate) fn lookup(&self, token: &str, now: OffsetDateTime) -> Option<&AccessTokenInfo> {
        self.issued(token).filter(|info| info.expires_at > now)
    }

    /// The record of `token` if the emulator issued it, expired or not.
    ///
    /// An expired token is forgotten at the next issue, and from then on reads as never issued.
    pub(crate) fn issued(&self, token: &str) -> Option<&AccessTokenInfo> {
        self.0.get(token)
    }
}

/// The token of an `Authorization: Bearer <token>` header; `None` without one or for another
/// scheme.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn service_account() -> Principal {
        Principal::ServiceAccount {
            email: "sa@example.iam.gserviceaccount.com".to_string(),
        }
    }

    #[test]
    fn issued_token_is_found_until_it_expires() {
        let mut tokens = IssuedTokens::default();
        let now = datetime!(2025-01-01 00:00 UTC);

        let (token, info) = tokens.issue(service_account(), vec![], now, Duration::from_secs(60));

        assert_eq!(info.expires_at, datetime!(2025-01-01 00:01 UTC));
        assert_eq!(tokens.lookup(&token, now), Some(&info));
        assert_eq!(
            tokens.lookup(&token, datetime!(2025-01-01 00:00:59 UTC)),
            Some(&info)
        );
        assert_eq!(tokens.lookup(&token, datetime!(2025-01-01 00:01 UTC)), None);
        assert_eq!(tokens.lookup("not-issued-here", now), None);
    }

    #[test]
    fn tokens_are_distinct_and_named_by_kind() {
        let mut tokens = IssuedTokens::default();
        let now = datetime!(2025-01-01 00:00 UTC);
        let federated = Principal::Federated {
            audience: "aud".to_string(),
            aws_access_key_id: "AKID".to_string(),
        };

        let (first, _) = tokens.issue(federated, vec![], now, Duration::from_secs(60));
        let (second, _) = tokens.issue(service_account(), vec![], now, Duration::from_secs(60));

        assert_ne!(first, second);
        assert!(first.starts_with("emulator-federated."), "{first}");
        assert!(second.starts_with("emulator-access."), "{second}");
    }

    #[test]
    fn an_expired_token_is_still_known_as_issued_until_the_next_issue() {
        let mut tokens = IssuedTokens::default();
        let start = datetime!(2025-01-01 00:00 UTC);
        let (token, info) = tokens.issue(service_account(), vec![], start, Duration::from_secs(60));
        let later = start + Duration::from_secs(120);

        assert_eq!(tokens.lookup(&token, later), None);
        assert_eq!(tokens.issued(&token), Some(&info));

        tokens.issue(service_account(), vec![], later, Duration::from_secs(60));
        assert_eq!(
            tokens.issued(&token),
            None,
            "an expired token outlived an issue"
        );
    }

    #[test]
    fn bearer_token_takes_only_the_bearer_scheme() {
        let cases = [
            (Some("Bearer abc"), Some("abc")),
            (Some("bearer  abc "), Some("abc")),
            (Some("Basic dXNlcjpwYXNz"), None),
            (Some("Bearer"), None),
            (None, None),
        ];

        for (header, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(value) = header {
                headers.insert(AUTHORIZATION, value.parse().expect("a valid header value"));
            }
            assert_eq!(bearer_token(&headers), expected, "{header:?}");
        }
    }

    #[test]
    fn issuing_forgets_expired_tokens() {
        let mut tokens = IssuedTokens::default();
        let start = datetime!(2025-01-01 00:00 UTC);
        tokens.issue(service_account(), vec![], start, Duration::from_secs(60));

        tokens.issue(
            service_account(),
            vec![],
            start + Duration::from_secs(120),
            Duration::ZERO,
        );

        assert_eq!(
            tokens.0.len(),
            1,
            "the expired token should have been dropped"
        );
    }
}
