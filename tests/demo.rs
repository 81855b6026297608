//! `userfetch demo` measures for real: the sync run freezes for the whole lookup, the async
//! run keeps drawing and overlaps its lookups on one thread. Bounds are generous on purpose.

use std::time::Duration;

use assert_cmd::prelude::*;
use clap::Parser;
use userfetch::cli::Cli;
use userfetch::demo::{self, busy_time};

/// The timing measurements, and the whole runs of the command, take turns, so none competes
/// with a measurement for the machine's cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn opts() -> userfetch::cli::GlobalOpts {
    Cli::parse_from(["userfetch"]).global
}

#[tokio::test]
async fn a_one_second_lookup_freezes_sync_but_not_async() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let report = demo::measure(&opts(), Duration::from_secs(1), 1)
        .await
        .unwrap();
    let [sync, asynchronous] = [&report.typing[0], &report.typing[1]].map(|r| r.measures());
    assert_eq!(report.typing[0].label, "sync");
    assert!(
        sync.longest_freeze >= Duration::from_millis(900),
        "{sync:?}"
    );
    assert!(
        asynchronous.longest_freeze <= Duration::from_millis(250),
        "{asynchronous:?}"
    );
    assert!(
        sync.ticks_missed > asynchronous.ticks_missed,
        "{sync:?} {asynchronous:?}"
    );
    assert!(
        sync.keys_late > asynchronous.keys_late,
        "{sync:?} {asynchronous:?}"
    );
}

#[tokio::test]
async fn many_lookups_add_up_in_sync_and_overlap_in_async_on_one_thread() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let report = demo::measure(&opts(), Duration::from_millis(400), 5)
        .await
        .unwrap();
    let (sync, asynchronous) = (&report.many[0], &report.many[1]);
    assert_eq!(sync.lookups.len(), 5);
    assert_eq!(asynchronous.lookups.len(), 5);
    assert!(
        busy_time(sync) >= Duration::from_millis(1800),
        "{:?}",
        busy_time(sync)
    );
    assert!(
        busy_time(asynchronous) <= Duration::from_millis(1000),
        "{:?}",
        busy_time(asynchronous)
    );
    assert_eq!(asynchronous.threads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_are_counted_with_the_main_thread_on_a_multi_threaded_runtime() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let report = demo::measure(&opts(), Duration::from_millis(300), 1)
        .await
        .unwrap();
    // Two workers, plus the thread whose block_on runs the interface; sync adds its helper.
    let threads: Vec<usize> = report.typing.iter().map(|r| r.threads).collect();
    assert_eq!(threads, [4, 3]);
}

