//! The client against the real demo API: every fault mode ends in the right error kind after
//! the right number of attempts, counted by the server itself.

mod common;

use std::time::{Duration, Instant};

use common::{TestApi, id};
use userfetch::client::{Client, ClientConfig, ErrorKind, FetchError, Fetched, UrlTemplate};

async fn fetch(client: &Client, user: &str) -> Result<Fetched, FetchError> {
    client.fetch(&id(user), &mut |_| {}).await
}

#[tokio::test]
async fn found_user_is_one_request() {
    let api = TestApi::start();
    let got = fetch(&api.client("", 3), "42").await.unwrap();
    assert_eq!(got.record.to_value()["id"], 42);
    assert_eq!(got.attempts, 1);
    assert_eq!(api.stats().user_requests, 1);
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let api = TestApi::start();
    let err = fetch(&api.client("", 3), "10001").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.attempts, 1);
    assert_eq!(api.stats().user_requests, 1);
}

/// Only an id written as the number of a user finds it: "007", "+7" and " 7" are ids of their
/// own, and answered with user 7 they would put one user in a batch's output twice.
#[tokio::test]
async fn only_the_plain_number_of_a_user_finds_it() {
    let api = TestApi::start();
    let client = api.client("", 1);
    assert_eq!(
        fetch(&client, "7").await.unwrap().record.to_value()["id"],
        7
    );
    for other in ["007", "+7", "7.0", "0", "07"] {
        let err = fetch(&client, other).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{other}");
    }
}

/// A fault that alters the user's body has none to alter for an id the API does not know:
/// that is a 404 as without it, not a made-up user (the hostile fault used to answer with
/// user 1 under any id), and it is not counted as a fault.
#[tokio::test]
async fn faults_that_alter_the_body_leave_an_unknown_id_not_found() {
    let api = TestApi::start();
    for fault in ["hostile", "truncate", "oversize", "drip"] {
        let client = api.client(&format!("fault={fault}"), 0);
        let err = fetch(&client, "10001").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{fault}: {err}");
    }
    assert_eq!(api.stats().faults, 0);
    let hostile = fetch(&api.client("fault=hostile", 0), "7").await.unwrap();
    assert_eq!(hostile.record.to_value()["id"], 7);
    assert_eq!(api.stats().faults, 1);
}

/// (fault query, expected kind, attempts with 2 retries)
const FAILING: &[(&str, ErrorKind, u32)] = &[
    ("fault=500", ErrorKind::ServerError, 3),
    ("fault=503", ErrorKind::ServerError, 3),
    ("fault=429&retry_after=0s", ErrorKind::RateLimited, 3),
    ("fault=429-date&retry_after=0s", ErrorKind::RateLimited, 3),
    ("fault=close", ErrorKind::Connection, 3),
    ("fault=truncate", ErrorKind::BadBody, 3),
    ("fault=malformed", ErrorKind::BadBody, 1),
    ("fault=oversize", ErrorKind::TooLarge, 1),
];

#[tokio::test]
async fn every_fault_mode_gives_its_kind_and_attempt_count() {
    for &(query, kind, attempts) in FAILING {
        let api = TestApi::start();
        let err = fetch(&api.client(query, 2), "1").await.unwrap_err();
        assert_eq!((err.kind, err.attempts), (kind, attempts), "{query}: {err}");
        assert_eq!(
            api.stats().user_requests,
            u64::from(attempts),
            "{query}: server count"
        );
    }
}

#[tokio::test]
async fn messages_say_what_happened_and_how_often() {
    let api = TestApi::start();
    let err = fetch(&api.client("fault=503", 3), "1").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "server answered 503 Service Unavailable, saying \"injected fault\"; gave up after 4 attempts"
    );
    // What the API's error says is worth more than its status line.
    let err = fetch(&api.client("fault=bogus", 0), "1").await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("server answered 400 Bad Request, saying \"unknown fault 'bogus'"),
        "{err}"
    );
    let err = fetch(&api.client("fault=oversize", 3), "1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--max-body"), "{err}");
}

