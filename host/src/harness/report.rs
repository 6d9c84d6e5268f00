//! Running fixture files and reporting on them: the text `host test` prints (`PASS name` /
//! `FAIL name` with a diff, then `N passed, N failed`) and JUnit XML for CI systems.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::check::{actual_result, actual_send, body_text, check};
use super::fixture::{self, Fixture};
use super::{BatchReport, Harness, MessageFate, Mismatch, component_name};
use crate::engine::precedence::BatchCall;
use crate::runtime::{Runtime, RuntimeConfig, user_cache_dir};

/// Most guest output lines shown under a failed case (JUnit gets them all).
const OUTPUT_LINES_SHOWN: usize = 40;

/// What one case came to.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// How long it took, loading included.
    pub duration: Duration,
    /// The expectations that were not met.
    pub mismatches: Vec<Mismatch>,
    /// A problem that kept the case from running (the component did not load…).
    pub error: Option<String>,
    /// What the batch came to, if it ran.
    pub batch: Option<BatchReport>,
}

impl CaseReport {
    /// True when the case ran and met every expectation.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.mismatches.is_empty()
    }

    /// The lines printed under `FAIL name`: the diffs, then what happened.
    pub fn failure_text(&self) -> String {
        let mut out = String::new();
        if let Some(error) = &self.error {
            let _ = writeln!(out, "error: {error}");
        }
        for mismatch in &self.mismatches {
            out.push_str(&mismatch.diff());
        }
        if let Some(batch) = &self.batch {
            out.push_str(&what_happened(batch));
        }
        out
    }
}

/// What one fixture file came to.
#[derive(Debug, Clone)]
pub struct FixtureReport {
    /// The file.
    pub path: PathBuf,
    /// Why the file could not be used at all (malformed, or its component does not load).
    pub error: Option<String>,
    /// Its cases, in file order.
    pub cases: Vec<CaseReport>,
    /// How long the file took.
    pub duration: Duration,
}

impl FixtureReport {
    /// A file that could not be run.
    pub fn broken(path: PathBuf, error: String) -> Self {
        Self {
            path,
            error: Some(error),
            cases: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    /// Cases that failed; a broken file counts as one failure.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed()).count() + usize::from(self.error.is_some())
    }
}

/// A whole `host test` run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Every file, in the order run.
    pub fixtures: Vec<FixtureReport>,
    /// How long it all took.
    pub duration: Duration,
}

impl RunReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.fixtures.iter().map(FixtureReport::passed).sum()
    }

    /// Cases that failed, broken files included.
    pub fn failed(&self) -> usize {
        self.fixtures.iter().map(FixtureReport::failed).sum()
    }

    /// The summary line, `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// The run as JUnit XML: one `testsuite` per file, one `testcase` per case; a broken
    /// file is a suite with one `error` test case.
    pub fn junit(&self) -> String {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let errors: usize = self
            .fixtures
            .iter()
            .map(|f| {
                usize::from(f.error.is_some())
                    + f.cases.iter().filter(|c| c.error.is_some()).count()
            })
            .sum();
        let tests: usize = self
            .fixtures
            .iter()
            .map(|f| f.cases.len() + usize::from(f.error.is_some()))
            .sum();
        let _ = writeln!(
            xml,
            "<testsuites name=\"wasmq fixtures\" tests=\"{tests}\" failures=\"{}\" errors=\"{errors}\" time=\"{:.3}\">",
            self.failed() - errors,
            self.duration.as_secs_f64()
        );
        for fixture in &self.fixtures {
            let name = escape(&fixture.path.display().to_string());
            let case_errors = fixture.cases.iter().filter(|c| c.error.is_some()).count();
            let suite_errors = case_errors + usize::from(fixture.error.is_some());
            let _ = writeln!(
                xml,
                "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"{suite_errors}\" time=\"{:.3}\">",
                fixture.cases.len() + usize::from(fixture.error.is_some()),
                fixture.failed() - suite_errors,
                fixture.duration.as_secs_f64()
            );
            if let Some(error) = &fixture.error {
                let _ = writeln!(
                    xml,
                    "    <testcase classname=\"{name}\" name=\"(fixture file)\" time=\"0.000\">\n      <error message=\"{}\">{}</error>\n    </testcase>",
                    escape(first_line(error)),
                    escape(error)
                );
            }
            for case in &fixture.cases {
                let _ = write!(
                    xml,
                    "    <testcase classname=\"{name}\" name=\"{}\" time=\"{:.3}\">",
                    escape(&case.name),
                    case.duration.as_secs_f64()
                );
                if let Some(error) = &case.error {
                    let _ = write!(
                        xml,
                        "\n      <error message=\"{}\">{}</error>",
                        escape(first_line(error)),
                        escape(&case.failure_text())
                    );
                } else if !case.mismatches.is_empty() {
                    let keys: Vec<_> = case.mismatches.iter().map(|m| m.key.as_str()).collect();
                    let _ = write!(
                        xml,
                        "\n      <failure message=\"{}\">{}</failure>",
                        escape(&format!("not as expected: {}", keys.join(", "))),
                        escape(&case.failure_text())
                    );
                }
                if let Some(batch) = case.batch.as_ref().filter(|b| !b.output.is_empty()) {
                    let _ = write!(
                        xml,
                        "\n      <system-out>{}</system-out>",
                        escape(&batch.output.join("\n"))
                    );
                }
                let newline =
                    if case.passed() && case.batch.as_ref().is_none_or(|b| b.output.is_empty()) {
                        ""
                    } else {
                        "\n    "
                    };
                let _ = writeln!(xml, "{newline}</testcase>");
            }
            xml.push_str("  </testsuite>\n");
        }
        xml.push_str("</testsuites>\n");
        xml
    }
}

