//! The stop deadline: how long steward lets the child drain before it kills the child's
//! whole process tree.
//!
//! The number must fit inside the outer manager's own timer, or the outer manager kills
//! first and nobody learns why. Under systemd that timer is the unit's `TimeoutStopUSec`,
//! which is not in the environment: [`super::systemd`] asks systemd for it, and this module
//! turns the answer and the configuration into one number plus a sentence that says where
//! it came from, for the log.
//!
//! In a container there is no systemd to ask: the platform's timer is Kubernetes'
//! `terminationGracePeriodSeconds` or `docker stop -t`. The operator states it in
//! [`STOP_TIMEOUT_ENV`], and `auto` subtracts `stop.margin` from it exactly as from
//! `TimeoutStopSec`, so the manifest and the environment carry the same number.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use crate::config::{fmt_duration, DeadlineSetting, StopConfig};
use crate::duration::{parse_span, Span};

/// The platform's stop timeout (SIGTERM to SIGKILL) where no systemd can be asked.
pub const STOP_TIMEOUT_ENV: &str = "STEWARD_STOP_TIMEOUT";
/// The longest stop timeout accepted from the environment, as for `stop.deadline`: a
/// larger number is a typo, and would overflow the clock arithmetic.
const MAX_ENV_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What systemd said about this unit's stop timeout.
/// How long steward waits on the way out, after its deadline's SIGKILL, for the killed
/// descendants to be reaped: the deadline's own tail, which the unit's timeout must leave
/// room for (`steward check`'s margin rule).
pub const FINAL_REAP: Duration = Duration::from_secs(2);

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
    /// [`STOP_TIMEOUT_ENV`]: the platform's stop timeout as the operator stated it.
    Env(Span),
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
    #[error("stop.margin {margin} is not smaller than {var} {timeout}, so no time would be left to drain")]
    MarginTooLargeForEnv {
        margin: String,
        timeout: String,
        var: &'static str,
    },
    #[error("{var}={value:?} is not a stop timeout: {why}")]
    BadEnv {
        var: &'static str,
        value: String,
        why: String,
    },
}

impl DeadlineError {
    /// The one line `steward run` logs before exiting 78: what is wrong, where, and the fix.
    pub fn explain(&self, config: &Path) -> String {
        match self {
            DeadlineError::MarginTooLarge { .. } => format!(
                "{}: {self} (fix: lower stop.margin or raise TimeoutStopSec)",
                config.display()
            ),
            DeadlineError::MarginTooLargeForEnv { var, .. } => format!(
                "{}: {self} (fix: lower stop.margin, or raise {var} together with the platform's stop timeout)",
                config.display()
            ),
            // Not the config file's fault: the environment names itself.
            DeadlineError::BadEnv { var, .. } => format!(
                "{self} (fix: set {var} to the platform's stop timeout in seconds, the same number as Kubernetes' terminationGracePeriodSeconds or docker stop -t, e.g. {var}=30; or unset it)"
            ),
        }
    }
}

/// Reads [`STOP_TIMEOUT_ENV`]: `None` when unset. Set but unusable (empty included) is an
/// error, not a silent fallback: a typo in a manifest must not turn into a deadline nobody
/// chose.
pub fn stop_timeout_from_env() -> Result<Option<Span>, DeadlineError> {
    std::env::var_os(STOP_TIMEOUT_ENV)
        .map(|v| parse_stop_timeout(&v))
        .transpose()
}

/// Parses the platform's stop timeout: bare seconds (`30`, as Kubernetes and docker write
/// it), a systemd-style span (`30s`, `1min 30s`) or `infinity`.
pub fn parse_stop_timeout(value: &OsStr) -> Result<Span, DeadlineError> {
    let bad = |why: &str| DeadlineError::BadEnv {
        var: STOP_TIMEOUT_ENV,
        value: value.to_string_lossy().into_owned(),
        why: why.to_string(),
    };
    let text = value.to_str().ok_or_else(|| bad("not valid UTF-8"))?;
    match parse_span(text) {
        Ok(Span::Finite(d)) if d.is_zero() => Err(bad(
            "zero leaves no time to drain (the platform would SIGKILL at once)",
        )),
        Ok(Span::Finite(d)) if d > MAX_ENV_TIMEOUT => Err(bad(&format!(
            "longer than the {} steward accepts; use \"infinity\" for no limit",
            fmt_duration(MAX_ENV_TIMEOUT)
        ))),
        Ok(span) => Ok(span),
        Err(_) => Err(bad(
            "expected seconds (\"30\"), a duration (\"30s\", \"1min 30s\") or \"infinity\"",
        )),
    }
}

