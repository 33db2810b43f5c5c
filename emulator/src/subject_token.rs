//! Decoding an `aws4_request` subject token into the AWS request it carries.
//!
//! The token is the JSON `{"url", "method", "headers": [{"key", "value"}], "body"?}`,
//! percent-encoded. Google's libraries encode it differently (Python writes spaces as `%20`,
//! Go and Rust as `+`; header names come in any case and order; the URL has `?` or `/?` before
//! its query), so decoding follows form semantics and header names are compared in lowercase.

use serde::Deserialize;
use url::Url;

/// The only AWS action whose signed request proves an identity to Google STS.
const ACTION: &str = "GetCallerIdentity";

/// The STS API version Google's libraries sign.
const VERSION: &str = "2011-06-15";

/// A signed AWS STS `GetCallerIdentity` request, as a subject token carries it.
///
/// No `Debug`: the headers hold a signature and possibly a session token.
pub(crate) struct SubjectToken {
    url: Url,
    /// Header names in lowercase, values as sent, in the token's order.
    headers: Vec<(String, String)>,
    body: String,
}

/// Why a subject token is not a signed `GetCallerIdentity` request; never quotes the token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubjectTokenError {
    #[error("The subject token is not percent-encoded UTF-8.")]
    Encoding,
    #[error(
        "The subject token is not JSON of the form \
         {{\"url\", \"method\", \"headers\": [{{\"key\", \"value\"}}]}} \
         (line {line}, column {column})."
    )]
    Json { line: usize, column: usize },
    #[error("The subject token url is not an absolute URL.")]
    Url,
    #[error("The subject token method must be POST, as GetCallerIdentity is signed.")]
    Method,
    #[error("The subject token url must use https.")]
    Scheme,
    #[error("The subject token url host {0:?} is not an AWS STS endpoint.")]
    Host(String),
    #[error("The subject token url must have the path /.")]
    Path,
    #[error("The subject token url must carry Action=GetCallerIdentity and Version=2011-06-15.")]
    Action,
    #[error("The subject token host header differs from the host of its url.")]
    HostHeader,
}

#[derive(Deserialize)]
struct RequestJson {
    url: String,
    method: String,
    headers: Vec<HeaderJson>,
    #[serde(default)]
    body: String,
}

#[derive(Deserialize)]
struct HeaderJson {
    key: String,
    value: String,
}

impl SubjectToken {
    /// Decodes the `subject_token` form value (already form-decoded once) and checks that it is
    /// a POST of `GetCallerIdentity` to an AWS STS endpoint over https.
    pub(crate) fn decode(encoded: &str) -> Result<Self, SubjectTokenError> {
        let plus_as_space = encoded.replace('+', " ");
        let json = percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .map_err(|_| SubjectTokenError::Encoding)?;
        let request: RequestJson =
            serde_json::from_str(&json).map_err(|e| SubjectTokenError::Json {
                line: e.line(),
                column: e.column(),
            })?;
        if request.method != "POST" {
            return Err(SubjectTokenError::Method);
        }

        let url = Url::parse(&request.url).map_err(|_| SubjectTokenError::Url)?;
        let token = SubjectToken {
            url,
            headers: request
                .headers
                .into_iter()
                .map(|header| (header.key.to_ascii_lowercase(), header.value))
                .collect(),
            body: request.body,
        };
        token.check_url()?;
        if token
            .header("host")
            .is_some_and(|host| !host.eq_ignore_ascii_case(&token.host()))
        {
            return Err(SubjectTokenError::HostHeader);
        }
        Ok(token)
    }

    fn check_url(&self) -> Result<(), SubjectTokenError> {
        if self.url.scheme() != "https" {
            return Err(SubjectTokenError::Scheme);
        }
        let host = self.url.host_str().unwrap_or_default();
        if sts_host_region(host).is_none() {
            return Err(SubjectTokenError::Host(host.to_string()));
        }
        if self.url.path() != "/" {
            return Err(SubjectTokenError::Path);
        }
        let query_has =
            |key: &str, value: &str| self.url.query_pairs().any(|(k, v)| k == key && v == value);
        if !query_has("Action", ACTION) || !query_has("Version", VERSION) {
            return Err(SubjectTokenError::Action);
        }
        Ok(())
    }

    /// The request URL; its path is `/` and its query names `GetCallerIdentity`.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The request body; Google's libraries send none.
    pub(crate) fn body(&self) -> &str {
        &self.body
    }

