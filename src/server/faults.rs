//! What the demo API can do wrong, on purpose.
//!
//! Faults are set server-wide (`--fault 503=0.1`) or per request with query parameters
//! (`?fault=503&fault_times=2`), so one server can serve every test at once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One way to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// 500 Internal Server Error.
    Status500,
    /// 503 Service Unavailable.
    Status503,
    /// 429 with `Retry-After` in seconds.
    RateLimit,
    /// 429 with `Retry-After` as an HTTP-date.
    RateLimitDate,
    /// The connection is closed without any response.
    Close,
    /// Headers promise the whole body, half of it comes, then the connection drops.
    Truncate,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with a valid JSON body far larger than any sane cap, streamed without a length.
    Oversize,
    /// 200 with the body sent one byte at a time, slowly.
    Drip,
    /// 307 to the same URL on the same host (without the fault).
    Redirect,
    /// 307 to the same URL on another host name for this server.
    RedirectOtherHost,
    /// 200 with a user whose text fields carry terminal escape sequences.
    Hostile,
}

impl Fault {
    /// Whether the fault alters the user's own body, which an id the API does not know
    /// lacks: such an id is answered 404 as without the fault, not with a made-up user.
    pub fn alters_the_body(self) -> bool {
        matches!(
            self,
            Fault::Truncate | Fault::Oversize | Fault::Drip | Fault::Hostile
        )
    }

    pub const ALL: [Fault; 12] = [
        Fault::Status500,
        Fault::Status503,
        Fault::RateLimit,
        Fault::RateLimitDate,
        Fault::Close,
        Fault::Truncate,
        Fault::Malformed,
        Fault::Oversize,
        Fault::Drip,
        Fault::Redirect,
        Fault::RedirectOtherHost,
        Fault::Hostile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Status500 => "500",
            Fault::Status503 => "503",
            Fault::RateLimit => "429",
            Fault::RateLimitDate => "429-date",
            Fault::Close => "close",
            Fault::Truncate => "truncate",
            Fault::Malformed => "malformed",
            Fault::Oversize => "oversize",
            Fault::Drip => "drip",
            Fault::Redirect => "redirect",
            Fault::RedirectOtherHost => "redirect-other-host",
            Fault::Hostile => "hostile",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault '{s}' (known: {})", names.join(", "))
            })
    }
}

/// A server-wide fault and the share of `/users` requests it hits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRate {
    pub fault: Fault,
    pub rate: f64,
}

impl FromStr for FaultRate {
    type Err = String;
    /// `KIND=RATE`, e.g. `503=0.1`; a bare `KIND` means every request.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rate) = s.split_once('=').unwrap_or((s, "1"));
        let fault = name.parse()?;
        let rate = parse_share(rate)
            .ok_or_else(|| format!("fault rate '{rate}' must be a number from 0 to 1"))?;
        Ok(FaultRate { fault, rate })
    }
}

/// A share of requests: a number from 0 to 1.
fn parse_share(text: &str) -> Option<f64> {
    text.parse().ok().filter(|r: &f64| (0.0..=1.0).contains(r))
}

/// Per-request settings read from the query string; each overrides the server's default.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestParams {
    pub fault: Option<Fault>,
    /// Chance that the fault applies to this request (default 1).
    pub fault_rate: Option<f64>,
    /// Apply the fault only to the first N requests for this URL, then answer normally: lets a
    /// test prove that a retry succeeds.
    pub fault_times: Option<u32>,
    pub latency: Option<Duration>,
    pub jitter: Option<Duration>,
    pub retry_after: Option<Duration>,
}

impl RequestParams {
    /// Reads the parameters; anything malformed is an error the server answers with 400.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut p = RequestParams::default();
        let Some(query) = query else { return Ok(p) };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            // As the command line reads them, so at most 100 years: a request's
            // `latency=18446744073709551615s` would otherwise overflow the server's own
            // arithmetic on it (the delay plus the jitter, now plus a Retry-After).
            let duration =
                || crate::values::parse_duration(&value).map_err(|e| format!("{key}: {e}"));
            match &*key {
                "fault" => p.fault = Some(value.parse()?),
                "fault_rate" => {
                    p.fault_rate = Some(
                        parse_share(&value)
                            .ok_or(format!("fault_rate={value}: not a number from 0 to 1"))?,
                    )
                }
                "fault_times" => {
                    p.fault_times = Some(
                        value
                            .parse()
                            .map_err(|_| format!("fault_times={value}: not a count"))?,
                    )
                }
                "latency" => p.latency = Some(duration()?),
                "jitter" => p.jitter = Some(duration()?),
                "retry_after" => p.retry_after = Some(duration()?),
                _ => {}
            }
        }
        // Alone they would be ignored, and a test counting on its fault would see none.
        if p.fault.is_none() && (p.fault_rate.is_some() || p.fault_times.is_some()) {
            return Err("fault_rate and fault_times go with fault=KIND".to_owned());
        }
        Ok(p)
    }

    pub fn is_fault_param(key: &str) -> bool {
        matches!(key, "fault" | "fault_rate" | "fault_times")
    }
}

/// URLs whose requests [`FaultCounter`] counts at most: each is a map entry kept for good,
/// and a client sending ever new URLs with `fault_times` would otherwise grow the server
/// without bound.
const COUNTED_URLS: usize = 100_000;

/// Counts requests per URL for `fault_times`.
#[derive(Default)]
pub struct FaultCounter(std::sync::Mutex<HashMap<String, u32>>);

impl FaultCounter {
    /// Records one more request for `key` and returns how many came before it. Past
    /// [`COUNTED_URLS`] the counts start again (the faults of a URL counted then are given
    /// again): a demo server's memory matters more.
    pub fn bump(&self, key: &str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= COUNTED_URLS && !map.contains_key(key) {
            map.clear();
        }
        let n = map.entry(key.to_owned()).or_insert(0);
        *n += 1;
        *n - 1
    }
}