/// The deadline `steward run` uses: the configuration, the environment's stop timeout
/// and what systemd said, combined by [`resolve_with_env`].
pub fn at_start(stop: &StopConfig, outer: &Outer) -> Result<Deadline, DeadlineError> {
    let env = stop_timeout_from_env()?;
    resolve_with_env(
        stop.deadline,
        stop.margin,
        stop.fallback_deadline,
        outer,
        env,
    )
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
            (Source::Env(t), Some(d)) => format!(
                "stop deadline {} = {STOP_TIMEOUT_ENV} {} - margin {} (environment)",
                fmt_duration(d),
                fmt_span(*t),
                fmt_duration(self.margin)
            ),
            (Source::Env(_), None) => format!(
                "stop deadline none: {STOP_TIMEOUT_ENV} is infinity (environment); steward waits for the drain without a limit"
            ),
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
            Source::Env(_) => "environment",
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

/// The timer that SIGKILLs the service if steward has not ended first: systemd's
/// `TimeoutStopSec`, or the platform's stop timeout as [`STOP_TIMEOUT_ENV`] states it.
enum Timer<'a> {
    Unit(&'a UnitTimeout),
    Env(Span),
}

impl Timer<'_> {
    fn value(&self) -> Span {
        match self {
            Timer::Unit(u) => u.timeout_stop,
            Timer::Env(t) => *t,
        }
    }

    fn source(&self) -> Source {
        match self {
            Timer::Unit(u) => Source::Systemd((*u).clone()),
            Timer::Env(t) => Source::Env(*t),
        }
    }

    /// `auto` with a margin that leaves nothing of a finite timer `t`.
    fn margin_too_large(&self, margin: Duration, t: Duration) -> DeadlineError {
        match self {
            Timer::Unit(u) => DeadlineError::MarginTooLarge {
                margin: fmt_duration(margin),
                timeout: fmt_duration(t),
                unit: u.unit.clone(),
            },
            Timer::Env(_) => DeadlineError::MarginTooLargeForEnv {
                margin: fmt_duration(margin),
                timeout: fmt_duration(t),
                var: STOP_TIMEOUT_ENV,
            },
        }
    }

    /// An explicit `stop.deadline` `d` that, with the margin, outlasts a finite timer `t`.
    fn fixed_too_long(&self, d: Duration, margin: Duration, t: Duration) -> String {
        let (timer, killer, fix) = match self {
            Timer::Unit(u) => (
                format!("TimeoutStopSec {} of {}", fmt_duration(t), u.unit),
                "systemd",
                "raise TimeoutStopSec",
            ),
            Timer::Env(_) => (
                format!("{STOP_TIMEOUT_ENV} {}", fmt_duration(t)),
                "the platform",
                "use deadline = \"auto\"",
            ),
        };
        format!(
            "stop.deadline {} plus margin {} exceeds {timer}: {killer} may SIGKILL before steward's deadline; lower stop.deadline or {fix}",
            fmt_duration(d),
            fmt_duration(margin)
        )
    }

    /// `stop.deadline = "infinity"` under a finite timer.
    fn infinity_under(&self) -> String {
        match self {
            Timer::Unit(u) => format!(
                "stop.deadline is infinity but {} has TimeoutStopSec {}: systemd will SIGKILL at its timeout",
                u.unit,
                fmt_span(u.timeout_stop)
            ),
            Timer::Env(t) => format!(
                "stop.deadline is infinity but {STOP_TIMEOUT_ENV} is {}: the platform will SIGKILL at its timeout",
                fmt_span(*t)
            ),
        }
    }
}

