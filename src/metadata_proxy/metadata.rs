//! The Compute Engine metadata API, as much of it as Google's client libraries read.
//!
//! Served under `/computeMetadata/v1/`:
//!
//! - `instance/service-accounts/{default|EMAIL}/token` (`?scopes=a,b`): `{"access_token",
//!   "expires_in", "token_type"}`; `email`, `scopes`, `aliases`; the directory itself, as a
//!   listing or with `?recursive=true` as JSON (`{"aliases", "email", "scopes"}`)
//! - `project/project-id`, `project/numeric-project-id`
//! - `universe/universe-domain`
//! - the directories above them, and `/` (the ping of Python's and Node's libraries)
//!
//! Every request must carry `Metadata-Flavor: Google`, which a browser cannot send across
//! origins without a preflight the proxy never grants, and none may carry `X-Forwarded-For`,
//! which marks a request relayed from elsewhere: both refusals are 403, as on Compute Engine.
//! Unknown paths are 404; every answer carries `Metadata-Flavor: Google`.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::error::ProxyError;
use super::settings::{scope_list, ProxySettings};
use super::token_source::TokenSource;

/// The header clients must send and the server echoes.
pub const METADATA_FLAVOR: &str = "metadata-flavor";

/// The only value of [`METADATA_FLAVOR`] accepted.
pub const FLAVOR_GOOGLE: &str = "Google";

/// Paths longer than this are none of the proxy's.
const MAX_PATH_LEN: usize = 512;

/// More scopes than any client asks for; bounds the work one request can cause.
const MAX_SCOPES: usize = 32;

/// What a request asks for, after the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    /// `/`: the root, the ping of Google's libraries.
    Root,
    /// `/computeMetadata/`.
    Versions,
    /// `/computeMetadata/v1/`.
    V1,
    /// `instance/`.
    Instance,
    /// `instance/service-accounts/`.
    ServiceAccounts,
    /// `instance/service-accounts/{account}/`, or an item in it.
    ServiceAccount {
        /// `default` or an email, as written.
        account: String,
        /// `None` for the directory itself.
        item: Option<AccountItem>,
    },
    /// `project/`.
    Project,
    /// `project/project-id`.
    ProjectId,
    /// `project/numeric-project-id`.
    NumericProjectId,
    /// `universe/`.
    Universe,
    /// `universe/universe-domain`.
    UniverseDomain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccountItem {
    Aliases,
    Email,
    Scopes,
    Token,
    Identity,
}

impl Resource {
    fn parse(path: &str) -> Option<Self> {
        if path == "/" {
            return Some(Resource::Root);
        }
        let rest = path.strip_prefix("/computeMetadata")?;
        if rest.is_empty() || rest == "/" {
            return Some(Resource::Versions);
        }
        let rest = rest.strip_prefix("/v1")?;
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        // A directory answers with or without its trailing slash.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let resource = match parts.as_slice() {
            [] => Resource::V1,
            ["instance"] => Resource::Instance,
            ["instance", "service-accounts"] => Resource::ServiceAccounts,
            ["instance", "service-accounts", account] => Resource::ServiceAccount {
                account: (*account).to_owned(),
                item: None,
            },
            ["instance", "service-accounts", account, item] => Resource::ServiceAccount {
                account: (*account).to_owned(),
                item: Some(match *item {
                    "aliases" => AccountItem::Aliases,
                    "email" => AccountItem::Email,
                    "scopes" => AccountItem::Scopes,
                    "token" => AccountItem::Token,
                    "identity" => AccountItem::Identity,
                    _ => return None,
                }),
            },
            ["project"] => Resource::Project,
            ["project", "project-id"] => Resource::ProjectId,
            ["project", "numeric-project-id"] => Resource::NumericProjectId,
            ["universe"] => Resource::Universe,
            ["universe", "universe-domain"] => Resource::UniverseDomain,
            _ => return None,
        };
        if let Resource::ServiceAccount { account, .. } = &resource {
            if account.is_empty() {
                return None;
            }
        }
        Some(resource)
    }
}

