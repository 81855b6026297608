//! The `userfetch` binary end to end: output, error lines and exit codes.

mod common;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::prelude::*;
use common::TestApi;
use predicates::prelude::*;

fn userfetch(cache_dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::cargo_bin("userfetch").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--cache")
        .arg(cache_dir.path().join("cache.sqlite3"))
        .stdin(Stdio::null());
    cmd
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `id` of each record printed, in order.
fn printed_ids(stdout: &[u8]) -> Vec<serde_json::Value> {
    json_lines(stdout).iter().map(|v| v["id"].clone()).collect()
}

#[test]
fn get_prints_one_json_line_per_user_in_order() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .args(["get", "3", "1", "2", "--api", &api.template("")])
        .assert()
        .success()
        .stderr("")
        .get_output()
        .clone();
    let ids = printed_ids(&out.stdout);
    assert_eq!(ids, [3, 1, 2]);
}

/// An id given twice is asked of the API once, and printed in each of its places; one that
/// fails is said for each place too.
#[test]
fn get_looks_up_a_repeated_id_once() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .args(["get", "5", "5", "7", "424242", "5", "424242", "--no-cache"])
        .args(["--api", &api.template("")])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let ids = printed_ids(&out.stdout);
    assert_eq!(ids, [5, 5, 7, 5]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("user 424242: not found").count(),
        2,
        "{stderr}"
    );
    assert_eq!(api.stats().user_requests, 3);
}

/// A copy shares the lookup of one that is done but still waiting to print behind a slower
/// id. Id 9 answers after 1 s, the rest at once, each connection on a thread of its own.
#[test]
fn get_shares_a_lookup_that_waits_to_print() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut request = [0; 4096];
                let n = stream.read(&mut request).unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..n]).into_owned();
                let id = head.split(['/', ' ']).nth(3).unwrap_or("").to_owned();
                counter.fetch_add(1, Ordering::SeqCst);
                if id == "9" {
                    std::thread::sleep(Duration::from_secs(1));
                }
                let body = format!(r#"{{"id":{id}}}"#);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .args([
            "get",
            "--concurrency",
            "2",
            "9",
            "5",
            "5",
            "--no-cache",
            "--http1",
        ])
        .args(["--api", &format!("http://127.0.0.1:{port}/users/{{id}}")])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(printed_ids(&out.stdout), [9, 5, 5]);
    assert_eq!(asked.load(Ordering::SeqCst), 2);
}

/// Copies of one id take lookup slots but no requests: the ids after them are not held back.
#[test]
fn get_runs_the_ids_after_a_repeated_one_at_once() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = userfetch(&dir)
        .args(["get", "5", "5", "7", "7", "--no-cache"])
        .args(["--api", &api.template("latency=3s")])
        .assert()
        .success()
        .get_output()
        .clone();
    // One wave of 3 s, not two: generous against the 6 s two waves would take.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(printed_ids(&out.stdout), [5, 5, 7, 7]);
    assert_eq!(api.stats().user_requests, 2);
}

