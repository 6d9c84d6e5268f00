//! Comparing a [`BatchReport`] with a case's [`Expectations`], and the text both sides are
//! shown as.

use std::fmt::Write as _;

use base64::Engine as _;

use super::fixture::{Expectations, ExpectedResult, ExpectedSend};
use super::{BatchReport, MessageFate, SentMessage};
use crate::engine::ContentType;
use crate::runtime::Failure;

/// One expectation that was not met: the expected and the actual value, each as lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The expectation's key, such as `acked` or `sent`.
    pub key: String,
    /// What the two sides are (for the diff's header).
    pub legend: &'static str,
    /// The expected value, as lines.
    pub expected: Vec<String>,
    /// The actual value, as lines.
    pub actual: Vec<String>,
}

impl Mismatch {
    fn new(key: &str, expected: Vec<String>, actual: Vec<String>) -> Self {
        Self {
            key: key.to_owned(),
            legend: "- expected, + actual",
            expected,
            actual,
        }
    }

    /// The mismatch as a line diff: a header, then `  ` for lines on both sides, `- ` for
    /// expected lines that are missing and `+ ` for actual lines that were not expected.
    pub fn diff(&self) -> String {
        let mut out = format!("{} ({}):\n", self.key, self.legend);
        for (sign, line) in line_diff(&self.expected, &self.actual) {
            let _ = writeln!(out, "  {sign} {line}");
        }
        out
    }
}

/// Compares `report` with `expect`; an empty result means the case passed.
pub fn check(expect: &Expectations, report: &BatchReport) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    let mut compare = |key: &str, expected: Vec<String>, actual: Vec<String>| {
        if expected != actual {
            mismatches.push(Mismatch::new(key, expected, actual));
        }
    };

    if let Some(expected) = &expect.result {
        compare(
            "result",
            vec![expected_result(expected)],
            vec![actual_result(report.failure.as_ref(), Some(expected))],
        );
    }
    let set = |expected: &Option<std::collections::BTreeSet<usize>>, fate: MessageFate| {
        expected.as_ref().map(|expected| {
            let actual = report
                .fates
                .iter()
                .enumerate()
                .filter(|(_, f)| **f == fate)
                .map(|(i, _)| i.to_string());
            (
                vec![list(expected.iter().map(usize::to_string))],
                vec![list(actual)],
            )
        })
    };
    if let Some((expected, actual)) = set(&expect.acked, MessageFate::Acked) {
        compare("acked", expected, actual);
    }
    if let Some(expected) = &expect.retried {
        let show = |i: usize, delay: u32, with_delay: bool| {
            if with_delay {
                format!("{i} (delay {delay} s)")
            } else {
                i.to_string()
            }
        };
        let wanted = list(expected.iter().map(|(i, delay)| match delay {
            Some(d) => show(*i, *d, true),
            None => i.to_string(),
        }));
        // An actual retry is shown with its delay unless the expectation leaves it open.
        let actual = list(report.retried().into_iter().map(|(i, delay)| {
            let with_delay = !matches!(expected.get(&i), Some(None));
            show(i, delay, with_delay)
        }));
        compare("retried", vec![wanted], vec![actual]);
    }
    if let Some((expected, actual)) = set(&expect.dead_lettered, MessageFate::DeadLettered) {
        compare("dead_lettered", expected, actual);
    }
    if let Some((expected, actual)) = set(&expect.dropped, MessageFate::Dropped) {
        compare("dropped", expected, actual);
    }
    if let Some(expected) = &expect.sent {
        let wanted = expected.iter().map(expected_send).collect();
        let actual = report
            .sent
            .iter()
            .enumerate()
            .map(|(i, sent)| actual_send(sent, expected.get(i)))
            .collect();
        compare("sent", wanted, actual);
    }
    let missing: Vec<String> = expect
        .output_contains
        .iter()
        .filter(|text| !report.output_contains(text))
        .map(|text| format!("{text:?}"))
        .collect();
    if let Some(expected) = &expect.output {
        compare("output", expected.clone(), report.output.clone());
    }
    if !missing.is_empty() {
        mismatches.push(Mismatch {
            key: "output_contains".into(),
            legend: "- in no line of the output",
            expected: missing,
            actual: Vec::new(),
        });
    }
    mismatches
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

fn expected_result(result: &ExpectedResult) -> String {
    match result {
        ExpectedResult::Ok => "ok".into(),
        ExpectedResult::AnyError => "error".into(),
        ExpectedResult::Error(text) => format!("error {text:?}"),
        ExpectedResult::Trap => "trap".into(),
        ExpectedResult::Timeout => "timeout".into(),
    }
}

