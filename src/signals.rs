//! Ctrl-C and SIGTERM as one stream, for the commands that stop cleanly on either.
//!
//! Once watched, a signal no longer ends the process by itself: watch only where something
//! answers it.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    interrupts: Signal,
    terminate: Signal,
}

impl Signals {
    pub fn watch() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupts: signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
        })
    }

    /// The next Ctrl-C or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            Some(()) = self.interrupts.recv() => {}
            Some(()) = self.terminate.recv() => {}
            else => std::future::pending().await,
        }
    }
}
