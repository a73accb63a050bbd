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
}