/// How `handle` finished, in the detail `expected` asks for (all of it when `None`).
pub(super) fn actual_result(
    failure: Option<&Failure>,
    expected: Option<&ExpectedResult>,
) -> String {
    match failure {
        None => "ok".into(),
        Some(Failure::Error(_)) if expected == Some(&ExpectedResult::AnyError) => "error".into(),
        Some(Failure::Error(text)) => format!("error {text:?}"),
        Some(Failure::Trap(_)) if expected == Some(&ExpectedResult::Trap) => "trap".into(),
        Some(Failure::Trap(text)) => format!("trap ({text})"),
        Some(Failure::Timeout) => "timeout".into(),
        Some(Failure::HostBusy(why)) => format!("host busy ({why})"),
    }
}

/// A body as one line: text quoted, JSON compact (keys sorted), bytes as base64.
pub(super) fn body_text(content_type: ContentType, body: &[u8]) -> String {
    match content_type {
        ContentType::Text => match std::str::from_utf8(body) {
            Ok(text) => format!("text {text:?}"),
            Err(_) => format!(
                "text (not UTF-8) {}",
                base64::engine::general_purpose::STANDARD.encode(body)
            ),
        },
        ContentType::Json => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(value) => format!("json {value}"),
            Err(_) => format!("json (invalid) {:?}", String::from_utf8_lossy(body)),
        },
        ContentType::Bytes => format!(
            "bytes {}",
            base64::engine::general_purpose::STANDARD.encode(body)
        ),
    }
}

fn expected_send(send: &ExpectedSend) -> String {
    let mut line = format!(
        "{} {}",
        send.binding,
        body_text(send.content_type, &send.body)
    );
    if let Some(delay) = send.delay_seconds {
        let _ = write!(line, " delay {delay} s");
    }
    if let Some(key) = &send.dedup_key {
        let _ = write!(line, " dedup_key {key:?}");
    }
    if send.deduplicated == Some(true) {
        line.push_str(" (deduplicated)");
    }
    line
}

/// A send, with the optional fields the expectation in the same place checks (all of them
/// when there is none).
pub(super) fn actual_send(sent: &SentMessage, like: Option<&ExpectedSend>) -> String {
    let mut line = format!(
        "{} {}",
        sent.binding,
        body_text(sent.content_type, &sent.body)
    );
    let show_delay = like.map_or(sent.delay_seconds != 0, |e| e.delay_seconds.is_some());
    if show_delay {
        let _ = write!(line, " delay {} s", sent.delay_seconds);
    }
    let show_key = like.map_or(sent.dedup_key.is_some(), |e| e.dedup_key.is_some());
    if show_key {
        let _ = write!(
            line,
            " dedup_key {:?}",
            sent.dedup_key.as_deref().unwrap_or("")
        );
    }
    let show_dedup = like.is_none_or(|e| e.deduplicated.is_some());
    if sent.deduplicated && show_dedup {
        line.push_str(" (deduplicated)");
    }
    line
}

/// A minimal line diff (longest common subsequence): `' '` both, `'-'` only in `a`, `'+'`
/// only in `b`.
fn line_diff<'a>(a: &'a [String], b: &'a [String]) -> Vec<(char, &'a str)> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = Vec::with_capacity(n + m);
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push((' ', a[i].as_str()));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(('+', b[j].as_str()));
            j += 1;
        } else {
            out.push(('-', a[i].as_str()));
            i += 1;
        }
    }
    // Within a changed stretch, show what was expected before what came instead.
    let mut k = 0;
    while k < out.len() {
        let start = k;
        while k < out.len() && out[k].0 != ' ' {
            k += 1;
        }
        out[start..k].sort_by_key(|(sign, _)| *sign == '+');
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn diffs_show_missing_then_unexpected_lines() {
        let m = Mismatch::new(
            "sent",
            lines(&["a", "b", "c"]),
            lines(&["a", "x", "c", "d"]),
        );
        assert_eq!(
            m.diff(),
            "sent (- expected, + actual):\n    a\n  - b\n  + x\n    c\n  + d\n"
        );
    }

    #[test]
    fn bodies_render_by_content_type() {
        assert_eq!(body_text(ContentType::Text, b"hi\n"), r#"text "hi\n""#);
        assert_eq!(
            body_text(ContentType::Json, br#"{ "b": 1, "a": [true] }"#),
            r#"json {"a":[true],"b":1}"#
        );
        assert_eq!(body_text(ContentType::Bytes, b"hi"), "bytes aGk=");
    }
}
