//! The proxy's `METADATA_PROXY_*` variables, read from an injected environment.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `METADATA_PROXY_TOKEN_URL` | (required) | The broker's token route: `https://ID.lambda-url.REGION.on.aws/token` or `https://ID.execute-api.REGION.amazonaws.com/token` |
//! | `METADATA_PROXY_SIGNING_SERVICE` | from the URL's host | `lambda` (Function URL) or `execute-api` (API Gateway) |
//! | `METADATA_PROXY_REGION` | from the URL's host, else `AWS_REGION`, `AWS_DEFAULT_REGION` | The region requests are signed for |
//! | `METADATA_PROXY_ADDR` | `127.0.0.1:8181` | Where the metadata API listens |
//! | `METADATA_PROXY_ALLOW_REMOTE` | `false` | `true` admits a listen address other than loopback |
//! | `METADATA_PROXY_SERVICE_ACCOUNT` | the broker's answer | The email `instance/service-accounts/default/email` answers |
//! | `METADATA_PROXY_PROJECT_ID` | `GOOGLE_CLOUD_PROJECT`, else the service account's project | `project/project-id` |
//! | `METADATA_PROXY_NUMERIC_PROJECT_ID` | unset (404) | `project/numeric-project-id` |
//! | `METADATA_PROXY_UNIVERSE_DOMAIN` | `googleapis.com` | `universe/universe-domain` |
//! | `METADATA_PROXY_SCOPES` | the broker's default | Scopes asked for when a client names none |
//! | `METADATA_PROXY_TOKEN_LIFETIME_SECONDS` | the broker's default | Lifetime asked of the broker, 60 to 43200 |
//! | `METADATA_PROXY_REFRESH_MARGIN_SECONDS` | 300 | A cached token is replaced this long before it expires |
//! | `METADATA_PROXY_TIMEOUT_SECONDS` | 30 | Limit for one call to the broker |
//! | `METADATA_PROXY_MODE` | `auto` | `server`, `extension`, or `auto`: a Lambda extension when `AWS_LAMBDA_RUNTIME_API` is set |

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use url::{Host, Url};

use crate::settings::is_scope;

/// Where the metadata API listens unless `METADATA_PROXY_ADDR` says otherwise.
///
/// Not 8080: Lambda Web Adapter and many applications take that port, and an ECS task or a
/// pod shares one loopback between all its containers.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8181));

/// Replaced this long before expiry: more than the longest margin of Google's clients (Rust
/// refreshes 4 minutes ahead, Python 3 min 45 s), so a token handed out is never one the
/// client already considers stale.
const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A broker call may include a Lambda cold start and two Google calls of up to 10 s each.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How requests to the broker are signed: the SigV4 service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningService {
    /// A Lambda Function URL with `AuthType: AWS_IAM`.
    Lambda,
    /// An API Gateway HTTP or REST API with IAM authorization.
    ExecuteApi,
}

impl SigningService {
    /// The name signed into the credential scope.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningService::Lambda => "lambda",
            SigningService::ExecuteApi => "execute-api",
        }
    }
}

/// How the process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMode {
    /// A plain server (a sidecar container, a process beside the workload) until SIGTERM.
    Server,
    /// A Lambda extension: registers with the Extensions API at `runtime_api` and serves until
    /// Lambda announces shutdown.
    Extension {
        /// `AWS_LAMBDA_RUNTIME_API`, `host:port`.
        runtime_api: String,
    },
}

impl RunMode {
    /// `METADATA_PROXY_MODE`, read apart from the other settings so that an extension can
    /// report a bad setting to Lambda.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let runtime_api = env
            .get("AWS_LAMBDA_RUNTIME_API")
            .filter(|api| !api.is_empty())
            .cloned();
        match (non_empty(env, "METADATA_PROXY_MODE"), runtime_api) {
            (None | Some("auto"), Some(runtime_api)) | (Some("extension"), Some(runtime_api)) => {
                Ok(RunMode::Extension { runtime_api })
            }
            (None | Some("auto") | Some("server"), _) => Ok(RunMode::Server),
            (Some("extension"), None) => Err(SettingsError::Invalid {
                name: "METADATA_PROXY_MODE",
                problem: "extension needs AWS_LAMBDA_RUNTIME_API, which Lambda sets",
            }),
            (Some(_), _) => Err(SettingsError::Invalid {
                name: "METADATA_PROXY_MODE",
                problem: "must be auto, server or extension",
            }),
        }
    }
}