/// Combines the configured setting with the environment's stop timeout and what systemd
/// said. Pure: tested without systemd or environment.
///
/// With `auto`, the environment wins when set: it is the operator's statement of the
/// timer that will really fire (a container has no systemd; under systemd it is only set
/// on purpose), and a disagreement with the unit's `TimeoutStopSec` is a warning.
/// An explicit `stop.deadline` wins over both, with a warning when it does not fit.
/// Without either timer, `auto` falls back to `stop.fallback_deadline`.
pub fn resolve_with_env(
    setting: DeadlineSetting,
    margin: Duration,
    fallback: Duration,
    outer: &Outer,
    env: Option<Span>,
) -> Result<Deadline, DeadlineError> {
    let disagrees = match (env, outer) {
        (Some(t), Outer::Systemd(u)) if u.timeout_stop != t => Some(format!(
            "{STOP_TIMEOUT_ENV} {} differs from TimeoutStopSec {} of {}: systemd's timer is the one that fires; make them the same number",
            fmt_span(t),
            fmt_span(u.timeout_stop),
            u.unit
        )),
        _ => None,
    };
    let timer = match (env, outer) {
        (Some(t), _) => Some(Timer::Env(t)),
        (None, Outer::Systemd(u)) => Some(Timer::Unit(u)),
        (None, _) => None,
    };
    let deadline = |value, source, warning: Option<String>| Deadline {
        value,
        margin,
        source,
        warning: match (warning, disagrees.clone()) {
            (Some(w), Some(d)) => Some(format!("{w}; {d}")),
            (w, d) => w.or(d),
        },
    };
    let limit = timer.as_ref().and_then(|t| match t.value() {
        Span::Finite(d) => Some(d),
        Span::Infinity => None,
    });
    match (setting, &timer) {
        (DeadlineSetting::Fixed(d), _) => {
            let warning = match (&timer, limit) {
                (Some(timer), Some(t)) if d + margin > t => {
                    Some(timer.fixed_too_long(d, margin, t))
                }
                _ => None,
            };
            Ok(deadline(Some(d), Source::Config, warning))
        }
        (DeadlineSetting::Infinity, _) => {
            let warning = match (&timer, limit) {
                (Some(timer), Some(_)) => Some(timer.infinity_under()),
                _ => None,
            };
            Ok(deadline(None, Source::Config, warning))
        }
        (DeadlineSetting::Auto, Some(timer)) => match limit {
            None => Ok(deadline(None, timer.source(), None)),
            Some(t) if margin >= t => Err(timer.margin_too_large(margin, t)),
            Some(t) => Ok(deadline(Some(t - margin), timer.source(), None)),
        },
        (DeadlineSetting::Auto, None) => {
            let (why, warning) = match outer {
                Outer::SystemdUnreachable(why) => (
                    format!("could not ask systemd: {why}"),
                    format!(
                        "could not read TimeoutStopUSec from systemd ({why}); using the fallback stop deadline {}",
                        fmt_duration(fallback)
                    ),
                ),
                _ => (
                    "not running under systemd".to_string(),
                    format!(
                        "not running under systemd: using the fallback stop deadline {}; set {STOP_TIMEOUT_ENV} to the platform's stop timeout (docker stop -t, 10 s by default; Kubernetes: terminationGracePeriodSeconds, 30 s by default) or stop.deadline",
                        fmt_duration(fallback)
                    ),
                ),
            };
            Ok(deadline(
                Some(fallback),
                Source::Fallback(why),
                Some(warning),
            ))
        }
    }
}

