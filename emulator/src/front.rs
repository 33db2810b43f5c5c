//! A local Lambda Function URL with `AuthType: AWS_IAM`, in front of a Lambda Runtime API
//! emulator (cargo-lambda's `cargo lambda watch`).
//!
//! A caller signs its request with SigV4 for service `lambda`, exactly as it would sign a
//! request to `https://<id>.lambda-url.<region>.on.aws`. The front checks the signature with
//! the configured AWS keys (the same check the emulated STS applies to subject tokens), turns
//! the request into a Function URL event (payload format 2.0) whose
//! `requestContext.authorizer.iam` names the IAM principal the access key belongs to, invokes
//! the function through the runtime emulator's invoke endpoint, and answers with what the
//! function returned: a buffered answer (`{"statusCode", "headers", "body", ...}`) becomes the
//! HTTP response, a streamed one passes through as it arrives.
//!
//! ```no_run
//! use gcp_wif_emulator::{spawn_front, FrontConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // `cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P 9000` serves the function.
//! let front = spawn_front(
//!     FrontConfig::new("http://127.0.0.1:9000"),
//!     "127.0.0.1:0".parse().unwrap(),
//! )
//! .await?;
//! // Callers sign for service "lambda", region "us-east-1", with the emulator's test key, and
//! // the function sees arn:aws:sts::123456789012:assumed-role/app-role/app-session.
//! println!("{}/token", front.url());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};
use time::macros::format_description;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{
    AwsKey, DEFAULT_ACCESS_KEY_ID, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_SECRET_ACCESS_KEY,
};
use crate::serving::Serving;
use crate::sigv4::{self, ExpectedScope, SignedRequest};

/// The IAM principal the built-in test key ([`DEFAULT_ACCESS_KEY_ID`]) stands for: a session
/// of the role the sample events name, so a broker allowing `role/app-role` admits it.
pub const DEFAULT_CALLER_ARN: &str = "arn:aws:sts::123456789012:assumed-role/app-role/app-session";

/// The region callers sign for unless configured otherwise.
pub const DEFAULT_FRONT_REGION: &str = "us-east-1";

/// The function name in the invoke path unless configured otherwise: cargo-lambda's runtime
/// emulator serves a binary started on its own under the name `_`.
pub const DEFAULT_FUNCTION_NAME: &str = "_";

/// The largest request body: Lambda refuses synchronous payloads over 6 MB.
const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// The largest buffered answer read from the runtime emulator; Lambda's limit too.
const MAX_ANSWER_BYTES: usize = 6 * 1024 * 1024;

/// Headers of the runtime emulator's own answer that are not the function's.
const RUNTIME_HEADERS: [&str; 8] = [
    "lambda-runtime-function-response-mode",
    "vary",
    "access-control-allow-credentials",
    "access-control-allow-origin",
    "transfer-encoding",
    "content-length",
    "connection",
    "date",
];

/// Marks a streamed answer from cargo-lambda's invoke endpoint.
const STREAMING_MODE_HEADER: &str = "lambda-runtime-function-response-mode";

/// The `requestContext.time` format of Function URL events, `03/Nov/2026:14:22:07 +0000`.
const EVENT_TIME: &[time::format_description::FormatItem<'static>] =
    format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");

/// An access key and the IAM principal (user, role session) it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamCaller {
    /// The access key id a request is signed with.
    pub access_key_id: String,
    /// The principal's ARN, what `requestContext.authorizer.iam.userArn` carries.
    pub arn: String,
}

impl IamCaller {
    /// The caller `arn` signing with `access_key_id`.
    pub fn new(access_key_id: impl Into<String>, arn: impl Into<String>) -> Self {
        IamCaller {
            access_key_id: access_key_id.into(),
            arn: arn.into(),
        }
    }

    /// The account id of the ARN (its fifth field), empty when it has none.
    fn account_id(&self) -> &str {
        self.arn.split(':').nth(4).unwrap_or_default()
    }

