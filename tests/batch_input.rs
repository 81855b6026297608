//! Bad usage and bad input: one clear line, exit 2, and no output file (whole or partial).
//! Good input in its various shapes: comments, CRLF, stdin, invalid lines skipped.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use support::*;

/// Runs the batch with `args`, expects exit 2 with exactly one `userfetch: …` line that
/// contains `says`, and checks that no output file, whole or temporary, was left.
fn refused(env: &Env, args: &[&str], says: &str) {
    let out = run(&mut env.batch(args));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got:\n{text}");
    assert!(lines[0].starts_with("userfetch: "), "{text}");
    assert!(lines[0].contains(says), "{args:?}: {text}");
    let leftovers: Vec<String> = env
        .files()
        .into_iter()
        .filter(|f| {
            ["out", "failures", "summary", "partial"]
                .iter()
                .any(|name| f.contains(name))
        })
        .collect();
    assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
    assert_eq!(env.user_requests(), 0, "{args:?} fetched something");
}

#[test]
fn bad_usage_and_input_is_one_line_and_exit_2_with_nothing_written() {
    let env = Env::new();
    let good = env.write("ids.txt", "1\n2\n");
    let good = good.to_str().unwrap();
    refused(
        &env,
        &["missing.txt", "--out", "out.jsonl"],
        "cannot open the ids file missing.txt",
    );
    std::fs::create_dir(env.path("adir")).unwrap();
    refused(&env, &["adir", "--out", "out.jsonl"], "adir is a directory");
    env.write("utf8.txt", b"1\n2\n\xff\xfe\xfd\n4\n");
    refused(
        &env,
        &["utf8.txt", "--out", "out.jsonl"],
        "utf8.txt:3: the line is not valid UTF-8",
    );
    let mut long = b"1\n".to_vec();
    long.extend(std::iter::repeat_n(b'7', 1024 * 1024 + 1));
    long.extend(b"\n3\n");
    env.write("long.txt", long);
    refused(
        &env,
        &["long.txt", "--out", "out.jsonl"],
        "long.txt:2: the line is longer than 1 MiB",
    );
    env.write("empty.txt", "");
    refused(
        &env,
        &["empty.txt", "--out", "out.jsonl"],
        "empty.txt holds no ids",
    );
    env.write("comments.txt", "# only\n\n   \n");
    refused(
        &env,
        &["comments.txt", "--out", "out.jsonl"],
        "comments.txt holds no ids",
    );
    // Old Mac line ends: one line, and the one error says why it is no id.
    env.write("cr.txt", "1\r2\r3\r");
    refused(
        &env,
        &["cr.txt", "--out", "out.jsonl"],
        "cr.txt holds no ids, only invalid lines, blank lines or comments; line 1: ",
    );
    refused(
        &env,
        &[good, "--out", "no/such/dir/out.jsonl"],
        "cannot write --out no/such/dir/out.jsonl",
    );
    refused(&env, &[good, "--out", "adir"], "--out adir is a directory");
    refused(
        &env,
        &[
            good,
            "--out",
            "out.jsonl",
            "--summary-json",
            "no/dir/s.json",
        ],
        "cannot write --summary-json no/dir/s.json",
    );
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--concurrency", "0"],
        "--concurrency '0' must be",
    );
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--concurrency", "many"],
        "--concurrency 'many' must be",
    );
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--rate", "abc"],
        "--rate 'abc' is not a rate",
    );
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--rate", "0/s"],
        "--rate '0/s' must be more than zero",
    );
    // Values that used to overflow a Duration or an Instant and panic; a grace beyond a day.
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--rate", "1e-20"],
        "--rate '1e-20' is less than one request a day",
    );
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--grace", "2days"],
        "--grace 2days is longer than 1day",
    );
    refused(&env, &[good, "--out", good], "is the input file");
    // No output may replace the ids being read or the store of the run's progress.
    for option in ["--failures", "--summary-json"] {
        refused(
            &env,
            &[good, "--out", "out.jsonl", option, good],
            &format!("{option} {good} is the input file"),
        );
    }
    for cache in ["cache.sqlite3", "./cache.sqlite3-wal"] {
        refused(
            &env,
            &[good, "--out", cache],
            &format!("--out {cache} is the cache file"),
        );
    }
    refused(
        &env,
        &[good, "--out", "newdir/"],
        "--out newdir/ ends in '/', which names a directory, not a file",
    );
    // Outputs are written through links, so links are followed when comparing, dangling
    // ones too: this one would replace the cache's log once it exists.
    std::os::unix::fs::symlink("cache.sqlite3-wal", env.path("w")).unwrap();
    refused(&env, &[good, "--out", "w"], "--out w is the cache file");
    std::fs::hard_link(good, env.path("hard.txt")).unwrap();
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--failures", "hard.txt"],
        "--failures hard.txt is the input file",
    );
    std::os::unix::fs::symlink("newdir/", env.path("d")).unwrap();
    refused(&env, &[good, "--out", "d"], "--out d links to a directory");
    // The test's stdout is a pipe.
    refused(
        &env,
        &[good, "--out", "/dev/stdout"],
        "--out /dev/stdout is not a regular file",
    );
    refused(
        &env,
        &[good, "--out", "/dev/null"],
        "--out /dev/null is not a regular file",
    );
    refused(&env, &[good, "--out", "-"], "--out must be a file");
    for option in ["--failures", "--summary-json"] {
        refused(
            &env,
            &[good, "--out", "out.jsonl", option, "-"],
            &format!("{option} must be a file"),
        );
    }
    refused(
        &env,
        &[
            good,
            "--out",
            "out.jsonl",
            "--dry-run",
            "--summary-json",
            "s.json",
        ],
        "--dry-run makes none",
    );
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--rate", "inf"],
        "is not a rate like",
    );
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--failures", "out.jsonl"],
        "each output needs its own file",
    );
    // Compared resolved, the way the job key resolves --out: other spellings of one file.
    std::fs::create_dir(env.path("sub")).unwrap();
    refused(
        &env,
        &[good, "--out", "out.jsonl", "--summary-json", "./out.jsonl"],
        "--out out.jsonl and --summary-json ./out.jsonl are the same file",
    );
    refused(
        &env,
        &[
            good,
            "--out",
            "out.jsonl",
            "--failures",
            "sub/../failures.jsonl",
            "--summary-json",
            "failures.jsonl",
        ],
        "--failures sub/../failures.jsonl and --summary-json failures.jsonl are the same file",
    );
    refused(
        &env,
        &[
            good,
            "--out",
            "sub/out.jsonl",
            "--failures",
            "sub/./out.jsonl",
        ],
        "each output needs its own file",
    );
    env.write("strict.txt", "1\n2\n..\n4\n");
    refused(
        &env,
        &["strict.txt", "--out", "out.jsonl", "--strict"],
        "strict.txt:3: invalid id \"..\"",
    );
    let out = run(env.batch(&[good, "--out", "out.jsonl"]).arg("--no-cache"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_linked_output_is_written_through_the_link_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let ids = env.write("ids.txt", "1\n2\n");
    std::fs::create_dir(env.path("data")).unwrap();
    let real = env.write("data/real.jsonl", "");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("data/real.jsonl", env.path("out.jsonl")).unwrap();
    let out = run(&mut env.batch(&[ids.to_str().unwrap(), "--out", "out.jsonl"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let link = std::fs::symlink_metadata(env.path("out.jsonl")).unwrap();
    assert!(link.file_type().is_symlink(), "the link is kept");
    assert_eq!(std::fs::read_to_string(&real).unwrap().lines().count(), 2);
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a private output stays private");
}

#[test]
fn an_unwritable_directory_is_refused_before_any_fetch() {
    let env = Env::new();
    let good = env.write("ids.txt", "1\n");
    let locked = env.path("locked");
    std::fs::create_dir(&locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    // Root ignores directory permissions; the check only means something for other users.
    if std::fs::write(locked.join("probe"), "x").is_ok() {
        return;
    }
    refused(
        &env,
        &[good.to_str().unwrap(), "--out", "locked/out.jsonl"],
        "cannot write --out locked/out.jsonl",
    );
}

/// `cat a.txt b.txt` where b.txt starts with a byte-order mark: the mark used to be taken as
/// part of the id, fetched, and reported "not found" under what looks like user 6's id. At
/// the start of a line it is dropped, as at the start of the file; inside an id it is refused.
#[test]
fn a_byte_order_mark_where_files_were_joined_is_dropped() {
    let env = Env::new();
    let input = env.write(
        "ids.txt",
        "\u{feff}1\n2\n\u{feff}# b.txt\n\u{feff}6\n6\u{feff}7\n",
    );
    let out = run(&mut env.batch(&[
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--failures",
        "failures.jsonl",
        "--strict",
    ]));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("ids.txt:5: invalid id") && text.contains("a byte-order mark"),
        "{text}"
    );
    let out = run(&mut env.batch(&[
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--failures",
        "failures.jsonl",
    ]));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !text.contains("ids.txt:3"),
        "the comment is a comment: {text}"
    );
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), ["1", "2", "6"]);
    assert_eq!(
        std::fs::read_to_string(env.path("failures.jsonl")).unwrap(),
        ""
    );
}

#[test]
fn invalid_lines_are_named_and_skipped_and_the_rest_is_fetched() {
    let env = Env::new();
    let input = env.write(
        "ids.txt",
        "# users to fetch\r\n1\r\n\r\n  2  \r\n..\r\n3\r\n2\r\n99999\r\n",
    );
    let out = run(&mut env.batch(&[
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--failures",
        "failures.jsonl",
        "--summary-json",
        "s.json",
    ]));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ids.txt:5: skipped: invalid id \"..\""),
        "{text}"
    );
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), ["1", "2", "3"]);
    assert_eq!(
        std::fs::read_to_string(env.path("failures.jsonl")).unwrap(),
        "{\"id\":\"99999\",\"outcome\":\"not_found\",\"error\":\"not_found\",\"message\":\"not found (the API answered 404)\",\"attempts\":1}\n"
    );
    let s = summary(&env.path("s.json"));
    assert_eq!(s["ids"], 4);
    assert_eq!(s["duplicates"], 1);
    assert_eq!(s["invalid_lines"], 1);
    assert_eq!(s["not_found"], 1);
    // Not a terminal: nothing on stderr but the warning and the summary.
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

