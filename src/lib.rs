//! gcp-wif-broker: keyless Google Cloud access for AWS workloads.
//!
//! An AWS Lambda function that proves its execution role to Google through Workload Identity
//! Federation (a SigV4-signed `GetCallerIdentity` request exchanged at Google STS), impersonates
//! a service account, and hands the short-lived access token to IAM-authorized AWS callers.
//!
//! `main.rs` only wires: [`init::from_environment`] builds a [`broker::Broker`] and
//! [`routes::handle`] answers each invocation.

pub mod aws_credentials;
pub mod broker;
pub mod caller;
pub mod clock;
pub mod config_source;
pub mod credential_config;
pub mod diagnosis;
pub mod endpoint;
pub mod error;
pub mod forward;
pub mod hints;
pub mod impersonation;
pub mod init;
pub mod metadata_proxy;
pub mod metrics;
pub mod pattern;
pub mod reply;
pub mod routes;
pub mod secret;
pub mod settings;
pub mod sts;
pub mod subject_token;
pub mod token_cache;
mod upstream;
pub mod vertex;