    /// The principal's unique id as Function URL events write it: `KEY:SESSION` for a role
    /// session, the access key id otherwise.
    ///
    /// Limitation: AWS writes the role's own id (`AROA...`) before the session name, because
    /// only IAM knows it; the access key id stands in for it.
    fn user_id(&self) -> String {
        match self.arn.split_once(":assumed-role/") {
            Some((_, role_session)) => match role_session.split_once('/') {
                Some((_, session)) => format!("{}:{session}", self.access_key_id),
                None => self.access_key_id.clone(),
            },
            None => self.access_key_id.clone(),
        }
    }
}

/// Why an `ACCESS_KEY_ID=ARN` string is not a caller.
#[derive(Debug, thiserror::Error)]
#[error("a caller must be written ACCESS_KEY_ID=arn:aws:... with neither half empty")]
pub struct InvalidIamCaller;

impl FromStr for IamCaller {
    type Err = InvalidIamCaller;

    /// Parses `ACCESS_KEY_ID=ARN`, splitting at the first `=`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((key, arn)) if !key.is_empty() && arn.starts_with("arn:") => {
                Ok(IamCaller::new(key, arn))
            }
            _ => Err(InvalidIamCaller),
        }
    }
}

/// What the front accepts and where it sends invocations.
#[derive(Clone, Debug)]
pub struct FrontConfig {
    /// The runtime emulator's base URL (`http://127.0.0.1:9000`); invocations go to
    /// `{invoke_url}/2015-03-31/functions/{function_name}/invocations`.
    pub invoke_url: String,
    /// The function to invoke.
    pub function_name: String,
    /// The key pairs whose signatures are accepted; any other access key id is refused.
    pub aws_keys: Vec<AwsKey>,
    /// Who each access key belongs to; a valid signature by a key not listed here is refused.
    pub callers: Vec<IamCaller>,
    /// The region callers must sign for, as in a Function URL's host name.
    pub region: String,
    /// How far `x-amz-date` may be from [`clock`](Self::clock).
    pub max_clock_skew: Duration,
    /// Where the front reads the time.
    pub clock: Clock,
}

impl FrontConfig {
    /// The front of the function served at `invoke_url`, with the built-in test key standing
    /// for [`DEFAULT_CALLER_ARN`], region [`DEFAULT_FRONT_REGION`] and the system clock.
    pub fn new(invoke_url: impl Into<String>) -> Self {
        FrontConfig {
            invoke_url: invoke_url.into(),
            function_name: DEFAULT_FUNCTION_NAME.to_string(),
            aws_keys: vec![AwsKey::new(
                DEFAULT_ACCESS_KEY_ID,
                DEFAULT_SECRET_ACCESS_KEY,
            )],
            callers: vec![IamCaller::new(DEFAULT_ACCESS_KEY_ID, DEFAULT_CALLER_ARN)],
            region: DEFAULT_FRONT_REGION.to_string(),
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            clock: Clock::System,
        }
    }

    fn invocations_url(&self) -> String {
        format!(
            "{}/2015-03-31/functions/{}/invocations",
            self.invoke_url.trim_end_matches('/'),
            self.function_name
        )
    }
}

struct Front {
    config: FrontConfig,
    http: reqwest::Client,
}

/// Binds `addr` (port 0 picks a free port) and serves the front on it in a tokio task.
///
/// # Errors
///
/// The address cannot be bound.
pub async fn spawn_front(config: FrontConfig, addr: SocketAddr) -> io::Result<RunningFront> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let front = Arc::new(Front {
        config,
        // Streams last as long as the function streams; the front sets no deadline of its own.
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(io::Error::other)?,
    });
    let app = Router::new().fallback(serve).with_state(front);
    let serving = Serving::spawn(|stop| async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
    });
    Ok(RunningFront {
        local_addr,
        serving,
    })
}

/// A running front. Dropping it stops the server at once; [`shutdown`](Self::shutdown) lets
/// requests in flight finish first.
pub struct RunningFront {
    local_addr: SocketAddr,
    serving: Serving,
}

impl RunningFront {
    /// The address the front listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://IP:PORT`, without a trailing slash: the local stand-in for a Function URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting connections, waits for requests in flight, and reports how serving
    /// ended.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.serving.shutdown().await
    }
}

