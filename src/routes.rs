//! The HTTP surface: routing, caller checks, request parsing and the answers.
//!
//! Function URLs, HTTP APIs and REST APIs all arrive here as one `Request`; routing uses the
//! raw path with any REST or named-stage prefix removed, so the same routes work behind each.

use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use serde::Deserialize;
use serde_json::json;

use crate::broker::{Broker, TokenRequest};
use crate::caller::Caller;
use crate::diagnosis::StageReport;
use crate::error::{ApiError, UpstreamError};
use crate::forward::{self, Call, Forwarder, Invocation};
use crate::impersonation::AccessToken;
use crate::metrics;
use crate::reply::{self, Reply};
use crate::token_cache::CacheOutcome;
use crate::vertex::{self, Method, VertexSettings};

/// A token request body is a few hundred bytes; anything larger is refused unread.
const MAX_TOKEN_BODY_BYTES: usize = 16 * 1024;

/// Lambda's request payload limit; a forwarded body cannot be larger on AWS.
const MAX_FORWARD_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Paths longer than this are not routes of the broker.
const MAX_PATH_LEN: usize = 512;

/// More scopes than any real request names; bounds the work a single request can cause.
const MAX_SCOPES: usize = 32;

/// IAM Credentials' smallest useful lifetime; shorter tokens would expire in flight.
const MIN_LIFETIME_SECONDS: u64 = 60;

/// The same answer for every refusal, so a caller learns nothing about why; the log says why.
const REFUSAL: &str = "The caller is not authorized to use this broker.";

/// Everything a route may need; one per process, shared by every invocation.
#[derive(Debug)]
pub struct App {
    /// The token path.
    pub broker: Arc<Broker>,
    /// Gemini forwarding, when `GOOGLE_CLOUD_PROJECT` is set.
    pub forwarder: Option<Forwarder>,
}

/// A route the broker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Token,
    Health,
    Diagnose,
    Forward(Call),
}

impl Route {
    /// The route for `path`: `Ok(None)` when there is none (404), `Err` when the path is
    /// malformed or names something the broker does not allow (400).
    fn find(path: &str, vertex: Option<&VertexSettings>) -> Result<Option<Self>, ApiError> {
        match path.trim_end_matches('/') {
            "/token" => return Ok(Some(Route::Token)),
            "/healthz" => return Ok(Some(Route::Health)),
            "/diagnose" => return Ok(Some(Route::Diagnose)),
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Ok(None);
        };
        let Some(vertex) = vertex else {
            return Err(ApiError::new(
                404,
                "Gemini forwarding is not configured on this broker (GOOGLE_CLOUD_PROJECT).",
            ));
        };
        if path.len() > MAX_PATH_LEN
            || !path.bytes().all(|b| b.is_ascii_graphic())
            || path.contains("..")
            || path.contains(['%', '@', '?', '#', '\\'])
        {
            return Err(ApiError::new(400, "The path is malformed."));
        }
        if rest == "chat/completions" {
            return Ok(Some(Route::Forward(Call::Chat {
                location: vertex.location.clone(),
            })));
        }
        if let Some(model_method) = rest.strip_prefix("models/") {
            return model_call(vertex, &vertex.location, model_method).map(Some);
        }
        let Some(rest) = rest.strip_prefix("projects/") else {
            return Ok(None);
        };
        let Some((project, rest)) = rest.split_once('/') else {
            return Ok(None);
        };
        let Some((location, rest)) = rest
            .strip_prefix("locations/")
            .and_then(|r| r.split_once('/'))
        else {
            return Ok(None);
        };
        if project != vertex.project {
            return Err(ApiError::new(
                400,
                "The project must be this broker's GOOGLE_CLOUD_PROJECT.",
            ));
        }
        if !vertex::is_location(location) || !vertex.allows_location(location) {
            return Err(ApiError::new(
                400,
                "The location is not among the locations this broker forwards to \
                 (GOOGLE_CLOUD_LOCATION, BROKER_ALLOWED_LOCATIONS).",
            ));
        }
        if let Some(model_method) = rest.strip_prefix("publishers/google/models/") {
            return model_call(vertex, location, model_method).map(Some);
        }
        if rest == "endpoints/openapi/chat/completions" {
            return Ok(Some(Route::Forward(Call::Chat {
                location: location.to_owned(),
            })));
        }
        Ok(None)
    }

