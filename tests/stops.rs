//! The time the process spends stopped, as `kill -STOP` and `kill -CONT` make it: its own test
//! binary, since it stops every thread of the process it runs in.

use std::time::Duration;

use userfetch::stopped::Stopwatch;

/// One test at a time: each stops the whole process.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Stops this process `after` seconds from now, for `secs` seconds, from a child shell (as
/// `kill -STOP`, then `kill -CONT`, would from another terminal); wait on it to be sure the
/// stop is over.
fn stop_this_process(after: &str, secs: &str) -> std::process::Child {
    let pid = std::process::id();
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sleep {after}; kill -STOP {pid}; sleep {secs}; kill -CONT {pid}"
        ))
        .spawn()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_stop_of_the_whole_process_is_counted_once() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let watch = Stopwatch::start();
    stop_this_process("0", "3").wait().unwrap();
    // Read once the count's thread has woken from the stop: read at once, the stop shows
    // only if SIGCONT's handler has already run, and on a loaded machine the thread the
    // kernel picked for it may not have (`within` waits for the watch in that case).
    std::thread::sleep(Duration::from_millis(500));
    let stopped = watch.stopped();
    assert!(
        stopped >= Duration::from_secs(2) && stopped < Duration::from_secs(60),
        "{stopped:?}"
    );
    // Once the count's thread has woken from the stop, a new stopwatch sees none of it, and
    // the first still sees it whole.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        Stopwatch::start().stopped() < Duration::from_secs(1),
        "counted again"
    );
    let later = watch.stopped();
    assert!(
        later >= Duration::from_secs(2) && later < Duration::from_secs(60),
        "{later:?}"
    );
}

/// A limit given in the time the process runs: a stop longer than the limit, in the middle,
/// does not end the wait; the future finishing after the resume is still awaited.
#[test]
fn a_limit_moves_on_by_a_stop() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = runtime();
    let mut stopper = stop_this_process("0.5", "4");
    // Done 5 s after it starts, 0.5 s after the resume: within 2 s of running time (about
    // 1.5 s), not within 2 s of the clock.
    let finished = runtime.block_on(async {
        userfetch::stopped::within(
            Duration::from_secs(2),
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await
    });
    stopper.wait().unwrap();
    assert!(finished.is_some(), "the stop used up the limit");
}

/// `--retry-max-time` counts the time the process runs, as `--timeout` does: a stop longer
/// than it, amid the retries, does not end them.
#[test]
fn retries_go_on_after_a_stop_until_their_time_is_up() {
    use userfetch::client::{Client, ClientConfig, RetryPolicy, UrlTemplate};
    use userfetch::server::ServerConfig;
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Every answer a 500: retried, a wait of at most 200 ms before each.
    let server = userfetch::server::start_in_thread(ServerConfig {
        faults: vec!["500".parse().unwrap()],
        ..ServerConfig::default()
    })
    .unwrap();
    let config = ClientConfig {
        retry: RetryPolicy {
            retries: 1000,
            base: Duration::from_millis(50),
            max_wait: Duration::from_millis(200),
            max_time: Duration::from_secs(3),
        },
        ..ClientConfig::new(UrlTemplate::parse(&server.url_template()).unwrap())
    };
    let runtime = runtime();
    let mut stopper = stop_this_process("0.5", "3");
    let failed = runtime
        .block_on(async {
            let client = Client::new(config).unwrap();
            let id = userfetch::id::UserId::parse("1").unwrap();
            client.fetch(&id, &mut |_| {}).await
        })
        .unwrap_err();
    stopper.wait().unwrap();
    // 3 s of waits of 200 ms at most (the first ones shorter) made 26 to 30 attempts here;
    // ended by the stop, after its first 0.5 s, 8 or 9.
    assert!(failed.attempts >= 16, "{failed}");
    assert!(failed.to_string().contains("--retry-max-time"), "{failed}");
}
