//! `wasmq test`: finds fixture files, runs them with the [harness](crate::harness), prints
//! each case as it finishes (`PASS name` / `FAIL name` with what went wrong, then
//! `N passed, N failed`), writes JUnit XML if asked and fails if any case failed.
//!
//! In a folder, only `.toml` files with a `[[case]]` table are fixtures, and hidden folders,
//! `target` and `node_modules` are skipped, so that `wasmq test .` at a project's root takes
//! neither its `Cargo.toml` nor its manifest nor build output for fixtures. A file named on the
//! command line is always run, so that a malformed one is reported rather than ignored.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::harness::{CaseReport, FixtureReport, Harness, RunReport, fixture};
use crate::runtime::{Runtime, RuntimeConfig, user_cache_dir};

/// `wasmq test [PATHS]... [--junit FILE]`.
#[derive(Debug, Args)]
pub(super) struct TestCommand {
    /// Fixture files, or folders searched for fixture files: `*.toml` files with a
    /// `[[case]]` table (hidden folders, `target` and `node_modules` are skipped).
    #[arg(default_value = "fixtures")]
    paths: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

impl TestCommand {
    /// Runs the fixtures under the paths, printing as it goes.
    pub(super) async fn run(self) -> Result<()> {
        let files = discover(&self.paths)?;
        // Fixtures run often on the same components: keep their compiled code between runs.
        let harness = Harness::with_runtime(Runtime::with_config(&RuntimeConfig {
            cache_dir: user_cache_dir(),
            pooling_allocator: false,
            ..RuntimeConfig::default()
        })?);
        let start = Instant::now();
        let mut run = RunReport::default();
        for Found { path: file, text } in files {
            println!("{}", file.display());
            let loaded = match &text {
                Some(text) => fixture::parse(text, &file),
                None => fixture::load(&file),
            };
            let report = match loaded {
                Ok(fixture) => {
                    harness
                        .run_fixture_with(&fixture, |case| print!("{}", case_text(case)))
                        .await
                }
                Err(e) => FixtureReport::broken(file, e.to_string()),
            };
            if let Some(error) = &report.error {
                println!("  ERROR {}", indent_rest(error, "    "));
            }
            run.fixtures.push(report);
        }
        run.duration = start.elapsed();
        println!("{}", summary(&run));
        if let Some(path) = &self.junit {
            std::fs::write(path, run.junit())
                .with_context(|| format!("writing the JUnit report to {}", path.display()))?;
        }
        let failed = run.failed();
        if failed > 0 {
            bail!("{failed} of {} fixture cases failed", run.passed() + failed);
        }
        Ok(())
    }
}

/// A fixture file [`discover`] found.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    /// The file.
    path: PathBuf,
    /// Its text, if finding it meant reading it (a file found in a folder), so that it is not
    /// read twice; `None` for a file named on the command line.
    text: Option<String>,
}

/// The fixture files `paths` name: files as given; folders searched (recursively, skipping
/// hidden folders, `target` and `node_modules`) for fixture files, each folder's entries in
/// name order. A folder without any is an error.
fn discover(paths: &[PathBuf]) -> Result<Vec<Found>> {
    let mut files = Vec::new();
    for path in paths {
        let metadata =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.is_dir() {
            let before = files.len();
            walk(path, &mut files)?;
            if files.len() == before {
                bail!(
                    "no fixture files (*.toml with a [[case]] table) in {}",
                    path.display()
                );
            }
        } else {
            files.push(Found {
                path: path.clone(),
                text: None,
            });
        }
    }
    Ok(files)
}

/// Adds the fixture files below `dir` to `files`, with their text.
fn walk(dir: &Path, files: &mut Vec<Found>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                walk(&path, files)?;
            }
        } else if path.extension().is_some_and(|e| e == "toml")
            && let Some(text) = fixture_text(&path)
        {
            files.push(Found {
                path,
                text: Some(text),
            });
        }
    }
    Ok(())
}

/// The file's text, if it has a `[[case]]` table header. A text search, not a parse: a fixture
/// with a syntax error must still be found, to be reported.
fn fixture_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().filter(|text| {
        text.lines()
            .any(|line| line.trim_start().starts_with("[[case]]"))
    })
}

/// `  PASS name (3 ms)`, or `  FAIL name (3 ms)` and what went wrong, indented.
fn case_text(case: &CaseReport) -> String {
    let millis = case.duration.as_millis();
    if case.passed() {
        format!("  PASS {} ({millis} ms)\n", case.name)
    } else {
        let mut out = format!("  FAIL {} ({millis} ms)\n", case.name);
        for line in case.failure_text().lines() {
            let _ = writeln!(out, "      {line}");
        }
        out
    }
}

/// The last line, `N passed, N failed`.
fn summary(run: &RunReport) -> String {
    format!("{} passed, {} failed", run.passed(), run.failed())
}

/// `text` with `indent` before each line but the first.
fn indent_rest(text: &str, indent: &str) -> String {
    text.lines()
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::harness::Mismatch;

    #[test]
    fn folders_yield_toml_files_with_cases_and_skip_hidden_and_build_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let case = "component = \"x.wasm\"\n[[case]]\nname = \"a\"\n";
        for folder in ["sub", ".hidden", "target", "node_modules"] {
            std::fs::create_dir(root.join(folder)).unwrap();
        }
        for file in [
            "b.toml",
            "a.toml",
            "sub/c.toml",
            ".hidden/d.toml",
            "target/e.toml",
            "node_modules/f.toml",
        ] {
            std::fs::write(root.join(file), case).unwrap();
        }
        std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        std::fs::write(root.join("notes.txt"), case).unwrap();

        let found = discover(&[root.to_owned()]).unwrap();
        assert_eq!(
            found.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
            ["a.toml", "b.toml", "sub/c.toml"].map(|f| root.join(f))
        );
        // Each is read once: the text read to find it is the one run.
        assert!(found.iter().all(|f| f.text.as_deref() == Some(case)));
        // A file named on the command line is run whatever it holds (and read when it is).
        let named = [root.join("Cargo.toml")];
        assert_eq!(
            discover(&named).unwrap(),
            [Found {
                path: root.join("Cargo.toml"),
                text: None,
            }]
        );

        let empty = root.join("sub/empty");
        std::fs::create_dir(&empty).unwrap();
        let error = discover(&[empty]).unwrap_err().to_string();
        assert!(error.starts_with("no fixture files"), "{error}");
    }

    #[test]
    fn cases_print_as_pass_or_fail_with_the_diff_indented() {
        let mut case = CaseReport {
            name: "acks".into(),
            duration: Duration::from_millis(3),
            mismatches: Vec::new(),
            error: None,
            batch: None,
        };
        assert_eq!(case_text(&case), "  PASS acks (3 ms)\n");
        case.mismatches.push(Mismatch {
            key: "acked".into(),
            legend: "",
            expected: vec!["[0]".into()],
            actual: vec!["[]".into()],
        });
        assert_eq!(
            case_text(&case),
            "  FAIL acks (3 ms)\n      acked ():\n        - [0]\n        + []\n"
        );
        assert_eq!(indent_rest("a\nb", "  "), "a\n  b");
    }
}
