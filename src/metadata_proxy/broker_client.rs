//! The proxy's call to the broker: `POST /token`, SigV4-signed with the workload's own AWS
//! credentials, exactly as any other IAM caller of the broker signs it.
//!
//! A Function URL checks service `lambda`, an API Gateway route `execute-api`; either way AWS
//! verifies the signature before the broker runs, and the broker sees the workload's role in
//! the request context.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::Deserialize;
use url::Url;

use super::error::ProxyError;
use super::settings::{ProxySettings, SigningService};
use crate::aws_credentials::AwsCredentialSource;
use crate::clock::SharedClock;
use crate::impersonation::AccessToken;
use crate::secret::SecretString;

/// The longest refusal message kept from the broker: enough for its sentence and hint.
const MAX_MESSAGE_CHARS: usize = 300;

/// The broker's answer is a few hundred bytes; anything much larger is not its answer.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the proxy asks the broker for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRequest {
    /// Scopes, sorted; `None` asks for the broker's default.
    pub scopes: Option<Vec<String>>,
    /// Lifetime; `None` asks for the broker's default.
    pub lifetime_seconds: Option<u32>,
}

impl BrokerRequest {
    /// The JSON body of the request.
    fn body(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        if let Some(scopes) = &self.scopes {
            body.insert("scopes".into(), scopes.clone().into());
        }
        if let Some(lifetime) = self.lifetime_seconds {
            body.insert("lifetime_seconds".into(), lifetime.into());
        }
        body.into()
    }
}

/// A token from the broker, with what the broker said about it.
#[derive(Debug, Clone)]
pub struct BrokerToken {
    /// The access token and when it expires.
    pub token: AccessToken,
    /// The service account the token belongs to, when the broker named it.
    pub service_account: Option<String>,
    /// The scopes the token carries, when the broker named them.
    pub scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
    service_account: Option<String>,
    scopes: Option<Vec<String>>,
}

/// Calls the broker's token route.
#[derive(Debug)]
pub struct BrokerClient {
    http: reqwest::Client,
    token_url: Url,
    /// The `host` header as sent, port included when not the scheme's default.
    host: String,
    service: SigningService,
    region: String,
    credentials: AwsCredentialSource,
    clock: SharedClock,
    timeout: Duration,
}

impl BrokerClient {
    /// A client for the broker named by `settings`, signing with `credentials`.
    pub fn new(
        settings: &ProxySettings,
        credentials: AwsCredentialSource,
        clock: SharedClock,
    ) -> Result<Self, ProxyError> {
        let host = match (settings.token_url.host_str(), settings.token_url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(ProxyError::Signing("the token URL has no host")),
        };
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            // The answer is a bearer token: never follow it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| ProxyError::Signing("the HTTP client could not be built"))?;
        Ok(Self {
            http,
            token_url: settings.token_url.clone(),
            host,
            service: settings.signing_service,
            region: settings.region.clone(),
            credentials,
            clock,
            timeout: settings.timeout,
        })
    }

    /// Asks the broker for a token.
    pub async fn token(&self, request: &BrokerRequest) -> Result<BrokerToken, ProxyError> {
        let credentials = self
            .credentials
            .credentials()
            .await
            .map_err(ProxyError::AwsCredentials)?;
        let body = request.body().to_string().into_bytes();
        let signed = signed_headers(
            &self.token_url,
            &self.host,
            self.service,
            &self.region,
            &body,
            &credentials,
            self.clock.now(),
        )?;

        let mut call = self
            .http
            .post(self.token_url.clone())
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in &signed {
            call = call.header(name.as_str(), value.expose());
        }
        let mut response = call.send().await.map_err(|e| self.transport(e))?;

        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ProxyError::Malformed(format!(
                    "HTTP {status} with a body over {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status != 200 {
            return Err(ProxyError::Refused {
                status,
                message: refusal_message(&bytes),
                retry_after,
            });
        }

        let answer: TokenAnswer = serde_json::from_slice(&bytes).map_err(|e| {
            ProxyError::Malformed(format!(
                "expected {{\"access_token\", \"expires_in\", ...}} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        Ok(BrokerToken {
            token: AccessToken {
                token: SecretString::new(answer.access_token),
                expires_at: self.clock.now() + Duration::from_secs(answer.expires_in),
            },
            service_account: answer.service_account,
            scopes: answer.scopes,
        })
    }

    fn transport(&self, error: reqwest::Error) -> ProxyError {
        if error.is_timeout() {
            ProxyError::Timeout(self.timeout.as_secs())
        } else {
            ProxyError::Unreachable(error.without_url().to_string())
        }
    }
}

/// The headers that sign a `POST` of `body` to `url` for `service` in `region` at `now`:
/// `authorization`, `x-amz-date` and, with temporary credentials, `x-amz-security-token`.
///
/// The `host` and `content-type` the request carries are signed too.
fn signed_headers(
    url: &Url,
    host: &str,
    service: SigningService,
    region: &str,
    body: &[u8],
    credentials: &Credentials,
    now: SystemTime,
) -> Result<Vec<(String, SecretString)>, ProxyError> {
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service.as_str())
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| ProxyError::Signing("incomplete signing parameters"))?
        .into();
    let unsigned = [("host", host), ("content-type", "application/json")];
    let request = SignableRequest::new(
        "POST",
        url.as_str(),
        unsigned.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|_| ProxyError::Signing("the token URL is not a valid request URI"))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|_| ProxyError::Signing("the signer refused the request"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), SecretString::new(value)))
        .collect())
}

