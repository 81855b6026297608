//! Politeness is a lower bound on time: a rate limit and a concurrency limit can only make a
//! run slower, so these checks cannot flake on a slow machine.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn the_rate_limit_spaces_requests_out() {
    let env = Env::new();
    let input = env.write("ids.txt", ids_file(1..=60));
    let started = Instant::now();
    let out = run(&mut env.batch(&[
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--rate",
        "6000/min",
        "--concurrency",
        "60",
    ]));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // 100 requests per second with a burst of 5: the last of 60 leaves after 0.55 s at best.
    assert!(
        took >= Duration::from_millis(500),
        "60 requests at 100/s took {took:?}"
    );
    assert_eq!(env.user_requests(), 60);
}

/// Lookups waiting for the rate limit go in the order of the input, so an interrupted run
/// leaves a prefix of it done; governor's waiters race for each free cell in no order.
#[test]
fn the_rate_limit_lets_lookups_go_in_input_order() {
    let env = Env::with(userfetch::server::ServerConfig {
        record_requests: true,
        ..Default::default()
    });
    let input = env.write("ids.txt", ids_file(1..=20));
    let out = run(&mut env.batch(&[
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--rate",
        "40/s",
        "--concurrency",
        "20",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let paths: Vec<String> = env
        .server
        .stats()
        .log()
        .into_iter()
        .map(|r| r.path_and_query)
        .filter(|p| p.starts_with("/users/"))
        .collect();
    let want: Vec<String> = (1..=20).map(|n| format!("/users/{n}")).collect();
    assert_eq!(paths, want);
}

#[test]
fn no_more_lookups_in_flight_than_the_concurrency_allows() {
    let env = Env::with_latency(Duration::from_millis(200));
    let input = env.write("ids.txt", ids_file(1..=40));
    let started = Instant::now();
    let out = run(&mut env.batch(&[
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--concurrency",
        "4",
    ]));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Ten rounds of four, each at least 200 ms.
    assert!(took >= Duration::from_secs(2), "took {took:?}");
}

#[test]
fn several_runtime_threads_give_the_same_result() {
    let env = Env::with_latency(Duration::from_millis(5));
    let input = env.write("ids.txt", ids_file(1..=500));
    let out = run(env
        .batch(&[
            input.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--concurrency",
            "50",
        ])
        .args(["--threads", "2"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: Vec<String> = (1..=500).map(|n| n.to_string()).collect();
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), want);
}

/// Over HTTP/1.1 each lookup holds up to two sockets: asking for more than the open-file limit allows
/// must not turn into "Too many open files" failures blamed on the API.
#[test]
fn concurrency_beyond_the_open_file_limit_is_lowered_to_fit() {
    let env = Env::with_latency(Duration::from_millis(300));
    let input = env.write("ids.txt", ids_file(1..=600));
    let mut cmd = env.batch_to_files(&input, &["--concurrency", "500", "--http1"]);
    limit_open_files(&mut cmd, 200);
    let out = run(&mut cmd);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("the open-file limit is 200: running 84 at a time"),
        "{text}"
    );
    assert_eq!(summary(&env.path("summary.json"))["found"], 600);
    assert_eq!(
        env.user_requests(),
        600,
        "no attempt failed and was retried"
    );
}

/// An API that takes few requests at once on its HTTP/2 connection (10 here; many servers
/// keep to 100–250): past that, requests would wait for a turn while their timeout runs, so
/// batch runs that many at once and says so.
#[test]
fn concurrency_is_lowered_to_what_the_http2_connection_takes() {
    let env = Env::with(userfetch::server::ServerConfig {
        latency: Duration::from_millis(50),
        http2_streams: 10,
        ..userfetch::server::ServerConfig::default()
    });
    let input = env.write("ids.txt", ids_file(1..=100));
    // Asked or told (--http2), the limit is learnt the same way.
    for transport in [&[][..], &["--http2"][..]] {
        let mut args = vec!["--concurrency", "64", "--retries", "0", "--fresh"];
        args.extend(transport);
        let out = run(&mut env.batch_to_files(&input, &args));
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains(
                "takes 10 requests at a time on its HTTP/2 connection: running 10 at a time, not 64"
            ),
            "{transport:?}: {text}"
        );
        assert_eq!(summary(&env.path("summary.json"))["found"], 100);
    }
    assert_eq!(env.user_requests(), 200, "each id asked once a run");
}