/// `-v` logs each retry with the failure, which can quote the API's text: escape sequences in
/// it (a 500's body here) reach the terminal no more than in any other message.
#[test]
fn verbose_log_lines_carry_no_escape_sequences_from_the_api() {
    let api = support::answering("500 Internal Server Error", |_| {
        "boom \u{1b}[31mred\u{1b}]0;title\u{7}".to_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .args([
            "get",
            "1",
            "-v",
            "--retries",
            "2",
            "--max-retry-wait",
            "10ms",
        ])
        .args(["--api", &api])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
        "{stderr:?}"
    );
    // A retry is no giving up: only the last line says that (the second retry's said
    // "gave up after 2 attempts" and went on).
    let retries: Vec<&str> = stderr.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(retries.len(), 2, "{stderr}");
    assert!(retries.iter().all(|l| !l.contains("gave up")), "{stderr}");
    assert!(stderr.contains("; gave up after 3 attempts"), "{stderr}");
}

/// batch asks an http:// API whether it speaks cleartext HTTP/2 and uses it when it does (the
/// demo API does); `--http1` keeps to HTTP/1.1, and asking for both is refused.
#[test]
fn batch_speaks_http2_to_an_api_that_offers_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ids.txt"), "1\n2\n3\n").unwrap();
    for (transport, http2) in [(&[][..], true), (&["--http1"][..], false)] {
        let api = TestApi::start();
        userfetch(&dir)
            .current_dir(dir.path())
            .args(["--api", &api.template("")])
            .args(transport)
            .args(["batch", "ids.txt", "--out", "o.jsonl", "--fresh"])
            .assert()
            .success();
        let log = api.log();
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(
            log.iter().all(|r| r.http2 == http2),
            "{transport:?}: {log:?}"
        );
    }
    userfetch(&dir)
        .current_dir(dir.path())
        .args(["--http1", "--http2", "batch", "ids.txt", "--out", "o.jsonl"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--http1 and --http2"))
        // Under the usage of the command given, as clap's own errors are.
        .stderr(predicate::str::contains("Usage: userfetch batch"));
    // Through a proxy the question would go around it: not asked. (The demo API answers a
    // proxy's absolute-form requests, so it stands in for one here.)
    let api = TestApi::start();
    let template = api.template("");
    let base = template.split("/users").next().unwrap();
    userfetch(&dir)
        .current_dir(dir.path())
        .env("http_proxy", base)
        .args(["--api", &template])
        .args(["batch", "ids.txt", "--out", "o.jsonl", "--fresh"])
        .assert()
        .success();
    let log = api.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().all(|r| !r.http2), "{log:?}");
    // A proxy NO_PROXY keeps away from the API is no reason not to ask.
    let api = TestApi::start();
    userfetch(&dir)
        .current_dir(dir.path())
        .env("http_proxy", "http://127.0.0.1:1")
        .env("NO_PROXY", "example.com,127.0.0.1")
        .args(["--api", &api.template("")])
        .args(["batch", "ids.txt", "--out", "o.jsonl", "--fresh"])
        .assert()
        .success();
    assert!(api.log().iter().all(|r| r.http2), "{:?}", api.log());
    // Typed, --http1 wins over USERFETCH_HTTP2 in the environment.
    let api = TestApi::start();
    userfetch(&dir)
        .current_dir(dir.path())
        .env("USERFETCH_HTTP2", "1")
        .args(["--api", &api.template(""), "--http1"])
        .args(["batch", "ids.txt", "--out", "o.jsonl", "--fresh"])
        .assert()
        .success();
    assert!(api.log().iter().all(|r| !r.http2), "{:?}", api.log());
}

/// `--http2` speaks to the API directly: where a proxy would carry its requests it is
/// refused, not quietly gone around (the proxy named, without its password).
#[test]
fn http2_is_refused_where_a_proxy_carries_the_requests() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .env("http_proxy", "http://bob:hunter2@127.0.0.1:1")
        .args(["--http2", "--api", &api.template(""), "get", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--http2 speaks to the API directly")
            && stderr.contains("through the proxy http://127.0.0.1:1 "),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(api.log().is_empty(), "{:?}", api.log());
    // Kept away from the API by NO_PROXY, the proxy is no obstacle.
    userfetch(&dir)
        .env("http_proxy", "http://127.0.0.1:1")
        .env("no_proxy", "127.0.0.1")
        .args(["--http2", "--api", &api.template(""), "get", "1"])
        .assert()
        .success();
    assert!(api.log().iter().all(|r| r.http2), "{:?}", api.log());
}

/// Asking an http:// API about HTTP/2 takes a connection and a round trip: no longer than
/// --timeout allows an attempt (it took 2 s whatever --timeout said).
#[test]
fn the_http2_question_waits_no_longer_than_an_attempt() {
    // Connections complete in the kernel's queue; nothing is ever read or answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!(
        "http://127.0.0.1:{}/users/{{id}}",
        silent.local_addr().unwrap().port()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ids.txt"), "1\n").unwrap();
    let out = userfetch(&dir)
        .current_dir(dir.path())
        .args(["-v", "--timeout", "300ms", "--retries", "0", "--api", &api])
        .args(["batch", "ids.txt", "--out", "o.jsonl"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not answer within 300ms whether it speaks HTTP/2"),
        "{stderr}"
    );
}

/// A body compressed though no Accept-Encoding asked for it is said as such, not as JSON
/// that does not parse.
#[test]
fn an_encoded_answer_is_said_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let api = support::answering("200 OK\r\nContent-Encoding: gzip", |_| "\u{1f}x".to_owned());
    userfetch(&dir)
        .args(["--api", &api, "--http1", "get", "1", "2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("the answer is encoded"))
        .stderr(predicate::str::contains("Content-Encoding: gzip"))
        .stderr(predicate::str::contains("not valid JSON").not())
        // No web page: the hint for one would mislead.
        .stderr(predicate::str::contains("web page").not());
    // A label that is no compression (plain JSON sent oddly labelled) is left to the JSON.
    let labelled = support::answering("200 OK\r\nContent-Encoding: UTF-8", |_| {
        r#"{"id":1,"name":"x"}"#.to_owned()
    });
    userfetch(&dir)
        .args(["--api", &labelled, "--http1", "get", "1"])
        .assert()
        .success()
        .stdout("{\"id\":1,\"name\":\"x\"}\n");
}

/// A proxy's own 502 (it could not reach the API) read like the API's: where a proxy carries
/// the request, the message says so.
#[test]
fn a_server_error_through_a_proxy_names_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = support::answering("502 Bad Gateway", |_| "no route".to_owned());
    let proxy = proxy.split("/users").next().unwrap().to_owned();
    userfetch(&dir)
        .env("HTTP_PROXY", &proxy)
        .args([
            "--api",
            "http://api.invalid/users/{id}",
            "--retries",
            "0",
            "get",
            "1",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "server answered 502 Bad Gateway, saying \"no route\" (through the proxy {proxy})"
        )));
}

/// A SOCKS proxy is refused once, before any request: every lookup failed at the
/// connection, each through all its retries. Not ignored: the user meant to go through it.
#[test]
fn a_socks_proxy_is_refused_before_any_request() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let template = api.template("");
    userfetch(&dir)
        .env("ALL_PROXY", "socks5h://127.0.0.1:1")
        .args(["--api", &template, "get", "1"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "the API's requests would go through the SOCKS proxy socks5h://127.0.0.1:1",
        ));
    assert_eq!(api.stats().requests, 0);
    // Kept off the API's host by NO_PROXY: nothing to refuse.
    userfetch(&dir)
        .env("ALL_PROXY", "socks5h://127.0.0.1:1")
        .env("NO_PROXY", "127.0.0.1")
        .args(["--api", &template, "get", "1"])
        .assert()
        .success();
}

/// A proxy variable that holds no proxy URL is dropped by the HTTP library without a word,
/// and the other of its pair (HTTP_PROXY, http_proxy) goes unread while it is set: said,
/// without values (which may hold a password).
#[test]
fn a_proxy_variable_that_is_no_url_is_said() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let template = api.template("");
    // The demo API answers a proxy's absolute-form requests: it stands in for one.
    let proxy = template.split("/users").next().unwrap().to_owned();
    // The dead proxy in http_proxy is never read (the run would fail if it were).
    let out = userfetch(&dir)
        .env("HTTP_PROXY", "::bad::hunter2")
        .env("http_proxy", "http://127.0.0.1:1")
        .env("ALL_PROXY", "ftp://proxy.example:21")
        .env("HTTPS_PROXY", "")
        .env("https_proxy", "http://fine.example:3128")
        .env("NO_PROXY", "")
        .env("no_proxy", "example.com")
        .args(["--api", &template, "get", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr,
        "userfetch: HTTP_PROXY holds no usable proxy URL (http://HOST:PORT): it is ignored, \
         and so is http_proxy, read only when HTTP_PROXY is unset\n\
         userfetch: HTTPS_PROXY is set but empty, so https_proxy is not read (it is read only \
         when HTTPS_PROXY is unset)\n\
         userfetch: ALL_PROXY holds no usable proxy URL (http://HOST:PORT): it is ignored\n\
         userfetch: NO_PROXY is set but empty, so no_proxy is not read (it is read only when \
         NO_PROXY is unset)\n"
    );
    assert_eq!(json_lines(&out.stdout)[0]["id"], 1);
    // A usable HTTP_PROXY is read; a dead http_proxy beside it is never read (the run would
    // fail), and not said.
    let out = userfetch(&dir)
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", "http://127.0.0.1:1")
        .args(["--api", &template, "get", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // A port that is no port is dropped by the HTTP library, which then asks port 80: said.
    // (NO_PROXY keeps this request away from it.)
    let out = userfetch(&dir)
        .env("http_proxy", "http://user:secret@127.0.0.1:99999")
        .env("NO_PROXY", "127.0.0.1")
        .args(["--api", &template, "get", "4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "userfetch: http_proxy names a port that is no port (1 to 65535): the proxy is asked \
         on port 80 instead\n"
    );
    // Under CGI none is read, which is said.
    let out = userfetch(&dir)
        .env("REQUEST_METHOD", "GET")
        .env("http_proxy", "http://127.0.0.1:1")
        .args(["--api", &template, "get", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "userfetch: REQUEST_METHOD is set (as under CGI), so http_proxy and every other proxy \
         variable is not read\n"
    );
}

/// A proxy that wants credentials (407) is named, and not asked again.
#[test]
fn a_proxy_asking_for_credentials_is_named() {
    let proxy = support::answering("407 Proxy Authentication Required", |_| String::new());
    let proxy = proxy.split("/users").next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .env("http_proxy", &proxy)
        .args(["--api", "http://api.example/users/{id}", "get", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Said once, with no attempts after the first ("; gave up after 4 attempts" otherwise).
    assert_eq!(
        stderr,
        format!(
            "userfetch: user 1: the proxy {proxy} answered 407 Proxy Authentication Required: \
             check the user and password in the proxy variable (http://USER:PASSWORD@HOST:PORT)\n"
        )
    );
}

/// When the proxy cannot be reached, the error names it: the API was never asked.
#[test]
fn a_proxy_that_cannot_be_reached_is_named() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .env("http_proxy", "http://bob:hunter2@127.0.0.1:1")
        .args(["--retries", "0", "--api", &api.template(""), "get", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to 127.0.0.1:{} through the proxy http://127.0.0.1:1 (",
            api.port()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(api.log().is_empty(), "{:?}", api.log());
}

/// A copied id often brings a space along, as a line of a batch file may: it is the id.
#[test]
fn get_takes_an_id_with_spaces_around_as_the_id() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .args(["get", " 3", "1\t ", "--api", &api.template("")])
        .assert()
        .success()
        .get_output()
        .clone();
    let ids = printed_ids(&out.stdout);
    assert_eq!(ids, [3, 1]);
}

#[test]
fn not_found_exits_1_with_one_line() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .args(["--api", &api.template(""), "get", "1", "424242"])
        .assert()
        .code(1)
        .stderr("userfetch: user 424242: not found (the API answered 404)\n")
        .stdout(predicate::str::contains("\"id\":1"));
    // Not one found: more often a wrong path in the template than missing users, said.
    let wrong_path = api.template("").replace("/users/", "/user/");
    userfetch(&dir)
        .args(["--api", &wrong_path, "get", "1", "2"])
        .assert()
        .code(1)
        .stderr(
            "userfetch: user 1: not found (the API answered 404)\n\
             userfetch: user 2: not found (the API answered 404)\n\
             userfetch: not one id was found: is the path in the --api template the API's?\n",
        );
    // One id given twice is one id: nothing to say of the template.
    userfetch(&dir)
        .args(["--api", &wrong_path, "get", "1", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not one id was found").not());
}

/// A web page (a wrong path, a login page) answers 200 with HTML to every id: said, as batch
/// says it.
#[test]
fn not_one_json_record_asks_whether_the_template_is_a_web_page() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let web_page = api.template("fault=malformed");
    let hint =
        "not one answer was a JSON record: is the --api template the API's, and not a web page's?";
    userfetch(&dir)
        .args(["--api", &web_page, "--retries", "0", "get", "1", "2"])
        .assert()
        .code(1)
        .stderr(predicate::str::ends_with(format!("userfetch: {hint}\n")))
        .stderr(predicate::str::contains("not one id was found").not());
    // One id found is an API that answers: nothing to say of the template. The fault comes
    // once per URL: user 3's is spent first.
    let once = api.template("fault=malformed&fault_times=1");
    userfetch(&dir)
        .args(["--api", &once, "--retries", "0", "get", "3"])
        .assert()
        .code(1);
    userfetch(&dir)
        .args(["--api", &once, "--retries", "0", "get", "1", "2", "3"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(hint).not());
}

/// `-v` is where a user looks first for why a lookup was slow: each retry is there.
#[test]
fn one_v_logs_each_retry() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .args([
            "-v",
            "get",
            "42",
            "--max-retry-wait",
            "10ms",
            "--api",
            &api.template("fault=503&fault_times=1"),
        ])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("retrying")
                .and(predicate::str::contains("id=42"))
                // And where each record came from (-v printed nothing for get without retries).
                .and(predicate::str::contains("user 42: from the API in "))
                .and(predicate::str::contains(" ms (2 attempts)")),
        );
    assert_eq!(api.stats().user_requests, 2);
    userfetch(&dir)
        .args([
            "-v",
            "get",
            "42",
            "--api",
            &api.template("fault=503&fault_times=1"),
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("user 42: from the cache"));
}

#[test]
fn server_errors_name_the_status_and_attempts() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .args([
            "get",
            "42",
            "--retries",
            "2",
            "--api",
            &api.template("fault=503"),
        ])
        .assert()
        .code(1)
        .stdout("")
        .stderr("userfetch: user 42: server answered 503 Service Unavailable, saying \"injected fault\"; gave up after 3 attempts\n");
    assert_eq!(api.stats().user_requests, 3);
}

#[test]
fn invalid_ids_exit_2_before_any_request() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let long = "9".repeat(10 * 1024);
    for (bad, reason) in [
        ("", "the id is empty"),
        ("..", "'.' and '..' are not ids"),
        (".", "'.' and '..' are not ids"),
        ("a\u{1b}[2J", "control character"),
        ("1\n2", "control character"),
        ("1\u{a0}", "whitespace"),
        (long.as_str(), "10240 bytes long"),
    ] {
        userfetch(&dir)
            .args(["get", "1", bad, "--api", &api.template("")])
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::starts_with("userfetch: invalid id "))
            .stderr(predicate::str::contains("(argument 2)"))
            .stderr(predicate::str::contains(reason))
            .stderr(predicate::str::contains(
                "; no id was looked up (all are checked first)",
            ))
            .stderr(predicate::str::contains("\u{1b}").not());
    }
    // Not UTF-8: named as the others are, not clap's "in one or more arguments".
    use std::os::unix::ffi::OsStrExt;
    userfetch(&dir)
        .arg("get")
        .arg("1")
        .arg(std::ffi::OsStr::from_bytes(b"\xff7"))
        .args(["--api", &api.template("")])
        .assert()
        .code(2)
        .stderr(
            "userfetch: invalid id \"\u{fffd}7\" (argument 2): not UTF-8 text; no id was looked up (all are checked first)\n",
        );
    assert_eq!(api.stats().requests, 0);
}

#[test]
fn bad_templates_and_option_values_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .args(["get", "1", "--api", "http://127.0.0.1:1/users/"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must contain {id} exactly once"));
    userfetch(&dir)
        .args(["get", "1", "--timeout", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("'soon' is not a duration"));
    // A negative one is said to be one, not taken for an unknown option '-5'.
    userfetch(&dir)
        .args(["demo", "--latency", "-5ms"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("'-5ms' is negative"));
    // The same bound as batch's.
    userfetch(&dir)
        .args(["get", "1", "--concurrency", "100001"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "'100001' for '--concurrency <N>': must be a whole number from 1 to 100000",
        ));
    // What is wanted, not the standard library's "invalid digit found in string" or a tip
    // to write `-- -1`.
    for (args, said) in [
        (
            &["get", "1", "--retries", "x"][..],
            "'x' for '--retries <N>': must be a whole number from 0 to 1000",
        ),
        (
            &["get", "1", "--retries", "-1"],
            "'-1' for '--retries <N>': must be a whole number from 0 to 1000",
        ),
        (
            &["--threads", "0", "get", "1"],
            "'0' for '--threads <N>': must be a whole number from 1 to 1024",
        ),
        (
            &["serve", "--users", "x"],
            "'x' for '--users <N>': must be a whole number from 0 to 2^64 - 1",
        ),
        (
            &["serve", "--port", "70000"],
            "'70000' for '--port <PORT>': must be a whole number from 0 to 65535",
        ),
        (
            &["serve", "--bind", "nope"],
            "'nope' for '--bind <ADDR>': is no IP address: 127.0.0.1 (or localhost)",
        ),
        // A host written without http://: said so, not "relative URL without a base".
        (
            &["get", "1", "--api", "127.0.0.1:1/users/{id}"],
            "'127.0.0.1:1/users/{id}' names no scheme: write http://127.0.0.1:1/users/{id}",
        ),
    ] {
        let out = userfetch(&dir).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
    // Past the clock's range, "now + timeout" used to panic (exit 101).
    userfetch(&dir)
        .args(["get", "1", "--timeout", "500000000000y"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--timeout").and(predicate::str::contains(
                "'500000000000y' is longer than the 100 years accepted",
            )),
        );
    userfetch(&dir)
        .args(["get", "1", "--connect-timeout", "0s"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--connect-timeout").and(predicate::str::contains(
                "'0s' would fail every attempt at once",
            )),
        );
    userfetch(&dir)
        .args(["get", "1", "--max-body", "lots"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("'lots' is not a size"));
}

#[test]
fn options_fall_back_to_environment_variables() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .env("USERFETCH_API", api.template("fault=500"))
        .env("USERFETCH_RETRIES", "1")
        .args(["get", "8"])
        .assert()
        .code(1)
        .stderr("userfetch: user 8: server answered 500 Internal Server Error, saying \"injected fault\"; gave up after 2 attempts\n");
    // On/off options read the usual spellings: 1 is on, empty is off.
    let cache = dir.path().join("cache.sqlite3");
    for (value, used) in [("1", false), ("yes", false), ("", true), ("0", true)] {
        let _ = std::fs::remove_file(&cache);
        userfetch(&dir)
            .env("USERFETCH_API", api.template(""))
            .env("USERFETCH_NO_CACHE", value)
            .args(["get", "8"])
            .assert()
            .success();
        assert_eq!(cache.exists(), used, "USERFETCH_NO_CACHE={value:?}");
    }
}

#[test]
fn the_token_is_sent_but_never_shown() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let token = "tok-9f8e7d6c5b4a";
    for query in ["", "fault=503&fault_times=1", "fault=redirect-other-host"] {
        let out = userfetch(&dir)
            .env("USERFETCH_TOKEN", token)
            .args([
                "-vvv",
                "--no-cache",
                "get",
                "1",
                "424242",
                "--api",
                &api.template(query),
            ])
            .output()
            .unwrap();
        let all = [out.stdout, out.stderr].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains(token),
            "token printed for {query}"
        );
    }
    let sent = api
        .log()
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(&format!("Bearer {token}")))
        .count();
    assert!(sent >= 3, "the token reached the API {sent} times");
    // Read from a file with CRLF endings, or quoted with spaces: sent as the token itself.
    userfetch(&dir)
        .env("USERFETCH_TOKEN", format!(" {token}\r"))
        .args(["--no-cache", "get", "2", "--api", &api.template("")])
        .assert()
        .code(0);
    let trimmed = api
        .log()
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(&format!("Bearer {token}")))
        .count();
    assert_eq!(
        trimmed,
        sent + 1,
        "the token with spaces around was not sent trimmed"
    );
    // Only spaces: no token, as when unset.
    userfetch(&dir)
        .env("USERFETCH_TOKEN", "   ")
        .args(["--no-cache", "get", "3", "--api", &api.template("")])
        .assert()
        .code(0);
    let log = api.log();
    let last = log.last().unwrap();
    assert_eq!(last.authorization, None, "a blank token was sent");
    // A token that cannot be a header is the user's to fix: exit 2, as for any bad setting.
    userfetch(&dir)
        .env("USERFETCH_TOKEN", "a\nb")
        .args(["get", "1", "--api", &api.template("")])
        .assert()
        .code(2)
        .stderr("userfetch: USERFETCH_TOKEN contains characters not allowed in an HTTP header\n");
}

/// An API that echoes the credential it refused: the message quotes what it said, without
/// the token (it once printed "bad token: Bearer …" whole, on stderr and in the -vv log).
#[test]
fn a_token_the_api_echoes_back_is_not_repeated() {
    let api = support::answering("401 Unauthorized", |request| {
        let auth = request
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or("none");
        format!(r#"{{"message":"bad token: {auth}"}}"#)
    });
    let dir = tempfile::tempdir().unwrap();
    let token = "tok-9f8e7d6c5b4a";
    let out = userfetch(&dir)
        .env("USERFETCH_TOKEN", token)
        .args(["-vv", "--no-cache", "get", "1", "--api", &api])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("saying \"bad token: Bearer ***\""),
        "{stderr}"
    );
    assert!(!stderr.contains(token), "{stderr}");
}

/// The default cache's directory cannot be made (a file stands where it would go; a service
/// user's home is not writable): the error says how to run anyway.
#[test]
fn an_unusable_default_cache_directory_names_the_way_around_it() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let out = Command::cargo_bin("userfetch")
        .unwrap()
        .env_clear()
        .env("HOME", dir.path())
        .env("XDG_CACHE_HOME", blocker.join("cache"))
        .args(["get", "1", "--api", &api.template("")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot create the cache directory") && stderr.contains("--no-cache"),
        "{stderr}"
    );
}

/// `--pretty` indents through a parsed value, which keeps one value of a key held twice;
/// it says so, and the compact line keeps the record as sent.
#[test]
fn pretty_says_when_it_shows_one_value_of_a_key_held_twice() {
    let api = support::answering("200 OK", |_| r#"{"id":7,"name":"x","name":"y"}"#.to_owned());
    let dir = tempfile::tempdir().unwrap();
    for pretty in [false, true] {
        let mut cmd = userfetch(&dir);
        cmd.args(["--no-cache", "get", "7", "--api", &api]);
        if pretty {
            cmd.arg("--pretty");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(
            stderr
                .contains("the record holds the key \"name\" twice; --pretty shows its last value"),
            pretty,
            "{stderr}"
        );
        assert_eq!(stdout.contains("\"x\""), !pretty, "{stdout}");
    }
}

/// A CA file named in SSL_CERT_FILE replaces the system's store; one that cannot be used
/// said nothing, and every https lookup then failed as an untrusted certificate.
#[test]
fn an_unusable_ca_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "no certificate here").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, says) in [
        (&missing, "cannot be read"),
        (&not_pem, "holds no PEM certificate"),
    ] {
        let out = userfetch(&dir)
            .env("SSL_CERT_FILE", file)
            .args(["--no-cache", "--retries", "0", "get", "1"])
            .args(["--api", "https://127.0.0.1:1/users/{id}"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("SSL_CERT_FILE={} {says}", file.display())),
            "{stderr}"
        );
    }
}

#[test]
fn a_second_run_is_served_from_the_cache() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let first = userfetch(&dir)
        .args(["get", "5", "6", "--api", &api.template("")])
        .output()
        .unwrap();
    let second = userfetch(&dir)
        .args(["get", "5", "6", "--api", &api.template("")])
        .output()
        .unwrap();
    assert!(second.status.success());
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(api.stats().user_requests, 2);
    userfetch(&dir)
        .args(["get", "5", "--no-cache", "--api", &api.template("")])
        .assert()
        .success();
    assert_eq!(api.stats().user_requests, 3);
}