impl fmt::Debug for RunningFront {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningFront")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// A request as received, in the shape the SigV4 check reads.
struct Incoming {
    method: String,
    path: String,
    query: String,
    /// Names in lowercase, in the order received.
    headers: Vec<(String, String)>,
    host: String,
    body: Bytes,
}

impl SignedRequest for Incoming {
    fn method(&self) -> &str {
        &self.method
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn query(&self) -> &str {
        &self.query
    }

    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn host(&self) -> String {
        self.host.clone()
    }

    fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A refusal in the shape Lambda's front end answers: `{"Message": "..."}` and the error type
/// in `x-amzn-ErrorType`.
fn refusal(status: StatusCode, error_type: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "Message": message }))).into_response();
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

async fn serve(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        info!(
            event = "front_refused",
            reason = "body too large",
            "request refused"
        );
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLargeException",
            "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
        );
    };
    let mut headers = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else {
            return refusal(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                "Header values must be visible ASCII.",
            );
        };
        headers.push((name.as_str().to_string(), value.to_string()));
    }
    // HTTP/1.1 names the authority in `Host`, HTTP/2 in the URI.
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            headers
                .iter()
                .find(|(name, _)| name == "host")
                .map(|(_, value)| value.clone())
        })
        .unwrap_or_default();
    let incoming = Incoming {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        host,
        headers,
        body,
    };

    let config = &front.config;
    let scope = ExpectedScope {
        service: "lambda",
        region: Some(&config.region),
    };
    let now = config.clock.now();
    let signer = match sigv4::verify_request(
        &incoming,
        scope,
        &config.aws_keys,
        now,
        config.max_clock_skew,
    ) {
        Ok(signer) => signer,
        Err(error) => {
            info!(
                event = "front_refused",
                error_type = error.aws_error_type(),
                reason = %error,
                "request refused"
            );
            return refusal(
                StatusCode::FORBIDDEN,
                error.aws_error_type(),
                &error.to_string(),
            );
        }
    };
    let Some(caller) = config
        .callers
        .iter()
        .find(|caller| caller.access_key_id == signer.access_key_id)
    else {
        info!(
            event = "front_refused",
            access_key_id = %signer.access_key_id,
            reason = "no IAM identity is configured for this access key (--front-caller)",
            "request refused"
        );
        return refusal(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "Forbidden: the emulator knows no IAM identity for this access key.",
        );
    };

    let request_id = format!("{:032x}", rand::random::<u128>());
    let event = function_url_event(&incoming, caller, &request_id, peer, now, &config.region);
    info!(
        event = "front_invoke",
        caller = %caller.arn,
        method = %incoming.method,
        path = %incoming.path,
        request_id = %request_id,
        "invoking the function"
    );
    let answer = front
        .http
        .post(config.invocations_url())
        .header("content-type", "application/json")
        .body(event.to_string())
        .send()
        .await;
    let mut response = match answer {
        Ok(answer) => relay(answer).await,
        Err(error) => {
            warn!(
                event = "front_invoke_failed",
                error = %error.without_url(),
                "the runtime emulator is unreachable"
            );
            refusal(
                StatusCode::BAD_GATEWAY,
                "ServiceException",
                "Internal Server Error",
            )
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

/// The payload format 2.0 event a Function URL sends for `incoming` from `caller`.
fn function_url_event(
    incoming: &Incoming,
    caller: &IamCaller,
    request_id: &str,
    peer: SocketAddr,
    now: time::OffsetDateTime,
    region: &str,
) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &incoming.headers {
        if name == "cookie" {
            cookies.extend(value.split(';').map(|c| Value::from(c.trim())));
            continue;
        }
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::from(value.as_str()));
            }
        }
    }
    headers.insert("x-forwarded-for".into(), peer.ip().to_string().into());
    headers.insert("x-forwarded-proto".into(), "http".into());
    headers.insert("x-forwarded-port".into(), peer.port().to_string().into());

    let mut parameters = Map::new();
    for (key, value) in form_urlencoded::parse(incoming.query.as_bytes()) {
        match parameters.get_mut(key.as_ref()) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => {
                parameters.insert(key.into_owned(), Value::from(value.into_owned()));
            }
        }
    }

    let domain = if incoming.host.is_empty() {
        format!("emulated.lambda-url.{region}.on.aws")
    } else {
        incoming.host.clone()
    };
    let user_id = caller.user_id();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": incoming.path,
        "rawQueryString": incoming.query,
        "headers": headers,
        "requestContext": {
            "accountId": caller.account_id(),
            "apiId": "emulated",
            "authorizer": {"iam": {
                "accessKey": caller.access_key_id,
                "accountId": caller.account_id(),
                "callerId": user_id,
                "cognitoIdentity": null,
                "principalOrgId": null,
                "userArn": caller.arn,
                "userId": user_id,
            }},
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap_or_default(),
            "http": {
                "method": incoming.method,
                "path": incoming.path,
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": incoming.header("user-agent").unwrap_or_default(),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format(EVENT_TIME).unwrap_or_default(),
            "timeEpoch": now.unix_timestamp_nanos() / 1_000_000,
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !parameters.is_empty() {
        event["queryStringParameters"] = Value::Object(parameters);
    }
    if !incoming.body.is_empty() {
        match std::str::from_utf8(&incoming.body) {
            Ok(text) => event["body"] = Value::from(text),
            Err(_) => {
                event["body"] =
                    Value::from(base64::engine::general_purpose::STANDARD.encode(&incoming.body));
                event["isBase64Encoded"] = Value::Bool(true);
            }
        }
    }
    event
}

/// The function's answer as an HTTP response: a stream passes through, a buffered answer is
/// unpacked.
async fn relay(answer: reqwest::Response) -> Response {
    let streamed = answer.headers().contains_key(STREAMING_MODE_HEADER);
    if streamed {
        let mut response = Response::builder().status(answer.status().as_u16());
        for (name, value) in answer.headers() {
            if !RUNTIME_HEADERS.contains(&name.as_str()) {
                response = response.header(name.as_str(), value.as_bytes());
            }
        }
        let chunks = futures_util::stream::unfold(answer, |mut answer| async move {
            answer
                .chunk()
                .await
                .transpose()
                .map(|chunk| (chunk, answer))
        });
        return response
            .body(Body::from_stream(chunks))
            .unwrap_or_else(|_| bad_gateway("the function streamed an invalid prelude"));
    }

    if !answer.status().is_success() {
        warn!(
            event = "front_function_failed",
            status = answer.status().as_u16(),
            "the function failed"
        );
        return bad_gateway("the function failed");
    }
    let mut answer = answer;
    let mut bytes = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some(_)) => return bad_gateway("the function's answer is over 6 MB"),
            Ok(None) => break,
            Err(_) => return bad_gateway("the function's answer broke off"),
        }
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) if value.get("statusCode").is_some() => buffered(&value),
        // A function that answers plain JSON gets it sent as the body, as Function URLs do.
        Ok(_) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            bytes,
        )
            .into_response(),
        Err(_) => bad_gateway("the function's answer is not JSON"),
    }
}