/// An answer, before it becomes an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body; never a secret but in a token answer.
    pub body: String,
    /// `Retry-After`, for transient failures.
    pub retry_after: Option<u64>,
    /// `Allow`, for a wrong method.
    pub allow: Option<&'static str>,
    /// Whether the answer holds a token, and so must not be cached by anything in between.
    pub no_store: bool,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "application/text",
            body: body.into(),
            retry_after: None,
            allow: None,
            no_store: false,
        }
    }

    fn json(body: &Value) -> Self {
        Self {
            content_type: "application/json",
            ..Self::text(200, body.to_string())
        }
    }

    fn listing(entries: &[&str]) -> Self {
        let mut body = entries.join("\n");
        body.push('\n');
        Self::text(200, body)
    }

    fn not_found() -> Self {
        Self::text(
            404,
            "Not found: gcp-metadata-proxy serves service account tokens, the project and the \
             universe domain only.\n",
        )
    }

    fn failure(error: &ProxyError) -> Self {
        let mut body = format!("gcp-metadata-proxy: {error}");
        if let Some(hint) = error.hint() {
            body.push_str(". Hint: ");
            body.push_str(hint);
        }
        body.push('\n');
        Self {
            retry_after: error.retry_after(),
            ..Self::text(error.status(), body)
        }
    }
}

/// A request as the metadata API sees it.
#[derive(Debug, Clone, Copy)]
pub struct MetadataRequest<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path, percent-encoded as received.
    pub path: &'a str,
    /// The query without `?`.
    pub query: Option<&'a str>,
    /// The `Metadata-Flavor` header, if present and text.
    pub flavor: Option<&'a str>,
    /// Whether the request carries `X-Forwarded-For`.
    pub forwarded: bool,
}

/// The query parameters the API understands.
#[derive(Debug, Default)]
struct Query {
    recursive: bool,
    scopes: Vec<String>,
    wait_for_change: bool,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Query::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "recursive" => parsed.recursive = value.eq_ignore_ascii_case("true"),
                "scopes" => parsed.scopes.extend(scope_list(&value)),
                "wait_for_change" => parsed.wait_for_change = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        parsed.scopes.sort();
        parsed.scopes.dedup();
        parsed
    }
}

/// The metadata API over a [`TokenSource`].
#[derive(Debug)]
pub struct MetadataService {
    tokens: TokenSource,
    project_id: Option<String>,
    numeric_project_id: Option<String>,
    universe_domain: String,
}

impl MetadataService {
    /// The API answering from `tokens` and the project settings of `settings`.
    pub fn new(tokens: TokenSource, settings: &ProxySettings) -> Self {
        Self {
            tokens,
            project_id: settings.project_id.clone(),
            numeric_project_id: settings.numeric_project_id.clone(),
            universe_domain: settings.universe_domain.clone(),
        }
    }

