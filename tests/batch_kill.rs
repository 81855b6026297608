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
    let args = ["--concurrency", "40"];

    // Kill at several points, watched on the API's request counter (which only grows, across
    // runs) rather than by the clock: at the first request (claims and first lookups), then
    // deeper and deeper into the 3,060 distinct ids; each kill lands on whatever the previous
    // runs left. Every threshold is below the total, so no run can have finished first.
    for threshold in [1u64, 300, 800, 1_400, 2_000, 2_600] {
        let mut child = env
            .batch_to_files(&input, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let reached = env.wait_for_requests(threshold, &mut child);
        assert!(
            reached,
            "the run ended before the API saw {threshold} requests: {:?}",
            child.wait()
        );
        child.kill().expect("kill -9");
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
    assert!(
        !env.path("summary.json").exists(),
        "a killed run wrote a summary: it was not killed mid-run"
    );

    let started = Instant::now();
    let out = run(&mut env.batch_to_files(&input, &args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(60));
    // The kills landed mid-run: what the killed runs settled was kept and not fetched again.
    let s = summary(&env.path("summary.json"));
    let distinct = ids.iter().collect::<std::collections::HashSet<_>>().len() as u64;
    let done_earlier = s["done_earlier"].as_u64().unwrap();
    assert!(done_earlier > 0, "nothing survived the kills: {s:#}");
    assert!(
        done_earlier < distinct,
        "the last kill came after the end: {s:#}"
    );
    assert_eq!(
        done_earlier + s["found"].as_u64().unwrap() + s["not_found"].as_u64().unwrap(),
        distinct,
        "{s:#}"
    );

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
