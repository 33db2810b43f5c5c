//! CloudWatch metrics as Embedded Metric Format (EMF) lines on stdout.
//!
//! Lambda sends stdout to CloudWatch Logs, which turns each EMF line into metrics without an
//! API call or an agent, so operators can graph and alarm on the broker without code:
//! `TokensIssued`, `CacheHits`, `CacheMisses`, `UpstreamLatency` and `UpstreamErrors` per
//! stage, `Errors` per class, `ForwardedCalls`, `ForwardLatency`, `PromptTokens` and
//! `OutputTokens` per route. Values are counts and milliseconds; nothing else is written.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every metric; the template's alarm names it too.
pub const NAMESPACE: &str = "GcpWifBroker";

/// A metric's unit, as CloudWatch spells it.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One token request's outcome: issued from the cache or not, or failed with `error_class`.
pub fn token_request(cache_hit: Option<bool>, error_class: Option<&str>) {
    let mut values = vec![(
        "TokensIssued",
        u64::from(cache_hit.is_some()) as f64,
        Unit::Count,
    )];
    if let Some(hit) = cache_hit {
        values.push(("CacheHits", u64::from(hit) as f64, Unit::Count));
        values.push(("CacheMisses", u64::from(!hit) as f64, Unit::Count));
    }
    emit(&[], &values);
    if let Some(class) = error_class {
        error(class);
    }
}

/// A refused or failed request, by class: `client` (4xx answered), `transient`, `permanent`.
pub fn error(class: &str) {
    emit(&[("Class", class)], &[("Errors", 1.0, Unit::Count)]);
}

/// One call to a Google service: its latency and, if it failed, whether transiently.
pub fn upstream(stage: &str, latency_ms: f64, failure: Option<&str>) {
    let mut values = vec![("UpstreamLatency", latency_ms, Unit::Milliseconds)];
    if failure.is_some() {
        values.push(("UpstreamErrors", 1.0, Unit::Count));
    }
    emit(&[("Stage", stage)], &values);
}

/// One forwarded Gemini call with its status, latency and token usage.
pub fn forwarded(route: &str, latency_ms: f64, prompt: Option<u64>, output: Option<u64>) {
    let mut values = vec![
        ("ForwardedCalls", 1.0, Unit::Count),
        ("ForwardLatency", latency_ms, Unit::Milliseconds),
    ];
    if let Some(prompt) = prompt {
        values.push(("PromptTokens", prompt as f64, Unit::Count));
    }
    if let Some(output) = output {
        values.push(("OutputTokens", output as f64, Unit::Count));
    }
    emit(&[("Route", route)], &values);
}

/// The EMF document for `values` under `dimensions`.
fn document(dimensions: &[(&str, &str)], values: &[(&str, f64, Unit)], timestamp_ms: u64) -> Value {
    let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let metrics: Vec<Value> = values
        .iter()
        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
        .collect();
    let mut root = Map::new();
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": metrics,
            }],
        }),
    );
    for (name, value) in dimensions {
        root.insert((*name).to_owned(), json!(value));
    }
    for (name, value, _) in values {
        root.insert((*name).to_owned(), json!(value));
    }
    Value::Object(root)
}

fn emit(dimensions: &[(&str, &str)], values: &[(&str, f64, Unit)]) {
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut line = document(dimensions, values, timestamp_ms).to_string();
    line.push('\n');
    // A metric that cannot be written is dropped: metrics never fail a request.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_follow_the_embedded_metric_format() {
        let doc = document(
            &[("Stage", "sts")],
            &[
                ("UpstreamLatency", 12.5, Unit::Milliseconds),
                ("UpstreamErrors", 1.0, Unit::Count),
            ],
            1_700_000_000_000,
        );
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000u64);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Stage"]]));
        assert_eq!(
            directive["Metrics"],
            json!([
                {"Name": "UpstreamLatency", "Unit": "Milliseconds"},
                {"Name": "UpstreamErrors", "Unit": "Count"}
            ])
        );
        assert_eq!(doc["Stage"], "sts");
        assert_eq!(doc["UpstreamLatency"], 12.5);
        assert_eq!(doc["UpstreamErrors"], 1.0);
    }

    #[test]
    fn dimensionless_metrics_have_one_empty_dimension_set() {
        let doc = document(&[], &[("TokensIssued", 1.0, Unit::Count)], 0);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
    }
}
