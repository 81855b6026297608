//! `batch`'s command line, checked: everything that can be wrong with it is found before any
//! work starts, and the output paths are resolved once, as the job key needs them.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::cache::Cache;
use crate::cli::{BatchArgs, GlobalOpts};
use crate::exit::usage;

use super::input::Source;
use super::output;
use super::throttle::Rate;
use super::{DEFAULT_CONCURRENCY, Format};

use crate::cli::MAX_CONCURRENCY;

/// Longest `--grace`: a day is already far past any lookup's timeout, and a bound keeps the
/// deadline computable.
const MAX_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// The command line, checked: everything that can be wrong with it is found before any work.
pub(super) struct Config {
    pub(super) source: Source,
    pub(super) out: PathBuf,
    pub(super) failures: Option<PathBuf>,
    pub(super) format: Format,
    pub(super) concurrency: u32,
    pub(super) rate: Option<Rate>,
    /// `--rate` as given, for the dry run to show back.
    pub(super) rate_text: Option<String>,
    pub(super) fresh: bool,
    pub(super) dry_run: bool,
    pub(super) strict: bool,
    pub(super) summary_json: Option<PathBuf>,
    pub(super) grace: Duration,
}

impl Config {
    pub(super) fn from_args(global: &GlobalOpts, args: &BatchArgs) -> anyhow::Result<Config> {
        if global.no_cache {
            // Turned on in the environment, it is not on the command line to look at. A
            // variable that is off (or unread, when bad and the flag was typed) is no cause.
            let from_variable = std::env::var("USERFETCH_NO_CACHE")
                .is_ok_and(|value| crate::values::parse_switch(&value) == Ok(true));
            let from = if from_variable {
                " (USERFETCH_NO_CACHE is set)"
            } else {
                ""
            };
            return Err(usage(format!(
                "batch keeps its progress in the cache file, so it cannot run with --no-cache{from} \
                 (--fresh starts over and fetches every id again)"
            )));
        }
        let concurrency = match &args.concurrency {
            None => DEFAULT_CONCURRENCY,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_CONCURRENCY).contains(n))
                .ok_or_else(|| {
                    usage(format!(
                        "--concurrency '{text}' must be a whole number from 1 to {MAX_CONCURRENCY}"
                    ))
                })?,
        };
        // Fitted to the open-file limit once the session knows whether the API speaks
        // HTTP/2, where every lookup shares one connection (`batch::run`).
        let rate = args
            .rate
            .as_deref()
            .map(Rate::parse)
            .transpose()
            .map_err(usage)?;
        let source = Source::from_arg(args.input.as_deref());
        if args.input.is_none() && std::io::stdin().is_terminal() {
            return Err(usage(
                "no IDS_FILE given and stdin is a terminal: name a file, pipe ids in, or pass '-' to type them",
            ));
        }
        if args.out.as_os_str() == "-" {
            return Err(usage(
                "--out must be a file: it is rebuilt from the store when the run ends, which a pipe cannot be; to read the records on stdout, name a file and cat it (--out users.jsonl && cat users.jsonl), or use get for a few ids",
            ));
        }
        // Read as a path, '-' would make a file named '-' where stdout was meant.
        for (option, path) in [
            ("--failures", &args.failures),
            ("--summary-json", &args.summary_json),
        ] {
            if path.as_deref().is_some_and(|p| p.as_os_str() == "-") {
                return Err(usage(format!(
                    "{option} must be a file: outputs are written whole and renamed into place, not to stdout"
                )));
            }
        }
        if args.dry_run && args.summary_json.is_some() {
            return Err(usage(
                "--summary-json reports a run, and --dry-run makes none: leave one of them out",
            ));
        }
        let outputs: Vec<(&str, &Path)> = [
            Some(("--out", args.out.as_path())),
            args.failures.as_deref().map(|p| ("--failures", p)),
            args.summary_json.as_deref().map(|p| ("--summary-json", p)),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (i, (a_opt, a)) in outputs.iter().enumerate() {
            for (b_opt, b) in &outputs[i + 1..] {
                if same_output(a, b) {
                    return Err(usage(format!(
                        "{a_opt} {} and {b_opt} {} are the same file; each output needs its own file",
                        a.display(),
                        b.display()
                    )));
                }
            }
        }
        // Each output replaces its file whole: never the ids being read, never the store
        // the run's progress lives in. Through links: SQLite keeps -wal and -shm beside the
        // file a link points to.
        let cache = global
            .cache
            .as_deref()
            .map(linked)
            .or_else(Cache::default_path);
        // `batch --out ids.txt < ids.txt`: the shell opened the input, so only the file on
        // stdin itself can tell.
        let stdin_file = match &source {
            Source::Stdin => stdin_file(),
            Source::File(_) => None,
        };
        for (option, path) in &outputs {
            let clash = |what: &str| {
                usage(format!(
                    "{option} {} is {what}; choose another path",
                    path.display()
                ))
            };
            if let Source::File(input) = &source
                && same_output(input, path)
            {
                return Err(clash("the input file"));
            }
            if let Some(input) = &stdin_file
                && std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *input)
            {
                return Err(clash("the file on stdin, the input"));
            }
            if let Some(cache) = &cache
                && ["", "-wal", "-shm", "-journal"].iter().any(|suffix| {
                    let mut file = cache.clone().into_os_string();
                    file.push(suffix);
                    same_output(Path::new(&file), path)
                })
            {
                return Err(clash("the cache file (or one of its companions)"));
            }
        }
        if args.grace > MAX_GRACE {
            return Err(usage(format!(
                "--grace {} is longer than {}; lookups in flight time out long before",
                humantime::format_duration(args.grace),
                humantime::format_duration(MAX_GRACE)
            )));
        }
        Ok(Config {
            source,
            out: args.out.clone(),
            failures: args.failures.clone(),
            // `--out users.csv` alone meant JSONL in a file named .csv.
            format: args.format.unwrap_or_else(|| {
                let csv = args
                    .out
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("csv"));
                if csv { Format::Csv } else { Format::Jsonl }
            }),
            concurrency,
            rate,
            rate_text: args.rate.as_ref().map(|r| r.trim().to_owned()),
            fresh: args.fresh,
            dry_run: args.dry_run,
            strict: args.strict,
            summary_json: args.summary_json.clone(),
            grace: args.grace,
        })
    }
}

