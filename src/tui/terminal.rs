//! The real terminal under the screen: raw mode and the alternate screen set up and given
//! back (on quitting, on a panic, around Ctrl-Z), and the events read from it, signals
//! included.

use std::io::IsTerminal;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Keys, pastes and resizes from the terminal; Ctrl-Z handled on the way (the process stops
/// and comes back), and signals read as keys: SIGINT, SIGTERM, SIGHUP and SIGQUIT as Ctrl-C, SIGCONT
/// as Ctrl-L (draw everything again).
pub(super) fn events() -> impl futures::Stream<Item = std::io::Result<Event>> + Unpin {
    let keys = crossterm::event::EventStream::new().map(|event| match event {
        Ok(Event::Key(key)) if super::is_ctrl(&key, 'z') => {
            suspend();
            Ok(Event::Key(ctrl('l')))
        }
        other => other,
    });
    futures::stream::select(
        futures::stream::select(keys, terminate_as_ctrl_c()),
        resumed_as_ctrl_l(),
    )
}

/// Whether bytes typed on the terminal (stdin, which the screen requires to be one) wait
/// unread in its input queue. Written by hand: crossterm tells only whether an event can be
/// read, and right after a sync freeze its reader thread has not handed them over yet.
pub(super) fn unread_input() -> bool {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which outlives the call.
    let asked = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut pending) };
    asked == 0 && pending > 0
}

/// Held while a sync lookup blocks: the keyboard's Ctrl-C sends SIGINT, as it does to any
/// program blocked in a call. In raw mode it is a key, and keys wait out the freeze (17 s
/// behind a Retry-After, with nothing to stop it); the blocking wait watches for signals
/// (from before this is set), so the lookup ends at once and the loop quits. Ctrl-Z and
/// Ctrl-\ stay keys: their signals would stop or end the process with the terminal raw.
/// Written by hand: crossterm sets raw mode as a whole, not one flag of it.
pub(super) fn ctrl_c_interrupts() -> Box<dyn std::any::Any> {
    use std::os::fd::AsRawFd;
    /// What was changed, put back: ISIG off again, the suspend and quit characters as they
    /// were. Only that, and only while the screen still holds raw mode: after a panic the
    /// hook has restored the terminal the program started with, and putting back the whole
    /// of the raw settings then left the shell without echo.
    struct Restore {
        suspend: libc::cc_t,
        quit: libc::cc_t,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            if !crossterm::terminal::is_raw_mode_enabled().unwrap_or(false) {
                return;
            }
            let fd = std::io::stdin().as_raw_fd();
            // SAFETY: as in `ctrl_c_interrupts`.
            unsafe {
                let mut now: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(fd, &mut now) != 0 {
                    return;
                }
                now.c_lflag &= !libc::ISIG;
                now.c_cc[libc::VSUSP] = self.suspend;
                now.c_cc[libc::VQUIT] = self.quit;
                libc::tcsetattr(fd, libc::TCSANOW, &now);
            }
        }
    }
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: tcgetattr writes a termios, a plain C struct for which all zero bytes are a
    // valid value, through a pointer valid for the call; tcsetattr only reads one.
    unsafe {
        let mut current: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut current) != 0 {
            return Box::new(());
        }
        let restore = Restore {
            suspend: current.c_cc[libc::VSUSP],
            quit: current.c_cc[libc::VQUIT],
        };
        current.c_lflag |= libc::ISIG;
        current.c_cc[libc::VSUSP] = libc::_POSIX_VDISABLE;
        current.c_cc[libc::VQUIT] = libc::_POSIX_VDISABLE;
        if libc::tcsetattr(fd, libc::TCSANOW, &current) != 0 {
            return Box::new(());
        }
        Box::new(restore)
    }
}

/// The terminal was hung up: EIO (or ENXIO) from it, or an error of another shape (crossterm
/// words some of its own) while stdin is no longer a terminal (`isatty` fails on a hung-up
/// one).
pub(super) fn gone(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| matches!(e.raw_os_error(), Some(libc::EIO | libc::ENXIO)))
    }) || !std::io::stdin().is_terminal()
}

/// SIGINT from outside (`kill -INT`, `timeout -s INT`; in raw mode the keyboard's Ctrl-C is a
/// key, not a signal), SIGTERM and SIGHUP (the terminal window closing; not under nohup) read as Ctrl-C, so the
/// loop ends through its one exit path and the terminal is restored rather than left raw.
/// SIGQUIT too (`kill -QUIT`; the keyboard's Ctrl-\ is a key here): by default it ended the
/// process with the terminal left raw.
fn terminate_as_ctrl_c() -> impl futures::Stream<Item = std::io::Result<Event>> {
    let ctrl_c = Event::Key(ctrl('c'));
    let also = ctrl_c.clone();
    // Signals that cannot be watched keep their default: they end the process.
    let stops = futures::stream::unfold(crate::signals::Signals::watch().ok(), move |signals| {
        let ctrl_c = ctrl_c.clone();
        async move {
            let mut signals = signals?;
            signals.recv().await;
            Some((Ok(ctrl_c), Some(signals)))
        }
    });
    let quits = futures::stream::unfold(
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::quit()).ok(),
        move |quit| {
            let ctrl_c = also.clone();
            async move {
                let mut quit = quit?;
                quit.recv().await?;
                Some((Ok(ctrl_c), Some(quit)))
            }
        },
    );
    futures::stream::select(stops, quits).boxed()
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

