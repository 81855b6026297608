//! Micro-benchmarks for the per-record work of a batch: parsing an id, building its URL,
//! checking the JSON body, and storing records in the cache.
//!
//! `cargo bench --bench hot_paths`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use userfetch::cache::Cache;
use userfetch::client::UrlTemplate;
use userfetch::id::UserId;
use userfetch::record::Record;

const BODY: &[u8] = br#"{"id":4242,"name":"Dennis Allen","username":"Dennis.Allen242","email":"dennis.allen242@april.biz","address":{"street":"Dayna Park","suite":"Apt. 145","city":"South Elvis","zipcode":"56520-6950","geo":{"lat":"31.7802","lng":"146.9688"}},"phone":"1-937-870-0784","website":"allen.com","company":{"name":"Yost-Crona","catchPhrase":"Multi-tiered asynchronous attitude","bs":"harness one-to-one e-markets"}}"#;

fn ids_and_urls(c: &mut Criterion) {
    let template = UrlTemplate::parse("http://127.0.0.1:8080/users/{id}").unwrap();
    let id = UserId::parse("4242").unwrap();
    c.bench_function("id parse", |b| b.iter(|| UserId::parse(black_box("4242"))));
    c.bench_function("url for id", |b| {
        b.iter(|| template.url_for(black_box(&id)))
    });
    let odd = UserId::parse("ünï/cøde?#").unwrap();
    c.bench_function("url for id needing escapes", |b| {
        b.iter(|| template.url_for(black_box(&odd)))
    });
}

fn json_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Bytes(BODY.len() as u64));
    group.bench_function("check compact body", |b| {
        b.iter(|| Record::from_body(black_box(BODY)))
    });
    let record = Record::from_body(BODY).unwrap();
    let mut out = Vec::with_capacity(1024);
    group.bench_function("write JSONL line", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(record.as_json().as_bytes());
            out.push(b'\n');
            black_box(&out);
        })
    });
    group.finish();
}

fn cache_insert(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("bench.sqlite3")).unwrap();
    let record = Record::from_body(BODY).unwrap();
    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Elements(1000));
    group.measurement_time(Duration::from_secs(5));
    let mut next = 0u64;
    group.bench_function("insert 1000 records (batched)", |b| {
        b.iter_batched(
            || {
                next += 1000;
                next
            },
            |start| {
                runtime.block_on(async {
                    for n in start..start + 1000 {
                        cache.put("bench", &n.to_string(), record.clone()).unwrap();
                    }
                    cache.flush().await.unwrap();
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, ids_and_urls, json_check, cache_insert);
criterion_main!(benches);