#[test]
fn a_timeout_no_longer_than_the_latency_is_refused() {
    let out = std::process::Command::cargo_bin("userfetch")
        .unwrap()
        .args(["demo", "--latency", "600ms", "--lookups", "1"])
        .args(["--timeout", "200ms", "--retries", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The one line: refused before the run is announced.
    assert!(
        stderr.starts_with("userfetch: --timeout 200ms is not longer than --latency 600ms")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no table of misleading numbers");
    // A limit nobody typed is traced to the variable it came from; a typed one wins over it.
    let refusal = |typed: &[&str]| {
        let out = std::process::Command::cargo_bin("userfetch")
            .unwrap()
            .args([
                "demo",
                "--latency",
                "600ms",
                "--lookups",
                "1",
                "--retries",
                "0",
            ])
            .args(typed)
            .env("USERFETCH_TIMEOUT", "300ms")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refusal(&[]);
    assert!(
        stderr.starts_with(
            "userfetch: --timeout 300ms (the value comes from USERFETCH_TIMEOUT) is not longer"
        ),
        "{stderr}"
    );
    let stderr = refusal(&["--timeout", "200ms"]);
    assert!(
        stderr.starts_with("userfetch: --timeout 200ms is not longer"),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_picture_path_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    for (option, path) in [
        ("--svg", dir.path().join("missing").join("t.svg")),
        ("--html", dir.path().to_owned()),
    ] {
        let started = std::time::Instant::now();
        let out = std::process::Command::cargo_bin("userfetch")
            .unwrap()
            .args(["demo", "--latency", "5s", "--timeout", "10s", option])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(option), "{stderr}");
        // Not after a demo of two 5 s lookups.
        assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");
    }
    for option in ["--svg", "--html"] {
        let out = std::process::Command::cargo_bin("userfetch")
            .unwrap()
            .current_dir(dir.path())
            .args(["demo", "--latency", "5s", "--timeout", "10s"])
            .args([option, "-"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{option} must be a file")),
            "{stderr}"
        );
        assert!(!dir.path().join("-").exists());
    }
    // One file under two spellings too (it used to be "another userfetch batch is writing
    // --html": the second open found the first one's lock).
    let same = dir.path().join("t.svg");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let other_spelling = dir.path().join("sub").join("..").join("t.svg");
    for (svg, html) in [(&same, &same), (&same, &other_spelling)] {
        let out = std::process::Command::cargo_bin("userfetch")
            .unwrap()
            .args(["demo", "--svg"])
            .arg(svg)
            .arg("--html")
            .arg(html)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("same file"), "{stderr}");
    }
}

/// `userfetch demo` over 2 lookups of 300 ms, its report as JSON, with both pictures.
fn short_run_with_pictures(svg: &std::path::Path, html: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::cargo_bin("userfetch").unwrap();
    command
        .args([
            "demo",
            "--latency",
            "300ms",
            "--lookups",
            "2",
            "--json",
            "--svg",
        ])
        .arg(svg)
        .arg("--html")
        .arg(html);
    command
}

#[test]
fn the_command_writes_svg_html_and_json() {
    // A whole run, which would compete with the timing measurements.
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let (svg, html) = (dir.path().join("t.svg"), dir.path().join("t.html"));
    let out = short_run_with_pictures(&svg, &html)
        // The demo API runs in the process: reached directly, whatever proxy is set.
        .env("http_proxy", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["report"]["lookups"], 2);
    assert_eq!(json["measures"].as_array().unwrap().len(), 4);
    let svg = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let tracks = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("track"))
        .count();
    // frames, keys, ticker + 1 lookup (typing), frames, keys, ticker + 2 lookups, each twice.
    assert_eq!(tracks, 2 * 4 + 2 * 5);
    let html = std::fs::read_to_string(&html).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>") && !html.contains("src=") && !html.contains("href=")
    );
    // The back-to-back lookups' totals, as the text report gives them below its table.
    assert!(
        html.contains("2 lookups of 300ms each, first submit to last answer:"),
        "{html}"
    );
}

/// Off a terminal the report is 100 columns wide, or as wide as COLUMNS says.
#[test]
fn a_report_off_a_terminal_is_as_wide_as_columns_says() {
    let _turn = ONE_AT_A_TIME.blocking_lock();
    for (columns, width) in [(None, 100), (Some("60"), 60)] {
        let mut command = std::process::Command::cargo_bin("userfetch").unwrap();
        command.args(["demo", "--latency", "100ms", "--lookups", "2"]);
        match columns {
            Some(c) => command.env("COLUMNS", c),
            None => command.env_remove("COLUMNS"),
        };
        let out = command.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{stdout}");
        let widest = stdout.lines().map(|l| l.chars().count()).max().unwrap();
        // The timeline's rows fill the width, less a column.
        assert!(
            (width - 2..=width).contains(&widest),
            "{columns:?}:\n{stdout}"
        );
    }
}

/// A picture that cannot be put in place at the end (its directory removed during the run)
/// leaves the report and the other picture as they would be, and the run fails with why.
#[test]
fn a_failed_picture_loses_neither_the_report_nor_the_other_picture() {
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let html = dir.path().join("t.html");
    let child = short_run_with_pictures(&gone.join("t.svg"), &html)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the run has made its temporary picture there, the directory goes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&gone).unwrap().next().is_none() {
        assert!(std::time::Instant::now() < deadline, "no picture begun");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_dir_all(&gone).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("t.svg"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["report"]["lookups"], 2);
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
}

/// Ctrl-C (or SIGTERM) ends the demo at once with 130, in the sync run's freeze as in the
/// async run, and leaves no half-written picture behind.
#[test]
fn a_signal_ends_the_demo_at_once() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // (signal, how long into the run): the sync lookup (2 s) is pending from 0.4 s on; at
    // 9 s the second scenario's sync run waits out its ten lookups one after another (from
    // ~5 s on), where a signal ended only the lookup it came in and the rest were waited out.
    for (signal, after) in [("-INT", 1000), ("-TERM", 3500), ("-INT", 9000)] {
        let mut child = std::process::Command::cargo_bin("userfetch")
            .unwrap()
            .current_dir(dir.path())
            .args(["demo", "--latency", "2s", "--svg", "t.svg"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.contains("running the session"), "{line}");
        assert!(line.trim_end().chars().count() <= 80, "{line}");
        std::thread::sleep(Duration::from_millis(after));
        let sent = std::time::Instant::now();
        std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        let waited = sent.elapsed();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        assert_eq!(status.code(), Some(130), "{signal}: {rest}");
        assert!(rest.contains("demo interrupted"), "{signal}: {rest}");
        // Well under the ~20 s left of the run (generous for a loaded machine).
        assert!(waited < Duration::from_secs(5), "{signal}: took {waited:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{signal}: left {left:?}");
    }
}

#[test]
fn a_long_sync_run_is_said_ahead() {
    use std::io::BufRead;
    // Its full run below would compete with the timing measurements.
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let mut child = std::process::Command::cargo_bin("userfetch")
        .unwrap()
        .args([
            "demo",
            "--latency",
            "10s",
            "--lookups",
            "4",
            "--timeout",
            "20s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // Both are said before the run starts, one after the other.
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        first.starts_with("userfetch: running the session"),
        "{first}"
    );
    assert_eq!(
        second,
        "userfetch: the demo takes about 1m 13s: the sync run waits 40s for its 4 lookups, one \
         after another"
    );
    // A short one says nothing of the kind.
    let out = std::process::Command::cargo_bin("userfetch")
        .unwrap()
        .args(["demo", "--latency", "100ms", "--lookups", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("takes about"), "{stderr}");
}
