//! The `wasmq` command.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wasmq_host::cli::{Cli, LogFormat};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.prepare_process();
    // `WASMQ_LOG` takes tracing's filter syntax, e.g. `debug` or `info,wasmq_engine=debug`.
    let filter = EnvFilter::try_from_env("WASMQ_LOG")
        .unwrap_or_else(|_| EnvFilter::new(cli.default_log_level()));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => log.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            log.with_ansi(colour).init();
        }
    }
    match cli.execute().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