    /// Answers one request. Never fails: every problem becomes an error answer, logged once.
    pub async fn answer(&self, request: MetadataRequest<'_>) -> Answer {
        let refused = |status: u16, reason: &'static str, body: &'static str| {
            tracing::info!(event = "request_refused", status, reason, path = %clip(request.path));
            Answer::text(status, body)
        };
        if request.forwarded {
            return refused(
                403,
                "X-Forwarded-For present",
                "Requests relayed with X-Forwarded-For are refused.\n",
            );
        }
        if request.flavor != Some(FLAVOR_GOOGLE) {
            return refused(
                403,
                "Metadata-Flavor missing",
                "Missing required header: Metadata-Flavor: Google\n",
            );
        }
        if request.method != "GET" {
            let mut answer = refused(405, "method not allowed", "Only GET is served.\n");
            answer.allow = Some("GET");
            return answer;
        }
        let resource = (request.path.len() <= MAX_PATH_LEN)
            .then(|| Resource::parse(request.path))
            .flatten();
        let Some(resource) = resource else {
            tracing::debug!(event = "not_found", path = %clip(request.path));
            return Answer::not_found();
        };
        let query = Query::parse(request.query);
        if query.wait_for_change {
            return refused(
                400,
                "wait_for_change",
                "wait_for_change is not supported: these values do not change.\n",
            );
        }
        if query.scopes.len() > MAX_SCOPES {
            return refused(400, "too many scopes", "Too many scopes.\n");
        }

        match self.resource(&resource, &query).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(
                    event = "token_failed",
                    status = error.status(),
                    transient = error.is_transient(),
                    error = %error,
                );
                Answer::failure(&error)
            }
        }
    }

    async fn resource(&self, resource: &Resource, query: &Query) -> Result<Answer, ProxyError> {
        Ok(match resource {
            Resource::Root => Answer::listing(&["computeMetadata/"]),
            Resource::Versions => Answer::listing(&["v1/"]),
            Resource::V1 if query.recursive => Answer::json(&json!({
                "instance": self.instance_tree().await?,
                "project": self.project_tree().await?,
                "universe": self.universe_tree(),
            })),
            Resource::V1 => Answer::listing(&["instance/", "project/", "universe/"]),
            Resource::Instance if query.recursive => Answer::json(&self.instance_tree().await?),
            Resource::Instance => Answer::listing(&["service-accounts/"]),
            Resource::ServiceAccounts if query.recursive => {
                Answer::json(&self.accounts_tree().await?)
            }
            Resource::ServiceAccounts => {
                let email = format!("{}/", self.tokens.service_account().await?);
                Answer::listing(&["default/", &email])
            }
            Resource::ServiceAccount { account, item } => {
                if !self.is_our_account(account).await? {
                    return Ok(Answer::not_found());
                }
                self.account_item(*item, query).await?
            }
            Resource::Project if query.recursive => Answer::json(&self.project_tree().await?),
            Resource::Project => Answer::listing(&["numeric-project-id", "project-id"]),
            Resource::ProjectId => match self.project_id().await? {
                Some(project) => Answer::text(200, project),
                None => Answer::not_found(),
            },
            Resource::NumericProjectId => match &self.numeric_project_id {
                Some(number) => Answer::text(200, number.clone()),
                None => Answer::not_found(),
            },
            Resource::Universe if query.recursive => Answer::json(&self.universe_tree()),
            Resource::Universe => Answer::listing(&["universe-domain"]),
            Resource::UniverseDomain => Answer::text(200, self.universe_domain.clone()),
        })
    }

    async fn account_item(
        &self,
        item: Option<AccountItem>,
        query: &Query,
    ) -> Result<Answer, ProxyError> {
        Ok(match item {
            None if query.recursive => Answer::json(&self.account_tree().await?),
            None => Answer::listing(&["aliases", "email", "scopes", "token"]),
            Some(AccountItem::Aliases) => Answer::text(200, "default"),
            Some(AccountItem::Email) => Answer::text(200, self.tokens.service_account().await?),
            Some(AccountItem::Scopes) => {
                let mut scopes = self.tokens.default_scopes().await?.join("\n");
                scopes.push('\n');
                Answer::text(200, scopes)
            }
            Some(AccountItem::Token) => self.token(&query.scopes).await?,
            // Limitation: identity (OIDC) tokens are not served, because the broker issues
            // access tokens only; clients get the 404 they get for an unknown path.
            Some(AccountItem::Identity) => Answer::not_found(),
        })
    }

    async fn token(&self, scopes: &[String]) -> Result<Answer, ProxyError> {
        let started = Instant::now();
        let (token, outcome) = self.tokens.token(scopes).await?;
        let expires_in = token
            .expires_at
            .duration_since(self.tokens.clock().now())
            .unwrap_or(Duration::ZERO)
            .as_secs();
        tracing::info!(
            event = "token_served",
            cache = outcome.as_str(),
            scopes = ?scopes,
            expires_in,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
        let body = json!({
            "access_token": token.token.expose(),
            "expires_in": expires_in,
            "token_type": "Bearer",
        });
        Ok(Answer {
            no_store: true,
            ..Answer::json(&body)
        })
    }

    async fn is_our_account(&self, account: &str) -> Result<bool, ProxyError> {
        if account == "default" {
            return Ok(true);
        }
        Ok(self
            .tokens
            .service_account()
            .await?
            .eq_ignore_ascii_case(account))
    }

    /// `METADATA_PROXY_PROJECT_ID` (or `GOOGLE_CLOUD_PROJECT`), else the project of a
    /// user-managed service account, `NAME@PROJECT.iam.gserviceaccount.com`.
    async fn project_id(&self) -> Result<Option<String>, ProxyError> {
        if let Some(project) = &self.project_id {
            return Ok(Some(project.clone()));
        }
        let account = self.tokens.service_account().await?;
        Ok(account
            .split_once('@')
            .and_then(|(_, domain)| domain.strip_suffix(".iam.gserviceaccount.com"))
            .filter(|project| !project.is_empty())
            .map(str::to_owned))
    }

    async fn account_tree(&self) -> Result<Value, ProxyError> {
        Ok(json!({
            "aliases": ["default"],
            "email": self.tokens.service_account().await?,
            "scopes": self.tokens.default_scopes().await?,
        }))
    }

    async fn accounts_tree(&self) -> Result<Value, ProxyError> {
        let account = self.account_tree().await?;
        let email = self.tokens.service_account().await?;
        let mut tree = Map::new();
        tree.insert("default".into(), account.clone());
        tree.insert(email, account);
        Ok(Value::Object(tree))
    }

    async fn instance_tree(&self) -> Result<Value, ProxyError> {
        Ok(json!({ "serviceAccounts": self.accounts_tree().await? }))
    }

    async fn project_tree(&self) -> Result<Value, ProxyError> {
        let mut tree = Map::new();
        if let Some(project) = self.project_id().await? {
            tree.insert("projectId".into(), project.into());
        }
        if let Some(number) = &self.numeric_project_id {
            let number = number
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(number.as_str()));
            tree.insert("numericProjectId".into(), number);
        }
        Ok(Value::Object(tree))
    }

    fn universe_tree(&self) -> Value {
        json!({ "universeDomain": self.universe_domain })
    }
}

