//! Counting outcomes and latencies, and the summary printed (and written as JSON) at the end.

use std::time::Duration;

use serde::Serialize;

use super::output::AtomicFile;
use crate::console::count;

/// Latencies in logarithmic buckets: 32 per power of two (about 3 % wide), so memory is a few
/// kilobytes whether a run has ten ids or ten million.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    /// The extremes seen, in µs: a bucket's middle can lie outside them (a 3 s API reported
    /// as 2,982 ms), and a percentile never should.
    least: u64,
    most: u64,
}

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (64 * SUB) as usize],
            total: 0,
            least: u64::MAX,
            most: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)] += 1;
        self.total += 1;
        self.least = self.least.min(us);
        self.most = self.most.max(us);
    }

    /// The latency below which `q` (0..=1) of the samples fall, to the bucket's precision.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let us = bucket_middle(i).clamp(self.least, self.most);
                return Some(Duration::from_micros(us));
            }
        }
        None
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros());
    let sub = (us >> (exp - u64::from(SUB_BITS))) & (SUB - 1);
    ((exp - u64::from(SUB_BITS) + 1) * SUB + sub) as usize
}

fn bucket_middle(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let exp = index / SUB + u64::from(SUB_BITS) - 1;
    let sub = index % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    ((SUB + sub) << (exp - u64::from(SUB_BITS))) + width / 2
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every id in the input has its outcome.
    Complete,
    /// Stopped by Ctrl-C or SIGTERM; a rerun continues.
    Interrupted,
    /// Stopped by a problem in the input (stdin, found mid-stream); a rerun continues.
    InputError,
    /// Stopped because the API could not be reached: many lookups in a row failed at the
    /// connection, each after every attempt it was given (one, for a TLS certificate
    /// refused); a rerun continues.
    Unreachable,
    /// Stopped because the API refused many lookups in a row for their credentials (401,
    /// or a proxy's 407); a rerun continues once they are fixed.
    Refused,
    /// The run finished (every id has its outcome, stored), but an output file could not be
    /// put in place (a full disk); a rerun writes it from the store.
    OutputError,
    /// Stopped by an error of its own: the cache file refused a write or a read (a full disk,
    /// a broken file). What was committed before stays; a rerun continues once it is fixed.
    Error,
    /// Never took an id: the input, an output or the cache file could not be used (exit 2),
    /// or another process held a new cache file while it was being set up (exit 1). Nothing
    /// was fetched.
    NotStarted,
}

/// Counts for this run. `found + not_found + failed + cached + done_earlier` are the distinct
/// ids settled; `unfinished` were claimed but not settled when the run stopped; together they
/// make `ids`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Distinct valid ids read from the input.
    pub ids: u64,
    pub found: u64,
    pub not_found: u64,
    pub failed: u64,
    /// Answered from a fresh cached record, without a request.
    pub cached: u64,
    /// Settled by an earlier run of the same command.
    pub done_earlier: u64,
    /// Repeats of an id already seen in this run.
    pub duplicates: u64,
    pub invalid_lines: u64,
    pub unfinished: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub records: u64,
}

/// What `--summary-json` writes; the human summary says the same in words.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub status: Status,
    /// Why a run did not complete, or why its output could not be written, in the words
    /// stderr uses; `None` for a complete run and a plain interruption.
    pub reason: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Lines with a valid id the run never reached (it stopped early); `None` when the input
    /// was streamed and not counted ahead.
    pub not_read: Option<u64>,
    pub elapsed_s: f64,
    /// Ids this run fetched, per second of its run (cache hits and earlier runs left out).
    pub ids_per_s: f64,
    /// Requests sent, retries included: what the API saw.
    pub requests: u64,
    pub retries: u64,
    /// Lookup latency for ids fetched from the API, from the first attempt's admission past the
    /// concurrency window and rate limit to the answer (retries included, time stopped left
    /// out), when there were any.
    pub latency_ms: Option<LatencyMs>,
    /// 429 and 503 answers: the API asking for a slower pace.
    pub throttled_answers: u64,
    /// Times the adaptive throttle halved the requests in flight.
    pub throttle_events: u64,
    pub out: Option<FileReport>,
    pub failures: Option<FileReport>,
}

impl Summary {
    /// A run that ended before it claimed any id.
    pub fn nothing_done(status: Status) -> Summary {
        Summary {
            status,
            reason: None,
            counts: Counts::default(),
            not_read: None,
            elapsed_s: 0.0,
            ids_per_s: 0.0,
            requests: 0,
            retries: 0,
            latency_ms: None,
            throttled_answers: 0,
            throttle_events: 0,
            out: None,
            failures: None,
        }
    }

