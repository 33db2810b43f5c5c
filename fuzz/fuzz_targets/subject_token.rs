//! Arbitrary region, audience and AWS keys into `SubjectToken::sign` at a fixed instant.
//!
//! The input is text with up to five fields separated by NUL bytes, so a crash input reads as
//! what it is: `region`, `audience`, `access_key_id`, `secret_access_key` and an optional
//! `session_token`. Fields may hold anything else, newlines and control characters included.
//!
//! Signing may refuse an input, but never panic; a token it returns must be percent-encoded
//! ASCII that decodes to the documented JSON, with the audience bound in unchanged.

#![no_main]

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use gcp_wif_broker::credential_config::CredentialConfig;
use gcp_wif_broker::subject_token::{SubjectToken, TARGET_RESOURCE_HEADER};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use url::Url;

/// The shared conformance configuration: the verification URL template a real broker uses.
const CONFIG: &str = include_str!("../../../shared/conformance/external-account-aws.json");

/// 2020-08-11T06:55:22Z, the instant of the conformance vectors.
const SIGNED_AT: Duration = Duration::from_secs(1_597_128_922);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.split('\0');
    let mut next = || fields.next().unwrap_or_default();
    let (region, audience, key_id, secret) = (next(), next(), next(), next());
    let session_token = Some(next()).filter(|t| !t.is_empty());

    let config = CredentialConfig::parse(CONFIG, false).expect("the conformance config is valid");
    // A broker only signs for a region that gives a valid verification URL; other regions
    // still reach the signer, with the URL of a valid one.
    let url = config
        .verification_url(region)
        .or_else(|_| config.verification_url("us-east-1"))
        .expect("us-east-1 gives a verification URL");
    let credentials = Credentials::new(
        key_id,
        secret,
        session_token.map(str::to_owned),
        None,
        "fuzz",
    );
    let now = SystemTime::UNIX_EPOCH + SIGNED_AT;

    let Ok(token) = SubjectToken::sign(&url, region, audience, &credentials, now) else {
        return;
    };
    let again = SubjectToken::sign(&url, region, audience, &credentials, now)
        .expect("the same input signs again");
    assert_eq!(
        token.expose(),
        again.expose(),
        "signing is not deterministic"
    );
    check_token(token.expose(), &url, audience);
});

/// Panics unless `encoded` is the percent-encoded subject token document for `url` and
/// `audience`.
fn check_token(encoded: &str, url: &Url, audience: &str) {
    let bytes = encoded.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let escape = bytes.get(at + 1..at + 3).unwrap_or_default();
                assert!(
                    escape.len() == 2
                        && escape
                            .iter()
                            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
                    "a bad escape at byte {at} of {encoded}"
                );
                at += 3;
            }
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => at += 1,
            b => panic!("byte {b:#04x} at {at} is not percent-encoded in {encoded}"),
        }
    }

    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .unwrap_or_else(|e| panic!("the decoded token is not UTF-8 ({e}): {encoded}"));
    let document: Value = serde_json::from_str(&decoded)
        .unwrap_or_else(|e| panic!("the decoded token is not JSON ({e}): {decoded}"));
    assert_eq!(document["url"], url.as_str(), "{document}");
    assert_eq!(document["method"], "POST", "{document}");
    let headers = document["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers array: {document}"));
    let bound: Vec<&Value> = headers
        .iter()
        .filter(|h| h["key"] == TARGET_RESOURCE_HEADER)
        .map(|h| &h["value"])
        .collect();
    assert_eq!(
        bound,
        [&Value::from(audience)],
        "the audience is not bound exactly once and unchanged: {document}"
    );
    assert!(
        headers.iter().any(|h| h["key"]
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case("authorization"))),
        "no authorization header: {document}"
    );
}
