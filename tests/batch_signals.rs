//! Ctrl-C, SIGTERM and SIGHUP: the first drains and writes what is done, a second cancels what is in
//! flight; both exit 130 with a summary, and the same command then finishes the job.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn send(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill failed");
}

/// Starts a batch whose stderr the test reads (stdout is not looked at).
trait SpawnWatched {
    fn spawn_watched(&mut self) -> Child;
}

impl SpawnWatched for std::process::Command {
    fn spawn_watched(&mut self) -> Child {
        self.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn userfetch")
    }
}

/// SIGHUP back to its default in the child, should the tests run under `nohup` (which
/// would leave it ignored, and userfetch rightly unwatching it).
fn hangup_not_ignored(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec, signal(2) only sets this process's disposition; it is
    // async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// Waits until the batch has sent requests, which it does only after its signal handlers are
/// in place (before that, SIGINT would simply end the process).
fn wait_for_requests(env: &Env, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.user_requests() == 0 {
        assert!(child.try_wait().unwrap().is_none(), "the batch ended early");
        assert!(Instant::now() < deadline, "no request reached the API");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_with_deadline(child: Child, limit: Duration) -> std::process::Output {
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    out
}

/// Every id read is settled one way or another, or unfinished.
fn assert_adds_up(s: &serde_json::Value) {
    let n = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(
        n("ids"),
        n("found")
            + n("not_found")
            + n("failed")
            + n("cached")
            + n("done_earlier")
            + n("unfinished"),
        "{s:#}"
    );
}

fn interrupt_then_rerun(signal: i32) {
    let env = Env::with_latency(Duration::from_millis(300));
    let ids: Vec<u32> = (1..=200).collect();
    let input = env.write("ids.txt", ids_file(&ids));
    let args = [
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--summary-json",
        "summary.json",
        "--concurrency",
        "20",
    ];
    let mut batch = env.batch(&args);
    if signal == libc::SIGHUP {
        hangup_not_ignored(&mut batch);
    }
    let mut child = batch.spawn_watched();
    wait_for_requests(&env, &mut child);
    std::thread::sleep(Duration::from_millis(400));
    send(&child, signal);
    let out = wait_with_deadline(child, Duration::from_secs(20));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("batch interrupted"), "{text}");
    assert!(text.contains("run the same command again"), "{text}");

    // What was done is in the output, once each, and the summary says so.
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["status"], "interrupted");
    let first = once_each(&jsonl_ids(&env.path("out.jsonl")), "out.jsonl");
    assert_eq!(first.len() as u64, s["found"].as_u64().unwrap());
    // The lookups in flight at the signal finished rather than being dropped: every request
    // the API saw has its record (every id exists and nothing is retried here).
    assert_eq!(env.user_requests(), first.len() as u64, "{text}");
    assert_eq!(s["requests"].as_u64().unwrap(), first.len() as u64);
    assert!(text.contains("stopping: letting"), "{text}");
    // The way to cancel is the way the run was stopped: a SIGTERM from a service manager
    // has nobody at a keyboard.
    let again = match signal {
        libc::SIGINT => "; Ctrl-C again to cancel",
        libc::SIGTERM => "; SIGTERM or Ctrl-C again to cancel",
        _ => "; SIGHUP or Ctrl-C again to cancel",
    };
    assert!(text.contains(again), "{text}");
    assert!(
        first.len() < ids.len(),
        "the interrupt came too late to test anything"
    );
    // Every line of the file is accounted for: read (settled or unfinished), or not read yet.
    let n = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(n("ids") + n("duplicates") + n("not_read"), 200, "{s:#}");
    assert!(n("unfinished") + n("not_read") > 0, "{s:#}");
    if n("not_read") > 0 {
        assert!(
            text.contains(&format!("{} lines of ids not read yet", n("not_read"))),
            "{text}"
        );
    }
    assert_adds_up(&s);

    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all: Vec<String> = ids.iter().map(|n| n.to_string()).collect();
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), all);
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["done_earlier"].as_u64().unwrap(), first.len() as u64);
    assert_eq!(
        s["found"].as_u64().unwrap(),
        (ids.len() - first.len()) as u64
    );
}

#[test]
fn first_ctrl_c_drains_writes_and_exits_130_and_a_rerun_completes() {
    interrupt_then_rerun(libc::SIGINT);
}

#[test]
fn sigterm_drains_like_ctrl_c() {
    interrupt_then_rerun(libc::SIGTERM);
}

