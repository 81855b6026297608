//! Command-line definitions.
//!
//! Conventions: connection options are global (accepted before or after any subcommand) and
//! each has an environment-variable fallback; durations read as people write them (`500ms`,
//! `2s`, `1m`); every option's help states its default. Validation beyond syntax happens in
//! `session`, which turns these raw options into a working engine.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::server::FaultRate;
use crate::values::{
    parse_bind, parse_duration_arg, parse_limit_arg, parse_size, parse_switch, whole, whole_u64,
};

/// The most lookups in flight a command takes (`--concurrency`): beyond it, more only costs
/// memory; one HTTP/2 connection carries it all.
pub const MAX_CONCURRENCY: u32 = 100_000;

#[derive(Debug, Parser)]
#[command(
    name = "userfetch",
    version,
    propagate_version = true,
    about = "Fetch user data from an HTTP API without freezing the interface",
    long_about = "Fetch user data from an HTTP API without freezing the interface.\n\n\
        With no subcommand, opens the interactive lookup screen. Without --api, every command \
        talks to a demo API started inside the process, so it works offline.",
    after_help = "Values: a DURATION is written 500ms, 2s, 1m or 1h 30m; a SIZE 4096 (bytes), 512KiB or 2MB. An environment variable that is empty, or only spaces, counts as unset.\n\
        Exit codes: 0 all found (the screen: quit with q), 1 some lookups failed or were not found (batch: only failed ones count), 2 bad usage or input, 130 interrupted.\n\
        Environment: USERFETCH_TOKEN is sent as 'Authorization: Bearer' to the API's own origin (scheme, host and port) only; it is never printed or logged."
)]
pub struct Cli {
    #[command(flatten, next_help_heading = "Options for every command")]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// More worker threads than any machine userfetch runs on has cores, by far.
const MAX_THREADS: u16 = 1024;

/// Global options that only the commands which fetch use. They are global so that they work
/// before or after any subcommand, which also makes clap accept them after `serve`.
/// The fetching options demo refuses: it starts its own API and keeps no cache.
const DEMO_REFUSES: [&str; 4] = ["api", "cache", "no_cache", "max_age"];

const FETCHING_ONLY: [&str; 12] = [
    "api",
    "timeout",
    "connect_timeout",
    "retries",
    "max_retry_wait",
    "retry_max_time",
    "max_body",
    "cache",
    "no_cache",
    "max_age",
    "http2",
    "http1",
];

impl Cli {
    /// Parses the process's arguments, exiting with a usage error (exit 2) as clap does.
    pub fn parse_checked() -> Cli {
        Cli::try_parse_checked(std::env::args_os()).unwrap_or_else(|e| exit_after(&e))
    }

