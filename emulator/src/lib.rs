//! A local emulator of Google's Security Token Service, IAM Credentials API and Vertex AI, for
//! AWS Workload Identity Federation and the calls made with its tokens.
//!
//! It answers the two calls that turn AWS credentials into a Google access token, and the
//! Gemini calls made with that token, with Google's status codes and error shapes:
//!
//! - `POST /v1/token` (STS) exchanges an `aws4_request` subject token, a signed AWS
//!   `GetCallerIdentity` request, for a federated token. The emulator checks the SigV4 signature
//!   itself against configured AWS keys, as AWS would, and refuses what Google would refuse.
//! - `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken` (IAM Credentials)
//!   exchanges a federated token it issued for a service account's access token.
//! - `POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}`
//!   (Vertex AI) answers `generateContent`, `streamGenerateContent` (server-sent events with
//!   `?alt=sse`, paced by [`EmulatorConfig::stream_event_delay`]) and `countTokens`, and
//!   `POST /v1/projects/{project}/locations/{location}/endpoints/openapi/chat/completions` the
//!   OpenAI-compatible chat, streamed or not. The bearer must be a token this emulator issued
//!   (federated or service account), unexpired, with the `cloud-platform` scope; the answers are
//!   deterministic text quoting the prompt.
//!
//! Beside them, [`spawn_front`] serves a Lambda Function URL with `AuthType: AWS_IAM` in front
//! of cargo-lambda's runtime emulator: it checks callers' SigV4 signatures (service `lambda`)
//! with the same keys and code as STS, and invokes the function with their IAM identity.
//!
//! Faults (an error status, a delay, a stream broken off, or a mix) can be queued per
//! [`Target`], and every request is counted, from Rust through [`RunningEmulator`] or over HTTP
//! under `/emulator/` (see the `gcp-wif-emulator` binary's `--help`). Every Vertex AI request is
//! also recorded ([`RunningEmulator::vertex_requests`]), so that a test can check which headers
//! a client forwarded and when a stream ended.
//!
//! ```
//! use std::time::Duration;
//! use gcp_wif_emulator::{spawn, EmulatorConfig, Fault, StatusCode, Target};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let emulator = spawn(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//!
//! // Point the client under test at these instead of sts.googleapis.com,
//! // iamcredentials.googleapis.com and the Vertex AI host.
//! let token_url = emulator.token_url();
//! let impersonation_url =
//!     emulator.generate_access_token_url(gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT);
//! let vertex_base_url = emulator.base_url();
//!
//! // The next token exchange fails as if STS were overloaded, and the next streamed
//! // Gemini answer breaks off after its first event.
//! emulator.inject(Target::Sts, Fault::status(StatusCode::SERVICE_UNAVAILABLE));
//! emulator.inject(Target::Vertex, Fault::abort_stream_after(1));
//! assert_eq!(emulator.calls(Target::Sts), 0);
//!
//! // A bearer Vertex AI accepts, without the STS and IAM exchange.
//! let bearer = emulator.issue_access_token(
//!     gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT,
//!     &["https://www.googleapis.com/auth/cloud-platform"],
//!     Duration::from_secs(3600),
//! );
//! assert!(emulator.vertex_requests().is_empty());
//! # let _ = (token_url, impersonation_url, vertex_base_url, bearer);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod admin;
pub mod cli;
mod clock;
mod config;
mod faults;
mod front;
mod iam;
mod recorder;
mod rpc_status;
mod server;
mod serving;
mod sigv4;
mod sse;
mod state;
mod sts;
mod subject_token;
mod tokens;
mod vertex;

pub use axum::http::{Method, StatusCode};
pub use clock::{Clock, ManualClock};
pub use config::{
    AwsKey, EmulatorConfig, InvalidAwsKey, DEFAULT_ACCESS_KEY_ID, DEFAULT_AUDIENCE,
    DEFAULT_FEDERATED_TOKEN_LIFETIME, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_MAX_TOKEN_LIFETIME,
    DEFAULT_SECRET_ACCESS_KEY, DEFAULT_SERVICE_ACCOUNT, DEFAULT_STREAM_EVENTS,
    DEFAULT_STREAM_EVENT_DELAY, DEFAULT_VERTEX_MODELS, DEFAULT_VERTEX_PROJECT,
    MAX_TOKEN_LIFETIME_CEILING,
};
pub use faults::{Fault, Target};
pub use front::{
    spawn_front, FrontConfig, IamCaller, InvalidIamCaller, RunningFront, DEFAULT_CALLER_ARN,
    DEFAULT_FRONT_REGION, DEFAULT_FUNCTION_NAME,
};
pub use recorder::{RecordedRequest, VERTEX_REQUESTS_KEPT};
pub use server::{spawn, RunningEmulator};
pub use tokens::{AccessTokenInfo, Principal};