    fn allows(&self, method: &http::Method) -> bool {
        match self {
            Route::Token => method == http::Method::POST || method == http::Method::GET,
            Route::Health => method == http::Method::GET || method == http::Method::HEAD,
            Route::Diagnose => method == http::Method::GET,
            Route::Forward(_) => method == http::Method::POST,
        }
    }

    fn allow_header(&self) -> &'static str {
        match self {
            Route::Token => "GET, POST",
            Route::Health => "GET, HEAD",
            Route::Diagnose => "GET",
            Route::Forward(_) => "POST",
        }
    }
}

/// `{model}:{method}`, with the model checked against the allowlist.
fn model_call(
    vertex: &VertexSettings,
    location: &str,
    model_method: &str,
) -> Result<Route, ApiError> {
    let Some((model, method)) = model_method.split_once(':') else {
        return Err(ApiError::new(
            400,
            "Expected models/{model}:{method}, e.g. models/gemini-2.5-flash:generateContent.",
        ));
    };
    if model.contains('/') || !vertex.allows_model(model) {
        return Err(forward::model_refused());
    }
    let method = Method::parse(method).ok_or_else(|| {
        ApiError::new(
            400,
            "The method must be generateContent, streamGenerateContent or countTokens.",
        )
    })?;
    Ok(Route::Forward(Call::Model {
        location: location.to_owned(),
        model: model.to_owned(),
        method,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequestBody {
    scopes: Option<Vec<String>>,
    lifetime_seconds: Option<i64>,
}

/// Answers one invocation. Never fails: every problem becomes an error answer.
pub async fn handle(app: &App, request: Request) -> Reply {
    let started = Instant::now();
    let broker = &app.broker;
    let lambda = request.lambda_context_ref();
    let request_id = lambda.map(|c| c.request_id.clone()).unwrap_or_default();
    let deadline = lambda.and_then(|c| deadline_of(c.deadline));
    let context = request.request_context_ref();
    let path = route_path(&request, context);

    let identified = context.and_then(Caller::from_context);
    let Some(caller) = identified
        .clone()
        .filter(|c| broker.settings().allowed_callers.allows(c))
    else {
        let reason = if identified.is_none() {
            "no IAM identity in the request context"
        } else {
            "caller does not match BROKER_ALLOWED_CALLERS"
        };
        tracing::warn!(
            event = "caller_refused",
            request_id,
            caller = identified.as_ref().map_or("-", |c| c.arn.as_str()),
            path = clip_path(&path),
            reason,
        );
        metrics::error("client");
        return reply::error(&ApiError::new(403, REFUSAL));
    };

    let vertex = app.forwarder.as_ref().map(Forwarder::vertex);
    let route = match Route::find(&path, vertex) {
        Ok(Some(route)) => route,
        Ok(None) => {
            return reply::error(&ApiError::new(
                404,
                format!("No route for {}.", clip_path(&path)),
            ))
        }
        Err(error) => {
            tracing::info!(
                event = "request_refused",
                request_id,
                caller = caller.arn,
                path = clip_path(&path),
                status = error.status,
                reason = error.message,
            );
            return reply::error(&error);
        }
    };
    if !route.allows(request.method()) {
        let mut reply = reply::error(&ApiError::new(
            405,
            format!("Method not allowed here; use {}.", route.allow_header()),
        ));
        reply.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static(route.allow_header()),
        );
        return reply;
    }

    match route {
        Route::Health => reply::json(200, &json!({"status": "ok"})),
        Route::Diagnose => {
            let model = request
                .query_string_parameters_ref()
                .and_then(|q| q.first("model").map(str::to_owned));
            diagnose(app, model, &request_id, &caller, deadline).await
        }
        Route::Token => {
            let outcome = issue_token(broker, request.body(), deadline).await;
            audit(broker, &request_id, &caller, &outcome, started.elapsed());
            match outcome {
                Ok(issued) => token_response(broker, &issued),
                Err(refusal) => reply::error(&refusal.api_error()),
            }
        }
        Route::Forward(call) => {
            let Some(forwarder) = &app.forwarder else {
                return reply::error(&ApiError::new(404, "Gemini forwarding is not configured."));
            };
            let body = match forward_body(request.body()) {
                Ok(body) => body,
                Err(error) => return reply::error(&error),
            };
            let invocation = Invocation {
                request_id,
                caller: caller.arn,
                deadline,
                started,
            };
            forwarder.forward(broker, call, body, invocation).await
        }
    }
}

/// Lambda's `Lambda-Runtime-Deadline-Ms` is an instant in Unix milliseconds. cargo-lambda's
/// runtime emulator sends the function's timeout in milliseconds instead; no real deadline
/// lies before 2001, so a smaller value is read as time left from now, which lets local runs
/// keep the same deadline discipline as Lambda.
fn deadline_of(milliseconds: u64) -> Option<SystemTime> {
    const EPOCH_2001_MS: u64 = 978_307_200_000;
    match milliseconds {
        0 => None,
        ms if ms < EPOCH_2001_MS => Some(SystemTime::now() + Duration::from_millis(ms)),
        ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

/// Every stage of the token path afresh, and with `?model=` a Vertex `countTokens` call.
async fn diagnose(
    app: &App,
    model: Option<String>,
    request_id: &str,
    caller: &Caller,
    deadline: Option<SystemTime>,
) -> Reply {
    let mut stages = app.broker.diagnose(deadline).await;
    let token_path_ok = stages.iter().all(|s| s.outcome != "failed");
    let vertex = match (&app.forwarder, model) {
        (None, _) => StageReport::skipped("vertex", "Gemini forwarding is not configured"),
        (Some(_), None) => StageReport::skipped("vertex", "add ?model=MODEL to call countTokens"),
        (Some(_), Some(_)) if !token_path_ok => {
            StageReport::skipped("vertex", "an earlier stage failed")
        }
        (Some(forwarder), Some(model)) => {
            let started = Instant::now();
            let call = match model_call(
                forwarder.vertex(),
                &forwarder.vertex().location,
                &format!("{model}:countTokens"),
            ) {
                Ok(Route::Forward(call)) => call,
                _ => return reply::error(&forward::model_refused()),
            };
            let body = Bytes::from_static(
                br#"{"contents": [{"role": "user", "parts": [{"text": "diagnose"}]}]}"#,
            );
            let invocation = Invocation {
                request_id: request_id.to_owned(),
                caller: caller.arn.clone(),
                deadline,
                started,
            };
            let reply = forwarder.forward(&app.broker, call, body, invocation).await;
            let status = reply.status().as_u16();
            StageReport {
                stage: "vertex",
                outcome: if status == 200 { "ok" } else { "failed" },
                ms: started.elapsed().as_secs_f64() * 1000.0,
                detail: format!("countTokens on {model} answered HTTP {status}"),
                hint: crate::hints::for_vertex(status),
            }
        }
    };
    stages.push(vertex);
    let ok = stages.iter().all(|s| s.outcome != "failed");
    tracing::info!(event = "diagnosed", request_id, caller = caller.arn, ok);
    reply::json(200, &json!({"ok": ok, "stages": stages}))
}

fn forward_body(body: &Body) -> Result<Bytes, ApiError> {
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
        Body::Binary(bytes) => Bytes::copy_from_slice(bytes),
        _ => return Err(ApiError::new(400, "The request body could not be read.")),
    };
    if bytes.len() > MAX_FORWARD_BODY_BYTES {
        return Err(ApiError::new(
            413,
            format!("The request body exceeds {MAX_FORWARD_BODY_BYTES} bytes."),
        ));
    }
    Ok(bytes)
}

struct Issued {
    request: TokenRequest,
    token: AccessToken,
    cache: CacheOutcome,
}

enum Refusal {
    BadRequest(ApiError),
    Upstream(UpstreamError),
}

impl Refusal {
    fn api_error(&self) -> ApiError {
        match self {
            Refusal::BadRequest(error) => error.clone(),
            Refusal::Upstream(error) => ApiError::from(error),
        }
    }
}

async fn issue_token(
    broker: &Broker,
    body: &Body,
    deadline: Option<SystemTime>,
) -> Result<Issued, Refusal> {
    let request = parse_token_request(broker, body).map_err(Refusal::BadRequest)?;
    let (token, cache) = broker
        .token(&request, deadline)
        .await
        .map_err(Refusal::Upstream)?;
    Ok(Issued {
        request,
        token,
        cache,
    })
}

fn parse_token_request(broker: &Broker, body: &Body) -> Result<TokenRequest, ApiError> {
    let bytes: &[u8] = match body {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => return Err(ApiError::new(400, "The request body could not be read.")),
    };
    if bytes.len() > MAX_TOKEN_BODY_BYTES {
        return Err(ApiError::new(
            413,
            format!("The request body exceeds {MAX_TOKEN_BODY_BYTES} bytes."),
        ));
    }
    let parsed: TokenRequestBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        TokenRequestBody::default()
    } else {
        serde_json::from_slice(bytes).map_err(|e| {
            ApiError::new(
                400,
                format!(
                    "The body must be JSON like {{\"scopes\": [\"...\"], \"lifetime_seconds\": 3600}}: {}",
                    describe_json_error(&e)
                ),
            )
        })?
    };

    let settings = broker.settings();
    let mut scopes = match parsed.scopes {
        None => settings.scopes.clone(),
        Some(scopes) if scopes.is_empty() => {
            return Err(ApiError::new(400, "scopes must not be empty."))
        }
        Some(scopes) if scopes.len() > MAX_SCOPES => {
            return Err(ApiError::new(400, format!("At most {MAX_SCOPES} scopes.")))
        }
        Some(scopes) => scopes,
    };
    if let Some(outside) = scopes.iter().find(|s| !settings.scopes.contains(s)) {
        return Err(ApiError::new(
            400,
            format!(
                "Scope {} is not among the scopes this broker grants (BROKER_SCOPES).",
                json!(clip_text(outside, 120))
            ),
        ));
    }
    scopes.sort();
    scopes.dedup();

    let max = broker.max_lifetime();
    let lifetime_seconds = match parsed.lifetime_seconds {
        None => max,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (MIN_LIFETIME_SECONDS..=u64::from(max)).contains(&u64::from(*n)))
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    format!("lifetime_seconds must be from {MIN_LIFETIME_SECONDS} to {max}."),
                )
            })?,
    };
    Ok(TokenRequest {
        scopes,
        lifetime_seconds,
    })
}