#[test]
fn max_age_expiry_refetches() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .args(["get", "5", "--api", &api.template("")])
        .assert()
        .success();
    std::thread::sleep(Duration::from_millis(300));
    userfetch(&dir)
        .args(["get", "5", "--max-age", "100ms", "--api", &api.template("")])
        .assert()
        .success();
    assert_eq!(api.stats().user_requests, 2);
}

#[test]
fn a_corrupt_cache_file_is_a_clear_error_and_left_alone() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3");
    std::fs::write(
        &path,
        b"this is not a database, it is a grocery list\n".repeat(100),
    )
    .unwrap();
    let before = std::fs::read(&path).unwrap();
    userfetch(&dir)
        .args(["get", "1", "--api", &api.template("")])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(format!(
            "the cache file {} is not a usable SQLite database",
            path.display()
        )));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(api.stats().requests, 0);
}

#[test]
fn another_programs_database_as_the_cache_is_refused_and_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    // Where `userfetch(&dir)` points --cache.
    let path = dir.path().join("cache.sqlite3");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE invoices (n INTEGER); INSERT INTO invoices VALUES (7);")
        .unwrap();
    drop(db);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&path).unwrap();
    userfetch(&dir)
        .args(["get", "1", "--api", &api.template("")])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(format!(
            "{} is an SQLite database but not a userfetch cache (it holds the table 'invoices', and no table 'records')",
            path.display()
        )));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(!dir.path().join("cache.sqlite3-wal").exists());
    assert_eq!(api.stats().requests, 0);
}

