//! Work that runs beside the screen: the clock, the health check, and the helper that makes
//! sync mode block for real.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::app::Msg;
use crate::client::Client;
use crate::engine::{Engine, Outcome};
use crate::id::UserId;

/// Ticks once a second with the wall-clock time. Its only job is to be visibly alive: when the
/// interface is blocked, the clock on screen stops.
pub fn spawn_clock(tx: UnboundedSender<Msg>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.cancelled() => return,
            }
            if tx.send(Msg::Clock(SystemTime::now())).is_err() {
                return;
            }
        }
    });
}

/// Asks the API's `/health` every `every`, reporting latency or the classified error. One
/// request at a time: a slow API gets fewer checks, never a pile of them.
pub fn spawn_health(
    client: Client,
    every: Duration,
    tx: UnboundedSender<Msg>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let result = tokio::select! {
                result = client.health() => result,
                () = stop.cancelled() => return,
            };
            if tx.send(Msg::Health(result)).is_err() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
        }
    });
}

/// Runs sync-mode lookups so that they block the caller's thread for real.
///
/// The default runtime has one thread, where `block_in_place` is not available; and a lookup
/// can't be blocked on from inside the runtime that must drive its connections. So the lookup
/// runs on a helper runtime, with its own HTTP client (connections belong to the runtime that
/// opened them), while the interface thread waits on a plain channel: nothing on it moves.
pub struct Blocking {
    runtime: Option<tokio::runtime::Runtime>,
    engine: Engine,
}

impl Blocking {
    pub fn new(engine: &Engine) -> anyhow::Result<Blocking> {
        let engine = engine.with_client(Client::new(engine.client().config().clone())?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("userfetch-sync-lookup")
            .enable_all()
            .build()?;
        Ok(Blocking {
            runtime: Some(runtime),
            engine,
        })
    }

    /// Blocks the calling thread until the lookup ends.
    pub fn lookup(&self, id: &UserId, cancel: &CancellationToken) -> Outcome {
        let Some(runtime) = &self.runtime else {
            return Err(crate::client::FetchError::cancelled(0));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let id = id.clone();
        let cancel = cancel.clone();
        runtime.spawn(async move {
            // The interface's own signal watch cannot run while it waits here; this runtime's
            // can. A signal ends the wait, and the interface, free again, reads the same
            // signal as Ctrl-C and quits. (On the screen the Ctrl-C key sends SIGINT meanwhile:
            // see `terminal::ctrl_c_interrupts`.)
            let stopped = cancel.child_token();
            watch_signals(stopped.clone());
            // Retry notices would only arrive after the wait is over; the outcome says it all.
            let outcome = engine.lookup(&id, &stopped, &mut |_| {}).await;
            // Ends the watch too.
            stopped.cancel();
            let _ = tx.send(outcome);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(crate::client::FetchError::cancelled(0)))
    }
}

/// Cancels `token` on any of the signals the interface quits on, until it is cancelled
/// otherwise. Signals that cannot be watched are left to the interface.
fn watch_signals(token: CancellationToken) {
    let Ok(mut signals) = crate::signals::Signals::watch() else {
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = signals.recv() => token.cancel(),
            () = token.cancelled() => {}
        }
    });
}

impl Drop for Blocking {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's context panics; this does not wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
