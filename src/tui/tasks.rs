//! Work that runs beside the screen: the clock, the health check, and the helper that makes
//! sync mode block for real.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

    /// Blocks the calling thread until the lookup ends; with it, whether a signal ended it.
    /// `while_blocked` (the screen's Ctrl-C as SIGINT) is held while it blocks, once the
    /// signals are watched: set before, a Ctrl-C at the freeze's first instant was taken by
    /// nobody and the freeze ran on.
    pub fn lookup(
        &self,
        id: &UserId,
        cancel: &CancellationToken,
        while_blocked: Option<fn() -> Box<dyn std::any::Any>>,
    ) -> (Outcome, bool) {
        let Some(runtime) = &self.runtime else {
            return (Err(crate::client::FetchError::cancelled(0)), false);
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let id = id.clone();
        let stopped = cancel.child_token();
        // The interface's own signal watch cannot run while it waits here; this runtime's
        // can. A signal ends the wait, and the interface, free again, reads the same signal
        // as Ctrl-C and quits. Watched on this runtime, and before the wait begins.
        let signalled = Arc::new(AtomicBool::new(false));
        let watching = {
            let _on = runtime.enter();
            watch_signals(stopped.clone(), signalled.clone(), while_blocked.is_some())
        };
        runtime.spawn(async move {
            // Retry notices would only arrive after the wait is over; the outcome says it all.
            let outcome = engine.lookup(&id, &stopped, &mut |_| {}).await;
            // Ends the watch too.
            stopped.cancel();
            let _ = tx.send(outcome);
        });
        // Only with a watch to end the wait: otherwise Ctrl-C would kill the process with
        // the terminal raw.
        let interrupting = while_blocked.filter(|_| watching).map(|set| set());
        let outcome = rx
            .recv()
            .unwrap_or_else(|_| Err(crate::client::FetchError::cancelled(0)));
        drop(interrupting);
        (outcome, signalled.load(Ordering::Relaxed))
    }
}

/// Cancels `token`, and sets `signalled`, on any of the signals the interface quits on
/// (and SIGQUIT, on the screen: `quit`), until it is cancelled otherwise. Registered at once,
/// on the runtime entered; false if the signals cannot be watched (they are then left to the
/// interface).
fn watch_signals(token: CancellationToken, signalled: Arc<AtomicBool>, quit: bool) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut signals) = crate::signals::Signals::watch() else {
        return false;
    };
    // Not in the headless demo, where nothing would read it after the freeze.
    let mut quit = quit.then(|| signal(SignalKind::quit()).ok()).flatten();
    tokio::spawn(async move {
        let quitting = async {
            match quit.as_mut() {
                Some(quit) => quit.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signals.recv() => {}
            _ = quitting => {}
            () = token.cancelled() => return,
        }
        signalled.store(true, Ordering::Relaxed);
        token.cancel();
    });
    true
}

impl Drop for Blocking {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's context panics; this does not wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