#[test]
fn sighup_drains_like_ctrl_c() {
    interrupt_then_rerun(libc::SIGHUP);
}

#[test]
fn under_nohup_a_hangup_does_not_stop_the_run() {
    use std::os::unix::process::CommandExt;
    let env = Env::with_latency(Duration::from_millis(300));
    let input = env.write("ids.txt", ids_file(1..=60));
    let mut batch = env.batch(&[
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--concurrency",
        "20",
    ]);
    // SAFETY: between fork and exec, signal(2) only sets this process's disposition; it is
    // async-signal-safe and allocates nothing. This is what `nohup` does before its exec.
    unsafe {
        batch.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = batch.spawn_watched();
    wait_for_requests(&env, &mut child);
    send(&child, libc::SIGHUP);
    let out = wait_with_deadline(child, Duration::from_secs(30));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("stopping"), "{text}");
    let all: Vec<String> = (1..=60).map(|n: u32| n.to_string()).collect();
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), all);
}

#[test]
fn second_ctrl_c_cancels_lookups_in_flight() {
    // Answers that would take a minute: only cancelling can end the run quickly.
    let env = Env::with_latency(Duration::from_secs(60));
    let input = env.write("ids.txt", ids_file(1..=50));
    let mut child = env
        .batch(&[
            input.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--grace",
            "5m",
            "--concurrency",
            "10",
            "--summary-json",
            "summary.json",
        ])
        .spawn_watched();
    wait_for_requests(&env, &mut child);
    send(&child, libc::SIGINT);
    // The second Ctrl-C only means "cancel" once the first was taken in.
    let (mut text, rest) = wait_for_line(&mut child, "stopping");
    send(&child, libc::SIGINT);
    let out = wait_with_deadline(child, Duration::from_secs(20));
    text.push_str(&rest.join().expect("stderr reader"));
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("cancelling"), "{text}");
    assert!(
        text.contains("50 unfinished") || text.contains("unfinished"),
        "{text}"
    );
    // The cancelled ids were read and claimed: they count as ids, unfinished.
    let s = summary(&env.path("summary.json"));
    assert!(s["unfinished"].as_u64().unwrap() >= 10, "{s:#}");
    assert_adds_up(&s);
    // Nothing was found, and the output says so rather than being absent or partial.
    assert_eq!(std::fs::read_to_string(env.path("out.jsonl")).unwrap(), "");
}

#[test]
fn with_no_grace_the_first_ctrl_c_cancels_and_says_so() {
    let env = Env::with_latency(Duration::from_secs(60));
    let input = env.write("ids.txt", ids_file(1..=30));
    let mut child = env
        .batch(&[
            input.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--grace",
            "0s",
            "--concurrency",
            "10",
        ])
        .spawn_watched();
    wait_for_requests(&env, &mut child);
    send(&child, libc::SIGINT);
    let out = wait_with_deadline(child, Duration::from_secs(20));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(
        text.contains("stopping: --grace is 0s: cancelling"),
        "{text}"
    );
    assert!(!text.contains("up to 0s"), "{text}");
    assert_eq!(std::fs::read_to_string(env.path("out.jsonl")).unwrap(), "");
}