/// The explanation in a refusal: the broker's Google envelope (`error.message`), or the
/// `Message` of Lambda's and API Gateway's own refusals; clipped, one line.
fn refusal_message(body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = json.as_ref().and_then(|json| {
        json.pointer("/error/message")
            .or_else(|| json.get("Message"))
            .or_else(|| json.get("message"))
            .and_then(serde_json::Value::as_str)
    });
    let text = match message {
        Some(message) => message.to_owned(),
        None if body.is_empty() => "no explanation".to_owned(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn requests_are_signed_for_the_service_and_region_with_host_and_content_type() {
        let url = Url::parse("https://abc.lambda-url.eu-west-1.on.aws/token").expect("url");
        let cases = [
            (SigningService::Lambda, "lambda"),
            (SigningService::ExecuteApi, "execute-api"),
        ];
        for (service, name) in cases {
            let credentials = Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                Some("session".into()),
                None,
                "test",
            );

            let headers = signed_headers(
                &url,
                "abc.lambda-url.eu-west-1.on.aws",
                service,
                "eu-west-1",
                b"{}",
                &credentials,
                instant(1_793_715_727),
            )
            .expect("signs");

            let get = |wanted: &str| {
                headers
                    .iter()
                    .find(|(header, _)| header == wanted)
                    .map(|(_, value)| value.expose().to_owned())
                    .unwrap_or_else(|| panic!("{name}: no {wanted} in {headers:?}"))
            };
            let authorization = get("authorization");
            assert!(
                authorization.starts_with(&format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261103/eu-west-1/{name}/aws4_request, \
                     SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
                )),
                "{authorization}"
            );
            assert_eq!(get("x-amz-date"), "20261103T142207Z");
            assert_eq!(get("x-amz-security-token"), "session");
            assert!(
                !format!("{headers:?}").contains("session"),
                "secrets must be redacted in Debug"
            );
        }
    }

    #[test]
    fn refusal_messages_come_from_each_envelope_clipped_to_one_line() {
        let long = "x".repeat(1000);
        let cases = [
            (
                r#"{"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "not allowed"}}"#.to_owned(),
                "not allowed".to_owned(),
            ),
            (r#"{"Message": "Forbidden"}"#.to_owned(), "Forbidden".to_owned()),
            (r#"{"message": "Unauthorized"}"#.to_owned(), "Unauthorized".to_owned()),
            ("plain\ntext".to_owned(), "plain text".to_owned()),
            (String::new(), "no explanation".to_owned()),
            (long, "x".repeat(MAX_MESSAGE_CHARS)),
        ];

        for (body, expected) in cases {
            assert_eq!(refusal_message(body.as_bytes()), expected, "{body}");
        }
    }

    #[test]
    fn request_bodies_name_only_what_was_asked() {
        let cases = [
            (None, None, "{}"),
            (
                Some(vec!["https://a".to_owned()]),
                Some(1800),
                r#"{"lifetime_seconds":1800,"scopes":["https://a"]}"#,
            ),
        ];
        for (scopes, lifetime_seconds, expected) in cases {
            let request = BrokerRequest {
                scopes,
                lifetime_seconds,
            };

            assert_eq!(request.body().to_string(), expected);
        }
    }
}
