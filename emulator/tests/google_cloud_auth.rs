//! Google's own Rust client, `google-cloud-auth`, against the emulator: the emulator is
//! faithful if an unmodified Google client obtains tokens from it that it then recognises.
//!
//! The client signs its subject token with the AWS credentials in the environment, which are
//! process-wide: this file (one test process) sets them once, to the emulator's built-in pair.

use std::sync::Once;

use gcp_wif_emulator::{
    spawn, AwsKey, EmulatorConfig, Principal, RunningEmulator, Target, DEFAULT_ACCESS_KEY_ID,
    DEFAULT_AUDIENCE, DEFAULT_SECRET_ACCESS_KEY, DEFAULT_SERVICE_ACCOUNT,
};
use google_cloud_auth::credentials::external_account;
use serde_json::{json, Value};

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The AWS STS URL the client signs for; it is never contacted (the emulator verifies the
/// signature itself), so it stays AWS's real template.
const VERIFICATION_URL: &str =
    "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";

fn use_builtin_aws_credentials() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", DEFAULT_SECRET_ACCESS_KEY);
        std::env::set_var("AWS_SESSION_TOKEN", "emulator-test-session-token+/=");
        std::env::set_var("AWS_REGION", "eu-west-1");
        // A developer's proxy must not see the loopback calls.
        std::env::set_var("NO_PROXY", "127.0.0.1");
    });
}

/// An AWS `external_account` configuration pointing at `emulator`.
///
/// It names no IMDS URLs: google-cloud-auth 1.x fetches an IMDSv2 session token whenever
/// `imdsv2_session_token_url` is set, even with credentials and region in the environment.
fn credential_config(emulator: &RunningEmulator, impersonate: Option<&str>) -> Value {
    let mut config = json!({
        "type": "external_account",
        "audience": DEFAULT_AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": emulator.token_url(),
        "credential_source": {
            "environment_id": "aws1",
            "regional_cred_verification_url": VERIFICATION_URL,
        },
    });
    if let Some(service_account) = impersonate {
        config["service_account_impersonation_url"] =
            emulator.generate_access_token_url(service_account).into();
    }
    config
}

async fn emulator(config: EmulatorConfig) -> RunningEmulator {
    use_builtin_aws_credentials();
    spawn(config, "127.0.0.1:0".parse().expect("a loopback address"))
        .await
        .expect("the emulator binds a free loopback port")
}

async fn access_token(config: Value) -> Result<String, String> {
    let credentials = external_account::Builder::new(config)
        .with_scopes([CLOUD_PLATFORM])
        .build_access_token_credentials()
        .map_err(|e| format!("google-cloud-auth refused the configuration: {e}"))?;
    credentials
        .access_token()
        .await
        .map(|token| token.token)
        .map_err(|e| with_sources(&e))
}

/// The error and its chain of sources: google-cloud-auth keeps the response body in a source.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn google_client_obtains_a_federated_token_the_emulator_recognises() {
    let emulator = emulator(EmulatorConfig::default()).await;

    let token = access_token(credential_config(&emulator, None))
        .await
        .unwrap_or_else(|e| panic!("google-cloud-auth got no token: {e}"));

    let info = emulator
        .access_token_info(&token)
        .expect("the emulator recognises the token it issued");
    assert_eq!(
        info.principal,
        Principal::Federated {
            audience: DEFAULT_AUDIENCE.to_string(),
            aws_access_key_id: DEFAULT_ACCESS_KEY_ID.to_string(),
        }
    );
    assert_eq!(info.scopes, [CLOUD_PLATFORM]);
    assert_eq!(
        (emulator.calls(Target::Sts), emulator.calls(Target::Iam)),
        (1, 0)
    );
}

#[tokio::test]
async fn google_client_impersonates_a_service_account_through_the_emulator() {
    let emulator = emulator(EmulatorConfig::default()).await;

    let token = access_token(credential_config(&emulator, Some(DEFAULT_SERVICE_ACCOUNT)))
        .await
        .unwrap_or_else(|e| panic!("google-cloud-auth got no token: {e}"));

    let info = emulator
        .access_token_info(&token)
        .expect("the emulator recognises the token it issued");
    assert_eq!(
        info.principal,
        Principal::ServiceAccount {
            email: DEFAULT_SERVICE_ACCOUNT.to_string()
        }
    );
    assert_eq!(info.scopes, [CLOUD_PLATFORM]);
    assert_eq!(
        (emulator.calls(Target::Sts), emulator.calls(Target::Iam)),
        (1, 1)
    );
}

#[tokio::test]
async fn google_client_reports_the_sts_refusal_of_an_unknown_aws_key() {
    let emulator = emulator(EmulatorConfig {
        aws_keys: vec![AwsKey::new("AKIDSOMEONEELSE00000", "another-secret")],
        ..EmulatorConfig::default()
    })
    .await;

    let result = access_token(credential_config(&emulator, None)).await;

    let error = result.expect_err("a key the emulator does not know must be refused");
    assert!(
        error.contains("invalid_grant") && error.contains("InvalidClientTokenId"),
        "the client's error does not carry Google's refusal: {error}"
    );
    assert!(
        !error.contains(DEFAULT_SECRET_ACCESS_KEY),
        "the error quotes the secret: {error}"
    );
}