/// A table of the cache's name and columns but not its key (made by hand, or by another
/// program) is no cache: every record stored there would fail.
#[test]
fn a_records_table_without_the_caches_key_is_refused() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE TABLE records (namespace TEXT, id TEXT, body TEXT, fetched_ms INTEGER);",
    )
    .unwrap();
    drop(db);
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, "1\n").unwrap();
    let ids = ids.to_str().unwrap();
    for args in [
        &["get", "1"][..],
        &["batch", ids, "--out", "o.jsonl", "--dry-run"],
    ] {
        userfetch(&dir)
            .args(args)
            .args(["--api", &api.template("")])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "not a userfetch cache (it holds a table 'records' keyed otherwise than a cache's)",
            ));
    }
    assert_eq!(api.stats().requests, 0);
}

/// Another program's database in WAL mode, closed cleanly (no -wal file): reading its
/// schema read-only would leave -wal and -shm files beside it.
#[test]
fn another_programs_wal_database_gets_no_files_beside_it() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE invoices (n INTEGER);")
        .unwrap();
    drop(db);
    assert!(!dir.path().join("cache.sqlite3-wal").exists());
    userfetch(&dir)
        .args(["get", "1", "--api", &api.template("")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a userfetch cache"));
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["cache.sqlite3"]);
}