/// A 503 without Retry-After asks for a slower pace without saying how slow: the retry waits
/// at least half the backoff, never next to nothing.
#[tokio::test]
async fn a_push_back_without_retry_after_waits_half_the_backoff_at_least() {
    let api = TestApi::start();
    let mut config = api.config("fault=503&fault_times=1", 1);
    config.retry.base = Duration::from_millis(400);
    let client = Client::new(config).unwrap();
    let lookups = (1..=6).map(|n| {
        let client = &client;
        async move {
            let started = Instant::now();
            let got = fetch(client, &n.to_string()).await.unwrap();
            assert_eq!(got.attempts, 2);
            started.elapsed()
        }
    });
    for took in futures::future::join_all(lookups).await {
        assert!(took >= Duration::from_millis(200), "retried after {took:?}");
    }
}

#[tokio::test]
async fn a_transient_fault_is_retried_until_it_succeeds() {
    let api = TestApi::start();
    let got = fetch(&api.client("fault=503&fault_times=2", 3), "7")
        .await
        .unwrap();
    assert_eq!(got.attempts, 3);
    assert_eq!(got.record.to_value()["id"], 7);
    assert_eq!(api.stats().user_requests, 3);
}

#[tokio::test]
async fn retry_notices_report_each_wait() {
    let api = TestApi::start();
    let mut notices = Vec::new();
    let client = api.client("fault=close&fault_times=2", 3);
    client
        .fetch(&id("1"), &mut |n| {
            notices.push((n.failed_attempt, n.max_attempts, n.error.kind))
        })
        .await
        .unwrap();
    assert_eq!(
        notices,
        vec![(1, 4, ErrorKind::Connection), (2, 4, ErrorKind::Connection)]
    );
}

#[tokio::test]
async fn retry_after_is_respected() {
    let api = TestApi::start();
    let started = Instant::now();
    let got = fetch(
        &api.client("fault=429&retry_after=1s&fault_times=1", 3),
        "1",
    )
    .await
    .unwrap();
    assert_eq!(got.attempts, 2);
    // The client's own backoff is 10 ms here; only the header explains a wait near a second.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retry_after_is_capped_by_max_retry_wait() {
    let api = TestApi::start();
    let mut config = api.config("fault=429&retry_after=1h&fault_times=1", 3);
    config.retry.max_wait = Duration::from_millis(100);
    let mut waits = Vec::new();
    let got = Client::new(config)
        .unwrap()
        .fetch(&id("1"), &mut |n| waits.push(n.delay))
        .await
        .unwrap();
    assert_eq!(got.attempts, 2);
    assert_eq!(waits, vec![Duration::from_millis(100)]);
}

