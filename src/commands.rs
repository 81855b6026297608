//! From parsed arguments to an exit code: logging, the runtime, dispatch, error reporting.

use std::time::Duration;

use crate::console::{note, say};

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, GlobalOpts, ServeArgs};
use crate::exit::{self, ExitCode};
use crate::server::{self, ServerConfig};
use crate::session::Session;

/// Runs the command line and reports any error as one `userfetch: …` line on stderr.
pub fn main(cli: Cli) -> ExitCode {
    init_tracing(cli.global.verbose);
    // Thousands of lookups in flight need thousands of sockets; the default soft limit (often
    // 1024) would turn that into "too many open files".
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!("could not raise the open-file limit: {e}");
    }
    let runtime = match build_runtime(cli.global.threads) {
        Ok(rt) => rt,
        Err(e) => {
            note!("userfetch: cannot start the async runtime: {e}");
            return ExitCode::Failure;
        }
    };
    let result = runtime.block_on(run(cli));
    // Work the command no longer waits for may still be running on the blocking pool (the
    // check of a huge input that Ctrl-C cut short): dropping the runtime would wait for it,
    // and the process would hang with its handlers still swallowing Ctrl-C.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        // The reader took what it wanted (`| head -1`); nothing went wrong.
        Err(error)
            if error
                .chain()
                .any(|e| e.is::<crate::console::StdoutClosed>()) =>
        {
            ExitCode::Success
        }
        Err(error) => {
            note!("userfetch: {}", exit::describe(&error));
            exit::code_for(&error)
        }
    }
}

fn build_runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.into())
            .enable_all()
            .build()
    }
}

fn init_tracing(verbose: u8) {
    let filter = match verbose {
        0 => "warn",
        1 => "warn,userfetch=info",
        2 => "warn,userfetch=debug",
        _ => "debug",
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(crate::console::log_writer)
        // No colours: their escape sequences would not pass the writer, which makes every
        // line safe for a terminal.
        .with_ansi(false);
    // Without -v nobody asked for a log: a warning reads as every other line userfetch
    // says, not as a log line with a timestamp and a module path.
    let _ = if verbose == 0 {
        builder.event_format(Plain).try_init()
    } else {
        builder.try_init()
    };
}

/// `userfetch: MESSAGE`: a log event written as a warning is.
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "userfetch: ")?;
        // A library's warning (hyper, rustls, SQLite) is told apart from userfetch's own.
        let target = event.metadata().target();
        if !target.starts_with("userfetch") {
            write!(writer, "{target}: ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Cancelled on the first Ctrl-C (or SIGTERM, or SIGHUP when not under nohup); front ends
/// decide what that means for them.
fn interrupt_token() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let trigger = token.clone();
    let mut signals = crate::signals::Signals::watch()?;
    tokio::spawn(async move {
        signals.recv().await;
        trigger.cancel();
    });
    Ok(token)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Get(args)) => {
            let ids = crate::get::parse_ids(&args.ids)?;
            let session = start_session(&cli.global).await?;
            let interrupt = interrupt_token()?;
            let code = crate::get::run(
                &session.engine,
                session.embedded.is_some(),
                ids,
                &args,
                &interrupt,
            )
            .await;
            session.close().await;
            code
        }
        Some(Command::Serve(args)) => serve(&args).await,
        Some(Command::Batch(args)) => crate::batch::run(&cli.global, &args).await,
        Some(Command::Completions { shell }) => {
            // Generated into memory first: clap_complete panics when its write fails (a
            // reader that stopped early, a full disk).
            let mut script = Vec::new();
            let mut command = crate::cli::for_completions();
            clap_complete::generate(shell, &mut command, "userfetch", &mut script);
            crate::console::write_bytes(&script)?;
            Ok(ExitCode::Success)
        }
        Some(Command::Ui(args)) => crate::tui::main(&cli.global, &args).await,
        Some(Command::Demo(args)) => crate::demo::main(&cli.global, &args).await,
        None => crate::tui::main(&cli.global, &crate::cli::UiArgs::default()).await,
    }
}

async fn start_session(opts: &GlobalOpts) -> anyhow::Result<Session> {
    let session = Session::start(opts).await?;
    if let Some(line) = session.announce() {
        note!("{line}");
    }
    Ok(session)
}

async fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    crate::server::check_fault_shares(&args.faults).map_err(exit::usage)?;
    let config = ServerConfig {
        addr: std::net::SocketAddr::new(args.bind, args.port),
        users: args.users,
        latency: args.latency,
        jitter: args.jitter,
        faults: args.faults.clone(),
        retry_after: args.retry_after,
        log_requests: true,
        ..ServerConfig::default()
    };
    // Handlers go in before the URL is printed: a script that reads the URL and at once
    // sends SIGINT must stop the server, not kill it.
    let mut signals = crate::signals::Signals::watch()?;
    let handle = server::start(config).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another program listens there: choose another --port, or --port 0 for a free one)"
        } else {
            ""
        };
        exit::usage(format!(
            "cannot listen on {}:{}: {e}{hint}",
            args.bind, args.port
        ))
    })?;
    // The template on stdout, alone on its line, so scripts can capture it.
    say!("{}", handle.url_template())?;
    let users = match args.users {
        0 => "no users (every id answers 404)".to_owned(),
        n => format!("users 1 to {n}"),
    };
    note!("{}", serving(&users, &handle.base_url(), args.bind));
    if let Some(line) = injecting(args.latency, args.jitter, &args.faults) {
        note!("{line}");
    }
    signals.recv().await;
    note!("userfetch: stopping the demo API");
    handle.shutdown().await;
    Ok(ExitCode::Success)
}