/// A file that starts like an SQLite database and then is not one is refused as one that
/// is no database at all: exit 2, with what to do.
#[test]
fn a_file_with_an_sqlite_header_and_garbage_after_is_refused_with_the_hint() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 8192));
    std::fs::write(&path, &bytes).unwrap();
    userfetch(&dir)
        .args(["get", "1", "--api", &api.template("")])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("is not a usable SQLite database")
                .and(predicate::str::contains("move it aside")),
        );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn the_cache_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .args(["get", "1", "--api", &api.template("")])
        .assert()
        .success();
    let mode = std::fs::metadata(dir.path().join("cache.sqlite3"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn hostile_text_from_the_api_is_escaped_on_stdout() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    for pretty in [false, true] {
        let mut cmd = userfetch(&dir);
        cmd.args([
            "--no-cache",
            "get",
            "1",
            "--api",
            &api.template("fault=hostile"),
        ]);
        if pretty {
            cmd.arg("--pretty");
        }
        let out = cmd.assert().success().get_output().stdout.clone();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{9b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            value["name"].as_str().unwrap().contains("\u{1b}]0;PWNED"),
            "content must be kept, escaped"
        );
    }
}

#[test]
fn without_api_the_embedded_demo_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .args(["get", "1", "2", "3"])
        .assert()
        .success()
        .stderr(predicate::str::contains("using the embedded demo API"))
        .get_output()
        .clone();
    assert_eq!(json_lines(&out.stdout).len(), 3);
    // Set but empty reads as unset.
    userfetch(&dir)
        .env("USERFETCH_API", "")
        .args(["get", "1"])
        .assert()
        .success()
        .stderr(predicate::str::contains("using the embedded demo API"));
}

/// `-v` used to log the embedded API's address beside the line that announces it. A batch
/// whose stderr is no terminal prints only its summary, but with `-v` the announcement is
/// part of the log asked for.
#[test]
fn the_embedded_demo_api_is_announced_once() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, "1\n").unwrap();
    let out_file = dir.path().join("out.jsonl");
    let batch = [
        "batch",
        ids.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ];
    for args in [
        &["get", "1", "-v"][..],
        &batch,
        &[&batch[..], &["-v"]].concat(),
    ] {
        let out = userfetch(&dir).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        let told = stderr.matches("embedded demo API at").count();
        let wanted = usize::from(args.contains(&"-v"));
        assert_eq!(told, wanted, "{args:?}: {stderr}");
    }
}

/// Spawns `serve` and reads the first line it prints (the URL template, once it listens).
fn start_serving(mut serve: Command, stderr: Stdio) -> (std::process::Child, String) {
    let mut server = serve.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (server, line)
}

#[test]
fn serve_and_get_work_from_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::cargo_bin("userfetch").unwrap();
    serve.args(["serve", "--port", "0", "--users", "50"]);
    let (mut server, line) = start_serving(serve, Stdio::null());
    let template = line.trim().to_owned();
    assert!(
        template.starts_with("http://127.0.0.1:") && template.ends_with("/users/{id}"),
        "{template}"
    );
    let got = userfetch(&dir)
        .args(["get", "50", "51", "--api", &template])
        .output();
    let _ = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status();
    let status = server.wait().unwrap();
    let got = got.unwrap();
    assert_eq!(got.status.code(), Some(1));
    assert_eq!(json_lines(&got.stdout)[0]["id"], 50);
    assert!(String::from_utf8_lossy(&got.stderr).contains("user 51: not found"));
    assert!(
        status.success(),
        "serve stops cleanly on Ctrl-C: {status:?}"
    );
}

