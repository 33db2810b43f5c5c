//! Serving the emulated services on a socket, and the handle tests keep on them.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode, Uri};
use axum::Router;
use tokio::net::TcpListener;

use crate::config::EmulatorConfig;
use crate::faults::{intercepted, Fault, Target};
use crate::recorder::RecordedRequest;
use crate::serving::Serving;
use crate::state::EmulatorState;
use crate::tokens::{AccessTokenInfo, Principal};
use crate::{admin, iam, sts, vertex};

/// Every route of the emulator. A new emulated service is one more module whose routes are
/// merged here, counted and faulted under its own [`Target`].
pub(crate) fn router(state: EmulatorState) -> Router {
    Router::new()
        .merge(intercepted(sts::routes(), Target::Sts, &state))
        .merge(intercepted(iam::routes(), Target::Iam, &state))
        .merge(vertex::routes(&state))
        .merge(admin::routes())
        .fallback(no_route)
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!(
            "gcp-wif-emulator has no route for {method} {}\n",
            uri.path()
        ),
    )
}

/// Binds `addr` (port 0 picks a free port) and serves the emulator on it in a tokio task.
///
/// # Errors
///
/// The address cannot be bound, or the configuration cannot be served (`InvalidInput`):
/// `max_token_lifetime` exceeds [`MAX_TOKEN_LIFETIME_CEILING`](crate::MAX_TOKEN_LIFETIME_CEILING)
/// or `stream_events` is 0.
pub async fn spawn(config: EmulatorConfig, addr: SocketAddr) -> io::Result<RunningEmulator> {
    if let Some(problem) = config.problem() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, problem));
    }

    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let state = EmulatorState::new(config);
    let app = router(state.clone());
    let serving = Serving::spawn(|stop| async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    });

    Ok(RunningEmulator {
        local_addr,
        state,
        serving,
    })
}

/// A running emulator: its address, its faults and counters, what it issued, and what its
/// Vertex AI received.
///
/// Dropping it stops the server at once; [`shutdown`](Self::shutdown) lets requests in flight
/// finish first.
pub struct RunningEmulator {
    local_addr: SocketAddr,
    state: EmulatorState,
    serving: Serving,
}

impl RunningEmulator {
    /// The address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://IP:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The STS token exchange URL, the `token_url` of a credential configuration.
    pub fn token_url(&self) -> String {
        format!("{}/v1/token", self.base_url())
    }

