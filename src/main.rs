//! The Lambda entry point: read configuration, build the broker, serve invocations.

use std::collections::HashMap;
use std::sync::Arc;

use gcp_wif_broker::settings::ResponseMode;
use gcp_wif_broker::{clock::SystemClock, init, reply, routes};
use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();

    let env: HashMap<String, String> = std::env::vars().collect();
    let app = match init::from_environment(&env, Arc::new(SystemClock)).await {
        Ok(app) => Arc::new(app),
        Err(error) => {
            tracing::error!(event = "init_failed", error = %error);
            return Err(error.into());
        }
    };
    if app.broker.settings().prefetch_token {
        let started = std::time::Instant::now();
        // A failure here is logged and left for the first request to retry: a broker that
        // cannot reach Google at init may well reach it a moment later.
        let outcome = app.broker.token(&app.broker.default_request(), None).await;
        tracing::info!(
            event = "token_prefetched",
            ok = outcome.is_ok(),
            error = outcome.err().map(|e| e.to_string()),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
    let mode = app.broker.settings().response_mode;
    tracing::info!(
        event = "ready",
        service_account = app.broker.service_account().unwrap_or("-"),
        max_lifetime_seconds = app.broker.max_lifetime(),
        forwarding = app.forwarder.is_some(),
        response_mode = ?mode,
    );

    match mode {
        ResponseMode::Buffered => {
            lambda_http::run_concurrent(service_fn(move |request: Request| {
                let app = app.clone();
                async move {
                    Ok::<_, Error>(reply::into_buffered(routes::handle(&app, request).await).await)
                }
            }))
            .await
        }
        ResponseMode::Streaming => {
            lambda_http::run_with_streaming_response_concurrent(service_fn(
                move |request: Request| {
                    let app = app.clone();
                    async move { Ok::<_, Error>(routes::handle(&app, request).await) }
                },
            ))
            .await
        }
    }
}
