//! Ctrl-C, SIGTERM and SIGHUP as one stream, for the commands that stop cleanly on any.
//!
//! Once watched, a signal no longer ends the process by itself: watch only where something
//! answers it.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    interrupts: Signal,
    terminate: Signal,
    /// None when the process started with SIGHUP ignored (`nohup`): watching it would
    /// install a handler in place of that, and a closed terminal would then stop the run.
    hangup: Option<Signal>,
}

impl Signals {
    pub fn watch() -> anyhow::Result<Signals> {
        let hangup = if hangup_ignored() {
            None
        } else {
            Some(signal(SignalKind::hangup()).context("cannot watch for SIGHUP")?)
        };
        Ok(Signals {
            interrupts: signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
            hangup,
        })
    }

    /// The next Ctrl-C, SIGTERM or SIGHUP (a closed terminal or ssh session).
    pub async fn recv(&mut self) -> Received {
        let hangup = async {
            match self.hangup.as_mut() {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = self.interrupts.recv() => Received::Interrupt,
            Some(()) = self.terminate.recv() => Received::Terminate,
            Some(()) = hangup => Received::Hangup,
            else => std::future::pending().await,
        }
    }
}

/// Which signal arrived: messages about stopping tell the way to stop harder, and a process
/// stopped by SIGTERM (a service manager, say) has nobody at a keyboard to press Ctrl-C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Interrupt,
    Terminate,
    Hangup,
}

impl Received {
    /// How to send another, for "… to cancel".
    pub fn again(self) -> &'static str {
        match self {
            Received::Interrupt => "Ctrl-C again",
            Received::Terminate => "SIGTERM or Ctrl-C again",
            Received::Hangup => "SIGHUP or Ctrl-C again",
        }
    }
}

/// Whether SIGHUP is ignored, as `nohup` leaves it for the program it starts. Asked of the
/// kernel: neither tokio nor signal-hook can tell an ignored signal from a default one.
fn hangup_ignored() -> bool {
    // SAFETY: with a null new action, sigaction(2) only writes the current disposition into
    // `current`, a plain C struct for which all zero bytes are a valid value.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}