    /// [`Parser::try_parse_from`], refusing a fetching option given to `serve` on the
    /// command line: it would be silently ignored (an environment variable is fine: it is
    /// meant for every command, and serve does not even read a bad value in one; nor does
    /// demo in the cache ones). `completions` takes the global options without a word, so
    /// that an alias carrying some (`--cache …`) still prints a script.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let unbuilt = empty_variables_unset(<Cli as clap::CommandFactory>::command());
        // Variables whose value clap refused, with why; read no more while the rest of the
        // line is parsed again.
        let mut unread: Vec<(clap::Id, String)> = Vec::new();
        let (mut command, matches) = loop {
            let mut command = shown(
                unread
                    .iter()
                    .fold(unbuilt.clone(), |c, (id, _)| c.mut_arg(id, |a| a.env(None))),
            );
            match command.try_get_matches_from_mut(args.iter().cloned()) {
                Ok(matches) => break (command, matches),
                Err(e) => match from_variable(&e, &command) {
                    Some((id, why)) if !unread.iter().any(|(seen, _)| *seen == id) => {
                        unread.push((id, why));
                    }
                    Some((_, why)) => return Err(command.error(e.kind(), why)),
                    None => return Err(e),
                },
            }
        };
        // A bad value in a variable is no matter when the option is typed (the command line
        // wins), or when serve runs, which uses none of the fetching options.
        let (run, options) = matches.subcommand().unwrap_or(("", &matches));
        let typed = |id: &clap::Id| {
            [&matches, options].iter().any(|m| {
                m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
        };
        // Every bad variable at once, under the usage of the command that reads them.
        let bad: Vec<String> = unread
            .into_iter()
            .filter(|(id, _)| {
                !(typed(id)
                    || run == "completions"
                    || run == "serve" && FETCHING_ONLY.contains(&id.as_str())
                    || run == "demo" && DEMO_REFUSES.contains(&id.as_str()))
            })
            .map(|(_, why)| why)
            .collect();
        if !bad.is_empty() {
            return Err(subcommand_error(
                &mut command,
                run,
                clap::error::ErrorKind::ValueValidation,
                bad.join("\n       "),
            ));
        }
        if let Some(("serve", serve)) = matches.subcommand()
            && let Some(id) = FETCHING_ONLY
                .iter()
                .find(|id| serve.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        {
            return Err(subcommand_error(
                &mut command,
                "serve",
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--{} is for the commands that fetch; serve does not use it",
                    id.replace('_', "-")
                ),
            ));
        }
        // demo measures against an API it starts itself, with its own --latency, and keeps
        // no cache.
        if let Some(("demo", demo)) = matches.subcommand()
            && let Some(id) = DEMO_REFUSES
                .iter()
                .find(|id| demo.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        {
            let why = if *id == "api" {
                "--api: demo always runs against its own embedded demo API (set its delay with --latency); get, batch and the screen take --api".to_owned()
            } else {
                format!(
                    "--{}: demo keeps no cache (cached answers would hide the waits it measures); get, batch and the screen use the cache",
                    id.replace('_', "-")
                )
            };
            return Err(subcommand_error(
                &mut command,
                "demo",
                clap::error::ErrorKind::ArgumentConflict,
                why,
            ));
        }
        let mut cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|e| e.format(&mut command))?;
        cli.global.timeout_from_env = [&matches, options]
            .iter()
            .any(|m| m.value_source("timeout") == Some(clap::parser::ValueSource::EnvVariable));
        // A typed --http1 or --http2 wins over the other one's variable, as a typed option
        // wins over its own; both typed, or both set in the environment, ask for both.
        if cli.global.http1 && cli.global.http2 {
            match (typed(&"http1".into()), typed(&"http2".into())) {
                (true, false) => cli.global.http2 = false,
                (false, true) => cli.global.http1 = false,
                _ => {
                    return Err(subcommand_error(
                        &mut command,
                        run,
                        clap::error::ErrorKind::ArgumentConflict,
                        "--http1 and --http2 (or USERFETCH_HTTP1 and USERFETCH_HTTP2) ask for both; pick one",
                    ));
                }
            }
        }
        Ok(cli)
    }
}

/// An empty variable counts as unset, the way `USERFETCH_CACHE= userfetch …` is written to
/// clear one; clap would read it as an empty value, which most options refuse. One of only
/// spaces likewise (`USERFETCH_CACHE=" "` would otherwise make a cache file named " ", while
/// `USERFETCH_TIMEOUT=" "` was refused as empty).
fn empty_variables_unset(command: clap::Command) -> clap::Command {
    let empty: Vec<clap::Id> = command
        .get_arguments()
        .filter(|a| {
            a.get_env()
                .and_then(std::env::var_os)
                .is_some_and(|value| is_blank(&value))
        })
        .map(|a| a.get_id().clone())
        .collect();
    empty
        .iter()
        .fold(command, |c, id| c.mut_arg(id, |a| a.env(None)))
}

/// Prints what clap has to say (a usage error, or the help or version asked for) and exits
/// as clap does, except when the help or version could not be written: clap's own `exit`
/// drops that error, so `--help > /dev/full` said nothing and exited 0. A reader that left
/// (`--help | head -1`) is no error, as everywhere else.
fn exit_after(e: &clap::Error) -> ! {
    use std::io::Write;
    let printed = e.print().and_then(|()| std::io::stdout().flush());
    match printed {
        Err(write) if !e.use_stderr() && write.kind() != std::io::ErrorKind::BrokenPipe => {
            crate::console::note!("userfetch: cannot write to stdout: {write}");
            std::process::exit(crate::exit::ExitCode::Failure as i32)
        }
        _ => std::process::exit(e.exit_code()),
    }
}

/// Empty, or nothing but whitespace: what a variable holding no value looks like.
pub fn is_blank(value: &std::ffi::OsStr) -> bool {
    value
        .to_str()
        .map_or(value.is_empty(), |s| s.trim().is_empty())
}

/// An error found after parsing, shown with the subcommand's usage line (as clap shows its
/// own errors), not the top-level one.
fn subcommand_error(
    command: &mut clap::Command,
    name: &str,
    kind: clap::error::ErrorKind,
    message: impl std::fmt::Display,
) -> clap::Error {
    match command.find_subcommand_mut(name) {
        Some(sub) => sub.error(kind, message),
        None => command.error(kind, message),
    }
}

/// The command line as parsed, and as its help shows it.
pub fn command() -> clap::Command {
    shown(<Cli as clap::CommandFactory>::command())
}

/// The command line for completion scripts. Hiding is not enough there: some of
/// clap_complete's generators (fish, zsh, bash) list hidden options too, and would offer
/// serve the fetching options and demo --api and the cache options, which they refuse. So
/// here those options are not global: the commands that take them get their own copies,
/// serve none and demo only those it takes.
pub fn for_completions() -> clap::Command {
    let unbuilt = <Cli as clap::CommandFactory>::command();
    let fetching: Vec<clap::Arg> = unbuilt
        .get_arguments()
        .filter(|a| FETCHING_ONLY.contains(&a.get_id().as_str()))
        .map(|a| a.clone().global(false))
        .collect();
    let for_demo = fetching
        .iter()
        .filter(|a| !DEMO_REFUSES.contains(&a.get_id().as_str()))
        .cloned();
    FETCHING_ONLY
        .iter()
        .fold(unbuilt, |c, id| c.mut_arg(id, |a| a.global(false)))
        .mut_subcommand("get", |s| s.args(fetching.clone()))
        .mut_subcommand("batch", |s| {
            s.args(
                fetching
                    .iter()
                    .filter(|a| a.get_id() != "no_cache")
                    .cloned(),
            )
        })
        .mut_subcommand("ui", |s| s.args(fetching.clone()))
        .mut_subcommand("demo", |s| s.args(for_demo))
}

/// `command` with the fetching options hidden from the help of serve (which refuses them)
/// and completions (which ignores them), and those demo refuses from its help. clap
/// copies each global option into every subcommand that lacks one of that name when it
/// builds them, so those are given hidden copies first; they parse the same.
fn shown(command: clap::Command) -> clap::Command {
    let hidden: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|a| FETCHING_ONLY.contains(&a.get_id().as_str()))
        .map(|a| a.clone().hide(true))
        .collect();
    let for_demo: Vec<clap::Arg> = hidden
        .iter()
        .filter(|a| DEMO_REFUSES.contains(&a.get_id().as_str()))
        .cloned()
        .collect();
    // batch keeps its progress in the cache and refuses --no-cache (with a reason).
    let no_cache: Vec<clap::Arg> = hidden
        .iter()
        .filter(|a| a.get_id() == "no_cache")
        .cloned()
        .collect();
    // completions uses none of the global options, --threads and -v included.
    let for_completions: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.clone().hide(true))
        .collect();
    // An unset variable showed as `[env: USERFETCH_TIMEOUT=]`, which read as a typo; a set
    // one keeps its value there, which says what this shell has set.
    let command = command.mut_args(|arg| match arg.get_env() {
        Some(var) if std::env::var_os(var).is_none_or(|v| is_blank(&v)) => {
            arg.hide_env_values(true)
        }
        _ => arg,
    });
    // `get -V` said "userfetch-get 0.1.0": the version is the program's.
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let command = names.iter().fold(command, |command, name| {
        command.mut_subcommand(name, |c| c.display_name("userfetch"))
    });
    command
        .mut_subcommand("completions", |c| c.args(for_completions))
        .mut_subcommand("serve", |serve| serve.args(hidden))
        .mut_subcommand("demo", |demo| demo.args(for_demo))
        .mut_subcommand("batch", |batch| batch.args(no_cache))
}

