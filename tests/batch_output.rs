//! Output is a contract: JSONL lines and failure lines validate against the committed
//! schemas, and CSV round-trips through a CSV reader to the same values.

mod support;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use support::*;
use userfetch::batch::output::flatten;
use userfetch::server::ServerConfig;

fn check_lines(path: &Path, validator: &jsonschema::Validator) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    for (i, line) in text.lines().enumerate() {
        let value: Value = serde_json::from_str(line).unwrap();
        if let Err(e) = validator.validate(&value) {
            panic!("{}:{}: {e}\n{line}", path.display(), i + 1);
        }
    }
    text.lines().count()
}

#[test]
fn jsonl_failures_and_summary_validate_against_the_committed_schemas() {
    let env = Env::with_faults(&["500=0.3"]);
    let mut ids: Vec<String> = (1..=200).map(|n| n.to_string()).collect();
    ids.extend(["99999", "no-such-user"].map(String::from));
    let input = env.write("ids.txt", ids_file(&ids));
    let out =
        run(env
            .batch_to_files(&input, &[])
            .args(["--retries", "1", "--max-retry-wait", "10ms"]));
    // With 30 % of answers 500 and one retry, some ids fail: exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let found = check_lines(&env.path("out.jsonl"), &schema("batch-record.schema.json"));
    let failed = check_lines(
        &env.path("failures.jsonl"),
        &schema("batch-failure.schema.json"),
    );
    assert_eq!(found + failed, ids.len());
    let failures = std::fs::read_to_string(env.path("failures.jsonl")).unwrap();
    assert!(
        failures.contains(r#""outcome":"failed","error":"server_error""#),
        "{failures}"
    );
    // A user that does not exist ends not found (on the first attempt, or on the second when
    // the first met an injected 500), unless the 500s hit both attempts.
    let line = failures
        .lines()
        .find(|l| l.starts_with(r#"{"id":"no-such-user","#))
        .unwrap_or_else(|| panic!("no-such-user missing: {failures}"));
    let not_found = r#""outcome":"not_found","error":"not_found","message":"not found (the API answered 404)","attempts":"#;
    assert!(
        line.contains(&format!("{not_found}1}}"))
            || line.contains(&format!("{not_found}2}}"))
            || line.contains(r#""outcome":"failed","error":"server_error""#),
        "{line}"
    );
    let summary = summary(&env.path("summary.json"));
    if let Err(e) = schema("batch-summary.schema.json").validate(&summary) {
        panic!("{e}\n{summary:#}");
    }
    // A run that ends with failed ids is complete: nothing stopped it.
    assert_eq!(summary["status"], "complete", "{summary:#}");
    assert_eq!(summary["reason"], serde_json::Value::Null, "{summary:#}");
}

#[test]
fn the_schemas_reject_what_they_should() {
    let failure = schema("batch-failure.schema.json");
    let bad = serde_json::json!({"id": "1", "outcome": "not_found", "error": "timeout", "message": "", "attempts": 1});
    assert!(
        !failure.is_valid(&bad),
        "not_found must carry error not_found"
    );
    let bad = serde_json::json!({"id": "1", "outcome": "failed", "error": "timeout", "message": "", "attempts": 0});
    assert!(!failure.is_valid(&bad), "attempts start at 1");
    let record = schema("batch-record.schema.json");
    assert!(!record.is_valid(&serde_json::json!({"id": 1})));
}

/// Records whose strings hold C1 controls, bidi overrides and U+0085 are written to the
/// JSONL file with those as `\uXXXX`: the same JSON, but nothing that acts on a terminal
/// showing the file, and no character that splits a line for `splitlines`-style readers.
#[test]
fn jsonl_lines_carry_no_raw_control_or_bidi_characters() {
    let env = Env::with_faults(&["hostile=1"]);
    let input = env.write("ids.txt", ids_file(1..=5));
    let out = run(&mut env.batch(&[input.to_str().unwrap(), "--out", "out.jsonl"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(env.path("out.jsonl")).unwrap();
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| {
            c != '\n'
                && (c.is_control()
                    || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        })
        .collect();
    assert!(raw.is_empty(), "raw {raw:?} in {text}");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    let name = records[0]["name"].as_str().unwrap();
    assert!(
        name.contains('\u{9b}') && name.contains('\u{202e}'),
        "{name:?}"
    );
    let phrase = records[0]["company"]["catchPhrase"].as_str().unwrap();
    assert!(
        phrase.contains('\u{85}') && phrase.contains('\u{2066}'),
        "{phrase:?}"
    );
}

#[test]
fn csv_round_trips_through_a_csv_reader() {
    // Hostile records carry escapes, C1 controls and bidi marks: CSV quoting must hold them.
    let env = Env::with_faults(&["hostile=0.2"]);
    let input = env.write("ids.txt", ids_file(1..=300));
    let input = input.to_str().unwrap();
    let out = run(&mut env.batch(&[input, "--out", "out.jsonl"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A second job over the same ids: every record comes from the cache, so the CSV holds
    // exactly the records the JSONL holds.
    let out = run(&mut env.batch(&[
        input,
        "--out",
        "out.csv",
        "--format",
        "csv",
        "--summary-json",
        "s.json",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary(&env.path("s.json"))["cached"], 300);

    let records: Vec<Value> = std::fs::read_to_string(env.path("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut reader = csv::Reader::from_path(env.path("out.csv")).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    for column in [
        "id",
        "name",
        "address.city",
        "address.geo.lat",
        "company.catchPhrase",
    ] {
        assert!(
            headers.iter().any(|h| h == column),
            "no column {column} in {headers:?}"
        );
    }
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), records.len());
    let mut hostile = 0;
    for (row, record) in rows.iter().zip(&records) {
        let mut cells = Vec::new();
        flatten(record, &mut String::new(), &mut cells);
        let want: HashMap<String, String> = cells.into_iter().collect();
        for (column, cell) in headers.iter().zip(row.iter()) {
            assert_eq!(
                cell,
                want.get(column).map(String::as_str).unwrap_or(""),
                "{column} of {record}"
            );
        }
        assert_eq!(want.len(), headers.len());
        hostile += usize::from(row.iter().any(|c| c.contains('\u{1b}')));
    }
    assert!(hostile > 0, "no hostile record was in the sample");
}

/// Empty records: an empty row beside records with fields (not a made-up `value` column that
/// merged with a record's own), and no rows at all when no record has a field (a row of no
/// columns is written `""`, which a reader takes for a header).
#[test]
fn csv_of_empty_records() {
    let api = answering("200 OK", |request| {
        if request.contains("/1 HTTP/") {
            r#"{"id":1,"value":"real"}"#.to_owned()
        } else {
            "{}".to_owned()
        }
    });
    let env = Env::new();
    let run_over = |ids: &str, out: &str| {
        let input = env.write("ids.txt", ids);
        run(env
            .with_api(&api, &["--http1"])
            .arg("batch")
            .arg(&input)
            .args(["--out", out]))
    };
    let out = run_over("1\n2\n", "mixed.csv");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(env.path("mixed.csv")).unwrap(),
        "id,value\n1,real\n,\n"
    );
    let out = run_over("2\n3\n", "empty.csv");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(std::fs::read_to_string(env.path("empty.csv")).unwrap(), "");
    assert!(
        text.contains("2 records found: not one holds a field, so the CSV has no column"),
        "{text}"
    );
    // The summary counts what the file holds.
    assert!(!text.contains("2 found records in empty.csv"), "{text}");
}

/// A record whose object holds a key twice: JSONL keeps it as sent, the CSV has one cell for
/// the key and used to lose the first value without a word.
#[test]
fn csv_says_when_a_record_holds_a_key_twice() {
    let api = answering("200 OK", |_| r#"{"id":7,"name":"x","name":"y"}"#.to_owned());
    let env = Env::new();
    let input = env.write("ids.txt", "7\n");
    let out = run(env
        .with_api(&api, &["--http1"])
        .arg("batch")
        .arg(&input)
        .args(["--out", "out.csv"]));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "record \"7\": an object holds the key \"name\" twice; the CSV keeps its last value"
        ),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(env.path("out.csv")).unwrap(),
        "id,name\n7,y\n"
    );
}

/// A first run writes `--out` as answers are committed; a rerun rebuilds it from the store.
/// Answers that come back out of order (random latency per request), ids the API doesn't
/// know, duplicates and comments must not make the two differ by a byte.
#[test]
fn the_output_written_during_a_run_is_the_one_the_store_rebuilds() {
    let env = Env::with(ServerConfig {
        jitter: std::time::Duration::from_millis(40),
        ..ServerConfig::default()
    });
    let mut ids: Vec<String> = (1..=1_500).map(|n| n.to_string()).collect();
    ids.extend([
        "# a comment".into(),
        "77".into(),
        "99999".into(),
        "".into(),
        "3".into(),
    ]);
    let input = env.write("ids.txt", ids_file(&ids));
    let first = run(env
        .batch_to_files(&input, &["--concurrency", "300"])
        .arg("-vv"));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let streamed = std::fs::read(env.path("out.jsonl")).unwrap();
    assert!(
        !stderr(&first).contains("rebuilt from the store"),
        "the first run should have streamed: {}",
        stderr(&first)
    );

    let again = run(env.batch_to_files(&input, &[]).arg("-vv"));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("rebuilt from the store"),
        "a rerun has every id done earlier: {}",
        stderr(&again)
    );
    let rebuilt = std::fs::read(env.path("out.jsonl")).unwrap();
    assert_eq!(env.user_requests(), 1_501, "the rerun fetched again");
    assert!(
        streamed == rebuilt,
        "the streamed output differs from the rebuilt one"
    );
    let found = jsonl_ids(&env.path("out.jsonl"));
    let want: Vec<String> = (1..=1_500).map(|n| n.to_string()).collect();
    assert_eq!(found, want, "every known id once, in input order");
}

/// The job is the output file, whatever the input: a second run given only new ids still
/// writes the records the first run found, followed by its own.
#[test]
fn a_run_over_other_ids_keeps_what_earlier_runs_found() {
    let env = Env::new();
    let first = env.write("first.txt", ids_file(1..=300));
    let out = run(&mut env.batch_to_files(&first, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second = env.write("second.txt", ids_file(301..=400));
    let out = run(&mut env.batch_to_files(&second, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let found = jsonl_ids(&env.path("out.jsonl"));
    assert_eq!(found.len(), 400, "{}", stderr(&out));
    let all: std::collections::HashSet<String> = found.into_iter().collect();
    assert_eq!(all, (1..=400).map(|n| n.to_string()).collect());
}

/// Ids added in front of those an earlier run found still come out in the new file's order.
#[test]
fn the_output_follows_the_latest_input_order() {
    let env = Env::new();
    let ids = env.write("ids.txt", ids_file(5..=7));
    let out = run(&mut env.batch_to_files(&ids, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.write("ids.txt", ids_file([1, 2, 3, 5, 6, 7]));
    let out = run(&mut env.batch_to_files(&ids, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        jsonl_ids(&env.path("out.jsonl")),
        ["1", "2", "3", "5", "6", "7"]
    );
    // Ids this input no longer holds come first, as they were, then this input's.
    env.write("ids.txt", ids_file([9, 8, 3]));
    let out = run(&mut env.batch_to_files(&ids, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        jsonl_ids(&env.path("out.jsonl")),
        ["1", "2", "5", "6", "7", "9", "8", "3"]
    );
}

/// `--out users.csv` alone writes CSV; a `--format` given says otherwise.
#[test]
fn the_format_follows_the_out_file_name_unless_given() {
    let env = Env::new();
    let ids = env.write("ids.txt", ids_file(1..=3));
    let ids = ids.to_str().unwrap();
    for (out_name, format, csv) in [
        ("users.csv", None, true),
        ("USERS.CSV", None, true),
        ("users.jsonl", None, false),
        ("users.txt", None, false),
        ("other.csv", Some("jsonl"), false),
        ("other.jsonl", Some("csv"), true),
    ] {
        let mut args = vec![ids, "--out", out_name];
        args.extend(format.iter().flat_map(|f| ["--format", f]));
        let out = run(&mut env.batch(&args));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = std::fs::read_to_string(env.path(out_name)).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first.starts_with("id,"),
            csv,
            "{out_name} {format:?}: {first}"
        );
        assert_eq!(
            first.starts_with('{'),
            !csv,
            "{out_name} {format:?}: {first}"
        );
    }
}

#[test]
fn csv_with_no_record_is_an_empty_file() {
    let env = Env::new();
    let ids = env.write("ids.txt", ids_file([99_998, 99_999]));
    let out = run(&mut env.batch_to_files(&ids, &["--format", "csv"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(env.path("out.jsonl")).unwrap(), b"");
}

/// A run of 4 ids whose answers take a second (generous time to change something around
/// it on a loaded machine), once its first request has reached the API.
fn start_slow_run() -> (Env, std::process::Child) {
    start_slow_run_on(Env::with_latency(std::time::Duration::from_secs(1)), &[])
}

/// The same on `env`, with `extra` arguments.
fn start_slow_run_on(env: Env, extra: &[&str]) -> (Env, std::process::Child) {
    let ids = env.write("ids.txt", ids_file(1..=4));
    let mut child = env
        .batch_to_files(&ids, extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(env.wait_for_requests(1, &mut child), "the run ended early");
    (env, child)
}

/// Runs 4 ids slowly and, once the run is under way, puts a directory where `blocked` (one
/// of its output files) must go: that file cannot be put in place at the end.
fn run_with_output_blocked(blocked: &str) -> (Env, std::process::Output) {
    run_with_outputs_blocked(&[blocked], false)
}

/// The same with several files blocked, and then Ctrl-C if `interrupt`.
fn run_with_outputs_blocked(blocked: &[&str], interrupt: bool) -> (Env, std::process::Output) {
    let started = start_slow_run();
    block_outputs(started, blocked, interrupt)
}

fn block_outputs(
    (env, child): (Env, std::process::Child),
    blocked: &[&str],
    interrupt: bool,
) -> (Env, std::process::Output) {
    for name in blocked {
        std::fs::create_dir(env.path(name)).unwrap();
        std::fs::write(env.path(name).join("keep"), "").unwrap();
    }
    if interrupt {
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    }
    let out = child.wait_with_output().unwrap();
    (env, out)
}

/// A run whose 4 ids all fail (a 500 after a second, no retry), with `blocked` made
/// impossible to put in place once it is under way.
fn failing_run_with_output_blocked(blocked: &str) -> (Env, std::process::Output) {
    let env = Env::with(ServerConfig {
        latency: std::time::Duration::from_secs(1),
        faults: vec!["500=1".parse().unwrap()],
        ..ServerConfig::default()
    });
    block_outputs(
        start_slow_run_on(env, &["--retries", "0"]),
        &[blocked],
        false,
    )
}

/// `--out` cannot be put in place: `--failures` is written all the same.
#[test]
fn a_failed_output_does_not_keep_the_failures_from_being_written() {
    let (env, out) = failing_run_with_output_blocked("out.jsonl");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cannot put out.jsonl in place"), "{text}");
    let failed = std::fs::read_to_string(env.path("failures.jsonl")).unwrap();
    assert_eq!(failed.lines().count(), 4, "{failed}");
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["failures"]["records"], 4, "{s}");
    assert_eq!(s["out"], serde_json::Value::Null, "{s}");
}

/// `--failures` cannot be put in place: the failed ids are named on stderr instead, as when
/// no `--failures` is given.
#[test]
fn failed_ids_are_named_when_the_failures_file_cannot_be_written() {
    let (_env, out) = failing_run_with_output_blocked("failures.jsonl");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot put failures.jsonl in place"),
        "{text}"
    );
    for id in 1..=4 {
        assert!(text.contains(&format!("userfetch: user {id}: ")), "{text}");
    }
    assert!(
        text.contains("failures.jsonl lists them once a run writes it"),
        "{text}"
    );
}

/// The summary file cannot be written either: both failures are said, the output's first.
#[test]
fn a_failed_summary_file_does_not_hide_the_failed_output() {
    let (_env, out) = run_with_outputs_blocked(&["out.jsonl", "summary.json"], false);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cannot put out.jsonl in place"), "{text}");
    assert!(text.contains("cannot put summary.json in place"), "{text}");
}

/// Neither `--out` nor `--failures` can be put in place: both are said, the run ends with the
/// output's.
#[test]
fn both_failed_outputs_are_said() {
    let (_env, out) = run_with_outputs_blocked(&["out.jsonl", "failures.jsonl"], false);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let failures = text.find("cannot put failures.jsonl in place");
    let output = text.rfind("cannot put out.jsonl in place");
    assert!(
        failures.is_some() && output.is_some(),
        "both errors said: {text}"
    );
}

/// Ctrl-C, then the output cannot be put in place: the error is said, and the exit code is
/// still the interruption's.
#[test]
fn an_interrupted_run_whose_output_fails_still_exits_130() {
    let (env, out) = run_with_outputs_blocked(&["out.jsonl"], true);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("cannot put out.jsonl in place"), "{text}");
    assert_eq!(summary(&env.path("summary.json"))["status"], "interrupted");
}

/// The output cannot be put in place at the end: the summary is still printed and written,
/// and the run fails with the reason.
#[test]
fn a_failed_final_write_still_reports_the_run() {
    let (env, out) = run_with_output_blocked("out.jsonl");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("batch done, but its output could not be written, in"),
        "the summary: {text}"
    );
    assert!(text.contains("cannot put out.jsonl in place"), "{text}");
    let s = summary(&env.path("summary.json"));
    assert_eq!(
        (s["found"].as_u64(), s["status"].as_str()),
        (Some(4), Some("output_error"))
    );
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot put out.jsonl in place")),
        "{s}"
    );
    let validator = schema("batch-summary.schema.json");
    assert!(validator.is_valid(&s), "{s}");
}

/// `--out` in place, `--failures` not: the summary still names what was written.
#[test]
fn a_failed_failures_file_keeps_the_report_of_the_output() {
    let (env, out) = run_with_output_blocked("failures.jsonl");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot put failures.jsonl in place"),
        "{text}"
    );
    assert!(text.contains("4 found records in out.jsonl"), "{text}");
    assert_eq!(jsonl_ids(&env.path("out.jsonl")).len(), 4);
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["out"]["records"], 4, "{s}");
    assert_eq!(s["failures"], serde_json::Value::Null, "{s}");
}

#[test]
fn a_closed_stderr_loses_nothing_and_keeps_the_exit_code() {
    let env = Env::new();
    let ids = env.write("ids.txt", ids_file(1..=50));
    let out = env
        .batch_to_files(&ids, &[])
        .stderr(closed_pipe())
        .output()
        .unwrap();
    // The summary cannot be written; the run is still a success, not a panic (101).
    assert_eq!(out.status.code(), Some(0));
    let found = jsonl_ids(&env.path("out.jsonl"));
    assert_eq!(once_each(&found, "out.jsonl").len(), 50);
}

#[test]
fn a_dry_run_into_a_closed_pipe_ends_quietly() {
    let env = Env::new();
    let ids = env.write("ids.txt", ids_file(1..=50));
    let out = env
        .batch(&[ids.to_str().unwrap(), "--out", "out.jsonl", "--dry-run"])
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "the reader left; nothing to report");
}

/// An `--out` collects what every run into it found: a run over another input says how many
/// of the output's records are not from its input, and its failures file the same; the same
/// input again says nothing.
#[test]
fn a_run_over_another_input_says_what_earlier_runs_left_in_the_output() {
    let env = Env::new();
    // 99999 is no user of the demo API's.
    let first = env.write("ids.txt", ids_file((1..=21).chain([99999])));
    let second = env.write("ids2.txt", ids_file(100..=105));
    let into_out = |input: &std::path::Path| {
        run(&mut env.batch(&[
            input.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--failures",
            "failures.jsonl",
        ]))
    };
    assert_eq!(into_out(&first).status.code(), Some(0));
    let again = into_out(&first);
    assert!(
        !stderr(&again).contains("earlier runs"),
        "{}",
        stderr(&again)
    );
    let other = into_out(&second);
    let text = stderr(&other);
    assert_eq!(other.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "out.jsonl also holds 21 records that earlier runs into it found for ids not in this input"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "failures.jsonl also holds 1 not-found or failed id of earlier runs into it for ids \
             not in this input"
        ),
        "{text}"
    );
    assert_eq!(jsonl_ids(&env.path("out.jsonl")).len(), 27);
    assert_eq!(jsonl_ids(&env.path("failures.jsonl")), ["99999"]);
}

/// A run replacing an `--out` that is not the file its job last wrote (another API's, one
/// made by hand) says so before it starts, not afterwards.
#[test]
fn replacing_an_output_no_run_of_this_job_wrote_is_said_up_front() {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=5));
    let into_out = |query: &str| {
        let api = format!("{}{query}", env.server.url_template());
        run(env
            .with_api(&api, &[])
            .arg("batch")
            .arg(&input)
            .args(["--out", "out.jsonl"]))
    };
    let says = "out.jsonl is not the file this command (this --api and --out) last wrote";
    let first = into_out("");
    assert!(!stderr(&first).contains(says), "{}", stderr(&first));
    let again = into_out("");
    assert!(!stderr(&again).contains(says), "{}", stderr(&again));
    // A dry run says it too.
    let api = format!("{}?x=1", env.server.url_template());
    let dry = run(env.with_api(&api, &[]).arg("batch").arg(&input).args([
        "--out",
        "out.jsonl",
        "--dry-run",
    ]));
    let shown = String::from_utf8_lossy(&dry.stdout);
    assert!(shown.contains(says), "{shown}");
    assert!(shown.contains("the run would replace it"), "{shown}");
    let other = into_out("?x=1");
    assert_eq!(other.status.code(), Some(0));
    assert!(stderr(&other).contains(says), "{}", stderr(&other));
    // Its own output next time: nothing to say.
    let continued = into_out("?x=1");
    assert!(!stderr(&continued).contains(says), "{}", stderr(&continued));
    // The first job, which wrote the file before, finds the other's there now.
    let back = into_out("");
    assert!(stderr(&back).contains(says), "{}", stderr(&back));
    // And a file put there by hand is nobody's.
    std::fs::write(env.path("out.jsonl"), "{\"mine\":1}\n").unwrap();
    let by_hand = into_out("");
    assert!(stderr(&by_hand).contains(says), "{}", stderr(&by_hand));
}

/// An output naming another cache (or any SQLite database) is refused: replacing it lost
/// every earlier run's progress kept there, with no more than a warning that the file was
/// not this job's.
#[test]
fn an_output_naming_a_sqlite_database_is_refused_and_the_database_kept() {
    let env = Env::new();
    let ids = env.write("ids.txt", ids_file(1..=5));
    let other = env.path("other.sqlite3");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE records (id TEXT); INSERT INTO records VALUES ('1');")
        .unwrap();
    let before = std::fs::read(&other).unwrap();
    for option in ["--out", "--failures", "--summary-json"] {
        let mut cmd = env.batch(&[ids.to_str().unwrap(), option, "other.sqlite3"]);
        if option != "--out" {
            cmd.args(["--out", "out.jsonl"]);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{option}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "{option} other.sqlite3 is a SQLite database (a userfetch cache?), which an output would replace; choose another file"
            )),
            "{option}: {}",
            stderr(&out)
        );
        assert_eq!(std::fs::read(&other).unwrap(), before, "{option}");
    }
    assert!(!env.path("out.jsonl").exists());
    // Nor a database's write-ahead log, which holds its latest commits.
    let log = env.path("other.sqlite3-wal");
    let mut bytes = vec![0x37, 0x7f, 0x06, 0x82];
    bytes.resize(64, 0);
    std::fs::write(&log, &bytes).unwrap();
    let out = run(&mut env.batch(&[ids.to_str().unwrap(), "--out", "other.sqlite3-wal"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--out other.sqlite3-wal is a SQLite database's write-ahead log"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
}

/// A cache of 3,000 records, folded from its log into the file, then the page (8 KiB)
/// holding id 2000's record zeroed: damage that opening the file does not read.
fn cache_with_a_damaged_page() -> Env {
    let env = Env::new();
    let first = env.write("first.txt", ids_file(1..=3000));
    let out = run(&mut env.batch_to_files(&first, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cache = env.path("cache.sqlite3");
    rusqlite::Connection::open(&cache)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    // Every page holding the text: a page split leaves stale copies behind (SQLite does
    // not clear them), and the live record must be among those zeroed.
    let bytes = std::fs::read(&cache).unwrap();
    let pages: std::collections::BTreeSet<usize> = bytes
        .windows(10)
        .enumerate()
        .filter(|(_, w)| *w == br#""id":2000,"#)
        .map(|(at, _)| at / 8192)
        .collect();
    assert!(!pages.is_empty());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&cache)
        .unwrap();
    use std::io::{Seek, Write};
    for page in pages {
        file.seek(std::io::SeekFrom::Start((page * 8192) as u64))
            .unwrap();
        file.write_all(&[0; 8192]).unwrap();
    }
    env
}

/// `get` on ids whose records sit on a damaged page asks the API for each, and says the
/// cache's failure once, not once per id (3,000 ids printed 83 identical lines).
#[test]
fn get_says_a_damaged_cache_once() {
    let env = cache_with_a_damaged_page();
    let ids: Vec<String> = (1990..=2010).map(|i| i.to_string()).collect();
    let out = run(env
        .with_api(&env.server.url_template(), &[])
        .arg("get")
        .args(&ids));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 21);
    assert_eq!(text.matches("reading user").count(), 1, "{text}");
    assert!(
        text.contains("(the same failure for other ids is not said)"),
        "{text}"
    );
}

/// A cache damaged past what opening it reads (a zeroed page among the records) is said to
/// be damaged when a claim meets it, as one found damaged at the start is: exit 2 and "move
/// it aside", not an error to run again, which met the same page every time.
#[test]
fn a_cache_damaged_where_a_claim_reads_is_said_to_be_damaged() {
    let env = cache_with_a_damaged_page();
    // Another job (another --out), whose claims read the records to find those cached.
    let second = env.write("second.txt", ids_file(1..=4000));
    let out = run(&mut env.batch(&[
        second.to_str().unwrap(),
        "--out",
        "second.jsonl",
        "--summary-json",
        "summary.json",
    ]));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cache.sqlite3 is not a usable SQLite database (database disk image is malformed); if it is a damaged userfetch cache, move it aside"),
        "{text}"
    );
    assert!(
        text.contains(
            "(move the damaged cache file aside, then run the same command again to finish)"
        ),
        "{text}"
    );
    // Met mid-run, by a claim: what the summary file says.
    assert_eq!(summary(&env.path("summary.json"))["status"], "error");
}

/// The cache file refuses a write mid-run (a full disk, say; here a trigger that raises an
/// error for one id): the run stops, the summary says it stopped on an error and why, and
/// what was stored before stays for a rerun.
#[test]
fn a_store_that_fails_mid_run_is_reported_as_an_error_with_its_reason() {
    let env = Env::new();
    let first = env.write("first.txt", ids_file(1..=3));
    assert_eq!(
        run(&mut env.batch_to_files(&first, &[])).status.code(),
        Some(0)
    );
    let cache = rusqlite::Connection::open(env.path("cache.sqlite3")).unwrap();
    cache
        .execute_batch(
            "CREATE TRIGGER refuse_30 BEFORE INSERT ON batch_outcomes WHEN NEW.id = '30'
             BEGIN SELECT RAISE(ABORT, 'no room left (test)'); END;",
        )
        .unwrap();
    drop(cache);

    let ids = env.write("ids.txt", ids_file(1..=200));
    let out = run(&mut env.batch_to_files(&ids, &["--concurrency", "4"]));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no room left (test)"), "{text}");
    assert!(text.contains("batch stopped by an error"), "{text}");
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["status"], "error", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("no room left (test)"),
        "{s}"
    );
    assert!(schema("batch-summary.schema.json").is_valid(&s), "{s}");

    // What the failed run counted as found is exactly what it stored: the refused write
    // took the rest of its transaction's outcomes with it, and the rerun fetches those.
    let found = s["found"].as_u64().unwrap();
    let cache = rusqlite::Connection::open(env.path("cache.sqlite3")).unwrap();
    cache.execute_batch("DROP TRIGGER refuse_30").unwrap();
    drop(cache);
    let out = run(&mut env.batch_to_files(&ids, &["--concurrency", "4"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rerun = summary(&env.path("summary.json"));
    assert_eq!(rerun["done_earlier"].as_u64(), Some(3 + found), "{rerun}");
    assert_eq!(jsonl_ids(&env.path("out.jsonl")).len(), 200);
}

/// The rate is of ids fetched: a rerun that skips every id fetched none, where it used to
/// report tens of thousands of ids a second.
#[test]
fn the_rate_counts_only_the_ids_this_run_fetched() {
    let env = Env::new();
    let ids = env.write("ids.txt", ids_file(1..=50));
    assert_eq!(
        run(&mut env.batch_to_files(&ids, &[])).status.code(),
        Some(0)
    );
    let first = summary(&env.path("summary.json"));
    assert!(first["ids_per_s"].as_f64().unwrap() > 0.0, "{first}");
    let out = run(&mut env.batch_to_files(&ids, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rerun = summary(&env.path("summary.json"));
    assert_eq!(rerun["done_earlier"], 50, "{rerun}");
    assert_eq!(rerun["ids_per_s"], 0.0, "{rerun}");
    assert!(
        stderr(&out).contains("\n  0 ids/s; 0 requests"),
        "{}",
        stderr(&out)
    );
}

/// Another process's connection to `env`'s cache file, holding its write lock (as a
/// `sqlite3` shell left in a transaction would) until it rolls back or is dropped.
fn hold_the_write_lock(env: &Env) -> rusqlite::Connection {
    let holder = rusqlite::Connection::open(env.path("cache.sqlite3")).unwrap();
    holder
        .execute_batch("BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS held (x);")
        .unwrap();
    holder
}

/// A run of 4 ids, to make the cache file; then its lock held by another process, and the
/// same run again (`--fresh`, so that it has ids to store) started against it.
fn rerun_against_a_held_lock(env: &Env) -> (rusqlite::Connection, std::process::Child) {
    let ids = env.write("ids.txt", ids_file(1..=4));
    assert_eq!(
        run(&mut env.batch_to_files(&ids, &[])).status.code(),
        Some(0)
    );
    let holder = hold_the_write_lock(env);
    let child = env
        .batch_to_files(&ids, &["--fresh"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (holder, child)
}

/// A run that waits for another process's lock before its first id counts the wait in its
/// elapsed time, as a wait met mid-run is counted.
#[test]
fn a_wait_for_the_lock_at_the_start_counts_in_the_elapsed_time() {
    let env = Env::new();
    let (holder, mut child) = rerun_against_a_held_lock(&env);
    let (_, rest) = wait_for_line(&mut child, "is locked by another process");
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let status = child.wait().unwrap();
    let text = rest.join().unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    let s = summary(&env.path("summary.json"));
    // At least the 2 s waited before the wait was said.
    assert!(s["elapsed_s"].as_f64().unwrap() >= 2.0, "{s}");
}

/// A Ctrl-C while the run waits for another process's lock on the cache, before the wait
/// is even said, ends it at once: the wait ran in one busy timeout of 5 s, which the
/// cache's close then waited out.
#[test]
fn a_ctrl_c_ends_a_wait_for_the_lock_at_once() {
    let env = Env::new();
    let (holder, mut child) = rerun_against_a_held_lock(&env);
    // Once the run has the cache file open, the last of its preparing: then it asks for
    // the lock. (A signal while preparing also ends the run at once, lock or not.)
    let pid = child.id();
    let opened = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| target.ends_with("cache.sqlite3"))
            })
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !opened() {
        assert!(
            std::time::Instant::now() < until,
            "the run never opened the cache"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let asked = std::time::Instant::now();
    let pid = i32::try_from(pid).unwrap();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    let took = asked.elapsed();
    drop(holder);
    assert_eq!(status.code(), Some(130));
    // Against the 4.7 s left of a 5 s busy timeout; a quarter of a second to be seen.
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
}

/// The same when the lock is taken only after the Ctrl-C: the answers that come in while
/// the run drains each try one step for it, not the 5 s a lookup's store waits.
#[test]
fn a_lock_taken_after_a_ctrl_c_holds_the_run_up_no_more() {
    let (env, mut child) = start_slow_run();
    let pid = i32::try_from(child.id()).unwrap();
    let asked = std::time::Instant::now();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let holder = hold_the_write_lock(&env);
    let status = child.wait().unwrap();
    let took = asked.elapsed();
    drop(holder);
    assert_eq!(status.code(), Some(130));
    // The lookups' 1 s, then a quarter of a second for each store: against 5 s each.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

/// Asked to stop (Ctrl-C) while another process holds the cache's lock, the run ends
/// without waiting for the lock: it writes what it had stored, and leaves what it could not
/// store for the next run.
#[test]
fn a_run_stopped_while_the_cache_is_locked_ends_without_the_lock() {
    let (env, mut child) = start_slow_run();
    let holder = hold_the_write_lock(&env);
    let (seen, rest) = wait_for_line(&mut child, "is locked by another process");
    let pid = i32::try_from(child.id()).unwrap();
    let asked = std::time::Instant::now();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("the run waited for the lock after Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let took = asked.elapsed();
    let text = seen + &rest.join().unwrap();
    // Still held: the run did not wait for it.
    holder.execute_batch("ROLLBACK").unwrap();
    // Each store after the stop tried once (a quarter of a second), not for the 5 s a
    // lookup's store waits: the run ended about a second after Ctrl-C, not 10 s.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(
        text.contains("is locked by another process; try again once it is done"),
        "{text}"
    );
    // It could not note that --out is its own: said, since the next run will say otherwise.
    assert!(
        text.contains("the next run will take out.jsonl for another command's file"),
        "{text}"
    );
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["status"], "interrupted", "{s}");
    assert_eq!(s["found"], 0, "{s}");
    assert_eq!(s["unfinished"], 4, "{s}");
    // Written all the same, from what was stored before: nothing, here.
    assert_eq!(s["out"]["records"], 0, "{s}");
    assert_eq!(std::fs::read(env.path("out.jsonl")).unwrap(), b"");
    // The rerun fetches what could not be stored.
    let ids = env.path("ids.txt");
    let out = run(&mut env.batch_to_files(&ids, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(jsonl_ids(&env.path("out.jsonl")).len(), 4);
}

/// Another process holds the cache's write lock past the busy timeout (a `sqlite3` shell
/// left in a transaction): the run says the file is locked, waits for it rather than stop
/// (it may be hours in), and goes on once the lock is released.
#[test]
fn a_batch_waits_for_a_cache_locked_by_another_process() {
    let (env, mut child) = start_slow_run();
    let holder = hold_the_write_lock(&env);
    let (seen, rest) = wait_for_line(&mut child, "is locked by another process");
    assert!(seen.contains("waiting until it is free"), "{seen}");
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let status = child.wait().unwrap();
    let text = seen + &rest.join().unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("is free again after"), "{text}");
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(jsonl_ids(&env.path("out.jsonl")).len(), 4);
}

/// Outputs made under a umask that takes the owner's write bit are still writable by their
/// owner: the next run would otherwise refuse them as read-only files.
#[test]
fn outputs_made_under_a_umask_without_owner_write_are_rerun() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let input = env.write("ids.txt", "1\n2\n424242\n");
    for attempt in 1..=2 {
        let mut cmd = env.batch_to_files(&input, &[]);
        // SAFETY: umask is async-signal-safe, and nothing else runs in the forked child.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o222);
                Ok(())
            });
        }
        let out = run(&mut cmd);
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {attempt}: {}",
            stderr(&out)
        );
    }
    for name in ["out.jsonl", "failures.jsonl", "summary.json"] {
        let mode = std::fs::metadata(env.path(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o200, 0o200, "{name}: {mode:o}");
    }
}

/// A newline or a tab in a file name is shown replaced in every message, as in an error:
/// raw, it would forge a line of the output (`FAKE: all good`).
#[test]
fn a_newline_in_an_output_name_forges_no_line() {
    let env = Env::new();
    let input = env.write("ids.txt", "1\n2\n");
    let name = "ev\nFAKE: all good\t.jsonl";
    // Someone else's file there, so that the run warns about it by name.
    env.write(name, "junk\n");
    for dry in [false, true] {
        let mut cmd = env.batch(&[input.to_str().unwrap(), "--out", name]);
        if dry {
            cmd.arg("--dry-run");
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            text.contains("ev\u{fffd}FAKE: all good\u{fffd}.jsonl"),
            "{text}"
        );
        assert!(!text.contains("\nFAKE") && !text.contains('\t'), "{text}");
    }
    // Another input into the same output: the warning about the records earlier runs left.
    let other = env.write("other.txt", "3\n");
    let out = run(&mut env.batch(&[other.to_str().unwrap(), "--out", name]));
    let text = stderr(&out);
    assert!(text.contains("also holds 2 records"), "{text}");
    assert!(!text.contains("\nFAKE") && !text.contains('\t'), "{text}");
}

/// The summary says what the counts hide: a run where not one id was found (a wrong path in
/// the template answers 404 to every id, and exited 0 as if all was well), and records that
/// came from the embedded demo API because no --api was given (off a terminal the summary is
/// all stderr says, so a misspelt USERFETCH_API went unseen).
#[test]
fn the_summary_says_when_no_id_was_found_and_when_no_api_was_named() {
    let env = Env::new();
    let ids = env.write("ids.txt", ids_file(1..=3));
    let wrong_path = env.server.url_template().replace("/users/", "/user/");
    let out = env
        .with_api(&wrong_path, &[])
        .args(["batch", ids.to_str().unwrap(), "--out", "out.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("\n  not one id was found: is the path in the --api template the API's?"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("embedded demo API"),
        "{}",
        stderr(&out)
    );
    // The right path: no such line.
    let out = run(&mut env.batch(&[ids.to_str().unwrap(), "--out", "out.jsonl"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("not one id was found"),
        "{}",
        stderr(&out)
    );

    // A web page at the template's URL (a wrong path, a login page) answers 200 with HTML.
    let page = answering("200 OK", |_| "<html><body>Sign in</body></html>".to_owned());
    let out = env
        .with_api(&page, &["--http1"])
        .args(["batch", ids.to_str().unwrap(), "--out", "page.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\n  not one answer was a JSON record: is the --api template the API's, and not a web page's?"),
        "{}",
        stderr(&out)
    );

    let mut embedded = std::process::Command::new(env!("CARGO_BIN_EXE_userfetch"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("USERFETCH_") {
            embedded.env_remove(name);
        }
    }
    let out = embedded
        .current_dir(env.path(""))
        .args([
            "--cache",
            "own.sqlite3",
            "batch",
            "ids.txt",
            "--out",
            "own.jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).ends_with(
            "\n  the records come from the embedded demo API (made-up users): no --api given, and USERFETCH_API unset\n"
        ),
        "{}",
        stderr(&out)
    );
}

/// A tmpfs of `size` mounted on `dir` for as long as it lives; `None` where this process may
/// not mount one (not root, or no CAP_SYS_ADMIN in a container), said on stderr, unless
/// USERFETCH_TESTS_NEED_TMPFS is set (CI sets it where it can mount one): then the test fails.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var_os("USERFETCH_TESTS_NEED_TMPFS").is_none(),
                "cannot mount a tmpfs on {}, and USERFETCH_TESTS_NEED_TMPFS is set",
                dir.display()
            );
            eprintln!("skipped: cannot mount a tmpfs on {} here", dir.display());
        }
        mounted.then(|| SmallDisk(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// userfetch batch with its cache file at `cache`.
fn batch_with_cache(env: &Env, cache: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_userfetch"));
    cmd.current_dir(env.dir.path())
        .arg("--api")
        .arg(env.server.url_template())
        .arg("--cache")
        .arg(cache)
        .arg("batch")
        .args(args);
    cmd
}

/// The stderr of a run that stopped as a full cache disk stops one: exit 1, said so.
fn stopped_for_space(out: &std::process::Output) -> String {
    let said = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("no space left for the cache file"), "{said}");
    said
}

/// A cache file that cannot be made for want of space is said to be that, not a damaged
/// database to move aside; exit 1, as for a failure, not 2.
#[test]
fn a_full_disk_under_a_new_cache_is_said_so() {
    let env = Env::new();
    let Some(_disk) = SmallDisk::mount(&env.path("small"), "1m") else {
        return;
    };
    // Filled to the last byte.
    let mut filler = std::fs::File::create(env.path("small/filler")).unwrap();
    while std::io::Write::write_all(&mut filler, &[0; 4096]).is_ok() {}
    let _ = std::io::Write::write_all(&mut filler, &[0]);
    let input = env.write("ids.txt", ids_file(1..=10));
    let out = run(&mut batch_with_cache(
        &env,
        &env.path("small/new.sqlite3"),
        &[input.to_str().unwrap(), "--out", "out.jsonl"],
    ));
    let said = stopped_for_space(&out);
    assert!(!said.contains("not a usable SQLite database"), "{said}");
    assert!(!env.path("out.jsonl").exists());
}

/// 10,000 ids (every one a user of the demo API's) into `out` with the cache on a 3 MB disk,
/// which fills during the run. Returns the disk, what the run said and the same command
/// again, or `None` where no disk can be mounted.
fn run_out_of_cache_space<'a>(
    env: &'a Env,
    out: &str,
) -> Option<(SmallDisk, String, impl Fn() -> std::process::Command + 'a)> {
    let disk = SmallDisk::mount(&env.path("small"), "3m")?;
    let input = env.write("ids.txt", ids_file(1..=10_000));
    let out = out.to_owned();
    let command = move || {
        batch_with_cache(
            env,
            &env.path("small/cache.sqlite3"),
            &[input.to_str().unwrap(), "--out", &out],
        )
    };
    let said = stopped_for_space(&run(&mut command()));
    Some((disk, said, command))
}

/// A cache whose disk fills during a run stops it (exit 1), and the output elsewhere holds
/// what was done, each id once; with space again, the same command completes it.
#[test]
fn a_cache_disk_full_mid_run_still_writes_what_is_done() {
    let env = Env::new();
    let Some((disk, _, rerun)) = run_out_of_cache_space(&env, "out.jsonl") else {
        return;
    };
    let done = once_each(&jsonl_ids(&env.path("out.jsonl")), "out.jsonl");
    assert!(!done.is_empty() && done.len() < 10_000, "{}", done.len());

    disk.resize("200m");
    let out = run(&mut rerun());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = once_each(&jsonl_ids(&env.path("out.jsonl")), "out.jsonl");
    assert_eq!(all.len(), 10_000);
}

/// With --out on the cache's full disk too, both failures are said: the cache's ends the run,
/// and the output's is not lost behind it.
#[test]
fn an_output_on_the_full_cache_disk_is_said_too() {
    let env = Env::new();
    let Some((_disk, said, _)) = run_out_of_cache_space(&env, "small/out.jsonl") else {
        return;
    };
    assert!(said.contains("cannot write small/out.jsonl"), "{said}");
    assert!(!env.path("small/out.jsonl").exists());
    assert!(!env.path("small/out.jsonl").exists());
}