impl Harness {
    /// Runs every case of `fixture`, compiling its component once per configuration.
    pub async fn run_fixture(&self, fixture: &Fixture) -> FixtureReport {
        self.run_fixture_with(fixture, |_| {}).await
    }

    /// Like [`Harness::run_fixture`], calling `on_case` as each case finishes.
    pub async fn run_fixture_with(
        &self,
        fixture: &Fixture,
        mut on_case: impl FnMut(&CaseReport),
    ) -> FixtureReport {
        let start = Instant::now();
        let mut report = FixtureReport {
            path: fixture.path.clone(),
            error: None,
            cases: Vec::new(),
            duration: Duration::ZERO,
        };
        let wasm: Arc<[u8]> = match std::fs::read(&fixture.component) {
            Ok(wasm) => wasm.into(),
            Err(e) => {
                report.error = Some(format!(
                    "reading component {}: {e}",
                    fixture.component.display()
                ));
                return report;
            }
        };
        let name = component_name(&fixture.component);
        // Compile once up front, so that a component that does not load is one error for the
        // file rather than one per case.
        let first_setup = fixture.cases.first().map_or(&fixture.setup, |c| &c.setup);
        if let Err(e) = self
            .load_wasm(&name, wasm.clone(), first_setup.clone())
            .await
        {
            report.error = Some(format!("loading {}: {e:#}", fixture.component.display()));
            report.duration = start.elapsed();
            return report;
        }
        for case in &fixture.cases {
            let case_start = Instant::now();
            let outcome = match self
                .load_wasm(&name, wasm.clone(), case.setup.clone())
                .await
            {
                Ok(component) => component.run(case.messages.clone()).await,
                Err(e) => Err(e),
            };
            let case_report = match outcome {
                Ok(batch) => CaseReport {
                    name: case.name.clone(),
                    duration: case_start.elapsed(),
                    mismatches: check(&case.expect, &batch),
                    error: None,
                    batch: Some(batch),
                },
                Err(e) => CaseReport {
                    name: case.name.clone(),
                    duration: case_start.elapsed(),
                    mismatches: Vec::new(),
                    error: Some(format!("{e:#}")),
                    batch: None,
                },
            };
            on_case(&case_report);
            report.cases.push(case_report);
        }
        report.duration = start.elapsed();
        report
    }
}

/// The fixture files `paths` name: files as given; folders searched (recursively, skipping
/// hidden folders, `target` and `node_modules`) for fixture files, each folder's files sorted
/// by name. A fixture file is a `.toml` file with a `[[case]]` table, so `host test .` in a
/// project does not take its `Cargo.toml` or its manifest for fixtures.
pub fn discover(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
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
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
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
        } else if path.extension().is_some_and(|e| e == "toml") && has_cases(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// Whether the file has a `[[case]]` table header. A text search, not a parse: a fixture with
/// a syntax error must still be found, to be reported.
fn has_cases(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines()
            .any(|line| line.trim_start().starts_with("[[case]]"))
    })
}