/// clap reports a bad value from the environment as if it were typed (`invalid value 'abc'
/// for '--timeout'`), which sends people looking at a command line that has no --timeout.
/// When the bad value is the one a variable holds: the option's id and the error naming the
/// variable.
fn from_variable(error: &clap::Error, command: &clap::Command) -> Option<(clap::Id, String)> {
    use clap::error::{ContextKind, ContextValue};
    let text = |kind| match error.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let arg = text(ContextKind::InvalidArg)?;
    let value = text(ContextKind::InvalidValue)?;
    let long = arg.split_whitespace().next().unwrap_or_default();
    let (id, var) = command
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| format!("--{l}") == long))
        .find_map(|a| Some((a.get_id().clone(), a.get_env()?)))
        .filter(|(_, var)| std::env::var_os(var).is_some_and(|v| v.to_string_lossy() == value))?;
    let why = error.to_string();
    let why = why
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    Some((
        id,
        format!("{why} (the value comes from {})", var.to_string_lossy()),
    ))
}

#[derive(Debug, Args, Clone)]
pub struct GlobalOpts {
    /// API URL template with exactly one {id}, e.g. 'https://api.example.com/users/{id}'.
    /// Without it, an embedded demo API is started in-process.
    // Its value is not shown in --help: a URL may hold a password (refused, but said).
    #[arg(
        long,
        global = true,
        env = "USERFETCH_API",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub api: Option<String>,

