//! Running as a Lambda extension: a layer puts the binary at `/opt/extensions/NAME`, Lambda
//! starts it before the function's runtime, and it serves the metadata API until Lambda
//! announces shutdown.
//!
//! The lifecycle, through the Extensions API at `AWS_LAMBDA_RUNTIME_API`:
//!
//! 1. The listener is bound first, so the function's code finds it from its first line on.
//! 2. `POST /2020-01-01/extension/register` with `Lambda-Extension-Name: NAME` (the file name)
//!    and `{"events": ["SHUTDOWN"]}`: invocations never wait for the extension.
//! 3. A setting that is wrong is reported to `/2020-01-01/extension/init/error`, which fails
//!    the function's init with that message.
//! 4. `GET /2020-01-01/extension/event/next` blocks (the environment is frozen between
//!    invocations) until `SHUTDOWN`; the server then stops within Lambda's deadline.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;

use super::metadata::MetadataService;
use super::server;

/// The Extensions API version in every path.
const API_PATH: &str = "2020-01-01/extension";

/// An external extension has 2 s after `SHUTDOWN` (shared with other extensions): requests in
/// flight get most of it, the process the rest.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Why talking to the Extensions API failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// The Extensions API could not be reached.
    #[error("the Lambda Extensions API is unreachable: {0}")]
    Unreachable(String),
    /// The Extensions API refused a call.
    #[error("the Lambda Extensions API refused {call} with HTTP {status}")]
    Refused {
        /// Which call.
        call: &'static str,
        /// The status.
        status: u16,
    },
    /// The Extensions API answered something this extension does not understand.
    #[error("the Lambda Extensions API answered {call} unexpectedly: {problem}")]
    Malformed {
        /// Which call.
        call: &'static str,
        /// What was wrong.
        problem: &'static str,
    },
}

/// A lifecycle event from `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// An invocation started (only for extensions that registered for it).
    Invoke,
    /// The environment is shutting down, for the reason given (`spindown`, `timeout`,
    /// `failure`).
    Shutdown {
        /// Lambda's reason.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventJson {
    event_type: String,
    shutdown_reason: Option<String>,
}

/// A registered extension.
#[derive(Debug)]
pub struct Extension {
    http: reqwest::Client,
    base: String,
    id: String,
}

impl Extension {
    /// Registers `name` (the executable's file name under `/opt/extensions`) for `SHUTDOWN`
    /// with the Extensions API at `runtime_api` (`host:port`, or a URL).
    pub async fn register(runtime_api: &str, name: &str) -> Result<Self, ExtensionError> {
        const CALL: &str = "register";
        let base = if runtime_api.starts_with("http://") || runtime_api.starts_with("https://") {
            format!("{}/{API_PATH}", runtime_api.trim_end_matches('/'))
        } else {
            format!("http://{runtime_api}/{API_PATH}")
        };
        // `next` blocks for as long as the environment lives: no timeout.
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| ExtensionError::Unreachable(e.to_string()))?;
        let response = http
            .post(format!("{base}/register"))
            .header("Lambda-Extension-Name", name)
            .json(&serde_json::json!({ "events": ["SHUTDOWN"] }))
            .send()
            .await
            .map_err(|e| ExtensionError::Unreachable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(ExtensionError::Refused {
                call: CALL,
                status: response.status().as_u16(),
            });
        }
        let id = response
            .headers()
            .get("lambda-extension-identifier")
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty())
            .ok_or(ExtensionError::Malformed {
                call: CALL,
                problem: "no Lambda-Extension-Identifier header",
            })?
            .to_owned();
        Ok(Self { http, base, id })
    }

    /// Waits for the next lifecycle event.
    pub async fn next(&self) -> Result<LifecycleEvent, ExtensionError> {
        const CALL: &str = "event/next";
        let response = self
            .http
            .get(format!("{}/event/next", self.base))
            .header("Lambda-Extension-Identifier", &self.id)
            .send()
            .await
            .map_err(|e| ExtensionError::Unreachable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(ExtensionError::Refused {
                call: CALL,
                status: response.status().as_u16(),
            });
        }
        let event: EventJson = response
            .json()
            .await
            .map_err(|_| ExtensionError::Malformed {
                call: CALL,
                problem: "the event is not {\"eventType\", ...} JSON",
            })?;
        match event.event_type.as_str() {
            "INVOKE" => Ok(LifecycleEvent::Invoke),
            "SHUTDOWN" => Ok(LifecycleEvent::Shutdown {
                reason: event.shutdown_reason.unwrap_or_default(),
            }),
            _ => Err(ExtensionError::Malformed {
                call: CALL,
                problem: "eventType is neither INVOKE nor SHUTDOWN",
            }),
        }
    }

    /// Reports that the extension cannot start: Lambda fails the function's init with
    /// `error_type` (`Extension.ConfigInvalid`, ...) and `message`.
    pub async fn init_error(&self, error_type: &str, message: &str) -> Result<(), ExtensionError> {
        const CALL: &str = "init/error";
        let response = self
            .http
            .post(format!("{}/init/error", self.base))
            .header("Lambda-Extension-Identifier", &self.id)
            .header("Lambda-Extension-Function-Error-Type", error_type)
            .json(&serde_json::json!({
                "errorMessage": message,
                "errorType": error_type,
                "stackTrace": [],
            }))
            .send()
            .await
            .map_err(|e| ExtensionError::Unreachable(e.without_url().to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(ExtensionError::Refused {
                call: CALL,
                status: response.status().as_u16(),
            })
        }
    }

    /// Serves `service` on `listener` until Lambda announces shutdown, and answers the reason.
    ///
    /// An Extensions API that fails ends serving too: without it the extension cannot learn
    /// of shutdown, and Lambda restarts an environment whose extension exits.
    pub async fn serve_until_shutdown(
        &self,
        listener: TcpListener,
        service: Arc<MetadataService>,
    ) -> Result<String, ExtensionError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, service, async {
            let _ = stopped.await;
        }));
        let outcome = loop {
            match self.next().await {
                Ok(LifecycleEvent::Invoke) => continue,
                Ok(LifecycleEvent::Shutdown { reason }) => break Ok(reason),
                Err(error) => break Err(error),
            }
        };
        let _ = stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
            tracing::warn!(
                event = "shutdown_incomplete",
                "requests still in flight at the shutdown deadline were dropped"
            );
        }
        outcome
    }
}
