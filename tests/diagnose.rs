//! `GET /diagnose` through the real binary.

mod common;

use common::{event, Stack};
use gcp_wif_broker::hints;
use gcp_wif_emulator::{Fault, StatusCode, Target};
use serde_json::{json, Value};

fn diagnose(query: &str) -> Value {
    let mut event = event("healthz-function-url.json");
    event["rawPath"] = json!("/diagnose");
    event["requestContext"]["http"]["path"] = json!("/diagnose");
    event["rawQueryString"] = json!(query);
    event
}

fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

#[tokio::test]
async fn a_healthy_setup_reports_every_stage_ok() {
    let stack = Stack::start(&[]).await;
    let answer = stack.invoke(&diagnose("model=gemini-2.5-flash")).await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
    let report = &answer.body;
    assert_eq!(report["ok"], true, "{report}");
    let names: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "configuration",
            "aws_credentials",
            "subject_token",
            "sts",
            "impersonation",
            "vertex"
        ]
    );
    for name in names {
        assert_eq!(stage(report, name)["outcome"], "ok", "{name}: {report}");
        assert!(stage(report, name)["ms"].is_number());
    }
    // One exchange for the diagnosis itself, one for the token the Vertex call takes from the cache.
    assert_eq!(stack.google.calls(Target::Sts), 2);
    assert_eq!(stack.google.calls(Target::Vertex), 1);

    let again = stack.invoke(&diagnose("")).await;
    assert_eq!(stage(&again.body, "vertex")["outcome"], "skipped");
    assert_eq!(
        stack.google.calls(Target::Sts),
        3,
        "each diagnosis runs the exchange afresh"
    );
}

#[tokio::test]
async fn a_missing_binding_is_named_with_its_hint() {
    let stack = Stack::start(&[]).await;
    stack
        .google
        .inject(Target::Iam, Fault::status(StatusCode::FORBIDDEN));
    let answer = stack.invoke(&diagnose("model=gemini-2.5-flash")).await;
    let report = &answer.body;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(stage(report, "sts")["outcome"], "ok");
    let impersonation = stage(report, "impersonation");
    assert_eq!(impersonation["outcome"], "failed");
    assert_eq!(impersonation["hint"], hints::BINDING);
    assert_eq!(stage(report, "vertex")["outcome"], "skipped");
    assert_eq!(stack.google.calls(Target::Vertex), 0);
}

#[tokio::test]
async fn a_wrong_audience_fails_at_sts_and_skips_the_rest() {
    let stack = Stack::start(&[]).await;
    stack.google.inject(
        Target::Sts,
        Fault::status(StatusCode::BAD_REQUEST).with_body(
            r#"{"error": "invalid_target", "error_description": "The target service indicated by the \"audience\" parameters is invalid."}"#,
        ),
    );
    let report = stack.invoke(&diagnose("")).await.body;
    assert_eq!(stage(&report, "sts")["outcome"], "failed", "{report}");
    assert_eq!(stage(&report, "sts")["hint"], hints::PROVIDER);
    assert_eq!(stage(&report, "impersonation")["outcome"], "skipped");
}

#[tokio::test]
async fn the_report_holds_no_credential_and_needs_authorization() {
    let stack = Stack::start(&[]).await;
    let answer = stack.invoke(&diagnose("model=gemini-2.5-flash")).await;
    for secret in [
        "emulator-",
        gcp_wif_emulator::DEFAULT_SECRET_ACCESS_KEY,
        "local-session-token-for-tests",
        "Signature=",
    ] {
        assert!(
            !answer.text.contains(secret),
            "the report contains {secret}: {}",
            answer.text
        );
    }

    let mut anonymous = diagnose("");
    anonymous["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    assert_eq!(stack.invoke(&anonymous).await.status, 403);
}
