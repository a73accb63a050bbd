//! Time spans as systemd and operators write them: `90s`, `1min 30s`, `500ms`, `infinity`.
//!
//! The same parser reads steward's TOML and the text `systemctl show -p TimeoutStopUSec
//! --value` prints, so both sources agree on what "1min 30s" means.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Finite(Duration),
    Infinity,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration (examples: \"25s\", \"1min 30s\", \"500ms\", \"infinity\")")]
pub struct SpanError(pub String);

/// Parses a systemd-style time span. A bare number means seconds, as in unit files.
pub fn parse_span(text: &str) -> Result<Span, SpanError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("infinity") {
        return Ok(Span::Infinity);
    }
    if t.is_empty() {
        return Err(SpanError(text.to_string()));
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Span::Finite(Duration::from_secs(secs)));
    }
    // humantime accepts every unit systemd prints (us, ms, s, min, h, d, w, ...).
    humantime::parse_duration(t)
        .map(Span::Finite)
        .map_err(|_| SpanError(text.to_string()))
}

/// The units of systemd's time spans (`parse_sec()` in systemd's time-util.c), in its
/// order: the first one the text starts with wins, so `ms` is milliseconds and a bare `m`
/// minutes. Values in microseconds; a month is 30.44 days and a year 365.25 days, as there.
const SYSTEMD_UNITS: &[(&str, u64)] = &[
    ("seconds", SEC),
    ("second", SEC),
    ("sec", SEC),
    ("s", SEC),
    ("minutes", MINUTE),
    ("minute", MINUTE),
    ("min", MINUTE),
    ("months", MONTH),
    ("month", MONTH),
    ("M", MONTH),
    ("msec", 1_000),
    ("ms", 1_000),
    ("m", MINUTE),
    ("hours", HOUR),
    ("hour", HOUR),
    ("hr", HOUR),
    ("h", HOUR),
    ("days", DAY),
    ("day", DAY),
    ("d", DAY),
    ("weeks", 7 * DAY),
    ("week", 7 * DAY),
    ("w", 7 * DAY),
    ("years", YEAR),
    ("year", YEAR),
    ("y", YEAR),
    ("usec", 1),
    ("us", 1),
    // U+03BC GREEK SMALL LETTER MU and U+00B5 MICRO SIGN: systemd takes both.
    ("\u{3bc}s", 1),
    ("\u{b5}s", 1),
];
const SEC: u64 = 1_000_000;
const MINUTE: u64 = 60 * SEC;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const MONTH: u64 = 2_629_800 * SEC;
const YEAR: u64 = 31_557_600 * SEC;

/// What systemd counts as white space between the parts of a time span.
fn is_systemd_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Parses a time span exactly as systemd reads a unit's `TimeoutStopSec=` or
/// `WatchdogSec=` (and as `systemctl show` prints one): parts summed (`1min 30s`,
/// `1min30s`), each a number with an optional fraction (`30.5`, `.5s`) and an optional
/// unit (default seconds), `infinity` alone. What this refuses, systemd ignores with a
/// warning; what it accepts, systemd uses. Unlike [`parse_span`] (steward's own keys),
/// `ns` is not a unit here, and `Infinity` is not `infinity`.
pub fn parse_systemd_span(text: &str) -> Result<Span, SpanError> {
    let bad = || SpanError(text.to_string());
    let mut p = text.trim_start_matches(is_systemd_space);
    if let Some(rest) = p.strip_prefix("infinity") {
        return match rest.chars().all(is_systemd_space) {
            true => Ok(Span::Infinity),
            false => Err(bad()),
        };
    }
    let mut usec: u64 = 0;
    let mut something = false;
    loop {
        p = p.trim_start_matches(is_systemd_space);
        if p.is_empty() {
            return match something {
                true => Ok(Span::Finite(Duration::from_micros(usec))),
                false => Err(bad()),
            };
        }
        // strtoll's optional '+' (a '-' is refused, "-0" included).
        let digits_at = match p.strip_prefix('+') {
            Some(d) if d.starts_with(|c: char| c.is_ascii_digit()) => d,
            _ => p,
        };
        let int_len = digits_at.len()
            - digits_at
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        let (int, after_int) = digits_at.split_at(int_len);
        let (fraction, after_number) = match after_int.strip_prefix('.') {
            Some(f) => {
                let len = f.len() - f.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                // "3." and "3.sec": a point needs a digit after it.
                if len == 0 {
                    return Err(bad());
                }
                (Some(&f[..len]), &f[len..])
            }
            None if int.is_empty() => return Err(bad()),
            None => (None, after_int),
        };
        let whole: u64 = match int {
            "" => 0,
            i => i.parse().map_err(|_| bad())?,
        };
        let unit_at = after_number.trim_start_matches(is_systemd_space);
        let (multiplier, rest) = match SYSTEMD_UNITS
            .iter()
            .find_map(|&(name, m)| unit_at.strip_prefix(name).map(|r| (m, r)))
        {
            Some(found) => found,
            // No unit: seconds. Right after the number only the end may follow
            // ("12.34.56" is refused; "12 34" is two parts, as in systemd).
            None if unit_at.len() == after_number.len() && !unit_at.is_empty() => return Err(bad()),
            None => (SEC, unit_at),
        };
        let part = whole.checked_mul(multiplier).ok_or_else(bad)?;
        usec = usec.checked_add(part).ok_or_else(bad)?;
        if let Some(f) = fraction {
            // Each digit is worth a tenth of the one before it; beyond the unit's
            // microseconds the rest count for nothing, as in systemd.
            let mut m = multiplier / 10;
            for d in f.bytes() {
                usec = usec.checked_add(u64::from(d - b'0') * m).ok_or_else(bad)?;
                m /= 10;
            }
        }
        if usec == u64::MAX {
            return Err(bad());
        }
        something = true;
        p = rest;
    }
}

