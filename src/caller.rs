//! Who is calling, and whether they may.
//!
//! The caller's identity is what API Gateway or the Function URL proved with SigV4 before the
//! function ran; nothing the caller writes in headers or body is trusted for it.

use lambda_http::request::RequestContext;

use crate::pattern;

/// An AWS principal whose IAM signature the invoking service verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's ARN, e.g. `arn:aws:sts::123456789012:assumed-role/app/session`.
    pub arn: String,
}

impl Caller {
    /// The IAM identity from the request context: `authorizer.iam.userArn` for Function URLs
    /// and HTTP APIs, `identity.userArn` for REST APIs. `None` when there is none, e.g. a
    /// Function URL with `AuthType: NONE` or an API route without IAM auth.
    pub fn from_context(context: &RequestContext) -> Option<Self> {
        let arn = match context {
            RequestContext::ApiGatewayV2(context) => context
                .authorizer
                .as_ref()
                .and_then(|authorizer| authorizer.iam.as_ref())
                .and_then(|iam| iam.user_arn.clone()),
            RequestContext::ApiGatewayV1(context) => context.identity.user_arn.clone(),
            _ => None,
        }?;
        let arn = arn.trim();
        arn.starts_with("arn:").then(|| Self {
            arn: arn.to_owned(),
        })
    }
}

/// `BROKER_ALLOWED_CALLERS`: the ARN patterns whose principals may use the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCallers {
    patterns: Vec<String>,
}

/// A pattern in `BROKER_ALLOWED_CALLERS` that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowedCallersError {
    /// No pattern at all: nobody could ever be served, which is surely a mistake.
    #[error(
        "BROKER_ALLOWED_CALLERS is empty; name the IAM roles or users that may call the broker"
    )]
    Empty,
    /// A pattern that is not an IAM or STS ARN with a literal account id.
    #[error(
        "BROKER_ALLOWED_CALLERS entry `{0}` must be an IAM or STS ARN with a literal 12-digit \
         account id, e.g. arn:aws:iam::123456789012:role/app-*"
    )]
    Pattern(String),
}

impl AllowedCallers {
    /// Parses a comma-separated list of ARN patterns where `*` matches any run of characters.
    ///
    /// Each pattern must name its account literally, so no pattern can admit every AWS
    /// account: authorization cannot be switched off by configuration.
    pub fn parse(text: &str) -> Result<Self, AllowedCallersError> {
        let mut patterns = Vec::new();
        for pattern in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !is_acceptable_pattern(pattern) {
                return Err(AllowedCallersError::Pattern(pattern.to_owned()));
            }
            patterns.push(pattern.to_owned());
            if let Some(sessions) = assumed_role_pattern(pattern) {
                patterns.push(sessions);
            }
        }
        if patterns.is_empty() {
            return Err(AllowedCallersError::Empty);
        }
        Ok(Self { patterns })
    }

    /// Whether `caller` matches a pattern. A role pattern also matches the role's sessions.
    pub fn allows(&self, caller: &Caller) -> bool {
        self.patterns
            .iter()
            .any(|p| pattern::matches(p, &caller.arn))
    }
}

/// `arn:PARTITION:(iam|sts)::ACCOUNT:RESOURCE` with a 12-digit account and no wildcard before
/// the resource.
fn is_acceptable_pattern(pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    *arn == "arn"
        && matches!(*partition, "aws" | "aws-cn" | "aws-us-gov")
        && matches!(*service, "iam" | "sts")
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !resource.is_empty()
        && !resource.starts_with('*')
        && resource.bytes().all(|b| b.is_ascii_graphic())
}

/// For `arn:P:iam::A:role/PATH/NAME`, the pattern of its sessions,
/// `arn:P:sts::A:assumed-role/NAME/*` (STS drops the role's path).
fn assumed_role_pattern(pattern: &str) -> Option<String> {
    let parts: Vec<&str> = pattern.splitn(6, ':').collect();
    let [_, partition, "iam", _, account, resource] = parts.as_slice() else {
        return None;
    };
    let role_path = resource.strip_prefix("role/")?;
    let name = role_path.rsplit('/').next().filter(|n| !n.is_empty())?;
    Some(format!(
        "arn:{partition}:sts::{account}:assumed-role/{name}/*"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(arn: &str) -> Caller {
        Caller {
            arn: arn.to_owned(),
        }
    }

    #[test]
    fn role_pattern_admits_the_role_and_its_sessions() {
        let allowed = AllowedCallers::parse("arn:aws:iam::123456789012:role/app-role").unwrap();
        assert!(allowed.allows(&caller("arn:aws:iam::123456789012:role/app-role")));
        assert!(allowed.allows(&caller(
            "arn:aws:sts::123456789012:assumed-role/app-role/session-1"
        )));
        assert!(!allowed.allows(&caller(
            "arn:aws:sts::123456789012:assumed-role/app-role-2/session-1"
        )));
        assert!(!allowed.allows(&caller(
            "arn:aws:sts::999999999999:assumed-role/app-role/session-1"
        )));
        assert!(!allowed.allows(&caller("arn:aws:iam::123456789012:user/app-role")));
    }

    #[test]
    fn role_with_path_matches_sessions_by_name() {
        let allowed =
            AllowedCallers::parse("arn:aws:iam::123456789012:role/teams/ml/trainer").unwrap();
        assert!(allowed.allows(&caller(
            "arn:aws:sts::123456789012:assumed-role/trainer/i-0abc"
        )));
    }

    #[test]
    fn wildcards_match_runs_of_characters() {
        let allowed = AllowedCallers::parse(
            " arn:aws:iam::123456789012:role/app-* , arn:aws:iam::210987654321:user/ci",
        )
        .unwrap();
        for arn in [
            "arn:aws:iam::123456789012:role/app-web",
            "arn:aws:sts::123456789012:assumed-role/app-web/s",
            "arn:aws:iam::210987654321:user/ci",
        ] {
            assert!(allowed.allows(&caller(arn)), "{arn} should be allowed");
        }
        for arn in [
            "arn:aws:iam::123456789012:role/other",
            "arn:aws:iam::210987654321:user/ci-2",
            "arn:aws:iam::210987654321:user/c",
            "",
        ] {
            assert!(!allowed.allows(&caller(arn)), "{arn} should be refused");
        }
    }

    #[test]
    fn patterns_that_would_open_the_door_are_refused() {
        for text in [
            "",
            " , ",
            "*",
            "arn:*",
            "arn:aws:iam::*:role/app",
            "arn:aws:iam::12345:role/app",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:*",
            "arn:aws:iam:us-east-1:123456789012:role/app",
            "arn:aws:iam::123456789012:role/app,*",
        ] {
            assert!(
                AllowedCallers::parse(text).is_err(),
                "`{text}` should be refused"
            );
        }
    }

    #[test]
    fn identity_comes_from_the_request_context_only() {
        let function_url: lambda_http::request::LambdaRequest =
            serde_json::from_str(include_str!("../events/token-function-url.json"))
                .expect("event parses");
        let request: lambda_http::Request = function_url.into();
        let context = lambda_http::RequestExt::request_context(&request);
        assert_eq!(
            Caller::from_context(&context).map(|c| c.arn),
            Some("arn:aws:sts::123456789012:assumed-role/app-role/app-session".to_owned())
        );

        let anonymous: lambda_http::request::LambdaRequest =
            serde_json::from_str(include_str!("../events/token-no-identity.json"))
                .expect("event parses");
        let request: lambda_http::Request = anonymous.into();
        let context = lambda_http::RequestExt::request_context(&request);
        assert_eq!(Caller::from_context(&context), None);
    }
}
