//! Server-sent events sent one at a time with a pause between them: the body of a streamed
//! answer, and the injected fault that breaks one off.
//!
//! The body is a real stream: each event is handed to the connection as its own chunk when its
//! pause has passed, so a client sees the first event long before the last.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tracing::{debug, info};

use crate::faults::StreamAbort;
use crate::recorder::StreamEnd;

/// How events are terminated: Vertex AI's own routes end each with CRLF CRLF, its
/// OpenAI-compatible route with LF LF, as OpenAI does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Framing {
    /// `data: ...\r\n\r\n`
    Crlf,
    /// `data: ...\n\n`
    Lf,
}

/// One `data:` event and the pause before it is sent.
#[derive(Debug)]
pub(crate) struct Event {
    wait: Duration,
    bytes: Bytes,
}

impl Event {
    /// An event carrying `data` (one line: JSON, or a marker such as `[DONE]`), sent `wait`
    /// after the one before it.
    pub(crate) fn new(data: &str, framing: Framing, wait: Duration) -> Self {
        let end = match framing {
            Framing::Crlf => "\r\n\r\n",
            Framing::Lf => "\n\n",
        };
        Event {
            wait,
            bytes: Bytes::from(format!("data: {data}{end}")),
        }
    }
}

/// Events carrying `payloads`, the first at once and each later one `delay` after the one
/// before.
pub(crate) fn paced(payloads: &[String], framing: Framing, delay: Duration) -> Vec<Event> {
    payloads
        .iter()
        .enumerate()
        .map(|(index, data)| {
            let wait = if index == 0 { Duration::ZERO } else { delay };
            Event::new(data, framing, wait)
        })
        .collect()
}

/// Why a stream ended early: the only error its body yields, which makes hyper drop the
/// connection instead of ending the chunked body.
#[derive(Debug, thiserror::Error)]
#[error("the emulator broke the stream off, as an injected fault asked")]
struct BrokenOff;

/// A `200 text/event-stream` response that sends `events` in their time, noting in
/// `stream_end` when the last has gone; `abort` cuts it short with an error instead.
pub(crate) fn response(
    events: Vec<Event>,
    abort: Option<StreamAbort>,
    stream_end: StreamEnd,
) -> Response {
    let mut events = VecDeque::from(events);
    if let Some(abort) = abort {
        events.truncate(usize::try_from(abort.after_events).unwrap_or(usize::MAX));
    }
    let pacing = Pacing {
        events,
        breaks_off: abort.is_some(),
        stream_end,
    };
    let body = Body::from_stream(stream::unfold(pacing, Pacing::next));
    (
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The events still to send, and how the stream ends once they are sent.
struct Pacing {
    events: VecDeque<Event>,
    breaks_off: bool,
    stream_end: StreamEnd,
}

impl Pacing {
    async fn next(mut self) -> Option<(Result<Bytes, BrokenOff>, Self)> {
        if let Some(event) = self.events.pop_front() {
            if !event.wait.is_zero() {
                tokio::time::sleep(event.wait).await;
            }
            if self.events.is_empty() && !self.breaks_off {
                self.stream_end.mark();
                debug!("stream finished");
            }
            return Some((Ok(event.bytes), self));
        }

        if self.breaks_off {
            // Hyper buffers what the body yields and drops the buffer when the body fails:
            // pending once lets it flush the events sent so far before the break.
            tokio::task::yield_now().await;
            self.breaks_off = false;
            self.stream_end.mark();
            info!("stream broken off by an injected fault");
            return Some((Err(BrokenOff), self));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn payloads(count: usize) -> Vec<String> {
        (0..count).map(|n| format!("{{\"n\":{n}}}")).collect()
    }

    /// What the body yields, each data chunk as text and an error as `"<error>"`.
    async fn items(response: Response) -> Vec<String> {
        response
            .into_body()
            .into_data_stream()
            .map(|item| match item {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => "<error>".to_string(),
            })
            .collect()
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_framed_and_spaced_by_the_delay() {
        let started = tokio::time::Instant::now();
        let events = paced(&payloads(3), Framing::Crlf, Duration::from_secs(2));

        let sent = items(response(events, None, StreamEnd::default())).await;

        assert_eq!(
            sent,
            [
                "data: {\"n\":0}\r\n\r\n",
                "data: {\"n\":1}\r\n\r\n",
                "data: {\"n\":2}\r\n\r\n"
            ]
        );
        assert_eq!(started.elapsed(), Duration::from_secs(4), "two pauses");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_sends_the_first_events_then_an_error_and_notes_the_end() {
        let cases = [
            (0, vec!["<error>"]),
            (2, vec!["a", "b", "<error>"]),
            (9, vec!["a", "b", "c", "<error>"]),
        ];

        for (after_events, expected) in cases {
            let events = ["a", "b", "c"]
                .map(|data| Event::new(data, Framing::Lf, Duration::ZERO))
                .into_iter()
                .collect();
            let stream_end = StreamEnd::default();
            let abort = Some(StreamAbort { after_events });

            let sent = items(response(events, abort, stream_end.clone())).await;

            let expected: Vec<String> = expected
                .iter()
                .map(|item| match *item {
                    "<error>" => item.to_string(),
                    data => format!("data: {data}\n\n"),
                })
                .collect();
            assert_eq!(sent, expected, "abort after {after_events}");
            assert!(
                stream_end.finished_at().is_some(),
                "abort after {after_events}: the end was not noted"
            );
        }
    }
}