/// systemd's D-Bus encoding: microseconds, with `u64::MAX` for infinity.
pub fn from_usec(usec: u64) -> Span {
    if usec == u64::MAX {
        Span::Infinity
    } else {
        Span::Finite(Duration::from_micros(usec))
    }
}

/// Formats a duration the way the logs and messages show it: "85 s", "250 ms", "1.5 s".
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A point in time as `2026-11-30 11:20:01 UTC`, from seconds since the Unix epoch: for
/// `steward status`, beside the relative times. UTC, since steward has no time zone data
/// of its own and an operator comparing with the journal can ask for UTC there too
/// (`journalctl --utc`).
pub fn utc_timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Days to a civil date (Howard Hinnant's days_from_civil, inverted), proleptic
    // Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemctl_show_format_is_understood() {
        assert_eq!(
            parse_span("1min 30s"),
            Ok(Span::Finite(Duration::from_secs(90)))
        );
        assert_eq!(parse_span("30s"), Ok(Span::Finite(Duration::from_secs(30))));
        assert_eq!(
            parse_span("500ms"),
            Ok(Span::Finite(Duration::from_millis(500)))
        );
        assert_eq!(parse_span("infinity"), Ok(Span::Infinity));
    }

    #[test]
    fn bare_number_means_seconds() {
        assert_eq!(parse_span("90"), Ok(Span::Finite(Duration::from_secs(90))));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_span("soon").is_err());
        assert!(parse_span("").is_err());
        assert!(parse_span("-5s").is_err());
    }

    fn systemd(text: &str) -> Result<Span, SpanError> {
        parse_systemd_span(text)
    }

    fn usec(n: u64) -> Result<Span, SpanError> {
        Ok(Span::Finite(Duration::from_micros(n)))
    }

    #[test]
    fn systemd_spans_take_a_fraction() {
        assert_eq!(systemd("30.5"), usec(30_500_000));
        assert_eq!(systemd("1.5min"), usec(90_000_000));
        assert_eq!(systemd(".5s"), usec(500_000));
        assert_eq!(systemd("0.000001"), usec(1));
        // Beyond a microsecond the digits count for nothing.
        assert_eq!(systemd("1.0000009s"), usec(1_000_000));
    }

    #[test]
    fn systemd_spans_take_every_unit_systemd_knows() {
        for (text, micros) in [
            ("5us", 5),
            ("5usec", 5),
            ("5\u{3bc}s", 5),
            ("5\u{b5}s", 5),
            ("5ms", 5_000),
            ("5msec", 5_000),
            ("5s", 5 * SEC),
            ("5sec", 5 * SEC),
            ("5 seconds", 5 * SEC),
            ("5m", 5 * MINUTE),
            ("5min", 5 * MINUTE),
            ("5minutes", 5 * MINUTE),
            ("5h", 5 * HOUR),
            ("5hr", 5 * HOUR),
            ("5d", 5 * DAY),
            ("5w", 35 * DAY),
            ("5M", 5 * 2_629_800 * SEC),
            ("5month", 5 * 2_629_800 * SEC),
            ("5y", 5 * 31_557_600 * SEC),
        ] {
            assert_eq!(systemd(text), usec(micros), "{text}");
        }
    }

    #[test]
    fn systemd_spans_sum_their_parts_with_or_without_spaces() {
        assert_eq!(systemd("1min 30s"), usec(90 * SEC));
        assert_eq!(systemd("1min30s"), usec(90 * SEC));
        assert_eq!(systemd(" 2 h 1.5 s "), usec(2 * HOUR + 1_500_000));
        assert_eq!(systemd("12 34"), usec(46 * SEC));
        assert_eq!(systemd("0"), usec(0));
    }

    #[test]
    fn systemd_spans_take_infinity_in_lower_case_only() {
        assert_eq!(systemd("infinity"), Ok(Span::Infinity));
        assert_eq!(systemd("  infinity \t"), Ok(Span::Infinity));
        assert!(systemd("Infinity").is_err());
        assert!(systemd("infinity 5s").is_err());
    }

    #[test]
    fn systemd_spans_refuse_what_systemd_ignores() {
        for text in [
            "",
            " ",
            "soon",
            "-1",
            "-0",
            "3.",
            "3.sec",
            "12.34.56",
            "5ns",
            "5 parsecs",
            "18446744073709551615",
            "99999999999999y",
        ] {
            assert!(systemd(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn usec_max_is_infinity() {
        assert_eq!(from_usec(u64::MAX), Span::Infinity);
        assert_eq!(from_usec(90_000_000), Span::Finite(Duration::from_secs(90)));
    }

    #[test]
    fn whole_seconds_show_as_seconds_and_the_rest_as_ms_or_tenths() {
        assert_eq!(fmt_duration(Duration::from_secs(85)), "85 s");
        assert_eq!(fmt_duration(Duration::from_millis(1000)), "1 s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5 s");
    }

    #[test]
    fn the_epoch_is_midnight_of_new_years_day_1970() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn a_leap_day_and_a_time_of_day_are_shown_as_the_calendar_has_them() {
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_timestamp(1_798_761_599), "2026-12-31 23:59:59 UTC");
    }
}
