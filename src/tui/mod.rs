//! The interactive screen: type an id, watch its lookup, never wait for the interface.
//!
//! Elm-like: [`app`] holds the state and the pure `update`; [`view`] draws it; [`run`] is the
//! loop that feeds messages in and carries effects out; [`tasks`] is the work beside it (a
//! clock, a health check, and the helper that makes sync mode block for real).

pub mod app;
pub mod run;
pub mod tasks;
pub mod view;

use std::io::IsTerminal;

use futures::StreamExt;
use std::time::Instant;

use crate::cli::{GlobalOpts, UiArgs};
use crate::exit::{self, ExitCode};
use crate::session::Session;

/// Opens the screen on the real terminal and runs it until the user quits.
pub async fn main(opts: &GlobalOpts, args: &UiArgs) -> anyhow::Result<ExitCode> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(exit::usage(
            "the interactive screen needs a terminal on stdin and stdout; \
             in scripts and pipes use 'userfetch get ID...' or 'userfetch batch'",
        ));
    }
    if opts.verbose > 0 && std::io::stderr().is_terminal() {
        return Err(exit::usage(
            "-v writes its log to stderr, which the screen covers: send it to a file (2>userfetch.log)",
        ));
    }
    let session = Session::start(opts).await?;
    let api = match &session.embedded {
        Some(server) => format!("embedded demo API at {}", server.base_url()),
        None => session
            .engine
            .client()
            .config()
            .template
            .as_str()
            .to_owned(),
    };
    let config = app::Config {
        threads: opts.threads,
        timeout: opts.timeout,
        mode: if args.sync {
            app::Mode::Sync
        } else {
            app::Mode::Async
        },
        api,
        demo_users: session
            .embedded
            .as_ref()
            .map(|_| crate::server::ServerConfig::default().users),
        color: std::env::var_os("NO_COLOR").is_none(),
    };
    let mut app = app::App::new(config, Instant::now());
    let ctx = run::Context::new(session.engine.clone(), opts.max_age);
    let outcome = {
        let mut screen = Screen::open()?;
        let events =
            futures::stream::select(crossterm::event::EventStream::new(), terminate_as_ctrl_c());
        run::run(&mut screen.terminal, events, &mut app, &ctx, None).await
        // The screen is restored here, before anything is printed or waited for.
    };
    // Waiting for the embedded server's graceful stop would hold up `q` by up to a second
    // while connections are open; the process is ending, so only the cache is closed.
    session.engine.close().await;
    match outcome? {
        run::Exit::Quit => Ok(ExitCode::Success),
        run::Exit::Interrupted => Ok(ExitCode::Interrupted),
    }
}

/// SIGINT from outside (`kill -INT`, `timeout -s INT`; in raw mode the keyboard's Ctrl-C is a
/// key, not a signal), SIGTERM and SIGHUP (the terminal window closing; not under nohup) read as Ctrl-C, so the
/// loop ends through its one exit path and the terminal is restored rather than left raw.
fn terminate_as_ctrl_c() -> impl futures::Stream<Item = std::io::Result<crossterm::event::Event>> {
    use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
    let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    // Signals that cannot be watched keep their default: they end the process.
    futures::stream::unfold(crate::signals::Signals::watch().ok(), move |signals| {
        let ctrl_c = ctrl_c.clone();
        async move {
            let mut signals = signals?;
            signals.recv().await;
            Some((Ok(ctrl_c), Some(signals)))
        }
    })
    .boxed()
}

/// The terminal in raw mode on the alternate screen, restored when dropped, whichever way the
/// loop ends. A panic is covered by the hook `ratatui::try_init` installs.
struct Screen {
    terminal: ratatui::DefaultTerminal,
}

impl Screen {
    fn open() -> anyhow::Result<Screen> {
        let terminal = ratatui::try_init()
            .map_err(|e| anyhow::Error::new(e).context("cannot set up the terminal"))?;
        // Pasted text arrives as one event, not as keys: a pasted id starting with q would
        // otherwise quit. A terminal without bracketed paste ignores the request.
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableBracketedPaste);
        crate::console::screen_on_stderr(std::io::stderr().is_terminal());
        Ok(Screen { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableBracketedPaste);
        ratatui::restore();
        crate::console::screen_on_stderr(false);
    }
}
