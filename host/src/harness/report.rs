//! Running fixture files and what they came to: a report value per case, file and run, the
//! text of a failed case (its diffs, then what happened) and JUnit XML for CI systems. Which
//! files to run, and how a run is shown on the terminal, is `wasmq test`'s business
//! (`cli/test.rs`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::check::{actual_result, actual_send, body_text, check};
use super::fixture::Fixture;
use super::{BatchReport, Harness, MessageFate, Mismatch, component_name};
use crate::engine::precedence::BatchCall;

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

    /// What went wrong, in lines: the diffs, then what happened (`wasmq test` prints them
    /// under `FAIL name`, JUnit XML holds them in the case's failure).
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

/// A whole `wasmq test` run.
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
        assert_eq!((run.passed(), run.failed()), (1, 2));
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