/// Everything the proxy needs to serve, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Where the metadata API listens.
    pub listen: SocketAddr,
    /// The broker's token route.
    pub token_url: Url,
    /// The SigV4 service of the broker's endpoint.
    pub signing_service: SigningService,
    /// The region requests are signed for.
    pub region: String,
    /// The service account's email, when configured rather than learned from the broker.
    pub service_account: Option<String>,
    /// `project/project-id`, when configured rather than derived from the service account.
    pub project_id: Option<String>,
    /// `project/numeric-project-id`; unset answers 404.
    pub numeric_project_id: Option<String>,
    /// `universe/universe-domain`.
    pub universe_domain: String,
    /// Scopes asked for when a client names none; `None` leaves it to the broker.
    pub scopes: Option<Vec<String>>,
    /// Lifetime asked of the broker; `None` leaves it to the broker.
    pub lifetime_seconds: Option<u32>,
    /// A cached token is replaced this long before it expires.
    pub refresh_margin: Duration,
    /// Limit for one call to the broker.
    pub timeout: Duration,
}

/// A variable that is missing or wrong; the message names it and says what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A required variable is unset.
    #[error("{name} is required: {problem}")]
    Missing {
        /// The variable.
        name: &'static str,
        /// What it must hold.
        problem: &'static str,
    },
    /// A variable's value is not understood.
    #[error("{name} {problem}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What it must be.
        problem: &'static str,
    },
}

impl ProxySettings {
    /// Reads and checks the `METADATA_PROXY_*` variables of `env`.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let token_url = token_url(env)?;
        let inferred = infer_endpoint(&token_url);
        let signing_service = match non_empty(env, "METADATA_PROXY_SIGNING_SERVICE") {
            Some("lambda") => SigningService::Lambda,
            Some("execute-api") => SigningService::ExecuteApi,
            Some(_) => {
                return Err(SettingsError::Invalid {
                    name: "METADATA_PROXY_SIGNING_SERVICE",
                    problem: "must be lambda (Function URL) or execute-api (API Gateway)",
                })
            }
            None => inferred
                .map(|(service, _)| service)
                .ok_or(SettingsError::Missing {
                    name: "METADATA_PROXY_SIGNING_SERVICE",
                    problem: "the token URL's host is neither a Function URL nor an execute-api \
                          host; set lambda or execute-api",
                })?,
        };
        let region = non_empty(env, "METADATA_PROXY_REGION")
            .map(str::to_owned)
            .or_else(|| inferred.map(|(_, region)| region.to_owned()))
            .or_else(|| non_empty(env, "AWS_REGION").map(str::to_owned))
            .or_else(|| non_empty(env, "AWS_DEFAULT_REGION").map(str::to_owned))
            .ok_or(SettingsError::Missing {
                name: "METADATA_PROXY_REGION",
                problem: "the token URL's host names no region and AWS_REGION is unset",
            })?;
        if !is_region(&region) {
            return Err(SettingsError::Invalid {
                name: "METADATA_PROXY_REGION",
                problem: "must be an AWS region such as us-east-1",
            });
        }

        let listen = match non_empty(env, "METADATA_PROXY_ADDR") {
            None => DEFAULT_ADDR,
            Some(text) => text.parse().map_err(|_| SettingsError::Invalid {
                name: "METADATA_PROXY_ADDR",
                problem: "must be an IP:PORT socket address such as 127.0.0.1:8181",
            })?,
        };
        if !listen.ip().is_loopback() && !flag(env, "METADATA_PROXY_ALLOW_REMOTE")? {
            return Err(SettingsError::Invalid {
                name: "METADATA_PROXY_ADDR",
                problem: "must be a loopback address: anyone who reaches the proxy gets tokens \
                          (set METADATA_PROXY_ALLOW_REMOTE=true to serve a container network)",
            });
        }