/// `serve -v` says each request: what was asked, the status, the fault injected and how
/// long it took, so that the author of another client can see what the server did. The API
/// started inside `get` says nothing of its own at `-v`.
#[test]
fn serve_says_each_request_at_v() {
    let dir = tempfile::tempdir().unwrap();
    let stderr_file = dir.path().join("serve.err");
    let mut serve = Command::cargo_bin("userfetch").unwrap();
    serve.args([
        "serve", "-v", "--port", "0", "--users", "50", "--fault", "503=1",
    ]);
    let (mut server, line) = start_serving(
        serve,
        Stdio::from(std::fs::File::create(&stderr_file).unwrap()),
    );
    let template = line.trim().to_owned();
    let got = userfetch(&dir)
        .args(["get", "7", "--retries", "0", "--api", &template])
        .output()
        .unwrap();
    // A client that gives up before the answer (here in a 5 s latency) is said too.
    let address = template
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /users/8?latency=5s HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    // Closed once the server has the request (its count went up), not before: a request
    // whose connection is closed before it is read is never started, nor said.
    let user_requests = || {
        let mut stats = std::net::TcpStream::connect(&address).unwrap();
        std::io::Write::write_all(
            &mut stats,
            b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stats, &mut answer).unwrap();
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("{}").to_owned();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["user_requests"]
            .as_u64()
            .unwrap_or(0)
    };
    let given_up = "GET /users/8?latency=5s given up by the client after ";
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while user_requests() < 2 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stream);
    while !std::fs::read_to_string(&stderr_file)
        .unwrap()
        .contains(given_up)
        && std::time::Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status();
    server.wait().unwrap();
    assert_eq!(got.status.code(), Some(1));
    let said = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(said.contains(given_up), "{said}");
    assert!(
        said.lines()
            .any(|l| l.contains("GET /users/7 503 (fault 503) in ")),
        "{said}"
    );
    // The embedded API of a `get -v`: only the lookup's own lines.
    let embedded = userfetch(&dir).args(["get", "7", "-v"]).output().unwrap();
    let text = String::from_utf8_lossy(&embedded.stderr);
    assert!(!text.contains("GET /users/7"), "{text}");
}

/// A port another program holds: said with what to do about it. `--bind localhost` is
/// taken for the loopback address.
#[test]
fn serve_on_a_taken_port_says_how_to_pick_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::cargo_bin("userfetch")
        .unwrap()
        .args(["serve", "--bind", "localhost", "--port", &port])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("userfetch: cannot listen on 127.0.0.1:{port}: "))
            && stderr.ends_with(
                " (another program listens there: choose another --port, or --port 0 for a free one)\n"
            ),
        "{stderr}"
    );
}

/// Bound to every address, serve printed `http://0.0.0.0:PORT/…`, which names no host to
/// connect to: the template names loopback, and the note says it listens everywhere.
#[test]
fn serve_on_every_address_prints_a_template_to_connect_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::cargo_bin("userfetch").unwrap();
    serve.args(["serve", "--bind", "0.0.0.0", "--port", "0", "--users", "5"]);
    let (server, line) = start_serving(serve, Stdio::piped());
    let template = line.trim().to_owned();
    let got = userfetch(&dir)
        .args(["--no-cache", "get", "5", "--api", &template])
        .output();
    let _ = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status();
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(template.starts_with("http://127.0.0.1:"), "{template}");
    assert_eq!(json_lines(&got.unwrap().stdout)[0]["id"], 5);
    assert!(
        stderr.contains(
            "and on every IPv4 address of this machine (bound to 0.0.0.0; Ctrl-C stops it)"
        ),
        "{stderr}"
    );
}

/// Waits until the API has seen `requests` lookups (so they are really in flight), then
/// sends `child` SIGINT and waits for it.
fn interrupt_once_requested(
    api: &TestApi,
    requests: u64,
    child: std::process::Child,
) -> std::process::Output {
    signal_once_requested(api, requests, child, "-INT")
}

/// The same with another signal (`-TERM`, `-HUP`).
fn signal_once_requested(
    api: &TestApi,
    requests: u64,
    child: std::process::Child,
    signal: &str,
) -> std::process::Output {
    for _ in 0..200 {
        if api.stats().user_requests >= requests {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    child.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_sigterm_and_sighup_exit_130() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    for (n, signal) in ["-INT", "-TERM", "-HUP"].into_iter().enumerate() {
        let mut get = userfetch(&dir);
        get.args(["get", "1", "--api", &api.template("latency=30s")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SIGHUP back to its default, should the tests run under nohup. SAFETY: between
        // fork and exec, signal(2) only sets this process's disposition.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut get, || {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = get.spawn().unwrap();
        let out = signal_once_requested(&api, n as u64 + 1, child, signal);
        assert_eq!(out.status.code(), Some(130), "{signal}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "userfetch: interrupted; 1 id left without an answer: 1\n"
        );
    }
}

#[test]
fn ctrl_c_prints_what_arrived_and_names_what_did_not() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let template = api.template("latency=30s");
    // Id 2 is cached, so its record is ready at once, held behind id 1 (30 s at the API).
    let namespace = userfetch::client::UrlTemplate::parse(&template)
        .unwrap()
        .as_str()
        .to_owned();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let cache = userfetch::cache::Cache::open(&dir.path().join("cache.sqlite3")).unwrap();
        let record = userfetch::record::Record::from_body(br#"{"id":2,"name":"cached"}"#);
        cache
            .put_durable(&namespace, "2", record.unwrap())
            .await
            .unwrap();
        cache.close().await.unwrap();
    });
    // Id 1 given twice is named once.
    let child = userfetch(&dir)
        .args(["get", "1", "2", "3", "1", "--api", &template])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = interrupt_once_requested(&api, 2, child);
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "userfetch: interrupted; 2 ids left without an answer: 1, 3\n"
    );
    let printed = json_lines(&out.stdout);
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(printed[0]["name"], "cached");
}

/// As in batch: more lookups over HTTP/1.1 than the open-file limit allows are not turned
/// into "Too many open files" failures.
#[test]
fn get_fits_its_concurrency_to_the_open_file_limit() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (1..=300).map(|n| n.to_string()).collect();
    let mut cmd = userfetch(&dir);
    cmd.args([
        "get",
        "--concurrency",
        "1000",
        "--api",
        &api.template("latency=300ms"),
    ])
    .args(&ids);
    support::limit_open_files(&mut cmd, 100);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("1000 lookups at a time (--concurrency)")
            && stderr.contains("the open-file limit is 100: running 34 at a time"),
        "{stderr}"
    );
    assert_eq!(json_lines(&out.stdout).len(), 300);

    // Fewer ids than the limit allows: nothing lowered, nothing said.
    let mut cmd = userfetch(&dir);
    cmd.args(["get", "--concurrency", "1000", "--api", &api.template("")])
        .args(&ids[..30]);
    support::limit_open_files(&mut cmd, 100);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(json_lines(&out.stdout).len(), 30);

    // Copies share their id's lookup and open no socket: 300 ids, 30 of them distinct, fit.
    // (`-c` as batch has it.)
    let copies: Vec<&String> = ids[..30].iter().cycle().take(300).collect();
    let mut cmd = userfetch(&dir);
    cmd.args(["get", "-c", "1000", "--api", &api.template("")])
        .args(copies);
    support::limit_open_files(&mut cmd, 100);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(json_lines(&out.stdout).len(), 300);
}

/// With the embedded demo API in the process, each HTTP/1.1 lookup holds up to four of its
/// files (both ends of up to two connections): the limit leaves room for both, and no lookup fails for
/// want of a file.
#[test]
fn get_fits_its_concurrency_to_the_open_file_limit_with_the_api_in_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (1..=100).map(|n| n.to_string()).collect();
    let mut cmd = userfetch(&dir);
    cmd.args(["--no-cache", "--http1", "get", "--concurrency", "1000"])
        .args(&ids);
    support::limit_open_files(&mut cmd, 100);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("need up to four sockets each with the demo API in the process")
            && stderr.contains("the open-file limit is 100: running 17 at a time"),
        "{stderr}"
    );
    assert!(!stderr.contains("accept failed"), "{stderr}");
    assert_eq!(json_lines(&out.stdout).len(), 100);
}