    /// Limit for one whole attempt (connect, headers and body), written as 500ms, 10s or 1m
    /// (every DURATION is); time the process spends
    /// stopped (Ctrl-Z) is not counted.
    #[arg(long, allow_hyphen_values = true, global = true, env = "USERFETCH_TIMEOUT", default_value = "10s", value_parser = parse_limit_arg, value_name = "DURATION")]
    pub timeout: Duration,

    /// Whether `timeout` came from USERFETCH_TIMEOUT, for a message about it to say so.
    #[arg(skip)]
    pub timeout_from_env: bool,

    /// Whether `api` is a demo API this process started (the demo's): reached directly,
    /// never through a proxy, like the embedded one.
    #[arg(skip)]
    pub api_in_process: bool,

    /// Limit for opening a connection; time the process spends stopped is not counted.
    #[arg(long, allow_hyphen_values = true, global = true, env = "USERFETCH_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_limit_arg, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Retries after a failed attempt (connection errors, timeouts, 408, 5xx, 429), at most
    /// 1000 (--retry-max-time bounds the time). 404 is never retried.
    #[arg(
        long,
        global = true,
        env = "USERFETCH_RETRIES",
        default_value_t = 3,
        value_parser = whole(0u32, 1000),
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub retries: u32,

    /// The longest wait between two attempts, whatever Retry-After asks for.
    #[arg(long, allow_hyphen_values = true, global = true, env = "USERFETCH_MAX_RETRY_WAIT", default_value = "30s", value_parser = parse_duration_arg, value_name = "DURATION")]
    pub max_retry_wait: Duration,

