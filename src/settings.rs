//! The broker's own settings, read from the environment once at start-up.

use std::collections::HashMap;
use std::time::Duration;

use crate::caller::{AllowedCallers, AllowedCallersError};
use crate::credential_config::{CredentialConfig, MAX_TOKEN_LIFETIME_SECONDS};

/// The scope granted when `BROKER_SCOPES` is unset.
pub const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Google's libraries refresh between 10 s and 4 min before expiry; the broker uses 5 min so a
/// returned token outlives the longest call a caller is likely to make with it.
const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Well under Lambda's timeout, well over a healthy Google round trip.
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variables that can hold the credential configuration.
pub const CONFIG_SOURCES: [&str; 3] = [
    "BROKER_CREDENTIAL_CONFIG",
    "BROKER_CREDENTIAL_SECRET",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// Where the credential configuration comes from: exactly one of [`CONFIG_SOURCES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `BROKER_CREDENTIAL_CONFIG`: the JSON itself.
    Inline(String),
    /// `BROKER_CREDENTIAL_SECRET`: a Secrets Manager secret id or ARN.
    Secret(String),
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a file path.
    File(String),
}

/// How answers leave the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// Whole answers: for API Gateway and `BUFFERED` Function URLs.
    Buffered,
    /// Lambda response streaming: for Function URLs with `InvokeMode: RESPONSE_STREAM`.
    Streaming,
}

