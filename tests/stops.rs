//! The time the process spends stopped, as `kill -STOP` and `kill -CONT` make it: its own test
//! binary, since it stops every thread of the process it runs in.

use std::time::Duration;

use userfetch::stopped::Stopwatch;

#[test]
fn a_stop_of_the_whole_process_is_counted_once() {
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