/// Ctrl-Z: in raw mode the key reaches the program instead of stopping it, so the program
/// does what the terminal would have done, handing the terminal back first: SIGTSTP to the
/// whole process group, so a wrapper (`time userfetch`, `make run`) stops too and the shell
/// gets the terminal. SIGTSTP keeps its default action, which the kernel ignores in a process
/// group no shell controls: there a stop could never be resumed, and the screen comes back.
fn suspend() {
    leave();
    // SAFETY: kill(2) with pid 0 signals this process's group; it touches no memory of ours.
    unsafe {
        libc::kill(0, libc::SIGTSTP);
    }
    let _ = enter();
}

/// SIGCONT, after a stop the program did not ask for (`kill -STOP`, `kill -TSTP`): the shell
/// has put the terminal back in cooked mode meanwhile, with its own text on it. Raw mode and
/// the alternate screen are set up again, and the loop reads Ctrl-L and draws everything anew.
fn resumed_as_ctrl_l() -> impl futures::Stream<Item = std::io::Result<Event>> {
    use tokio::signal::unix::{SignalKind, signal};
    // Not watchable: resuming still works, only without the redraw.
    futures::stream::unfold(
        signal(SignalKind::from_raw(libc::SIGCONT)).ok(),
        |resumed| async move {
            let mut resumed = resumed?;
            resumed.recv().await?;
            // The record of raw mode says "on" while the shell turned it off: cleared first,
            // or enabling it would do nothing.
            let _ = crossterm::terminal::disable_raw_mode();
            let _ = enter();
            Some((Ok(Event::Key(ctrl('l'))), Some(resumed)))
        },
    )
    .boxed()
}

/// Raw mode, the alternate screen and bracketed paste: pasted text arrives as one event, not
/// as keys (a pasted id starting with q would otherwise quit). A terminal without bracketed
/// paste ignores the request.
fn enter() -> std::io::Result<()> {
    crossterm::terminal::enable_raw_mode()?;
    crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::event::EnableBracketedPaste
    )
}

/// The terminal as it was. Failures are ignored: the terminal may be gone (a closed window),
/// and there is nowhere left to report them.
fn leave() {
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::event::DisableBracketedPaste,
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = crossterm::terminal::disable_raw_mode();
}

/// The terminal in raw mode on the alternate screen, restored when dropped, whichever way the
/// loop ends, and by the panic hook on a panic. Not `ratatui::init`: its restore reports a
/// failure with `eprintln!`, which panics when the terminal has gone (a closed window), and
/// in its panic hook that aborted the process, skipping the cache's last writes.
pub(super) struct Screen {
    /// Never dropped: ratatui's `Drop` shows a hidden cursor and reports a failure with
    /// `eprintln!` too. The process ends soon after the screen closes.
    pub(super) terminal: std::mem::ManuallyDrop<ratatui::DefaultTerminal>,
}

/// Cancelled by the panic hook while a screen is open. A panic in a spawned task (the clock,
/// the health check) or on another thread (the cache's) is caught there, not by the loop: the
/// terminal was restored for its message, and the screen went on drawing on a cooked one.
/// With this the loop ends instead.
static ON_PANIC: std::sync::Mutex<Option<CancellationToken>> = std::sync::Mutex::new(None);

impl Screen {
    /// `panicked` is cancelled if anything panics while the screen is open.
    pub(super) fn open(panicked: CancellationToken) -> anyhow::Result<Screen> {
        static RESTORE_ON_PANIC: std::sync::Once = std::sync::Once::new();
        RESTORE_ON_PANIC.call_once(|| {
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                leave();
                hook(info);
                tell_the_screen();
            }));
        });
        let opened = enter().and_then(|()| {
            ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))
        });
        let terminal = match opened {
            Ok(terminal) => terminal,
            Err(e) => {
                leave();
                return Err(anyhow::Error::new(e).context("cannot set up the terminal"));
            }
        };
        crate::console::screen_on_stderr(std::io::stderr().is_terminal());
        *ON_PANIC
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(panicked);
        Ok(Screen {
            terminal: std::mem::ManuallyDrop::new(terminal),
        })
    }
}

/// Cancels the open screen's token, from the panic hook. `try_lock`: the panic may be this
/// very lock's holder's (a poisoned lock still holds the token).
fn tell_the_screen() {
    let on_panic = match ON_PANIC.try_lock() {
        Ok(on_panic) => on_panic,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    if let Some(token) = on_panic.as_ref() {
        token.cancel();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        *ON_PANIC
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        leave();
        crate::console::screen_on_stderr(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::PoisonError;

    /// What the panic hook does once it has restored the terminal: the screen's loop is told,
    /// also when the panic poisoned the lock that holds its token.
    #[test]
    fn a_panic_tells_the_open_screen_even_through_a_poisoned_lock() {
        let token = CancellationToken::new();
        *ON_PANIC.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        tell_the_screen();
        assert!(token.is_cancelled());

        let second = CancellationToken::new();
        *ON_PANIC.lock().unwrap_or_else(PoisonError::into_inner) = Some(second.clone());
        let _ = std::thread::spawn(|| {
            let _held = ON_PANIC.lock();
            panic!("a panic while the lock is held poisons it");
        })
        .join();
        assert!(ON_PANIC.is_poisoned());
        tell_the_screen();
        assert!(second.is_cancelled());
        *ON_PANIC.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