    pub fn latency(h: &Histogram) -> Option<LatencyMs> {
        let ms = |q| {
            h.quantile(q)
                .map(|d| three_figures(d.as_secs_f64() * 1000.0))
        };
        Some(LatencyMs {
            p50: ms(0.50)?,
            p95: ms(0.95)?,
            p99: ms(0.99)?,
        })
    }

    /// The human summary: a few lines for stderr.
    /// `rerun` says how to finish what is left unfinished.
    pub fn render(&self, rerun: &str) -> String {
        let c = &self.counts;
        let head = match self.status {
            Status::Complete => "done",
            Status::Interrupted => "interrupted",
            Status::InputError => "stopped by an input error",
            Status::Unreachable => "stopped, connections to the API failing,",
            Status::Refused => "stopped, the API refusing its requests,",
            Status::OutputError => "done, but its output could not be written,",
            Status::Error => "stopped by an error",
            // Not rendered: the error line is all such a run says.
            Status::NotStarted => "not started",
        };
        let mut text = format!(
            "userfetch: batch {head} in {}: {}: {} found, {} not found, {} failed, {} skipped ({} cached, {} done in an earlier run)",
            human_secs(self.elapsed_s),
            count(c.ids, "id", "ids"),
            c.found,
            c.not_found,
            c.failed,
            c.cached + c.done_earlier,
            c.cached,
            c.done_earlier,
        );
        let not_read = self.not_read.unwrap_or(0);
        if c.unfinished > 0 || not_read > 0 {
            text.push_str(&format!(", {} unfinished", c.unfinished));
            if not_read > 0 {
                text.push_str(&format!(" and {not_read} lines of ids not read yet"));
            }
            text.push_str(&format!(" ({rerun} to finish)"));
        } else if self.status == Status::InputError {
            // Every id read was done, but the rest of the input was not read and no output
            // was written: the run is not finished either.
            text.push_str(&format!(
                "; the rest of the input was not read ({rerun} to finish)"
            ));
        }
        let rate = format!("{:.0}", self.ids_per_s);
        text.push_str(&format!(
            "\n  {rate} {}/s; {}, {}",
            if rate == "1" { "id" } else { "ids" },
            count(self.requests, "request", "requests"),
            count(self.retries, "retry", "retries")
        ));
        if let Some(l) = &self.latency_ms {
            text.push_str(&format!(
                "; latency p50 {} ms, p95 {} ms, p99 {} ms",
                l.p50, l.p95, l.p99
            ));
            // Read otherwise as the API's own pace: a Retry-After of 2 s makes a 1 ms API's
            // p50 2 s.
            if self.retries > 0 {
                text.push_str(" (per id, retries and their backoff included)");
            }
        }
        if self.throttle_events == 0 && self.throttled_answers == 0 {
            // "throttled 0 times (0 answers were …)" read as a fault in a clean run.
            text.push_str("\n  never throttled (no answer was 429 or 503)");
        } else {
            text.push_str(&format!(
                "\n  throttled {} ({} 429 or 503)",
                count(self.throttle_events, "time", "times"),
                count(self.throttled_answers, "answer was", "answers were")
            ));
        }
        if c.duplicates > 0 || c.invalid_lines > 0 {
            text.push_str(&format!(
                "; {} and {} left out (not counted among the ids)",
                count(c.duplicates, "duplicate id", "duplicate ids"),
                count(c.invalid_lines, "invalid line", "invalid lines")
            ));
        }
        for (one, many, report) in [
            ("found record", "found records", &self.out),
            (
                "not-found or failed id",
                "not-found and failed ids",
                &self.failures,
            ),
        ] {
            if let Some(r) = report {
                text.push_str(&format!(
                    "\n  {} in {}",
                    count(r.records, one, many),
                    crate::term::sanitize(&r.path)
                ));
            }
        }
        text
    }

    pub fn write_json(&self, file: AtomicFile) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        file.write_all(text.as_bytes())
    }
}

/// To three significant figures, the histogram's own precision (its buckets are ~3 % wide):
/// `339.97 ms` claimed a precision the figure does not have.
fn three_figures(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return x.max(0.0);
    }
    let shift = 2 - x.log10().floor() as i32;
    // Scaled by a power of ten that is exact (10, 100, …), so 2015 gives 2020, not
    // 2020.0000000000002.
    if shift >= 0 {
        let scale = 10f64.powi(shift);
        (x * scale).round() / scale
    } else {
        let scale = 10f64.powi(-shift);
        (x / scale).round() * scale
    }
}

