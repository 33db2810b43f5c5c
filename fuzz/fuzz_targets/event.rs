//! Arbitrary bytes as the Lambda event the broker is invoked with.
//!
//! Bytes that lambda_http parses as an API Gateway or Function URL event are answered by
//! `routes::handle`, exactly as the Lambda runtime would hand them over. The broker behind it
//! is offline: every Google endpoint is a closed loopback port, so a request that passes every
//! check fails at its first upstream call instead of reaching the network, and the runtime's
//! clock is paused, so the retry backoff costs no wall-clock time.
//!
//! The answer must be one of the statuses the README documents, and every error must be in
//! Google's envelope with its own status as the code.
//!
//! Events from which lambda_http cannot build a request URI (a host or path that is no valid
//! URL, a raw query string that is no valid URI query) are skipped: lambda_http panics on them
//! before the broker sees anything, and the Lambda runtime turns that panic into a failed
//! invocation. docs/fuzzing.md says more.

#![no_main]

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use gcp_wif_broker::aws_credentials::AwsCredentialSource;
use gcp_wif_broker::broker::{Broker, BrokerParts};
use gcp_wif_broker::clock::{ManualClock, SharedClock};
use gcp_wif_broker::credential_config::CredentialConfig;
use gcp_wif_broker::endpoint::EndpointPolicy;
use gcp_wif_broker::forward::Forwarder;
use gcp_wif_broker::reply;
use gcp_wif_broker::routes::{self, App};
use gcp_wif_broker::settings::Settings;
use gcp_wif_broker::vertex::VertexSettings;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request};
use libfuzzer_sys::fuzz_target;

/// The statuses the README's Routes section lists; nothing else may reach a caller.
const DOCUMENTED_STATUSES: [u16; 9] = [200, 400, 403, 404, 405, 413, 502, 503, 504];

/// The discard port: no service on a developer's or CI's machine listens there, so a connection
/// is refused at once.
const CLOSED_UPSTREAM: &str = "http://127.0.0.1:9";

/// The role that signs the sample events in `events/`, so that seeds get past the caller check.
const ALLOWED_CALLERS: &str = "arn:aws:iam::123456789012:role/app-role";

/// The broker and the runtime that drives it, built once per fuzzing process.
struct Offline {
    runtime: tokio::runtime::Runtime,
    app: App,
}

static OFFLINE: LazyLock<Offline> = LazyLock::new(Offline::new);

impl Offline {
    fn new() -> Self {
        let env = environment();
        let settings = Settings::from_env(&env).expect("the fuzzing settings are valid");
        let config =
            CredentialConfig::parse(&env["BROKER_CREDENTIAL_CONFIG"], settings.allow_loopback)
                .expect("the fuzzing credential configuration is valid");
        let policy = EndpointPolicy::new(&config.universe_domain, settings.allow_loopback);
        let vertex = VertexSettings::from_env(&env, &policy)
            .expect("the fuzzing Vertex settings are valid")
            .expect("GOOGLE_CLOUD_PROJECT is set, so forwarding is on");
        let forwarder = Forwarder::new(vertex, config.quota_project_id.clone())
            .expect("the forwarding HTTP client builds");

        let clock: SharedClock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_793_715_727),
        ));
        let credentials = Credentials::new(
            "AKIDFUZZFUZZFUZZ0001",
            "fuzzSecretAccessKeyThatIsNeverSentAnywhere0",
            None,
            None,
            "fuzz",
        );
        let broker = Broker::new(BrokerParts {
            config,
            settings,
            region: env["AWS_REGION"].clone(),
            credentials: AwsCredentialSource::new(
                SharedCredentialsProvider::new(credentials),
                clock.clone(),
            ),
            clock,
        })
        .expect("the fuzzing broker builds");

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime builds");
        Self {
            runtime,
            app: App {
                broker,
                forwarder: Some(forwarder),
            },
        }
    }
}

/// The broker's environment: token exchange and Gemini forwarding on, all upstreams closed.
fn environment() -> HashMap<String, String> {
    let impersonation = format!(
        "{CLOSED_UPSTREAM}/v1/projects/-/serviceAccounts/\
         broker@local-project.iam.gserviceaccount.com:generateAccessToken"
    );
    let config = serde_json::json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/fuzz-pool/providers/fuzz-aws",
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "service_account_impersonation_url": impersonation,
        "service_account_impersonation": {"token_lifetime_seconds": 3600},
        "token_url": format!("{CLOSED_UPSTREAM}/v1/token"),
        "credential_source": {
            "environment_id": "aws1",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
        },
        "universe_domain": "googleapis.com",
        "quota_project_id": "local-project"
    });
    [
        ("BROKER_CREDENTIAL_CONFIG", config.to_string()),
        ("BROKER_ALLOW_LOOPBACK_ENDPOINTS", "true".to_owned()),
        ("BROKER_ALLOWED_CALLERS", ALLOWED_CALLERS.to_owned()),
        (
            "BROKER_SCOPES",
            "https://www.googleapis.com/auth/cloud-platform,\
             https://www.googleapis.com/auth/userinfo.email"
                .to_owned(),
        ),
        ("BROKER_UPSTREAM_TIMEOUT_SECONDS", "1".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("GOOGLE_CLOUD_PROJECT", "local-project".to_owned()),
        (
            "BROKER_ALLOWED_LOCATIONS",
            "us-central1,europe-west4".to_owned(),
        ),
        ("BROKER_VERTEX_ENDPOINT", CLOSED_UPSTREAM.to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// lambda_http's conversion, or `None` where it panics. libFuzzer's panic hook would abort the
/// process, so a silent one stands in while the conversion runs.
fn into_request(event: LambdaRequest) -> Option<Request> {
    let fuzzer_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let converted = panic::catch_unwind(AssertUnwindSafe(|| Request::from(event)));
    panic::set_hook(fuzzer_hook);
    converted.ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<LambdaRequest>(data) else {
        return;
    };
    let Some(request) = into_request(event) else {
        return;
    };

    let offline = &*OFFLINE;
    let answer = offline.runtime.block_on(async {
        reply::into_buffered(routes::handle(&offline.app, request).await).await
    });

    let status = answer.status().as_u16();
    let body = match answer.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes.as_slice(),
        _ => &[],
    };
    assert!(
        DOCUMENTED_STATUSES.contains(&status),
        "status {status} is not among the documented ones; body: {}",
        String::from_utf8_lossy(body)
    );
    if status != 200 {
        let envelope: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "a {status} answer is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        });
        assert_eq!(
            envelope["error"]["code"],
            u64::from(status),
            "a {status} answer is not in Google's error envelope: {envelope}"
        );
    }
});