        let service_account = non_empty(env, "METADATA_PROXY_SERVICE_ACCOUNT")
            .map(|email| {
                is_email(email)
                    .then(|| email.to_owned())
                    .ok_or(SettingsError::Invalid {
                        name: "METADATA_PROXY_SERVICE_ACCOUNT",
                        problem: "must be a service account email",
                    })
            })
            .transpose()?;
        let project_id = non_empty(env, "METADATA_PROXY_PROJECT_ID")
            .or_else(|| non_empty(env, "GOOGLE_CLOUD_PROJECT"))
            .map(str::to_owned);
        let numeric_project_id = non_empty(env, "METADATA_PROXY_NUMERIC_PROJECT_ID")
            .map(|number| {
                (number.bytes().all(|b| b.is_ascii_digit()) && number.len() <= 20)
                    .then(|| number.to_owned())
                    .ok_or(SettingsError::Invalid {
                        name: "METADATA_PROXY_NUMERIC_PROJECT_ID",
                        problem: "must be the project number (digits)",
                    })
            })
            .transpose()?;
        let universe_domain = non_empty(env, "METADATA_PROXY_UNIVERSE_DOMAIN")
            .unwrap_or("googleapis.com")
            .to_owned();
        let scopes = non_empty(env, "METADATA_PROXY_SCOPES")
            .map(|text| {
                let scopes = scope_list(text);
                (!scopes.is_empty() && scopes.iter().all(|s| is_scope(s)))
                    .then_some(scopes)
                    .ok_or(SettingsError::Invalid {
                        name: "METADATA_PROXY_SCOPES",
                        problem: "must be a comma-separated list of OAuth scope URLs (https://...)",
                    })
            })
            .transpose()?;
        let lifetime_seconds = non_empty(env, "METADATA_PROXY_TOKEN_LIFETIME_SECONDS")
            .map(|text| {
                text.parse::<u32>()
                    .ok()
                    .filter(|n| (60..=43_200).contains(n))
                    .ok_or(SettingsError::Invalid {
                        name: "METADATA_PROXY_TOKEN_LIFETIME_SECONDS",
                        problem: "must be a whole number of seconds from 60 to 43200",
                    })
            })
            .transpose()?;
        let refresh_margin = seconds(
            env,
            "METADATA_PROXY_REFRESH_MARGIN_SECONDS",
            DEFAULT_REFRESH_MARGIN,
            0..=1800,
        )?;
        let timeout = seconds(
            env,
            "METADATA_PROXY_TIMEOUT_SECONDS",
            DEFAULT_TIMEOUT,
            1..=300,
        )?;

        Ok(ProxySettings {
            listen,
            token_url,
            signing_service,
            region,
            service_account,
            project_id,
            numeric_project_id,
            universe_domain,
            scopes,
            lifetime_seconds,
            refresh_margin,
            timeout,
        })
    }
}

