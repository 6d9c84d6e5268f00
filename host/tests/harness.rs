//! The fixture harness tests itself: the real `wasmq test` binary on fixtures that must pass
//! (the example guests' own ones included), on deliberately wrong ones (they must fail with the
//! right diff), on malformed ones (the error must name the file, line, column and key), and
//! with `--junit`; then the library API (`wasmq_host::harness`) directly.
//!
//! Needs the example guests: `scripts/build-guests.sh`.

pub mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use wasmq_host::engine::ContentType;
use wasmq_host::harness::{Harness, MessageFate, Setup, TestMessage, fixture};
use wasmq_host::runtime::Failure;

use common::{HOST, guest_path};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs `wasmq test ARGS` in `dir`.
fn host_test(dir: &Path, args: &[&str]) -> Output {
    guest_path("scripted");
    Command::new(HOST)
        .arg("test")
        .args(args)
        .current_dir(dir)
        // Compiled components are cached outside the user's own cache folder.
        .env(
            "WASMQ_CACHE_DIR",
            std::env::temp_dir().join("wasmq-test-cache"),
        )
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    )
}

/// The summary line (alone on its line).
fn summary(output: &Output) -> String {
    stdout(output)
        .lines()
        .rfind(|line| line.ends_with(" failed"))
        .unwrap_or_else(|| panic!("no summary line:\n{}", describe(output)))
        .to_owned()
}