/// A finished job whose rerun spends its time rewriting the CSV from the store: the window in
/// which these tests send their signals. Returns the env, the rerun's arguments (global
/// options first) and the CSV the first run wrote.
fn job_with_a_long_write() -> (Env, Vec<String>, String) {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=10_000));
    let batch = [
        "batch",
        input.to_str().unwrap(),
        "--out",
        "out.csv",
        "--format",
        "csv",
        "--summary-json",
        "summary.json",
    ];
    let mut args: Vec<String> = batch.iter().map(|s| s.to_string()).collect();
    let out = run(env.with_api(&env.server.url_template(), &[]).args(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let csv = std::fs::read_to_string(env.path("out.csv")).unwrap();
    // -vv says when the write begins.
    args.insert(0, "-vv".to_owned());
    (env, args, csv)
}

fn start(env: &Env, args: &[String]) -> Child {
    env.with_api(&env.server.url_template(), &[])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn ctrl_c_while_the_output_is_written_finishes_it_and_exits_130() {
    let (env, args, csv) = job_with_a_long_write();
    let mut child = start(&env, &args);
    let (_, rest) = wait_for_line(&mut child, "writing the outputs");
    send(&child, libc::SIGINT);
    let out = wait_with_deadline(child, Duration::from_secs(30));
    let text = rest.join().unwrap();
    assert!(text.contains("Ctrl-C again to quit at once"), "{text}");
    assert_eq!(out.status.code(), Some(130), "{text}");
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["status"], "interrupted", "{s:#}");
    // Nothing was left to fetch, so the output is whole.
    assert_eq!(std::fs::read_to_string(env.path("out.csv")).unwrap(), csv);
}

#[test]
fn a_second_ctrl_c_while_the_output_is_written_quits_at_once() {
    use std::os::unix::fs::MetadataExt;
    let (env, args, csv) = job_with_a_long_write();
    let inode = || std::fs::metadata(env.path("out.csv")).unwrap().ino();
    let before = inode();
    let mut child = start(&env, &args);
    let (_, rest) = wait_for_line(&mut child, "writing the outputs");
    send(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(20));
    send(&child, libc::SIGINT);
    let out = wait_with_deadline(child, Duration::from_secs(30));
    let text = rest.join().unwrap();
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("quitting at once"), "{text}");
    // The earlier output stays as it was: the new one (which would have the same text) was
    // never renamed into place.
    assert_eq!(inode(), before, "the output was replaced");
    let left: Vec<String> = env
        .files()
        .into_iter()
        .filter(|f| f.contains("partial"))
        .collect();
    assert!(left.is_empty(), "half-written files left: {left:?}");
    assert_eq!(std::fs::read_to_string(env.path("out.csv")).unwrap(), csv);
}

#[test]
fn an_interrupted_fresh_run_is_finished_without_fresh_and_takes_nothing_older() {
    let env = Env::with_latency(Duration::from_millis(300));
    let ids: Vec<u32> = (1..=60).collect();
    let input = env.write("ids.txt", ids_file(&ids));
    let args = [
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--summary-json",
        "summary.json",
    ];
    // Every id fetched and cached once.
    let out = run(env.batch(&args).args(["--concurrency", "60"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = env.user_requests();
    assert_eq!(before, 60);

    // Starting over, interrupted part way.
    let mut child = env
        .batch(&args)
        .args(["--fresh", "--concurrency", "10"])
        .spawn_watched();
    wait_for_requests(&env, &mut child);
    while env.user_requests() == before {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(400));
    send(&child, libc::SIGINT);
    let out = wait_with_deadline(child, Duration::from_secs(20));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(
        text.contains("run the same command again without --fresh to finish"),
        "{text}"
    );
    let refetched = summary(&env.path("summary.json"))["found"]
        .as_u64()
        .unwrap();
    assert!(
        refetched < 60,
        "the interrupt came too late to test anything"
    );

    // Finished without --fresh: what the start-over had not reached is fetched again, not
    // taken from the records cached before it.
    let dry = run(&mut env.batch(&[&args[..3], &["--dry-run"]].concat()));
    assert!(
        stderr(&dry).is_empty() && String::from_utf8_lossy(&dry.stdout).contains(&format!(
            "dry run: {} of 60 ids in {} would be fetched ({refetched} done in an earlier run, 0 fresh in the cache",
            60 - refetched,
            input.display()
        )),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    let requests = env.user_requests();
    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["cached"], 0, "{s:#}");
    assert_eq!(s["done_earlier"].as_u64().unwrap(), refetched, "{s:#}");
    assert_eq!(s["found"].as_u64().unwrap(), 60 - refetched, "{s:#}");
    assert_eq!(env.user_requests() - requests, 60 - refetched);
    let all: Vec<String> = ids.iter().map(|n| n.to_string()).collect();
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), all);
}

#[test]
fn ctrl_c_leaves_lookups_that_sent_no_request_yet_at_once() {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=20));
    let args = [
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--summary-json",
        "summary.json",
    ];
    // One request a minute: the first goes at once, every other lookup waits for its turn.
    let mut child = env
        .batch(&args)
        .args(["--rate", "1/min", "--grace", "60s"])
        .spawn_watched();
    wait_for_requests(&env, &mut child);
    std::thread::sleep(Duration::from_millis(300));
    send(&child, libc::SIGINT);
    // Not the 60 s grace period: nothing was on the wire.
    let out = wait_with_deadline(child, Duration::from_secs(20));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(
        text.contains("stopping: no request is on the wire; 19 lookups waiting"),
        "{text}"
    );
    let s = summary(&env.path("summary.json"));
    assert_eq!(
        (s["found"].as_u64(), s["requests"].as_u64()),
        (Some(1), Some(1)),
        "{s:#}"
    );
    assert_adds_up(&s);
    let n = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(n("found") + n("unfinished") + n("not_read"), 20, "{s:#}");

    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&env.path("summary.json"));
    assert_eq!(
        (s["found"].as_u64(), s["done_earlier"].as_u64()),
        (Some(19), Some(1))
    );
    let all: Vec<String> = (1..=20).map(|n: u32| n.to_string()).collect();
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), all);
}

