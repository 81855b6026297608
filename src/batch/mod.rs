//! `userfetch batch`: fetch every id in a list, politely, resumably, with nothing lost.
//!
//! The pipeline, all on the runtime's thread except where noted:
//!
//! ```text
//! input thread ──chunks──▶ claim (cache thread) ──ids to fetch──▶ lookups (≤ concurrency)
//!                                                                   │ each attempt through the
//!                                                                   │ throttle (window + rate)
//!            output files ◀── rebuilt from the store ◀── settle (cache thread, committed)
//! ```
//!
//! Ids are read in bounded chunks; the store claims each one (which is also the duplicate
//! filter), lookups run at most `--concurrency` at a time, and answers are stored many per
//! transaction, outside the lookups' slots; an outcome counts only once the cache thread has
//! committed it. Output files are written from the store when the run ends, so a run killed
//! at any instant is finished by running it again.
//!
//! Here: the run from command line to exit code. `config` checks the command line, `pipeline`
//! is one run of a job, `dry_run` counts what a run would fetch; `input`, `throttle`,
//! `streamed`, `output`, `progress` and `summary` are the parts the pipeline is made of.

mod config;
pub(crate) use config::same_output;
mod dry_run;
pub mod input;
pub mod output;
mod pipeline;
pub mod progress;
mod streamed;
pub mod summary;
pub mod throttle;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{BatchArgs, GlobalOpts};
use crate::console::note;
use crate::exit::{ExitCode, Interrupted, usage};
use crate::session::{self, Session};
use crate::signals::Signals;

pub use crate::cli::Format;
use anyhow::Context;
use output::AtomicFile;
use summary::{Status, Summary};
use throttle::Throttle;

use config::{Config, job_key};
use dry_run::dry_run;
use pipeline::{Ctx, Pipeline};

/// Lookups in flight when `--concurrency` is not given: enough to hide latency, few enough
/// not to alarm an API's operators.
pub const DEFAULT_CONCURRENCY: u32 = 64;

/// Invalid lines reported one by one; past this only the count is kept (a wrong file would
/// otherwise bury the terminal).
const MAX_WARNINGS: u64 = 20;

/// Not "nothing changed": a `--fresh` job may already have been started over.
const STOPPED_BEFORE_FETCHING: &str = "userfetch: batch interrupted before any id was fetched";

pub async fn run(global: &GlobalOpts, args: &BatchArgs) -> anyhow::Result<ExitCode> {
    // The summary's elapsed time is the command's: counting the input, asking the API about
    // HTTP/2 (up to 2 s, or --timeout, when it stays silent) and waiting for another process's lock on the
    // cache file are part of what the user waited for.
    let started = std::time::Instant::now();
    let mut config = Config::from_args(global, args)?;
    // Watched from the start of a run that fetches: before the watch, a signal would kill
    // the process with the outputs' temporary files left behind. A dry run changes nothing,
    // so Ctrl-C may simply end it.
    let mut signals = (!config.dry_run).then(Signals::watch).transpose()?;
    // Created first, so an unwritable path is found before an hour of fetching, and a run
    // stopped before its first id still replaces an earlier run's summary. Like the
    // outputs, it appears complete at the end or not at all.
    let summary_json = config
        .summary_json
        .as_deref()
        .map(|p| AtomicFile::create(p, "--summary-json"))
        .transpose()?;
    let prepare = prepare(&config, global);
    let prepared = match signals.as_mut() {
        Some(signals) => tokio::select! {
            prepared = prepare => prepared,
            _ = signals.recv() => return stopped_before_fetching(summary_json),
        },
        None => prepare.await,
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return Err(not_started(summary_json, e)),
    };
    let Prepared {
        scan,
        lines,
        out,
        failures,
        key,
        session,
    } = prepared;
    // Not told to try --http2: the API was asked (or --http1 or a proxy said not to).
    config.concurrency = crate::open_files::fit(
        config.concurrency,
        u32::MAX,
        session.engine.client().config().http2,
        false,
        session.engine.client().config().direct,
    );
    // Past the API's limit on its HTTP/2 connection, requests would wait for a turn while
    // their --timeout runs (or be refused).
    if let Some(streams) = session.http2_streams
        && streams < config.concurrency
    {
        note!(
            "userfetch: the API takes {streams} requests at a time on its HTTP/2 connection: \
             running {streams} at a time, not {} (--http1 for a connection per lookup)",
            config.concurrency
        );
        config.concurrency = streams.max(1);
    }
    // Starting over means fetching again, not replaying records cached by the run being
    // discarded.
    let max_age = if config.fresh {
        Duration::ZERO
    } else {
        global.max_age
    };
    let result = match (session.engine.cache().cloned(), signals, out) {
        (_, None, _) => {
            // Refused as the run would refuse it.
            if let Some(path) = &global.cache
                && !global.no_cache
            {
                crate::cache::Cache::check_dir(path)?;
            }
            // The same file a run would use; none yet means nothing is done or cached.
            let store =
                session::cache_path(global)?.filter(|path| !matches!(path.try_exists(), Ok(false)));
            dry_run(&config, &session, store, &key, max_age, lines).await
        }
        (None, Some(_), _) => Err(anyhow::anyhow!("internal: batch started without a cache")),
        (Some(_), Some(_), None) => Err(anyhow::anyhow!(
            "internal: batch started without its output"
        )),
        (Some(cache), Some(mut signals), Some(out)) => {
            let namespace: Arc<str> = session.engine.namespace().into();
            let job = tokio::select! {
                job = cache.batch_open(&namespace, &key, config.fresh) => job.map_err(Into::into),
                _ = signals.recv() => {
                    session.close().await;
                    return stopped_before_fetching(summary_json);
                }
            };
            match job {
                Err(e) => Err(not_started(summary_json, e)),
                Ok(job) => {
                    let foreign_out =
                        replacing_a_foreign_out(&config.out, |file| job.owns_out(file));
                    if let Some(why) = &foreign_out {
                        note!(
                            "userfetch: {why}: this run replaces it with its own records once it finishes"
                        );
                    }
                    let ctx = Arc::new(Ctx {
                        client: session.engine.client().clone(),
                        cache,
                        job,
                        namespace,
                        throttle: Arc::new(Throttle::new(config.concurrency, config.rate)),
                        embedded: session.embedded.is_some(),
                    });
                    Pipeline::new(&config, ctx, max_age, scan)
                        .keeping_a_foreign_out(foreign_out.is_some())
                        .run(started, lines, out, failures, summary_json, signals)
                        .await
                }
            }
        }
    };
    session.close().await;
    result
}

