//! `--dry-run`: the input and the settings checked, and what a run would fetch counted,
//! with nothing fetched or stored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::cache::{BatchReader, CacheError, NEVER_WRITTEN};
use crate::console::{count, note, say};
use crate::exit::{ExitCode, usage};
use crate::session::Session;

use super::config::Config;
use super::input;
use super::output::AtomicFile;
use super::{Format, MAX_WARNINGS, replacing_a_foreign_out};

/// Ids shown with their URL by `--dry-run`.
const DRY_RUN_URLS: usize = 5;

/// `--dry-run`: read the input, say how many ids a real run would fetch and where.
pub(super) async fn dry_run(
    config: &Config,
    session: &Session,
    store: Option<PathBuf>,
    key: &str,
    max_age: Duration,
    lines: input::Lines<Box<dyn std::io::Read + Send>>,
) -> anyhow::Result<ExitCode> {
    let namespace = session.engine.namespace().to_owned();
    let key = key.to_owned();
    let (fresh, strict) = (config.fresh, config.strict);
    let name = config.source.name();
    let template = session.engine.client().config().template.clone();
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<DryRun> {
        // No cache file yet: nothing is done or cached.
        let reader = store.as_deref().map(open_store).transpose()?.flatten();
        let found = match &reader {
            Some(reader) => reader.find_job(&namespace, &key)?,
            None => None,
        };
        // `--fresh` starts the job over: nothing of it is done, but the --out it wrote is
        // still its own.
        let (job, fresh_ms) = match found {
            Some(found) if !fresh => (Some(found.job), found.fresh_ms),
            _ => (None, None),
        };
        let mut lines = lines;
        let mut seen = Seen::new()?;
        let mut report = DryRun {
            out_file: found.map_or(Some(NEVER_WRITTEN), |f| f.out_file),
            ..DryRun::default()
        };
        while let Some((line, kind)) = lines.next_line().map_err(|e| usage(e.to_string()))? {
            match kind {
                input::Line::Nothing => {}
                input::Line::Invalid(problem) if strict => {
                    return Err(usage(format!("{name}:{line}: {problem}")));
                }
                input::Line::Invalid(problem) => {
                    report.invalid += 1;
                    if report.invalid <= MAX_WARNINGS {
                        note!("userfetch: {name}:{line}: skipped: {problem}");
                    }
                }
                input::Line::Id(id) => {
                    // Distinct ids, as the run's summary counts them.
                    if !seen.insert(id.as_str())? {
                        report.duplicates += 1;
                        continue;
                    }
                    report.ids += 1;
                    let done = match (&reader, job) {
                        (Some(reader), Some(job)) => reader.is_done(job, id.as_str())?,
                        _ => false,
                    };
                    let cached = match &reader {
                        Some(reader) if !done => {
                            reader.is_cached(&namespace, id.as_str(), max_age, fresh_ms)?
                        }
                        _ => false,
                    };
                    if done {
                        report.done += 1;
                    } else if cached {
                        report.cached += 1;
                    } else {
                        report.to_fetch += 1;
                        if report.urls.len() < DRY_RUN_URLS {
                            report.urls.push(template.url_for(&id));
                        }
                    }
                }
            }
        }
        if report.ids == 0 {
            return Err(usage(input::InputError::Empty(name).to_string()));
        }
        Ok(report)
    })
    .await??;
    say!(
        "dry run: {} of {} in {} would be fetched ({} done in an earlier run, {} fresh in the cache, {}, {})",
        report.to_fetch,
        count(report.ids, "id", "ids"),
        config.source.name(),
        report.done,
        report.cached,
        count(report.duplicates, "duplicate", "duplicates"),
        count(report.invalid, "invalid line", "invalid lines")
    )?;
    say!(
        "  records to {} ({}){}",
        crate::term::path(&config.out),
        match config.format {
            Format::Jsonl => "JSONL",
            Format::Csv => "CSV",
        },
        config
            .failures
            .as_ref()
            .map(|f| format!(", failures to {}", crate::term::path(f)))
            .unwrap_or_default()
    )?;
    if let Some(why) = replacing_a_foreign_out(&config.out, |file| {
        crate::cache::owns_out(report.out_file, file)
    }) {
        say!("  {why}: the run would replace it")?;
    }
    let outputs = [
        ("--out", Some(&config.out)),
        ("--failures", config.failures.as_ref()),
    ];
    for (what, path) in outputs {
        if let Some(path) = path.filter(|path| AtomicFile::being_written(path)) {
            say!(
                "  {what} {}: another run is writing that file now; a run would be refused until it ends",
                crate::term::path(path)
            )?;
        }
    }
    let client = session.engine.client().config();
    say!(
        "  concurrency {}, rate {}, up to {} per id, timeout {} per attempt",
        config.concurrency,
        // As given (100/h), with the per-second figure it comes to when that reads differently.
        match (&config.rate_text, config.rate) {
            (Some(text), Some(rate)) if rate.to_string() != *text => format!("{text} ({rate})"),
            (Some(text), _) => text.clone(),
            _ => "unlimited".to_owned(),
        },
        // No retry ever starts within a --retry-max-time of 0.
        count(
            if client.retry.max_time.is_zero() {
                1
            } else {
                client.retry.max_attempts()
            },
            "attempt",
            "attempts"
        ),
        humantime::format_duration(client.timeout)
    )?;
    let proxy = session.engine.client().proxy_for(client.template.origin());
    say!(
        "  {}{}",
        match (client.template.origin().scheme(), client.http2) {
            ("https", _) => "over HTTPS: HTTP/2 or HTTP/1.1, as TLS agrees with the API",
            (_, true) => "over cleartext HTTP/2: one connection carries every request",
            (_, false) => "over HTTP/1.1: a connection for each lookup in flight",
        },
        proxy
            .map(|proxy| format!(", through the proxy {proxy}"))
            .unwrap_or_default()
    )?;
    if let Some(what) = &session.unreached {
        say!(
            "  the API {} when asked about HTTP/2 just now{}",
            crate::term::sanitize(what),
            if client.http2 {
                ""
            } else {
                ": the protocol above is a guess"
            }
        )?;
    }
    if !report.urls.is_empty() {
        say!(
            "  first URLs{}:",
            if session.embedded.is_some() {
                " (the embedded demo API: no --api given, and USERFETCH_API unset)"
            } else {
                ""
            }
        )?;
        for url in &report.urls {
            say!("    {url}")?;
        }
    }
    Ok(ExitCode::Success)
}