/// Scopes as clients write them (`?scopes=a,b`, `METADATA_PROXY_SCOPES`): comma- or
/// space-separated, sorted, without duplicates.
pub fn scope_list(text: &str) -> Vec<String> {
    let mut scopes: Vec<String> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

fn non_empty<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn flag(env: &HashMap<String, String>, name: &'static str) -> Result<bool, SettingsError> {
    match non_empty(env, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(SettingsError::Invalid {
            name,
            problem: "must be true or false",
        }),
    }
}

fn seconds(
    env: &HashMap<String, String>,
    name: &'static str,
    default: Duration,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, SettingsError> {
    match non_empty(env, name) {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .map(Duration::from_secs)
            .ok_or(SettingsError::Invalid {
                name,
                problem: "must be a whole number of seconds within the documented range",
            }),
    }
}

/// The token URL: `https`, or `http` on loopback (the local emulator's front), without
/// credentials, query or fragment, since nothing but the path is signed for it.
fn token_url(env: &HashMap<String, String>) -> Result<Url, SettingsError> {
    const NAME: &str = "METADATA_PROXY_TOKEN_URL";
    let text = non_empty(env, NAME).ok_or(SettingsError::Missing {
        name: NAME,
        problem: "the broker's token route, e.g. https://ID.lambda-url.REGION.on.aws/token",
    })?;
    let url = Url::parse(text).map_err(|_| SettingsError::Invalid {
        name: NAME,
        problem: "is not an absolute URL",
    })?;
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(name)) => name == "localhost",
        None => false,
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok {
        return Err(SettingsError::Invalid {
            name: NAME,
            problem: "must use https (http only on loopback): the answer is a bearer token",
        });
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(SettingsError::Invalid {
            name: NAME,
            problem: "must have no user, query or fragment",
        });
    }
    Ok(url)
}

/// The signing service and region a Function URL or execute-api host implies.
fn infer_endpoint(url: &Url) -> Option<(SigningService, &str)> {
    let host = url.host_str()?;
    if let Some(rest) = host.strip_suffix(".on.aws") {
        let (_, region) = rest.rsplit_once(".lambda-url.")?;
        return is_region(region).then_some((SigningService::Lambda, region));
    }
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (_, region) = rest.rsplit_once(".execute-api.")?;
    is_region(region).then_some((SigningService::ExecuteApi, region))
}

fn is_region(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_email(text: &str) -> bool {
    text.len() <= 254
        && text.bytes().all(|b| b.is_ascii_graphic())
        && text
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
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

    const FUNCTION_URL: &str = "https://abcdefghij.lambda-url.eu-west-1.on.aws/token";

    #[test]
    fn a_function_url_alone_gives_the_documented_defaults() {
        let settings = ProxySettings::from_env(&env(&[("METADATA_PROXY_TOKEN_URL", FUNCTION_URL)]))
            .expect("valid settings");

        assert_eq!(settings.listen, DEFAULT_ADDR);
        assert_eq!(settings.signing_service, SigningService::Lambda);
        assert_eq!(settings.region, "eu-west-1");
        assert_eq!(settings.universe_domain, "googleapis.com");
        assert_eq!(settings.refresh_margin, Duration::from_secs(300));
        assert_eq!(settings.timeout, Duration::from_secs(30));
        assert_eq!(
            (
                settings.service_account,
                settings.project_id,
                settings.scopes
            ),
            (None, None, None)
        );
    }

    #[test]
    fn service_and_region_come_from_the_host_unless_set() {
        let cases = [
            (FUNCTION_URL, &[][..], SigningService::Lambda, "eu-west-1"),
            (
                "https://a1b2c3.execute-api.ap-south-1.amazonaws.com/prod/token",
                &[][..],
                SigningService::ExecuteApi,
                "ap-south-1",
            ),
            (
                "https://broker.example.com/token",
                &[
                    ("METADATA_PROXY_SIGNING_SERVICE", "execute-api"),
                    ("AWS_REGION", "us-west-2"),
                ][..],
                SigningService::ExecuteApi,
                "us-west-2",
            ),
            (
                FUNCTION_URL,
                &[("METADATA_PROXY_REGION", "us-east-2")][..],
                SigningService::Lambda,
                "us-east-2",
            ),
            (
                "http://127.0.0.1:9000/token",
                &[
                    ("METADATA_PROXY_SIGNING_SERVICE", "lambda"),
                    ("AWS_DEFAULT_REGION", "us-east-1"),
                ][..],
                SigningService::Lambda,
                "us-east-1",
            ),
        ];

        for (url, extra, service, region) in cases {
            let mut vars = env(extra);
            vars.insert("METADATA_PROXY_TOKEN_URL".into(), url.into());

            let settings = ProxySettings::from_env(&vars).unwrap_or_else(|e| panic!("{url}: {e}"));

            assert_eq!(settings.signing_service, service, "{url}");
            assert_eq!(settings.region, region, "{url}");
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_variable() {
        let cases: [(&[(&str, &str)], &str); 11] = [
            (&[], "METADATA_PROXY_TOKEN_URL is required"),
            (
                &[(
                    "METADATA_PROXY_TOKEN_URL",
                    "http://broker.example.com/token",
                )],
                "must use https",
            ),
            (
                &[(
                    "METADATA_PROXY_TOKEN_URL",
                    "https://u:p@x.lambda-url.us-east-1.on.aws/token",
                )],
                "no user, query or fragment",
            ),
            (
                &[(
                    "METADATA_PROXY_TOKEN_URL",
                    "https://broker.example.com/token",
                )],
                "METADATA_PROXY_SIGNING_SERVICE is required",
            ),
            (
                &[
                    ("METADATA_PROXY_TOKEN_URL", FUNCTION_URL),
                    ("METADATA_PROXY_ADDR", "0.0.0.0:8181"),
                ],
                "must be a loopback address",
            ),
            (
                &[
                    ("METADATA_PROXY_TOKEN_URL", FUNCTION_URL),
                    ("METADATA_PROXY_ADDR", "localhost"),
                ],
                "METADATA_PROXY_ADDR must be an IP:PORT",
            ),
            (
                &[
                    ("METADATA_PROXY_TOKEN_URL", FUNCTION_URL),
                    ("METADATA_PROXY_SCOPES", "email"),
                ],
                "METADATA_PROXY_SCOPES must be",
            ),
            (
                &[
                    ("METADATA_PROXY_TOKEN_URL", FUNCTION_URL),
                    ("METADATA_PROXY_TOKEN_LIFETIME_SECONDS", "59"),
                ],
                "from 60 to 43200",
            ),
            (
                &[
                    ("METADATA_PROXY_TOKEN_URL", FUNCTION_URL),
                    ("METADATA_PROXY_SERVICE_ACCOUNT", "broker"),
                ],
                "service account email",
            ),
            (
                &[
                    ("METADATA_PROXY_TOKEN_URL", FUNCTION_URL),
                    ("METADATA_PROXY_SIGNING_SERVICE", "s3"),
                ],
                "lambda (Function URL) or execute-api",
            ),
            (
                &[
                    ("METADATA_PROXY_TOKEN_URL", FUNCTION_URL),
                    ("METADATA_PROXY_NUMERIC_PROJECT_ID", "my-project"),
                ],
                "project number",
            ),
        ];

        for (vars, expected) in cases {
            let error = ProxySettings::from_env(&env(vars)).expect_err(expected);

            assert!(
                error.to_string().contains(expected),
                "{vars:?}: {error} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn remote_listening_needs_the_explicit_opt_in() {
        let settings = ProxySettings::from_env(&env(&[
            ("METADATA_PROXY_TOKEN_URL", FUNCTION_URL),
            ("METADATA_PROXY_ADDR", "0.0.0.0:8181"),
            ("METADATA_PROXY_ALLOW_REMOTE", "true"),
        ]))
        .expect("allowed with the opt-in");

        assert_eq!(settings.listen.to_string(), "0.0.0.0:8181");
    }

    #[test]
    fn run_mode_follows_the_runtime_api_unless_set() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<RunMode, &'a str>);
        let cases: [Case; 6] = [
            (&[], Ok(RunMode::Server)),
            (
                &[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")],
                Ok(RunMode::Extension {
                    runtime_api: "127.0.0.1:9001".into(),
                }),
            ),
            (
                &[
                    ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
                    ("METADATA_PROXY_MODE", "server"),
                ],
                Ok(RunMode::Server),
            ),
            (&[("METADATA_PROXY_MODE", "server")], Ok(RunMode::Server)),
            (
                &[("METADATA_PROXY_MODE", "extension")],
                Err("needs AWS_LAMBDA_RUNTIME_API"),
            ),
            (
                &[("METADATA_PROXY_MODE", "daemon")],
                Err("auto, server or extension"),
            ),
        ];

        for (vars, expected) in cases {
            let mode = RunMode::from_env(&env(vars)).map_err(|e| e.to_string());
            match (&mode, &expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{vars:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{vars:?}: {got}"),
                _ => panic!("{vars:?}: got {mode:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn scope_lists_split_on_commas_and_spaces_sorted_without_duplicates() {
        assert_eq!(
            scope_list("https://b, https://a https://b,,"),
            ["https://a", "https://b"]
        );
        assert!(scope_list(" , ").is_empty());
    }
}