/// Combines the configured setting with what systemd said, no environment. Pure: tested
/// without systemd.
pub fn resolve(
    setting: DeadlineSetting,
    margin: Duration,
    fallback: Duration,
    outer: &Outer,
) -> Result<Deadline, DeadlineError> {
    resolve_with_env(setting, margin, fallback, outer, None)
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

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn an_explicit_deadline_that_fits_the_unit_timeout_exactly_does_not_warn() {
        // 25 s + margin 5 s = TimeoutStopSec 30 s: steward still ends first.
        let d = resolve(
            DeadlineSetting::Fixed(S25),
            S5,
            S25,
            &systemd(Span::Finite(secs(30))),
        )
        .expect("ok");
        assert_eq!(d.warning, None);
    }

    #[test]
    fn an_explicit_deadline_whose_margin_overruns_the_unit_timeout_warns() {
        // 25 s alone fits under 28 s; 25 s + margin 5 s does not.
        let d = resolve(
            DeadlineSetting::Fixed(S25),
            S5,
            S25,
            &systemd(Span::Finite(secs(28))),
        )
        .expect("ok");
        assert!(d
            .warning
            .is_some_and(|w| w.contains("exceeds TimeoutStopSec")));
    }

    #[test]
    fn an_infinite_deadline_warns_only_when_the_unit_has_a_finite_timeout() {
        let finite = resolve(
            DeadlineSetting::Infinity,
            S5,
            S25,
            &systemd(Span::Finite(secs(90))),
        )
        .expect("ok");
        assert!(finite
            .warning
            .is_some_and(|w| w.contains("systemd will SIGKILL at its timeout")));
        let infinite =
            resolve(DeadlineSetting::Infinity, S5, S25, &systemd(Span::Infinity)).expect("ok");
        assert_eq!(infinite.warning, None);
    }

    #[test]
    fn an_env_timeout_equal_to_the_units_raises_no_disagreement() {
        let d = resolve_with_env(
            DeadlineSetting::Auto,
            S5,
            S25,
            &systemd(Span::Finite(secs(30))),
            Some(Span::Finite(secs(30))),
        )
        .expect("ok");
        assert_eq!(d.warning, None);
    }

    #[test]
    fn an_explicit_deadline_that_fits_the_env_timeout_exactly_does_not_warn() {
        let exact = resolve_with_env(
            DeadlineSetting::Fixed(S25),
            S5,
            S25,
            &Outer::NotSystemd,
            Some(Span::Finite(secs(30))),
        )
        .expect("ok");
        assert_eq!(exact.warning, None);
        let over = resolve_with_env(
            DeadlineSetting::Fixed(S25),
            S5,
            S25,
            &Outer::NotSystemd,
            Some(Span::Finite(secs(29))),
        )
        .expect("ok");
        assert!(over
            .warning
            .is_some_and(|w| w.contains("exceeds STEWARD_STOP_TIMEOUT")));
    }

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

    // ----- the platform's stop timeout from the environment ---------------------------

    const S1: Duration = Duration::from_secs(1);
    const S4: Duration = Duration::from_secs(4);

    fn env(text: &str) -> Result<Span, DeadlineError> {
        parse_stop_timeout(OsStr::new(text))
    }

    #[test]
    fn env_timeout_in_bare_seconds_as_kubernetes_writes_it() {
        assert_eq!(env("30"), Ok(Span::Finite(Duration::from_secs(30))));
    }

    #[test]
    fn env_timeout_as_a_duration() {
        assert_eq!(env("4s"), Ok(Span::Finite(S4)));
        assert_eq!(env("1min 30s"), Ok(Span::Finite(Duration::from_secs(90))));
        assert_eq!(env("infinity"), Ok(Span::Infinity));
    }

    #[test]
    fn env_garbage_is_an_error_naming_the_variable() {
        for bad in ["soon", "", "-5", "30 seconds please", "4x"] {
            let e = env(bad).expect_err(bad);
            assert!(e.to_string().contains("STEWARD_STOP_TIMEOUT="), "{e}");
            let line = e.explain(Path::new("/etc/steward/steward.toml"));
            assert!(line.contains("fix: set STEWARD_STOP_TIMEOUT"), "{line}");
        }
    }

    #[test]
    fn env_zero_is_an_error() {
        let e = env("0").unwrap_err();
        assert!(e.to_string().contains("zero"), "{e}");
    }

    #[test]
    fn env_up_to_a_day_is_accepted_and_a_second_more_is_not() {
        assert_eq!(env("86400"), Ok(Span::Finite(Duration::from_secs(86400))));
        let e = env("86401").unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn env_beyond_a_day_is_an_error_not_an_overflow() {
        let e = env("99999999999").unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn env_not_utf8_is_an_error() {
        use std::os::unix::ffi::OsStrExt;
        let e = parse_stop_timeout(OsStr::from_bytes(b"3\xff")).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn auto_subtracts_the_margin_from_the_env_timeout() {
        let d = resolve_with_env(
            DeadlineSetting::Auto,
            S1,
            S25,
            &Outer::NotSystemd,
            Some(Span::Finite(S4)),
        )
        .expect("resolves");
        assert_eq!(d.value, Some(Duration::from_secs(3)));
        assert_eq!(d.source_tag(), "environment");
        assert!(d.warning.is_none(), "{:?}", d.warning);
        assert_eq!(
            d.describe(),
            "stop deadline 3 s = STEWARD_STOP_TIMEOUT 4 s - margin 1 s (environment)"
        );
    }

    #[test]
    fn auto_with_infinite_env_timeout_has_no_deadline() {
        let d = resolve_with_env(
            DeadlineSetting::Auto,
            S5,
            S25,
            &Outer::NotSystemd,
            Some(Span::Infinity),
        )
        .expect("resolves");
        assert_eq!(d.value, None);
        assert!(d.describe().contains("STEWARD_STOP_TIMEOUT is infinity"));
    }

    #[test]
    fn margin_not_below_the_env_timeout_is_an_error_naming_the_variable() {
        let e = resolve_with_env(
            DeadlineSetting::Auto,
            S5,
            S25,
            &Outer::NotSystemd,
            Some(Span::Finite(S5)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("STEWARD_STOP_TIMEOUT 5 s"), "{e}");
    }

    #[test]
    fn env_timeout_wins_over_systemd_and_a_disagreement_warns() {
        let d = resolve_with_env(
            DeadlineSetting::Auto,
            S5,
            S25,
            &systemd(Span::Finite(Duration::from_secs(90))),
            Some(Span::Finite(Duration::from_secs(30))),
        )
        .expect("resolves");
        assert_eq!(d.value, Some(S25));
        assert_eq!(d.source_tag(), "environment");
        assert!(d.warning.expect("warns").contains("TimeoutStopSec 90 s"));
    }

    #[test]
    fn explicit_duration_beyond_the_env_timeout_warns() {
        let d = resolve_with_env(
            DeadlineSetting::Fixed(Duration::from_secs(28)),
            S5,
            S25,
            &Outer::NotSystemd,
            Some(Span::Finite(Duration::from_secs(30))),
        )
        .expect("resolves");
        assert_eq!(d.source_tag(), "config");
        assert!(d
            .warning
            .expect("warns")
            .contains("STEWARD_STOP_TIMEOUT 30 s"));
    }

    #[test]
    fn without_the_env_timeout_auto_still_falls_back() {
        let d = resolve_with_env(DeadlineSetting::Auto, S5, S25, &Outer::NotSystemd, None)
            .expect("resolves");
        assert_eq!(d.source_tag(), "fallback");
        assert!(d.warning.expect("warns").contains("STEWARD_STOP_TIMEOUT"));
    }

    /// The number the environment gives is the one the lifecycle kills at, measured
    /// from the stop, not from start-up.
    #[tokio::test(start_paused = true)]
    async fn env_deadline_kills_a_child_that_ignores_sigterm_at_timeout_minus_margin() {
        use crate::lifecycle::{Action, Event, KillReason, Lifecycle, Policy, StopSignal};
        use tokio::time::{advance, Instant};
        let d = resolve_with_env(
            DeadlineSetting::Auto,
            S1,
            S25,
            &Outer::NotSystemd,
            Some(Span::Finite(S4)),
        )
        .expect("resolves");
        let policy = Policy {
            deadline: d.value,
            start_timeout: Duration::from_secs(60),
            drain_quiet: None,
            max_crashes: 3,
            crash_window: Duration::from_secs(300),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(60),
            health_failures: 3,
            self_ending: false,
        };
        let killed = |a: Vec<Action>| {
            a.iter().any(|a| {
                matches!(
                    a,
                    Action::KillTree {
                        reason: KillReason::Deadline,
                        ..
                    }
                )
            })
        };
        let (mut m, _) = Lifecycle::start(policy, Instant::now());
        m.handle(Event::Spawned { gen: 1, pid: 42 }, Instant::now());
        m.handle(Event::Ready { gen: 1 }, Instant::now());
        advance(Duration::from_secs(10)).await;
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        advance(Duration::from_millis(2900)).await;
        assert!(!killed(m.handle(Event::Tick, Instant::now())));
        advance(Duration::from_millis(100)).await;
        assert!(killed(m.handle(Event::Tick, Instant::now())));
    }
}
