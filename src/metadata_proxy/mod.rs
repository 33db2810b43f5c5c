//! gcp-metadata-proxy: the Compute Engine metadata server's token API on AWS, backed by the
//! broker.
//!
//! Google's client libraries find credentials on Google Cloud by asking the metadata server;
//! with `GCE_METADATA_HOST` (and for Python `GCE_METADATA_IP`) set to this proxy's address,
//! they ask it instead, anywhere. The proxy answers with tokens from the broker's `/token`,
//! which it calls with the workload's own AWS identity: SigV4 (service `lambda` for a Function
//! URL, `execute-api` for an API), credentials from aws-config's default chain (ECS task role,
//! EKS Pod Identity or IRSA, EC2 instance profile, Lambda's environment). No Google
//! configuration, key or library change is needed in the workload.
//!
//! ```text
//! google-auth --GET /computeMetadata/v1/.../token--> gcp-metadata-proxy (loopback)
//!     --SigV4 POST /token--> Function URL / API Gateway (AWS_IAM) --> gcp-wif-broker
//! ```
//!
//! The parts, one per concept:
//!
//! - [`settings`]: the `METADATA_PROXY_*` variables.
//! - [`broker_client`]: the signed call to the broker.
//! - [`token_source`]: tokens kept until shortly before expiry, one broker call per scope set
//!   at a time.
//! - [`metadata`]: the metadata API: which paths, which checks, which answers.
//! - [`server`]: the HTTP server.
//! - [`extension`]: the Lambda Extensions API, when the proxy runs as a layer.
//! - [`error`]: why a token could not be had, and the status a client gets.
//!
//! `src/bin/gcp-metadata-proxy.rs` wires them; `docs/metadata-proxy.md` shows the ECS, EKS and
//! Lambda setups.

pub mod broker_client;
pub mod error;
pub mod extension;
pub mod metadata;
pub mod server;
pub mod settings;
pub mod token_source;
