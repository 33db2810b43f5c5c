//! The `gcp-wif-emulator` binary: parses the command line, serves, stops on SIGINT or SIGTERM.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use gcp_wif_emulator::cli::{self, Command};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let options = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("gcp-wif-emulator: {error}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let emulator = match gcp_wif_emulator::spawn(options.config, options.listen).await {
        Ok(emulator) => emulator,
        Err(error) => {
            error!(listen = %options.listen, %error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let announced = writeln!(
        stdout,
        "gcp-wif-emulator listening on {}",
        emulator.base_url()
    )
    .and_then(|()| stdout.flush());
    if let Err(error) = announced {
        error!(%error, "cannot write the listening line to stdout");
        return ExitCode::FAILURE;
    }
    let _front = match options.front {
        Some(front) => match gcp_wif_emulator::spawn_front(front.config, front.listen).await {
            Ok(running) => {
                let line = format!("gcp-wif-emulator function URL front on {}", running.url());
                if let Err(error) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                    error!(%error, "cannot write the front's line to stdout");
                    return ExitCode::FAILURE;
                }
                Some(running)
            }
            Err(error) => {
                error!(listen = %front.listen, %error, "cannot start the function URL front");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };

    match termination().await {
        Ok(signal) => info!(signal, "stopping"),
        Err(error) => error!(%error, "cannot wait for signals; stopping"),
    }
    drop(emulator);
    ExitCode::SUCCESS
}

/// Waits for SIGINT or SIGTERM and names the one that came.
async fn termination() -> std::io::Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| "SIGINT"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