/// `host test`: runs the fixtures under `paths`, printing as it goes, writes JUnit XML to
/// `junit` if asked, and fails if any case failed.
pub async fn run_cli(paths: &[PathBuf], junit: Option<&Path>) -> anyhow::Result<()> {
    let files = discover(paths)?;
    // Fixtures run often on the same components: keep their compiled code between runs.
    let harness = Harness::with_runtime(Runtime::with_config(&RuntimeConfig {
        cache_dir: user_cache_dir(),
        pooling_allocator: false,
        ..RuntimeConfig::default()
    })?);
    let start = Instant::now();
    let mut run = RunReport::default();
    for file in files {
        println!("{}", file.display());
        let report = match fixture::load(&file) {
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
    println!("{}", run.summary());
    if let Some(path) = junit {
        std::fs::write(path, run.junit())
            .with_context(|| format!("writing the JUnit report to {}", path.display()))?;
    }
    let failed = run.failed();
    if failed > 0 {
        bail!("{failed} of {} fixture cases failed", run.passed() + failed);
    }
    Ok(())
}

/// `  PASS name (3 ms)`, or `  FAIL name (3 ms)` and what went wrong, indented.
pub fn case_text(case: &CaseReport) -> String {
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

/// The context printed under a failed case: the result, each message with its fate, the
/// calls, the sends and the guest's output.
fn what_happened(batch: &BatchReport) -> String {
    let mut out = String::from("what happened:\n");
    let _ = writeln!(
        out,
        "  result: {}",
        actual_result(batch.failure.as_ref(), None)
    );
    out.push_str("  messages:\n");
    for (i, (message, fate)) in batch.messages.iter().zip(&batch.fates).enumerate() {
        let fate = match fate {
            MessageFate::Acked => "acked".to_owned(),
            MessageFate::Retried { delay_seconds } => format!("retried (delay {delay_seconds} s)"),
            MessageFate::DeadLettered => "dead-lettered".to_owned(),
            MessageFate::Dropped => "dropped".to_owned(),
        };
        let _ = writeln!(
            out,
            "    {i}: {} attempt {} {} -> {fate}",
            message.id,
            message.attempts,
            shorten(&body_text(message.content_type, &message.body), 80)
        );
    }
    let index_of = |id| {
        batch
            .messages
            .iter()
            .position(|m| m.id == id)
            .map_or_else(|| format!("{id} (not in the batch)"), |i| i.to_string())
    };
    let delay = |d: Option<u32>| d.map_or("none".to_owned(), |d| d.to_string());
    let describe = |call: &BatchCall| match *call {
        BatchCall::Ack(id) => format!("ack({})", index_of(id)),
        BatchCall::Retry(id, d) => format!("retry({}, {})", index_of(id), delay(d)),
        BatchCall::AckAll => "ack-all()".into(),
        BatchCall::RetryAll(d) => format!("retry-all({})", delay(d)),
    };
    let calls: Vec<_> = batch.calls.iter().map(describe).collect();
    let _ = writeln!(
        out,
        "  calls: {}",
        if calls.is_empty() {
            "none".to_owned()
        } else {
            calls.join(", ")
        }
    );
    for ignored in &batch.ignored {
        let _ = writeln!(out, "  ignored: {}", ignored.warning);
    }
    if batch.sent.is_empty() {
        out.push_str("  sent: nothing\n");
    } else {
        out.push_str("  sent:\n");
        for sent in &batch.sent {
            let _ = writeln!(out, "    {}", shorten(&actual_send(sent, None), 120));
        }
    }
    if batch.output.is_empty() {
        out.push_str("  output: none\n");
    } else {
        out.push_str("  output:\n");
        for line in batch.output.iter().take(OUTPUT_LINES_SHOWN) {
            let _ = writeln!(out, "    {line}");
        }
        if batch.output.len() > OUTPUT_LINES_SHOWN {
            let _ = writeln!(
                out,
                "    … {} more lines",
                batch.output.len() - OUTPUT_LINES_SHOWN
            );
        }
    }
    out
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn indent_rest(text: &str, indent: &str) -> String {
    text.lines()
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 cannot hold.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;\\u{1}"
        );
    }

    #[test]
    fn junit_counts_failures_and_errors() {
        let case = |name: &str, mismatches: Vec<Mismatch>| CaseReport {
            name: name.into(),
            duration: Duration::from_millis(2),
            mismatches,
            error: None,
            batch: None,
        };
        let wrong = Mismatch {
            key: "acked".into(),
            legend: "",
            expected: vec!["[0]".into()],
            actual: vec!["[]".into()],
        };
        let run = RunReport {
            fixtures: vec![
                FixtureReport {
                    path: "a.toml".into(),
                    error: None,
                    cases: vec![case("good", vec![]), case("bad <1>", vec![wrong])],
                    duration: Duration::from_millis(5),
                },
                FixtureReport::broken("b.toml".into(), "b.toml:1:1: x: broken".into()),
            ],
            duration: Duration::from_millis(9),
        };
        assert_eq!(run.summary(), "1 passed, 2 failed");
        let xml = run.junit();
        assert!(
            xml.contains(r#"<testsuites name="wasmq fixtures" tests="3" failures="1" errors="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase classname="a.toml" name="bad &lt;1&gt;""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="not as expected: acked">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<error message="b.toml:1:1: x: broken">"#),
            "{xml}"
        );
    }
}
