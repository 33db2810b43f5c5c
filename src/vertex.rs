//! Where Gemini requests go: the Vertex AI project, location, model allowlist and endpoint.
//!
//! Callers name a model and a method; the broker alone decides the upstream URL, built from
//! its own settings and from path segments that passed a strict character check, so nothing a
//! caller writes can steer a request (or the broker's token) to another host or resource.

use std::collections::HashMap;

use url::Url;

use crate::endpoint::{EndpointError, EndpointPolicy};

/// The location used when `GOOGLE_CLOUD_LOCATION` is unset.
pub const DEFAULT_LOCATION: &str = "global";

/// The models callers may use when `BROKER_ALLOWED_MODELS` is unset.
pub const DEFAULT_ALLOWED_MODELS: &str = "gemini-*";

/// Model ids are short; anything longer is not one.
const MAX_MODEL_LEN: usize = 128;

/// A Gemini method the broker forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `generateContent`: one JSON answer.
    GenerateContent,
    /// `streamGenerateContent`: server-sent events (`alt=sse` upstream).
    StreamGenerateContent,
    /// `countTokens`.
    CountTokens,
}

impl Method {
    /// Parses the method part of `model:method`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "generateContent" => Some(Method::GenerateContent),
            "streamGenerateContent" => Some(Method::StreamGenerateContent),
            "countTokens" => Some(Method::CountTokens),
            _ => None,
        }
    }

    /// The name Vertex uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::GenerateContent => "generateContent",
            Method::StreamGenerateContent => "streamGenerateContent",
            Method::CountTokens => "countTokens",
        }
    }
}

/// Forwarding settings, from `GOOGLE_CLOUD_PROJECT`, `GOOGLE_CLOUD_LOCATION`,
/// `BROKER_ALLOWED_LOCATIONS`, `BROKER_ALLOWED_MODELS` and `BROKER_VERTEX_ENDPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexSettings {
    /// The only project requests may name.
    pub project: String,
    /// The location of the short routes, always allowed.
    pub location: String,
    /// Further locations callers may name.
    pub extra_locations: Vec<String>,
    /// Model id patterns, `*` matching any run of characters.
    pub model_patterns: Vec<String>,
    /// Overrides the host derived from the location.
    pub endpoint: Option<Url>,
}

/// A forwarding setting that is wrong; start-up stops with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VertexSettingsError {
    /// A variable with a value of the wrong shape.
    #[error("{name} {problem}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What was expected.
        problem: String,
    },
}

fn invalid(name: &'static str, problem: impl Into<String>) -> VertexSettingsError {
    VertexSettingsError::Invalid {
        name,
        problem: problem.into(),
    }
}

impl VertexSettings {
    /// Reads the settings; `None` when `GOOGLE_CLOUD_PROJECT` is unset, which leaves Gemini
    /// forwarding off and the broker a token broker only.
    pub fn from_env(
        env: &HashMap<String, String>,
        policy: &EndpointPolicy,
    ) -> Result<Option<Self>, VertexSettingsError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let Some(project) = get("GOOGLE_CLOUD_PROJECT") else {
            return Ok(None);
        };
        if !crate::credential_config::is_project_id(project) {
            return Err(invalid(
                "GOOGLE_CLOUD_PROJECT",
                "must be a Google Cloud project id",
            ));
        }

        let location = get("GOOGLE_CLOUD_LOCATION").unwrap_or(DEFAULT_LOCATION);
        if !is_location(location) {
            return Err(invalid(
                "GOOGLE_CLOUD_LOCATION",
                "must be global, us, eu or a region such as us-central1",
            ));
        }
        let extra_locations = list(get("BROKER_ALLOWED_LOCATIONS").unwrap_or(""));
        if extra_locations.iter().any(|l| !is_location(l)) {
            return Err(invalid(
                "BROKER_ALLOWED_LOCATIONS",
                "must be a comma-separated list of locations such as us-central1,europe-west4",
            ));
        }

        let model_patterns = list(get("BROKER_ALLOWED_MODELS").unwrap_or(DEFAULT_ALLOWED_MODELS));
        let pattern_ok = |p: &String| {
            !p.is_empty()
                && p.len() <= MAX_MODEL_LEN
                && p.bytes().all(|b| is_model_byte(b) || b == b'*')
        };
        if model_patterns.is_empty() || !model_patterns.iter().all(pattern_ok) {
            return Err(invalid(
                "BROKER_ALLOWED_MODELS",
                "must be a comma-separated list of model id patterns such as gemini-*",
            ));
        }

        let endpoint = get("BROKER_VERTEX_ENDPOINT")
            .map(|text| {
                policy
                    .check_google(text)
                    .map_err(|e: EndpointError| invalid("BROKER_VERTEX_ENDPOINT", e.to_string()))
            })
            .transpose()?;