/// Starts `args` against an API that answers every request with a 500 after 20 ms, with
/// retries that never run out and never wait.
fn retrying_forever(env: &Env, args: &[&str]) -> Child {
    let api = format!("{}?fault=500&latency=20ms", env.server.url_template());
    env.with_api(
        &api,
        &[
            "--retries",
            "1000",
            "--retry-max-time",
            "10m",
            "--max-retry-wait",
            "0s",
        ],
    )
    .args(args)
    .spawn_watched()
}

#[test]
fn after_ctrl_c_no_retry_starts_even_one_with_no_wait() {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=50));
    // Retries do not wait: each may start the moment the answer is in, with no wait in which
    // the stop could be noticed.
    let mut child = retrying_forever(
        &env,
        &[
            "batch",
            input.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--concurrency",
            "5",
            "--grace",
            "60s",
        ],
    );
    wait_for_requests(&env, &mut child);
    std::thread::sleep(Duration::from_millis(300));
    send(&child, libc::SIGINT);
    let at_signal = env.user_requests();
    // Not the 60 s grace period of retries.
    let out = wait_with_deadline(child, Duration::from_secs(20));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    // At most the requests on the wire at the signal were answered; none was started after.
    assert!(
        env.user_requests() <= at_signal + 5,
        "{} requests after the signal:\n{text}",
        env.user_requests() - at_signal
    );
}

#[test]
fn ctrl_c_before_fetching_exits_130_and_leaves_no_partial_file() {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=20));
    let args = [
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--summary-json",
        "summary.json",
    ];
    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary(&env.path("summary.json"))["status"], "complete");
    let requests = env.user_requests();
    // Another process holds the cache file: the next run waits to open it, after it has
    // created its output's temporary file.
    let holder = rusqlite::Connection::open(env.path("cache.sqlite3")).unwrap();
    holder
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; CREATE TABLE held (x);")
        .unwrap();
    let child = env.batch(&args).arg("--fresh").spawn_watched();
    let partial = env.path(".out.jsonl.userfetch-partial");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !partial.exists() {
        assert!(
            Instant::now() < deadline,
            "the run never got as far as its output"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    send(&child, libc::SIGINT);
    let out = wait_with_deadline(child, Duration::from_secs(20));
    drop(holder);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("before any id was fetched"), "{text}");
    assert!(!partial.exists(), "the temporary file was left");
    assert_eq!(env.user_requests(), requests, "{text}");
    // The earlier run's summary is replaced by this one's, not left to be read as current.
    let s = summary(&env.path("summary.json"));
    assert_eq!(
        (s["status"].as_str(), s["ids"].as_u64()),
        (Some("interrupted"), Some(0))
    );
    assert!(schema("batch-summary.schema.json").is_valid(&s), "{s}");
}

/// Ctrl-C while a long input is still being checked (before any id is claimed) ends the
/// process then, not once the check has read the whole file.
#[test]
fn ctrl_c_during_the_input_check_ends_the_run_at_once() {
    let env = Env::new();
    // Millions of lines: checking them takes seconds, far more in a debug build.
    let input = env.write("ids.txt", "1\n".repeat(16_000_000));
    let mut child = env
        .batch(&[input.to_str().unwrap(), "--out", "out.jsonl"])
        .args(["--summary-json", "summary.json", "-vv"])
        .spawn_watched();
    let (text, rest) = wait_for_line(&mut child, "checking every line of");
    let sent = Instant::now();
    send(&child, libc::SIGINT);
    let out = child.wait_with_output().expect("wait");
    let waited = sent.elapsed();
    let text = text + &rest.join().expect("stderr reader");
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("before any id was fetched"), "{text}");
    assert!(
        waited < Duration::from_secs(4),
        "took {waited:?} after Ctrl-C"
    );
    assert_eq!(env.user_requests(), 0);
    assert_eq!(summary(&env.path("summary.json"))["status"], "interrupted");
}

