//! Google's `external_account` credential configuration for AWS.
//!
//! This is the JSON that `gcloud iam workload-identity-pools create-cred-config --aws` writes.
//! It holds no secret, but it decides where the broker sends credentials, so every field is
//! checked at start-up and a bad one stops the function with a message naming it.

use serde_json::{Map, Value};
use url::Url;

use crate::endpoint::{self, EndpointPolicy, DEFAULT_UNIVERSE_DOMAIN};

/// The only subject token type this broker produces.
pub const AWS_SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";

/// The lifetime Google gives impersonated tokens when the configuration names none.
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u32 = 3600;

/// The longest lifetime IAM Credentials grants, and only with the org policy
/// `constraints/iam.allowServiceAccountCredentialLifetimeExtension`.
pub const MAX_TOKEN_LIFETIME_SECONDS: u32 = 43_200;

/// A validated AWS `external_account` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialConfig {
    /// The workload identity pool provider, e.g.
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/Q`.
    pub audience: String,
    /// Google STS token endpoint.
    pub token_url: Url,
    /// The service account to impersonate, when the configuration names one.
    pub impersonation: Option<Impersonation>,
    /// `regional_cred_verification_url` with `{region}` still in place.
    pub regional_cred_verification_url: String,
    /// The Google universe; `googleapis.com` unless the configuration says otherwise.
    pub universe_domain: String,
    /// Project billed for quota, sent as `x-goog-user-project` where Google honours it.
    pub quota_project_id: Option<String>,
}

/// Where and as whom the federated token is exchanged for a service account token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    /// The full `generateAccessToken` URL.
    pub url: Url,
    /// The service account's email, taken from the URL.
    pub service_account: String,
    /// `service_account_impersonation.token_lifetime_seconds`, or one hour.
    pub token_lifetime_seconds: u32,
}

/// A field of the configuration that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential configuration field `{field}` {problem}")]
pub struct CredentialConfigError {
    /// The JSON path of the field.
    pub field: &'static str,
    /// What was expected; never the value itself.
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> CredentialConfigError {
    CredentialConfigError {
        field,
        problem: problem.into(),
    }
}

impl CredentialConfig {
    /// Parses and validates the JSON text. `allow_loopback` admits http on loopback hosts for
    /// the Google endpoints (the bundled emulator); AWS endpoints are never loopback.
    pub fn parse(json: &str, allow_loopback: bool) -> Result<Self, CredentialConfigError> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| invalid("(document)", format!("is not valid JSON ({e})")))?;
        let Value::Object(root) = value else {
            return Err(invalid("(document)", "must be a JSON object"));
        };

        let kind = required_str(&root, "type", "type")?;
        if kind != "external_account" {
            return Err(invalid("type", "must be \"external_account\""));
        }
        let subject_token_type = required_str(&root, "subject_token_type", "subject_token_type")?;
        if subject_token_type != AWS_SUBJECT_TOKEN_TYPE {
            return Err(invalid(
                "subject_token_type",
                format!("must be \"{AWS_SUBJECT_TOKEN_TYPE}\" (this broker federates AWS)"),
            ));
        }
        let audience = required_str(&root, "audience", "audience")?;
        if !audience.starts_with("//") || audience.chars().any(char::is_whitespace) {
            return Err(invalid(
                "audience",
                "must be the provider's resource name, \
                 //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER",
            ));
        }

        let universe_domain = match optional_str(&root, "universe_domain", "universe_domain")? {
            None => DEFAULT_UNIVERSE_DOMAIN.to_owned(),
            // Two labels at least: a bare top-level domain would admit every host beneath it.
            Some(domain) if is_dns_name(domain) && domain.contains('.') => {
                domain.to_ascii_lowercase()
            }
            Some(_) => {
                return Err(invalid(
                    "universe_domain",
                    "must be a DNS name of at least two labels, e.g. googleapis.com",
                ))
            }
        };
        let policy = EndpointPolicy::new(&universe_domain, allow_loopback);

        let token_url = required_str(&root, "token_url", "token_url")?;
        let token_url = policy
            .check_google(token_url)
            .map_err(|e| invalid("token_url", e.to_string()))?;

        let impersonation = parse_impersonation(&root, &policy)?;
        let regional_cred_verification_url = parse_credential_source(&root)?;

        let quota_project_id =
            optional_str(&root, "quota_project_id", "quota_project_id")?.map(str::to_owned);
        if let Some(project) = &quota_project_id {
            if !is_project_id(project) {
                return Err(invalid(
                    "quota_project_id",
                    "must be a Google Cloud project id",
                ));
            }
        }

        Ok(Self {
            audience: audience.to_owned(),
            token_url,
            impersonation,
            regional_cred_verification_url,
            universe_domain,
            quota_project_id,
        })
    }

    /// The `GetCallerIdentity` URL for `region`, checked to be an AWS STS endpoint.
    pub fn verification_url(&self, region: &str) -> Result<Url, CredentialConfigError> {
        if !endpoint::is_aws_region(region) {
            return Err(invalid(
                "credential_source.regional_cred_verification_url",
                "needs a valid AWS region (set AWS_REGION)",
            ));
        }
        let url = self
            .regional_cred_verification_url
            .replace("{region}", region);
        endpoint::check_aws_sts(&url).map_err(|e| {
            invalid(
                "credential_source.regional_cred_verification_url",
                e.to_string(),
            )
        })
    }
}

fn parse_impersonation(
    root: &Map<String, Value>,
    policy: &EndpointPolicy,
) -> Result<Option<Impersonation>, CredentialConfigError> {
    const FIELD: &str = "service_account_impersonation_url";
    let Some(text) = optional_str(root, FIELD, FIELD)? else {
        return Ok(None);
    };
    let url = policy
        .check_google(text)
        .map_err(|e| invalid(FIELD, e.to_string()))?;
    let service_account = url
        .path()
        .strip_prefix("/v1/projects/-/serviceAccounts/")
        .and_then(|rest| rest.strip_suffix(":generateAccessToken"))
        .filter(|email| is_service_account_email(email))
        .ok_or_else(|| {
            invalid(
                FIELD,
                "must be .../v1/projects/-/serviceAccounts/EMAIL:generateAccessToken",
            )
        })?
        .to_owned();

    const LIFETIME: &str = "service_account_impersonation.token_lifetime_seconds";
    let token_lifetime_seconds = match root.get("service_account_impersonation") {
        None | Some(Value::Null) => DEFAULT_TOKEN_LIFETIME_SECONDS,
        Some(Value::Object(options)) => match options.get("token_lifetime_seconds") {
            None | Some(Value::Null) => DEFAULT_TOKEN_LIFETIME_SECONDS,
            Some(value) => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (600..=MAX_TOKEN_LIFETIME_SECONDS).contains(n))
                .ok_or_else(|| invalid(LIFETIME, "must be a whole number from 600 to 43200"))?,
        },
        Some(_) => {
            return Err(invalid(
                "service_account_impersonation",
                "must be an object",
            ))
        }
    };

    Ok(Some(Impersonation {
        url,
        service_account,
        token_lifetime_seconds,
    }))
}

fn parse_credential_source(root: &Map<String, Value>) -> Result<String, CredentialConfigError> {
    let source = match root.get("credential_source") {
        Some(Value::Object(source)) => source,
        None | Some(Value::Null) => {
            return Err(invalid("credential_source", "is missing"));
        }
        Some(_) => return Err(invalid("credential_source", "must be an object")),
    };
    let environment_id =
        required_str(source, "environment_id", "credential_source.environment_id")?;
    if environment_id != "aws1" {
        return Err(invalid(
            "credential_source.environment_id",
            "must be \"aws1\" (the only AWS format version Google defines)",
        ));
    }
    const FIELD: &str = "credential_source.regional_cred_verification_url";
    let template = required_str(source, "regional_cred_verification_url", FIELD)?;
    if !template.contains("GetCallerIdentity") {
        return Err(invalid(FIELD, "must be the STS GetCallerIdentity URL"));
    }
    // Checked with a stand-in region now, so that a bad template fails at start-up rather than
    // at the first token request.
    endpoint::check_aws_sts(&template.replace("{region}", "us-east-1"))
        .map_err(|e| invalid(FIELD, e.to_string()))?;
    // Limitation: region_url, url and imdsv2_session_token_url are accepted but not used,
    // because the broker takes credentials and region from aws-config's chain, which already
    // speaks IMDSv2 where it is needed.
    Ok(template.to_owned())
}

fn required_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a str, CredentialConfigError> {
    optional_str(object, key, field)?.ok_or_else(|| invalid(field, "is missing"))
}

fn optional_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<&'a str>, CredentialConfigError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err(invalid(field, "must not be empty")),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn is_dns_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `text` is a plausible service account email (`name@project.iam.gserviceaccount.com`
/// and other domains Google uses); only characters that cannot disturb a URL path.
pub fn is_service_account_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && is_dns_name(domain)
}

/// Whether `text` has the shape of a Google Cloud project id (or a legacy domain-scoped id).
pub fn is_project_id(text: &str) -> bool {
    (1..=100).contains(&text.len())
        && text.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../shared/conformance/external-account-aws.json");

    fn with(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut value: Value = serde_json::from_str(SAMPLE).expect("sample parses");
        edit(value.as_object_mut().expect("sample is an object"));
        value.to_string()
    }

    #[test]
    fn gcloud_configuration_parses() {
        let config = CredentialConfig::parse(SAMPLE, false).expect("sample is valid");
        assert_eq!(
            config.audience,
            "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/aws-pool/providers/aws-provider"
        );
        assert_eq!(
            config.token_url.as_str(),
            "https://sts.googleapis.com/v1/token"
        );
        let impersonation = config.impersonation.expect("impersonation configured");
        assert_eq!(
            impersonation.service_account,
            "broker@example-project.iam.gserviceaccount.com"
        );
        assert_eq!(impersonation.token_lifetime_seconds, 3600);
        assert_eq!(config.universe_domain, "googleapis.com");
        assert_eq!(config.quota_project_id, None);
    }

    #[test]
    fn verification_url_substitutes_the_region() {
        let config = CredentialConfig::parse(SAMPLE, false).expect("sample is valid");
        let url = config.verification_url("eu-west-1").expect("valid region");
        assert_eq!(
            url.as_str(),
            "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
        );
        assert!(config.verification_url("eu-west-1.evil.com").is_err());
    }

    #[test]
    fn each_bad_field_is_named_without_its_value() {
        type Edit = fn(&mut Map<String, Value>);
        let cases: Vec<(&str, Edit)> = vec![
            ("type", |m| {
                m.insert("type".into(), "service_account".into());
            }),
            ("audience", |m| {
                m.remove("audience");
            }),
            ("audience", |m| {
                m.insert("audience".into(), Value::from(42));
            }),
            ("subject_token_type", |m| {
                m.insert(
                    "subject_token_type".into(),
                    "urn:ietf:params:oauth:token-type:jwt".into(),
                );
            }),
            ("token_url", |m| {
                m.insert(
                    "token_url".into(),
                    "https://sts.googleapis.com.evil.com/v1/token".into(),
                );
            }),
            ("token_url", |m| {
                m.insert("token_url".into(), "http://127.0.0.1:8086/v1/token".into());
            }),
            ("service_account_impersonation_url", |m| {
                m.insert(
                    "service_account_impersonation_url".into(),
                    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/x:signJwt"
                        .into(),
                );
            }),
            (
                "service_account_impersonation.token_lifetime_seconds",
                |m| {
                    m.insert(
                        "service_account_impersonation".into(),
                        serde_json::json!({"token_lifetime_seconds": 50000}),
                    );
                },
            ),
            ("credential_source", |m| {
                m.remove("credential_source");
            }),
            ("credential_source.environment_id", |m| {
                m["credential_source"]["environment_id"] = "aws2".into();
            }),
            ("credential_source.regional_cred_verification_url", |m| {
                m["credential_source"]["regional_cred_verification_url"] =
                    "https://sts.{region}.amazonaws.com.evil.com?Action=GetCallerIdentity".into();
            }),
            ("universe_domain", |m| {
                m.insert("universe_domain".into(), "evil.com/x".into());
            }),
            ("universe_domain", |m| {
                m.insert("universe_domain".into(), "com".into());
            }),
            ("quota_project_id", |m| {
                m.insert("quota_project_id".into(), "Bad Project".into());
            }),
        ];
        for (field, edit) in cases {
            let json = with(edit);
            let error = CredentialConfig::parse(&json, false)
                .expect_err(&format!("an edit of {field} should be refused"));
            assert_eq!(error.field, field, "wrong field named: {error}");
            let message = error.to_string();
            assert!(
                !message.contains("/v1/token"),
                "whole value echoed: {message}"
            );
            assert!(
                !message.contains("Bad Project"),
                "whole value echoed: {message}"
            );
        }
    }

    #[test]
    fn loopback_endpoints_need_the_switch() {
        let json = with(|m| {
            m.insert("token_url".into(), "http://127.0.0.1:8086/v1/token".into());
        });
        assert!(CredentialConfig::parse(&json, false).is_err());
        let config = CredentialConfig::parse(&json, true).expect("loopback allowed");
        assert_eq!(config.token_url.as_str(), "http://127.0.0.1:8086/v1/token");
    }

    #[test]
    fn missing_impersonation_means_the_federated_token_is_the_result() {
        let json = with(|m| {
            m.remove("service_account_impersonation_url");
            m.remove("service_account_impersonation");
        });
        let config = CredentialConfig::parse(&json, false).expect("valid without impersonation");
        assert_eq!(config.impersonation, None);
    }

    #[test]
    fn non_json_is_refused_without_echo() {
        let error = CredentialConfig::parse("secret-ish garbage", false).expect_err("not JSON");
        assert_eq!(error.field, "(document)");
        assert!(!error.to_string().contains("garbage"));
    }
}