        Ok(Some(Self {
            project: project.to_owned(),
            location: location.to_owned(),
            extra_locations,
            model_patterns,
            endpoint,
        }))
    }

    /// Whether callers may name `location`.
    pub fn allows_location(&self, location: &str) -> bool {
        location == self.location || self.extra_locations.iter().any(|l| l == location)
    }

    /// Whether `model` is a well-formed model id that the allowlist admits.
    pub fn allows_model(&self, model: &str) -> bool {
        is_model_id(model)
            && self
                .model_patterns
                .iter()
                .any(|pattern| crate::pattern::matches(pattern, model))
    }

    /// The base URL for `location`: `BROKER_VERTEX_ENDPOINT`, else Vertex's host for it.
    pub fn base_url(&self, location: &str) -> String {
        if let Some(endpoint) = &self.endpoint {
            return endpoint.as_str().trim_end_matches('/').to_owned();
        }
        match location {
            "global" => "https://aiplatform.googleapis.com".to_owned(),
            "us" | "eu" => format!("https://aiplatform.{location}.rep.googleapis.com"),
            region => format!("https://{region}-aiplatform.googleapis.com"),
        }
    }

    /// `.../publishers/google/models/{model}:{method}` on the location's host.
    pub fn model_url(&self, location: &str, model: &str, method: Method) -> String {
        let mut url = format!(
            "{}/v1/projects/{}/locations/{location}/publishers/google/models/{model}:{}",
            self.base_url(location),
            self.project,
            method.as_str()
        );
        if method == Method::StreamGenerateContent {
            // Without alt=sse Vertex streams one JSON array, which no SSE client can read.
            url.push_str("?alt=sse");
        }
        url
    }

    /// The OpenAI-compatible chat completions URL for `location`.
    pub fn chat_url(&self, location: &str) -> String {
        format!(
            "{}/v1/projects/{}/locations/{location}/endpoints/openapi/chat/completions",
            self.base_url(location),
            self.project
        )
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `global`, `us`, `eu`, or a region name such as `us-central1`.
pub fn is_location(text: &str) -> bool {
    (2..=40).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && !text.ends_with('-')
}

fn is_model_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
}

/// A model id: lowercase letters, digits, `-`, `.` and `_`, starting with a letter or digit,
/// never `..`, at most 128 characters.
pub fn is_model_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_MODEL_LEN
        && text.bytes().all(is_model_byte)
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !text.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::DEFAULT_UNIVERSE_DOMAIN;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<VertexSettings>, VertexSettingsError> {
        let env = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VertexSettings::from_env(&env, &EndpointPolicy::new(DEFAULT_UNIVERSE_DOMAIN, false))
    }

    #[test]
    fn forwarding_is_off_without_a_project() {
        assert_eq!(settings(&[]).unwrap(), None);
    }

    #[test]
    fn hosts_follow_the_location() {
        let vertex = settings(&[("GOOGLE_CLOUD_PROJECT", "my-project")])
            .unwrap()
            .unwrap();
        assert_eq!(
            vertex.base_url("global"),
            "https://aiplatform.googleapis.com"
        );
        assert_eq!(
            vertex.base_url("us"),
            "https://aiplatform.us.rep.googleapis.com"
        );
        assert_eq!(
            vertex.base_url("eu"),
            "https://aiplatform.eu.rep.googleapis.com"
        );
        assert_eq!(
            vertex.base_url("europe-west4"),
            "https://europe-west4-aiplatform.googleapis.com"
        );
        assert_eq!(
            vertex.model_url("global", "gemini-2.5-flash", Method::StreamGenerateContent),
            "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            vertex.chat_url("us-central1"),
            "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/endpoints/openapi/chat/completions"
        );
    }

    #[test]
    fn endpoint_override_follows_the_endpoint_rules() {
        let vertex = settings(&[
            ("GOOGLE_CLOUD_PROJECT", "p1"),
            (
                "BROKER_VERTEX_ENDPOINT",
                "https://aiplatform-psc.p.googleapis.com/",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            vertex.base_url("us"),
            "https://aiplatform-psc.p.googleapis.com"
        );
        for endpoint in [
            "http://127.0.0.1:8086",
            "https://aiplatform.googleapis.com.evil.com",
            "https://evil.com",
        ] {
            let error = settings(&[
                ("GOOGLE_CLOUD_PROJECT", "p1"),
                ("BROKER_VERTEX_ENDPOINT", endpoint),
            ])
            .expect_err(endpoint);
            assert!(
                error.to_string().starts_with("BROKER_VERTEX_ENDPOINT"),
                "{error}"
            );
        }
    }

    #[test]
    fn models_and_locations_are_allowlisted() {
        let vertex = settings(&[
            ("GOOGLE_CLOUD_PROJECT", "p1"),
            ("GOOGLE_CLOUD_LOCATION", "us-central1"),
            ("BROKER_ALLOWED_LOCATIONS", "europe-west4, us"),
            ("BROKER_ALLOWED_MODELS", "gemini-2.5-*,gemini-2.0-flash-001"),
        ])
        .unwrap()
        .unwrap();
        for location in ["us-central1", "europe-west4", "us"] {
            assert!(vertex.allows_location(location), "{location}");
        }
        for location in ["global", "eu", "asia-east1"] {
            assert!(!vertex.allows_location(location), "{location}");
        }
        for model in ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash-001"] {
            assert!(vertex.allows_model(model), "{model}");
        }
        for model in [
            "gemini-1.5-pro",
            "gemini-2.0-flash",
            "gemini-2.5-../../x",
            "gemini-2.5-flash/x",
            "gemini-2.5-%2Fx",
            "gemini-2.5-flash@001",
            "Gemini-2.5-flash",
            "gemini-2.5-flásh",
            "",
        ] {
            assert!(!vertex.allows_model(model), "{model}");
        }
        assert!(!vertex.allows_model(&format!("gemini-2.5-{}", "a".repeat(200))));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("GOOGLE_CLOUD_PROJECT", "My Project"),
            ("GOOGLE_CLOUD_LOCATION", "us-central1.evil.com"),
            ("BROKER_ALLOWED_LOCATIONS", "us/x"),
            ("BROKER_ALLOWED_MODELS", "gemini/*"),
            ("BROKER_ALLOWED_MODELS", " , "),
        ] {
            let mut pairs = vec![("GOOGLE_CLOUD_PROJECT", "p1")];
            pairs.push((name, value));
            let error = settings(&pairs).expect_err(&format!("{name}={value}"));
            assert!(error.to_string().starts_with(name), "{error}");
        }
    }
}
