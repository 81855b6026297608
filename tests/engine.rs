//! The engine with a real SQLite cache: hits make no request, stale records are refetched.

mod common;

use std::time::Duration;

use common::{TestApi, id};
use tokio_util::sync::CancellationToken;
use userfetch::cache::Cache;
use userfetch::engine::{Engine, Event, Source};

fn engine(api: &TestApi, cache: &Cache, max_age: Duration) -> Engine {
    Engine::new(
        api.client("", 0),
        Some(cache.clone()),
        max_age,
        &api.template(""),
    )
}

#[tokio::test]
async fn a_cache_hit_makes_no_request() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("cache.sqlite3")).unwrap();
    let engine = engine(&api, &cache, Duration::from_secs(3600));
    let never = CancellationToken::new();

    let first = engine.lookup(&id("3"), &never, &mut |_| {}).await.unwrap();
    assert_eq!(first.source, Source::Api);
    engine.flush().await;
    let second = engine.lookup(&id("3"), &never, &mut |_| {}).await.unwrap();
    assert_eq!(second.source, Source::Cache);
    assert_eq!(second.record, first.record);
    assert_eq!(api.stats().user_requests, 1);
}

#[tokio::test]
async fn an_expired_record_is_fetched_again() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("cache.sqlite3")).unwrap();
    let engine = engine(&api, &cache, Duration::from_millis(50));
    let never = CancellationToken::new();

    engine.lookup(&id("3"), &never, &mut |_| {}).await.unwrap();
    engine.flush().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = engine.lookup(&id("3"), &never, &mut |_| {}).await.unwrap();
    assert_eq!(again.source, Source::Api);
    assert_eq!(api.stats().user_requests, 2);
}

#[tokio::test]
async fn records_from_another_api_are_not_served() {
    let api = TestApi::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("cache.sqlite3")).unwrap();
    let never = CancellationToken::new();
    let a = Engine::new(
        api.client("", 0),
        Some(cache.clone()),
        Duration::from_secs(60),
        "api-a",
    );
    let b = Engine::new(
        api.client("", 0),
        Some(cache.clone()),
        Duration::from_secs(60),
        "api-b",
    );
    a.lookup(&id("1"), &never, &mut |_| {}).await.unwrap();
    a.flush().await;
    assert_eq!(
        b.lookup(&id("1"), &never, &mut |_| {})
            .await
            .unwrap()
            .source,
        Source::Api
    );
    assert_eq!(api.stats().user_requests, 2);
}

#[tokio::test]
async fn cancelling_ends_a_pending_lookup() {
    let api = TestApi::start();
    let engine = Engine::new(api.client("latency=10s", 0), None, Duration::ZERO, "x");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let mut events = Vec::new();
    let err = engine
        .lookup(&id("1"), &cancel, &mut |e| {
            events.push(matches!(e, Event::Started))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, userfetch::client::ErrorKind::Cancelled);
    assert_eq!(events, vec![true]);
}