#[tokio::test]
async fn retries_stop_once_the_next_would_start_past_the_time_limit() {
    let api = TestApi::start();
    // Every answer is a 429 asking for a 2 s wait; ten retries are allowed. The second
    // attempt starts at ~2 s (within 3 s, even a second late); a third could not start
    // before ~4 s.
    let mut config = api.config("fault=429&retry_after=2s", 10);
    config.retry.max_time = Duration::from_secs(3);
    let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
    assert_eq!((err.kind, err.attempts), (ErrorKind::RateLimited, 2));
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "retries stopped at --retry-max-time (3s; the API asked to wait 2s): rate limited"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let api = TestApi::start();
    let mut config = api.config("latency=3s", 1);
    config.timeout = Duration::from_millis(300);
    let err = Client::new(config)
        .unwrap()
        .fetch(&id("1"), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!((err.kind, err.attempts), (ErrorKind::Timeout, 2), "{err}");
    assert_eq!(api.stats().user_requests, 2);
}

#[tokio::test]
async fn a_dripping_body_times_out() {
    let api = TestApi::start();
    let mut config = api.config("fault=drip", 0);
    config.timeout = Duration::from_millis(400);
    let err = Client::new(config)
        .unwrap()
        .fetch(&id("1"), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!((err.kind, err.attempts), (ErrorKind::Timeout, 1), "{err}");
}

#[tokio::test]
async fn the_body_cap_is_enforced_while_streaming() {
    let api = TestApi::start();
    let mut config = api.config("", 0);
    config.max_body = 100; // a normal user is ~400 bytes
    let err = Client::new(config)
        .unwrap()
        .fetch(&id("1"), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
    assert!(
        err.to_string()
            .contains("larger than the limit of 100 bytes (raise it with --max-body)"),
        "{err}"
    );
}

/// Fetches user 5 through a redirect with a token set; returns what the server logged.
async fn follow_redirect_with_token(query: &str) -> Vec<userfetch::server::LoggedRequest> {
    follow_redirect(query, false).await
}

async fn follow_redirect(query: &str, http2: bool) -> Vec<userfetch::server::LoggedRequest> {
    let api = TestApi::start();
    let mut config = api.config(query, 0);
    config.token = Some("s3cret-token".into());
    config.http2 = http2;
    let got = Client::new(config)
        .unwrap()
        .fetch(&id("5"), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(got.record.to_value()["id"], 5);
    let log = api.log();
    assert_eq!(log.len(), 2, "redirect and target: {log:?}");
    log
}

#[tokio::test]
async fn same_host_redirects_are_followed_with_the_token() {
    let log = follow_redirect_with_token("fault=redirect").await;
    for request in &log {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer s3cret-token")
        );
    }
}

#[tokio::test]
async fn the_token_is_not_forwarded_to_another_host() {
    let log = follow_redirect_with_token("fault=redirect-other-host").await;
    assert_eq!(log[0].authorization.as_deref(), Some("Bearer s3cret-token"));
    let target_host = log[1].host.as_deref().unwrap_or("");
    assert!(target_host.starts_with("localhost:"), "{log:?}");
    assert_eq!(
        log[1].authorization, None,
        "token leaked across hosts: {log:?}"
    );
}

#[tokio::test]
async fn over_http2_a_redirect_is_followed_from_its_target_with_the_token_kept_home() {
    let same = follow_redirect("fault=redirect", true).await;
    assert!(
        same.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer s3cret-token"))
    );
    assert!(same[1].path_and_query.starts_with("/users/5"), "{same:?}");
    let other = follow_redirect("fault=redirect-other-host", true).await;
    assert_eq!(
        other[0].authorization.as_deref(),
        Some("Bearer s3cret-token")
    );
    assert!(
        other[1]
            .host
            .as_deref()
            .unwrap_or("")
            .starts_with("localhost:"),
        "{other:?}"
    );
    assert_eq!(
        other[1].authorization, None,
        "token leaked across hosts: {other:?}"
    );
    // HTTP/2 without asking goes to the API's origin only: whether another host speaks it
    // was never asked (an HTTP/1.1-only one failed with "frame with invalid size").
    assert!(same.iter().all(|r| r.http2), "{same:?}");
    assert!(other[0].http2 && !other[1].http2, "{other:?}");
}

#[tokio::test]
async fn hostile_ids_stay_one_encoded_path_segment() {
    let api = TestApi::start();
    let client = api.client("", 0);
    let cases = [
        ("a/b", "/users/a%2Fb"),
        ("1?x=y", "/users/1%3Fx%3Dy"),
        ("#", "/users/%23"),
        ("%", "/users/%25"),
        ("%2e%2e", "/users/%252e%252e"),
        ("a b", "/users/a%20b"),
        ("ü", "/users/%C3%BC"),
        ("../admin", "/users/..%2Fadmin"),
    ];
    for (raw, _) in cases {
        let err = fetch(&client, raw).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{raw}");
    }
    let seen: Vec<String> = api.log().into_iter().map(|r| r.path_and_query).collect();
    let want: Vec<&str> = cases.iter().map(|(_, path)| *path).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn https_to_a_plain_http_server_says_so() {
    let api = TestApi::start();
    let template = format!("https://127.0.0.1:{}/users/{{id}}", api.port());
    let mut config = ClientConfig::new(UrlTemplate::parse(&template).unwrap());
    config.retry.retries = 0;
    let err = Client::new(config)
        .unwrap()
        .fetch(&id("1"), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{err}");
    assert!(
        err.to_string()
            .contains("the server does not seem to speak TLS: is the API http://?"),
        "{err}"
    );
}

#[tokio::test]
async fn connection_refused_is_a_connection_error() {
    // Port 1 on loopback: nothing listens there, and no test can bind it by chance.
    let port = 1;
    let template = format!("http://127.0.0.1:{port}/users/{{id}}");
    let mut config = userfetch::client::ClientConfig::new(
        userfetch::client::UrlTemplate::parse(&template).unwrap(),
    );
    config.retry.retries = 1;
    config.retry.base = Duration::from_millis(5);
    let err = Client::new(config)
        .unwrap()
        .fetch(&id("1"), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.attempts),
        (ErrorKind::Connection, 2),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn health_reports_latency() {
    let api = TestApi::start();
    let latency = api.client("", 0).health().await.unwrap();
    assert!(latency < Duration::from_secs(5));
    assert_eq!(api.log()[0].path_and_query, "/health");
}

#[tokio::test]
async fn cleartext_http2_carries_many_lookups() {
    let api = TestApi::start();
    let mut config = api.config("", 0);
    config.http2 = true;
    let client = Client::new(config).unwrap();
    let lookups = (1..=200).map(|n| {
        let client = client.clone();
        async move { fetch(&client, &n.to_string()).await }
    });
    let results = futures::future::join_all(lookups).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(api.stats().user_requests, 200);
}

#[tokio::test]
async fn both_transports_ask_for_the_same_resource_for_an_untidy_template() {
    let api = TestApi::start();
    // A stray space, a dot segment, and a space in the query.
    let untidy = format!(
        " {} ",
        api.template("a=b c").replace("/users/", "/./users/")
    );
    for http2 in [false, true] {
        let config = ClientConfig {
            http2,
            ..ClientConfig::new(UrlTemplate::parse(&untidy).unwrap())
        };
        let got = fetch(&Client::new(config).unwrap(), "1").await;
        assert!(got.is_ok(), "http2={http2}: {got:?}");
    }
    let paths: Vec<String> = api.log().into_iter().map(|r| r.path_and_query).collect();
    assert_eq!(paths, ["/users/1?a=b%20c", "/users/1?a=b%20c"]);
}

/// A bare HTTP/1.1 server answering every request with `head` (status line and headers);
/// returns its port and how many requests it has read.
fn answering_server(head: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    raw_server(format!("{head}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes())
}

/// A server writing `answer` back to every request it reads, then closing; returns its port
/// and how many requests it has read.
fn raw_server(answer: Vec<u8>) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.read(&mut [0; 4096]);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(&answer);
        }
    });
    (port, seen)
}

/// An HTTP/1.1 server that keeps connections open and answers every request with `head`
/// and a short body; counts the connections it accepted.
fn keep_alive_server(head: &'static str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    // Read one request head, then answer it.
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let body = "nothing here ".repeat(2000);
                    let _ = write!(
                        stream,
                        "{head}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
        }
    });
    (port, connections)
}

#[tokio::test]
async fn not_found_answers_leave_the_connection_open_for_the_next_request() {
    let (port, connections) = keep_alive_server("HTTP/1.1 404 Not Found");
    let client = client_for(port);
    for id in ["1", "2", "3"] {
        let err = fetch(&client, id).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An HTTP/1.1 server whose every answer is `head` with a body promised 1,000 bytes long and
/// cut after the first few, the connection left open: a body that never ends.
fn unending_body_server(head: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let _ = stream.read(&mut [0; 4096]);
            let _ = write!(
                stream,
                "{head}\r\nContent-Length: 1000\r\n\r\n{{\"error\": \"no"
            );
            open.push(stream);
        }
    });
    port
}

/// The status decides an error answer, not how its body arrives: a 404 whose body never
/// ends is not found (not a timeout, retried), and a 429's Retry-After still counts.
#[tokio::test]
async fn an_error_answer_whose_body_never_ends_keeps_its_status() {
    let port = unending_body_server("HTTP/1.1 404 Not Found");
    let mut config = config_for(port);
    config.timeout = Duration::from_secs(5);
    config.retry.retries = 2;
    let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert_eq!(err.attempts, 1, "{err}");

    let port = unending_body_server("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0");
    let mut config = config_for(port);
    config.timeout = Duration::from_secs(5);
    let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited, "{err}");
}

