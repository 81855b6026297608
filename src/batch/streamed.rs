//! Found records written to `--out` while the run goes on, in input order.
//!
//! Why: rebuilding the output from the store after the last answer reads every record back
//! (0.35 s of one core for 200,000 records, 20–28 ms after the last wave of a 10,000-id run,
//! when the run is otherwise done). A run whose job has no found ids from earlier runs (a
//! first run, or `--fresh`) has every found record in hand as its commit returns, so it writes
//! them then, on a thread of their own, holding back only those that came back ahead of an
//! earlier line.
//!
//! The file is the same one the store would rebuild: every found id of the job, once, by
//! input line. The moment that could stop being true by this route (an id settled by an
//! earlier run or answered from the cache, whose record is not in hand; too many records held
//! back behind a slow line) the stream is abandoned and the output is rebuilt from the store
//! at the end, as it always was. The file still appears only when the run ends, so a run
//! killed midway leaves the old output, and the rerun rebuilds it from the store.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::Context;

use super::output::{AtomicFile, write_jsonl};
use crate::cache::{Outcome, Settled};
use crate::record::Record;

/// Records held back behind an unsettled line, at most (about 500 bytes each): past this the
/// stream gives up rather than grow with one slow id.
const MAX_HELD: usize = 8192;

/// What the writer thread hands back: the file and its writer in every case (so a failed
/// stream can still be rebuilt from the store), and how many records it wrote or why it
/// stopped.
type Written = (AtomicFile, BufWriter<File>, anyhow::Result<u64>);

/// How `--out` is being produced.
pub struct Output(State);

enum State {
    /// Written as the run goes.
    Streamed(Stream),
    /// Rebuilt from the store at the end.
    Rebuilt(AtomicFile),
    /// Given up: the writer hands the file back when it has written what it was sent.
    Abandoned(Writer),
    /// Only between two of the above.
    Moving,
}

struct Stream {
    /// Records that may be held back before the stream gives up.
    max_held: usize,
    /// Lines claimed for fetching and not yet written, in input order.
    expected: VecDeque<u64>,
    /// Settled lines that came back ahead of `expected`'s front: a record, or none.
    /// foldhash: keys are our own line numbers, nothing an attacker picks, and SipHash was
    /// ~1 % of a 200,000-id run's instructions between this and the claimed ids.
    held: foldhash::HashMap<u64, Option<Record>>,
    writer: Writer,
}

/// The writing thread and its queue. Dropping it waits for the thread, so the temporary
/// file is always cleaned up (or handed back) before the run moves on.
struct Writer {
    tx: Option<mpsc::Sender<Vec<Record>>>,
    thread: Option<JoinHandle<Written>>,
}

impl Writer {
    fn start(mut out: AtomicFile) -> anyhow::Result<Writer> {
        let mut w = out.writer()?;
        let shown = crate::term::path(out.path());
        // Unbounded: the queue holds records only while the disk is slower than the network,
        // and the writer appends to the page cache at gigabytes a second.
        let (tx, rx) = mpsc::channel::<Vec<Record>>();
        let thread = std::thread::Builder::new()
            .name("userfetch-output".into())
            .spawn(move || -> Written {
                let mut count = 0u64;
                let mut failed = None;
                for batch in rx {
                    // After a failure the queue is still drained, so senders never wait on it.
                    if failed.is_some() {
                        continue;
                    }
                    for record in batch {
                        if let Err(e) = write_jsonl(&mut w, record.as_json()) {
                            failed = Some(
                                anyhow::Error::new(e).context(format!("cannot write {shown}")),
                            );
                            break;
                        }
                        count += 1;
                    }
                }
                let result = match failed {
                    Some(e) => Err(e),
                    None => Ok(count),
                };
                (out, w, result)
            })
            .context("cannot start the output writer thread")?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, records: Vec<Record>) {
        // A closed queue means the writer failed; `end` reports why.
        if let Some(tx) = &self.tx {
            let _ = tx.send(records);
        }
    }

