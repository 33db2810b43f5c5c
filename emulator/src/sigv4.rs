//! Checking AWS Signature Version 4, as AWS would: of a subject token, and of a request to the
//! Function URL front.
//!
//! Google STS forwards the signed `GetCallerIdentity` request to AWS; the emulator cannot, so it
//! recomputes the signature with the configured secret keys and refuses what AWS would refuse,
//! in AWS's words (the error type and message Google relays in `invalid_grant`). The Function
//! URL front ([`crate::front`]) checks its callers' signatures (service `lambda`) the same way.

use std::time::Duration;

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::config::AwsKey;
use crate::subject_token::SubjectToken;

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";

/// The `x-amz-date` format, `20200811T065522Z`.
const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// Characters SigV4 leaves unencoded in a canonical query: RFC 3986 unreserved ones.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What SigV4 covers of a request, whatever carried it: a subject token or an HTTP request.
pub(crate) trait SignedRequest {
    /// The HTTP method, upper case.
    fn method(&self) -> &str;
    /// The path as sent, percent-encoded.
    fn path(&self) -> &str;
    /// The query as sent, without `?`; empty when there is none.
    fn query(&self) -> &str;
    /// Every value of the header `name` (lowercase), in the order sent.
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str>;
    /// The authority the request went to, signed as `host` when no `host` header was sent.
    fn host(&self) -> String;
    /// The body.
    fn body(&self) -> &[u8];

    /// The first value of the header `name` (lowercase).
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_values(name).next()
    }
}

impl SignedRequest for SubjectToken {
    fn method(&self) -> &str {
        "POST"
    }

    fn path(&self) -> &str {
        self.url().path()
    }

    fn query(&self) -> &str {
        self.url().query().unwrap_or_default()
    }

    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        SubjectToken::header_values(self, name)
    }

    fn host(&self) -> String {
        SubjectToken::host(self)
    }

    fn body(&self) -> &[u8] {
        SubjectToken::body(self).as_bytes()
    }
}

/// The credential scope a signature must name: its service, and its region when the endpoint
/// implies one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExpectedScope<'a> {
    /// `sts` for a subject token, `lambda` for a Function URL.
    pub(crate) service: &'static str,
    /// The region of the endpoint; `None` accepts any (the global STS endpoint).
    pub(crate) region: Option<&'a str>,
}

/// The identity a valid signature proves.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Signer {
    /// The access key id that signed.
    pub(crate) access_key_id: String,
    /// The region in the credential scope.
    pub(crate) region: String,
}

/// Why AWS would refuse the signed request; the messages never quote a signature or secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SigV4Error {
    #[error("Request is missing Authentication Token")]
    MissingAuthorization,
    #[error("Authorization header is not a valid AWS4-HMAC-SHA256 authorization: {0}.")]
    MalformedAuthorization(&'static str),
    #[error(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
    )]
    MissingDate,
    #[error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\".")]
    MalformedDate,
    #[error("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{scope}' != '{date}'.")]
    ScopeDate { scope: String, date: String },
    #[error("Credential should be scoped to correct service: '{0}'.")]
    ScopeService(&'static str),
    #[error("Credential should be scoped to a valid region, not '{0}'.")]
    ScopeRegion(String),
    #[error(
        "Signature expired: {signed} is now earlier than {earliest} ({now} - {skew_minutes} min.)"
    )]
    Expired {
        signed: String,
        earliest: String,
        now: String,
        skew_minutes: u64,
    },
    #[error("Signature not yet current: {signed} is still later than {latest} ({now} + {skew_minutes} min.)")]
    NotYetCurrent {
        signed: String,
        latest: String,
        now: String,
        skew_minutes: u64,
    },
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error("'Host' must be a 'SignedHeader' in the AWS Authorization.")]
    HostNotSigned,
    #[error("SignedHeaders names '{0}', which the request does not carry.")]
    MissingSignedHeader(String),
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    SignatureMismatch,
}