    /// The `generateAccessToken` URL for `service_account`, the
    /// `service_account_impersonation_url` of a credential configuration.
    pub fn generate_access_token_url(&self, service_account: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken",
            self.base_url()
        )
    }

    /// Queues `fault` behind any already queued for `target`.
    pub fn inject(&self, target: Target, fault: Fault) {
        self.state.inject(target, fault);
    }

    /// Drops every queued fault of every target; call counts stay.
    pub fn clear_faults(&self) {
        self.state.clear_faults();
    }

    /// How many requests `target` has received, failed and faulted ones included.
    pub fn calls(&self, target: Target) -> u64 {
        self.state.calls(target)
    }

    /// What the emulator knows about `token`: `Some` only for a token this emulator issued
    /// (federated or service account) that has not expired on its clock.
    pub fn access_token_info(&self, token: &str) -> Option<AccessTokenInfo> {
        self.state.access_token_info(token)
    }

    /// Issues an access token for `service_account` with `scopes`, valid for `lifetime` on the
    /// emulator's clock, as `generateAccessToken` would but without the STS and IAM exchange.
    ///
    /// For tests that need a bearer the emulator accepts, on its Vertex AI routes for instance,
    /// without signing a subject token. It counts no call, and `service_account` need not be
    /// one the configuration allows to be impersonated.
    pub fn issue_access_token(
        &self,
        service_account: &str,
        scopes: &[&str],
        lifetime: Duration,
    ) -> String {
        let principal = Principal::ServiceAccount {
            email: service_account.to_string(),
        };
        let scopes = scopes.iter().map(|scope| scope.to_string()).collect();
        self.state.issue_token(principal, scopes, lifetime).0
    }

    /// Every request the emulated Vertex AI received, oldest first: refused and faulted ones
    /// too, and even one whose body was too large to read (recorded with an empty body).
    ///
    /// Only the newest [`VERTEX_REQUESTS_KEPT`](crate::VERTEX_REQUESTS_KEPT) are kept. A
    /// request to a path no Vertex AI route matches is not recorded (nor counted). A streamed
    /// answer's [`stream_finished_at`](RecordedRequest::stream_finished_at) reads as of this
    /// call.
    pub fn vertex_requests(&self) -> Vec<RecordedRequest> {
        self.state.vertex_requests()
    }

    /// Stops accepting connections, waits for requests in flight, and reports how serving
    /// ended.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.serving.shutdown().await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::MAX_TOKEN_LIFETIME_CEILING;
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt;

    /// Sends `request` through the emulator's router; answers the status and the body as JSON
    /// (or as a JSON string when it is not JSON).
    pub(crate) async fn send(state: &EmulatorState, request: Request<Body>) -> (StatusCode, Value) {
        let response = router(state.clone())
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("in-memory bodies are readable");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
        Request::post(uri)
            .header("content-type", content_type)
            .body(body.into())
            .expect("a valid test request")
    }

    fn garbage_token_request() -> Request<Body> {
        post(
            "/v1/token",
            "application/x-www-form-urlencoded",
            "grant_type=nonsense",
        )
    }

    #[tokio::test]
    async fn status_faults_answer_google_shaped_bodies_per_target() {
        let state = EmulatorState::new(EmulatorConfig::default());
        state.inject(Target::Sts, Fault::status(StatusCode::SERVICE_UNAVAILABLE));
        state.inject(Target::Iam, Fault::status(StatusCode::TOO_MANY_REQUESTS));

        let (status, body) = send(&state, garbage_token_request()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");

        let iam = post(
            "/v1/projects/-/serviceAccounts/a@b.c:generateAccessToken",
            "application/json",
            "{}",
        );
        let (status, body) = send(&state, iam).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], 429, "{body}");
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    }

    #[tokio::test]
    async fn a_fault_with_a_body_answers_it_verbatim() {
        let state = EmulatorState::new(EmulatorConfig::default());
        state.inject(
            Target::Sts,
            Fault::status(StatusCode::BAD_GATEWAY).with_body("<html>proxy</html>"),
        );

        let (status, body) = send(&state, garbage_token_request()).await;

        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body, Value::String("<html>proxy</html>".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_without_status_hangs_then_answers_normally() {
        let state = EmulatorState::new(EmulatorConfig::default());
        state.inject(Target::Sts, Fault::hang(Duration::from_secs(30)));
        let started = tokio::time::Instant::now();

        let (status, body) = send(&state, garbage_token_request()).await;

        assert!(
            started.elapsed() >= Duration::from_secs(30),
            "answered after {:?}",
            started.elapsed()
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "unsupported_grant_type", "{body}");
    }

    #[tokio::test]
    async fn every_request_to_a_target_is_counted_failed_and_faulted_ones_too() {
        let state = EmulatorState::new(EmulatorConfig::default());
        state.inject(
            Target::Sts,
            Fault::status(StatusCode::INTERNAL_SERVER_ERROR),
        );

        send(&state, garbage_token_request()).await;
        send(&state, garbage_token_request()).await;
        send(
            &state,
            Request::get("/emulator/calls")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        send(
            &state,
            Request::get("/v1/unknown")
                .body(Body::empty())
                .expect("request"),
        )
        .await;

        assert_eq!((state.calls(Target::Sts), state.calls(Target::Iam)), (2, 0));
    }

    #[tokio::test]
    async fn admin_routes_queue_clear_and_count() {
        let state = EmulatorState::new(EmulatorConfig::default());
        let fault = r#"{"target": "sts", "status": 418, "body": {"error": "teapot"}, "count": 2}"#;

        let (status, _) = send(&state, post("/emulator/faults", "application/json", fault)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = send(&state, garbage_token_request()).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::IM_A_TEAPOT,
                serde_json::json!({"error": "teapot"})
            )
        );

        let clear = Request::delete("/emulator/faults")
            .body(Body::empty())
            .expect("request");
        assert_eq!(send(&state, clear).await.0, StatusCode::NO_CONTENT);
        let (status, _) = send(&state, garbage_token_request()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "the second use should have been cleared"
        );

        let (status, body) = send(
            &state,
            Request::get("/emulator/calls")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(
            (status, body),
            (
                StatusCode::OK,
                serde_json::json!({"sts": 2, "iam": 0, "vertex": 0})
            )
        );
    }

    #[tokio::test]
    async fn admin_refuses_faults_that_cannot_apply() {
        let state = EmulatorState::new(EmulatorConfig::default());
        let cases = [
            (r#"{"target": "sts"}"#, "needs a status, a delay_ms or"),
            (r#"{"target": "kms", "status": 500}"#, "unknown variant"),
            (
                r#"{"target": "iam", "abort_after_events": 1}"#,
                "only to target vertex",
            ),
            (
                r#"{"target": "vertex", "status": 500, "abort_after_events": 1}"#,
                "cannot be combined with a status",
            ),
            (r#"{"target": "iam", "status": 42}"#, "not an HTTP status"),
            (
                r#"{"target": "iam", "status": 500, "count": 0}"#,
                "at least 1",
            ),
            (
                r#"{"target": "iam", "status": 500, "colour": "red"}"#,
                "unknown field",
            ),
            ("not json", "expected"),
        ];

        for (request, expected) in cases {
            let (status, body) = send(
                &state,
                post("/emulator/faults", "application/json", request),
            )
            .await;

            assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
            let reason = body["error"].as_str().unwrap_or_default();
            assert!(
                reason.contains(expected),
                "{request}: {reason:?} lacks {expected:?}"
            );
        }
        assert_eq!(
            state.record_call(Target::Iam),
            None,
            "nothing should have been queued"
        );
    }

    #[tokio::test]
    async fn spawned_emulator_serves_on_its_address_until_shut_down() {
        let emulator = spawn(
            EmulatorConfig::default(),
            "127.0.0.1:0".parse().expect("address"),
        )
        .await
        .expect("binds a free port");
        let url = format!("{}/emulator/calls", emulator.base_url());

        let calls = reqwest::get(&url)
            .await
            .expect("reachable")
            .json::<Value>()
            .await
            .expect("JSON");
        assert_eq!(calls, serde_json::json!({"sts": 0, "iam": 0, "vertex": 0}));
        assert_eq!(
            emulator.generate_access_token_url("sa@p.iam.gserviceaccount.com"),
            format!(
                "{}/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
                emulator.base_url()
            )
        );

        emulator.shutdown().await.expect("a clean shutdown");
        assert!(
            reqwest::get(&url).await.is_err(),
            "still serving after shutdown"
        );
    }

    #[tokio::test]
    async fn spawn_refuses_a_configuration_it_cannot_serve() {
        let cases = [
            (
                EmulatorConfig {
                    max_token_lifetime: MAX_TOKEN_LIFETIME_CEILING + Duration::from_secs(1),
                    ..EmulatorConfig::default()
                },
                "max_token_lifetime",
            ),
            (
                EmulatorConfig {
                    stream_events: 0,
                    ..EmulatorConfig::default()
                },
                "stream_events",
            ),
        ];

        for (config, named) in cases {
            let result = spawn(config, "127.0.0.1:0".parse().expect("address")).await;

            let error = result.err();
            assert_eq!(
                error.as_ref().map(io::Error::kind),
                Some(io::ErrorKind::InvalidInput),
                "{named}"
            );
            let message = error.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(named), "{message:?} lacks {named:?}");
        }
    }
}