/// What `serve` says once it listens: where, and, bound to every address, that it is.
fn serving(users: &str, url: &str, bind: std::net::IpAddr) -> String {
    let (everywhere, bound) = match bind {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => (
            " and on every IPv4 address of this machine",
            "bound to 0.0.0.0; ",
        ),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (" and on every address of this machine", "bound to ::; ")
        }
        _ => ("", ""),
    };
    format!("userfetch: demo API serving {users} at {url}{everywhere} ({bound}Ctrl-C stops it)")
}

/// What `serve` does to every answer, said at the start: a server left with an old
/// `--fault 429` fails every request, and without `-v` nothing else would say why.
fn injecting(
    latency: Duration,
    jitter: Duration,
    faults: &[crate::server::FaultRate],
) -> Option<String> {
    let mut parts = Vec::new();
    let shown = |d| humantime::format_duration(d).to_string();
    match (latency.is_zero(), jitter.is_zero()) {
        (true, true) => {}
        (false, true) => parts.push(format!("answers after {}", shown(latency))),
        (true, false) => parts.push(format!("answers after up to {}", shown(jitter))),
        (false, false) => parts.push(format!(
            "answers after {} plus up to {} of jitter",
            shown(latency),
            shown(jitter)
        )),
    }
    // A fault at rate 0 never fires: nothing to say of it.
    let each: Vec<String> = faults
        .iter()
        .filter(|f| f.rate > 0.0)
        .map(|f| {
            if f.rate >= 1.0 {
                format!("{} on every request", f.fault)
            } else if f.rate < 0.0001 {
                format!("{} on under 0.01 % of requests", f.fault)
            } else {
                // To a hundredth of a percent: 0.07 × 100 is 7.000000000000001.
                let percent = (f.rate * 10_000.0).round() / 100.0;
                format!("{} on {percent} % of requests", f.fault)
            }
        })
        .collect();
    if !each.is_empty() {
        parts.push(format!("faults: {}", each.join(", ")));
    }
    (!parts.is_empty()).then(|| format!("userfetch: injecting: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    #[test]
    fn serve_says_where_it_listens_in_one_bracket() {
        let url = "http://127.0.0.1:8080";
        assert_eq!(
            serving("users 1 to 5", url, "127.0.0.1".parse().unwrap()),
            "userfetch: demo API serving users 1 to 5 at http://127.0.0.1:8080 (Ctrl-C stops it)"
        );
        assert_eq!(
            serving("users 1 to 5", url, "0.0.0.0".parse().unwrap()),
            "userfetch: demo API serving users 1 to 5 at http://127.0.0.1:8080 and on every IPv4 \
             address of this machine (bound to 0.0.0.0; Ctrl-C stops it)"
        );
    }

    #[test]
    fn serve_says_what_it_injects() {
        let faults: Vec<crate::server::FaultRate> =
            ["429=0.5", "503=0.07", "500=0", "close=0.00001"]
                .iter()
                .map(|f| f.parse().unwrap())
                .collect();
        assert_eq!(injecting(Duration::ZERO, Duration::ZERO, &[]), None);
        let both = injecting(
            Duration::from_millis(50),
            Duration::from_millis(20),
            &faults,
        );
        assert_eq!(
            both.as_deref(),
            Some(
                "userfetch: injecting: answers after 50ms plus up to 20ms of jitter; faults: \
                 429 on 50 % of requests, 503 on 7 % of requests, close on under 0.01 % of \
                 requests"
            )
        );
        assert_eq!(
            injecting(Duration::from_millis(50), Duration::ZERO, &[]).as_deref(),
            Some("userfetch: injecting: answers after 50ms")
        );
        let every: Vec<crate::server::FaultRate> = vec!["429".parse().unwrap()];
        assert_eq!(
            injecting(Duration::ZERO, Duration::from_millis(20), &every).as_deref(),
            Some("userfetch: injecting: answers after up to 20ms; faults: 429 on every request")
        );
        let never: Vec<crate::server::FaultRate> = vec!["500=0".parse().unwrap()];
        assert_eq!(injecting(Duration::ZERO, Duration::ZERO, &never), None);
    }

    /// Captures what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Without -v a warning is a `userfetch: …` line like every other: no timestamp, level
    /// or module path, which read as a log nobody asked for.
    #[test]
    fn a_warning_without_verbose_reads_as_userfetch_says_it() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(Plain)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("closing the cache c.sqlite3: disk I/O error");
            tracing::warn!(target: "h2::proto", "connection error");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "userfetch: closing the cache c.sqlite3: disk I/O error\n\
             userfetch: h2::proto: connection error\n"
        );
    }
}
