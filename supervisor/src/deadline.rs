//! The stop deadline: how long steward lets the child drain before it kills the child's
//! whole process tree.
//!
//! The number must fit inside the outer manager's own timer, or the outer manager kills
//! first and nobody learns why. Under systemd that timer is the unit's `TimeoutStopUSec`,
//! which is not in the environment: [`crate::systemd`] asks systemd for it, and this module
//! turns the answer and the configuration into one number plus a sentence that says where
//! it came from, for the log.

use std::time::Duration;

use crate::config::{fmt_duration, DeadlineSetting};
use crate::duration::Span;

/// What systemd said about this unit's stop timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitTimeout {
    pub unit: String,
    pub timeout_stop: Span,
    /// "D-Bus" or "systemctl show".
    pub via: &'static str,
}

/// What we know about the outer manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outer {
    /// Not started by systemd (no `INVOCATION_ID`).
    NotSystemd,
    /// Under systemd, and it answered.
    Systemd(UnitTimeout),
    /// Under systemd, but neither D-Bus nor systemctl answered.
    SystemdUnreachable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Systemd(UnitTimeout),
    Config,
    Fallback(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// `None`: no deadline (infinity); steward waits for the drain however long it takes.
    pub value: Option<Duration>,
    pub margin: Duration,
    pub source: Source,
    /// Something the operator should fix, logged as a warning.
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    #[error("stop.margin {margin} is not smaller than the unit's TimeoutStopSec {timeout} ({unit}), so no time would be left to drain")]
    MarginTooLarge {
        margin: String,
        timeout: String,
        unit: String,
    },
}

impl Deadline {
    /// The sentence the log carries, e.g.
    /// "stop deadline 85 s = TimeoutStopSec 90 s - margin 5 s (systemd)".
    pub fn describe(&self) -> String {
        match (&self.source, self.value) {
            (Source::Systemd(u), Some(d)) => format!(
                "stop deadline {} = TimeoutStopSec {} - margin {} (systemd)",
                fmt_duration(d),
                fmt_span(u.timeout_stop),
                fmt_duration(self.margin)
            ),
            (Source::Systemd(_), None) => {
                "stop deadline none: TimeoutStopSec is infinity (systemd); steward waits for the drain without a limit".to_string()
            }
            (Source::Config, Some(d)) => {
                format!("stop deadline {} (stop.deadline in steward's config)", fmt_duration(d))
            }
            (Source::Config, None) => {
                "stop deadline none: stop.deadline = \"infinity\" in steward's config".to_string()
            }
            (Source::Fallback(why), Some(d)) => {
                format!("stop deadline {} (stop.fallback_deadline: {why})", fmt_duration(d))
            }
            (Source::Fallback(why), None) => format!("stop deadline none ({why})"),
        }
    }

    /// A short tag for the structured `DEADLINE_SOURCE` field.
    pub fn source_tag(&self) -> &'static str {
        match self.source {
            Source::Systemd(_) => "systemd",
            Source::Config => "config",
            Source::Fallback(_) => "fallback",
        }
    }
}

pub fn fmt_span(s: Span) -> String {
    match s {
        Span::Finite(d) => fmt_duration(d),
        Span::Infinity => "infinity".to_string(),
    }
}

