//! Why the proxy could not hand out a token, and the one place that becomes an HTTP status.

use crate::error::UpstreamError;

/// The hint for a broker that refuses the proxy's own AWS identity.
const IDENTITY_HINT: &str = "the proxy's AWS identity must be allowed by the broker: \
    BROKER_ALLOWED_CALLERS, and for a Function URL lambda:InvokeFunctionUrl plus \
    lambda:InvokeFunction (for an API, execute-api:Invoke)";

/// A failure to get a token from the broker; the variant says whether trying again can help.
///
/// Messages never carry a token, a signature or a secret key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The workload's own AWS credentials could not be loaded (transient or not, as the
    /// credential provider said).
    #[error("{0}")]
    AwsCredentials(UpstreamError),
    /// The request to the broker could not be signed: a permanent setup problem.
    #[error("cannot sign the request to the broker: {0}")]
    Signing(&'static str),
    /// Transient: the broker's endpoint could not be reached.
    #[error("the broker is unreachable: {0}")]
    Unreachable(String),
    /// Transient: the broker did not answer within `METADATA_PROXY_TIMEOUT_SECONDS`.
    #[error("the broker did not answer within {0} s")]
    Timeout(u64),
    /// The broker, or the AWS front end before it, answered with an error status: transient
    /// for 429 and 5xx, permanent otherwise.
    #[error("the broker answered HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The broker's (or AWS's) own explanation.
        message: String,
        /// Seconds to wait before trying again, from `Retry-After`.
        retry_after: Option<u64>,
    },
    /// Permanent: the broker answered 200 with something that is not a token.
    #[error("the broker's answer is not a token answer: {0}")]
    Malformed(String),
}

impl ProxyError {
    /// Whether the same request may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            ProxyError::AwsCredentials(error) => error.is_transient(),
            ProxyError::Unreachable(_) | ProxyError::Timeout(_) => true,
            ProxyError::Refused { status, .. } => *status == 429 || *status >= 500,
            ProxyError::Signing(_) | ProxyError::Malformed(_) => false,
        }
    }

    /// The status a metadata client gets: 503 when trying again can help (Google's clients
    /// retry it), the broker's own 400 or 403, and 502 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            _ if self.is_transient() => 503,
            ProxyError::Refused { status: 400, .. } => 400,
            ProxyError::Refused {
                status: 401 | 403, ..
            } => 403,
            _ => 502,
        }
    }

    /// Seconds a client should wait before trying again, for transient failures.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::Refused { retry_after, .. } if self.is_transient() => {
                retry_after.or(Some(1))
            }
            _ if self.is_transient() => Some(1),
            _ => None,
        }
    }

    /// What to check, for failures that trying again will not fix.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ProxyError::Refused {
                status: 401 | 403, ..
            } => Some(IDENTITY_HINT),
            ProxyError::Refused { status: 400, .. } => Some(
                "the broker refused the scopes or lifetime: ask only for scopes in its \
                 BROKER_SCOPES (METADATA_PROXY_SCOPES, ?scopes=)",
            ),
            ProxyError::Refused { status: 404, .. } => {
                Some("METADATA_PROXY_TOKEN_URL must name the broker's /token route")
            }
            ProxyError::Signing(_) => Some(
                "check METADATA_PROXY_TOKEN_URL, METADATA_PROXY_SIGNING_SERVICE and \
                 METADATA_PROXY_REGION",
            ),
            ProxyError::Malformed(_) => {
                Some("METADATA_PROXY_TOKEN_URL must name the broker's /token route")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Stage, UpstreamFailure};

    fn refused(status: u16) -> ProxyError {
        ProxyError::Refused {
            status,
            message: "no".into(),
            retry_after: None,
        }
    }

    #[test]
    fn each_failure_maps_to_the_status_a_metadata_client_gets() {
        let unavailable = UpstreamError {
            stage: Stage::AwsCredentials,
            failure: UpstreamFailure::Timeout,
        };
        let cases = [
            (refused(400), 400, false, None),
            (refused(403), 403, false, None),
            (refused(401), 403, false, None),
            (refused(404), 502, false, None),
            (refused(429), 503, true, Some(1)),
            (refused(502), 503, true, Some(1)),
            (ProxyError::Timeout(30), 503, true, Some(1)),
            (
                ProxyError::Unreachable("refused".into()),
                503,
                true,
                Some(1),
            ),
            (ProxyError::AwsCredentials(unavailable), 503, true, Some(1)),
            (ProxyError::Malformed("x".into()), 502, false, None),
            (ProxyError::Signing("x"), 502, false, None),
        ];

        for (error, status, transient, retry_after) in cases {
            assert_eq!(error.status(), status, "{error}");
            assert_eq!(error.is_transient(), transient, "{error}");
            assert_eq!(error.retry_after(), retry_after, "{error}");
        }
    }

    #[test]
    fn a_broker_retry_after_is_passed_on() {
        let error = ProxyError::Refused {
            status: 503,
            message: "busy".into(),
            retry_after: Some(7),
        };

        assert_eq!(error.retry_after(), Some(7));
    }
}
