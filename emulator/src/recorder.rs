//! What the emulated Vertex AI received, kept so that tests can check what a client forwarded
//! (which headers, which bearer, which body), that a request never arrived, and when a stream
//! ended.
//!
//! Every request matched by a Vertex AI route is recorded before anything else looks at it, so
//! refused and faulted requests are recorded too.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::state::EmulatorState;

/// How many Vertex AI requests [`crate::RunningEmulator::vertex_requests`] keeps: the newest,
/// so that a long-running emulator does not grow without end.
pub const VERTEX_REQUESTS_KEPT: usize = 256;

/// The largest request body read: Google's API front end refuses larger payloads too.
///
/// Limitation: 30 MiB is the limit Google's front end states for most JSON APIs, because
/// Vertex AI's own limit depends on the model and on how media is attached.
pub(crate) const MAX_BODY_BYTES: usize = 30 * 1024 * 1024;

/// Header values that [`RecordedRequest`]'s `Debug` hides: credentials a test may print in a
/// failure message.
const REDACTED_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-goog-api-key",
    "x-amz-security-token",
];

/// One request as the emulated Vertex AI received it.
///
/// `Debug` shows the values of credential headers (`authorization`, `cookie`, ...) as
/// `<redacted>`; read them with [`header`](Self::header).
#[derive(Clone)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path, percent-encoded as received.
    pub path: String,
    /// The query string without its `?`, if the request had one.
    pub query: Option<String>,
    /// Every header in the order received, names in lowercase; a value that is not UTF-8 is
    /// converted lossily.
    pub headers: Vec<(String, String)>,
    /// The body; empty when it could not be read whole (it was refused then).
    pub body: Vec<u8>,
    /// When the request reached the emulator, before any injected delay.
    pub received_at: Instant,
    /// For a streamed answer, when its last event was handed to the connection, or when an
    /// injected fault broke it off; `None` for an answer that did not stream, a stream still
    /// running, or one the client abandoned.
    pub stream_finished_at: Option<Instant>,
}

impl RecordedRequest {
    /// The first value of header `name` (in any case), if the request had it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if REDACTED_HEADERS.contains(&name.as_str()) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("received_at", &self.received_at)
            .field("stream_finished_at", &self.stream_finished_at)
            .finish()
    }
}

/// Where a streamed answer notes when it ended; clones share one instant, set once.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamEnd(Arc<OnceLock<Instant>>);

impl StreamEnd {
    /// Notes that the stream ends now; later calls change nothing.
    pub(crate) fn mark(&self) {
        let _ = self.0.set(Instant::now());
    }

    /// When the stream ended, if it has.
    pub(crate) fn finished_at(&self) -> Option<Instant> {
        self.0.get().copied()
    }
}

/// What the recorder took from a request and hands to the route: the body it read (`None` if
/// it could not be read whole) and where a stream notes its end.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) body: Option<Bytes>,
    pub(crate) stream_end: StreamEnd,
}

/// The newest [`VERTEX_REQUESTS_KEPT`] requests, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Recordings(VecDeque<(RecordedRequest, StreamEnd)>);

impl Recordings {
    /// Keeps `request`, forgetting the oldest beyond the cap; answers where its stream, if it
    /// streams, notes its end.
    pub(crate) fn record(&mut self, request: RecordedRequest) -> StreamEnd {
        if self.0.len() == VERTEX_REQUESTS_KEPT {
            self.0.pop_front();
        }
        let stream_end = StreamEnd::default();
        self.0.push_back((request, stream_end.clone()));
        stream_end
    }

    /// Every kept request, oldest first, with its stream's end as known now.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.0
            .iter()
            .map(|(request, stream_end)| RecordedRequest {
                stream_finished_at: stream_end.finished_at(),
                ..request.clone()
            })
            .collect()
    }
}

/// `routes` with every matched request recorded first and its body handed on as [`Received`].
pub(crate) fn recorded(
    routes: Router<EmulatorState>,
    state: &EmulatorState,
) -> Router<EmulatorState> {
    routes.route_layer(middleware::from_fn_with_state(state.clone(), record))
}

async fn record(State(state): State<EmulatorState>, request: Request, next: Next) -> Response {
    let received_at = Instant::now();
    let (mut parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.ok();

    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let stream_end = state.record_vertex_request(RecordedRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(String::from),
        headers,
        body: body.as_deref().map(<[u8]>::to_vec).unwrap_or_default(),
        received_at,
        stream_finished_at: None,
    });

    parts.extensions.insert(Received { body, stream_end });
    next.run(Request::from_parts(parts, axum::body::Body::empty()))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> RecordedRequest {
        RecordedRequest {
            method: Method::POST,
            path: path.to_string(),
            query: None,
            headers: vec![
                ("authorization".into(), "Bearer secret-token".into()),
                ("x-goog-user-project".into(), "billing".into()),
            ],
            body: b"{}".to_vec(),
            received_at: Instant::now(),
            stream_finished_at: None,
        }
    }

    #[test]
    fn only_the_newest_requests_are_kept_oldest_first() {
        let mut recordings = Recordings::default();

        for n in 0..VERTEX_REQUESTS_KEPT + 2 {
            recordings.record(request(&format!("/{n}")));
        }

        let paths: Vec<String> = recordings.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths.len(), VERTEX_REQUESTS_KEPT);
        assert_eq!(paths.first().map(String::as_str), Some("/2"));
        let last = format!("/{}", VERTEX_REQUESTS_KEPT + 1);
        assert_eq!(paths.last(), Some(&last));
    }

    #[test]
    fn a_stream_end_is_noted_once_and_shows_in_later_reads() {
        let mut recordings = Recordings::default();
        let stream_end = recordings.record(request("/stream"));
        assert_eq!(recordings.requests()[0].stream_finished_at, None);

        stream_end.mark();
        let first = recordings.requests()[0].stream_finished_at;
        stream_end.mark();

        assert!(first.is_some(), "the end was not noted");
        assert_eq!(recordings.requests()[0].stream_finished_at, first);
    }

    #[test]
    fn headers_are_found_in_any_case_and_debug_hides_credentials() {
        let recorded = request("/x");

        assert_eq!(
            recorded.header("Authorization"),
            Some("Bearer secret-token")
        );
        assert_eq!(recorded.header("x-goog-user-project"), Some("billing"));
        assert_eq!(recorded.header("cookie"), None);
        let shown = format!("{recorded:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("billing"), "{shown}");
    }
}
