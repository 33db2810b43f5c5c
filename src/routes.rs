//! The HTTP surface: routing, caller checks, request parsing and the answers.
//!
//! Function URLs, HTTP APIs and REST APIs all arrive here as one `Request`; routing uses the
//! raw path with any REST or named-stage prefix removed, so the same routes work behind each.

use std::time::{Duration, Instant, SystemTime};

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::json;

use crate::broker::{Broker, TokenRequest};
use crate::caller::Caller;
use crate::error::{ApiError, UpstreamError};
use crate::impersonation::AccessToken;
use crate::token_cache::CacheOutcome;

/// A token request body is a few hundred bytes; anything larger is refused unread.
const MAX_TOKEN_BODY_BYTES: usize = 16 * 1024;

/// More scopes than any real request names; bounds the work a single request can cause.
const MAX_SCOPES: usize = 32;

/// IAM Credentials' smallest useful lifetime; shorter tokens would expire in flight.
const MIN_LIFETIME_SECONDS: u64 = 60;

/// The same answer for every refusal, so a caller learns nothing about why; the log says why.
const REFUSAL: &str = "The caller is not authorized to use this broker.";

/// The routes, for 404 and 405 answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Token,
    Health,
}

impl Route {
    fn find(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/token" => Some(Route::Token),
            "/healthz" => Some(Route::Health),
            _ => None,
        }
    }

    fn allows(self, method: &http::Method) -> bool {
        match self {
            Route::Token => method == http::Method::POST || method == http::Method::GET,
            Route::Health => method == http::Method::GET || method == http::Method::HEAD,
        }
    }

    fn allow_header(self) -> &'static str {
        match self {
            Route::Token => "GET, POST",
            Route::Health => "GET, HEAD",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequestBody {
    scopes: Option<Vec<String>>,
    lifetime_seconds: Option<i64>,
}

/// Answers one invocation. Never fails: every problem becomes an error answer.
pub async fn handle(broker: &Broker, request: Request) -> Response<Body> {
    let started = Instant::now();
    let request_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let context = request.request_context_ref();
    let path = route_path(&request, context);

    let caller = context.and_then(Caller::from_context);
    let Some(caller) = caller.filter(|c| broker.settings().allowed_callers.allows(c)) else {
        let reason = if context.and_then(Caller::from_context).is_none() {
            "no IAM identity in the request context"
        } else {
            "caller does not match BROKER_ALLOWED_CALLERS"
        };
        let arn = context.and_then(Caller::from_context).map(|c| c.arn);
        tracing::warn!(
            event = "caller_refused",
            request_id,
            caller = arn.as_deref().unwrap_or("-"),
            path = clip_path(&path),
            reason,
        );
        return error_response(&ApiError::new(403, REFUSAL));
    };

    let Some(route) = Route::find(&path) else {
        return error_response(&ApiError::new(
            404,
            format!(
                "No route for {}; routes are /token and /healthz.",
                clip_path(&path)
            ),
        ));
    };
    if !route.allows(request.method()) {
        let mut response = error_response(&ApiError::new(
            405,
            format!("Method not allowed here; use {}.", route.allow_header()),
        ));
        if let Ok(value) = http::HeaderValue::from_str(route.allow_header()) {
            response.headers_mut().insert(http::header::ALLOW, value);
        }
        return response;
    }

    match route {
        Route::Health => json_response(200, &json!({"status": "ok"})),
        Route::Token => {
            let outcome = issue_token(broker, request.body()).await;
            audit(broker, &request_id, &caller, &outcome, started.elapsed());
            match outcome {
                Ok(issued) => token_response(broker, &issued),
                Err(refusal) => error_response(&refusal.api_error()),
            }
        }
    }
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

async fn issue_token(broker: &Broker, body: &Body) -> Result<Issued, Refusal> {
    let request = parse_token_request(broker, body).map_err(Refusal::BadRequest)?;
    let (token, cache) = broker.token(&request).await.map_err(Refusal::Upstream)?;
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

fn token_response(broker: &Broker, issued: &Issued) -> Response<Body> {
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
    json_response(200, &body)
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

fn json_response(status: u16, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        http::header::PRAGMA,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = json_response(error.status, &error.body());
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    response
}