/// The cache file, read-only, in one snapshot; `None` if it holds no job yet. A file that
/// is no usable store is refused as a real run refuses it (exit 2), not as a store failing
/// mid-run, and another program's database without opening it for more than a look.
fn open_store(path: &Path) -> Result<Option<BatchReader>, CacheError> {
    let meta = std::fs::metadata(path);
    if meta.as_ref().is_ok_and(|m| !m.is_file()) {
        return Err(CacheError::Open {
            path: path.to_owned(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    if meta.is_ok_and(|m| m.len() == 0) {
        return Ok(None);
    }
    crate::cache::check_is_a_cache(path)?;
    let reader = BatchReader::open(path).map_err(|e| match e {
        CacheError::Sqlite { path, source } => CacheError::Corrupt { path, source },
        other => other,
    })?;
    reader.snapshot()?;
    Ok(reader.holds_jobs()?.then_some(reader))
}

/// The ids a dry run has seen, to count duplicates. Dry runs write nothing to the store, so
/// the remembering happens in a private temporary SQLite database: it spills to disk, where a
/// set in memory would grow with the input (tens of megabytes per million ids).
struct Seen {
    db: rusqlite::Connection,
}

impl Seen {
    fn new() -> anyhow::Result<Seen> {
        // An empty name is SQLite's private temporary database, removed when closed.
        let db = rusqlite::Connection::open("")
            .context("cannot open a temporary database to find duplicate ids")?;
        db.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             CREATE TABLE seen (id TEXT PRIMARY KEY) WITHOUT ROWID;
             BEGIN;",
        )
        .context("cannot set up the temporary database to find duplicate ids")?;
        Ok(Seen { db })
    }

    /// True the first time `id` is seen.
    fn insert(&mut self, id: &str) -> anyhow::Result<bool> {
        let added = self
            .db
            .prepare_cached("INSERT OR IGNORE INTO seen (id) VALUES (?1)")
            .and_then(|mut insert| insert.execute([id]))
            .with_context(|| format!("cannot remember id {id} in the temporary database"))?;
        Ok(added == 1)
    }
}

#[derive(Default)]
struct DryRun {
    ids: u64,
    to_fetch: u64,
    done: u64,
    /// Would be taken from the cache (a record younger than `--max-age`).
    cached: u64,
    duplicates: u64,
    invalid: u64,
    urls: Vec<String>,
    /// The file of the `--out` a run of this command last put in place (see
    /// `BatchJob::out_file`).
    out_file: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_knows_every_id_it_has_seen() {
        let mut seen = Seen::new().unwrap();
        for n in 0..50_000u32 {
            assert!(seen.insert(&n.to_string()).unwrap());
        }
        for n in (0..50_000u32).step_by(997) {
            assert!(!seen.insert(&n.to_string()).unwrap(), "{n}");
        }
        assert!(seen.insert("new").unwrap());
    }
}