    /// The first value of the header `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of the header `name` (lowercase), in the token's order.
    pub(crate) fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The `host` the request goes to: the URL's host, with its port when not the default.
    pub(crate) fn host(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    /// The region named by a regional STS host, `None` for the global `sts.amazonaws.com`.
    pub(crate) fn host_region(&self) -> Option<&str> {
        sts_host_region(self.url.host_str().unwrap_or_default()).flatten()
    }
}

/// `Some(Some(region))` for a regional AWS STS host, `Some(None)` for the global one, `None` for
/// anything else.
fn sts_host_region(host: &str) -> Option<Option<&str>> {
    let name = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    if name == "sts" {
        return Some(None);
    }
    let region = name
        .strip_prefix("sts.")
        .or_else(|| name.strip_prefix("sts-fips."))?;
    let is_region = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    is_region.then_some(Some(region))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON of a token as the Rust client writes it, with `url` and `headers` swapped in.
    fn token_json(url: &str, headers: &[(&str, &str)]) -> String {
        let headers: Vec<_> = headers
            .iter()
            .map(|(key, value)| serde_json::json!({"key": key, "value": value}))
            .collect();
        serde_json::json!({"url": url, "method": "POST", "headers": headers, "body": ""})
            .to_string()
    }

    fn form_encode(text: &str) -> String {
        form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }

    const URL: &str =
        "https://sts.us-east-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";
    const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKID/20200811/us-east-2/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";

    #[test]
    fn plus_and_percent_20_both_decode_to_space() {
        let json = token_json(URL, &[("Authorization", AUTHORIZATION)]);
        let with_plus = form_encode(&json);
        let with_percent_20 = with_plus.replace('+', "%20");
        assert!(with_plus.contains('+') && !with_percent_20.contains('+'));

        for encoded in [with_plus, with_percent_20] {
            let token = SubjectToken::decode(&encoded).expect("a valid token");
            assert_eq!(
                token.header("authorization"),
                Some(AUTHORIZATION),
                "from {encoded}"
            );
        }
    }

    #[test]
    fn encoded_plus_stays_a_plus() {
        let json = token_json(URL, &[("x-amz-security-token", "abc+def/ghi=")]);

        let token = SubjectToken::decode(&form_encode(&json)).expect("a valid token");

        assert_eq!(token.header("x-amz-security-token"), Some("abc+def/ghi="));
    }

    #[test]
    fn header_names_match_in_any_case_and_order() {
        let json = token_json(
            URL,
            &[
                ("X-Goog-Cloud-Target-Resource", "aud"),
                ("X-AMZ-DATE", "20200811T065522Z"),
                ("authorization", AUTHORIZATION),
                ("Host", "sts.us-east-2.amazonaws.com"),
            ],
        );

        let token = SubjectToken::decode(&form_encode(&json)).expect("a valid token");

        assert_eq!(token.header("x-goog-cloud-target-resource"), Some("aud"));
        assert_eq!(token.header("x-amz-date"), Some("20200811T065522Z"));
        assert_eq!(token.header("authorization"), Some(AUTHORIZATION));
        assert_eq!(token.header("host"), Some("sts.us-east-2.amazonaws.com"));
    }

    #[test]
    fn regional_global_and_slash_query_urls_are_accepted() {
        let cases = [
            (URL, Some("us-east-2")),
            ("https://sts.us-east-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15", Some("us-east-2")),
            ("https://sts.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15", None),
            ("https://sts-fips.us-gov-west-1.amazonaws.com/?Version=2011-06-15&Action=GetCallerIdentity", Some("us-gov-west-1")),
            ("https://sts.cn-north-1.amazonaws.com.cn?Action=GetCallerIdentity&Version=2011-06-15", Some("cn-north-1")),
        ];

        for (url, region) in cases {
            let token = SubjectToken::decode(&form_encode(&token_json(url, &[])))
                .unwrap_or_else(|e| panic!("{url} should be accepted: {e}"));
            assert_eq!(token.url().path(), "/", "{url}");
            assert_eq!(token.host_region(), region, "{url}");
        }
    }

    #[test]
    fn requests_other_than_get_caller_identity_over_https_to_sts_are_refused() {
        let json_with = |url: &str| token_json(url, &[]);
        let cases = [
            ("not percent-encoded UTF-8", "%FF%FE".to_string(), "UTF-8"),
            ("not JSON", form_encode("{\"url\":"), "not JSON"),
            ("no headers", form_encode(r#"{"url":"x","method":"POST"}"#), "not JSON"),
            ("GET", form_encode(&json_with(URL).replace("POST", "GET")), "POST"),
            ("relative url", form_encode(&json_with("/?Action=GetCallerIdentity")), "absolute"),
            ("http", form_encode(&json_with(&URL.replace("https", "http"))), "https"),
            ("other host", form_encode(&json_with("https://evil.example.com?Action=GetCallerIdentity&Version=2011-06-15")), "not an AWS STS"),
            ("lookalike host", form_encode(&json_with("https://sts.amazonaws.com.evil.example?Action=GetCallerIdentity&Version=2011-06-15")), "not an AWS STS"),
            ("other service", form_encode(&json_with("https://iam.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15")), "not an AWS STS"),
            ("path", form_encode(&json_with("https://sts.amazonaws.com/x?Action=GetCallerIdentity&Version=2011-06-15")), "path"),
            ("other action", form_encode(&json_with("https://sts.amazonaws.com?Action=AssumeRole&Version=2011-06-15")), "Action"),
            ("no version", form_encode(&json_with("https://sts.amazonaws.com?Action=GetCallerIdentity")), "Action"),
            ("host header", form_encode(&token_json(URL, &[("host", "sts.amazonaws.com")])), "host header"),
        ];

        for (case, encoded, expected) in cases {
            match SubjectToken::decode(&encoded) {
                Ok(_) => panic!("{case}: accepted, expected an error mentioning {expected:?}"),
                Err(e) => assert!(
                    e.to_string().contains(expected),
                    "{case}: error {e:?} does not mention {expected:?}"
                ),
            }
        }
    }
}