/// A port of this machine whose accept queue is full: further connection attempts are
/// dropped, as a host behind a firewall that drops them does, and wait out the connect
/// timeout. Keep what it returns alive while the port is used.
fn dropping_port() -> (u16, std::os::fd::OwnedFd, Vec<std::net::TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor made here and owned by the OwnedFd, with
    // pointers to locals that outlive each call.
    let (fd, port) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0);
        // The smallest queue there is: a connection or two fill it.
        assert_eq!(libc::listen(fd, 0), 0);
        let mut bound = len;
        assert_eq!(
            libc::getsockname(fd, (&raw mut addr).cast(), &raw mut bound),
            0
        );
        (
            std::os::fd::OwnedFd::from_raw_fd(fd),
            u16::from_be(addr.sin_port),
        )
    };
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut held = Vec::new();
    while let Ok(stream) = std::net::TcpStream::connect_timeout(&at, Duration::from_millis(300)) {
        held.push(stream);
        assert!(held.len() < 100, "the accept queue never filled");
    }
    (port, fd, held)
}

/// Over HTTP/2 the first request opens the connection and the others wait for it: when the
/// attempt fails, they share its failure rather than each try again in turn (which left
/// the later ones to run out of their attempt's time, as timeouts).
#[tokio::test]
async fn requests_waiting_on_a_failing_http2_connection_share_its_failure() {
    let (port, _fd, _held) = dropping_port();
    let mut config = config_for(port);
    config.http2 = true;
    config.connect_timeout = Duration::from_millis(500);
    config.timeout = Duration::from_secs(5);
    let client = Client::new(config).unwrap();
    let ids: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
    let results =
        futures::future::join_all(ids.iter().map(|i| async { fetch(&client, i).await })).await;
    for result in results {
        let err = result.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connection, "{err}");
        assert!(
            err.to_string().contains(&format!(
                "cannot connect to 127.0.0.1:{port} within 500ms (raise it with --connect-timeout)"
            )),
            "{err}"
        );
    }
}