/// Server-wide faults as `decide` reads them: each request meets at most one, so the shares
/// must not add up past 1 (the later ones would be cut short, silently), and a kind given
/// twice would have its shares summed.
pub fn check_shares(faults: &[FaultRate]) -> Result<(), String> {
    for (i, fr) in faults.iter().enumerate() {
        if faults[..i].iter().any(|earlier| earlier.fault == fr.fault) {
            return Err(format!(
                "--fault {} is given twice; give each kind once, with its whole share",
                fr.fault
            ));
        }
    }
    let total: f64 = faults.iter().map(|fr| fr.rate).sum();
    if total > 1.0 + 1e-9 {
        return Err(format!(
            "--fault shares add up to {}, more than every request; each request meets at most one fault",
            (total * 1000.0).round() / 1000.0
        ));
    }
    Ok(())
}

/// Picks the fault for one request: the request's own wins; otherwise each server-wide fault
/// gets its chance in turn. `unit` is a uniform random number in `[0, 1)`.
pub fn decide(
    params: &RequestParams,
    server: &[FaultRate],
    prior_requests: u32,
    unit: f64,
) -> Option<Fault> {
    if let Some(fault) = params.fault {
        if params.fault_times.is_some_and(|n| prior_requests >= n) {
            return None;
        }
        return (unit < params.fault_rate.unwrap_or(1.0)).then_some(fault);
    }
    let mut threshold = 0.0;
    for fr in server {
        threshold += fr.rate;
        if unit < threshold {
            return Some(fr.fault);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_one_kind_each_and_at_most_every_request() {
        let faults =
            |list: &[&str]| -> Vec<FaultRate> { list.iter().map(|f| f.parse().unwrap()).collect() };
        assert_eq!(check_shares(&faults(&["500=0.5", "503=0.5"])), Ok(()));
        assert_eq!(
            check_shares(&faults(&["500=0.1", "503=0.2", "close=0.7"])),
            Ok(())
        );
        let twice = check_shares(&faults(&["500=0.2", "500=0.3"])).unwrap_err();
        assert!(twice.contains("--fault 500 is given twice"), "{twice}");
        let over = check_shares(&faults(&["500=0.6", "503=0.6"])).unwrap_err();
        assert!(over.contains("add up to 1.2"), "{over}");
    }

    #[test]
    fn parses_fault_rates() {
        assert_eq!(
            "503=0.1".parse(),
            Ok(FaultRate {
                fault: Fault::Status503,
                rate: 0.1
            })
        );
        assert_eq!(
            "close".parse(),
            Ok(FaultRate {
                fault: Fault::Close,
                rate: 1.0
            })
        );
        assert!("503=2".parse::<FaultRate>().is_err());
        assert!(
            "teapot=0.1"
                .parse::<FaultRate>()
                .unwrap_err()
                .contains("unknown fault 'teapot'")
        );
    }

    #[test]
    fn every_fault_name_round_trips() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>(), Ok(f));
        }
    }

    #[test]
    fn reads_request_parameters() {
        let p = RequestParams::parse(Some(
            "fault=429-date&fault_times=2&latency=250ms&retry_after=1s&other=x",
        ))
        .unwrap();
        assert_eq!(p.fault, Some(Fault::RateLimitDate));
        assert_eq!(p.fault_times, Some(2));
        assert_eq!(p.latency, Some(Duration::from_millis(250)));
        assert_eq!(p.retry_after, Some(Duration::from_secs(1)));
        assert!(RequestParams::parse(Some("latency=soon")).is_err());
        assert!(RequestParams::parse(Some("fault_rate=7")).is_err());
        // Without the fault they shape: refused, not ignored.
        for alone in [
            "fault_times=2",
            "fault_rate=0.5",
            "latency=1ms&fault_times=1",
        ] {
            assert_eq!(
                RequestParams::parse(Some(alone)),
                Err("fault_rate and fault_times go with fault=KIND".to_owned()),
                "{alone}"
            );
        }
    }

    #[test]
    fn request_fault_applies_the_first_n_times_only() {
        let p = RequestParams {
            fault: Some(Fault::Status503),
            fault_times: Some(2),
            ..Default::default()
        };
        assert_eq!(decide(&p, &[], 0, 0.5), Some(Fault::Status503));
        assert_eq!(decide(&p, &[], 1, 0.5), Some(Fault::Status503));
        assert_eq!(decide(&p, &[], 2, 0.5), None);
    }

    #[test]
    fn server_faults_split_the_unit_interval() {
        let server = [
            FaultRate {
                fault: Fault::Status503,
                rate: 0.1,
            },
            FaultRate {
                fault: Fault::RateLimit,
                rate: 0.05,
            },
        ];
        let none = RequestParams::default();
        assert_eq!(decide(&none, &server, 0, 0.05), Some(Fault::Status503));
        assert_eq!(decide(&none, &server, 0, 0.12), Some(Fault::RateLimit));
        assert_eq!(decide(&none, &server, 0, 0.2), None);
    }

    /// URLs counted for `fault_times` are bounded: a client sending new ones forever does
    /// not grow the server forever.
    #[test]
    fn the_fault_counter_is_bounded() {
        let counter = FaultCounter::default();
        assert_eq!(counter.bump("/users/1?fault_times=2"), 0);
        assert_eq!(counter.bump("/users/1?fault_times=2"), 1);
        for n in 0..COUNTED_URLS + 10 {
            counter.bump(&format!("/users/{n}?fault_times=1"));
        }
        let len = counter.0.lock().unwrap().len();
        assert!(len <= COUNTED_URLS, "{len}");
    }
}
