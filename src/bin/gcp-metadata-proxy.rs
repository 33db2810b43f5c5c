//! The `gcp-metadata-proxy` entry point: read configuration, build the proxy, then serve as a
//! plain server (until SIGTERM or SIGINT) or as a Lambda extension (until Lambda's SHUTDOWN).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use gcp_wif_broker::aws_credentials::AwsCredentialSource;
use gcp_wif_broker::clock::{SharedClock, SystemClock};
use gcp_wif_broker::metadata_proxy::broker_client::BrokerClient;
use gcp_wif_broker::metadata_proxy::extension::Extension;
use gcp_wif_broker::metadata_proxy::metadata::MetadataService;
use gcp_wif_broker::metadata_proxy::server;
use gcp_wif_broker::metadata_proxy::settings::{ProxySettings, RunMode};
use gcp_wif_broker::metadata_proxy::token_source::TokenSource;
use tokio::net::TcpListener;

/// The extension's name when the program's own file name cannot be read.
const DEFAULT_NAME: &str = "gcp-metadata-proxy";

#[tokio::main]
async fn main() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber();
    let env: HashMap<String, String> = std::env::vars().collect();

    let mode = match RunMode::from_env(&env) {
        Ok(mode) => mode,
        Err(error) => {
            tracing::error!(event = "init_failed", error = %error);
            return ExitCode::FAILURE;
        }
    };
    // Bound before registering, so the function finds the proxy from its first line on.
    let prepared = prepare(&env).await;

    match mode {
        RunMode::Server => {
            let (listener, service) = match prepared {
                Ok(prepared) => prepared,
                Err(error) => {
                    tracing::error!(event = "init_failed", error = %error);
                    return ExitCode::FAILURE;
                }
            };
            ready(&listener, "server");
            match server::serve(listener, service, termination()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(event = "serve_failed", error = %error);
                    ExitCode::FAILURE
                }
            }
        }
        RunMode::Extension { runtime_api } => {
            let name = extension_name();
            let extension = match Extension::register(&runtime_api, &name).await {
                Ok(extension) => extension,
                Err(error) => {
                    tracing::error!(event = "init_failed", error = %error);
                    return ExitCode::FAILURE;
                }
            };
            let (listener, service) = match prepared {
                Ok(prepared) => prepared,
                Err(error) => {
                    tracing::error!(event = "init_failed", error = %error);
                    if let Err(report) = extension
                        .init_error("Extension.ConfigInvalid", &error)
                        .await
                    {
                        tracing::error!(event = "init_error_unreported", error = %report);
                    }
                    return ExitCode::FAILURE;
                }
            };
            ready(&listener, "extension");
            match extension.serve_until_shutdown(listener, service).await {
                Ok(reason) => {
                    tracing::info!(event = "shutdown", reason);
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    tracing::error!(event = "extension_failed", error = %error);
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Settings, AWS credentials, the token source and the bound listener.
async fn prepare(
    env: &HashMap<String, String>,
) -> Result<(TcpListener, Arc<MetadataService>), String> {
    let settings = ProxySettings::from_env(env).map_err(|e| e.to_string())?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let provider = sdk
        .credentials_provider()
        .ok_or("no AWS credential provider could be configured")?;
    let clock: SharedClock = Arc::new(SystemClock);
    let credentials = AwsCredentialSource::new(provider, clock.clone());
    let broker =
        BrokerClient::new(&settings, credentials, clock.clone()).map_err(|e| e.to_string())?;
    let tokens = TokenSource::new(broker, &settings, clock);
    let service = MetadataService::new(tokens, &settings);
    let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
        format!(
            "cannot listen on {} (METADATA_PROXY_ADDR): {e}",
            settings.listen
        )
    })?;
    Ok((listener, Arc::new(service)))
}

fn ready(listener: &TcpListener, mode: &'static str) {
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(event = "ready", listen, mode);
}

/// The name Lambda knows the extension by: its file name under `/opt/extensions`.
fn extension_name() -> String {
    std::env::args()
        .next()
        .and_then(|program| {
            std::path::Path::new(&program)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| DEFAULT_NAME.to_owned())
}

/// Completes on SIGTERM or SIGINT.
async fn termination() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(event = "no_sigterm", error = %error);
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!(event = "shutdown", reason = "signal");
}