/// The device and inode of stdin when it is a regular file (a `< ids.txt` redirect).
fn stdin_file() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().ok()?);
    let meta = stdin.metadata().ok()?;
    meta.is_file().then(|| (meta.dev(), meta.ino()))
}

/// Whether two existing paths are one file: by device and inode, which also sees through
/// hard links (a path comparison cannot).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Whether two output options name one file. Spellings differ (`out.jsonl`, `./out.jsonl`,
/// `dir/../out.jsonl`), so paths are compared resolved, the way the job key resolves `--out`;
/// a link to an existing file is caught by comparing the files themselves.
pub(crate) fn same_output(a: &Path, b: &Path) -> bool {
    if a == b || same_file(a, b) {
        return true;
    }
    // Outputs are written through links, dangling ones too (see `AtomicFile::create`).
    let (a, b) = (linked(a), linked(b));
    let (a, b) = (a.as_path(), b.as_path());
    if a == b {
        return true;
    }
    match (resolve_output(a, ""), resolve_output(b, "")) {
        (Ok(a), Ok(b)) => a == b,
        // An unresolvable path is refused when its file is created, with a clearer message.
        _ => false,
    }
}

/// An output path made absolute: its directory resolved (it must exist), its file name kept
/// (the file itself may not exist yet). `what` names the option in messages.
fn resolve_output(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| usage(format!("{what} {} does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&dir)
        .with_context(|| format!("cannot resolve the directory of {what} {}", path.display()))?;
    Ok(dir.join(name))
}

/// The file a path names once links are followed; the path itself if they cannot be.
fn linked(path: &Path) -> PathBuf {
    output::resolve_links(path).unwrap_or_else(|_| path.to_owned())
}

/// Which job a run belongs to: the output file, as an absolute path. Rerunning "the same
/// command" means writing the same file; where the ids come from (a file, a pipe) may change.
pub(super) fn job_key(out: &Path) -> anyhow::Result<String> {
    // Through links, as the file is written: a link and its target are one job.
    Ok(resolve_output(&linked(out), "--out")?
        .to_string_lossy()
        .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_compared_resolved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let p = |s: &str| dir.path().join(s);
        assert!(same_output(&p("out.jsonl"), &p("./out.jsonl")));
        assert!(same_output(&p("out.jsonl"), &p("sub/../out.jsonl")));
        assert!(!same_output(&p("out.jsonl"), &p("sub/out.jsonl")));
        assert!(!same_output(&p("out.jsonl"), &p("out.json")));
    }
}
