//! A local emulator of Google's Security Token Service and IAM Credentials API, for AWS
//! Workload Identity Federation.
//!
//! It answers the two calls that turn AWS credentials into a Google access token, with Google's
//! status codes and error shapes:
//!
//! - `POST /v1/token` (STS) exchanges an `aws4_request` subject token, a signed AWS
//!   `GetCallerIdentity` request, for a federated token. The emulator checks the SigV4 signature
//!   itself against configured AWS keys, as AWS would, and refuses what Google would refuse.
//! - `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken` (IAM Credentials)
//!   exchanges a federated token it issued for a service account's access token.
//!
//! Faults (an error status, a delay, or both) can be queued per [`Target`], and every request
//! is counted, from Rust through [`RunningEmulator`] or over HTTP under `/emulator/` (see the
//! `gcp-wif-emulator` binary's `--help`).
//!
//! ```
//! use gcp_wif_emulator::{spawn, EmulatorConfig, Fault, StatusCode, Target};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let emulator = spawn(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//!
//! // Point the client under test at these instead of sts.googleapis.com and
//! // iamcredentials.googleapis.com.
//! let token_url = emulator.token_url();
//! let impersonation_url =
//!     emulator.generate_access_token_url(gcp_wif_emulator::DEFAULT_SERVICE_ACCOUNT);
//!
//! // The next token exchange fails as if STS were overloaded.
//! emulator.inject(Target::Sts, Fault::status(StatusCode::SERVICE_UNAVAILABLE));
//! assert_eq!(emulator.calls(Target::Sts), 0);
//! # let _ = (token_url, impersonation_url);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod admin;
pub mod cli;
mod clock;
mod config;
mod faults;
mod iam;
mod server;
mod sigv4;
mod state;
mod sts;
mod subject_token;
mod tokens;

pub use axum::http::StatusCode;
pub use clock::{Clock, ManualClock};
pub use config::{
    AwsKey, EmulatorConfig, InvalidAwsKey, DEFAULT_ACCESS_KEY_ID, DEFAULT_AUDIENCE,
    DEFAULT_FEDERATED_TOKEN_LIFETIME, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_MAX_TOKEN_LIFETIME,
    DEFAULT_SECRET_ACCESS_KEY, DEFAULT_SERVICE_ACCOUNT, MAX_TOKEN_LIFETIME_CEILING,
};
pub use faults::{Fault, Target};
pub use server::{spawn, RunningEmulator};
pub use tokens::{AccessTokenInfo, Principal};