/// Stopped before the first id was claimed: nothing to count, but the summary file says the
/// run was interrupted rather than keep what an earlier run wrote there.
fn stopped_before_fetching(summary_json: Option<AtomicFile>) -> anyhow::Result<ExitCode> {
    note!("{STOPPED_BEFORE_FETCHING}");
    if let Some(file) = summary_json {
        Summary::nothing_done(Status::Interrupted)
            .write_json(file)
            .context(Interrupted)?;
    }
    Ok(ExitCode::Interrupted)
}

/// Could not start (a missing input, an unusable or locked cache file): the summary file
/// says so, with the error, rather than keep what an earlier run wrote there.
fn not_started(summary_json: Option<AtomicFile>, error: anyhow::Error) -> anyhow::Error {
    if let Some(file) = summary_json {
        let summary = Summary {
            reason: Some(crate::exit::describe(&error)),
            ..Summary::nothing_done(Status::NotStarted)
        };
        if let Err(unwritten) = summary.write_json(file) {
            // Said too, not lost behind the error that stopped the run.
            note!("userfetch: {unwritten:#}");
        }
    }
    error
}

/// A file at `--out` that is not the one this job last put there (another `--api`'s output,
/// one made or edited by hand, or any file when the job never wrote one) is replaced only
/// once a run finishes: said up front (by the run and by the dry run), since it looks like
/// this run's to continue, and its records would be gone without a word at the end. `None`
/// when there is nothing to say. `owns` is
/// [`BatchJob::owns_out`](crate::cache::BatchJob::owns_out).
fn replacing_a_foreign_out(out: &Path, owns: impl Fn(Option<u64>) -> bool) -> Option<String> {
    let file = std::fs::metadata(out).ok().filter(|m| m.len() > 0)?;
    (!owns(Some(out_fingerprint(&file)))).then(|| {
        format!(
            "{} is not the file this command (this --api and --out) last wrote",
            crate::term::path(out)
        )
    })
}

/// Which file is at `--out`: its inode, size and modification time mixed into one number.
/// The inode alone is not enough: each run puts a new file in place by renaming, and the
/// file system hands a freed inode out again. Never 0 (`NEVER_WRITTEN`) in practice; a
/// collision only costs a warning too many or too few.
fn out_fingerprint(file: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mtime = (file.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(file.mtime_nsec() as u64);
    file.ino() ^ mtime.rotate_left(17) ^ file.size().rotate_left(41)
}

/// What a run needs before it takes its first id.
struct Prepared {
    scan: Option<input::Scan>,
    lines: input::Lines<Box<dyn std::io::Read + Send>>,
    /// `None` for a dry run, which writes no output.
    out: Option<AtomicFile>,
    failures: Option<AtomicFile>,
    key: String,
    session: Session,
}

async fn prepare(config: &Config, global: &GlobalOpts) -> anyhow::Result<Prepared> {
    // The whole file is checked before anything else starts, so a wrong file costs nothing.
    let scan = match &config.source {
        source if source.rereadable() => {
            let (source, strict) = (config.source.clone(), config.strict);
            tracing::debug!("checking every line of {} first", source.name());
            Some(
                tokio::task::spawn_blocking(move || input::scan(&source, strict))
                    .await?
                    .map_err(|e| usage(e.to_string()))?,
            )
        }
        _ => None,
    };
    let lines = input::open(&config.source).map_err(|e| usage(e.to_string()))?;
    // A dry run only checks the outputs: it writes nothing, so a run writing them now is no
    // reason to refuse it (and checking on a running job is when it is wanted).
    let (out, failures) = if config.dry_run {
        AtomicFile::check(&config.out, "--out")?;
        if let Some(path) = &config.failures {
            AtomicFile::check(path, "--failures")?;
        }
        (None, None)
    } else {
        let out = AtomicFile::create(&config.out, "--out")?;
        let failures = config
            .failures
            .as_deref()
            .map(|p| AtomicFile::create(p, "--failures"))
            .transpose()?;
        (Some(out), failures)
    };
    let key = job_key(&config.out)?;

    // A dry run writes nothing: opening the cache for writing would set the file up, or
    // tidy it while idle. It reads the file, if there is one, on its own (`dry_run`).
    let session = if config.dry_run {
        Session::start_for_many(&GlobalOpts {
            no_cache: true,
            ..global.clone()
        })
        .await?
    } else {
        Session::start_for_many(global).await?
    };
    // Off a terminal stderr holds only the summary, unless -v asked for a log, where this
    // line is the one that says which API answered.
    if let Some(line) = session.announce()
        && (std::io::stderr().is_terminal() || global.verbose > 0)
    {
        note!("{line}");
    }
    Ok(Prepared {
        scan,
        lines,
        out,
        failures,
        key,
        session,
    })
}