    /// Stop retrying a lookup once the next attempt would start this long after its first
    /// (in batch, waiting for a free slot or for --rate can still delay it); time stopped is
    /// not counted.
    #[arg(long, allow_hyphen_values = true, global = true, env = "USERFETCH_RETRY_MAX_TIME", default_value = "2m", value_parser = parse_duration_arg, value_name = "DURATION")]
    pub retry_max_time: Duration,

    /// Largest response body accepted, more than 0 (e.g. 512KiB, 2MB).
    #[arg(long, global = true, env = "USERFETCH_MAX_BODY", default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_body: u64,

    /// Cache file [default: $XDG_CACHE_HOME/userfetch/cache.sqlite3, or
    /// ~/.cache/userfetch/cache.sqlite3 when XDG_CACHE_HOME is unset, empty or relative].
    #[arg(long, global = true, env = "USERFETCH_CACHE", value_name = "PATH")]
    pub cache: Option<PathBuf>,

    /// Neither read nor write the cache.
    #[arg(long, global = true, env = "USERFETCH_NO_CACHE", value_parser = parse_switch)]
    pub no_cache: bool,

    /// How old a cached record may be and still be used.
    #[arg(long, allow_hyphen_values = true, global = true, env = "USERFETCH_MAX_AGE", default_value = "1h", value_parser = parse_duration_arg, value_name = "DURATION")]
    pub max_age: Duration,

    /// Speak cleartext HTTP/2 (h2c) to the API: one connection carries every request to its
    /// origin (a followed redirect uses connections of its own).
    /// Without it (or --http1), batch asks an http:// API once whether it speaks it.
    #[arg(long, global = true, env = "USERFETCH_HTTP2", value_parser = parse_switch)]
    pub http2: bool,

    /// Speak HTTP/1.1 to an http:// API: batch does not ask whether it speaks HTTP/2.
    #[arg(long, global = true, env = "USERFETCH_HTTP1", value_parser = parse_switch)]
    pub http1: bool,

    /// Worker threads for the async runtime, at most 1024. 1 runs everything on one thread:
    /// concurrent, not parallel.
    // Bounded: past a few thousand the system refuses to start them, and the runtime aborts.
    #[arg(long, global = true, env = "USERFETCH_THREADS", default_value_t = 1, value_parser = whole(1u16, MAX_THREADS), allow_negative_numbers = true, value_name = "N")]
    pub threads: u16,

    /// More log output on stderr (-v info, -vv debug, -vvv debug for every library).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Look up users by id and print each as one line of JSON.
    #[command(
        after_help = "Exit codes: 0 every id found, 1 some id not found or failed, 2 bad usage or an invalid id (none is looked up), 130 interrupted."
    )]
    Get(GetArgs),
    /// Run the demo API: deterministic fake users, with latency and fault injection.
    #[command(after_help = "Of the global options, only --threads and -v apply to serve.")]
    Serve(ServeArgs),
    /// Open the interactive lookup screen (what runs with no subcommand).
    Ui(UiArgs),
    /// Run one scripted session sync and async and show, measured, what blocking costs.
    Demo(DemoArgs),
    /// Fetch every id in a file (or stdin) politely and resumably into JSONL or CSV.
    // The long help sits here, not on BatchArgs: the variant's doc comment would hide it.
    #[command(
        long_about = "Fetch every id in a file (or stdin) into JSONL or CSV, politely and resumably.\n\n\
            One id per line; blank lines and lines starting with '#' are skipped; each distinct id is \
            fetched once. Every outcome is stored in the cache file before it counts, and the output \
            files are rebuilt from there: after Ctrl-C, a crash or kill -9, run the same command again \
            and it fetches only what is missing (after --fresh, without it: repeating --fresh would \
            start over again). A rerun also retries ids that failed.\n\n\
            Ctrl-C once: stop taking new ids, let requests on the wire finish (see --grace), write \
            the output. Twice: cancel what is in flight, write what is done. SIGTERM and SIGHUP \
            count as Ctrl-C (SIGHUP not under nohup).",
        after_help = "Exit codes: 0 every id found or not found, 1 some failed (or an output could not be written at the end, the disk under the cache file is full, or another process held a new cache file while it was being set up), 2 bad usage or input, 130 interrupted."
    )]
    Batch(BatchArgs),
    /// Print shell completions.
    #[command(
        after_help = "Install, for example: bash: userfetch completions bash > ~/.local/share/bash-completion/completions/userfetch; zsh: userfetch completions zsh > ~/.zfunc/_userfetch (with ~/.zfunc on $fpath, before compinit); fish: userfetch completions fish > ~/.config/fish/completions/userfetch.fish. Then start a new shell."
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// User ids to look up.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<std::ffi::OsString>,

    /// Print indented JSON for people instead of one line per record.
    #[arg(long)]
    pub pretty: bool,

    /// Lookups in flight at once (1 to 100000).
    #[arg(long, short = 'c', default_value_t = 16, value_parser = whole(1u32, MAX_CONCURRENCY), allow_negative_numbers = true, value_name = "N")]
    pub concurrency: u32,
}