#[test]
fn the_example_guests_fixtures_pass() {
    let out = host_test(&repo(), &["guest-examples/fixtures"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(!text.contains("FAIL") && !text.contains("ERROR"), "{text}");
    for file in [
        "worker.toml",
        "fanout.toml",
        "fanout-unbound.toml",
        "scripted.toml",
    ] {
        assert!(
            text.contains(&format!("guest-examples/fixtures/{file}\n")),
            "{file} not run:\n{text}"
        );
    }
    let passed: usize = summary(&out)
        .strip_suffix(" passed, 0 failed")
        .unwrap_or_else(|| panic!("{}", describe(&out)))
        .parse()
        .unwrap();
    assert!(passed >= 20, "{}", describe(&out));
}

#[test]
fn a_fixture_that_should_pass_passes() {
    let out = host_test(&fixtures(), &["passing"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.starts_with("passing/scripted.toml\n"), "{text}");
    assert!(text.contains("  PASS acks, retries and sends ("), "{text}");
    assert!(
        text.contains("  PASS a loop runs into the time limit ("),
        "{text}"
    );
    assert_eq!(summary(&out), "2 passed, 0 failed");
    assert!(text.ends_with("2 passed, 0 failed\n"), "{text}");
}

#[test]
fn wrong_fixtures_fail_with_the_right_diff() {
    let out = host_test(&fixtures(), &["failing/wrong.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(summary(&out), "1 passed, 6 failed");
    assert!(
        stderr(&out).contains("error: 6 of 7 fixture cases failed"),
        "{}",
        describe(&out)
    );
    let text = stdout(&out);
    let expect = |case: &str, diff: &str| {
        let start = text
            .find(&format!("  FAIL {case} ("))
            .unwrap_or_else(|| panic!("no FAIL {case}:\n{text}"));
        let block = &text[start..];
        let block = &block[..block.find("what happened").unwrap_or(block.len())];
        assert!(
            block.contains(diff),
            "case `{case}`: expected\n{diff}\nin\n{block}"
        );
    };
    expect(
        "wrong fates",
        "      acked (- expected, + actual):\n        - [0, 1]\n        + [0]\n      retried (- expected, + actual):\n        - []\n        + [1 (delay 0 s)]\n",
    );
    expect(
        "wrong result",
        "      result (- expected, + actual):\n        - ok\n        + error \"boom\"\n",
    );
    expect(
        "wrong send",
        "      sent (- expected, + actual):\n        - OUT text \"goodbye\"\n        + OUT text \"hello\"\n          OUT text \"world\"\n",
    );
    expect(
        "wrong delay",
        "      retried (- expected, + actual):\n        - [0 (delay 10 s)]\n        + [0 (delay 30 s)]\n",
    );
    expect(
        "missing output",
        "      output_contains (- in no line of the output):\n        - \"goodbye\"\n",
    );
    expect(
        "expected a timeout",
        "      result (- expected, + actual):\n        - timeout\n        + ok\n",
    );
    // A failed case shows what happened: each message's fate and the guest's output.
    assert!(text.contains("1: ") && text.contains("text \"fail:boom\" -> retried (delay 0 s)"));
    assert!(text.contains("  PASS this one is right ("), "{text}");
    // The diff of `missing output` names only what is missing, not `hello`.
    assert!(!text.contains("        - \"hello\""), "{text}");
}

#[test]
fn malformed_fixtures_name_the_file_line_and_key() {
    let cases = [
        (
            "unknown_key.toml",
            "malformed/unknown_key.toml:7:8: case[0].expect.acks: unknown field `acks`",
        ),
        (
            "index_out_of_range.toml",
            "malformed/index_out_of_range.toml:6:20: case[0].expect.acked[1]: message 2 is not in the batch (it has 2 messages, 0 to 1)",
        ),
        (
            "wrong_type.toml",
            "malformed/wrong_type.toml:4:15: consumer.max_retries: invalid type: string \"three\", expected u32",
        ),
        (
            "two_bodies.toml",
            "malformed/two_bodies.toml:7:5: case[0].messages[1]: give only one of `body`, `json` and `base64`",
        ),
        (
            "missing_component.toml",
            "malformed/missing_component.toml:1:13: component: `",
        ),
        (
            "no_component.toml",
            "malformed/no_component.toml: component: missing field `component`",
        ),
        (
            "syntax.toml",
            "malformed/syntax.toml:6:1: missing comma between array elements",
        ),
    ];
    for (file, error) in cases {
        let out = host_test(&fixtures(), &[&format!("malformed/{file}")]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", describe(&out));
        assert!(
            stdout(&out).contains(&format!("  ERROR {error}")),
            "{file}: expected `{error}` in\n{}",
            describe(&out)
        );
        assert_eq!(summary(&out), "0 passed, 1 failed", "{file}");
    }
    // A folder of them: every file is reported, none stops the others.
    let out = host_test(&fixtures(), &["malformed", "passing"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout(&out).matches("  ERROR ").count(), cases.len());
    assert_eq!(summary(&out), format!("2 passed, {} failed", cases.len()));
}

#[test]
fn junit_output_counts_tests_failures_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.xml");
    let out = host_test(
        &fixtures(),
        &[
            "passing",
            "failing",
            "malformed/unknown_key.toml",
            "--junit",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(summary(&out), "3 passed, 7 failed");
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testsuites name="wasmq fixtures" tests="10" failures="6" errors="1""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testsuite name="failing/wrong.toml" tests="7" failures="6" errors="0""#),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testsuite name="passing/scripted.toml" tests="2" failures="0" errors="0""#
        ),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 10, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 6, "{xml}");
    assert!(
        xml.contains(r#"<testcase classname="failing/wrong.toml" name="wrong result""#),
        "{xml}"
    );
    assert!(xml.contains("+ error &quot;boom&quot;"), "{xml}");
    assert!(
        xml.contains(r#"<error message="malformed/unknown_key.toml:7:8: case[0].expect.acks: unknown field `acks`"#),
        "{xml}"
    );
    // Well-formed enough for a CI system: every element that opens closes.
    for tag in [
        "testsuites",
        "testsuite",
        "testcase",
        "failure",
        "error",
        "system-out",
    ] {
        let opened =
            xml.matches(&format!("<{tag} ")).count() + xml.matches(&format!("<{tag}>")).count();
        assert_eq!(
            opened,
            xml.matches(&format!("</{tag}>")).count(),
            "<{tag}> in {xml}"
        );
    }

    // All passing: exit 0, and the report says so.
    let out = host_test(
        &fixtures(),
        &["passing", "--junit", report.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(
        xml.contains(r#"tests="2" failures="0" errors="0""#),
        "{xml}"
    );
}

#[test]
fn the_default_path_is_fixtures_and_an_empty_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = host_test(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("error: cannot read fixtures"),
        "{}",
        describe(&out)
    );

    std::fs::create_dir(dir.path().join("fixtures")).unwrap();
    let out = host_test(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("error: no fixture files (*.toml with a [[case]] table) in fixtures"),
        "{}",
        describe(&out)
    );

    std::fs::write(
        dir.path().join("fixtures/worker.toml"),
        format!(
            "component = {:?}\n[[case]]\nname = \"prints\"\nmessages = [{{ body = \"hi\" }}]\nexpect.output_contains = [\"attempt 1: hi\"]\n",
            guest_path("worker")
        ),
    )
    .unwrap();
    let out = host_test(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(summary(&out), "1 passed, 0 failed");

    // In a project folder, other TOML files (Cargo.toml, a manifest) are not fixtures.
    std::fs::write(dir.path().join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
    std::fs::write(dir.path().join("manifest.toml"), "[queues.jobs]\n").unwrap();
    let out = host_test(dir.path(), &["."]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(summary(&out), "1 passed, 0 failed");
}

// ---------------------------------------------------------------------------------------------
// The library API.

#[tokio::test]
async fn the_library_runs_a_batch_and_reports_fates_sends_and_output() {
    let harness = Harness::new().unwrap();
    let setup = Setup::default()
        .binding("OUT", "out")
        .max_retries(1)
        .retry_delay(5)
        .dead_letter_queue("jobs-dlq");
    let consumer = harness
        .load(guest_path("scripted"), setup.clone())
        .await
        .unwrap();
    let report = consumer
        .run(vec![
            TestMessage::text("ack;send:OUT:hello"),
            TestMessage::text("fail:boom").with_attempts(2),
            TestMessage::json(&serde_json::json!("retry")),
            TestMessage::bytes(b"retry:0".to_vec()),
        ])
        .await
        .unwrap();
    assert_eq!(report.failure, Some(Failure::Error("boom".into())));
    assert_eq!(
        report.fates,
        [
            MessageFate::Acked,
            MessageFate::DeadLettered,
            MessageFate::Retried { delay_seconds: 5 },
            MessageFate::Retried { delay_seconds: 0 },
        ]
    );
    assert_eq!(report.acked(), [0]);
    assert_eq!(report.retried(), [(2, 5), (3, 0)]);
    assert_eq!(report.dead_lettered(), [1]);
    assert_eq!(
        report.fate_of(&report.messages[1].id),
        Some(MessageFate::DeadLettered)
    );
    assert_eq!(report.sent.len(), 1);
    let sent = &report.sent[0];
    assert_eq!(
        (
            sent.binding.as_str(),
            sent.queue.as_str(),
            sent.body.as_slice()
        ),
        ("OUT", "out", b"hello".as_slice())
    );
    assert_eq!(sent.content_type, ContentType::Text);
    assert!(report.output_contains("[scripted]"));
    assert_eq!(report.calls.len(), 3, "{:?}", report.calls);

    // Each run starts from empty queues, and the same configuration is compiled once.
    let again = harness.load(guest_path("scripted"), setup).await.unwrap();
    let second = again
        .run(vec![TestMessage::text(
            "send-dedup:OUT:k:a;send-dedup:OUT:k:b",
        )])
        .await
        .unwrap();
    assert_eq!(
        second
            .sent
            .iter()
            .map(|s| (s.body.as_slice(), s.deduplicated))
            .collect::<Vec<_>>(),
        [(b"a".as_slice(), false), (b"b".as_slice(), true)]
    );
    assert_eq!(harness.compilations(), 1);

    // Other limits need another compilation.
    let quick = harness
        .load(
            guest_path("scripted"),
            Setup::default().timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    let report = quick.run(vec![TestMessage::text("loop")]).await.unwrap();
    assert_eq!(report.failure, Some(Failure::Timeout));
    assert_eq!(report.fates, [MessageFate::Retried { delay_seconds: 0 }]);
    assert_eq!(harness.compilations(), 2);
}

#[tokio::test]
async fn the_library_runs_fixture_files() {
    let harness = Harness::new().unwrap();
    let fixture = fixture::load(&fixtures().join("failing/wrong.toml")).unwrap();
    let report = harness.run_fixture(&fixture).await;
    assert_eq!((report.passed(), report.failed()), (1, 6));
    let wrong_result = &report.cases[1];
    assert_eq!(wrong_result.name, "wrong result");
    assert_eq!(wrong_result.mismatches.len(), 1);
    assert_eq!(
        wrong_result.mismatches[0].diff(),
        "result (- expected, + actual):\n  - ok\n  + error \"boom\"\n"
    );
    assert_eq!(harness.compilations(), 1);

    let errors = fixture::load(&fixtures().join("malformed/unknown_key.toml")).unwrap_err();
    let error = errors.first();
    assert_eq!(error.key.as_deref(), Some("case[0].expect.acks"));
    assert_eq!(error.position.map(|p| (p.line, p.column)), Some((7, 8)));
}
