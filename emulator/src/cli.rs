//! The command line of the `gcp-wif-emulator` binary.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::config::{AwsKey, EmulatorConfig, MAX_TOKEN_LIFETIME_CEILING};
use crate::front::{FrontConfig, IamCaller};

/// The most events a streamed answer may have from the command line: more only slows a run.
const MAX_STREAM_EVENTS: usize = 10_000;

/// The address the binary listens on without `--listen`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8086));

/// The binary's `--help` text.
pub const USAGE: &str = "\
Usage: gcp-wif-emulator [OPTIONS]

Emulates Google STS and IAM Credentials for AWS Workload Identity Federation, and
Vertex AI (Gemini generateContent, streamGenerateContent, countTokens, and the
OpenAI-compatible chat/completions) for the tokens it issues.
Prints `gcp-wif-emulator listening on http://IP:PORT` once serving; logs go to stderr.

Options:
  --listen ADDR                 address to serve on [default: 127.0.0.1:8086]
  --aws-key AKID:SECRET         AWS key pair to accept (repeatable)
                                [default: the built-in test pair AKIDEMULATOR0000TEST]
  --audience AUDIENCE           workload identity provider to accept (repeatable)
                                [default: //iam.googleapis.com/projects/123456789012/locations/
                                global/workloadIdentityPools/local-pool/providers/local-aws]
  --service-account EMAIL       service account that may be impersonated (repeatable)
                                [default: broker@local-project.iam.gserviceaccount.com]
  --max-lifetime-seconds N      longest access token lifetime, 1 to 43200 [default: 3600]
  --project PROJECT             Vertex AI project to serve (repeatable)
                                [default: local-project]
  --model MODEL                 Vertex AI publisher model to serve (repeatable)
                                [default: gemini-2.5-flash, gemini-2.5-pro,
                                gemini-2.0-flash-001]
  --stream-events N             events per streamed answer, at least 1 [default: 3]
  --stream-event-delay-ms MS    pause between two streamed events [default: 100]
  --front ADDR                  also serve a Lambda Function URL (AuthType AWS_IAM) on ADDR:
                                it checks SigV4 (service lambda) with the --aws-key pairs
                                and invokes the function at --front-invoke
  --front-invoke URL            the runtime emulator's base URL, e.g. http://127.0.0.1:9000
                                (cargo lambda watch) [required with --front]
  --front-caller AKID=ARN       the IAM identity an access key stands for (repeatable)
                                [default: AKIDEMULATOR0000TEST=arn:aws:sts::123456789012:
                                assumed-role/app-role/app-session]
  --front-region REGION         region callers sign for [default: us-east-1]
  --front-function NAME         function name to invoke [default: _]
  -h, --help                    print this help

Admin routes:
  POST /emulator/faults    queue a fault, JSON: {\"target\": \"sts\"|\"iam\"|\"vertex\",
                           \"status\": 503, \"body\": ..., \"delay_ms\": 0, \"count\": 1,
                           \"abort_after_events\": 2 (vertex streams only, no status)}
  DELETE /emulator/faults  drop every queued fault
  GET /emulator/calls      requests per target: {\"sts\": 1, \"iam\": 1, \"vertex\": 0}
";

/// What the command line asks for.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process: boxing the options would save nothing"
)]
pub enum Command {
    /// Serve the emulator.
    Run(RunOptions),
    /// Print [`USAGE`].
    Help,
}

/// How to serve the emulator.
#[derive(Debug)]
pub struct RunOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// What to accept; the clock is the system's.
    pub config: EmulatorConfig,
    /// The Function URL front to serve beside it, if asked for with `--front`.
    pub front: Option<FrontOptions>,
}

/// Where and how to serve the Function URL front.
#[derive(Debug)]
pub struct FrontOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// What to accept and whom to invoke; the AWS keys are the emulator's.
    pub config: FrontConfig,
}

