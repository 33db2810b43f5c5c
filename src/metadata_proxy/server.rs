//! The metadata API on a socket: HTTP/1.1 on loopback, as Google's clients speak to it.

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Response, StatusCode};
use axum::Router;
use tokio::net::TcpListener;

use super::metadata::{MetadataRequest, MetadataService, FLAVOR_GOOGLE, METADATA_FLAVOR};

/// Serves `service` on `listener` until `shutdown` completes, then lets requests in flight
/// finish.
pub async fn serve(
    listener: TcpListener,
    service: Arc<MetadataService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = Router::new().fallback(answer).with_state(service);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn answer(State(service): State<Arc<MetadataService>>, request: Request) -> Response<Body> {
    let headers = request.headers();
    let flavor = headers
        .get(METADATA_FLAVOR)
        .and_then(|value| value.to_str().ok());
    let forwarded = headers.contains_key("x-forwarded-for");
    let answer = service
        .answer(MetadataRequest {
            method: request.method().as_str(),
            path: request.uri().path(),
            query: request.uri().query(),
            flavor,
            forwarded,
        })
        .await;

    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(METADATA_FLAVOR, HeaderValue::from_static(FLAVOR_GOOGLE));
    headers.insert(
        "content-type",
        HeaderValue::from_static(answer.content_type),
    );
    if let Some(seconds) = answer.retry_after {
        headers.insert("retry-after", HeaderValue::from(seconds));
    }
    if let Some(allow) = answer.allow {
        headers.insert("allow", HeaderValue::from_static(allow));
    }
    if answer.no_store {
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
    }
    response
}