#[derive(Debug, Args, Default)]
pub struct UiArgs {
    /// Start in sync mode: each lookup blocks the whole screen until it returns, to show what
    /// blocking costs. F2 switches between sync and async while running.
    #[arg(long)]
    pub sync: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Latency of every lookup (the demo API answers after exactly this long).
    #[arg(long, allow_hyphen_values = true, default_value = "2s", value_parser = parse_duration_arg, value_name = "DURATION")]
    pub latency: Duration,

    /// Lookups in the second scenario, submitted back to back (1 to 1000).
    #[arg(long, default_value_t = 10, value_parser = whole(1u16, 1000), allow_negative_numbers = true, value_name = "N")]
    pub lookups: u16,

    /// Write the timeline as an SVG picture.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Write the timeline, a table for each scenario and the back-to-back summary as one
    /// self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Print the raw measurements as JSON instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// File with one id per line; '-' or nothing reads stdin.
    #[arg(value_name = "IDS_FILE")]
    pub input: Option<PathBuf>,

    /// Where found records go: every record the job found, earlier runs' too (--fresh starts
    /// over); the file is replaced whole when the run ends, never left half-written.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,

    /// Output format: one JSON object per line, or CSV with flattened columns (address.city).
    /// Without it: csv when --out ends in .csv, jsonl otherwise.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Where not-found and failed ids go, one JSON object per line: every such id of the
    /// job, earlier runs' too (--fresh starts over).
    #[arg(long, value_name = "FILE")]
    pub failures: Option<PathBuf>,

    /// Lookups in flight at once (fewer for a while when the API answers 429 or 503)
    /// [default: 64].
    #[arg(long, short = 'c', value_name = "N")]
    pub concurrency: Option<String>,

    /// Most attempts per second, retries included (a redirect followed within one is not
    /// paced), e.g. 50, 50/s, 3000/min, 100/h, 1/day
    /// [default: no limit].
    #[arg(long, value_name = "R/s")]
    pub rate: Option<String>,

    /// Start over: ignore the progress of earlier runs of this command, and cached records.
    #[arg(long)]
    pub fresh: bool,

    /// Check the input and settings, show what would be fetched, fetch nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Stop at the first invalid id instead of reporting and skipping it. Input that is not
    /// text (invalid UTF-8, UTF-16) or has a line over 1 MiB stops the run either way (exit 2).
    #[arg(long)]
    pub strict: bool,

    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,