/// Why the command line is not understood; never quotes a secret key.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag the binary does not know.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// A flag given without its value.
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    /// A flag whose value is not understood.
    #[error("{flag}: {reason}")]
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// What the value must be.
        reason: String,
    },
}

/// Parses the arguments after the program name; `--flag value` and `--flag=value` both work.
///
/// Repeatable flags replace the built-in default with the values given.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, CliError> {
    let mut config = EmulatorConfig::default();
    let mut listen = DEFAULT_LISTEN;
    let (mut aws_keys, mut audiences, mut service_accounts) = (vec![], vec![], vec![]);
    let (mut projects, mut models) = (vec![], vec![]);
    let (mut front_listen, mut front_invoke, mut front_callers) = (None, None, vec![]);
    let (mut front_region, mut front_function) = (None, None);

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => {
                let value = value_of("--listen", inline, &mut args)?;
                listen = value.parse().map_err(|_| CliError::InvalidValue {
                    flag: "--listen",
                    reason: format!("{value:?} is not an IP:PORT socket address"),
                })?;
            }
            "--aws-key" => {
                let value = value_of("--aws-key", inline, &mut args)?;
                let key = value
                    .parse::<AwsKey>()
                    .map_err(|e| CliError::InvalidValue {
                        flag: "--aws-key",
                        reason: e.to_string(),
                    })?;
                aws_keys.push(key);
            }
            "--audience" => audiences.push(value_of("--audience", inline, &mut args)?),
            "--service-account" => {
                service_accounts.push(value_of("--service-account", inline, &mut args)?);
            }
            "--max-lifetime-seconds" => {
                let value = value_of("--max-lifetime-seconds", inline, &mut args)?;
                let ceiling = MAX_TOKEN_LIFETIME_CEILING.as_secs();
                let seconds = value
                    .parse::<u64>()
                    .ok()
                    .filter(|seconds| (1..=ceiling).contains(seconds))
                    .ok_or_else(|| CliError::InvalidValue {
                        flag: "--max-lifetime-seconds",
                        reason: format!("must be a whole number from 1 to {ceiling}"),
                    })?;
                config.max_token_lifetime = Duration::from_secs(seconds);
            }
            "--project" => projects.push(value_of("--project", inline, &mut args)?),
            "--model" => models.push(value_of("--model", inline, &mut args)?),
            "--stream-events" => {
                let value = value_of("--stream-events", inline, &mut args)?;
                config.stream_events = value
                    .parse::<usize>()
                    .ok()
                    .filter(|events| (1..=MAX_STREAM_EVENTS).contains(events))
                    .ok_or_else(|| CliError::InvalidValue {
                        flag: "--stream-events",
                        reason: format!("must be a whole number from 1 to {MAX_STREAM_EVENTS}"),
                    })?;
            }
            "--stream-event-delay-ms" => {
                let value = value_of("--stream-event-delay-ms", inline, &mut args)?;
                let millis = value.parse::<u64>().map_err(|_| CliError::InvalidValue {
                    flag: "--stream-event-delay-ms",
                    reason: "must be a whole number of milliseconds".to_string(),
                })?;
                config.stream_event_delay = Duration::from_millis(millis);
            }
            "--front" => {
                let value = value_of("--front", inline, &mut args)?;
                front_listen = Some(value.parse().map_err(|_| CliError::InvalidValue {
                    flag: "--front",
                    reason: format!("{value:?} is not an IP:PORT socket address"),
                })?);
            }
            "--front-invoke" => front_invoke = Some(value_of("--front-invoke", inline, &mut args)?),
            "--front-caller" => {
                let value = value_of("--front-caller", inline, &mut args)?;
                front_callers.push(value.parse::<IamCaller>().map_err(|e| {
                    CliError::InvalidValue {
                        flag: "--front-caller",
                        reason: e.to_string(),
                    }
                })?);
            }
            "--front-region" => front_region = Some(value_of("--front-region", inline, &mut args)?),
            "--front-function" => {
                front_function = Some(value_of("--front-function", inline, &mut args)?);
            }
            _ => return Err(CliError::UnknownOption(name)),
        }
    }

    let front = match (front_listen, front_invoke) {
        (Some(listen), Some(invoke_url)) => {
            let mut front = FrontConfig::new(invoke_url);
            if !aws_keys.is_empty() {
                front.aws_keys = aws_keys.clone();
            }
            if !front_callers.is_empty() {
                front.callers = front_callers;
            }
            front.region = front_region.unwrap_or(front.region);
            front.function_name = front_function.unwrap_or(front.function_name);
            Some(FrontOptions {
                listen,
                config: front,
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(CliError::InvalidValue {
                flag: "--front",
                reason: "needs --front-invoke URL, the runtime emulator to invoke".to_string(),
            })
        }
        (None, Some(_)) => {
            return Err(CliError::InvalidValue {
                flag: "--front-invoke",
                reason: "needs --front ADDR, where to serve the Function URL".to_string(),
            })
        }
    };

    if !aws_keys.is_empty() {
        config.aws_keys = aws_keys;
    }
    if !audiences.is_empty() {
        config.audiences = audiences;
    }
    if !service_accounts.is_empty() {
        config.service_accounts = service_accounts;
    }
    if !projects.is_empty() {
        config.vertex_projects = projects;
    }
    if !models.is_empty() {
        config.vertex_models = models;
    }
    Ok(Command::Run(RunOptions {
        listen,
        config,
        front,
    }))
}

/// The value of `flag`: written after `=`, or else the next argument.
fn value_of(
    flag: &'static str,
    inline: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, CliError> {
    inline
        .or_else(|| rest.next())
        .ok_or(CliError::MissingValue(flag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        DEFAULT_ACCESS_KEY_ID, DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, DEFAULT_STREAM_EVENTS,
        DEFAULT_STREAM_EVENT_DELAY, DEFAULT_VERTEX_MODELS, DEFAULT_VERTEX_PROJECT,
    };

    fn run(args: &[&str]) -> RunOptions {
        match parse(args.iter().map(|arg| arg.to_string())) {
            Ok(Command::Run(options)) => options,
            other => panic!("{args:?} should parse as a run, got {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match parse(args.iter().map(|arg| arg.to_string())) {
            Err(error) => error.to_string(),
            other => panic!("{args:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_give_the_documented_defaults() {
        let options = run(&[]);

        assert_eq!(options.listen, DEFAULT_LISTEN);
        let keys: Vec<&str> = options
            .config
            .aws_keys
            .iter()
            .map(AwsKey::access_key_id)
            .collect();
        assert_eq!(keys, [DEFAULT_ACCESS_KEY_ID]);
        assert_eq!(options.config.audiences, [DEFAULT_AUDIENCE]);
        assert_eq!(options.config.service_accounts, [DEFAULT_SERVICE_ACCOUNT]);
        assert_eq!(options.config.max_token_lifetime, Duration::from_secs(3600));
        assert_eq!(options.config.vertex_projects, [DEFAULT_VERTEX_PROJECT]);
        assert_eq!(options.config.vertex_models, DEFAULT_VERTEX_MODELS);
        assert_eq!(options.config.stream_events, DEFAULT_STREAM_EVENTS);
        assert_eq!(
            options.config.stream_event_delay,
            DEFAULT_STREAM_EVENT_DELAY
        );
    }

    #[test]
    fn vertex_flags_set_projects_models_and_stream_pacing() {
        let options = run(&[
            "--project",
            "p1",
            "--project=p2",
            "--model",
            "gemini-x",
            "--stream-events=7",
            "--stream-event-delay-ms",
            "0",
        ]);

        assert_eq!(options.config.vertex_projects, ["p1", "p2"]);
        assert_eq!(options.config.vertex_models, ["gemini-x"]);
        assert_eq!(options.config.stream_events, 7);
        assert_eq!(options.config.stream_event_delay, Duration::ZERO);
    }

    #[test]
    fn repeated_flags_replace_the_defaults_in_both_spellings() {
        let options = run(&[
            "--listen=0.0.0.0:9000",
            "--aws-key",
            "AKID1:secret1",
            "--aws-key=AKID2:secret2",
            "--audience",
            "//iam.googleapis.com/a",
            "--service-account",
            "x@p.iam.gserviceaccount.com",
            "--service-account=y@p.iam.gserviceaccount.com",
            "--max-lifetime-seconds",
            "43200",
        ]);

        assert_eq!(options.listen.to_string(), "0.0.0.0:9000");
        let keys: Vec<&str> = options
            .config
            .aws_keys
            .iter()
            .map(AwsKey::access_key_id)
            .collect();
        assert_eq!(keys, ["AKID1", "AKID2"]);
        assert_eq!(options.config.audiences, ["//iam.googleapis.com/a"]);
        assert_eq!(
            options.config.service_accounts,
            ["x@p.iam.gserviceaccount.com", "y@p.iam.gserviceaccount.com"]
        );
        assert_eq!(
            options.config.max_token_lifetime,
            Duration::from_secs(43200)
        );
    }

    #[test]
    fn front_flags_configure_the_function_url_with_the_emulator_keys() {
        let options = run(&[
            "--aws-key=AKID1:secret1",
            "--front",
            "127.0.0.1:9100",
            "--front-invoke=http://127.0.0.1:9000",
            "--front-caller",
            "AKID1=arn:aws:iam::111122223333:user/alice",
            "--front-region=eu-west-1",
        ]);

        let front = options.front.expect("a front");
        assert_eq!(front.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(front.config.invoke_url, "http://127.0.0.1:9000");
        assert_eq!(front.config.region, "eu-west-1");
        assert_eq!(front.config.function_name, "_");
        assert_eq!(
            front.config.callers,
            [IamCaller::new(
                "AKID1",
                "arn:aws:iam::111122223333:user/alice"
            )]
        );
        let keys: Vec<&str> = front
            .config
            .aws_keys
            .iter()
            .map(AwsKey::access_key_id)
            .collect();
        assert_eq!(keys, ["AKID1"]);
        assert!(run(&[]).front.is_none(), "no front unless asked for");
    }

    #[test]
    fn help_is_recognised_after_other_flags() {
        let parsed = parse(["--listen", "127.0.0.1:1", "--help"].map(String::from));

        assert!(matches!(parsed, Ok(Command::Help)), "{parsed:?}");
    }

    #[test]
    fn bad_arguments_are_refused_with_the_flag_named() {
        let cases: [(&[&str], &str); 13] = [
            (&["--front", "127.0.0.1:1"], "--front: needs --front-invoke"),
            (
                &["--front-invoke", "http://x"],
                "--front-invoke: needs --front",
            ),
            (
                &["--front-caller", "AKID=role"],
                "--front-caller: a caller must be",
            ),
            (&["--port", "1"], "unknown option \"--port\""),
            (&["--listen"], "--listen needs a value"),
            (
                &["--listen", "localhost"],
                "--listen: \"localhost\" is not an IP:PORT",
            ),
            (&["--max-lifetime-seconds", "0"], "from 1 to 43200"),
            (&["--max-lifetime-seconds=43201"], "from 1 to 43200"),
            (
                &["--aws-key", "no-colon-secret"],
                "--aws-key: an AWS key must be written",
            ),
            (&["--stream-events", "0"], "--stream-events: must be"),
            (&["--stream-events=10001"], "from 1 to 10000"),
            (
                &["--stream-event-delay-ms=-1"],
                "--stream-event-delay-ms: must be",
            ),
            (&["--model"], "--model needs a value"),
        ];

        for (args, expected) in cases {
            let message = error(args);
            assert!(
                message.contains(expected),
                "{args:?}: {message:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn a_bad_aws_key_is_refused_without_quoting_it() {
        let message = error(&["--aws-key", "AKIDsupersecretvalue"]);

        assert!(!message.contains("supersecretvalue"), "{message}");
    }
}