/// Seconds as the summary says them, one way at every length: `0.49 s`, `19 s`,
/// `2 min 5 s`, `1 h 2 min`.
fn human_secs(s: f64) -> String {
    if s < 10.0 {
        return format!("{s:.2} s");
    }
    let whole = s.round() as u64;
    match (whole / 3600, whole % 3600 / 60, whole % 60) {
        (0, 0, secs) => format!("{secs} s"),
        (0, min, secs) => format!("{min} min {secs} s"),
        (h, min, _) => format!("{h} h {min} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_said_one_way_at_every_length() {
        assert_eq!(human_secs(0.487), "0.49 s");
        assert_eq!(human_secs(19.2), "19 s");
        assert_eq!(human_secs(125.0), "2 min 5 s");
        assert_eq!(human_secs(3720.4), "1 h 2 min");
    }

    #[test]
    fn buckets_are_ordered_and_about_three_percent_wide() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            31,
            32,
            33,
            63,
            64,
            100,
            1000,
            50_000,
            1_000_000,
            u64::MAX / 2,
        ] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let mid = bucket_middle(b);
            let err = (mid as f64 - us as f64).abs() / (us.max(1) as f64);
            assert!(err <= 0.04, "{us} -> {mid}");
        }
    }

    #[test]
    fn quantiles_come_from_the_right_samples() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = |q| h.quantile(q).unwrap().as_secs_f64() * 1000.0;
        assert!((p(0.5) - 50.0).abs() < 2.0, "{}", p(0.5));
        assert!((p(0.95) - 95.0).abs() < 3.0, "{}", p(0.95));
        assert!((p(0.99) - 99.0).abs() < 3.0, "{}", p(0.99));
        assert!(Histogram::default().quantile(0.5).is_none());
    }

    #[test]
    fn one_of_a_thing_reads_singular() {
        let one = |n: u64| Summary {
            status: Status::Complete,
            reason: None,
            counts: Counts {
                ids: n,
                found: n,
                duplicates: n,
                invalid_lines: n,
                ..Counts::default()
            },
            not_read: None,
            elapsed_s: 1.0,
            ids_per_s: n as f64,
            requests: n,
            retries: n,
            latency_ms: None,
            throttled_answers: n,
            throttle_events: n,
            out: Some(FileReport {
                path: "out.jsonl".into(),
                records: n,
            }),
            failures: Some(FileReport {
                path: "f.jsonl".into(),
                records: n,
            }),
        };
        let singular = [
            ": 1 id: 1 found",
            "1 id/s; 1 request, 1 retry",
            "throttled 1 time (1 answer was 429 or 503)",
            "1 duplicate id and 1 invalid line left out (not counted among the ids)",
            "1 found record in out.jsonl",
            "1 not-found or failed id in f.jsonl",
        ];
        let plural = [
            ": 2 ids: 2 found",
            "2 ids/s; 2 requests, 2 retries",
            "throttled 2 times (2 answers were 429 or 503)",
            "2 duplicate ids and 2 invalid lines left out (not counted among the ids)",
            "2 found records in out.jsonl",
            "2 not-found and failed ids in f.jsonl",
        ];
        for (n, parts) in [(1, singular), (2, plural)] {
            let text = one(n).render("rerun");
            for part in parts {
                assert!(text.contains(part), "{part}: {text}");
            }
        }
        let none = one(0).render("rerun");
        assert!(
            none.contains("\n  never throttled (no answer was 429 or 503)"),
            "{none}"
        );
        assert!(!none.contains("throttled 0"), "{none}");
    }

    /// A Retry-After of 2 s makes a 1 ms API's p50 2 s: the line says what the figures hold
    /// when retries are in them.
    #[test]
    fn latency_says_retries_are_in_it_when_there_were_any() {
        for retries in [0, 3] {
            let summary = Summary {
                requests: 10 + retries,
                retries,
                latency_ms: Some(LatencyMs {
                    p50: 2005.0,
                    p95: 2005.0,
                    p99: 2005.0,
                }),
                ..Summary::nothing_done(Status::Complete)
            };
            let text = summary.render("rerun");
            assert!(text.contains("latency p50 2005 ms"), "{text}");
            assert_eq!(
                text.contains("(per id, retries and their backoff included)"),
                retries > 0,
                "{text}"
            );
        }
    }

    #[test]
    fn latencies_are_given_to_three_figures() {
        for (x, shown) in [
            (339.97, 340.0),
            (2015.23, 2020.0),
            (101.38, 101.0),
            (0.3456, 0.346),
            (12.349, 12.3),
            (0.0, 0.0),
        ] {
            assert_eq!(three_figures(x), shown, "{x}");
        }
    }

    #[test]
    fn quantiles_stay_within_what_was_seen() {
        let mut h = Histogram::default();
        h.record(Duration::from_millis(3006));
        assert_eq!(h.quantile(0.5), Some(Duration::from_millis(3006)));
        h.record(Duration::from_millis(3010));
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 >= Duration::from_millis(3006) && p99 <= Duration::from_millis(3010));
    }
}
