//! The progress bar: one indicatif bar on stderr, and only when stderr is a terminal.
//!
//! One bar, redrawn at most ten times a second, never touched by the lookup tasks themselves:
//! the pipeline updates it as outcomes are counted. Warnings go through [`Progress::warn`],
//! which lifts the bar, prints the line above it and redraws, so no half-drawn bar is left
//! behind (indicatif #474).

use crate::console::note;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    /// Ids fetched by this run, for the rate and the ETA: indicatif's own estimate counts the
    /// ids a resumed run skips in its first milliseconds, and says "ETA 0s" for an hour's
    /// work left.
    fetched: Arc<AtomicU64>,
}

impl Progress {
    /// `total` is the number of ids when it is known beforehand (a file), `None` for stdin,
    /// which gets a spinner with counts instead. `typed`: the ids come from a person typing
    /// them on the terminal, where a bar would be redrawn across their typing.
    pub fn new(total: Option<u64>, typed: bool) -> Progress {
        if typed {
            note!("userfetch: type ids, one a line; Ctrl-D ends the input");
        }
        let fetched = Arc::new(AtomicU64::new(0));
        if typed || !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                fetched,
            };
        }
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr_with_hz(10)),
                "{bar:30.cyan/blue} {human_pos}/{human_len} ids  {rate}  ETA {eta}  {msg}",
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10)),
                "{spinner} {human_pos} ids  {rate}  {elapsed}  {msg}",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", {
                let fetched = fetched.clone();
                move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write_rate(per_second(&fetched, state), out);
                }
            })
            .with_key("eta", {
                let fetched = fetched.clone();
                move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write_eta(per_second(&fetched, state), state, out);
                }
            })
            .progress_chars("=> ");
        bar.set_style(style);
        crate::console::progress_on_stderr(Some(bar.clone()));
        Progress { bar, fetched }
    }

    /// Moves the bar: ids done so far (skipped ones included), ids this run fetched, lookups
    /// on their way, failures so far.
    pub fn update(&self, done: u64, fetched: u64, in_flight: usize, failed: u64) {
        if self.bar.is_hidden() {
            return;
        }
        self.fetched.store(fetched, Ordering::Relaxed);
        // Only what changed: each change is a redraw.
        let message = format!("in flight {in_flight}  errors {failed}");
        if self.bar.message() != message {
            self.bar.set_message(message);
        }
        if self.bar.position() != done {
            self.bar.set_position(done);
        }
    }

    /// A line for the user, above the bar (or plainly on stderr when there is no bar).
    pub fn warn(&self, line: &str) {
        if self.bar.is_hidden() {
            note!("{line}");
        } else {
            self.bar.suspend(|| note!("{line}"));
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
        crate::console::progress_on_stderr(None);
    }
}

/// Ids fetched per second since the bar appeared; `None` before the first.
fn per_second(fetched: &AtomicU64, state: &ProgressState) -> Option<f64> {
    let fetched = fetched.load(Ordering::Relaxed);
    let secs = state.elapsed().as_secs_f64();
    (fetched > 0 && secs > 0.0).then(|| fetched as f64 / secs)
}

fn write_rate(rate: Option<f64>, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
    match rate {
        Some(r) if r < 10.0 => write!(out, "{r:.1}/s"),
        Some(r) => write!(out, "{r:.0}/s"),
        None => out.write_str("-/s"),
    }
}

/// The ids left at the rate this run fetches them; "-" until there is a rate to go by
/// (indicatif says "0s" then, which reads as nearly finished at 0/200000).
fn write_eta(
    rate: Option<f64>,
    state: &ProgressState,
    out: &mut dyn std::fmt::Write,
) -> std::fmt::Result {
    let left = state.len().unwrap_or(0).saturating_sub(state.pos());
    match rate {
        Some(rate) => {
            let secs = (left as f64 / rate).min(Duration::MAX.as_secs_f64() / 2.0);
            write!(out, "{:#}", HumanDuration(Duration::from_secs_f64(secs)))
        }
        None => out.write_str("-"),
    }
}
