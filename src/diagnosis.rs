//! `GET /diagnose`: every stage of the token path run afresh, with its outcome and timing.

use std::future::Future;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::broker::Broker;
use crate::error::{Stage, UpstreamError, UpstreamFailure};

/// The stages of the token path, in order.
const STAGES: [Stage; 4] = [
    Stage::AwsCredentials,
    Stage::SubjectToken,
    Stage::Sts,
    Stage::Impersonation,
];

/// The outcome of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// The stage's name, as in logs.
    pub stage: &'static str,
    /// `ok`, `failed` or `skipped`.
    pub outcome: &'static str,
    /// How long the stage took.
    pub ms: f64,
    /// What the stage found; never a credential.
    pub detail: String,
    /// The setup step to check, for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<&'static str>,
}

impl StageReport {
    /// A stage that was not run, and why.
    pub fn skipped(stage: &'static str, detail: &str) -> Self {
        Self {
            stage,
            outcome: "skipped",
            ms: 0.0,
            detail: detail.to_owned(),
            hint: None,
        }
    }
}

/// Records the stages of one run of the token path, or nothing.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    reports: Option<Vec<StageReport>>,
}

impl Trace {
    /// A trace that records nothing: the normal token path.
    pub(crate) fn off() -> Self {
        Self { reports: None }
    }

    fn recording() -> Self {
        Self {
            reports: Some(Vec::new()),
        }
    }

    /// Runs one stage, recording its outcome and timing when recording.
    pub(crate) async fn run<T>(
        &mut self,
        stage: Stage,
        work: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let started = Instant::now();
        let result = work.await;
        if let Some(reports) = &mut self.reports {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            reports.push(match &result {
                Ok(_) => StageReport {
                    stage: stage.as_str(),
                    outcome: "ok",
                    ms,
                    detail: "ok".to_owned(),
                    hint: None,
                },
                Err(error) => StageReport {
                    stage: stage.as_str(),
                    outcome: "failed",
                    ms,
                    detail: error.to_string(),
                    hint: match &error.failure {
                        UpstreamFailure::Refused { hint, .. } => Some(*hint),
                        _ => None,
                    },
                },
            });
        }
        result
    }
}

impl Broker {
    /// Runs the token path for the default request afresh, bypassing the cache, and reports
    /// each stage; stages after a failure are skipped.
    pub async fn diagnose(&self, deadline: Option<SystemTime>) -> Vec<StageReport> {
        let config = self.config();
        let mut reports = vec![StageReport {
            stage: "configuration",
            outcome: "ok",
            ms: 0.0,
            detail: format!(
                "audience {}; STS {}; service account {}; region {}",
                config.audience,
                config.token_url.host_str().unwrap_or("-"),
                self.service_account()
                    .unwrap_or("none (federated token only)"),
                self.region()
            ),
            hint: None,
        }];

        let mut trace = Trace::recording();
        let outcome = self
            .exchange(&self.default_request(), self.attempts(deadline), &mut trace)
            .await;
        let ran = trace.reports.unwrap_or_default();
        for stage in STAGES {
            match ran.iter().find(|r| r.stage == stage.as_str()) {
                Some(report) => reports.push(report.clone()),
                None if outcome.is_ok() => reports.push(StageReport::skipped(
                    stage.as_str(),
                    "the configuration names no service account",
                )),
                None => reports.push(StageReport::skipped(
                    stage.as_str(),
                    "an earlier stage failed",
                )),
            }
        }
        reports
    }
}
