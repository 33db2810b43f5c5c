//! Failures of the token path, and the one place they become HTTP answers.

use std::fmt;

/// The step of the token path where something failed; operators read it in logs and hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Obtaining the broker's own AWS credentials (env, container endpoint, IMDS).
    AwsCredentials,
    /// Signing the `GetCallerIdentity` subject token.
    SubjectToken,
    /// Google STS token exchange.
    Sts,
    /// IAM Credentials `generateAccessToken`.
    Impersonation,
}

impl Stage {
    /// The stage's name in logs, metrics and diagnoses.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::AwsCredentials => "aws_credentials",
            Stage::SubjectToken => "subject_token",
            Stage::Sts => "sts",
            Stage::Impersonation => "impersonation",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong upstream; the variant says whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Transient: the service could not be reached, was overloaded (429) or failed (5xx).
    Unavailable {
        /// The status, when the service answered.
        status: Option<u16>,
        /// Seconds the service asked us to wait, from `Retry-After`.
        retry_after: Option<u64>,
    },
    /// Transient: no answer within the broker's upstream timeout.
    Timeout,
    /// Permanent: the service refused (4xx) or our own setup is wrong; retrying cannot help.
    Refused {
        /// The status, when the service answered.
        status: Option<u16>,
        /// The service's own explanation, without credentials.
        message: String,
        /// The setup step to check.
        hint: &'static str,
    },
}

/// A failure of one stage of the token path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage}: {failure}")]
pub struct UpstreamError {
    /// Where it failed.
    pub stage: Stage,
    /// How it failed.
    pub failure: UpstreamFailure,
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamFailure::Unavailable {
                status: Some(status),
                ..
            } => write!(f, "upstream unavailable (HTTP {status})"),
            UpstreamFailure::Unavailable { status: None, .. } => {
                f.write_str("upstream unreachable")
            }
            UpstreamFailure::Timeout => f.write_str("upstream timed out"),
            UpstreamFailure::Refused {
                status, message, ..
            } => match status {
                Some(status) => write!(f, "refused (HTTP {status}): {message}"),
                None => write!(f, "refused: {message}"),
            },
        }
    }
}

impl UpstreamError {
    /// A permanent failure with the service's message and a hint.
    pub fn refused(
        stage: Stage,
        status: Option<u16>,
        message: impl Into<String>,
        hint: &'static str,
    ) -> Self {
        Self {
            stage,
            failure: UpstreamFailure::Refused {
                status,
                message: message.into(),
                hint,
            },
        }
    }

    /// Whether the same request may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        !matches!(self.failure, UpstreamFailure::Refused { .. })
    }

    /// `transient` or `permanent`, for logs and metrics.
    pub fn class(&self) -> &'static str {
        if self.is_transient() {
            "transient"
        } else {
            "permanent"
        }
    }
}

/// An error answer in Google's envelope:
/// `{"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, repeated as `code` in the body.
    pub status: u16,
    /// What a caller should know; never a credential.
    pub message: String,
    /// Seconds after which a retry may succeed, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `client` (4xx), `transient` (503, 504) or `permanent` (other 5xx), for metrics: the
    /// same classes an [`UpstreamError`] reports.
    pub fn class(&self) -> &'static str {
        match self.status {
            503 | 504 => "transient",
            500..=599 => "permanent",
            _ => "client",
        }
    }

    /// The canonical Google status name for the HTTP status.
    pub fn canonical_status(&self) -> &'static str {
        match self.status {
            400 | 413 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            405 | 501 => "UNIMPLEMENTED",
            429 => "RESOURCE_EXHAUSTED",
            502 => "FAILED_PRECONDITION",
            503 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            _ => "INTERNAL",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.status,
                "status": self.canonical_status(),
                "message": self.message,
            }
        })
    }
}

impl From<&UpstreamError> for ApiError {
    fn from(error: &UpstreamError) -> Self {
        let stage = error.stage;
        match &error.failure {
            UpstreamFailure::Unavailable { retry_after, .. } => Self {
                status: 503,
                message: format!("{error}; try again shortly"),
                retry_after: retry_after.or(Some(1)),
            },
            UpstreamFailure::Timeout => Self::new(504, format!("{stage}: upstream timed out")),
            UpstreamFailure::Refused { hint, .. } => {
                Self::new(502, format!("{error}. Hint: {hint}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_classes_map_to_gateway_statuses() {
        let cases = [
            (
                UpstreamFailure::Unavailable {
                    status: Some(503),
                    retry_after: None,
                },
                503,
                "UNAVAILABLE",
                true,
            ),
            (UpstreamFailure::Timeout, 504, "DEADLINE_EXCEEDED", true),
            (
                UpstreamFailure::Refused {
                    status: Some(403),
                    message: "denied".into(),
                    hint: "grant the role",
                },
                502,
                "FAILED_PRECONDITION",
                false,
            ),
        ];
        for (failure, status, canonical, transient) in cases {
            let error = UpstreamError {
                stage: Stage::Sts,
                failure,
            };
            let api = ApiError::from(&error);
            assert_eq!(api.status, status, "{error}");
            assert_eq!(api.canonical_status(), canonical, "{error}");
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }

    #[test]
    fn answers_are_classed_like_upstream_errors() {
        for (status, class) in [
            (400, "client"),
            (413, "client"),
            (502, "permanent"),
            (503, "transient"),
            (504, "transient"),
        ] {
            assert_eq!(ApiError::new(status, "x").class(), class, "{status}");
        }
    }

    #[test]
    fn refusal_carries_google_message_and_hint() {
        let error = UpstreamError::refused(
            Stage::Impersonation,
            Some(403),
            "Permission 'iam.serviceAccounts.getAccessToken' denied",
            "grant roles/iam.workloadIdentityUser",
        );
        let body = ApiError::from(&error).body();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("impersonation: refused (HTTP 403): Permission"));
        assert!(message.ends_with("Hint: grant roles/iam.workloadIdentityUser"));
        assert_eq!(body["error"]["code"], 502);
    }
}