/// A server that speaks only cleartext HTTP/2 answers an HTTP/1.1 request with its SETTINGS
/// frame: said as such (and not retried), with the option that speaks to it.
#[tokio::test]
async fn an_http2_only_server_asked_in_http1_points_at_http2() {
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    let (port, seen) = raw_server(b"\0\0\0\x04\0\0\0\0\0".to_vec());
    let mut config = config_for(port);
    config.retry.retries = 2;
    let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{err}");
    assert!(
        err.to_string()
            .contains("(is the API https://?) or only HTTP/2 (--http2 reaches it)"),
        "{err}"
    );
    assert_eq!(err.attempts, 1, "{err}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Settings for a server on `port` of this machine: no retries, fast backoff.
fn config_for(port: u16) -> ClientConfig {
    let template = format!("http://127.0.0.1:{port}/users/{{id}}");
    let mut config = ClientConfig::new(UrlTemplate::parse(&template).unwrap());
    config.retry.retries = 0;
    config.retry.base = Duration::from_millis(5);
    config
}

fn client_for(port: u16) -> Client {
    Client::new(config_for(port)).unwrap()
}

/// Asked once, the demo API says it speaks cleartext HTTP/2; a server that speaks only
/// HTTP/1.1 and one that never answers do not, and one that is not there cannot be asked.
#[tokio::test]
async fn whether_an_api_speaks_cleartext_http2_is_asked_not_assumed() {
    use userfetch::client::{H2c, offers_h2c};
    let limit = Duration::from_secs(10);
    let api = TestApi::start();
    let template = |t: &str| UrlTemplate::parse(t).unwrap();
    // With its limit on requests at once on a connection, which the demo API sets high.
    assert_eq!(
        offers_h2c(&template(&api.template("")), limit).await,
        H2c::Speaks { streams: 100_000 }
    );
    let (http1, _) = answering_server("HTTP/1.1 400 Bad Request".into());
    let http1 = format!("http://127.0.0.1:{http1}/users/{{id}}");
    assert_eq!(offers_h2c(&template(&http1), limit).await, H2c::DoesNot);
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_port = gone.local_addr().unwrap().port();
    drop(gone);
    let gone = format!("http://127.0.0.1:{gone_port}/users/{{id}}");
    assert!(
        matches!(offers_h2c(&template(&gone), limit).await, H2c::Unreachable(why) if why.contains("refused")),
        "a closed port is unreachable"
    );
    // Accepts (the backlog does) and never answers: the limit ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!(
        "http://127.0.0.1:{}/users/{{id}}",
        silent.local_addr().unwrap().port()
    );
    let asked = Instant::now();
    assert_eq!(
        offers_h2c(&template(&silent), Duration::from_millis(300)).await,
        H2c::NoAnswer
    );
    assert!(asked.elapsed() < limit);
    // TLS agrees on the protocol itself: nothing to ask.
    assert_eq!(
        offers_h2c(&template("https://127.0.0.1:1/users/{id}"), limit).await,
        H2c::DoesNot
    );
}

/// The screen's health check is bounded by `--timeout` like a lookup: an API that accepts
/// and never answers is reported, not waited on for good.
#[tokio::test]
async fn a_health_check_that_gets_no_answer_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = config_for(silent.local_addr().unwrap().port());
    config.timeout = Duration::from_millis(300);
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        Client::new(config).unwrap().health(),
    )
    .await
    .expect("the check ended")
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