/// serde_json's message without the parts that quote the caller's input at length.
fn describe_json_error(error: &serde_json::Error) -> String {
    clip_text(&error.to_string(), 200)
}

fn token_response(broker: &Broker, issued: &Issued) -> Reply {
    let now = broker.clock().now();
    let expires_in = issued
        .token
        .expires_at
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let body = json!({
        "access_token": issued.token.token.expose(),
        "token_type": "Bearer",
        "expires_in": expires_in,
        "expire_time": rfc3339(issued.token.expires_at),
        "service_account": broker.service_account(),
        "scopes": issued.request.scopes,
    });
    reply::json(200, &body)
}

fn audit(
    broker: &Broker,
    request_id: &str,
    caller: &Caller,
    outcome: &Result<Issued, Refusal>,
    elapsed: Duration,
) {
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let service_account = broker.service_account().unwrap_or("-");
    match outcome {
        Ok(issued) => metrics::token_request(Some(issued.cache == CacheOutcome::Hit), None),
        Err(Refusal::BadRequest(_)) => metrics::token_request(None, Some("client")),
        Err(Refusal::Upstream(error)) => metrics::token_request(None, Some(error.class())),
    }
    match outcome {
        Ok(issued) => tracing::info!(
            event = "token_issued",
            request_id,
            caller = caller.arn,
            service_account,
            scopes = issued.request.scopes.join(" "),
            lifetime_seconds = issued.request.lifetime_seconds,
            cache = issued.cache.as_str(),
            latency_ms,
        ),
        Err(Refusal::BadRequest(error)) => tracing::info!(
            event = "token_refused",
            request_id,
            caller = caller.arn,
            service_account,
            status = error.status,
            reason = error.message,
            latency_ms,
        ),
        Err(Refusal::Upstream(error)) => tracing::error!(
            event = "token_failed",
            request_id,
            caller = caller.arn,
            service_account,
            stage = %error.stage,
            transient = error.is_transient(),
            status = ApiError::from(error).status,
            error = %error,
            latency_ms,
        ),
    }
}

