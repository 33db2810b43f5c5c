//! The `gcp-wif-emulator` binary as scripts use it: the listening line, the admin routes,
//! and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_gcp-wif-emulator");

/// Starts the binary on a free loopback port; answers the child and its base URL.
fn start() -> (Child, String) {
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0"])
        .env("NO_PROXY", "127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("stdout is readable");
    let base_url = line
        .strip_prefix("gcp-wif-emulator listening on ")
        .map(|url| url.trim_end().to_string())
        .unwrap_or_else(|| panic!("unexpected first line on stdout: {line:?}"));
    (child, base_url)
}

fn wait_for_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the binary did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn binary_announces_its_url_obeys_admin_routes_and_exits_on_sigterm() {
    let (mut child, base_url) = start();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    let client = reqwest::Client::new();

    let queued = client
        .post(format!("{base_url}/emulator/faults"))
        .json(&json!({"target": "sts", "status": 503}))
        .send()
        .await
        .expect("the admin route answers");
    assert_eq!(queued.status().as_u16(), 204);

    let exchange = client
        .post(format!("{base_url}/v1/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange")
        .send()
        .await
        .expect("STS answers");
    assert_eq!(
        exchange.status().as_u16(),
        503,
        "the injected fault was not served"
    );

    let calls: Value = client
        .get(format!("{base_url}/emulator/calls"))
        .send()
        .await
        .expect("the admin route answers")
        .json()
        .await
        .expect("calls are JSON");
    assert_eq!(calls, json!({"sts": 1, "iam": 0, "vertex": 0}));

    let signalled = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    let status = wait_for_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit after SIGTERM: {status}");

    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut logs)
        .expect("stderr is readable");
    assert!(logs.contains("injected fault served"), "stderr: {logs}");
}

#[test]
fn binary_prints_help_and_refuses_unknown_options() {
    let help = Command::new(BINARY)
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(help.status.success());
    let usage = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--aws-key AKID:SECRET",
        "--project PROJECT",
        "--model MODEL",
        "--stream-events N",
        "--stream-event-delay-ms MS",
        "abort_after_events",
    ] {
        assert!(usage.contains(flag), "--help lacks {flag:?}:\n{usage}");
    }

    let refused = Command::new(BINARY)
        .arg("--port=1")
        .output()
        .expect("the binary runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown option \"--port\""));
}