impl SigV4Error {
    /// The AWS error type for this refusal, as Google relays it.
    pub(crate) fn aws_error_type(&self) -> &'static str {
        match self {
            SigV4Error::MissingAuthorization => "MissingAuthenticationToken",
            SigV4Error::MalformedAuthorization(_)
            | SigV4Error::MissingDate
            | SigV4Error::MalformedDate => "IncompleteSignature",
            SigV4Error::UnknownAccessKey => "InvalidClientTokenId",
            SigV4Error::ScopeDate { .. }
            | SigV4Error::ScopeService(_)
            | SigV4Error::ScopeRegion(_)
            | SigV4Error::Expired { .. }
            | SigV4Error::NotYetCurrent { .. }
            | SigV4Error::HostNotSigned
            | SigV4Error::MissingSignedHeader(_)
            | SigV4Error::SignatureMismatch => "SignatureDoesNotMatch",
        }
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...` header.
struct Authorization<'a> {
    access_key_id: &'a str,
    scope_date: &'a str,
    region: &'a str,
    service: &'a str,
    /// Lowercase and sorted, as the canonical request lists them.
    signed_headers: Vec<String>,
    signature: Vec<u8>,
}

impl<'a> Authorization<'a> {
    fn parse(header: &'a str) -> Result<Self, SigV4Error> {
        let malformed = SigV4Error::MalformedAuthorization;
        let parameters = header
            .strip_prefix(ALGORITHM)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(malformed("the algorithm must be AWS4-HMAC-SHA256"))?;

        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for parameter in parameters.split(',') {
            match parameter.trim().split_once('=') {
                Some(("Credential", value)) => credential = Some(value),
                Some(("SignedHeaders", value)) => signed_headers = Some(value),
                Some(("Signature", value)) => signature = Some(value),
                _ => {
                    return Err(malformed(
                        "expected Credential, SignedHeaders and Signature",
                    ))
                }
            }
        }

        let credential = credential.ok_or(malformed("Credential is missing"))?;
        let [access_key_id, scope_date, region, service, terminator] = credential
            .split('/')
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| malformed("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"))?;
        if terminator != TERMINATOR {
            return Err(malformed("Credential must end in aws4_request"));
        }

        let mut signed_headers: Vec<String> = signed_headers
            .ok_or(malformed("SignedHeaders is missing"))?
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect();
        signed_headers.sort();

        let signature = signature
            .and_then(|hex_text| hex::decode(hex_text).ok())
            .filter(|bytes| bytes.len() == 32)
            .ok_or(malformed("Signature must be 64 hexadecimal digits"))?;

        Ok(Authorization {
            access_key_id,
            scope_date,
            region,
            service,
            signed_headers,
            signature,
        })
    }

    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.scope_date, self.region, self.service, TERMINATOR
        )
    }
}

/// Checks the subject token's signature as AWS STS would at `now`, with the secrets of `keys`.
///
/// Limitation: a session token (`x-amz-security-token`) is accepted unchecked, and only
/// `x-amz-date` (not `Date`) dates a request, because the emulator asks no AWS and Google's
/// libraries always send `x-amz-date`.
pub(crate) fn verify(
    token: &SubjectToken,
    keys: &[AwsKey],
    now: OffsetDateTime,
    max_skew: Duration,
) -> Result<Signer, SigV4Error> {
    // Limitation: the global endpoint accepts any region in the scope (AWS documents
    // us-east-1), because Google's Rust client signs it with the caller's region and the
    // emulator cannot ask AWS what it would accept.
    let scope = ExpectedScope {
        service: "sts",
        region: token.host_region(),
    };
    verify_request(token, scope, keys, now, max_skew)
}

/// Checks the signature of `request` for `scope` as AWS would at `now`, with the secrets of
/// `keys`; the same limitations as [`verify`] apply.
pub(crate) fn verify_request(
    request: &impl SignedRequest,
    scope: ExpectedScope<'_>,
    keys: &[AwsKey],
    now: OffsetDateTime,
    max_skew: Duration,
) -> Result<Signer, SigV4Error> {
    let authorization = request
        .header("authorization")
        .ok_or(SigV4Error::MissingAuthorization)?;
    let authorization = Authorization::parse(authorization)?;
    let amz_date = request
        .header("x-amz-date")
        .ok_or(SigV4Error::MissingDate)?;
    let signed_at = PrimitiveDateTime::parse(amz_date, AMZ_DATE)
        .map_err(|_| SigV4Error::MalformedDate)?
        .assume_utc();

    check_scope(&authorization, scope, amz_date)?;
    check_freshness(signed_at, now, max_skew)?;

    let key = keys
        .iter()
        .find(|key| key.access_key_id() == authorization.access_key_id)
        .ok_or(SigV4Error::UnknownAccessKey)?;
    if !authorization
        .signed_headers
        .iter()
        .any(|name| name == "host")
    {
        return Err(SigV4Error::HostNotSigned);
    }

    let canonical_request = canonical_request(request, &authorization.signed_headers)?;
    let string_to_sign = string_to_sign(amz_date, &authorization.scope(), &canonical_request);
    signature_mac(
        key,
        authorization.scope_date,
        authorization.region,
        scope.service,
        &string_to_sign,
    )
    .verify_slice(&authorization.signature)
    .map_err(|_| SigV4Error::SignatureMismatch)?;

    Ok(Signer {
        access_key_id: authorization.access_key_id.to_string(),
        region: authorization.region.to_string(),
    })
}

fn check_scope(
    authorization: &Authorization<'_>,
    scope: ExpectedScope<'_>,
    amz_date: &str,
) -> Result<(), SigV4Error> {
    let date = amz_date.get(..8).unwrap_or_default();
    if authorization.scope_date != date {
        return Err(SigV4Error::ScopeDate {
            scope: authorization.scope_date.to_string(),
            date: date.to_string(),
        });
    }
    if authorization.service != scope.service {
        return Err(SigV4Error::ScopeService(scope.service));
    }
    match scope.region {
        Some(region) if region != authorization.region => {
            Err(SigV4Error::ScopeRegion(authorization.region.to_string()))
        }
        _ => Ok(()),
    }
}

fn check_freshness(
    signed_at: OffsetDateTime,
    now: OffsetDateTime,
    max_skew: Duration,
) -> Result<(), SigV4Error> {
    let skew = time::Duration::try_from(max_skew).unwrap_or(time::Duration::MAX);
    let format = |instant: OffsetDateTime| instant.format(AMZ_DATE).unwrap_or_default();
    let skew_minutes = max_skew.as_secs() / 60;

    let earliest = now.saturating_sub(skew);
    if signed_at < earliest {
        return Err(SigV4Error::Expired {
            signed: format(signed_at),
            earliest: format(earliest),
            now: format(now),
            skew_minutes,
        });
    }
    let latest = now.saturating_add(skew);
    if signed_at > latest {
        return Err(SigV4Error::NotYetCurrent {
            signed: format(signed_at),
            latest: format(latest),
            now: format(now),
            skew_minutes,
        });
    }
    Ok(())
}

/// The SigV4 canonical request of `request` with its signed headers, path and query as AWS
/// canonicalises them for every service but S3: dot segments removed, the path encoded once
/// more, query pairs decoded, re-encoded and sorted.
fn canonical_request(
    request: &impl SignedRequest,
    signed_headers: &[String],
) -> Result<String, SigV4Error> {
    let mut query: Vec<(String, String)> = form_urlencoded::parse(request.query().as_bytes())
        .map(|(key, value)| (uri_encode(&key), uri_encode(&value)))
        .collect();
    query.sort();
    let query: Vec<String> = query
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();

    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = request.header_values(name).map(normalize_value).collect();
        let value = match (values.is_empty(), name.as_str()) {
            (false, _) => values.join(","),
            (true, "host") => request.host(),
            (true, _) => return Err(SigV4Error::MissingSignedHeader(name.clone())),
        };
        headers.push_str(&format!("{name}:{value}\n"));
    }

    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method(),
        canonical_path(request.path()),
        query.join("&"),
        headers,
        signed_headers.join(";"),
        hex::encode(Sha256::digest(request.body()))
    ))
}

/// The path with `.` and `..` segments removed, each segment encoded again (a `%` of the path
/// as sent becomes `%25`), as AWS's signers do for every service but S3.
fn canonical_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let encoded: Vec<String> = segments.iter().map(|s| uri_encode(s)).collect();
    format!("/{}", encoded.join("/"))
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request))
    )
}

/// An HMAC keyed with the SigV4 signing key of `key` for the scope, fed the string to sign.
fn signature_mac(
    key: &AwsKey,
    date: &str,
    region: &str,
    service: &str,
    string_to_sign: &str,
) -> HmacSha256 {
    let secret = format!("AWS4{}", key.secret_access_key());
    let signing_key = [date, region, service, TERMINATOR]
        .iter()
        .fold(secret.into_bytes(), |key, part| hmac(&key, part));
    let mut mac = keyed(&signing_key);
    mac.update(string_to_sign.as_bytes());
    mac
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = keyed(key);
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn keyed(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn uri_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// A header value as SigV4 canonicalises it: trimmed, inner runs of spaces collapsed.
fn normalize_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::Deserialize;
    use time::macros::datetime;

    const DEFAULT_SKEW: Duration = Duration::from_secs(15 * 60);

    const VECTORS: &str =
        include_str!("../../../shared/conformance/aws-subject-token-signatures.json");

    /// One entry of the shared conformance file.
    #[derive(Deserialize)]
    pub(crate) struct Vector {
        pub(crate) name: String,
        pub(crate) access_key_id: String,
        secret_access_key: String,
        pub(crate) session_token: Option<String>,
        region: String,
        x_amz_date: String,
        pub(crate) audience: String,
        pub(crate) url: String,
        signed_headers: String,
        pub(crate) signature: String,
        canonical_request: String,
        string_to_sign: String,
    }

    pub(crate) fn vectors() -> Vec<Vector> {
        serde_json::from_str(VECTORS).expect("the conformance file is valid JSON")
    }

    impl Vector {
        pub(crate) fn key(&self) -> AwsKey {
            AwsKey::new(&self.access_key_id, &self.secret_access_key)
        }

        pub(crate) fn signed_at(&self) -> OffsetDateTime {
            PrimitiveDateTime::parse(&self.x_amz_date, AMZ_DATE)
                .expect("vector dates are x-amz-date")
                .assume_utc()
        }

        fn authorization(&self, signature: &str) -> String {
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{}/{}/sts/aws4_request, SignedHeaders={}, Signature={signature}",
                self.access_key_id,
                &self.x_amz_date[..8],
                self.region,
                self.signed_headers
            )
        }

        /// The headers a client sends with this vector's request, `host` aside.
        pub(crate) fn headers(&self, signature: &str) -> Vec<(&'static str, String)> {
            let mut headers = vec![
                ("x-goog-cloud-target-resource", self.audience.clone()),
                ("x-amz-date", self.x_amz_date.clone()),
                ("Authorization", self.authorization(signature)),
            ];
            if let Some(session_token) = &self.session_token {
                headers.push(("x-amz-security-token", session_token.clone()));
            }
            headers
        }

        /// The token as a client would send it, optionally listing `host` among the headers.
        fn token(&self, with_host_header: bool, signature: &str) -> SubjectToken {
            let mut headers = self.headers(signature);
            if with_host_header {
                let host = url::Url::parse(&self.url).expect("vector url");
                headers.push(("host", host.host_str().unwrap_or_default().to_string()));
            }
            token_from(&self.url, &headers)
        }
    }

    fn token_from(url: &str, headers: &[(&str, String)]) -> SubjectToken {
        let headers: Vec<_> = headers
            .iter()
            .map(|(key, value)| serde_json::json!({"key": key, "value": value}))
            .collect();
        let json = serde_json::json!({"url": url, "method": "POST", "headers": headers});
        let encoded: String =
            form_urlencoded::byte_serialize(json.to_string().as_bytes()).collect();
        SubjectToken::decode(&encoded).expect("test tokens decode")
    }

    fn verify_at(
        vector: &Vector,
        token: &SubjectToken,
        now: OffsetDateTime,
    ) -> Result<Signer, SigV4Error> {
        verify(token, &[vector.key()], now, Duration::from_secs(15 * 60))
    }

    /// A plain HTTP request, for checks that do not come through a subject token.
    struct Plain {
        method: &'static str,
        path: &'static str,
        query: &'static str,
        headers: Vec<(String, String)>,
    }

    impl SignedRequest for Plain {
        fn method(&self) -> &str {
            self.method
        }
        fn path(&self) -> &str {
            self.path
        }
        fn query(&self) -> &str {
            self.query
        }
        fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
            self.headers
                .iter()
                .filter(move |(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        }
        fn host(&self) -> String {
            "example.amazonaws.com".to_string()
        }
        fn body(&self) -> &[u8] {
            b""
        }
    }

    #[test]
    fn requests_of_the_aws_signature_test_suite_verify_for_their_service() {
        // From AWS's published SigV4 test suite: key AKIDEXAMPLE, service "service".
        let keys = [AwsKey::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )];
        let vanilla = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let query_order = "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500";
        let cases = [
            ("get-vanilla", "/", "", vanilla),
            (
                "get-relative-relative",
                "/example1/example2/../..",
                "",
                vanilla,
            ),
            (
                "get-vanilla-query-order-key-case",
                "/",
                "Param2=value2&Param1=value1",
                query_order,
            ),
        ];
        let scope = ExpectedScope {
            service: "service",
            region: Some("us-east-1"),
        };

        for (name, path, query, signature) in cases {
            let request = Plain {
                method: "GET",
                path,
                query,
                headers: vec![
                    ("host".into(), "example.amazonaws.com".into()),
                    ("x-amz-date".into(), "20150830T123600Z".into()),
                    (
                        "authorization".into(),
                        format!(
                            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
                        ),
                    ),
                ],
            };
            let now = datetime!(2015-08-30 12:36 UTC);

            let signer = verify_request(&request, scope, &keys, now, DEFAULT_SKEW)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(signer.access_key_id, "AKIDEXAMPLE", "{name}");

            let other_service = ExpectedScope {
                service: "lambda",
                ..scope
            };
            let refused = verify_request(&request, other_service, &keys, now, DEFAULT_SKEW);
            assert!(
                matches!(refused, Err(SigV4Error::ScopeService("lambda"))),
                "{name}: {refused:?}"
            );
        }
    }

    #[test]
    fn conformance_vectors_have_both_target_header_variants() {
        let names: Vec<String> = vectors().into_iter().map(|v| v.name).collect();

        for variant in ["/target-signed", "/target-unsigned"] {
            assert!(
                names.iter().any(|name| name.ends_with(variant)),
                "no {variant} vector among {names:?}"
            );
        }
    }

    #[test]
    fn every_conformance_vector_verifies_at_its_date_with_or_without_a_host_header() {
        for vector in vectors() {
            for with_host_header in [true, false] {
                let token = vector.token(with_host_header, &vector.signature);
                let signed_headers: Vec<String> =
                    vector.signed_headers.split(';').map(String::from).collect();

                let canonical = canonical_request(&token, &signed_headers)
                    .unwrap_or_else(|e| panic!("{}: {e}", vector.name));
                assert_eq!(
                    canonical, vector.canonical_request,
                    "{}: canonical request",
                    vector.name
                );
                let scope = format!(
                    "{}/{}/sts/aws4_request",
                    &vector.x_amz_date[..8],
                    vector.region
                );
                assert_eq!(
                    string_to_sign(&vector.x_amz_date, &scope, &canonical),
                    vector.string_to_sign,
                    "{}: string to sign",
                    vector.name
                );

                let signer = verify_at(&vector, &token, vector.signed_at()).unwrap_or_else(|e| {
                    panic!("{} (host header: {with_host_header}): {e}", vector.name)
                });
                assert_eq!(
                    signer,
                    Signer {
                        access_key_id: vector.access_key_id.clone(),
                        region: vector.region.clone()
                    }
                );
            }
        }
    }

    #[test]
    fn a_flipped_signature_byte_is_refused_for_every_vector() {
        for vector in vectors() {
            let mut flipped = hex::decode(&vector.signature).expect("hex signature");
            flipped[7] ^= 0x01;
            let token = vector.token(false, &hex::encode(flipped));

            let result = verify_at(&vector, &token, vector.signed_at());

            assert!(
                matches!(result, Err(SigV4Error::SignatureMismatch)),
                "{}: expected a signature mismatch, got {result:?}",
                vector.name
            );
        }
    }

    #[test]
    fn a_tampered_signed_header_is_refused() {
        let vector = vectors()
            .into_iter()
            .find(|v| v.name.ends_with("session-token/target-signed"))
            .expect("vector");
        let mut headers = vec![
            (
                "x-goog-cloud-target-resource",
                "//iam.googleapis.com/other".to_string(),
            ),
            ("x-amz-date", vector.x_amz_date.clone()),
            ("Authorization", vector.authorization(&vector.signature)),
        ];
        headers.extend(
            vector
                .session_token
                .clone()
                .map(|t| ("x-amz-security-token", t)),
        );

        let result = verify_at(
            &vector,
            &token_from(&vector.url, &headers),
            vector.signed_at(),
        );

        assert!(
            matches!(result, Err(SigV4Error::SignatureMismatch)),
            "{result:?}"
        );
    }

    #[test]
    fn signatures_are_accepted_up_to_the_skew_and_refused_beyond() {
        let vector = &vectors()[0];
        let token = vector.token(false, &vector.signature);
        let signed_at = vector.signed_at();
        let fifteen_minutes = Duration::from_secs(15 * 60);
        let one_second = Duration::from_secs(1);

        for now in [signed_at + fifteen_minutes, signed_at - fifteen_minutes] {
            assert!(verify_at(vector, &token, now).is_ok(), "refused at {now}");
        }

        let late = verify_at(vector, &token, signed_at + fifteen_minutes + one_second);
        assert!(matches!(late, Err(SigV4Error::Expired { .. })), "{late:?}");
        let early = verify_at(vector, &token, signed_at - fifteen_minutes - one_second);
        assert!(
            matches!(early, Err(SigV4Error::NotYetCurrent { .. })),
            "{early:?}"
        );
    }

    #[test]
    fn expired_signature_names_the_instants_like_aws() {
        let vector = &vectors()[0];
        let token = vector.token(false, &vector.signature);

        let error =
            verify_at(vector, &token, datetime!(2020-08-11 08:00 UTC)).expect_err("an hour late");

        assert_eq!(
            error.to_string(),
            "Signature expired: 20200811T065522Z is now earlier than 20200811T074500Z \
             (20200811T080000Z - 15 min.)"
        );
        assert_eq!(error.aws_error_type(), "SignatureDoesNotMatch");
    }

    #[test]
    fn refusals_name_the_aws_error_type() {
        let vector = &vectors()[0];
        let at = vector.signed_at();
        let other_key = AwsKey::new("AKIDOTHER", "secret");
        let unknown_key = verify(
            &vector.token(false, &vector.signature),
            &[other_key],
            at,
            Duration::from_secs(900),
        );
        assert_eq!(
            unknown_key.map_err(|e| e.aws_error_type()).err(),
            Some("InvalidClientTokenId")
        );

        let headers = vec![("Authorization", vector.authorization(&vector.signature))];
        let no_date = verify_at(vector, &token_from(&vector.url, &headers), at);
        assert!(
            matches!(no_date, Err(SigV4Error::MissingDate)),
            "{no_date:?}"
        );

        let headers = vec![("x-amz-date", vector.x_amz_date.clone())];
        let no_authorization = verify_at(vector, &token_from(&vector.url, &headers), at);
        assert_eq!(
            no_authorization.map_err(|e| e.aws_error_type()).err(),
            Some("MissingAuthenticationToken")
        );
    }

    #[test]
    fn scope_must_match_the_date_service_and_regional_host() {
        let vector = &vectors()[0];
        let at = vector.signed_at();
        let cases = [
            ("20200812/us-east-2/sts", "Date in Credential scope"),
            ("20200811/us-east-2/iam", "correct service"),
            ("20200811/eu-west-1/sts", "valid region, not 'eu-west-1'"),
        ];

        for (scope, expected) in cases {
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
                vector.access_key_id, vector.signature
            );
            let headers = vec![
                ("x-amz-date", vector.x_amz_date.clone()),
                ("authorization", authorization),
            ];

            let error = verify_at(vector, &token_from(&vector.url, &headers), at).expect_err(scope);

            assert!(error.to_string().contains(expected), "{scope}: {error}");
        }
    }

    #[test]
    fn host_must_be_signed_and_signed_headers_must_be_present() {
        let vector = &vectors()[0];
        let cases = [
            ("x-amz-date", SigV4Error::HostNotSigned.to_string()),
            (
                "host;x-amz-date;x-amz-security-token",
                SigV4Error::MissingSignedHeader("x-amz-security-token".into()).to_string(),
            ),
        ];

        for (signed_headers, expected) in cases {
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential={}/20200811/us-east-2/sts/aws4_request, SignedHeaders={signed_headers}, Signature={}",
                vector.access_key_id, vector.signature
            );
            let headers = vec![
                ("x-amz-date", vector.x_amz_date.clone()),
                ("Authorization", authorization),
            ];

            let error = verify_at(
                vector,
                &token_from(&vector.url, &headers),
                vector.signed_at(),
            )
            .expect_err(signed_headers);

            assert_eq!(error.to_string(), expected, "{signed_headers}");
        }
    }

    #[test]
    fn malformed_authorizations_are_refused_without_quoting_the_signature() {
        let vector = &vectors()[0];
        let signature = &vector.signature;
        let credential = format!(
            "Credential={}/20200811/us-east-2/sts/aws4_request",
            vector.access_key_id
        );
        let cases = [
            format!("AWS4-HMAC-SHA1 {credential}, SignedHeaders=host, Signature={signature}"),
            format!("AWS4-HMAC-SHA256 SignedHeaders=host, Signature={signature}"),
            format!("AWS4-HMAC-SHA256 Credential=AKID/20200811/sts/aws4_request, SignedHeaders=host, Signature={signature}"),
            format!("AWS4-HMAC-SHA256 Credential=AKID/20200811/us-east-2/sts/aws5, SignedHeaders=host, Signature={signature}"),
            format!("AWS4-HMAC-SHA256 {credential}, Signature={signature}"),
            format!("AWS4-HMAC-SHA256 {credential}, SignedHeaders=host, Signature={}", &signature[2..]),
            format!("AWS4-HMAC-SHA256 {credential}, SignedHeaders=host, Signature=zz{}", &signature[2..]),
            format!("AWS4-HMAC-SHA256 {credential}, SignedHeaders=host, Signature={signature}, Extra"),
        ];

        for authorization in cases {
            let headers = vec![
                ("x-amz-date", vector.x_amz_date.clone()),
                ("authorization", authorization.clone()),
            ];

            let error = verify_at(
                vector,
                &token_from(&vector.url, &headers),
                vector.signed_at(),
            )
            .expect_err(&authorization);

            assert_eq!(
                error.aws_error_type(),
                "IncompleteSignature",
                "{authorization}: {error}"
            );
            assert!(
                !error.to_string().contains(&signature[2..]),
                "{error} quotes the signature"
            );
        }
    }

    /// Signs the way AWS clients do, with this module's primitives (which the vectors check).
    fn signed_token(
        key: &AwsKey,
        url: &str,
        region: &str,
        at: OffsetDateTime,
        audience: &str,
    ) -> SubjectToken {
        let amz_date = at.format(AMZ_DATE).expect("formattable");
        let unsigned = token_from(
            url,
            &[
                ("x-amz-date", amz_date.clone()),
                ("x-goog-cloud-target-resource", audience.to_string()),
            ],
        );
        let signed_headers = vec![
            "host".to_string(),
            "x-amz-date".to_string(),
            "x-goog-cloud-target-resource".to_string(),
        ];
        let scope = format!("{}/{region}/sts/aws4_request", &amz_date[..8]);
        let canonical = canonical_request(&unsigned, &signed_headers).expect("all headers present");
        let signature = signature_mac(
            key,
            &amz_date[..8],
            region,
            "sts",
            &string_to_sign(&amz_date, &scope, &canonical),
        )
        .finalize()
        .into_bytes();
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={}",
            key.access_key_id(),
            signed_headers.join(";"),
            hex::encode(signature)
        );
        token_from(
            url,
            &[
                ("x-amz-date", amz_date),
                ("x-goog-cloud-target-resource", audience.to_string()),
                ("authorization", authorization),
            ],
        )
    }

    #[test]
    fn the_global_endpoint_verifies_with_any_region_in_scope() {
        let key = AwsKey::new("AKIDEXAMPLE", "secret/with+chars");
        let at = datetime!(2025-06-01 12:00 UTC);
        let url = "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15";

        for region in ["us-east-1", "eu-west-1"] {
            let token = signed_token(&key, url, region, at, "aud");

            let signer = verify(
                &token,
                std::slice::from_ref(&key),
                at,
                Duration::from_secs(900),
            );

            assert_eq!(signer.map(|s| s.region).ok().as_deref(), Some(region));
        }
    }
}
