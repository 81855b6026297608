//! The time the process spends stopped, as `kill -STOP` and `kill -CONT` make it: its own test
//! binary, since it stops every thread of the process it runs in.

use std::time::Duration;

use userfetch::stopped::Stopwatch;

/// One test at a time: each stops the whole process.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_stop_of_the_whole_process_is_counted_once() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let watch = Stopwatch::start();
    let pid = std::process::id();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -STOP {pid}; sleep 3; kill -CONT {pid}"))
        .spawn()
        .unwrap();
    child.wait().unwrap();
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = std::process::id();
    let mut stopper = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sleep 0.5; kill -STOP {pid}; sleep 4; kill -CONT {pid}"
        ))
        .spawn()
        .unwrap();
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
