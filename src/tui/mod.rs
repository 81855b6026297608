//! The interactive screen: type an id, watch its lookup, never wait for the interface.
//!
//! Elm-like: [`app`] holds the state and the pure `update`; [`view`] draws it; [`run`] is the
//! loop that feeds messages in and carries effects out; [`tasks`] is the work beside it (a
//! clock, a health check, and the helper that makes sync mode block for real); `terminal`
//! sets the real terminal up, gives it back, and reads its events.

pub mod app;
pub mod run;
pub mod tasks;
mod terminal;
pub mod view;

use std::io::IsTerminal;
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
    // The screen says which API it asks; a log sent to a file (-v 2>log) should too.
    tracing::info!("asking {api}");
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
        color: wants_color(std::env::var_os("NO_COLOR").as_deref()),
    };
    let mut app = app::App::new(config, Instant::now());
    let ctx = run::Context {
        max_in_flight: crate::open_files::lookups_at_once(
            session.engine.client().config().http2,
            session.engine.client().config().direct,
        ),
        unread_input: Some(terminal::unread_input),
        while_blocked: Some(terminal::ctrl_c_interrupts),
        ..run::Context::new(session.engine.clone())
    };
    let outcome = {
        let mut screen = terminal::Screen::open(ctx.panicked.clone())?;
        run::run(
            &mut screen.terminal,
            terminal::events(),
            &mut app,
            &ctx,
            None,
        )
        .await
        // The screen is restored here, before anything is printed or waited for.
    };
    // Waiting for the embedded server's graceful stop would hold up `q` by up to a second
    // while connections are open; the process is ending, so only the cache is closed.
    session.engine.close().await;
    match outcome {
        Ok(run::Exit::Quit) => Ok(ExitCode::Success),
        Ok(run::Exit::Interrupted) => Ok(ExitCode::Interrupted),
        // A closed window or ssh session: SIGHUP reads as Ctrl-C, but a frame drawn (or a key
        // read) before it was handled fails first. Either way the user left.
        Err(e) if terminal::gone(&e) => Ok(ExitCode::Interrupted),
        Err(e) => Err(e),
    }
}

/// Whether `key` is Ctrl with `c`, pressed (a terminal that reports releases sends it twice).
fn is_ctrl(key: &crossterm::event::KeyEvent, c: char) -> bool {
    use crossterm::event::{KeyCode, KeyEventKind, KeyModifiers};
    key.code == KeyCode::Char(c)
        && key.modifiers.contains(KeyModifiers::CONTROL)
        && key.kind != KeyEventKind::Release
}

/// The NO_COLOR convention (no-color.org): set and not empty turns colour off; an empty
/// value counts as unset, as for every variable userfetch reads.
fn wants_color(no_color: Option<&std::ffi::OsStr>) -> bool {
    no_color.is_none_or(std::ffi::OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_no_color_leaves_colour_on() {
        assert!(wants_color(None));
        assert!(wants_color(Some("".as_ref())));
        assert!(!wants_color(Some("1".as_ref())));
        assert!(!wants_color(Some("0".as_ref())), "any value but empty");
    }
}
