//! The AWS subject token: a signed `GetCallerIdentity` request that Google replays to AWS.
//!
//! Google STS does not take AWS credentials; it takes a description of a request signed with
//! them. Google sends that request to AWS STS, and AWS's answer tells Google which role the
//! broker runs as. The `x-goog-cloud-target-resource` header is signed too, binding the token
//! to one workload identity provider so it cannot be replayed against another.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use crate::error::{Stage, UpstreamError};
use crate::hints;
use crate::secret::SecretString;

/// The header that binds a subject token to its audience.
pub const TARGET_RESOURCE_HEADER: &str = "x-goog-cloud-target-resource";

/// Everything but RFC 3986's unreserved characters is escaped, as Google's clients do.
const TOKEN_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A serialized, percent-encoded subject token, ready for the STS form.
#[derive(Debug, Clone)]
pub struct SubjectToken(SecretString);

impl SubjectToken {
    /// Signs `GetCallerIdentity` at `verification_url` for `audience` with `credentials` at
    /// `now` (AWS accepts a signature for 15 minutes).
    pub fn sign(
        verification_url: &Url,
        region: &str,
        audience: &str,
        credentials: &Credentials,
        now: SystemTime,
    ) -> Result<Self, UpstreamError> {
        let failed = |what: &str| {
            UpstreamError::refused(
                Stage::SubjectToken,
                None,
                format!("could not sign GetCallerIdentity: {what}"),
                hints::AWS_SIGNATURE,
            )
        };
        let host = verification_url
            .host_str()
            .ok_or_else(|| failed("the verification URL has no host"))?;

        let identity: Identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("sts")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| failed("incomplete signing parameters"))?
            .into();
        let unsigned = [("host", host), (TARGET_RESOURCE_HEADER, audience)];
        let request = SignableRequest::new(
            "POST",
            verification_url.as_str(),
            unsigned.iter().copied(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|_| failed("the verification URL is not a valid request URI"))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|_| failed("the signer refused the request"))?
            .into_parts();

        let mut headers: Vec<serde_json::Value> = unsigned
            .iter()
            .copied()
            .chain(instructions.headers())
            .map(|(key, value)| serde_json::json!({"key": key, "value": value}))
            .collect();
        headers.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
        let document = serde_json::json!({
            "url": verification_url.as_str(),
            "method": "POST",
            "headers": headers,
        });
        let encoded = utf8_percent_encode(&document.to_string(), TOKEN_ESCAPES).to_string();
        Ok(Self(SecretString::new(encoded)))
    }

    /// The encoded token, for the STS request body only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        region: String,
        x_amz_date: String,
        audience: String,
        url: String,
        signed_headers: String,
        signature: String,
    }

    fn vectors() -> Vec<Vector> {
        serde_json::from_str(include_str!(
            "../../shared/conformance/aws-subject-token-signatures.json"
        ))
        .expect("conformance vectors parse")
    }

    fn instant(x_amz_date: &str) -> SystemTime {
        let format =
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        time::PrimitiveDateTime::parse(x_amz_date, format)
            .expect("x_amz_date parses")
            .assume_utc()
            .into()
    }

    fn decode(token: &SubjectToken) -> serde_json::Value {
        let json = percent_encoding::percent_decode_str(token.expose())
            .decode_utf8()
            .expect("utf-8");
        serde_json::from_str(&json).expect("token is JSON")
    }

    fn headers_of(document: &serde_json::Value) -> BTreeMap<String, String> {
        document["headers"]
            .as_array()
            .expect("headers list")
            .iter()
            .map(|h| {
                (
                    h["key"].as_str().unwrap().to_ascii_lowercase(),
                    h["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn signatures_match_the_target_signed_conformance_vectors() {
        let vectors: Vec<Vector> = vectors()
            .into_iter()
            .filter(|v| v.name.ends_with("/target-signed"))
            .collect();
        assert!(vectors.len() >= 4, "expected the target-signed vectors");
        for vector in vectors {
            let credentials = Credentials::new(
                &vector.access_key_id,
                &vector.secret_access_key,
                vector.session_token.clone(),
                None,
                "conformance",
            );
            let url = Url::parse(&vector.url).expect("vector URL");
            let token = SubjectToken::sign(
                &url,
                &vector.region,
                &vector.audience,
                &credentials,
                instant(&vector.x_amz_date),
            )
            .expect("signing succeeds");
            let document = decode(&token);
            let headers = headers_of(&document);
            let authorization = &headers["authorization"];
            assert!(
                authorization.ends_with(&format!("Signature={}", vector.signature)),
                "{}: got {authorization}",
                vector.name
            );
            assert!(
                authorization.contains(&format!("SignedHeaders={},", vector.signed_headers)),
                "{}: got {authorization}",
                vector.name
            );
            assert_eq!(headers["x-amz-date"], vector.x_amz_date, "{}", vector.name);
            assert_eq!(headers[TARGET_RESOURCE_HEADER], vector.audience);
            assert_eq!(
                headers.get("x-amz-security-token"),
                vector.session_token.as_ref(),
                "{}",
                vector.name
            );
            assert_eq!(document["method"], "POST");
            assert_eq!(
                Url::parse(document["url"].as_str().unwrap()).unwrap(),
                url,
                "{}",
                vector.name
            );
        }
    }

    #[test]
    fn token_is_fully_percent_encoded_and_redacted_in_debug() {
        let vector = vectors().into_iter().next().expect("a vector");
        let credentials = Credentials::new(
            &vector.access_key_id,
            &vector.secret_access_key,
            vector.session_token.clone(),
            None,
            "conformance",
        );
        let token = SubjectToken::sign(
            &Url::parse(&vector.url).unwrap(),
            &vector.region,
            &vector.audience,
            &credentials,
            instant(&vector.x_amz_date),
        )
        .unwrap();
        assert!(token
            .expose()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        assert_eq!(format!("{token:?}"), "SubjectToken(<redacted>)");
    }
}
