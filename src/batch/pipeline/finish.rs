//! The end of a batch run: the outputs put in place, the summary written, and what the
//! run says about how it ended.

use std::time::{Duration, Instant};

use crate::cache::{BatchReader, CacheError};
use crate::console::{count, note};
use crate::exit::{ExitCode, Interrupted, usage};
use crate::signals::Signals;

use super::super::input;
use super::super::output::{self, AtomicFile};
use super::super::streamed::Output;
use super::super::summary::{FileReport, Status, Summary};
use super::{Ended, Pipeline, quit_now, rerun_hint};

/// Failed ids shown on stderr when there is no `--failures` file to list them.
const FAILED_SHOWN: u32 = 5;

/// What `write_outputs` put in place (`--out`, `--failures`), and why not the rest.
type Written = (
    Option<FileReport>,
    Option<FileReport>,
    Option<anyhow::Error>,
);

impl Pipeline<'_> {
    /// Writes the outputs and the summary of a run that has stopped fetching, and tells how
    /// it ended.
    pub(super) async fn finish(
        self,
        ended: Ended,
        started: Instant,
        out: Output,
        failures: Option<AtomicFile>,
        summary_json: Option<AtomicFile>,
        mut signals: Signals,
    ) -> anyhow::Result<ExitCode> {
        let Ended {
            fatal,
            input_error,
            reader_died,
            mut received,
        } = ended;
        let (mut status, gave_up) = self.end_status(
            input_error.is_some() || reader_died,
            fatal.is_some(),
            received,
        );
        // Met once every id had its lookup, the streak was not said then (whether any lookup
        // was left waiting was not known yet): said now that some were, unless something
        // else (an error) ended the run.
        if self.gave_up_all_started
            && let Some((streak, why)) = &gave_up
            && *streak == status
        {
            note!(
                "userfetch: stopped: {why}; the ids not done are left for a rerun once {}",
                super::rerun_once(status)
            );
        }
        // Output files are only replaced when the input was readable: after an input error
        // the previous files stay as they were. An interrupted run writes what is done even
        // when its last outcomes could not be stored (a cache locked by another process):
        // what was committed before is there to read.
        // So does a run stopped by a full disk under the cache file, once anything is done
        // (the output may be elsewhere, and what was committed is whole: a failed commit is
        // rolled back), unless the input was not readable either.
        let c = &self.counts;
        let anything_done = self.ctx.job.earlier_found
            || c.found + c.cached + c.not_found + c.failed + c.done_earlier > 0;
        let cache_full = status != Status::InputError
            && anything_done
            && fatal
                .as_ref()
                .is_some_and(|e| matches!(CacheError::in_chain(e), Some(CacheError::Full { .. })));
        // A run that did not finish writes what is done.
        let unfinished = cache_full
            || matches!(
                status,
                Status::Interrupted | Status::Unreachable | Status::Refused
            );
        let writes = cache_full
            || matches!(
                (&fatal, status),
                (
                    None,
                    Status::Complete | Status::Unreachable | Status::Refused
                ) | (_, Status::Interrupted)
            );
        let lookups_took = started.elapsed();
        let (out_report, failures_report, write_error) = if unfinished && self.foreign_out {
            // Its records would replace another job's with a part of this one's: kept in the
            // store instead, for the rerun.
            self.foreign_out_kept();
            (None, None, None)
        } else if writes {
            let (written, stopped) = self
                .write_outputs_answering_signals(out, failures, &mut signals, &mut received)
                .await;
            // Asked to stop, even if there was nothing left to stop: exit 130 as for any
            // Ctrl-C, and the summary says so.
            if stopped {
                status = Status::Interrupted;
            }
            written
        } else {
            (None, None, None)
        };
        // What the next run compares the file there with, to tell whether it is still
        // this job's.
        if out_report.is_some() {
            let noted = match std::fs::metadata(&self.config.out) {
                Ok(file) => self
                    .ctx
                    .cache
                    .batch_wrote_out(self.ctx.job, super::super::out_fingerprint(&file))
                    .await
                    .map_err(|e| {
                        format!("the cache file could not note it as this command's output ({e})")
                    }),
                Err(e) => Err(format!(
                    "it could not be read back to note it as this command's output ({e})"
                )),
            };
            // The next run then says the file is not its own, and keeps it if interrupted:
            // said now, so that it is not a surprise then.
            if let Err(why) = noted {
                self.progress.warn(&format!(
                    "userfetch: the next run will take {} for another command's file, and replace it only if it finishes: {why}",
                    crate::term::path(&self.config.out)
                ));
            }
        }
        tracing::info!(
            "starting and looking up took {:.1?}, writing the output {:.1?}",
            lookups_took,
            started.elapsed() - lookups_took
        );
        // An interrupted run stays "interrupted": a rerun is what it needs either way.
        let status = match (&write_error, status) {
            (Some(_), Status::Complete) => Status::OutputError,
            _ => status,
        };
        let stopped_by_error = fatal.is_some();
        // A bad line, which a rerun would meet again; not a read error (EIO) or a reader
        // thread that died, where the input is fine as it is.
        let bad_input = matches!(
            input_error,
            Some(
                input::InputError::NotUtf8 { .. }
                    | input::InputError::TooLong { .. }
                    | input::InputError::Utf16(_)
                    | input::InputError::Invalid { .. }
            )
        );
        let error = match (fatal, write_error) {
            // Both said: an --out on the cache's full disk fails too, and the summary then
            // names no file.
            (Some(fatal), Some(write_error)) => {
                note!("userfetch: {}", crate::exit::describe(&write_error));
                Some(fatal)
            }
            (fatal, write_error) => fatal.or(write_error),
        }
        .or_else(|| input_error.map(|e| usage(e.to_string())));
        // Met by a claim, a commit or the writing of the outputs.
        let damaged_cache = error
            .as_ref()
            .is_some_and(|e| matches!(CacheError::in_chain(e), Some(CacheError::Corrupt { .. })));
        let reason = error
            .as_ref()
            .map(crate::exit::describe)
            .or_else(|| gave_up.map(|(_, why)| why));
        let failures_written = failures_report.is_some();
        let summary = self.summary(
            status,
            reason,
            started.elapsed(),
            out_report,
            failures_report,
        );
        // Named here when no --failures file lists them: none asked for, or it could not be
        // written.
        if !stopped_by_error && !failures_written && self.counts.failed > 0 {
            self.show_first_failed().await;
        }
        if status == Status::Complete {
            let out = summary.out.as_ref().filter(|_| self.ctx.job.earlier_found);
            // A first run's failures file holds its own ids only.
            let failures = summary.failures.as_ref().filter(|_| self.ctx.job.run > 1);
            self.say_what_earlier_runs_left(out, failures).await;
        }
        // An input that fails before its first id (empty stdin) gets its one error line only.
        if status != Status::InputError || self.handled + self.counts.unfinished > 0 {
            // The same input would stop at the same line.
            let rerun = if bad_input {
                format!("fix the input, then {}", rerun_hint(self.config.fresh))
            } else if damaged_cache {
                // A rerun meets the same damage: its progress goes with the file.
                format!(
                    "move the damaged cache file aside, then {}",
                    rerun_hint(self.config.fresh)
                )
            } else {
                rerun_hint(self.config.fresh).to_owned()
            };
            let mut text = summary.render(&rerun);
            text.push_str(&self.afterword(status));
            note!("{text}");
        }
        let summary_error = summary_json.and_then(|file| summary.write_json(file).err());
        let error = match (error, summary_error) {
            (Some(e), Some(unwritten)) => {
                // Said too, not lost behind the error that ended the run.
                note!("userfetch: {unwritten:#}");
                Some(e)
            }
            (e, unwritten) => e.or(unwritten),
        };
        if let Some(e) = error {
            // Reported either way; an interrupted run still exits 130, which is what a
            // script asks about.
            return Err(match status {
                Status::Interrupted => e.context(Interrupted),
                _ => e,
            });
        }
        Ok(match status {
            Status::Interrupted => ExitCode::Interrupted,
            _ if self.counts.failed > 0 => ExitCode::Failure,
            _ => ExitCode::Success,
        })
    }

    /// Lines after the summary that say what the counts alone hide: which API answered when
    /// none was named (off a terminal the summary is all stderr says, so a misspelt
    /// USERFETCH_API would go unseen behind made-up records), and a run where every id was
    /// "not found", which is more often a wrong `--api` path than an API without users.
    fn afterword(&self, status: Status) -> String {
        let mut text = String::new();
        let embedded = self.ctx.embedded;
        if embedded {
            text.push_str(
                "\n  the records come from the embedded demo API (made-up users): no --api given, and USERFETCH_API unset",
            );
        }
        let c = &self.counts;
        // Only of a whole job, run to its end, against an API named: a resumed run's last few
        // ids, or a run stopped after two, say nothing of the template.
        let whole_job = status == Status::Complete
            && !embedded
            && !self.ctx.job.earlier_found
            && c.done_earlier == 0;
        if !whole_job {
            return text;
        }
        // The template is not quoted: its query may hold a key.
        if let Some(hint) = crate::client::template_hint(
            c.found + c.cached,
            c.not_found,
            self.bad_bodies,
            c.failed.saturating_sub(self.bad_bodies),
        ) {
            text.push_str("\n  ");
            text.push_str(hint);
        }
        text
    }

    /// The output of an `--out` collects what every run into it found, and its failures
    /// file what they did not, so a run over a different input writes the earlier input's
    /// too: said, as it surprises.
    async fn say_what_earlier_runs_left(
        &self,
        out: Option<&FileReport>,
        failures: Option<&FileReport>,
    ) {
        let job = self.ctx.job;
        let (want_found, want_unfound) = (out.is_some(), failures.is_some());
        if !want_found && !want_unfound {
            return;
        }
        let Some((found, unfound)) = self
            .read_back(move |reader| {
                let found = if want_found {
                    reader.found_before(job.job, job.run)?
                } else {
                    0
                };
                let unfound = if want_unfound {
                    reader.unfound_before(job.job, job.run)?
                } else {
                    0
                };
                Ok((found, unfound))
            })
            .await
        else {
            return;
        };
        for (file, n, what) in [
            (
                out,
                found,
                count(found, "record", "records") + " that earlier runs into it found",
            ),
            (
                failures,
                unfound,
                count(unfound, "not-found or failed id", "not-found or failed ids")
                    + " of earlier runs into it",
            ),
        ] {
            if let Some(file) = file.filter(|_| n > 0) {
                self.progress.warn(&format!(
                    "userfetch: {} also holds {what} for ids not in this input (--fresh starts the output over)",
                    crate::term::sanitize(&file.path)
                ));
            }
        }
    }

    /// A read of the store for a message after the run, off the runtime. A message is not worth
    /// failing the run over: when the read fails, it is logged and `None`.
    async fn read_back<T: Send + 'static>(
        &self,
        read: impl FnOnce(&BatchReader) -> anyhow::Result<T> + Send + 'static,
    ) -> Option<T> {
        let path = self.ctx.cache.path().to_owned();
        let read = tokio::task::spawn_blocking(move || read(&BatchReader::open(&path)?)).await;
        match read {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::debug!("cannot read the cache file back: {e:#}");
                None
            }
            Err(e) => {
                tracing::debug!("cannot read the cache file back: {e}");
                None
            }
        }
    }

    /// Without a `--failures` file written, which ids failed and why would be said nowhere:
    /// the first few are shown, and where the rest can be found.
    async fn show_first_failed(&self) {
        let job = self.ctx.job;
        let Some(rows) = self
            .read_back(move |reader| reader.first_failed(job, FAILED_SHOWN))
            .await
        else {
            return;
        };
        for row in &rows {
            // As `get` says it: the count only when the lookup was tried more than once.
            self.progress.warn(&format!(
                "userfetch: user {}: {}{}",
                row.id,
                row.message,
                crate::client::AfterAttempts(row.attempts)
            ));
        }
        let more = self.counts.failed.saturating_sub(rows.len() as u64);
        let rest = if more > 0 {
            format!("{more} more failed; ")
        } else {
            String::new()
        };
        let where_listed = match &self.config.failures {
            None => "--failures FILE lists every failed and not-found id with its error".to_owned(),
            Some(path) => format!(
                "{} lists them once a run writes it",
                crate::term::path(path)
            ),
        };
        self.progress
            .warn(&format!("userfetch: {rest}{where_listed}"));
    }

    /// How the run ended, and the streak of failures that stopped it, if one did and left
    /// something for a rerun. `received`: signals so far.
    fn end_status(
        &self,
        input_failed: bool,
        fatal: bool,
        received: u32,
    ) -> (Status, Option<(Status, String)>) {
        // A streak that left nothing for a rerun (met once every id had its lookup, none of
        // them waiting for a turn or a retry; or while the input's last lines were still
        // being read, all of them blank or ids already seen): the run is complete, not
        // stopped.
        let left_nothing = self.counts.unfinished == 0
            && (self.gave_up_all_started
                || self
                    .id_lines
                    .is_some_and(|lines| lines == self.counts.ids + self.counts.duplicates));
        let gave_up = self.gave_up.clone().filter(|_| !left_nothing);
        // An error after a stop was asked for (the last outcomes refused by a cache locked
        // by another process) is said, but the run was interrupted, as with an output that
        // cannot be written then: exit 130.
        let status = if input_failed {
            Status::InputError
        } else if fatal && received == 0 {
            Status::Error
        } else if let Some((status, _)) = &gave_up {
            *status
        } else if received > 0 {
            Status::Interrupted
        } else {
            Status::Complete
        };
        (status, gave_up)
    }

    /// [`Self::write_outputs`], answering signals meanwhile: writing a big output takes a
    /// while. The first signal is told the output is being written, the next quits at once
    /// (as does a third in all, counting `received` before it). Returns what was written and
    /// whether a signal came.
    async fn write_outputs_answering_signals(
        &self,
        out: Output,
        failures: Option<AtomicFile>,
        signals: &mut Signals,
        received: &mut u32,
    ) -> (Written, bool) {
        tracing::debug!("writing the outputs");
        let writing = self.write_outputs(out, failures);
        tokio::pin!(writing);
        let mut while_writing = 0u32;
        loop {
            let signal = tokio::select! {
                // A failed write (a full disk) still leaves the run's summary to tell; the
                // error follows it.
                written = &mut writing => return (written, while_writing > 0),
                signal = signals.recv() => signal,
            };
            *received += 1;
            while_writing += 1;
            // The message promises that the next Ctrl-C quits, whatever came before.
            if *received >= 3 || while_writing >= 2 {
                quit_now(self.config.fresh);
            }
            self.progress.warn(&format!(
                "userfetch: writing the output from what is done; {} to quit at once",
                signal.again()
            ));
        }
    }

    /// Said when a run that did not finish leaves an `--out` that is not its own as it was.
    fn foreign_out_kept(&self) {
        let failures = match &self.config.failures {
            Some(f) => format!(" (and {})", crate::term::path(f)),
            None => String::new(),
        };
        note!(
            "userfetch: {}{failures} left as it was: this run did not finish, and the file \
             is not this command's output; the same command again continues from what this run fetched",
            crate::term::path(&self.config.out)
        );
    }

    /// The reports of the files put in place, and why the rest could not be: `--out` may be
    /// in place when `--failures` fails, and the summary should still name it.
    async fn write_outputs(&self, out: Output, failures: Option<AtomicFile>) -> Written {
        if let Err(e) = self.ctx.cache.flush().await {
            return (None, None, Some(e.into()));
        }
        let path = self.ctx.cache.path().to_owned();
        let job = self.ctx.job.job;
        let namespace = self.ctx.namespace.clone();
        let format = self.config.format;
        let out_path = self.config.out.display().to_string();
        let written = tokio::task::spawn_blocking(move || -> Written {
            // Opened only by what reads the store: a streamed --out without --failures never does.
            // Each file is put in place or not on its own: an --out that could not be (its
            // directory removed) kept the failures, in a writable one, from being written.
            let (out, out_error) = match out.finish(|file| {
                output::write_found(&BatchReader::open(&path)?, job, &namespace, format, file)
            }) {
                Ok(records) => (
                    Some(FileReport {
                        path: out_path,
                        records,
                    }),
                    None,
                ),
                Err(e) => (None, Some(e)),
            };
            let Some(f) = failures else {
                return (out, None, out_error);
            };
            // As the file is named, like --out's: made safe where it is shown, not here,
            // or --summary-json would hold a name no file has.
            let shown = f.path().display().to_string();
            match BatchReader::open(&path)
                .map_err(anyhow::Error::from)
                .and_then(|reader| output::write_failures(&reader, job, f))
            {
                Ok(records) => (
                    out,
                    Some(FileReport {
                        path: shown,
                        records,
                    }),
                    out_error,
                ),
                // The output's error is the one the run ends with; this one is said too,
                // not lost until --out is mended.
                Err(e) => match out_error {
                    Some(first) => {
                        note!("userfetch: {}", crate::exit::describe(&e));
                        (out, None, Some(first))
                    }
                    None => (out, None, Some(e)),
                },
            }
        })
        .await;
        written.unwrap_or_else(|e| (None, None, Some(e.into())))
    }

    fn summary(
        &self,
        status: Status,
        reason: Option<String>,
        elapsed: Duration,
        out: Option<FileReport>,
        failures: Option<FileReport>,
    ) -> Summary {
        let t = self.ctx.throttle.stats();
        let c = &self.counts;
        // The ids this run fetched: a resumed run skips most of its ids in a few
        // milliseconds, which would read as hundreds of thousands of ids a second.
        let fetched = c.found + c.not_found + c.failed;
        let secs = elapsed.as_secs_f64();
        Summary {
            status,
            reason,
            counts: c.clone(),
            // Every line read was claimed (claims in flight are awaited before the run
            // ends), as an id or as a duplicate.
            not_read: self
                .id_lines
                .map(|lines| lines.saturating_sub(c.ids + c.duplicates)),
            elapsed_s: (secs * 1000.0).round() / 1000.0,
            ids_per_s: if secs > 0.0 {
                (fetched as f64 / secs).round()
            } else {
                0.0
            },
            requests: t.attempts + self.ctx.client.redirects_followed(),
            retries: self.retries,
            latency_ms: Summary::latency(&self.latencies),
            throttled_answers: t.refusals,
            throttle_events: t.cuts,
            out,
            failures,
        }
    }
}