/// A path fit for a log line: at most 128 characters, no control characters.
fn clip(path: &str) -> String {
    path.chars().filter(|c| !c.is_control()).take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_resources_with_or_without_a_trailing_slash() {
        let account = |account: &str, item| Resource::ServiceAccount {
            account: account.to_owned(),
            item,
        };
        let cases = [
            ("/", Some(Resource::Root)),
            ("/computeMetadata/", Some(Resource::Versions)),
            ("/computeMetadata/v1/", Some(Resource::V1)),
            ("/computeMetadata/v1", Some(Resource::V1)),
            ("/computeMetadata/v1/instance", Some(Resource::Instance)),
            (
                "/computeMetadata/v1/instance/service-accounts/",
                Some(Resource::ServiceAccounts),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/default/",
                Some(account("default", None)),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/default/token",
                Some(account("default", Some(AccountItem::Token))),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/email",
                Some(account(
                    "sa@p.iam.gserviceaccount.com",
                    Some(AccountItem::Email),
                )),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/default/identity",
                Some(account("default", Some(AccountItem::Identity))),
            ),
            (
                "/computeMetadata/v1/project/project-id",
                Some(Resource::ProjectId),
            ),
            (
                "/computeMetadata/v1/project/numeric-project-id",
                Some(Resource::NumericProjectId),
            ),
            (
                "/computeMetadata/v1/universe/universe-domain",
                Some(Resource::UniverseDomain),
            ),
            ("/computeMetadata/v1/instance/hostname", None),
            (
                "/computeMetadata/v1/instance/service-accounts/default/keys",
                None,
            ),
            ("/computeMetadata/v1/instance/service-accounts//token", None),
            ("/computeMetadata/v2/project/project-id", None),
            ("/computeMetadataX", None),
            ("/token", None),
        ];

        for (path, expected) in cases {
            assert_eq!(Resource::parse(path), expected, "{path}");
        }
    }

    #[test]
    fn queries_give_recursion_and_sorted_scopes() {
        let query = Query::parse(Some(
            "recursive=True&scopes=https%3A%2F%2Fb,https%3A%2F%2Fa&scopes=https://a&alt=json",
        ));

        assert!(query.recursive);
        assert_eq!(query.scopes, ["https://a", "https://b"]);
        assert!(!query.wait_for_change);
        assert!(Query::parse(Some("wait_for_change=true")).wait_for_change);
        assert!(!Query::parse(None).recursive);
    }

    #[test]
    fn failures_become_text_answers_with_status_hint_and_retry_after() {
        let answer = Answer::failure(&ProxyError::Refused {
            status: 403,
            message: "The caller is not authorized to use this broker.".into(),
            retry_after: None,
        });
        assert_eq!(answer.status, 403);
        assert!(answer.body.contains("not authorized"), "{}", answer.body);
        assert!(
            answer.body.contains("BROKER_ALLOWED_CALLERS"),
            "{}",
            answer.body
        );

        let answer = Answer::failure(&ProxyError::Timeout(30));
        assert_eq!((answer.status, answer.retry_after), (503, Some(1)));
    }

    /// A service whose broker is never reached: the port is closed.
    fn offline_service(extra: &[(&str, &str)]) -> MetadataService {
        use crate::aws_credentials::AwsCredentialSource;
        use crate::clock::{SharedClock, SystemClock};
        use aws_credential_types::provider::SharedCredentialsProvider;
        use aws_credential_types::Credentials;
        use std::sync::Arc;

        let mut env: std::collections::HashMap<String, String> = [
            ("METADATA_PROXY_TOKEN_URL", "http://127.0.0.1:9/token"),
            ("METADATA_PROXY_SIGNING_SERVICE", "lambda"),
            ("METADATA_PROXY_REGION", "us-east-1"),
            (
                "METADATA_PROXY_SERVICE_ACCOUNT",
                "app@my-project.iam.gserviceaccount.com",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = ProxySettings::from_env(&env).expect("valid settings");
        let clock: SharedClock = Arc::new(SystemClock);
        let provider =
            SharedCredentialsProvider::new(Credentials::new("AKID", "secret", None, None, "test"));
        let credentials = AwsCredentialSource::new(provider, clock.clone());
        let broker =
            super::super::broker_client::BrokerClient::new(&settings, credentials, clock.clone())
                .expect("a client");
        MetadataService::new(TokenSource::new(broker, &settings, clock), &settings)
    }

    fn get(path: &str) -> MetadataRequest<'_> {
        MetadataRequest {
            method: "GET",
            path,
            query: None,
            flavor: Some(FLAVOR_GOOGLE),
            forwarded: false,
        }
    }

    #[tokio::test]
    async fn the_project_comes_from_the_setting_else_from_the_service_account_email() {
        let cases = [
            (&[][..], 200, "my-project"),
            (
                &[("METADATA_PROXY_PROJECT_ID", "billing-project")][..],
                200,
                "billing-project",
            ),
            (
                &[("GOOGLE_CLOUD_PROJECT", "env-project")][..],
                200,
                "env-project",
            ),
            (
                &[(
                    "METADATA_PROXY_SERVICE_ACCOUNT",
                    "123-compute@developer.gserviceaccount.com",
                )][..],
                404,
                "",
            ),
        ];

        for (extra, status, project) in cases {
            let answer = offline_service(extra)
                .answer(get("/computeMetadata/v1/project/project-id"))
                .await;

            assert_eq!(answer.status, status, "{extra:?}: {}", answer.body);
            if status == 200 {
                assert_eq!(answer.body, project, "{extra:?}");
            }
        }
    }

    #[tokio::test]
    async fn checks_come_before_anything_else_and_name_no_secret() {
        let service = offline_service(&[]);
        let path = "/computeMetadata/v1/instance/service-accounts/default/token";
        let cases = [
            (
                MetadataRequest {
                    flavor: None,
                    ..get(path)
                },
                403,
                None,
            ),
            (
                MetadataRequest {
                    flavor: Some("google"),
                    ..get(path)
                },
                403,
                None,
            ),
            (
                MetadataRequest {
                    forwarded: true,
                    ..get(path)
                },
                403,
                None,
            ),
            (
                MetadataRequest {
                    method: "PUT",
                    ..get(path)
                },
                405,
                Some("GET"),
            ),
            (
                MetadataRequest {
                    path: "/computeMetadata/v1/instance/zone",
                    ..get(path)
                },
                404,
                None,
            ),
            (
                MetadataRequest {
                    query: Some("wait_for_change=true"),
                    ..get(path)
                },
                400,
                None,
            ),
        ];

        for (request, status, allow) in cases {
            let answer = service.answer(request).await;

            assert_eq!(
                (answer.status, answer.allow),
                (status, allow),
                "{request:?}"
            );
            assert!(!answer.no_store, "{request:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_a_transient_503_on_the_token_path_only() {
        let service = offline_service(&[("METADATA_PROXY_NUMERIC_PROJECT_ID", "42")]);

        let token = service
            .answer(get(
                "/computeMetadata/v1/instance/service-accounts/default/token",
            ))
            .await;
        let email = service
            .answer(get(
                "/computeMetadata/v1/instance/service-accounts/default/email",
            ))
            .await;
        let number = service
            .answer(get("/computeMetadata/v1/project/numeric-project-id"))
            .await;

        assert_eq!(
            (token.status, token.retry_after),
            (503, Some(1)),
            "{}",
            token.body
        );
        assert!(
            token.body.contains("the broker is unreachable"),
            "{}",
            token.body
        );
        assert_eq!(
            (email.status, email.body.as_str()),
            (200, "app@my-project.iam.gserviceaccount.com")
        );
        assert_eq!((number.status, number.body.as_str()), (200, "42"));
    }
}
