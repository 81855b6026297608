//! How option values are written and read: durations, sizes, whole numbers, on/off
//! switches and addresses, each refused in words that say what is wanted. Shared by the
//! command line and the demo API's query parameters, which read durations the same way.

use std::time::Duration;

/// The longest duration accepted: beyond any real use, and far enough inside the clock's
/// range that "now + this" cannot overflow (`500000000000y` used to panic there). In
/// humantime's years of 365.25 days, so that `100y` itself is accepted.
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

/// [`parse_duration`] for a command-line option. Its values may start with a hyphen, so
/// that "-5ms" is said to be negative (read as an unknown option, it was "unexpected
/// argument '-5'"); and an option in the value's place ("--latency --json") is said to be
/// one: the value is missing.
pub fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    no_option(text)?;
    parse_duration(text)
}

/// [`parse_limit`] for a command-line option, as [`parse_duration_arg`].
pub fn parse_limit_arg(text: &str) -> Result<Duration, String> {
    no_option(text)?;
    parse_limit(text)
}

fn no_option(text: &str) -> Result<(), String> {
    let Some(rest) = text.strip_prefix('-') else {
        return Ok(());
    };
    if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        Err(format!(
            "'{text}' is negative: a duration is 0 or more, like 500ms"
        ))
    } else {
        Err(format!(
            "the value is missing ('{text}' is an option, not a duration like 500ms)"
        ))
    }
}

/// `500ms`, `2s`, `1m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| {
        // A number past what a duration holds is past the longest accepted too; humantime
        // says it in words about its own precision, and says the same of a fraction finer
        // than a nanosecond ("1.5ns").
        if matches!(e, humantime::DurationError::NumberOverflow) && !text.contains('.') {
            return format!("'{text}' is longer than the 100 years accepted");
        }
        // humantime's own words suggest units the docs never write ("2sec"), or list units
        // with "(and few variations)"; these say what the help says.
        let why = match e {
            humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                "a unit is needed: ms, s, m, h or d".to_owned()
            }
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!("unknown unit '{unit}': use ms, s, m, h or d")
            }
            humantime::DurationError::NumberOverflow => {
                "too long, or finer than the 1 ns a duration holds".to_owned()
            }
            other => other.to_string(),
        };
        format!("'{text}' is not a duration like 500ms, 2s or 1m ({why})")
    })?;
    if duration > LONGEST {
        return Err(format!("'{text}' is longer than the 100 years accepted"));
    }
    Ok(duration)
}

/// A time limit: as [`parse_duration`], but above zero, which would fail every attempt
/// before it began.
pub fn parse_limit(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!(
            "'{text}' would fail every attempt at once; give a limit above zero"
        )),
        limit => Ok(limit),
    }
}

/// A whole number within `low..=high`. clap's integer parsers answer `--users x` in the
/// standard library's words ("invalid digit found in string") and `--retries -1` with a tip
/// about `--`; this says what is wanted, in the words batch uses for `--concurrency`.
pub fn whole<T>(
    low: T,
    high: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display + Send + Sync + 'static,
{
    move |text| {
        text.trim()
            .parse::<T>()
            .ok()
            .filter(|n| (low..=high).contains(n))
            .ok_or_else(|| format!("must be a whole number from {low} to {high}"))
    }
}

/// An address to listen on: an IP address, or `localhost` for the loopback one (the
/// standard parser's "invalid IP address syntax" left a user who typed it to guess).
pub fn parse_bind(text: &str) -> Result<std::net::IpAddr, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("localhost") {
        return Ok(std::net::Ipv4Addr::LOCALHOST.into());
    }
    text.parse().map_err(|_| {
        "is no IP address: 127.0.0.1 (or localhost) for this machine only, 0.0.0.0 for every \
         address"
            .to_owned()
    })
}

/// Any whole number `u64` holds; said without its 20-digit maximum.
pub fn whole_u64(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| "must be a whole number from 0 to 2^64 - 1".to_owned())
}

/// An on/off variable such as `USERFETCH_HTTP2`: `1`, `true`, `yes`, `on` or `0`, `false`,
/// `no`, `off` (any case), and empty for off, as an unset variable. clap's
/// `FalseyValueParser` reads every other word as on, so a typo (`USERFETCH_HTTP2=ture`) or a
/// `maybe` switched the option on silently; its `BoolishValueParser` takes the same words but
/// neither surrounding spaces nor an empty value (batch checks the variable with this too),
/// and its refusal does not list them.
pub fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" | "n" | "f" => Ok(false),
        "1" | "true" | "yes" | "on" | "y" | "t" => Ok(true),
        _ => Err(format!(
            "'{text}' is neither on (1, true, yes, on, y, t) nor off (0, false, no, off, n, f, empty)"
        )),
    }
}

/// `1048576`, `512KiB`, `2MB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bytes = text
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("'{text}' is not a size like 512KiB or 2MB"))?;
    // No body fits in nothing: every lookup would fail.
    if bytes == 0 {
        return Err(format!("'{text}' leaves no room for any body"));
    }
    Ok(bytes)
}

/// A size in the unit it was most likely written in: MiB or KiB when it is a whole number of
/// them, else MB or kB, else bytes (`1GB` reads `1000 MB`).
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    match bytes {
        0 => "0 bytes".to_owned(),
        b if b % (KIB * KIB) == 0 => format!("{} MiB", b / (KIB * KIB)),
        b if b % KIB == 0 => format!("{} KiB", b / KIB),
        b if b % 1_000_000 == 0 => format!("{} MB", b / 1_000_000),
        b if b % 1000 == 0 => format!("{} kB", b / 1000),
        1 => "1 byte".to_owned(),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_without_a_unit_or_with_an_unknown_one_says_which_units_to_use() {
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let missing = parse_duration("2").unwrap_err();
        assert!(
            missing.ends_with("(a unit is needed: ms, s, m, h or d)"),
            "{missing}"
        );
        let unknown = parse_duration("1mo").unwrap_err();
        assert!(
            unknown.ends_with("(unknown unit 'mo': use ms, s, m, h or d)"),
            "{unknown}"
        );
    }

    #[test]
    fn a_negative_duration_is_said_to_be_one() {
        assert_eq!(
            parse_duration_arg("-5ms"),
            Err("'-5ms' is negative: a duration is 0 or more, like 500ms".to_owned())
        );
        // `--latency --json`: the next option taken for the value.
        assert_eq!(
            parse_limit_arg("--json"),
            Err(
                "the value is missing ('--json' is an option, not a duration like 500ms)"
                    .to_owned()
            )
        );
    }

    /// Past the 100 years accepted, whether a duration could hold it or not.
    #[test]
    fn a_duration_too_long_to_hold_is_said_too_long() {
        for text in ["99999999999s", "18446744073709551616ms"] {
            assert_eq!(
                parse_duration(text),
                Err(format!("'{text}' is longer than the 100 years accepted"))
            );
        }
        // humantime's one error for both: a fraction is told it may be too fine.
        let fine = parse_duration("1.5ns").unwrap_err();
        assert!(
            fine.ends_with("(too long, or finer than the 1 ns a duration holds)"),
            "{fine}"
        );
    }

    #[test]
    fn sizes_are_said_as_they_are_written() {
        assert_eq!(size(1024 * 1024), "1 MiB");
        assert_eq!(size(512 * 1024), "512 KiB");
        assert_eq!(size(2_000_000), "2 MB");
        assert_eq!(size(1500), "1500 bytes");
        assert_eq!(size(1), "1 byte");
    }
}