/// The path to route on: the raw path without a stage prefix. REST APIs already give the
/// path without the stage; HTTP APIs with a named stage include it.
fn route_path(request: &Request, context: Option<&RequestContext>) -> String {
    let raw = request.raw_http_path();
    let raw = if raw.is_empty() {
        request.uri().path()
    } else {
        raw
    };
    let stage = match context {
        Some(RequestContext::ApiGatewayV2(c)) => c.stage.clone(),
        Some(RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        _ => None,
    };
    match stage.filter(|s| s != "$default" && !s.is_empty()) {
        Some(stage) => match raw.strip_prefix(&format!("/{stage}")) {
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            _ => raw.to_owned(),
        },
        None => raw.to_owned(),
    }
}

fn clip_path(path: &str) -> String {
    clip_text(path, 100)
}

fn clip_text(text: &str, limit: usize) -> String {
    let clipped: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(limit)
        .collect();
    if clipped.len() < text.len() {
        format!("{clipped}...")
    } else {
        clipped
    }
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{EndpointPolicy, DEFAULT_UNIVERSE_DOMAIN};

    fn vertex() -> VertexSettings {
        let env = [
            ("GOOGLE_CLOUD_PROJECT", "p1"),
            ("BROKER_ALLOWED_LOCATIONS", "us-central1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        VertexSettings::from_env(&env, &EndpointPolicy::new(DEFAULT_UNIVERSE_DOMAIN, false))
            .unwrap()
            .unwrap()
    }

    fn model(location: &str, model: &str, method: Method) -> Option<Route> {
        Some(Route::Forward(Call::Model {
            location: location.into(),
            model: model.into(),
            method,
        }))
    }

    #[test]
    fn routes_are_found_by_path() {
        let v = vertex();
        let cases = [
            ("/token", Some(Route::Token)),
            ("/token/", Some(Route::Token)),
            ("/healthz", Some(Route::Health)),
            ("/v1/models/gemini-2.5-flash:generateContent", model("global", "gemini-2.5-flash", Method::GenerateContent)),
            (
                "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent",
                model("us-central1", "gemini-2.5-pro", Method::StreamGenerateContent),
            ),
            ("/v1/chat/completions", Some(Route::Forward(Call::Chat { location: "global".into() }))),
            (
                "/v1/projects/p1/locations/us-central1/endpoints/openapi/chat/completions",
                Some(Route::Forward(Call::Chat { location: "us-central1".into() })),
            ),
            ("/", None),
            ("/tokens", None),
            ("/v1/other", None),
            ("/v1/projects/p1/locations/global/datasets/x", None),
        ];
        for (path, expected) in cases {
            assert_eq!(Route::find(path, Some(&v)).unwrap(), expected, "{path}");
        }
    }

    #[test]
    fn malformed_or_foreign_forwarding_paths_are_bad_requests() {
        let v = vertex();
        for path in [
            "/v1/models/../x:generateContent",
            "/v1/models/a/b:generateContent",
            "/v1/models/gemini-x%2F:generateContent",
            "/v1/models/gemini-x:predict",
            "/v1/models/gemini-x",
            "/v1/models/claude-3:generateContent",
            "/v1/projects/p2/locations/global/publishers/google/models/gemini-x:generateContent",
            "/v1/projects/p1/locations/europe-west4/publishers/google/models/gemini-x:generateContent",
            "/v1/models/gemini x:generateContent",
        ] {
            let error = Route::find(path, Some(&v)).expect_err(path);
            assert_eq!(error.status, 400, "{path}");
        }
    }

    #[test]
    fn deadlines_are_read_as_instants_or_as_emulator_timeouts() {
        assert_eq!(deadline_of(0), None);
        let lambda = deadline_of(1_796_319_197_126).unwrap();
        assert_eq!(
            lambda,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_319_197_126)
        );
        let emulator = deadline_of(600_000).unwrap();
        let left = emulator.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
    }

    #[test]
    fn forwarding_paths_are_404_when_forwarding_is_off() {
        let error = Route::find("/v1/models/gemini-x:generateContent", None).unwrap_err();
        assert_eq!(error.status, 404);
        assert_eq!(Route::find("/token", None).unwrap(), Some(Route::Token));
    }
}
