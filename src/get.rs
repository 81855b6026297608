//! `userfetch get ID...`: concurrent lookups, one JSON line per record on stdout.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::future::{BoxFuture, WeakShared};
use futures::{FutureExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::cli::GetArgs;
use crate::console::note;
use crate::engine::{Engine, Outcome};
use crate::exit::{ExitCode, usage};
use crate::id::UserId;
use crate::term::quote;

/// `embedded`: whether the API is the embedded demo API (no `--api` given).
pub async fn run(
    engine: &Engine,
    embedded: bool,
    ids: Vec<UserId>,
    args: &GetArgs,
    interrupt: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    // Before the spinner starts: a lowered concurrency is said on a line of its own, and
    // only when the lookups would have used more sockets than the limit allows. Copies of
    // an id share one lookup (below), so only distinct ids can need a socket at once.
    let distinct = ids.iter().collect::<std::collections::HashSet<_>>().len();
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let fitted = crate::open_files::fit(
        args.concurrency,
        as_u32(distinct),
        engine.client().config().http2,
        true,
        engine.client().config().direct,
    );
    // Every copy takes a slot (a copy costs no request), so that the ids after a repeated
    // one are not held back behind it; a lowered count bounds the slots, copies and all.
    let lowered = fitted < args.concurrency.min(as_u32(distinct)).max(1);
    let concurrency = if lowered {
        fitted
    } else {
        args.concurrency.min(as_u32(ids.len())).max(1)
    };
    let spinner = spinner(ids.len());
    let cancel = interrupt.child_token();
    // An id given more than once is looked up once: its copies share that lookup, and each
    // prints its outcome in its own place. A copy's future holds its lookup until the copy
    // is printed, so a later copy shares it while an earlier one is in a slot or waiting to
    // print. The map holds lookups weakly: once no copy does, the outcome is dropped (a copy
    // far behind looks the id up again, from the cache when there is one), and memory stays
    // what the slots need.
    let mut shared: HashMap<UserId, WeakShared<BoxFuture<'_, Outcome>>> = HashMap::new();
    let mut results = futures::stream::iter(ids)
        .map(|id| {
            let lookup = shared
                .get(&id)
                .and_then(WeakShared::upgrade)
                .unwrap_or_else(|| {
                    let (id, cancel) = (id.clone(), cancel.clone());
                    async move { engine.lookup(&id, &cancel, &mut |_| {}).await }
                        .boxed()
                        .shared()
                });
            // Kept weakly for later copies. A lookup already done gives no weak handle, and
            // needs none: its entry is the one it was found by.
            if let Some(weak) = lookup.downgrade() {
                shared.insert(id.clone(), weak);
            }
            async move {
                let outcome = lookup.clone().await;
                (id, outcome, lookup)
            }
        })
        .buffered(concurrency as usize);

    let mut failed = false;
    // For the line that says a run found nothing: distinct ids, as copies share a lookup.
    let (mut any_found, mut not_found, mut bad_bodies, mut other_failures) = (
        false,
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
        false,
    );
    // After Ctrl-C the rest of the results still come (the lookups cancelled, each at once):
    // records that had arrived behind a slower id are printed, the ids left undone named.
    let mut interrupted = false;
    let mut not_done: Vec<UserId> = Vec::new();
    let mut named: std::collections::HashSet<UserId> = std::collections::HashSet::new();
    let stdout = std::io::stdout();
    loop {
        let next = tokio::select! {
            // Interrupt first: the same Ctrl-C also cancels every lookup, and an unbiased
            // select could pick up a "cancelled" result first and exit 1 instead of 130.
            biased;
            () = interrupt.cancelled(), if !interrupted => {
                interrupted = true;
                continue;
            }
            next = results.next() => next,
        };
        // The lookup is held until its outcome is printed, for a later copy to share.
        let Some((id, outcome, _lookup)) = next else {
            break;
        };
        spinner.inc(1);
        match outcome {
            Err(error) if interrupted && error.kind == crate::client::ErrorKind::Cancelled => {
                // Named once, however often it was given.
                if named.insert(id.clone()) {
                    not_done.push(id);
                }
            }
            Ok(found) => {
                any_found = true;
                // What -v promises ("info"): where each record came from, and how fast.
                match found.source {
                    crate::engine::Source::Cache => tracing::info!("user {id}: from the cache"),
                    crate::engine::Source::Api => tracing::info!(
                        "user {id}: from the API in {} ms ({})",
                        found.latency.as_millis(),
                        crate::console::count(found.attempts, "attempt", "attempts")
                    ),
                }
                // Indented through a parsed value, which keeps one value per key.
                if args.pretty
                    && let Some(key) = crate::duplicate_keys::first(found.record.as_json())
                {
                    spinner.suspend(|| {
                        note!(
                            "userfetch: user {id}: the record holds the key {} twice; --pretty shows its last value (without --pretty the record is printed as sent)",
                            quote(&key)
                        )
                    });
                }
                let written = spinner.suspend(|| {
                    let mut out = stdout.lock();
                    found.record.write_escaped(&mut out, args.pretty)?;
                    out.write_all(b"\n")?;
                    out.flush()
                });
                if let Err(e) = written {
                    // Put away first: its ticker would draw it on until the process ends,
                    // and leave it on the terminal.
                    put_away(&spinner);
                    // A closed pipe (`| head -1`) is the reader saying "enough", not an error.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(exit_code(failed));
                    }
                    return Err(anyhow::Error::new(e).context("cannot write to stdout"));
                }
            }
            Err(error) => {
                failed = true;
                match error.kind {
                    crate::client::ErrorKind::NotFound => {
                        not_found.insert(id.clone());
                    }
                    kind if crate::client::is_web_page(kind, error.detail()) => {
                        bad_bodies.insert(id.clone());
                    }
                    _ => other_failures = true,
                }
                spinner.suspend(|| note!("userfetch: user {id}: {error}"));
            }
        }
    }
    put_away(&spinner);
    if interrupted {
        note!("userfetch: interrupted{}", undone(&not_done));
        return Ok(ExitCode::Interrupted);
    }
    // Not said of the embedded demo API, whose template nobody wrote.
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    if !embedded
        && let Some(hint) = crate::client::template_hint(
            u64::from(any_found),
            count(not_found.len()),
            count(bad_bodies.len()),
            u64::from(other_failures),
        )
    {
        note!("userfetch: {hint}");
    }
    Ok(exit_code(failed))
}