    /// After the first Ctrl-C, how long requests on the wire may take to finish (at most 1 day).
    #[arg(long, allow_hyphen_values = true, default_value = "10s", value_parser = parse_duration_arg, value_name = "DURATION")]
    pub grace: Duration,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// IP address (or localhost) to listen on, without a port (--port). Loopback by default:
    /// the demo API is for this machine; 0.0.0.0 or :: for every address.
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_bind, value_name = "ADDR")]
    pub bind: std::net::IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080, value_parser = whole(0u16, u16::MAX), allow_negative_numbers = true)]
    pub port: u16,

    /// Users 1 to N exist; other ids answer 404.
    #[arg(long, default_value_t = 10_000, value_parser = whole_u64, allow_negative_numbers = true, value_name = "N")]
    pub users: u64,

    /// Delay added to every /users answer.
    #[arg(long, allow_hyphen_values = true, default_value = "0ms", value_parser = parse_duration_arg, value_name = "DURATION")]
    pub latency: Duration,

    /// Random extra delay, from zero up to this, on top of --latency.
    #[arg(long, allow_hyphen_values = true, default_value = "0ms", value_parser = parse_duration_arg, value_name = "DURATION")]
    pub jitter: Duration,

    /// Inject a fault into a share of /users requests, as KIND=RATE, or KIND alone for every
    /// request (repeatable). Kinds: 500, 503, 429, 429-date, close, truncate, malformed,
    /// oversize, drip, redirect, redirect-other-host, hostile. Per request, in the query:
    /// fault=KIND, fault_rate=R, fault_times=N, latency=D, jitter=D, retry_after=D.
    #[arg(long = "fault", value_name = "KIND[=RATE]")]
    pub faults: Vec<FaultRate>,

    /// Retry-After sent with 429 answers.
    #[arg(long, allow_hyphen_values = true, default_value = "1s", value_parser = parse_duration_arg, value_name = "DURATION")]
    pub retry_after: Duration,
}