    /// Waits for everything sent to be written; the file, its writer and the count.
    fn end(mut self) -> anyhow::Result<Written> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(written)) => Ok(written),
            Some(Err(_)) => anyhow::bail!("the output writer thread panicked"),
            None => anyhow::bail!("internal: output writer ended twice"),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Output {
    /// Streams the records into `out` as they are committed.
    pub fn stream(out: AtomicFile) -> anyhow::Result<Output> {
        Output::stream_holding(out, MAX_HELD)
    }

    fn stream_holding(out: AtomicFile, max_held: usize) -> anyhow::Result<Output> {
        Ok(Output(State::Streamed(Stream {
            max_held,
            expected: VecDeque::new(),
            held: foldhash::HashMap::default(),
            writer: Writer::start(out)?,
        })))
    }

    /// Rebuilds `out` from the store at the end; `why` goes to the debug log.
    pub fn rebuilt(out: AtomicFile, why: &str) -> Output {
        tracing::debug!("output: to be rebuilt from the store at the end ({why})");
        Output(State::Rebuilt(out))
    }

    /// An id at `line` was claimed for fetching: its record, if any, goes out in this order.
    pub fn claimed(&mut self, line: u64) {
        if let State::Streamed(s) = &mut self.0 {
            s.expected.push_back(line);
        }
    }

    /// An id was settled without being fetched (an earlier run's outcome, the cache): its
    /// record is not in hand, so the output has to come from the store.
    pub fn settled_elsewhere(&mut self) {
        self.abandon("an id was settled by an earlier run or from the cache");
    }

    /// Outcomes just committed: the records whose turn has come are written.
    pub fn committed(&mut self, outcomes: Vec<Outcome>) {
        let State::Streamed(s) = &mut self.0 else {
            return;
        };
        for o in outcomes {
            let record = match o.settled {
                Settled::Found(record) => Some(record),
                Settled::NotFound { .. } | Settled::Failed { .. } => None,
            };
            s.held.insert(o.line, record);
        }
        let mut ready = Vec::new();
        while let Some(line) = s.expected.front()
            && let Some(record) = s.held.remove(line)
        {
            s.expected.pop_front();
            ready.extend(record);
        }
        if !ready.is_empty() {
            s.writer.send(ready);
        }
        if s.held.len() > s.max_held {
            self.abandon("too many records held back behind a slow one");
        }
    }

    fn abandon(&mut self, why: &str) {
        self.0 = match std::mem::replace(&mut self.0, State::Moving) {
            State::Streamed(s) => {
                tracing::debug!("output: to be rebuilt from the store at the end ({why})");
                State::Abandoned(s.writer)
            }
            other => other,
        };
    }

    /// Puts the output in place and returns how many records it holds. Blocking: call it off
    /// the runtime. `rebuild` writes the whole file from the store.
    pub fn finish(
        self,
        rebuild: impl FnOnce(AtomicFile) -> anyhow::Result<u64>,
    ) -> anyhow::Result<u64> {
        match self.0 {
            State::Streamed(mut s) => {
                // Lines never settled (cancelled lookups) are skipped; the rest go in order.
                let rest: Vec<Record> = s
                    .expected
                    .drain(..)
                    .filter_map(|line| s.held.remove(&line).flatten())
                    .collect();
                s.writer.send(rest);
                let (mut file, w, written) = s.writer.end()?;
                match written {
                    Ok(count) => {
                        file.commit(w)?;
                        Ok(count)
                    }
                    Err(e) => {
                        // The store has every record: one more try, the slow way. Said as a
                        // warning is (a log line here printed its timestamp and module).
                        crate::console::note!(
                            "userfetch: {e:#}; trying once more, from the cache file"
                        );
                        file.restart(w)?;
                        rebuild(file)
                    }
                }
            }
            State::Abandoned(writer) => {
                let (mut file, w, _) = writer.end()?;
                file.restart(w)?;
                rebuild(file)
            }
            State::Rebuilt(file) => rebuild(file),
            State::Moving => anyhow::bail!("internal: output left between states"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn found(line: u64, id: u32) -> Outcome {
        Outcome {
            id: id.to_string(),
            line,
            settled: Settled::Found(
                Record::from_body(format!(r#"{{"id":{id}}}"#).as_bytes()).unwrap(),
            ),
        }
    }

    fn missing(line: u64) -> Outcome {
        Outcome {
            id: line.to_string(),
            line,
            settled: Settled::NotFound {
                message: "not found".into(),
                attempts: 1,
            },
        }
    }

    fn file(dir: &tempfile::TempDir) -> (std::path::PathBuf, AtomicFile) {
        let path = dir.path().join("out.jsonl");
        let file = AtomicFile::create(&path, "--out").unwrap();
        (path, file)
    }

    fn never(_: AtomicFile) -> anyhow::Result<u64> {
        panic!("rebuilt from the store although the stream held")
    }

    #[test]
    fn writes_in_input_order_whatever_order_answers_commit_in() {
        let dir = tempfile::tempdir().unwrap();
        let (path, out) = file(&dir);
        let mut out = Output::stream(out).unwrap();
        for line in [2, 3, 5, 8, 9] {
            out.claimed(line);
        }
        out.committed(vec![found(5, 50), missing(9)]);
        out.committed(vec![found(8, 80)]);
        out.committed(vec![found(3, 30), found(2, 20)]);
        assert_eq!(out.finish(never).unwrap(), 4);
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "{\"id\":20}\n{\"id\":30}\n{\"id\":50}\n{\"id\":80}\n"
        );
    }

    #[test]
    fn lines_that_never_settled_are_skipped_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (path, out) = file(&dir);
        let mut out = Output::stream(out).unwrap();
        for line in 1..=3 {
            out.claimed(line);
        }
        // Line 1 was cancelled: what came back behind it is still written, in order.
        out.committed(vec![found(3, 3), found(2, 2)]);
        assert_eq!(out.finish(never).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "{\"id\":2}\n{\"id\":3}\n"
        );
    }

    #[test]
    fn an_id_settled_elsewhere_hands_the_file_back_empty_to_be_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (path, out) = file(&dir);
        let mut out = Output::stream(out).unwrap();
        out.claimed(1);
        out.committed(vec![found(1, 1)]);
        out.settled_elsewhere();
        out.committed(vec![found(2, 2)]);
        let n = out
            .finish(|mut file| {
                let mut w = file.writer()?;
                w.write_all(b"rebuilt\n")?;
                file.commit(w)?;
                Ok(1)
            })
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read_to_string(path).unwrap(), "rebuilt\n");
    }

    #[test]
    fn too_many_held_back_behind_a_slow_line_gives_up_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (_, out) = file(&dir);
        let mut out = Output::stream_holding(out, 2).unwrap();
        for line in 1..=4 {
            out.claimed(line);
        }
        out.committed(vec![found(2, 2), found(3, 3)]);
        assert!(matches!(out.0, State::Streamed(_)));
        out.committed(vec![found(4, 4)]);
        assert!(matches!(out.0, State::Abandoned(_)));
        assert_eq!(out.finish(|_| Ok(7)).unwrap(), 7);
    }

    #[test]
    fn a_dropped_stream_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, out) = file(&dir);
        let mut out = Output::stream(out).unwrap();
        out.claimed(1);
        out.committed(vec![found(1, 1)]);
        drop(out);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
