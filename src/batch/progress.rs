//! The progress bar: one indicatif bar on stderr, and only when stderr is a terminal.
//!
//! One bar, redrawn at most ten times a second, never touched by the lookup tasks themselves:
//! the pipeline updates it as outcomes are counted. Warnings go through [`Progress::warn`],
//! which lifts the bar, prints the line above it and redraws, so no half-drawn bar is left
//! behind (indicatif #474).

use crate::console::note;
use std::io::IsTerminal;

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// `total` is the number of ids when it is known beforehand (a file), `None` for stdin,
    /// which gets a spinner with counts instead. `typed`: the ids come from a person typing
    /// them on the terminal, where a bar would be redrawn across their typing.
    pub fn new(total: Option<u64>, typed: bool) -> Progress {
        if typed {
            note!("userfetch: type ids, one a line; Ctrl-D ends the input");
        }
        if typed || !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
            };
        }
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr_with_hz(10)),
                "{bar:30.cyan/blue} {human_pos}/{human_len} ids  {per_sec:0}  ETA {eta}  {msg}",
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10)),
                "{spinner} {human_pos} ids  {per_sec:0}  {elapsed}  {msg}",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("eta", eta)
            .progress_chars("=> ");
        bar.set_style(style);
        crate::console::progress_on_stderr(Some(bar.clone()));
        Progress { bar }
    }

    /// Moves the bar: ids done so far, lookups on their way, failures so far.
    pub fn update(&self, done: u64, in_flight: usize, failed: u64) {
        if self.bar.is_hidden() {
            return;
        }
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

/// indicatif's own `{eta}`, except before the first id is done: with no rate to go by it says
/// "0s", which reads as "nearly finished" at 0/200000.
fn eta(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = if state.pos() == 0 {
        out.write_str("-")
    } else {
        write!(out, "{:#}", HumanDuration(state.eta()))
    };
}