/// An HTTP response from a buffered `{"statusCode", "headers", "multiValueHeaders",
/// "cookies", "body", "isBase64Encoded"}` answer.
fn buffered(answer: &Value) -> Response {
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok());
    let Some(status) = status else {
        return bad_gateway("the function's statusCode is not an HTTP status");
    };
    let mut headers = HeaderMap::new();
    if let Some(single) = answer["headers"].as_object() {
        for (name, value) in single {
            append(&mut headers, name, value);
        }
    }
    if let Some(multi) = answer["multiValueHeaders"].as_object() {
        for (name, values) in multi {
            for value in values.as_array().into_iter().flatten() {
                append(&mut headers, name, value);
            }
        }
    }
    for cookie in answer["cookies"].as_array().into_iter().flatten() {
        append(&mut headers, "set-cookie", cookie);
    }
    let text = answer["body"].as_str().unwrap_or_default();
    let body = if answer["isBase64Encoded"].as_bool() == Some(true) {
        match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(bytes) => bytes,
            Err(_) => return bad_gateway("the function's base64 body does not decode"),
        }
    } else {
        text.as_bytes().to_vec()
    };
    let mut response = (status, body).into_response();
    response.headers_mut().extend(headers);
    response
}

fn append(headers: &mut HeaderMap, name: &str, value: &Value) {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(&text),
    ) {
        headers.append(name, value);
    }
}