/// Records `get` cannot store (the disk full; here a file-size limit) are said once, not
/// only in the debug log, and every record is still printed.
#[test]
fn get_says_when_the_cache_cannot_take_records() {
    use std::os::unix::process::CommandExt;
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .args(["--api", &api.template(""), "get", "1"])
        .assert()
        .success();
    let ids: Vec<String> = (2..=1000).map(|n| n.to_string()).collect();
    let mut cmd = userfetch(&dir);
    cmd.args(["--api", &api.template(""), "get"]).args(&ids);
    // SAFETY: signal and setrlimit are async-signal-safe, and nothing else runs between
    // fork and exec. Past the limit a write fails (EFBIG) instead of killing the process.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 200_000,
                rlim_max: 200_000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(json_lines(&out.stdout).len(), 999);
    assert_eq!(
        stderr
            .matches("userfetch: cannot store records in the cache file (")
            .count(),
        1,
        "{stderr}"
    );
}

/// --help shows the variables' values, but not USERFETCH_API's: a URL may hold a password.
#[test]
fn help_does_not_show_the_api_url_from_the_environment() {
    let out = Command::cargo_bin("userfetch")
        .unwrap()
        .env_clear()
        .env("USERFETCH_API", "http://u:PASSWD@127.0.0.1:1/{id}")
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        help.contains("[env: USERFETCH_API]") && !help.contains("PASSWD"),
        "{help}"
    );
}

#[test]
fn completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    userfetch(&dir)
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("userfetch"));
}

/// The long options a fish completion script offers after `userfetch SUBCOMMAND`.
fn fish_offers(script: &str, subcommand: &str) -> Vec<String> {
    let condition = format!("\"__fish_userfetch_using_subcommand {subcommand}\"");
    script
        .lines()
        .filter(|line| line.contains(&condition))
        .filter_map(|line| line.split(" -l ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn completions_offer_each_command_only_the_options_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let fish = userfetch(&dir)
        .args(["completions", "fish"])
        .output()
        .unwrap();
    let fish = String::from_utf8(fish.stdout).unwrap();
    let serve = fish_offers(&fish, "serve");
    assert!(serve.contains(&"latency".to_owned()), "{serve:?}");
    for refused in ["api", "timeout", "retries", "cache", "http2"] {
        assert!(
            !serve.contains(&refused.to_owned()),
            "serve offers --{refused}: {serve:?}"
        );
    }
    let demo = fish_offers(&fish, "demo");
    assert!(!demo.contains(&"api".to_owned()), "{demo:?}");
    assert!(demo.contains(&"timeout".to_owned()), "{demo:?}");
    for fetching in ["get", "batch", "ui"] {
        let offered = fish_offers(&fish, fetching);
        for option in ["api", "timeout", "http2", "threads"] {
            assert!(
                offered.contains(&option.to_owned()),
                "{fetching}: {offered:?}"
            );
        }
    }

    let bash = userfetch(&dir)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let bash = String::from_utf8(bash.stdout).unwrap();
    let serve_opts = bash
        .split("userfetch__subcmd__serve)")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.trim_start().starts_with("opts=")))
        .unwrap();
    assert!(serve_opts.contains("--latency"), "{serve_opts}");
    assert!(!serve_opts.contains("--api"), "{serve_opts}");
    assert!(!serve_opts.contains("--timeout"), "{serve_opts}");
}

#[test]
fn a_bad_value_from_the_environment_names_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .env("USERFETCH_TIMEOUT", "abc")
        .args(["get", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'abc'"), "{stderr}");
    assert!(stderr.contains("USERFETCH_TIMEOUT"), "{stderr}");
    // Every bad variable at once, under the usage of the command that reads them.
    let out = userfetch(&dir)
        .env("USERFETCH_TIMEOUT", "abc")
        .env("USERFETCH_RETRIES", "many")
        .args(["get", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("comes from USERFETCH_TIMEOUT"), "{stderr}");
    assert!(stderr.contains("comes from USERFETCH_RETRIES"), "{stderr}");
    assert!(stderr.contains("Usage: userfetch get "), "{stderr}");
    let out = userfetch(&dir)
        .env("USERFETCH_API", "http://x")
        .args(["get", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in USERFETCH_API: "), "{stderr}");
    // Typed on the command line, it is not blamed on the variable.
    let out = userfetch(&dir)
        .args(["--timeout", "abc", "get", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("USERFETCH_TIMEOUT"), "{stderr}");
}

#[test]
fn a_typed_option_wins_over_a_bad_value_in_its_variable() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let with_bad_variables = || {
        let mut cmd = userfetch(&dir);
        cmd.env("USERFETCH_API", api.template(""))
            .env("USERFETCH_TIMEOUT", "abc")
            .env("USERFETCH_RETRIES", "x");
        cmd
    };
    for typed in [
        &["get", "8", "--timeout", "5s", "--retries", "0"][..],
        &["--timeout", "5s", "get", "8", "--retries", "0"],
    ] {
        let out = with_bad_variables().args(typed).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{typed:?}: {out:?}");
        assert_eq!(json_lines(&out.stdout)[0]["id"], 8);
    }
    // completions use no option: no variable stops them.
    with_bad_variables()
        .env("USERFETCH_THREADS", "0")
        .args(["completions", "bash"])
        .assert()
        .success();
    // Typing one of them leaves the other to be named.
    with_bad_variables()
        .args(["get", "8", "--timeout", "5s"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "invalid value 'x' for '--retries <N>'",
        ))
        .stderr(predicate::str::contains("comes from USERFETCH_RETRIES"));
}

/// A cache path whose directory is missing (a typo, as often as not) is refused, not built:
/// an empty cache there would look like every earlier run's progress gone. The default
/// location's directory is made on first use (below).
#[test]
fn a_cache_path_in_a_missing_directory_is_refused() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo/sub/c.sqlite3");
    std::fs::write(dir.path().join("ids.txt"), "1\n").unwrap();
    for command in [
        &["get", "1"][..],
        &["batch", "ids.txt", "--out", "o.jsonl"],
        &["batch", "ids.txt", "--out", "o.jsonl", "--dry-run"],
    ] {
        Command::cargo_bin("userfetch")
            .unwrap()
            .env_clear()
            .current_dir(dir.path())
            .args([
                "--api",
                &api.template(""),
                "--cache",
                typo.to_str().unwrap(),
            ])
            .args(command)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains(format!(
                "cannot open the cache file {}: its directory does not exist",
                typo.display()
            )));
    }
    assert!(!dir.path().join("typo").exists());
    assert!(!dir.path().join("o.jsonl").exists());
    assert_eq!(api.stats().requests, 0);
}

#[test]
fn an_empty_variable_counts_as_unset_and_a_switch_is_on_or_off() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let with_variables = |vars: &[(&str, &str)]| {
        let mut cmd = Command::cargo_bin("userfetch").unwrap();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("XDG_CACHE_HOME", dir.path())
            .env("USERFETCH_API", api.template(""))
            .envs(vars.iter().copied())
            .args(["get", "8"])
            .stdin(Stdio::null());
        cmd
    };
    let empty = [
        ("USERFETCH_CACHE", ""),
        ("USERFETCH_TIMEOUT", ""),
        ("USERFETCH_NO_CACHE", ""),
        ("USERFETCH_HTTP2", ""),
    ];
    let out = with_variables(&empty).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_lines(&out.stdout)[0]["id"], 8);
    // The default cache, used: USERFETCH_NO_CACHE= is off.
    assert!(dir.path().join("userfetch/cache.sqlite3").is_file());

    // Only spaces count as unset too: no cache file named " " where the command runs, no
    // "value was empty" for the duration, no "neither on nor off" for the switch.
    let cwd = tempfile::tempdir().unwrap();
    let blank = [
        ("USERFETCH_CACHE", " "),
        ("USERFETCH_TIMEOUT", "  "),
        ("USERFETCH_NO_CACHE", " "),
        ("USERFETCH_HTTP2", "\t"),
    ];
    let out = with_variables(&blank)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_lines(&out.stdout)[0]["id"], 8);
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "a file was made in the working directory"
    );

    for on in ["1", "true", "ON", "yes"] {
        let out = with_variables(&[("USERFETCH_HTTP2", on)]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{on}: {out:?}");
    }
    with_variables(&[("USERFETCH_HTTP2", "maybe")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("'maybe' is neither on"))
        .stderr(predicate::str::contains("comes from USERFETCH_HTTP2"));
    with_variables(&[("USERFETCH_NO_CACHE", "nope")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("comes from USERFETCH_NO_CACHE"));
}

#[test]
fn serve_ignores_bad_values_in_the_fetching_variables() {
    let mut serve = Command::cargo_bin("userfetch").unwrap();
    serve
        .env("USERFETCH_TIMEOUT", "abc")
        .env("USERFETCH_RETRIES", "many")
        .args(["serve", "--port", "0", "--users", "5"]);
    let (server, line) = start_serving(serve, Stdio::piped());
    let _ = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status();
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(line.ends_with("/users/{id}\n"), "{line:?} {stderr}");
    assert!(out.status.success(), "{:?} {stderr}", out.status);
    // A fetching option typed after serve is still refused, bad variables or not.
    Command::cargo_bin("userfetch")
        .unwrap()
        .env("USERFETCH_TIMEOUT", "abc")
        .args(["serve", "--retries", "3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--retries is for the commands that fetch",
        ));
}

#[test]
fn completions_into_a_closed_pipe_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = userfetch(&dir)
            .args(["completions", shell])
            .stdout(support::closed_pipe())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{shell}: {stderr}");
        assert_eq!(stderr, "", "{shell}: the reader left; nothing to report");
    }
}