/// How found records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, as the API sent it (a body sent over several lines is
    /// compacted, and characters that could drive a terminal are written as \uXXXX escapes:
    /// the same JSON, safe to print).
    Jsonl,
    /// One row per record; nested fields become dotted columns (`address.city`).
    Csv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_global_option_is_either_for_fetching_or_for_serve_too() {
        let command = <Cli as clap::CommandFactory>::command();
        let globals: Vec<&str> = command
            .get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| a.get_id().as_str())
            .collect();
        for id in &globals {
            assert!(
                FETCHING_ONLY.contains(id) || ["threads", "verbose"].contains(id),
                "--{id}: add it to FETCHING_ONLY unless serve uses it"
            );
        }
        assert_eq!(globals.len(), FETCHING_ONLY.len() + 2, "{globals:?}");
    }

    #[test]
    fn serve_refuses_options_it_would_ignore() {
        for args in [
            &["userfetch", "serve", "--retries", "3"][..],
            &["userfetch", "--retries", "3", "serve"],
        ] {
            let err = Cli::try_parse_checked(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
            assert!(
                err.to_string()
                    .contains("--retries is for the commands that fetch"),
                "{err}"
            );
            assert!(err.to_string().contains("Usage: userfetch serve "), "{err}");
        }
        let err = Cli::try_parse_checked(["userfetch", "serve", "--no-cache"]).unwrap_err();
        assert!(err.to_string().contains("--no-cache is for"), "{err}");
        let help = long_help_of("serve");
        assert!(
            help.contains("--latency") && help.contains("--threads"),
            "{help}"
        );
        for id in FETCHING_ONLY {
            let long = format!("--{} ", id.replace('_', "-"));
            assert!(!help.contains(&long), "serve's help lists {long}: {help}");
        }
        // completions takes them (and ignores them) but does not list them, nor the others.
        let help = long_help_of("completions");
        for id in FETCHING_ONLY.iter().chain(&["threads", "verbose"]) {
            let long = format!("--{} ", id.replace('_', "-"));
            assert!(
                !help.contains(&long),
                "completions' help lists {long}: {help}"
            );
        }
        let serve = Cli::try_parse_checked(["userfetch", "serve", "--threads", "2", "-v"]).unwrap();
        assert_eq!(serve.global.threads, 2);
        let get = Cli::try_parse_checked(["userfetch", "get", "1", "--retries", "3"]).unwrap();
        assert_eq!(get.global.retries, 3);
    }

    #[test]
    fn demo_refuses_an_api_it_would_not_use() {
        for args in [
            &["userfetch", "demo", "--api", "http://h/users/{id}"][..],
            &["userfetch", "--api", "http://h/users/{id}", "demo"],
        ] {
            let err = Cli::try_parse_checked(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
            assert!(
                err.to_string().contains("its own embedded demo API"),
                "{err}"
            );
        }
        // Nor a cache it would not keep.
        for args in [
            &["userfetch", "demo", "--cache", "c.sqlite3"][..],
            &["userfetch", "--no-cache", "demo"],
            &["userfetch", "demo", "--max-age", "1h"],
        ] {
            let err = Cli::try_parse_checked(args).unwrap_err();
            assert!(
                err.to_string().contains("demo keeps no cache"),
                "{args:?}: {err}"
            );
        }
        assert!(Cli::try_parse_checked(["userfetch", "demo", "--retries", "3"]).is_ok());
        let help = long_help_of("demo");
        for hidden in ["--api ", "--cache ", "--no-cache ", "--max-age "] {
            assert!(!help.contains(hidden), "{hidden}: {help}");
        }
        assert!(help.contains("--timeout "), "{help}");
    }

    /// batch refuses --no-cache, with the reason: its help does not offer it.
    #[test]
    fn batch_does_not_offer_the_no_cache_it_refuses() {
        let help = long_help_of("batch");
        assert!(!help.contains("--no-cache"), "{help}");
        assert!(help.contains("--cache "), "{help}");
    }

    /// A subcommand's `--help`, as the program shows it.
    fn long_help_of(name: &str) -> String {
        let mut built = command();
        built.build();
        let mut help = Vec::new();
        built
            .find_subcommand_mut(name)
            .unwrap()
            .write_long_help(&mut help)
            .unwrap();
        String::from_utf8(help).unwrap()
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        command().debug_assert();
        for_completions().debug_assert();
        for sub in ["get", "serve", "batch", "demo", "ui", "completions"] {
            let err = Cli::try_parse_checked(["userfetch", sub, "--version"]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::DisplayVersion,
                "{sub}: {err}"
            );
        }
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let before = Cli::try_parse_from(["userfetch", "--retries", "7", "get", "1"]).unwrap();
        let after = Cli::try_parse_from(["userfetch", "get", "1", "--retries", "7"]).unwrap();
        assert_eq!(before.global.retries, 7);
        assert_eq!(after.global.retries, 7);
        let none = Cli::try_parse_from(["userfetch", "--timeout", "500ms"]).unwrap();
        assert!(none.command.is_none());
        assert_eq!(none.global.timeout, Duration::from_millis(500));
    }

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        use crate::values::parse_duration;
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("fast").unwrap_err().contains("'fast'"));
        // The limit's own spelling is within it.
        assert!(parse_duration("100y").is_ok());
        assert!(parse_duration("101y").unwrap_err().contains("100 years"));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("huge").is_err());
        assert!(parse_size("0").unwrap_err().contains("no room"));
        assert!(parse_size("0KiB").is_err());
        assert!(Cli::try_parse_checked(["userfetch", "--retries", "1000", "get", "1"]).is_ok());
        assert!(
            Cli::try_parse_checked(["userfetch", "--retries", "4294967295", "get", "1"]).is_err()
        );
        assert!(Cli::try_parse_checked(["userfetch", "--threads", "1024", "get", "1"]).is_ok());
        let err =
            Cli::try_parse_checked(["userfetch", "--threads", "20000", "get", "1"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be a whole number from 1 to 1024"),
            "{err}"
        );
    }
}