/// An `--out` another job wrote (here the same ids from the API without a query) is replaced
/// only by a run that finishes: interrupted runs leave it as it was, the rerun's too (the
/// job then exists, but has not written it yet), and the run that finishes writes its own.
/// After that the file is the job's: an interrupted run writes what it has.
#[test]
fn an_interrupted_run_leaves_an_out_another_job_wrote_as_it_was() {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=40));
    let args = [input.to_str().unwrap(), "--out", "out.jsonl"];
    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = std::fs::read(env.path("out.jsonl")).unwrap();

    // Another job: the same API with a query, slow enough to be interrupted.
    let slow = format!("{}?latency=1s", env.server.url_template());
    let interrupted = |args: &[&str]| {
        let requests = env.user_requests();
        let mut child = env
            .with_api(&slow, &[])
            .arg("batch")
            .args(args)
            .args(["--concurrency", "4"])
            .spawn_watched();
        let deadline = Instant::now() + Duration::from_secs(30);
        while env.user_requests() == requests {
            assert!(child.try_wait().unwrap().is_none(), "the batch ended early");
            assert!(Instant::now() < deadline, "no request reached the API");
            std::thread::sleep(Duration::from_millis(20));
        }
        send(&child, libc::SIGINT);
        let out = wait_with_deadline(child, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        stderr(&out)
    };
    for round in 1..=2 {
        let text = interrupted(&args);
        assert!(
            text.contains("replaces it with its own records once it finishes"),
            "round {round}: {text}"
        );
        assert!(
            text.contains("out.jsonl left as it was"),
            "round {round}: {text}"
        );
        assert!(
            std::fs::read(env.path("out.jsonl")).unwrap() == before,
            "round {round}: out.jsonl changed"
        );
    }

    let out = run(env
        .with_api(&slow, &[])
        .arg("batch")
        .args(args)
        .args(["--concurrency", "40"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("left as it was"), "{}", stderr(&out));
    assert_eq!(jsonl_ids(&env.path("out.jsonl")).len(), 40);

    // The job's own file now: no warning, and an interrupted run over more ids writes out
    // what it has, the 40 it had included.
    let more = env.write("more.txt", ids_file(1..=80));
    let text = interrupted(&[more.to_str().unwrap(), "--out", "out.jsonl"]);
    assert!(!text.contains("replaces it"), "{text}");
    assert!(!text.contains("left as it was"), "{text}");
    assert!(jsonl_ids(&env.path("out.jsonl")).len() >= 40);
}

/// Stopped mid-run (Ctrl-Z in a shell, `kill -STOP`) for longer than `--timeout`, then
/// resumed: the lookups in flight are not timed out by the stop (their answers came
/// meanwhile), so no retry is spent and none fails.
#[test]
fn a_stop_does_not_time_out_the_lookups_in_flight() {
    let env = Env::with_latency(Duration::from_secs(2));
    let ids: Vec<u32> = (1..=20).collect();
    let input = env.write("ids.txt", ids_file(&ids));
    let mut child = env
        .batch(&[
            input.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--summary-json",
            "summary.json",
            "--retries",
            "0",
            "--timeout",
            "4s",
        ])
        .spawn_watched();
    wait_for_requests(&env, &mut child);
    send(&child, libc::SIGSTOP);
    // Past the timeout; the API answers meanwhile.
    std::thread::sleep(Duration::from_secs(6));
    send(&child, libc::SIGCONT);
    let out = wait_with_deadline(child, Duration::from_secs(30));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["found"], 20, "{s:#}");
    assert_eq!(s["failed"], 0, "{s:#}");
    assert_eq!(env.user_requests(), 20);
    // Latency leaves the stop out too, so it never reads longer than --timeout allows.
    let p99 = s["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 < 4000.0, "{s:#}");
}

#[test]
fn retries_of_a_lookup_cut_off_by_a_stop_are_counted() {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=1));
    let child = retrying_forever(
        &env,
        &[
            "batch",
            input.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--summary-json",
            "summary.json",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.user_requests() < 5 {
        assert!(
            Instant::now() < deadline,
            "fewer than 5 requests reached the API"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    send(&child, libc::SIGINT);
    let out = wait_with_deadline(child, Duration::from_secs(20));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    let s = summary(&env.path("summary.json"));
    let requests = s["requests"].as_u64().unwrap();
    assert_eq!(requests, env.user_requests(), "{s:#}");
    // One id, so every request but its first was a retry.
    assert_eq!(s["retries"].as_u64().unwrap(), requests - 1, "{s:#}");
    assert_eq!(s["unfinished"].as_u64().unwrap(), 1, "{s:#}");
}
