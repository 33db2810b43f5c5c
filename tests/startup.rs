//! Start-up through the real binary: where the credential configuration comes from, what a
//! bad one does, and that env credentials need no metadata service.

mod common;

use std::time::Duration;

use common::{broker_env, credential_config, google_emulator, venv_tool, Process, Stack};
use gcp_wif_emulator::Target;
use tokio::process::Command;

/// moto_server on a free loopback port, playing Secrets Manager.
struct Moto {
    port: u16,
    _process: Process,
}

impl Moto {
    async fn start() -> Self {
        let port = common::free_port();
        let mut command = Command::new(venv_tool("moto_server"));
        command
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string());
        let process = Process::spawn(command);
        common::wait_for_port(port, "moto_server").await;
        Self {
            port,
            _process: process,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn create_secret(&self, name: &str, value: &str) -> String {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIDMOTO", "moto", None, None, "test",
            ))
            .endpoint_url(self.endpoint())
            .load()
            .await;
        let client = aws_sdk_secretsmanager::Client::new(&sdk);
        client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("moto creates the secret")
            .arn()
            .expect("secret ARN")
            .to_owned()
    }
}

#[tokio::test]
async fn configuration_is_read_from_secrets_manager() {
    let moto = Moto::start().await;
    let google = google_emulator().await;
    let arn = moto
        .create_secret(
            "broker/credential-config",
            &credential_config(&google).to_string(),
        )
        .await;

    let mut env = broker_env(&google);
    env.remove("BROKER_CREDENTIAL_CONFIG");
    env.insert("BROKER_CREDENTIAL_SECRET".into(), arn);
    env.insert("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), moto.endpoint());
    let stack = Stack::start_with(google, env).await;

    let answer = stack.invoke_file("token-function-url.json").await;
    assert_eq!(
        answer.status,
        200,
        "{}\n{}",
        answer.raw,
        stack.broker.output()
    );
    assert_eq!(stack.google.calls(Target::Iam), 1);
}

#[tokio::test]
async fn configuration_is_read_from_google_application_credentials() {
    let google = google_emulator().await;
    let file = common::scratch_dir("gac").join("credential-config.json");
    std::fs::write(&file, credential_config(&google).to_string()).expect("write config");

    let mut env = broker_env(&google);
    env.remove("BROKER_CREDENTIAL_CONFIG");
    env.insert(
        "GOOGLE_APPLICATION_CREDENTIALS".into(),
        file.to_string_lossy().into_owned(),
    );
    let stack = Stack::start_with(google, env).await;
    let answer = stack.invoke_file("token-function-url.json").await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
}

async fn failed_start(edit: impl FnOnce(&mut std::collections::HashMap<String, String>)) -> String {
    let google = google_emulator().await;
    let runtime = common::RuntimeEmulator::start().await;
    let mut env = broker_env(&google);
    edit(&mut env);
    let mut broker = common::start_broker(&runtime, &env);
    let status = broker
        .wait(Duration::from_secs(20))
        .await
        .expect("the broker exits when it cannot start");
    assert!(
        !status.success(),
        "a broker that cannot start must exit non-zero"
    );
    broker.output()
}

#[tokio::test]
async fn missing_or_ambiguous_configuration_stops_start_up_naming_all_sources() {
    let none = failed_start(|env| {
        env.remove("BROKER_CREDENTIAL_CONFIG");
    })
    .await;
    let two = failed_start(|env| {
        env.insert(
            "GOOGLE_APPLICATION_CREDENTIALS".into(),
            "/tmp/x.json".into(),
        );
    })
    .await;
    for output in [none, two] {
        for name in [
            "BROKER_CREDENTIAL_CONFIG",
            "BROKER_CREDENTIAL_SECRET",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ] {
            assert!(
                output.contains(name),
                "start-up error should name {name}:\n{output}"
            );
        }
        assert!(output.contains("init_failed"), "{output}");
    }
}

#[tokio::test]
async fn invalid_configuration_stops_start_up_naming_the_field() {
    let output = failed_start(|env| {
        let mut config: serde_json::Value =
            serde_json::from_str(&env["BROKER_CREDENTIAL_CONFIG"]).unwrap();
        config["token_url"] = "https://sts.googleapis.com.evil.example/v1/token".into();
        env.insert("BROKER_CREDENTIAL_CONFIG".into(), config.to_string());
    })
    .await;
    assert!(output.contains("`token_url`"), "{output}");
    assert!(output.contains("is not a Google API host"), "{output}");

    let output = failed_start(|env| {
        env.remove("BROKER_ALLOWED_CALLERS");
    })
    .await;
    assert!(
        output.contains("BROKER_ALLOWED_CALLERS is empty"),
        "{output}"
    );
}

#[tokio::test]
async fn unknown_secret_stops_start_up_with_a_hint() {
    let moto = Moto::start().await;
    let output = failed_start(|env| {
        env.remove("BROKER_CREDENTIAL_CONFIG");
        env.insert("BROKER_CREDENTIAL_SECRET".into(), "no-such-secret".into());
        env.insert("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), moto.endpoint());
    })
    .await;
    assert!(
        output.contains("cannot read secret no-such-secret: ResourceNotFoundException"),
        "{output}"
    );
    assert!(output.contains("secretsmanager:GetSecretValue"), "{output}");
}

#[tokio::test]
async fn env_credentials_need_no_metadata_service() {
    let imds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imds_port = imds.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = imds.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });

    let endpoint = format!("http://127.0.0.1:{imds_port}");
    let stack = Stack::start(&[
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ""),
    ])
    .await;
    assert_eq!(
        stack.invoke_file("token-function-url.json").await.status,
        200
    );
    assert_eq!(stack.invoke_file("token-rest-api.json").await.status, 200);
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the broker asked the metadata service although the environment had credentials"
    );
}

#[tokio::test]
async fn sam_local_env_file_serves_a_token() {
    let google = google_emulator().await;
    let text = std::fs::read_to_string(common::root().join("events/env.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).expect("env.json is JSON");
    let variables = file["BrokerFunction"]
        .as_object()
        .expect("env.json sets variables for BrokerFunction");
    // The file points at the emulator's default port; this test's emulator has its own.
    let base = google.base_url();
    let env = variables
        .iter()
        .map(|(k, v)| {
            let value = v
                .as_str()
                .expect("string values")
                .replace("http://127.0.0.1:8086", &base);
            (k.clone(), value)
        })
        .collect();
    let stack = Stack::start_with(google, env).await;
    let answer = stack.invoke_file("token-function-url.json").await;
    assert_eq!(
        answer.status,
        200,
        "{}\n{}",
        answer.raw,
        stack.broker.output()
    );
}