/// A redirect to https on a server that speaks plain HTTP: the message names the redirect,
/// and does not ask whether the API (http:// already) should be.
#[tokio::test]
async fn a_failure_after_a_redirect_says_so() {
    let (plain, _) = answering_server("HTTP/1.1 200 OK".into());
    let (port, _) = answering_server(format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: https://127.0.0.1:{plain}/users/1"
    ));
    let err = fetch(&client_for(port), "1").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "after a redirect to https://127.0.0.1:{plain}/users/1: cannot connect"
        )),
        "{msg}"
    );
    assert!(msg.contains("does not seem to speak TLS"), "{msg}");
    assert!(!msg.contains("is the API http://"), "{msg}");
}

#[tokio::test]
async fn a_failed_redirect_target_is_the_host_named() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let (port, _) = answering_server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{dead_port}/users/1"
    ));
    let err = fetch(&client_for(port), "1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{dead_port}")), "{msg}");
}

#[tokio::test]
async fn a_redirect_loop_ends_after_five_redirects() {
    let (port, seen) = answering_server("HTTP/1.1 302 Found\r\nLocation: /again".into());
    let err = fetch(&client_for(port), "1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("more than 5 times"), "{err}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_redirect_to_another_scheme_is_refused_not_retried() {
    let (port, seen) =
        answering_server("HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/users/1".into());
    let mut config = config_for(port);
    config.retry.retries = 2;
    let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
    assert_eq!((err.kind, err.attempts), (ErrorKind::Rejected, 1), "{err}");
    assert!(err.to_string().contains("ftp: URL"), "{err}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn only_redirecting_statuses_are_followed() {
    let (port, seen) = answering_server("HTTP/1.1 300 Multiple Choices\r\nLocation: /a".into());
    let err = fetch(&client_for(port), "1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Rejected, "{err}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn over_http2_a_server_that_speaks_only_http1_is_named_as_such() {
    let (port, _) = answering_server("HTTP/1.1 400 Bad Request".into());
    let mut config = config_for(port);
    config.http2 = true;
    let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{err}");
    assert!(
        err.to_string().contains(
            "; if the API does not speak cleartext HTTP/2, use --http1 (without --http2))"
        ),
        "{err}"
    );
    // A stream the server resets proves it speaks HTTP/2: no such hint then.
    let api = TestApi::start();
    let mut config = api.config("fault=close", 0);
    config.http2 = true;
    let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{err}");
    assert!(!err.to_string().contains("--http2"), "{err}");
}

#[tokio::test]
async fn a_408_from_the_server_is_retried() {
    let (port, seen) = answering_server("HTTP/1.1 408 Request Timeout".into());
    let mut config = config_for(port);
    config.retry.retries = 2;
    let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
    assert_eq!((err.kind, err.attempts), (ErrorKind::Timeout, 3), "{err}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_401_says_what_became_of_the_token() {
    let (denying, _) = answering_server("HTTP/1.1 401 Unauthorized".into());
    let message = |port: u16, token: Option<&str>| {
        let mut config = config_for(port);
        config.token = token.map(str::to_owned);
        async move {
            let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
            err.to_string()
        }
    };
    let msg = message(denying, Some("t0ken")).await;
    assert!(msg.ends_with("; check USERFETCH_TOKEN"), "{msg}");
    let msg = message(denying, None).await;
    assert!(
        msg.contains("if the API needs a token, set USERFETCH_TOKEN"),
        "{msg}"
    );
    // Sent on to another origin, which never sees the token.
    let (redirecting, _) = answering_server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{denying}/users/1"
    ));
    let msg = message(redirecting, Some("t0ken")).await;
    assert!(msg.contains("after a redirect to another origin"), "{msg}");
}

/// A redirect's target is named in the error, but not what the API put in it to hide: the
/// token in its query (or path), a password.
#[tokio::test]
async fn a_redirect_target_is_named_without_the_token_or_a_password() {
    let (failing, _) = answering_server("HTTP/1.1 500 Internal Server Error".into());
    let message = |location: String| {
        let (redirecting, _) =
            answering_server(format!("HTTP/1.1 302 Found\r\nLocation: {location}"));
        let mut config = config_for(redirecting);
        config.token = Some("SeCrEt123".to_owned());
        async move {
            let err = fetch(&Client::new(config).unwrap(), "1").await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::ServerError, "{err}");
            err.to_string()
        }
    };
    let msg = message(format!(
        "http://bob:hunter2@127.0.0.1:{failing}/users/1?key=SeCrEt123#SeCrEt123"
    ))
    .await;
    assert!(
        msg.contains(&format!(
            "after a redirect to http://127.0.0.1:{failing}/users/1: "
        )),
        "{msg}"
    );
    assert!(
        !msg.contains("hunter2") && !msg.contains("SeCrEt123"),
        "{msg}"
    );
    let msg = message(format!("http://127.0.0.1:{failing}/keys/secret123/users/1")).await;
    assert!(
        msg.contains(&format!("after a redirect to http://127.0.0.1:{failing}: ")),
        "{msg}"
    );
    assert!(!msg.to_lowercase().contains("secret123"), "{msg}");
}

/// An API answering in 100 ms over HTTP/2, a client that waits 1 s for an answer and does not
/// retry, and a single-threaded runtime (the thread to hold).
fn answering_in_100ms_within_1s() -> (TestApi, Client, tokio::runtime::Runtime) {
    let api = TestApi::start();
    let mut config = api.config("latency=100ms", 0);
    config.timeout = Duration::from_secs(1);
    config.http2 = true;
    let client = Client::new(config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (api, client, runtime)
}

/// Waits until `n` lookups have reached the API (so that they are in flight).
async fn until_requested(api: &TestApi, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.stats().user_requests < n {
        assert!(
            Instant::now() < deadline,
            "{n} requests did not reach the API"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The screen's sync lookup holds the thread the async lookups run on. An answer that came
/// meanwhile, within --timeout, waits unread in the socket; when the thread is free again the
/// expired timer must not win over it (a false timeout, then a retry the API did not need).
#[test]
fn an_answer_that_came_while_the_thread_was_held_is_no_timeout() {
    let (api, client, runtime) = answering_in_100ms_within_1s();
    runtime.block_on(async {
        let lookup = tokio::spawn(async move { client.fetch(&id("1"), &mut |_| {}).await });
        until_requested(&api, 1).await;
        // Held well past the timeout, and past the 100 ms answer on a loaded machine too.
        std::thread::sleep(Duration::from_secs(3));
        let fetched = lookup.await.unwrap();
        assert!(fetched.is_ok(), "{:?}", fetched.err());
    });
    assert_eq!(api.stats().user_requests, 1);
}

/// The same with hundreds of lookups polled within one task, as the screen and batch poll
/// them: their last looks must not run out of the task's cooperative budget.
#[test]
fn many_answers_that_came_while_the_thread_was_held_are_no_timeouts() {
    use futures::StreamExt;
    const LOOKUPS: u64 = 400;
    let (api, client, runtime) = answering_in_100ms_within_1s();
    runtime.block_on(async {
        let lookups = tokio::spawn(async move {
            let pending = futures::stream::FuturesUnordered::new();
            for n in 1..=LOOKUPS {
                let client = client.clone();
                pending.push(async move { client.fetch(&id(&n.to_string()), &mut |_| {}).await });
            }
            pending.collect::<Vec<_>>().await
        });
        until_requested(&api, LOOKUPS).await;
        std::thread::sleep(Duration::from_secs(3));
        let fetched = lookups.await.unwrap();
        let timed_out = fetched.iter().filter(|f| f.is_err()).count();
        assert_eq!(timed_out, 0, "{:?}", fetched.iter().find(|f| f.is_err()));
    });
    assert_eq!(api.stats().user_requests, LOOKUPS);
}