/// clap's own exit drops a failed write of the help: `--help > /dev/full` exited 0 silently.
#[test]
fn help_that_cannot_be_written_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["--version"], &["batch", "--help"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = userfetch(&dir).args(args).stdout(full).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("userfetch: cannot write to stdout: "),
            "{args:?}: {stderr}"
        );
        // A reader that left early is no error.
        let out = userfetch(&dir)
            .args(args)
            .stdout(support::closed_pipe())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}

/// demo keeps no cache, so a bad cache variable is no matter to it (as serve ignores the
/// fetching ones); it used to stop demo with exit 2.
#[test]
fn demo_ignores_a_bad_value_in_a_cache_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("userfetch")
        .unwrap()
        .env_clear()
        .env("HOME", dir.path())
        .env("USERFETCH_MAX_AGE", "abc")
        .args(["demo", "--latency", "10ms", "--lookups", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `args` print as help. It is wrapped to the terminal's width: whitespace runs are
/// folded to one space, for comparing.
fn help(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn help_explains_every_option_with_its_default() {
    let help = help(&["get", "--help"]);
    for expected in [
        "--max-retry-wait <DURATION>",
        // An unset variable without the `=` that read as a typo.
        "[env: USERFETCH_MAX_RETRY_WAIT] [default: 30s]",
        "[env: USERFETCH_TIMEOUT] [default: 10s]",
        "[env: USERFETCH_RETRIES] [default: 3]",
        "[env: USERFETCH_MAX_BODY] [default: 1MiB]",
        "[env: USERFETCH_MAX_AGE] [default: 1h]",
        "--concurrency <N> Lookups in flight at once (1 to 100000) [default: 16]",
        "written as 500ms, 10s or 1m (every DURATION is)",
    ] {
        assert!(help.contains(expected), "missing {expected:?} in: {help}");
    }
    // A command's own options come first, under their own heading: batch's were lost among
    // the dozen shared ones.
    let own = help.find("--concurrency <N>").unwrap();
    let shared = help.find("Options for every command:").unwrap();
    assert!(
        own < shared && shared < help.find("--timeout <DURATION>").unwrap(),
        "{help}"
    );
    assert!(
        self::help(&["completions", "--help"])
            .contains("bash: userfetch completions bash > ~/.local/share/bash-completion/completions/userfetch"),
        "completions --help says how to install them"
    );
    // The program's version, asked of a subcommand too (it said "userfetch-get 0.1.0").
    for asked in [&["-V"][..], &["get", "-V"], &["batch", "--version"]] {
        assert_eq!(
            self::help(asked),
            format!("userfetch {}", env!("CARGO_PKG_VERSION")),
            "{asked:?}"
        );
    }
    let top = self::help(&["--help"]);
    assert!(
        top.contains("a DURATION is written 500ms, 2s, 1m or 1h 30m; a SIZE 4096 (bytes)"),
        "{top}"
    );
    // A variable that is set shows its value: what this shell has set.
    let dir = tempfile::tempdir().unwrap();
    let out = userfetch(&dir)
        .env("USERFETCH_TIMEOUT", "3s")
        .args(["get", "--help"])
        .output()
        .unwrap();
    let set = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        set.contains("[env: USERFETCH_TIMEOUT=3s] [default: 10s]"),
        "{set}"
    );
}

#[test]
fn batch_help_says_how_to_resume_and_to_stop() {
    for asked in [["batch", "--help"], ["help", "batch"]] {
        let help = help(&asked);
        for expected in [
            "kill -9, run the same command again",
            "Ctrl-C once: stop taking new ids",
            "every record the job found, earlier runs' too",
            "1 some failed (or an output could not be written at the end, the disk under the cache file is full, or another process held a new cache file while it was being set up)",
        ] {
            assert!(
                help.contains(expected),
                "{asked:?}: missing {expected:?} in: {help}"
            );
        }
    }
}

#[test]
fn serve_refuses_fault_shares_it_could_not_keep() {
    for (faults, said) in [
        (["500=0.5", "500=0.6"], "--fault 500 is given twice"),
        (["500=0.6", "503=0.6"], "--fault shares add up to 1.2"),
    ] {
        assert_cmd::Command::cargo_bin("userfetch")
            .unwrap()
            .args([
                "serve", "--port", "0", "--fault", faults[0], "--fault", faults[1],
            ])
            // Not refused, it would serve until killed.
            .timeout(Duration::from_secs(10))
            .assert()
            .code(2)
            .stderr(predicate::str::contains(said));
    }
}
