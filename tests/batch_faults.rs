//! 5,000 ids against an API that misbehaves on purpose: every id must end found, not found
//! or failed exactly once, and the requests the server counted must match the report.

mod support;

use std::collections::HashSet;

use support::*;
use userfetch::server::ServerConfig;

#[test]
fn every_id_settles_exactly_once_and_the_server_agrees_on_the_requests() {
    let env = Env::with(ServerConfig {
        faults: ["503=0.10", "429=0.05", "close=0.02"]
            .iter()
            .map(|f| f.parse().unwrap())
            .collect(),
        retry_after: std::time::Duration::from_secs(1),
        ..ServerConfig::default()
    });
    // 4,900 users that exist and 100 that don't (the demo API knows 1..=10,000).
    let ids: Vec<String> = (1..=4_900)
        .chain(50_001..=50_100)
        .map(|n| n.to_string())
        .collect();
    let input = env.write("ids.txt", ids_file(&ids));
    let out = run(env
        .batch(&[
            input.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--failures",
            "failures.jsonl",
            "--summary-json",
            "summary.json",
            "--concurrency",
            "200",
        ])
        .args(["--retries", "4", "--max-retry-wait", "2s"]));
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "exit {code:?}: {}",
        stderr(&out)
    );

    let s = summary(&env.path("summary.json"));
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert_eq!(s["status"], "complete");
    assert_eq!(n("ids"), 5_000);
    assert_eq!(n("found") + n("not_found") + n("failed"), 5_000, "{s}");
    assert_eq!(n("unfinished"), 0);
    assert_eq!(code, Some(if n("failed") > 0 { 1 } else { 0 }));
    // 100 ids do not exist; an id can only fail (never be found) if every attempt hit a fault.
    assert!(
        n("not_found") <= 100 && n("not_found") + n("failed") >= 100,
        "{s}"
    );
    assert!(
        n("failed") < 50,
        "too many failures for these fault rates: {s}"
    );

    // The files hold each id once, disjointly, and together every id.
    let found = once_each(&jsonl_ids(&env.path("out.jsonl")), "out.jsonl");
    let failed = once_each(&jsonl_ids(&env.path("failures.jsonl")), "failures.jsonl");
    assert_eq!(found.len() as u64, n("found"));
    assert_eq!(failed.len() as u64, n("not_found") + n("failed"));
    assert!(found.is_disjoint(&failed));
    let all: HashSet<String> = found.union(&failed).cloned().collect();
    assert_eq!(all, ids.iter().cloned().collect::<HashSet<_>>());

    // What the server saw is what the client reports.
    assert_eq!(n("requests"), env.user_requests(), "{s}");
    assert_eq!(n("requests"), 5_000 + n("retries"), "{s}");
    let snapshot = env.server.stats().snapshot();
    assert!(
        snapshot.faults > 500,
        "the faults did not happen: {snapshot:?}"
    );
    assert!(
        n("throttled_answers") > 0 && n("throttle_events") > 0,
        "{s}"
    );
    // The summary says the same for people.
    let text = stderr(&out);
    assert!(text.contains("throttled"), "{text}");
    assert!(text.contains("p99"), "{text}");
}
