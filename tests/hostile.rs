//! Malformed and hostile invocations through the real binary: each gets its documented 4xx,
//! and the same process serves a valid request right after.

mod common;

use common::{event, Stack};
use serde_json::{json, Value};

fn body(text: &str) -> Value {
    let mut event = event("token-function-url.json");
    event["body"] = json!(text);
    event
}

fn base64_body(bytes: &[u8]) -> Value {
    let mut event = event("token-function-url.json");
    event["body"] = json!(base64(bytes));
    event["isBase64Encoded"] = json!(true);
    event
}

fn path(method: &str, path: &str) -> Value {
    let mut event = event("token-function-url.json");
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["body"] = Value::Null;
    event
}

fn identity(edit: impl FnOnce(&mut Value)) -> Value {
    let mut event = event("token-function-url.json");
    edit(&mut event);
    event
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn cases() -> Vec<(&'static str, Value, u16)> {
    let scope = "https://www.googleapis.com/auth/cloud-platform";
    let many_scopes: Vec<&str> = vec![scope; 33];
    let huge_array = format!("{{\"scopes\": [{}]}}", vec!["\"x\""; 20_000].join(","));
    let deep = format!("{}{}", "[".repeat(4000), "]".repeat(4000));
    vec![
        ("not JSON", body("hello"), 400),
        ("JSON array", body("[]"), 400),
        ("JSON string", body("\"x\""), 400),
        ("JSON number", body("42"), 400),
        ("JSON null", body("null"), 400),
        ("truncated JSON", body("{\"scopes\": ["), 400),
        ("scopes is a number", body("{\"scopes\": 5}"), 400),
        ("scopes hold numbers", body("{\"scopes\": [1, 2]}"), 400),
        ("scopes hold objects", body("{\"scopes\": [{}]}"), 400),
        ("empty scopes", body("{\"scopes\": []}"), 400),
        (
            "too many scopes",
            body(&json!({"scopes": many_scopes}).to_string()),
            400,
        ),
        ("huge scope array", body(&huge_array), 413),
        ("deep nesting", body(&deep), 400),
        (
            "scope beyond the ceiling",
            body("{\"scopes\": [\"https://www.googleapis.com/auth/gmail.send\"]}"),
            400,
        ),
        (
            "scope with CRLF",
            body(&json!({"scopes": [format!("{scope}\r\nX-Evil: 1")]}).to_string()),
            400,
        ),
        (
            "lifetime as string",
            body("{\"lifetime_seconds\": \"3600\"}"),
            400,
        ),
        (
            "lifetime as float",
            body("{\"lifetime_seconds\": 1.5}"),
            400,
        ),
        ("zero lifetime", body("{\"lifetime_seconds\": 0}"), 400),
        ("negative lifetime", body("{\"lifetime_seconds\": -5}"), 400),
        ("huge lifetime", body("{\"lifetime_seconds\": 1e30}"), 400),
        (
            "u64::MAX lifetime",
            body("{\"lifetime_seconds\": 18446744073709551615}"),
            400,
        ),
        (
            "lifetime over the maximum",
            body("{\"lifetime_seconds\": 3601}"),
            400,
        ),
        ("unknown field", body("{\"scope\": [\"x\"]}"), 400),
        (
            "duplicate field",
            body("{\"lifetime_seconds\": 900, \"lifetime_seconds\": 901}"),
            400,
        ),
        ("oversized body", body(&" ".repeat(17 * 1024)), 413),
        (
            "invalid UTF-8 (base64)",
            base64_body(&[0x7b, 0xff, 0xfe, 0x7d]),
            400,
        ),
        ("base64 of non-JSON", base64_body(b"\x00\x01\x02"), 400),
        (
            "caller-supplied authorization without IAM context",
            identity(|e| {
                e["requestContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("authorizer");
                e["headers"]["authorization"] = json!("AWS4-HMAC-SHA256 Credential=AKIDX/20261203/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00");
            }),
            403,
        ),
        (
            "spoofed x-amzn identity headers",
            identity(|e| {
                e["requestContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("authorizer");
                e["headers"]["x-amzn-oidc-identity"] =
                    json!("arn:aws:sts::123456789012:assumed-role/app-role/x");
                e["headers"]["x-amz-user-arn"] =
                    json!("arn:aws:sts::123456789012:assumed-role/app-role/x");
            }),
            403,
        ),
        (
            "IAM authorizer without userArn",
            identity(|e| {
                e["requestContext"]["authorizer"]["iam"]
                    .as_object_mut()
                    .unwrap()
                    .remove("userArn");
            }),
            403,
        ),
        (
            "empty userArn",
            identity(|e| e["requestContext"]["authorizer"]["iam"]["userArn"] = json!("")),
            403,
        ),
        (
            "wildcard userArn",
            identity(|e| e["requestContext"]["authorizer"]["iam"]["userArn"] = json!("*")),
            403,
        ),
        (
            "lookalike role name",
            identity(|e| {
                e["requestContext"]["authorizer"]["iam"]["userArn"] =
                    json!("arn:aws:sts::123456789012:assumed-role/app-role-evil/s");
            }),
            403,
        ),
        (
            "allowed role in another account",
            identity(|e| {
                e["requestContext"]["authorizer"]["iam"]["userArn"] =
                    json!("arn:aws:sts::999999999999:assumed-role/app-role/s");
            }),
            403,
        ),
        (
            "no request context",
            identity(|e| {
                e.as_object_mut().unwrap().remove("requestContext");
            }),
            403,
        ),
        (
            "empty request context",
            identity(|e| e["requestContext"] = json!({})),
            403,
        ),
        ("raw non-HTTP event", json!({"foo": "bar"}), 403),
        ("raw JSON array event", json!([1, 2, 3]), 403),
        ("raw JSON string event", json!("hello"), 403),
        (
            "raw S3-style event",
            json!({"Records": [{"eventSource": "aws:s3"}]}),
            403,
        ),
        (
            "REST double stage prefix",
            {
                let mut e = event("token-rest-api.json");
                e["path"] = json!("/prod/prod/token");
                e["requestContext"]["path"] = json!("/prod/prod/token");
                e
            },
            404,
        ),
        (
            "dot segments in path",
            path("GET", "/token/../healthz"),
            404,
        ),
        ("upper-case route", path("GET", "/TOKEN"), 404),
        ("percent-encoded route", path("GET", "/%74oken"), 404),
        ("double slash", path("GET", "//token"), 404),
        ("TRACE method", path("TRACE", "/token"), 405),
        ("POST to healthz", path("POST", "/healthz"), 405),
        (
            "GET to a model route",
            path("GET", "/v1/models/gemini-2.5-flash:generateContent"),
            405,
        ),
        (
            "encoded traversal in model",
            path("POST", "/v1/models/..%2f..%2fx:generateContent"),
            400,
        ),
        (
            "unicode model name",
            path("POST", "/v1/models/gemini-2.5-flásh:generateContent"),
            400,
        ),
        (
            "over-long path",
            path(
                "POST",
                &format!("/v1/models/{}:generateContent", "g".repeat(2000)),
            ),
            400,
        ),
    ]
}

#[tokio::test]
async fn hostile_invocations_get_their_documented_4xx_and_the_process_keeps_serving() {
    let stack = Stack::start(&[]).await;
    let valid = event("token-function-url.json");
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the table must hold at least 40 cases, has {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for (name, event, expected) in &cases {
        let answer = stack.invoke(event).await;
        if answer.status != *expected {
            failures.push(format!(
                "{name}: expected {expected}, got {} ({})",
                answer.status, answer.raw
            ));
        } else if answer.body["error"]["code"] != *expected {
            failures.push(format!("{name}: no Google error envelope: {}", answer.raw));
        }
        let after = stack.invoke(&valid).await;
        assert_eq!(
            after.status, 200,
            "after {name} the broker no longer serves: {}",
            after.raw
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        !stack.broker.output().contains("panicked"),
        "the broker panicked:\n{}",
        stack.broker.output()
    );
}

#[tokio::test]
async fn a_query_string_is_ignored_by_token_requests() {
    let stack = Stack::start(&[]).await;
    let mut event = event("token-function-url.json");
    event["rawQueryString"] =
        json!("scopes=https://www.googleapis.com/auth/gmail.send&lifetime_seconds=40000");
    event["queryStringParameters"] = json!({"scopes": "https://www.googleapis.com/auth/gmail.send", "lifetime_seconds": "40000"});
    let answer = stack.invoke(&event).await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(
        answer.body["scopes"],
        json!(["https://www.googleapis.com/auth/cloud-platform"])
    );
    assert!(answer.body["expires_in"].as_u64().unwrap() <= 1800);
}

/// Limitation: lambda_http panics while turning an event whose Host header is not a valid
/// authority into a request, before the broker's handler runs; lambda_runtime catches the panic
/// and answers an invocation error. AWS sets Host itself on Function URLs and API Gateway, so
/// only a direct lambda:InvokeFunction caller can send such an event. The process must survive.
#[tokio::test]
async fn an_unparseable_host_header_fails_that_invocation_only() {
    let stack = Stack::start(&[]).await;
    let mut hostile = event("token-function-url.json");
    hostile["headers"]["host"] = json!("abc.lambda-url.us-east-1.on.aws.[com");
    let url = format!(
        "http://127.0.0.1:{}/2015-03-31/functions/_/invocations",
        stack.runtime.port
    );
    let answer: Value = reqwest::Client::new()
        .post(url)
        .json(&hostile)
        .send()
        .await
        .expect("the runtime emulator answers")
        .json()
        .await
        .expect("a JSON invocation error");
    assert!(answer["errorType"].is_string(), "{answer}");
    assert_eq!(
        stack.invoke_file("token-function-url.json").await.status,
        200
    );
}