fn bad_gateway(reason: &str) -> Response {
    warn!(
        event = "front_bad_answer",
        reason, "the function's answer is unusable"
    );
    refusal(
        StatusCode::BAD_GATEWAY,
        "ServiceException",
        "Internal Server Error",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_parse_from_key_equals_arn() {
        let caller: IamCaller = "AKID1=arn:aws:iam::111122223333:user/alice"
            .parse()
            .expect("a well-formed caller");
        assert_eq!(caller.access_key_id, "AKID1");
        assert_eq!(caller.arn, "arn:aws:iam::111122223333:user/alice");
        assert_eq!(caller.account_id(), "111122223333");
        assert_eq!(caller.user_id(), "AKID1");

        for text in ["AKID1", "=arn:aws:iam::1:user/a", "AKID1=role/x", ""] {
            assert!(
                text.parse::<IamCaller>().is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn a_role_session_is_named_by_key_and_session() {
        let caller = IamCaller::new(DEFAULT_ACCESS_KEY_ID, DEFAULT_CALLER_ARN);

        assert_eq!(caller.user_id(), "AKIDEMULATOR0000TEST:app-session");
        assert_eq!(caller.account_id(), "123456789012");
    }

    #[test]
    fn buffered_answers_become_responses_with_every_header_and_cookie() {
        let answer = json!({
            "statusCode": 201,
            "headers": {"content-type": "application/json", "x-one": "1"},
            "multiValueHeaders": {"x-many": ["a", "b"]},
            "cookies": ["a=1", "b=2"],
            "body": "eyJvayI6dHJ1ZX0=",
            "isBase64Encoded": true,
        });

        let response = buffered(&answer);

        assert_eq!(response.status(), StatusCode::CREATED);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers.get_all("x-many").iter().count(), 2);
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn a_buffered_answer_without_an_http_status_is_a_bad_gateway() {
        for status in [json!(99), json!("200"), json!(70000)] {
            let response = buffered(&json!({"statusCode": status}));

            assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{status}");
        }
    }

    #[test]
    fn events_carry_the_caller_and_the_request_as_a_function_url_sends_them() {
        let incoming = Incoming {
            method: "POST".into(),
            path: "/token".into(),
            query: "a=1&a=2&b=x%20y".into(),
            headers: vec![
                ("host".into(), "127.0.0.1:9".into()),
                ("x-many".into(), "1".into()),
                ("x-many".into(), "2".into()),
                ("cookie".into(), "c=1; d=2".into()),
            ],
            host: "127.0.0.1:9".into(),
            body: Bytes::from_static(b"{\"scopes\":[]}"),
        };
        let caller = IamCaller::new(DEFAULT_ACCESS_KEY_ID, DEFAULT_CALLER_ARN);
        let now = time::macros::datetime!(2026-11-03 14:22:07.412 UTC);

        let event = function_url_event(
            &incoming,
            &caller,
            "id-1",
            "127.0.0.1:5000".parse().expect("address"),
            now,
            "us-east-1",
        );

        let iam = &event["requestContext"]["authorizer"]["iam"];
        assert_eq!(iam["userArn"], DEFAULT_CALLER_ARN, "{event}");
        assert_eq!(iam["accessKey"], DEFAULT_ACCESS_KEY_ID, "{event}");
        assert_eq!(iam["accountId"], "123456789012", "{event}");
        assert_eq!(event["headers"]["x-many"], "1,2", "{event}");
        assert_eq!(event["cookies"], json!(["c=1", "d=2"]), "{event}");
        assert_eq!(
            event["queryStringParameters"],
            json!({"a": "1,2", "b": "x y"}),
            "{event}"
        );
        assert_eq!(event["body"], "{\"scopes\":[]}", "{event}");
        assert_eq!(event["isBase64Encoded"], false, "{event}");
        assert_eq!(
            event["requestContext"]["time"], "03/Nov/2026:14:22:07 +0000",
            "{event}"
        );
        assert_eq!(event["requestContext"]["timeEpoch"], 1_793_715_727_412_i64);
        assert_eq!(event["requestContext"]["http"]["method"], "POST");
        assert_eq!(event["requestContext"]["requestId"], "id-1");
    }
}
