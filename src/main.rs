//! The Lambda entry point: read configuration, build the broker, serve invocations.

use std::collections::HashMap;
use std::sync::Arc;

use gcp_wif_broker::{clock::SystemClock, init, routes};
use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();

    let env: HashMap<String, String> = std::env::vars().collect();
    let broker = match init::from_environment(&env, Arc::new(SystemClock)).await {
        Ok(broker) => broker,
        Err(error) => {
            tracing::error!(event = "init_failed", error = %error);
            return Err(error.into());
        }
    };
    tracing::info!(
        event = "ready",
        service_account = broker.service_account().unwrap_or("-"),
        max_lifetime_seconds = broker.max_lifetime(),
    );

    lambda_http::run_concurrent(service_fn(move |request: Request| {
        let broker = broker.clone();
        async move { Ok::<_, Error>(routes::handle(&broker, request).await) }
    }))
    .await
}