/// "; 2 ids left without an answer: 7, 9", the first few of them: cancelled on the wire or
/// never sent ("not looked up" read as never tried for ids that were in flight).
fn undone(ids: &[UserId]) -> String {
    const SHOWN: usize = 10;
    if ids.is_empty() {
        return String::new();
    }
    let mut listed = ids
        .iter()
        .take(SHOWN)
        .map(UserId::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        listed.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    format!(
        "; {} left without an answer: {listed}",
        crate::console::count(ids.len() as u64, "id", "ids")
    )
}

fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::Failure
    } else {
        ExitCode::Success
    }
}

/// Every id is checked before any request goes out, so one typo fails fast and fetches nothing.
pub fn parse_ids(raw: &[std::ffi::OsString]) -> anyhow::Result<Vec<UserId>> {
    // Said when there were others: the good ones were not looked up either.
    let none = if raw.len() > 1 {
        "; no id was looked up (all are checked first)"
    } else {
        ""
    };
    raw.iter()
        .enumerate()
        .map(|(i, text)| {
            // Taken as bytes, so that the argument can be named: clap's own error said only
            // "invalid UTF-8 was detected in one or more arguments".
            let Some(text) = text.to_str() else {
                return Err(usage(format!(
                    "invalid id {} (argument {}): not UTF-8 text{none}",
                    quote(&text.to_string_lossy()),
                    i + 1
                )));
            };
            // The usual name of stdin, not an id: looked up, it was a 404.
            if text.trim() == "-" {
                return Err(usage(format!(
                    "invalid id \"-\" (argument {}): get takes ids as arguments; to read them \
                     from stdin or a file, use batch (userfetch batch - --out FILE){none}",
                    i + 1
                )));
            }
            UserId::parse_trimmed(text).map_err(|e| {
                usage(format!(
                    "invalid id {} (argument {}): {e}{none}",
                    quote(text),
                    i + 1
                ))
            })
        })
        .collect()
}

fn spinner(total: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} looking up {pos}/{len} users… {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(80));
    crate::console::progress_on_stderr(Some(bar.clone()));
    bar
}

fn put_away(spinner: &ProgressBar) {
    spinner.finish_and_clear();
    crate::console::progress_on_stderr(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dash_points_at_batch() {
        let err = parse_ids(&["1".into(), "-".into()]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid id \"-\" (argument 2): get takes ids as arguments"),
            "{err}"
        );
        assert_eq!(crate::exit::code_for(&err), crate::exit::ExitCode::Usage);
    }

    #[test]
    fn the_first_bad_id_is_named_with_its_position() {
        let err = parse_ids(&["1".into(), "..".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid id \"..\" (argument 2): '.' and '..' are not ids; no id was looked up (all are checked first)"
        );
        // Alone, it is the only id not looked up: nothing more to say.
        let err = parse_ids(&["..".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid id \"..\" (argument 1): '.' and '..' are not ids"
        );
    }
}
