//! Answers, whole or streamed, and how each response mode sends them.
//!
//! Every route produces a [`Reply`]. A Function URL in `RESPONSE_STREAM` mode sends its body
//! chunk by chunk as it is produced; an API Gateway integration needs the whole body, so in
//! buffered mode a streamed reply is collected first.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use lambda_http::Response;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// A response whose body is either complete or still arriving.
pub type Reply = Response<ReplyBody>;

/// The body of a [`Reply`].
#[derive(Debug)]
pub enum ReplyBody {
    /// The whole body, sent at once.
    Full(Option<Bytes>),
    /// Chunks in the order a producer task sends them; the body ends when it drops its sender.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ReplyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ReplyBody::Stream(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }
}

/// A JSON reply with the headers every answer carries.
pub fn json(status: u16, body: &serde_json::Value) -> Reply {
    with_status(
        status,
        "application/json",
        ReplyBody::Full(Some(body.to_string().into())),
    )
}

/// An error in Google's envelope, with `Retry-After` when the error knows it.
pub fn error(error: &ApiError) -> Reply {
    let mut reply = json(error.status, &error.body());
    if let Some(seconds) = error.retry_after {
        reply
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    reply
}

/// A reply with `status`, `content_type` and `body`; never cached by anything in between.
pub fn with_status(status: u16, content_type: &str, body: ReplyBody) -> Reply {
    let mut reply = Response::new(body);
    *reply.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = reply.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        http::header::PRAGMA,
        http::HeaderValue::from_static("no-cache"),
    );
    reply
}

/// Collects a reply into one body, for API Gateway and buffered Function URLs.
pub async fn into_buffered(reply: Reply) -> Response<lambda_http::Body> {
    let (parts, body) = reply.into_parts();
    let bytes = match body {
        ReplyBody::Full(bytes) => bytes.unwrap_or_default().to_vec(),
        ReplyBody::Stream(mut chunks) => {
            let mut all = Vec::new();
            while let Some(chunk) = chunks.recv().await {
                all.extend_from_slice(&chunk);
            }
            all
        }
    };
    let body = match String::from_utf8(bytes) {
        Ok(text) => lambda_http::Body::Text(text),
        Err(not_text) => lambda_http::Body::Binary(not_text.into_bytes()),
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streamed_reply_is_collected_in_order_for_buffered_mode() {
        let (sender, receiver) = mpsc::channel(4);
        let reply = with_status(200, "text/event-stream", ReplyBody::Stream(receiver));
        tokio::spawn(async move {
            for chunk in ["data: 1\n\n", "data: 2\n\n"] {
                sender.send(Bytes::from(chunk)).await.unwrap();
            }
        });
        let buffered = into_buffered(reply).await;
        assert_eq!(buffered.headers()["content-type"], "text/event-stream");
        assert_eq!(
            buffered.body(),
            &lambda_http::Body::Text("data: 1\n\ndata: 2\n\n".into())
        );
    }

    #[test]
    fn errors_carry_retry_after_and_no_store() {
        let mut api = ApiError::new(503, "later");
        api.retry_after = Some(7);
        let reply = error(&api);
        assert_eq!(reply.status(), 503);
        assert_eq!(reply.headers()["retry-after"], "7");
        assert_eq!(reply.headers()["cache-control"], "no-store");
    }
}