/// Everything the broker reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to load the credential configuration from.
    pub source: ConfigSource,
    /// `BROKER_ALLOW_LOOPBACK_ENDPOINTS`: admit http on loopback for the emulator.
    pub allow_loopback: bool,
    /// `BROKER_ALLOWED_CALLERS`.
    pub allowed_callers: AllowedCallers,
    /// `BROKER_SCOPES`: the ceiling of scopes a caller may ask for, and the default.
    pub scopes: Vec<String>,
    /// `BROKER_MAX_LIFETIME_SECONDS`; `None` means the configuration's lifetime.
    pub max_lifetime_seconds: Option<u32>,
    /// `BROKER_REFRESH_MARGIN_SECONDS`.
    pub refresh_margin: Duration,
    /// `BROKER_UPSTREAM_TIMEOUT_SECONDS`: the limit for one call to Google.
    pub upstream_timeout: Duration,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`; `None` leaves it to aws-config.
    pub region: Option<String>,
    /// `BROKER_RESPONSE_MODE`: `buffered` (default) or `streaming`.
    pub response_mode: ResponseMode,
    /// `BROKER_PREFETCH_TOKEN`: fetch the default token during init, so the first caller does
    /// not wait for the exchange (init time is not billed on standard Lambda).
    pub prefetch_token: bool,
}

/// A setting that is missing or wrong; start-up stops with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// None, or more than one, of the configuration sources is set.
    #[error(
        "set exactly one of BROKER_CREDENTIAL_CONFIG (the JSON), BROKER_CREDENTIAL_SECRET \
         (a Secrets Manager secret id or ARN) or GOOGLE_APPLICATION_CREDENTIALS (a file path); \
         found {0}"
    )]
    Source(String),
    /// A variable with a value of the wrong shape.
    #[error("{name} {problem}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What was expected.
        problem: &'static str,
    },
    /// `BROKER_ALLOWED_CALLERS` is empty or holds an unacceptable pattern.
    #[error(transparent)]
    Callers(#[from] AllowedCallersError),
}

impl Settings {
    /// Reads the settings from `env` (in `main`, the process environment).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        let present: Vec<&str> = CONFIG_SOURCES
            .iter()
            .copied()
            .filter(|name| get(name).is_some())
            .collect();
        let source = match present.as_slice() {
            [name] => {
                let value = get(name).unwrap_or_default().to_owned();
                match *name {
                    "BROKER_CREDENTIAL_CONFIG" => ConfigSource::Inline(value),
                    "BROKER_CREDENTIAL_SECRET" => ConfigSource::Secret(value),
                    _ => ConfigSource::File(value),
                }
            }
            [] => return Err(SettingsError::Source("none".to_owned())),
            several => return Err(SettingsError::Source(several.join(" and "))),
        };

        let allow_loopback = match get("BROKER_ALLOW_LOOPBACK_ENDPOINTS") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(SettingsError::Invalid {
                    name: "BROKER_ALLOW_LOOPBACK_ENDPOINTS",
                    problem: "must be true or false",
                })
            }
        };

        let allowed_callers = AllowedCallers::parse(get("BROKER_ALLOWED_CALLERS").unwrap_or(""))?;

        let scopes = parse_scopes(get("BROKER_SCOPES").unwrap_or(DEFAULT_SCOPE))?;

        let max_lifetime_seconds = get("BROKER_MAX_LIFETIME_SECONDS")
            .map(|text| {
                text.parse::<u32>()
                    .ok()
                    .filter(|n| (60..=MAX_TOKEN_LIFETIME_SECONDS).contains(n))
                    .ok_or(SettingsError::Invalid {
                        name: "BROKER_MAX_LIFETIME_SECONDS",
                        problem: "must be a whole number of seconds from 60 to 43200",
                    })
            })
            .transpose()?;

        let refresh_margin = seconds(
            get("BROKER_REFRESH_MARGIN_SECONDS"),
            DEFAULT_REFRESH_MARGIN,
            0..=1800,
            "BROKER_REFRESH_MARGIN_SECONDS",
            "must be a whole number of seconds from 0 to 1800",
        )?;
        let upstream_timeout = seconds(
            get("BROKER_UPSTREAM_TIMEOUT_SECONDS"),
            DEFAULT_UPSTREAM_TIMEOUT,
            1..=300,
            "BROKER_UPSTREAM_TIMEOUT_SECONDS",
            "must be a whole number of seconds from 1 to 300",
        )?;

        let response_mode = match get("BROKER_RESPONSE_MODE") {
            None | Some("buffered") => ResponseMode::Buffered,
            Some("streaming") => ResponseMode::Streaming,
            Some(_) => {
                return Err(SettingsError::Invalid {
                    name: "BROKER_RESPONSE_MODE",
                    problem: "must be buffered or streaming",
                })
            }
        };

        let prefetch_token = match get("BROKER_PREFETCH_TOKEN") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(SettingsError::Invalid {
                    name: "BROKER_PREFETCH_TOKEN",
                    problem: "must be true or false",
                })
            }
        };

        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .map(str::to_owned);

        Ok(Self {
            source,
            allow_loopback,
            allowed_callers,
            scopes,
            max_lifetime_seconds,
            refresh_margin,
            upstream_timeout,
            region,
            response_mode,
            prefetch_token,
        })
    }

    /// The longest lifetime a caller may ask for: `BROKER_MAX_LIFETIME_SECONDS`, else the
    /// configuration's `token_lifetime_seconds`, else one hour.
    pub fn max_lifetime(&self, config: &CredentialConfig) -> u32 {
        self.max_lifetime_seconds.unwrap_or_else(|| {
            config
                .impersonation
                .as_ref()
                .map_or(3600, |i| i.token_lifetime_seconds)
        })
    }
}

fn parse_scopes(text: &str) -> Result<Vec<String>, SettingsError> {
    let mut scopes: Vec<String> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() || scopes.iter().any(|s| !is_scope(s)) {
        return Err(SettingsError::Invalid {
            name: "BROKER_SCOPES",
            problem: "must be a comma-separated list of OAuth scope URLs (https://...)",
        });
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// Whether `text` looks like a Google OAuth scope: an https URL of printable characters.
pub fn is_scope(text: &str) -> bool {
    text.len() <= 256 && text.starts_with("https://") && text.bytes().all(|b| b.is_ascii_graphic())
}

fn seconds(
    value: Option<&str>,
    default: Duration,
    range: std::ops::RangeInclusive<u64>,
    name: &'static str,
    problem: &'static str,
) -> Result<Duration, SettingsError> {
    match value {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .map(Duration::from_secs)
            .ok_or(SettingsError::Invalid { name, problem }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CALLERS: (&str, &str) = (
        "BROKER_ALLOWED_CALLERS",
        "arn:aws:iam::123456789012:role/app-role",
    );

    #[test]
    fn exactly_one_source_is_required_and_all_three_are_named() {
        let none = Settings::from_env(&env(&[CALLERS]))
            .unwrap_err()
            .to_string();
        let two = Settings::from_env(&env(&[
            CALLERS,
            ("BROKER_CREDENTIAL_CONFIG", "{}"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/tmp/x.json"),
        ]))
        .unwrap_err()
        .to_string();
        for message in [&none, &two] {
            for name in CONFIG_SOURCES {
                assert!(message.contains(name), "{message} should name {name}");
            }
        }
        assert!(two.contains("found BROKER_CREDENTIAL_CONFIG and GOOGLE_APPLICATION_CREDENTIALS"));
        assert!(!two.contains("{}"), "values must not be echoed: {two}");
    }

    #[test]
    fn each_source_is_recognised() {
        for (name, expected) in [
            (
                "BROKER_CREDENTIAL_CONFIG",
                ConfigSource::Inline("{}".into()),
            ),
            (
                "BROKER_CREDENTIAL_SECRET",
                ConfigSource::Secret("{}".into()),
            ),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                ConfigSource::File("{}".into()),
            ),
        ] {
            let settings = Settings::from_env(&env(&[CALLERS, (name, "{}")])).unwrap();
            assert_eq!(settings.source, expected);
        }
    }

    #[test]
    fn defaults_apply_when_unset() {
        let settings =
            Settings::from_env(&env(&[CALLERS, ("BROKER_CREDENTIAL_SECRET", "s")])).unwrap();
        assert_eq!(settings.scopes, vec![DEFAULT_SCOPE.to_owned()]);
        assert!(!settings.allow_loopback);
        assert_eq!(settings.max_lifetime_seconds, None);
        assert_eq!(settings.refresh_margin, Duration::from_secs(300));
        assert_eq!(settings.upstream_timeout, Duration::from_secs(10));
        assert_eq!(settings.region, None);
    }

    #[test]
    fn region_prefers_aws_region() {
        let settings = Settings::from_env(&env(&[
            CALLERS,
            ("BROKER_CREDENTIAL_SECRET", "s"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_REGION", "us-east-2"),
        ]))
        .unwrap();
        assert_eq!(settings.region.as_deref(), Some("us-east-2"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("BROKER_ALLOW_LOOPBACK_ENDPOINTS", "yes"),
            ("BROKER_SCOPES", "cloud-platform"),
            ("BROKER_SCOPES", " , "),
            ("BROKER_MAX_LIFETIME_SECONDS", "0"),
            ("BROKER_MAX_LIFETIME_SECONDS", "50000"),
            ("BROKER_MAX_LIFETIME_SECONDS", "-5"),
            ("BROKER_REFRESH_MARGIN_SECONDS", "1h"),
            ("BROKER_UPSTREAM_TIMEOUT_SECONDS", "0"),
            ("BROKER_ALLOWED_CALLERS", "*"),
            ("BROKER_RESPONSE_MODE", "stream"),
            ("BROKER_PREFETCH_TOKEN", "1"),
            ("BROKER_ALLOWED_CALLERS", ""),
        ] {
            let mut vars = env(&[CALLERS, ("BROKER_CREDENTIAL_SECRET", "s")]);
            vars.insert(name.to_owned(), value.to_owned());
            let error = Settings::from_env(&vars)
                .expect_err(&format!("{name}={value} should be refused"))
                .to_string();
            assert!(error.contains(name), "{error} should name {name}");
        }
    }

    #[test]
    fn scopes_are_sorted_and_deduplicated() {
        let settings = Settings::from_env(&env(&[
            CALLERS,
            ("BROKER_CREDENTIAL_SECRET", "s"),
            (
                "BROKER_SCOPES",
                "https://b.example/s, https://a.example/s https://b.example/s",
            ),
        ]))
        .unwrap();
        assert_eq!(
            settings.scopes,
            vec!["https://a.example/s", "https://b.example/s"]
        );
    }
}
