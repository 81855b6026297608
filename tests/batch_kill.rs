//! `kill -9` at any instant, then the same command again: every found id exactly once.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn reruns_after_kill_9_produce_every_id_exactly_once() {
    let env = Env::with_latency(Duration::from_millis(10));
    // Found ids, not-found ids (beyond the demo API's 10,000 users) and duplicates, mixed.
    let mut ids: Vec<String> = Vec::new();
    for n in 1..=3_000u32 {
        ids.push(n.to_string());
        if n % 50 == 0 {
            ids.push((90_000 + n).to_string());
        }
        if n % 97 == 0 {
            ids.push((n / 2).to_string());
        }
    }
    let input = env.write("ids.txt", ids_file(&ids));
    let args = [
        input.to_str().unwrap(),
        "--out",
        "out.jsonl",
        "--failures",
        "failures.jsonl",
        "--concurrency",
        "40",
    ];

    // Kill at several points: early (claims and first lookups), mid-run, and late (output
    // being written); each kill lands on whatever the previous runs left.
    let mut killed = 0;
    for delay_ms in [30u64, 150, 400, 700, 250, 1_000] {
        let mut child = env
            .batch(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill -9");
            killed += 1;
        }
        child.wait().expect("reap");
        // Whatever instant the kill hit, the files are whole (never half-written lines).
        for name in ["out.jsonl", "failures.jsonl"] {
            if let Ok(text) = std::fs::read_to_string(env.path(name)) {
                assert!(
                    text.is_empty() || text.ends_with('\n'),
                    "{name} was left half-written"
                );
                once_each(&jsonl_ids(&env.path(name)), name);
            }
        }
    }
    assert!(killed >= 3, "the runs finished before they could be killed");

    let started = Instant::now();
    let out = run(&mut env.batch(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(60));

    let mut want_found = Vec::new();
    let mut want_missing = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for id in &ids {
        if seen.insert(id.clone()) {
            if id.parse::<u32>().unwrap() <= 10_000 {
                want_found.push(id.clone());
            } else {
                want_missing.push(id.clone());
            }
        }
    }
    // Exactly once, nothing else, and in input order.
    assert_eq!(jsonl_ids(&env.path("out.jsonl")), want_found);
    assert_eq!(jsonl_ids(&env.path("failures.jsonl")), want_missing);
    // No temporary file is left behind by the completed run.
    let strays: Vec<String> = env
        .files()
        .into_iter()
        .filter(|f| f.contains("partial"))
        .collect();
    assert!(strays.is_empty(), "left behind: {strays:?}");
}
