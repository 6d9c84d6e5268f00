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
    // Log lines are formatted where they happen and written by a thread of their own, so a
    // guest printing a line per message does not make the batch wait for a write to stderr.
    // Never lossy: when the writer falls behind, logging waits rather than drops lines. The
    // thread flushes whenever it has written every line waiting for it, so buffering its
    // writes costs no delay and saves a system call per line. `LogWriter` hands it guests'
    // lines a burst at a time.
    let (writer, flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(wasmq_host::runtime::LogWriter::new(writer));
    match cli.log_format {
        LogFormat::Json => log.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            log.with_ansi(colour).init();
        }
    }
    let result = cli.execute().await;
    // Every log line (guests' included) is out before the error, and before the process exits.
    wasmq_host::runtime::flush_guest_log();
    drop(flush_on_exit);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
