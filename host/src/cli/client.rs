//! What the commands that talk to a running host's API (`send`, `queues`, `messages`, `dlq`)
//! share: where the API is and the token (`--url`, `--token`), requests with the API's
//! envelope unwrapped, JSON-or-text output, and quiet stops on closed pipes.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::http::wire::Envelope;

/// Where the API of the running host is, and how to get in.
#[derive(Debug, Args)]
pub(super) struct ApiArgs {
    /// Base URL of the host's API.
    #[arg(long, env = "WASMQ_URL", default_value = "http://127.0.0.1:8787")]
    url: String,
    /// The API token, when the host requires one.
    #[arg(long, env = "WASMQ_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the result as JSON (the API's `result`), for scripts.
    #[arg(long)]
    pub(super) json: bool,
}

impl ApiArgs {
    /// `GET path`, its result unwrapped.
    pub(super) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        call(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` without a body, its result unwrapped.
    pub(super) async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        call(self.request(reqwest::Method::POST, path)).await
    }

    /// `POST path` with `body` as JSON, its result unwrapped.
    pub(super) async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        call(
            self.request(reqwest::Method::POST, path)
                .map(|r| r.json(body)),
        )
        .await
    }

    /// A request for `path` on the API, with the token if there is one. A `--url` that is not
    /// an `http://` or `https://` URL is refused here, naming it, before anything is sent.
    fn request(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let base = self.url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}{path}"))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .with_context(|| {
                format!(
                    "--url `{}` is not a URL like http://127.0.0.1:8787",
                    self.url
                )
            })?;
        let request = reqwest::Client::new().request(method, url);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }
}

/// Sends an API request and unwraps its envelope; API errors become one readable line.
async fn call<T: DeserializeOwned>(request: Result<reqwest::RequestBuilder>) -> Result<T> {
    let response = request?.send().await.map_err(|err| {
        let url = err
            .url()
            .map_or_else(String::new, |url| format!(" at {url}"));
        if err.is_connect() {
            anyhow::anyhow!(
                "nothing answers{url}: is `wasmq run` running there? (see --url): {err}"
            )
        } else if err.is_timeout() {
            anyhow::anyhow!("the host{url} did not answer in time: {err}")
        } else {
            anyhow::anyhow!("the request to the host{url} failed: {err}")
        }
    })?;
    let status = response.status();
    let envelope: Envelope<T> = response
        .json()
        .await
        .with_context(|| format!("the host answered {status} with an unexpected body"))?;
    match (envelope.success, envelope.result) {
        (true, Some(result)) => Ok(result),
        _ => {
            let errors: Vec<_> = envelope
                .errors
                .iter()
                .map(|e| format!("{} ({})", e.message, e.code))
                .collect();
            bail!("{}", errors.join("; "))
        }
    }
}

/// Prints `value` as pretty JSON with `--json`, else as `text` prints it.
pub(super) fn print_json_or<T: Serialize + ?Sized>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T),
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        text(value);
    }
    Ok(())
}

/// Makes a write to a closed standard output stop the process quietly, as Unix tools do,
/// by restoring SIGPIPE's default action (Rust ignores SIGPIPE, and `println!` then panics
/// on the write error).
pub(super) fn stop_quietly_on_closed_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE, which `main` does before the
    // command runs, touches no memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