/// Combines the configured setting with what systemd said. Pure: tested without systemd.
pub fn resolve(
    setting: DeadlineSetting,
    margin: Duration,
    fallback: Duration,
    outer: &Outer,
) -> Result<Deadline, DeadlineError> {
    let deadline = |value, source, warning| Deadline {
        value,
        margin,
        source,
        warning,
    };
    match setting {
        DeadlineSetting::Fixed(d) => {
            let warning = match outer {
                Outer::Systemd(u) => match u.timeout_stop {
                    Span::Finite(t) if d + margin > t => Some(format!(
                        "stop.deadline {} plus margin {} exceeds TimeoutStopSec {} of {}: systemd may SIGKILL before steward's deadline; lower stop.deadline or raise TimeoutStopSec",
                        fmt_duration(d), fmt_duration(margin), fmt_duration(t), u.unit
                    )),
                    _ => None,
                },
                _ => None,
            };
            Ok(deadline(Some(d), Source::Config, warning))
        }
        DeadlineSetting::Infinity => {
            let warning = match outer {
                Outer::Systemd(u) if u.timeout_stop != Span::Infinity => Some(format!(
                    "stop.deadline is infinity but {} has TimeoutStopSec {}: systemd will SIGKILL at its timeout",
                    u.unit,
                    fmt_span(u.timeout_stop)
                )),
                _ => None,
            };
            Ok(deadline(None, Source::Config, warning))
        }
        DeadlineSetting::Auto => match outer {
            Outer::Systemd(u) => match u.timeout_stop {
                Span::Infinity => Ok(deadline(None, Source::Systemd(u.clone()), None)),
                Span::Finite(t) => {
                    if margin >= t {
                        return Err(DeadlineError::MarginTooLarge {
                            margin: fmt_duration(margin),
                            timeout: fmt_duration(t),
                            unit: u.unit.clone(),
                        });
                    }
                    Ok(deadline(Some(t - margin), Source::Systemd(u.clone()), None))
                }
            },
            Outer::NotSystemd => Ok(deadline(
                Some(fallback),
                Source::Fallback("not running under systemd".into()),
                Some(format!(
                    "not running under systemd: using the fallback stop deadline {}; set stop.deadline to match whatever stops this process (docker stop: 10 s, Kubernetes: terminationGracePeriodSeconds)",
                    fmt_duration(fallback)
                )),
            )),
            Outer::SystemdUnreachable(why) => Ok(deadline(
                Some(fallback),
                Source::Fallback(format!("could not ask systemd: {why}")),
                Some(format!(
                    "could not read TimeoutStopUSec from systemd ({why}); using the fallback stop deadline {}",
                    fmt_duration(fallback)
                )),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn systemd(t: Span) -> Outer {
        Outer::Systemd(UnitTimeout {
            unit: "steward-proxy.service".into(),
            timeout_stop: t,
            via: "D-Bus",
        })
    }
    const S5: Duration = Duration::from_secs(5);
    const S25: Duration = Duration::from_secs(25);

    #[test]
    fn auto_subtracts_the_margin_from_the_unit_timeout() {
        let d = resolve(
            DeadlineSetting::Auto,
            S5,
            S25,
            &systemd(Span::Finite(Duration::from_secs(90))),
        )
        .expect("resolves");
        assert_eq!(d.value, Some(Duration::from_secs(85)));
        assert_eq!(
            d.describe(),
            "stop deadline 85 s = TimeoutStopSec 90 s - margin 5 s (systemd)"
        );
    }

    #[test]
    fn auto_with_infinite_unit_timeout_has_no_deadline() {
        let d = resolve(DeadlineSetting::Auto, S5, S25, &systemd(Span::Infinity)).expect("ok");
        assert_eq!(d.value, None);
        assert!(d.describe().contains("infinity"));
    }

    #[test]
    fn margin_not_below_the_unit_timeout_is_an_error() {
        let e = resolve(DeadlineSetting::Auto, S5, S25, &systemd(Span::Finite(S5))).unwrap_err();
        assert!(e.to_string().contains("TimeoutStopSec 5 s"), "{e}");
    }

    #[test]
    fn outside_systemd_the_fallback_applies_with_a_warning() {
        let d = resolve(DeadlineSetting::Auto, S5, S25, &Outer::NotSystemd).expect("ok");
        assert_eq!(d.value, Some(S25));
        assert!(d.warning.is_some());
        assert_eq!(d.source_tag(), "fallback");
    }

    #[test]
    fn unreachable_systemd_falls_back_and_says_why() {
        let d = resolve(
            DeadlineSetting::Auto,
            S5,
            S25,
            &Outer::SystemdUnreachable("no bus".into()),
        )
        .expect("ok");
        assert_eq!(d.value, Some(S25));
        assert!(d.describe().contains("no bus"));
    }

    #[test]
    fn explicit_duration_overrides_systemd() {
        let d = resolve(
            DeadlineSetting::Fixed(Duration::from_secs(10)),
            S5,
            S25,
            &systemd(Span::Finite(Duration::from_secs(90))),
        )
        .expect("ok");
        assert_eq!(d.value, Some(Duration::from_secs(10)));
        assert!(d.warning.is_none());
        assert_eq!(d.source_tag(), "config");
    }

    #[test]
    fn explicit_duration_beyond_the_unit_timeout_warns() {
        let d = resolve(
            DeadlineSetting::Fixed(Duration::from_secs(60)),
            S5,
            S25,
            &systemd(Span::Finite(Duration::from_secs(30))),
        )
        .expect("ok");
        assert!(d.warning.expect("warns").contains("TimeoutStopSec 30 s"));
    }
}