/// Runs the batch with `args`, writing `input` to its stdin.
fn with_stdin(env: &Env, args: &[&str], input: &str) -> std::process::Output {
    let mut child = env
        .batch(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn reads_ids_from_stdin() {
    let env = Env::new();
    let out = with_stdin(&env, &["-", "--out", "out.jsonl"], &ids_file(1..=300));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: Vec<String> = (1..=300).map(|n| n.to_string()).collect();
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), want);
}

/// A path to something that can be read only once (a pipe, `<(…)`) is streamed like stdin,
/// not counted in a first pass that would leave nothing for the second.
#[test]
fn a_pipe_given_by_path_is_read_once() {
    let env = Env::new();
    let out = with_stdin(
        &env,
        &["/dev/stdin", "--out", "out.jsonl"],
        &ids_file(1..=20),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(jsonl_ids(&env.path("out.jsonl")).len(), 20);
}

/// Windows editors begin UTF-8 files with a byte-order mark and end lines with CRLF.
#[test]
fn a_byte_order_mark_is_not_part_of_the_first_id() {
    let env = Env::new();
    let ids = env.write("ids.txt", "\u{feff}1\r\n2\r\n");
    let out = run(&mut env.batch_to_files(&ids, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), ["1", "2"]);
    assert_eq!(std::fs::read(env.path("failures.jsonl")).unwrap(), b"");
}

#[test]
fn bad_utf8_on_stdin_asks_for_the_input_to_be_fixed_before_a_rerun() {
    // The ids before the bad line are left unfinished: claimed and not started when the bad
    // line stops the run, or, should the reader be slow to send it, cancelled in flight (a
    // 5 s answer, no grace).
    let env = Env::with_latency(Duration::from_secs(5));
    let mut child = env
        .batch(&["--out", "out.jsonl", "--grace", "0s"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"1\n2\n\xff\n3\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    // Run as it was, the same input stops at the same line.
    assert!(
        text.contains("unfinished (fix the input, then run the same command again to finish)"),
        "{text}"
    );
}

#[test]
fn bad_utf8_on_stdin_stops_with_exit_2_and_keeps_progress() {
    let env = Env::new();
    // The good lines first, and the bad one only once the API has seen all of them: the
    // first run then has progress to keep.
    let mut child = env
        .batch(&["--out", "out.jsonl"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(ids_file(1..=20).as_bytes()).unwrap();
    stdin.flush().unwrap();
    assert!(
        env.wait_for_requests(20, &mut child),
        "the batch ended early"
    );
    stdin.write_all(b"\xff\n21\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("stdin:21: the line is not valid UTF-8"),
        "{text}"
    );
    assert!(
        !env.path("out.jsonl").exists(),
        "output written after an input error"
    );
    assert!(text.contains("batch stopped by an input error"), "{text}");
    // Nothing was left unfinished, but the run is not done: it says how to finish.
    assert!(
        text.contains("the rest of the input was not read (fix the input, then run the same command again to finish)"),
        "{text}"
    );
    // The fixed input continues where the first run stopped: the 20 ids it fetched are not
    // fetched again.
    let mut child = env
        .batch(&["--out", "out.jsonl", "--summary-json", "summary.json"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(ids_file(1..=21).as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: Vec<String> = (1..=21).map(|n| n.to_string()).collect();
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), want);
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["done_earlier"], 20, "{s:#}");
    assert_eq!(s["found"], 1, "{s:#}");
    assert_eq!(env.user_requests(), 21);
}

#[test]
fn dry_run_counts_and_shows_urls_without_fetching() {
    let env = Env::new();
    let input = env.write("ids.txt", "1\n2\n2\na/b\n");
    let out = run(&mut env.batch(&[input.to_str().unwrap(), "--out", "out.jsonl", "--dry-run"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    // Distinct ids, as the run's summary counts them.
    assert!(text.contains("3 of 3 ids in"), "{text}");
    assert!(text.contains(", 1 duplicate, 0 invalid lines)"), "{text}");
    assert!(text.contains("/users/a%2Fb"), "{text}");
    let one = env.write("one.txt", "7\n");
    let out = run(&mut env.batch(&[one.to_str().unwrap(), "--out", "out.jsonl", "--dry-run"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1 of 1 id in"), "{text}");
    assert!(text.contains("up to 4 attempts per id"), "{text}");
    // No retry starts within a --retry-max-time of 0.
    let out = run(env
        .batch(&[one.to_str().unwrap(), "--out", "out.jsonl", "--dry-run"])
        .args(["--retry-max-time", "0s"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("up to 1 attempt per id"), "{text}");
    assert_eq!(env.user_requests(), 0);
    assert!(!env.path("out.jsonl").exists());
}

/// A dry run writes nothing, so a run writing the same outputs right now is no obstacle: it
/// reports (the time to check on a running job), and leaves the running job's files alone.
#[test]
fn a_dry_run_works_while_a_run_writes_the_outputs() {
    let env = Env::new();
    env.write("ids.txt", "1\n2\n");
    // What a running job holds: its outputs' temporary files, locked.
    let mut held = Vec::new();
    for name in [
        ".out.jsonl.userfetch-partial",
        ".fail.jsonl.userfetch-partial",
    ] {
        let file = std::fs::File::create(env.path(name)).unwrap();
        std::fs::write(env.path(name), "being written").unwrap();
        file.try_lock().unwrap();
        held.push(file);
    }
    let dry = [
        "ids.txt",
        "--out",
        "out.jsonl",
        "--failures",
        "fail.jsonl",
        "--dry-run",
    ];
    let out = run(&mut env.batch(&dry));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 of 2 ids in"), "{text}");
    for what in ["--out out.jsonl", "--failures fail.jsonl"] {
        assert!(
            text.contains(&format!(
                "{what}: another run is writing that file now; a run would be refused until it ends"
            )),
            "{text}"
        );
    }
    for name in [
        ".out.jsonl.userfetch-partial",
        ".fail.jsonl.userfetch-partial",
    ] {
        assert_eq!(
            std::fs::read_to_string(env.path(name)).unwrap(),
            "being written"
        );
    }
    // A run is still refused.
    let out = run(&mut env.batch(&dry[..5]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(
        "--out out.jsonl: another userfetch run is writing that file; wait for it to finish"
    ));
    drop(held);
    // What a run would refuse to write through, the dry run refuses too.
    let partial = env.path(".out.jsonl.userfetch-partial");
    std::fs::remove_file(&partial).unwrap();
    std::os::unix::fs::symlink(env.path("ids.txt"), &partial).unwrap();
    for args in [&dry[..], &dry[..5]] {
        let out = run(&mut env.batch(args));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("is a symbolic link"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string(env.path("ids.txt")).unwrap(),
        "1\n2\n"
    );
}

/// The dry run asks an http:// API whether it speaks HTTP/2; one that cannot be reached is
/// said to be so, not taken for an HTTP/1.1 API.
#[test]
fn a_dry_run_says_when_the_api_cannot_be_reached() {
    let env = Env::new();
    env.write("ids.txt", "1\n");
    let out = run(env.with_api("http://127.0.0.1:1/users/{id}", &[]).args([
        "batch",
        "ids.txt",
        "--out",
        "out.jsonl",
        "--dry-run",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("the API could not be reached (")
            && text.contains(") when asked about HTTP/2 just now: the protocol above is a guess"),
        "{text}"
    );
    // One that takes the connection and never answers, likewise.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!(
        "http://127.0.0.1:{}/users/{{id}}",
        silent.local_addr().unwrap().port()
    );
    let out = run(env.with_api(&api, &["--timeout", "300ms"]).args([
        "batch",
        "ids.txt",
        "--out",
        "out.jsonl",
        "--dry-run",
    ]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "the API did not answer within 300ms when asked about HTTP/2 just now: the protocol \
             above is a guess"
        ),
        "{text}"
    );
    // Through a proxy, said so.
    let out = run(env
        .with_api("http://api.example/users/{id}", &[])
        .env("http_proxy", "http://127.0.0.1:1")
        .args(["batch", "ids.txt", "--out", "out.jsonl", "--dry-run"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("over HTTP/1.1: a connection for each lookup in flight, through the proxy http://127.0.0.1:1\n"),
        "{text}"
    );
    // One that answers is not.
    let out = run(&mut env.batch(&["ids.txt", "--out", "out.jsonl", "--dry-run"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("over cleartext HTTP/2"), "{text}");
    assert!(!text.contains("could not be reached"), "{text}");
}

/// `batch --out ids.txt < ids.txt` would replace the ids being read with records: refused,
/// as naming the input file is, for every output.
#[test]
fn an_output_that_is_the_file_on_stdin_is_refused() {
    let env = Env::new();
    let ids = env.write("ids.txt", "1\n2\n");
    for option in ["--out", "--failures", "--summary-json"] {
        let mut args = vec!["-", "--out", "out.jsonl"];
        if option == "--out" {
            args[2] = "ids.txt";
        } else {
            args.extend([option, "ids.txt"]);
        }
        let out = run(env.batch(&args).stdin(std::fs::File::open(&ids).unwrap()));
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{option}: {text}");
        assert!(
            text.contains(&format!("{option} ids.txt is the file on stdin")),
            "{option}: {text}"
        );
        assert_eq!(std::fs::read_to_string(&ids).unwrap(), "1\n2\n", "{option}");
    }
    assert_eq!(env.user_requests(), 0);
}

/// A dry run writes nothing, a cache file included: with none yet, nothing is done or
/// cached, and every id would be fetched.
#[test]
fn a_dry_run_creates_no_cache_file() {
    let env = Env::new();
    let input = env.write("ids.txt", "1\n2\n");
    let out = run(&mut env.batch(&[input.to_str().unwrap(), "--out", "out.jsonl", "--dry-run"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("2 of 2 ids in"), "{text}");
    let made: Vec<_> = std::fs::read_dir(env.path(""))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("cache.sqlite3"))
        .collect();
    assert!(made.is_empty(), "{made:?}");
}

/// Nor does it change an existing one: it only reads it.
#[test]
fn a_dry_run_leaves_an_existing_cache_file_as_it_was() {
    let env = Env::new();
    let input = env.write("ids.txt", "1\n2\n3\n");
    let input = input.to_str().unwrap();
    let out = run(&mut env.batch(&[input, "--out", "out.jsonl"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Outcomes of a job started over, which a cache opened for writing deletes while idle.
    let cache = rusqlite::Connection::open(env.path("cache.sqlite3")).unwrap();
    cache
        .execute_batch(
            "INSERT INTO batch_discarded (job) VALUES (999);
             INSERT INTO batch_outcomes (job, id, line, run, state) VALUES (999, 'x', 1, 1, 1);",
        )
        .unwrap();
    drop(cache);
    // A missing log and an empty one hold the same: nothing.
    let read = |suffix: &str| {
        std::fs::read(env.path(&format!("cache.sqlite3{suffix}")))
            .ok()
            .filter(|bytes| !bytes.is_empty())
    };
    let (file, wal) = (read(""), read("-wal"));
    let out = run(&mut env.batch(&[input, "--out", "out.jsonl", "--dry-run"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("0 of 3 ids in"), "{text}");
    assert!(text.contains("3 done in an earlier run"), "{text}");
    assert!(read("") == file, "the cache file changed");
    assert!(read("-wal") == wal, "its log changed");
}

/// A cache file that is no database fails the dry run as it would fail the run: exit 2,
/// the file named.
#[test]
fn a_dry_run_refuses_a_cache_file_that_is_no_database() {
    let env = Env::new();
    env.write("ids.txt", "1\n");
    env.write("cache.sqlite3", "not a database\n");
    refused(
        &env,
        &["ids.txt", "--out", "out.jsonl", "--dry-run"],
        "is not a usable SQLite database",
    );
}

/// Another program's database as the cache file (here one that even has a `records` table)
/// is refused by the run and the dry run alike, and stays as it was.
#[test]
fn batch_refuses_another_programs_database_as_its_cache() {
    let env = Env::new();
    env.write("ids.txt", "1\n");
    let path = env.path("cache.sqlite3");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE records (sku TEXT, price INTEGER);")
        .unwrap();
    drop(db);
    let before = std::fs::read(&path).unwrap();
    for extra in [&[][..], &["--dry-run"]] {
        let mut args = vec!["ids.txt", "--out", "out.jsonl"];
        args.extend_from_slice(extra);
        refused(
            &env,
            &args,
            "is an SQLite database but not a userfetch cache (it holds a table 'records' with other columns",
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}

/// The dry run refuses another program's WAL-mode database without leaving -wal and -shm
/// files beside it, and takes an SQLite database with no tables yet for an empty cache.
#[test]
fn a_dry_run_only_looks_at_another_programs_database_and_counts_an_empty_one_as_empty() {
    let env = Env::new();
    env.write("ids.txt", "1\n2\n3\n");
    let path = env.path("cache.sqlite3");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE invoices (n INTEGER);")
        .unwrap();
    drop(db);
    refused(
        &env,
        &["ids.txt", "--out", "out.jsonl", "--dry-run"],
        "not a userfetch cache (it holds the table 'invoices'",
    );
    assert!(!env.path("cache.sqlite3-wal").exists());
    assert!(!env.path("cache.sqlite3-shm").exists());

    std::fs::remove_file(&path).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("PRAGMA user_version = 1;").unwrap();
    drop(db);
    let out = run(&mut env.batch(&["ids.txt", "--out", "out.jsonl", "--dry-run"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("3 of 3 ids in"), "{text}");
}

/// Ids another job (or `get`) cached recently would not be fetched, and the count says so.
#[test]
fn dry_run_counts_what_the_cache_would_answer() {
    let env = Env::new();
    let other = env.write("other.txt", ids_file(1..=3));
    let out = run(&mut env.batch(&[other.to_str().unwrap(), "--out", "other.jsonl"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ids = env.write("ids.txt", ids_file(1..=5));
    let dry = |extra: &[&str]| {
        let mut args = vec![ids.to_str().unwrap(), "--out", "out.jsonl", "--dry-run"];
        args.extend_from_slice(extra);
        let out = run(&mut env.batch(&args));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = dry(&[]);
    assert!(
        text.contains("2 of 5 ids in") && text.contains("3 fresh in the cache"),
        "{text}"
    );
    // --fresh refetches everything, cached or not.
    let text = dry(&["--fresh"]);
    assert!(
        text.contains("5 of 5 ids in") && text.contains("0 fresh in the cache"),
        "{text}"
    );
}

#[test]
fn a_rerun_fetches_nothing_and_fresh_fetches_everything_again() {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=50));
    let args = [input.to_str().unwrap(), "--out", "out.jsonl"];
    for (extra, requests) in [(None, 50), (None, 50), (Some("--fresh"), 100)] {
        let out = run(env.batch(&args).args(extra));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(jsonl_ids(&env.path("out.jsonl")).len(), 50);
        assert_eq!(env.user_requests(), requests, "after {extra:?}");
    }
}

/// A run that cannot start says so in its summary file, in place of whatever an earlier run
/// left there: a script reading it never takes the last run's "complete" for this one's.
#[test]
fn a_run_that_fails_before_fetching_says_so_in_its_summary() {
    let env = Env::new();
    env.write("ids.txt", "1\n2\n");
    let args = [
        "ids.txt",
        "--out",
        "out.jsonl",
        "--summary-json",
        "summary.json",
    ];
    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary(&env.path("summary.json"))["status"], "complete");
    let records = std::fs::read_to_string(env.path("out.jsonl")).unwrap();

    // The input is gone: found after the summary file was set up.
    std::fs::remove_file(env.path("ids.txt")).unwrap();
    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["status"], "not_started", "{s:#}");
    assert!(s["reason"].as_str().unwrap().contains("ids.txt"), "{s:#}");
    assert_eq!(s["found"], 0, "{s:#}");
    assert!(schema("batch-summary.schema.json").is_valid(&s), "{s}");
    // The earlier output stays as it was, and nothing half-written is left beside it.
    assert_eq!(
        std::fs::read_to_string(env.path("out.jsonl")).unwrap(),
        records
    );
    let partial: Vec<String> = env
        .files()
        .into_iter()
        .filter(|f| f.contains("partial"))
        .collect();
    assert!(partial.is_empty(), "left {partial:?}");

    // The cache cannot be opened: found after the output files were set up.
    let env = Env::new();
    env.write("ids.txt", "1\n2\n");
    std::fs::create_dir(env.path("cache.sqlite3")).unwrap();
    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let s = summary(&env.path("summary.json"));
    assert_eq!(s["status"], "not_started", "{s:#}");
    assert!(s["reason"].as_str().unwrap().contains("cache"), "{s:#}");
    // In the words of the error line, causes said once.
    assert_eq!(
        format!("userfetch: {}\n", s["reason"].as_str().unwrap()),
        stderr(&out)
    );
    let left: Vec<String> = env
        .files()
        .into_iter()
        .filter(|f| f.contains("out") || f.contains("partial"))
        .collect();
    assert!(left.is_empty(), "left {left:?}");
    assert_eq!(env.user_requests(), 0);
}

/// File names are text the user did not necessarily choose (a download, an archive's
/// contents): an escape sequence in one must not reach the terminal through a message.
#[test]
fn escape_sequences_in_file_names_never_reach_the_terminal() {
    let env = Env::new();
    let input = env.write("in\u{1b}[31mX\u{1b}]0;T\u{7}.txt", "1\n..\n");
    let input = input.to_str().unwrap();
    let out_name = "out\u{1b}[32mY.jsonl";
    let failures = "f\u{9b}2J.jsonl";
    let ran = run(&mut env.batch(&[
        input,
        "--out",
        out_name,
        "--failures",
        failures,
        "--summary-json",
        "s.json",
    ]));
    let text = stderr(&ran);
    assert_eq!(ran.status.code(), Some(0), "{text:?}");
    assert!(
        text.contains("X\u{fffd}]0;T\u{fffd}.txt:2: skipped"),
        "{text:?}"
    );
    assert!(text.contains("out\u{fffd}[32mY.jsonl"), "{text:?}");
    let dry = run(&mut env.batch(&[input, "--out", out_name, "--dry-run"]));
    let shown = String::from_utf8_lossy(&dry.stdout);
    assert!(shown.contains("out\u{fffd}[32mY.jsonl"), "{shown:?}");
    for printed in [text.as_str(), &shown, &stderr(&dry)] {
        assert!(
            !printed.chars().any(|c| c.is_control() && c != '\n'),
            "{printed:?}"
        );
    }
    // The files themselves have the names they were given, and so does the summary's JSON
    // (escaped as JSON, not made safe as for a terminal).
    assert_eq!(jsonl_ids(&env.path(out_name)), ["1"]);
    let summary = summary(&env.path("s.json"));
    assert_eq!(summary["out"]["path"], out_name);
    assert_eq!(summary["failures"]["path"], failures);
}

#[test]
fn no_cache_from_the_environment_is_named_when_refused() {
    let env = Env::new();
    let input = env.write("ids.txt", "1\n");
    let out = run(env
        .batch(&[input.to_str().unwrap(), "--out", "out.jsonl"])
        .env("USERFETCH_NO_CACHE", "1"));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cannot run with --no-cache (USERFETCH_NO_CACHE is set)"),
        "{text}"
    );
    // Typed, with the variable off or unreadable: the flag is the cause, not the variable.
    for value in ["0", "maybe"] {
        let out = run(env
            .batch(&[input.to_str().unwrap(), "--out", "out.jsonl", "--no-cache"])
            .env("USERFETCH_NO_CACHE", value));
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains("cannot run with --no-cache ("), "{text}");
        assert!(!text.contains("USERFETCH_NO_CACHE"), "{value}: {text}");
    }
}
