//! `wasmq completions SHELL`: prints a completion script for the shell, generated from the same
//! parser that reads the command line (so it never falls behind a new flag).
//!
//! ```sh
//! wasmq completions bash > ~/.local/share/bash-completion/completions/wasmq
//! wasmq completions zsh > ~/.zfunc/_wasmq        # with `fpath+=~/.zfunc` in ~/.zshrc
//! wasmq completions fish > ~/.config/fish/completions/wasmq.fish
//! ```

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// `wasmq completions SHELL`.
#[derive(Debug, Args)]
pub(super) struct CompletionsCommand {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

impl CompletionsCommand {
    /// Prints the script to standard output.
    pub(super) fn run(self) -> Result<()> {
        let mut command = Cli::command();
        let name = command.get_name().to_owned();
        clap_complete::generate(self.shell, &mut command, name, &mut std::io::stdout());
        Ok(())
    }
}
