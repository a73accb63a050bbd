//! The checks: pure functions from what was read (unit, steward's TOML, Pingora's YAML,
//! steward-proxy's listeners) to findings. Nothing here reads a file or asks systemd.
//!
//! Two situations, two rule sets:
//! - **under steward** (the unit's main process is `steward run`): steward already clamps
//!   the grace period, moves the upgrade socket and forces the foreground, so most Pingora
//!   settings become infos; what can still go wrong is the unit around steward and steward's
//!   own deadline against the unit's timeout.
//! - **Pingora alone** (its own unit, e.g. Pingora's documented `Type=forking` one): the
//!   grace period is the stop, and the unit must match Pingora's daemon mode.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::findings::*;
use super::pingora::{
    PingoraConf, ProxyListeners, DEFAULT_PID_FILE, DEFAULT_UPGRADE_SOCK, GRACE, SHUTDOWN_TIMEOUT,
};
use crate::config::{find_key_line, fmt_duration, Config, DrainMode, Handoff, Probe};
use crate::deadline::{self, fmt_span, Deadline, DeadlineError, Outer, UnitTimeout};
use crate::duration::Span;
use crate::files::Location;
use crate::limits::{self, Nofile, NofileSetting};
use crate::pingora_conf::{self, PINGORA_DEFAULT_GRACE, PINGORA_DEFAULT_SHUTDOWN_TIMEOUT};
use crate::unit::{Prop, UnitProps, SYSTEMD_DEFAULT_TIMEOUT_STOP};

/// After its deadline steward SIGKILLs the child's tree and waits this long to reap it;
/// systemd's timer must not fire inside that window.
pub const REAP_ALLOWANCE: Duration = deadline::FINAL_REAP;

/// Directories anyone may create files in, even where they do not exist on this machine.
const SHARED_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// A Pingora release, for the one difference in stop time between releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PingoraVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl PingoraVersion {
    /// What steward is built and tested against.
    pub const ASSUMED: PingoraVersion = PingoraVersion {
        major: 0,
        minor: 9,
        patch: 1,
    };

    /// "0.8", "0.9.1", "v0.8.0".
    pub fn parse(text: &str) -> Result<PingoraVersion, String> {
        let t = text.trim().trim_start_matches('v');
        let mut parts = t.split('.').map(|p| p.parse::<u64>());
        let mut next = |required: bool| match parts.next() {
            Some(Ok(n)) => Ok(n),
            None if !required => Ok(0),
            _ => Err(format!("{text:?} is not a version such as 0.8 or 0.9.1")),
        };
        let v = PingoraVersion {
            major: next(true)?,
            minor: next(true)?,
            patch: next(false)?,
        };
        match parts.next() {
            None => Ok(v),
            Some(_) => Err(format!("{text:?} is not a version such as 0.8 or 0.9.1")),
        }
    }

    /// How many times a stop waits out `graceful_shutdown_timeout_seconds`: 0.8 and older
    /// slept it again after the runtimes had shut down (upstream #727, #813; PR #733).
    pub fn shutdown_timeout_waits(self) -> u64 {
        if (self.major, self.minor) <= (0, 8) {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for PingoraVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the rules know about the surroundings.
#[derive(Debug, Clone, Copy)]
pub struct Surroundings<'a> {
    pub unit: Option<&'a UnitProps>,
    /// Without a unit: `true` compares the stop with systemd's default `TimeoutStopSec`
    /// (`steward check`), `false` skips the stop checks (`steward run` outside systemd,
    /// where its own fallback deadline applies).
    pub assume_default_unit: bool,
    /// Without a unit: the platform's stop timeout the operator stated (a container's
    /// `STEWARD_STOP_TIMEOUT`), compared with instead of systemd's default.
    pub platform_timeout: Option<PlatformTimeout>,
    pub version: PingoraVersion,
}

/// The stop timeout of a platform without systemd (Kubernetes, docker), as stated to
/// `steward check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformTimeout {
    pub value: Span,
    /// Where it was stated: "STEWARD_STOP_TIMEOUT" or "--stop-timeout".
    pub source: &'static str,
}

/// The unit's stop timeout, or the one assumed without a unit.
struct StopTimeout {
    value: Span,
    /// "TimeoutStopSec 30 s (steward-proxy.service:21)"
    shown: String,
    unit: String,
    /// The platform's timer (a container), not systemd's: the messages name what fires.
    platform: bool,
}

impl StopTimeout {
    /// Who sends the final SIGKILL.
    fn killer(&self) -> &'static str {
        if self.platform {
            "the platform's"
        } else {
            "systemd's"
        }
    }

    /// The setting that gives the stop more time.
    fn setting(&self) -> &'static str {
        if self.platform {
            deadline::STOP_TIMEOUT_ENV
        } else {
            "TimeoutStopSec"
        }
    }
}

/// The stop deadline `steward run` would derive from `c` under this stop timeout.
fn resolve_deadline(c: &Config, timeout: &StopTimeout) -> Result<Deadline, DeadlineError> {
    // The platform's timeout is resolved as `steward run` resolves STEWARD_STOP_TIMEOUT.
    if timeout.platform {
        return deadline::resolve_with_env(
            c.stop.deadline,
            c.stop.margin,
            c.stop.fallback_deadline,
            &Outer::NotSystemd,
            Some(timeout.value),
        );
    }
    let outer = Outer::Systemd(UnitTimeout {
        unit: timeout.unit.clone(),
        timeout_stop: timeout.value,
        via: "steward check",
    });
    deadline::resolve(
        c.stop.deadline,
        c.stop.margin,
        c.stop.fallback_deadline,
        &outer,
    )
}

/// The stop deadline `steward run` would have in these surroundings (`None`: no stop
/// timeout is known, as with an unusable STEWARD_STOP_TIMEOUT).
pub fn deadline_in(c: &Config, s: &Surroundings<'_>) -> Option<Result<Deadline, DeadlineError>> {
    s.stop_timeout().map(|t| resolve_deadline(c, &t))
}

impl Surroundings<'_> {
    fn stop_timeout(&self) -> Option<StopTimeout> {
        match (self.unit, self.platform_timeout) {
            (Some(u), _) => Some(StopTimeout {
                value: u.timeout_stop.value,
                shown: shown(
                    "TimeoutStopSec",
                    &fmt_span(u.timeout_stop.value),
                    &u.timeout_stop,
                ),
                unit: u.name.clone(),
                platform: false,
            }),
            (None, Some(p)) => Some(StopTimeout {
                value: p.value,
                shown: format!("stop timeout {} from {}", fmt_span(p.value), p.source),
                unit: "the platform".into(),
                platform: true,
            }),
            (None, None) if self.assume_default_unit => Some(StopTimeout {
                value: Span::Finite(SYSTEMD_DEFAULT_TIMEOUT_STOP),
                shown: format!(
                    "TimeoutStopSec {}, systemd's default (no unit was given)",
                    fmt_duration(SYSTEMD_DEFAULT_TIMEOUT_STOP)
                ),
                unit: "the unit".into(),
                platform: false,
            }),
            (None, None) => None,
        }
    }
}

/// "KillMode control-group, systemd's default", "KillMode mixed (x.service:7)".
fn shown<T>(key: &str, value: &str, p: &Prop<T>) -> String {
    match (&p.at, p.is_default) {
        (_, true) => format!("{key} {value}, systemd's default"),
        (Some(at), false) => format!("{key} {value} ({at})"),
        (None, false) => format!("{key} {value}"),
    }
}

/// Where to write `line` in the unit and how: over the line that sets it, or added.
fn unit_fix<T>(u: &UnitProps, p: &Prop<T>, line: String) -> (Option<Location>, String) {
    match &p.at {
        Some(at) => (Some(at.clone()), line),
        None => (
            u.fragment().map(Location::file),
            format!(
                "add {line} under [Service] (a drop-in will do: systemctl edit {})",
                u.name
            ),
        ),
    }
}

/// steward's TOML, with its text for the lines of the keys a fix names.
pub struct StewardConfig<'a> {
    pub config: &'a Config,
    pub text: &'a str,
}

impl StewardConfig<'_> {
    fn at(&self, key: &str) -> Location {
        Location::line(&self.config.path, find_key_line(self.text, key))
    }

    /// `line` over the key's line, or added to `[table]`.
    fn fix(&self, table: &str, key: &str, line: String) -> (Option<Location>, String) {
        let at = self.at(key);
        match at.line {
            Some(_) => (Some(at), line),
            None => (Some(at), format!("add {line} under [{table}]")),
        }
    }

    fn child_is_steward_proxy(&self) -> bool {
        self.config
            .child
            .program
            .file_name()
            .is_some_and(|n| n == "steward-proxy")
    }
}

// ---------------------------------------------------------------------------------------
// Under steward

/// Everything that applies when steward is the unit's main process.
pub fn under_steward(
    cfg: &StewardConfig<'_>,
    pingora: Option<&PingoraConf>,
    listeners: Option<&ProxyListeners>,
    s: &Surroundings<'_>,
) -> Vec<Finding> {
    let mut out = steward_stop(cfg, pingora, s);
    if let Some(u) = s.unit {
        out.extend(steward_unit(cfg, u));
        out.extend(steward_watchdog(cfg, u));
        out.extend(child_nofile(cfg, u));
    }
    if let Some(p) = pingora {
        out.extend(pingora_settings_under_steward(p));
    }
    if let Some(l) = listeners {
        out.extend(ready_listener(cfg, l));
        out.extend(socket_keys(cfg, l));
    }
    out
}

fn steward_stop(
    cfg: &StewardConfig<'_>,
    pingora: Option<&PingoraConf>,
    s: &Surroundings<'_>,
) -> Vec<Finding> {
    let Some(timeout) = s.stop_timeout() else {
        return Vec::new();
    };
    let c = cfg.config;
    let d = match resolve_deadline(c, &timeout) {
        Ok(d) => d,
        Err(e) => {
            let t = match timeout.value {
                Span::Finite(t) => t,
                Span::Infinity => Duration::ZERO,
            };
            let (at, fix) = cfg.fix(
                "stop",
                "margin",
                format!("margin = \"{}\"", suggest_margin(t)),
            );
            return vec![Finding::new(
                MARGIN_EXCEEDS_TIMEOUT,
                Severity::Error,
                "steward refuses to start (exit 78): no time would be left to drain",
            )
            .why(format!("{e}; {}", timeout.shown))
            .fix(format!("{fix} (or raise {})", raise(&timeout)))
            .at(at)];
        }
    };
    let mut out = Vec::new();
    // What a stock Pingora child does by itself: sleep its grace period as steward's
    // effective copy sets it, clamped to the deadline.
    let child_stop = pingora.and_then(|p| {
        let source = p.path.as_deref().map(|path| (path, p.text()));
        let eff = pingora_conf::effective(source, d.value, Path::new("/run/steward/upgrade.sock"))
            .ok()?;
        let grace = p.grace.unwrap_or(PINGORA_DEFAULT_GRACE);
        let timeout = p
            .shutdown_timeout
            .unwrap_or(PINGORA_DEFAULT_SHUTDOWN_TIMEOUT);
        if (eff.grace, eff.shutdown_timeout) != (grace, timeout) {
            out.push(grace_clamped(
                p,
                &d,
                (grace, timeout),
                (eff.grace, eff.shutdown_timeout),
            ));
        }
        Some(
            eff.grace.saturating_add(
                eff.shutdown_timeout
                    .saturating_mul(s.version.shutdown_timeout_waits()),
            ),
        )
    });
    let Span::Finite(t) = timeout.value else {
        return out;
    };
    let beyond = d.value.is_none_or(|dl| dl >= t);
    if beyond {
        let deadline_shown = match d.value {
            Some(dl) => format!("stop.deadline {}", fmt_duration(dl)),
            None => "stop.deadline infinity".to_string(),
        };
        let child_outlasts = c.stop.drain == DrainMode::Exit
            && !cfg.child_is_steward_proxy()
            && child_stop.is_some_and(|cs| Duration::from_secs(cs) > t);
        if child_outlasts {
            let (at, fix) = cfg.fix("stop", "drain", "drain = \"connections\"".into());
            out.push(
                Finding::new(STOP_TIMEOUT_EXCEEDED, Severity::Error, kill_at_timeout(s.unit, &timeout, t))
                    .why(format!(
                        "with stop.drain = \"exit\" steward waits for the child to exit by itself, and a stock Pingora child sleeps out its grace period: {} s, idle or not; {deadline_shown} does not end it before {}",
                        child_stop.unwrap_or_default(),
                        timeout.shown
                    ))
                    .fix(format!("{fix} (steward then ends the child once no request is left), or deadline = \"auto\""))
                    .at(at),
            );
        } else {
            let (at, fix) = cfg.fix("stop", "deadline", "deadline = \"auto\"".into());
            out.push(
                Finding::new(
                    DEADLINE_BEYOND_TIMEOUT,
                    Severity::Warning,
                    format!("a stop still draining after {} (a long request in flight) ends in {} SIGKILL of every process, not in steward's orderly kill and report", fmt_duration(t), timeout.killer()),
                )
                .why(format!("{deadline_shown} is not before {}", timeout.shown))
                .fix(format!("{fix} ({} minus stop.margin)", timeout.setting()))
                .at(at),
            );
        }
    } else if let Some(dl) = d.value {
        let room = t.saturating_sub(dl);
        if room < REAP_ALLOWANCE {
            let (at, fix) = match c.stop.deadline {
                crate::config::DeadlineSetting::Auto => {
                    cfg.fix("stop", "margin", "margin = \"5s\"".into())
                }
                _ => cfg.fix(
                    "stop",
                    "deadline",
                    format!(
                        "deadline = \"{}\"",
                        humantime_secs(t.saturating_sub(Duration::from_secs(5)))
                    ),
                ),
            };
            out.push(
                Finding::new(
                    MARGIN_TOO_SMALL,
                    Severity::Warning,
                    if timeout.platform {
                        "when a drain reaches steward's deadline, the platform's timer can fire while steward is still killing and reaping the child: the platform then SIGKILLs what is left, and steward's exit status is lost"
                    } else {
                        "when a drain reaches steward's deadline, systemd's timer can fire while steward is still killing and reaping the child: systemd then SIGKILLs what is left and marks the stop failed"
                    },
                )
                .why(format!(
                    "steward's deadline {} leaves {} before {}; killing and reaping the child's tree may take up to {}",
                    fmt_duration(dl),
                    fmt_duration(room),
                    timeout.shown,
                    fmt_duration(REAP_ALLOWANCE)
                ))
                .fix(fix)
                .at(at),
            );
        }
    }
    out
}

/// How to give the stop more time: the unit's setting, or the platform's together with the
/// variable that states it to steward.
fn raise(timeout: &StopTimeout) -> String {
    if timeout.platform {
        format!(
            "{} together with the platform's stop timeout",
            deadline::STOP_TIMEOUT_ENV
        )
    } else {
        "TimeoutStopSec".into()
    }
}

fn suggest_margin(t: Duration) -> String {
    let half = Duration::from_secs(t.as_secs() / 2);
    humantime_secs(half.clamp(Duration::from_secs(1), Duration::from_secs(5)))
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn grace_clamped(
    p: &PingoraConf,
    d: &deadline::Deadline,
    (grace, timeout): (u64, u64),
    (new_grace, new_timeout): (u64, u64),
) -> Finding {
    let deadline = d
        .value
        .map(fmt_duration)
        .unwrap_or_else(|| "infinity".into());
    let (at, fix) = match p.at(GRACE) {
        Some(at) if at.line.is_some() => (
            Some(at),
            format!("none needed; {GRACE}: {new_grace} would say what applies"),
        ),
        at => (at, "none needed".into()),
    };
    Finding::new(
        GRACE_CLAMPED,
        Severity::Info,
        format!(
            "steward runs the child with {GRACE} {new_grace} and {SHUTDOWN_TIMEOUT} {new_timeout} instead of {grace} and {timeout}: a request still running {deadline} after the stop began is cut, by steward, at its deadline"
        ),
    )
    .why(format!("the child's own shutdown must fit the {}", d.describe()))
    .fix(fix)
    .at(at)
}

/// systemd's (or the platform's) words for a stop that outlasts its timeout.
fn kill_at_timeout(unit: Option<&UnitProps>, timeout: &StopTimeout, t: Duration) -> String {
    if timeout.platform {
        // docker and the kubelet signal the container's PID 1 and then kill the namespace.
        return format!(
            "the platform's stop (docker stop, Kubernetes) will wait {} after SIGTERM and then SIGKILL every process; in-flight requests are cut at a random point",
            fmt_duration(t)
        );
    }
    let whom = match unit.map(|u| u.kill_mode.value.as_str()) {
        Some("process") | Some("none") => "the main process",
        _ => "every process",
    };
    let signal = match unit.map(|u| u.timeout_stop_failure_mode.value.as_str()) {
        Some("abort") => format!("SIGABRT {whom}, which dumps core,"),
        _ => format!("SIGKILL {whom}"),
    };
    format!(
        "systemctl stop will wait {} and then {signal}; in-flight requests are cut at a random point",
        fmt_duration(t)
    )
}

fn steward_unit(cfg: &StewardConfig<'_>, u: &UnitProps) -> Vec<Finding> {
    let mut out = Vec::new();
    let ty = u.service_type.value.as_str();
    let type_problem = match ty {
        "notify" => None,
        "forking" => Some((Severity::Error, "systemctl start waits TimeoutStartSec for steward to fork into the background and exit, which it never does; then systemd kills it and the start fails")),
        "oneshot" => Some((Severity::Error, "systemctl start does not return until steward exits, that is until the service stops: the unit never becomes active")),
        "dbus" => Some((Severity::Error, "systemctl start waits for a D-Bus name steward never takes; then systemd kills it and the start fails")),
        // steward reloads on SIGHUP (ReloadSignal's default) and sends RELOADING=1.
        "notify-reload" => None,
        _ => Some((Severity::Warning, "systemctl start returns as soon as steward is started, before the child serves, and systemd ignores READY=1 and STATUS=: units ordered after this one start against a proxy that does not answer yet")),
    };
    if let Some((severity, what)) = type_problem {
        let (at, fix) = unit_fix(u, &u.service_type, "Type=notify".into());
        out.push(
            Finding::new(SERVICE_TYPE, severity, what)
                .why(format!(
                    "{}; steward stays in the foreground and sends READY=1 through sd_notify once the child serves",
                    shown("Type", ty, &u.service_type)
                ))
                .fix(fix)
                .at(at),
        );
    }
    if matches!(ty, "notify" | "notify-reload") {
        let access = u.notify_access.value.as_str();
        // systemd raises none to main for notify units: only `all` is left to go wrong.
        if access == "all" {
            let (at, fix) = unit_fix(u, &u.notify_access, "NotifyAccess=main".into());
            out.push(
                Finding::new(
                    NOTIFY_ACCESS,
                    Severity::Warning,
                    "any process of the unit, the child and its descendants included, can send READY=1, STOPPING=1, STATUS= or MAINPID= in steward's name",
                )
                    .why(format!(
                        "{}; steward, the main process, is the only one that notifies",
                        shown("NotifyAccess", access, &u.notify_access)
                    ))
                    .fix(fix)
                    .at(at),
            );
        }
    }
    let kill_mode = u.kill_mode.value.as_str();
    if kill_mode != "mixed" {
        let what = match kill_mode {
            "control-group" => "systemctl stop sends SIGTERM to the child at the same moment as to steward, so steward no longer decides when and how the child is told to stop",
            _ => "processes that outlive steward (after a crash of steward) are left running by the stop, holding the listening ports, and systemd never sends a final SIGKILL to them",
        };
        let (at, fix) = unit_fix(u, &u.kill_mode, "KillMode=mixed".into());
        out.push(
            Finding::new(KILL_MODE, Severity::Warning, what)
                .why(format!(
                    "{}; KillMode=mixed sends SIGTERM to steward alone, which forwards it and escalates in order, and keeps systemd's final SIGKILL for every process",
                    shown("KillMode", kill_mode, &u.kill_mode)
                ))
                .fix(fix)
                .at(at),
        );
    }
    if !u.delegate.value {
        let (at, fix) = unit_fix(u, &u.delegate, "Delegate=yes".into());
        out.push(
            Finding::new(
                DELEGATE_MISSING,
                Severity::Warning,
                "processes the child moves out of its process group (setsid(), a double fork) outlive a reload: a retired generation's kill reaches only its process group and descendants, so they keep running until steward exits; and every kill is signals over the process tree, repeated while a fork races it, instead of one cgroup.kill",
            )
            .why(format!(
                "{}; with Delegate=yes steward starts each generation in its own cgroup and ends it, and everything it started, with cgroup.kill",
                shown("Delegate", "no", &u.delegate)
            ))
            .fix(fix)
            .at(at),
        );
    }
    if u.timeout_stop_failure_mode.value == "abort" {
        let (at, fix) = unit_fix(
            u,
            &u.timeout_stop_failure_mode,
            "TimeoutStopFailureMode=terminate".into(),
        );
        out.push(
            Finding::new(
                STOP_FAILURE_MODE_ABORT,
                Severity::Warning,
                "if a stop ever outlasts TimeoutStopSec (steward hung), systemd sends SIGABRT instead of SIGKILL: every process dumps core, Pingora's memory with keys and request data included, and the stop waits another TimeoutStopSec",
            )
            .why(shown("TimeoutStopFailureMode", "abort", &u.timeout_stop_failure_mode))
            .fix(fix)
            .at(at),
        );
    }
    let restart = u.restart.value.as_str();
    let prevent = &u.restart_prevent_exit_status.value;
    if matches!(restart, "on-failure" | "always") && !prevent.iter().any(|s| s == "78") {
        let line = if prevent.is_empty() {
            "RestartPreventExitStatus=78".to_string()
        } else {
            format!("RestartPreventExitStatus={} 78", prevent.join(" "))
        };
        let (at, fix) = unit_fix(u, &u.restart_prevent_exit_status, line);
        out.push(
            Finding::new(
                RESTART_PREVENT_78,
                Severity::Warning,
                "a configuration error (steward exits 78) is restarted every RestartSec with the same error until the start limit trips, instead of failing once with the reason",
            )
            .why(format!(
                "{} restarts on any non-zero exit status",
                shown("Restart", restart, &u.restart)
            ))
            .fix(fix)
            .at(at),
        );
    }
    if cfg.config.runtime_dir.is_none() && u.runtime_directory.value.is_empty() {
        let (at, fix) = unit_fix(u, &u.runtime_directory, "RuntimeDirectory=steward".into());
        out.push(
            Finding::new(
                NO_RUNTIME_DIRECTORY,
                Severity::Warning,
                "steward keeps the effective Pingora conf, the upgrade socket and its control socket in /run/steward as root, else in /tmp/steward-<uid>: a directory that outlives the service and that, in /tmp, another local user can create first, so that steward refuses to start (exit 73)",
            )
            .why("the unit has no RuntimeDirectory= and steward's config no runtime_dir")
            .fix(format!("{fix}, with RuntimeDirectoryMode=0700"))
            .at(at),
        );
    }
    out
}

/// steward sends `WATCHDOG=1` after each passing health probe; systemd's watchdog must
/// leave steward the time to replace a child that stopped answering.
/// The open-file limit at or under which a proxy runs out of descriptors at a few hundred
/// concurrent requests: systemd's default soft limit, kept for `select()`.
const LOW_NOFILE: u64 = 1024;

/// `LimitNOFILE=` as a unit file spells it.
fn fmt_nofile(n: Nofile) -> String {
    let one = |v: u64| match v {
        u64::MAX => "infinity".to_string(),
        v => v.to_string(),
    };
    match n.soft == n.hard {
        true => one(n.soft),
        false => format!("{}:{}", one(n.soft), one(n.hard)),
    }
}

/// `child.nofile` against the unit's `LimitNOFILE=`, decided as steward decides at each
/// spawn ([`limits::decide`]): a number the unit's hard limit cannot give stops the start,
/// and a child left at systemd's `select()`-era 1024 runs out of descriptors under load.
fn child_nofile(cfg: &StewardConfig<'_>, u: &UnitProps) -> Option<Finding> {
    let setting = cfg.config.child.nofile;
    let unit = u.limit_nofile.value;
    let limit = shown("LimitNOFILE", &fmt_nofile(unit), &u.limit_nofile);
    let child = match limits::decide(setting, unit) {
        Ok(c) => c,
        Err(e) => {
            let NofileSetting::Soft(wanted) = setting else {
                return None;
            };
            let (at, fix) = unit_fix(
                u,
                &u.limit_nofile,
                format!("LimitNOFILE={}:{wanted}", unit.soft.min(wanted)),
            );
            return Some(
                Finding::new(
                    NOFILE_ABOVE_HARD,
                    Severity::Error,
                    "steward refuses to start (exit 78): the child cannot be given the open-file limit child.nofile asks for",
                )
                .why(format!("{e}; {limit}"))
                .fix(format!(
                    "{fix} (or {} in {})",
                    "child.nofile = \"max\"",
                    cfg.at("nofile")
                ))
                .at(at),
            );
        }
    };
    if child.limit.soft > LOW_NOFILE || matches!(setting, NofileSetting::Soft(_)) {
        return None;
    }
    let what = format!(
        "the child runs with {} open files: a proxy holds a client and an upstream connection per request, so it refuses connections (EMFILE) at about {} concurrent requests",
        child.limit.soft,
        child.limit.soft / 2
    );
    let (why, at, fix) = match setting {
        NofileSetting::Inherit => {
            let (at, fix) = cfg.fix("child", "nofile", "nofile = \"max\"".into());
            (
                format!("child.nofile = \"inherit\" passes on steward's soft limit; {limit}"),
                at,
                fix,
            )
        }
        _ => {
            let (at, fix) = unit_fix(u, &u.limit_nofile, "LimitNOFILE=1024:524288".into());
            (
                format!("child.nofile = \"max\" raises the soft limit to the hard one, which is {}; {limit}", child.limit.hard),
                at,
                fix,
            )
        }
    };
    Some(
        Finding::new(NOFILE_LOW, Severity::Warning, what)
            .why(why)
            .fix(fix)
            .at(at),
    )
}

fn steward_watchdog(cfg: &StewardConfig<'_>, u: &UnitProps) -> Option<Finding> {
    let w = u.watchdog_interval()?;
    let h = &cfg.config.health;
    if h.failures == 0 {
        return None;
    }
    // run.rs probes every health.interval, but at least twice per watchdog interval.
    let period = h.interval.min(w / 2);
    // Saturating: health.failures may be any u32, and Duration's `*` panics on overflow.
    let replaced_after = period.saturating_mul(h.failures).saturating_add(h.timeout);
    if replaced_after < w {
        return None;
    }
    let suggest = h
        .interval
        .saturating_mul(h.failures.saturating_add(1))
        .saturating_add(h.timeout);
    let suggest = Duration::from_secs(
        suggest
            .as_secs()
            .saturating_add(u64::from(suggest.subsec_nanos() > 0)),
    );
    let (at, fix) = unit_fix(u, &u.watchdog, format!("WatchdogSec={}", suggest.as_secs()));
    Some(
        Finding::new(
            WATCHDOG_TOO_SHORT,
            Severity::Warning,
            "a child that stops answering gets the whole service killed by systemd's watchdog (Result=watchdog, connections refused until Restart= brings it back) before steward can replace it with the listeners kept",
        )
        .why(format!(
            "{}; steward probes every {} and replaces the child after health.failures {} failed probes, about {} (health.timeout {} for the last)",
            shown("WatchdogSec", &fmt_duration(w), &u.watchdog),
            fmt_duration(period),
            h.failures,
            fmt_duration(replaced_after),
            fmt_duration(h.timeout)
        ))
        .fix(format!("{fix} (or fewer health.failures, a shorter health.interval)"))
        .at(at),
    )
}

/// Pingora alone sends no `WATCHDOG=1`.
fn watchdog(u: &UnitProps, who: &str) -> Option<Finding> {
    let w = u.watchdog_interval()?;
    let (at, fix) = unit_fix(u, &u.watchdog, "WatchdogSec=0".into());
    Some(
        Finding::new(
            WATCHDOG_WITHOUT_PROBE,
            Severity::Error,
            format!(
                "systemd kills the service {} after every start (Result=watchdog), and Restart= starts it again: it flaps",
                fmt_duration(w)
            ),
        )
        .why(format!(
            "{} expects WATCHDOG=1 at least that often; {who}",
            shown("WatchdogSec", &fmt_duration(w), &u.watchdog)
        ))
        .fix(fix)
        .at(at),
    )
}

fn pingora_settings_under_steward(p: &PingoraConf) -> Vec<Finding> {
    let mut out = Vec::new();
    if p.daemon {
        out.push(
            Finding::new(
                DAEMON_IGNORED,
                Severity::Info,
                "daemon: true does nothing: steward runs the child with daemon: false, because a child that forks away cannot be supervised",
            )
            .why("steward's effective copy of this file sets daemon: false")
            .fix("delete the line")
            .at(p.at("daemon")),
        );
    }
    out.extend(foreground_settings(
        p,
        "the child runs in the foreground under steward",
    ));
    if let Some(sock) = &p.upgrade_sock {
        if let Some(dir) = shared_dir(sock) {
            out.push(
                Finding::new(
                    UPGRADE_SOCK_SHARED_DIR,
                    Severity::Info,
                    format!("upgrade_sock {sock} does nothing: steward moves the upgrade socket into its private runtime directory"),
                )
                .why(format!("{} is writable by every user, so steward never uses it", dir.display()))
                .fix("delete the line")
                .at(p.at("upgrade_sock")),
            );
        }
    }
    out
}

/// Keys Pingora reads only when it daemonizes.
fn foreground_settings(p: &PingoraConf, why: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let ignored = [
        ("pid_file", &p.pid_file, "Pingora writes it only when it daemonizes"),
        ("error_log", &p.error_log, "Pingora logs to stderr, which the journal keeps, and opens this file only when it daemonizes"),
        ("working_directory", &p.working_directory, "Pingora changes directory only when it daemonizes"),
    ];
    for (key, value, what) in ignored {
        if let Some(v) = value {
            out.push(
                Finding::new(
                    FOREGROUND_ONLY,
                    Severity::Info,
                    format!("{key}: {v} does nothing: {what}"),
                )
                .why(why.to_string())
                .fix("delete the line")
                .at(p.at(key)),
            );
        }
    }
    for (key, value, unit_key) in [("user", &p.user, "User"), ("group", &p.group, "Group")] {
        if let Some(v) = value {
            out.push(
                Finding::new(
                    USER_IGNORED,
                    Severity::Warning,
                    format!("the server does not switch to {key} {v}: Pingora drops privileges only when it daemonizes, so it keeps the unit's {unit_key}= (root when unset)"),
                )
                .why(why.to_string())
                .fix(format!("{unit_key}={v} in the unit's [Service], and delete this line"))
                .at(p.at(key)),
            );
        }
    }
    out
}

/// The directory of `path` when any local user can create files in it.
fn shared_dir(path: &str) -> Option<PathBuf> {
    let dir = Path::new(path).parent()?;
    let known = SHARED_DIRS.iter().any(|d| dir == Path::new(d));
    let world_writable = std::fs::metadata(dir)
        .map(|m| m.mode() & 0o002 != 0)
        .unwrap_or(false);
    (known || world_writable).then(|| dir.to_path_buf())
}

/// steward's readiness address against every address steward-proxy's settings declare.
fn ready_listener(cfg: &StewardConfig<'_>, l: &ProxyListeners) -> Option<Finding> {
    let declared: Vec<&String> = l.all().collect();
    let first = declared.first()?;
    let probe = &cfg.config.ready.probe;
    let (addr, key) = match probe {
        Probe::Tcp(a) => (a.as_str(), "tcp"),
        Probe::Http(u) => (u.authority.as_str(), "http"),
    };
    // Another spelling of a declared address still connects; only the port decides here.
    if declared.iter().any(|d| port_of(d) == port_of(addr)) {
        return None;
    }
    let fix = match probe {
        Probe::Tcp(_) => format!("tcp = \"{first}\""),
        Probe::Http(u) => format!(
            "http = \"http://{}{}\"",
            l.health.as_deref().unwrap_or(first),
            u.path
        ),
    };
    let list = declared
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Some(
        Finding::new(
            READY_NOT_A_LISTENER,
            Severity::Error,
            format!(
                "steward's readiness probe can never pass: after ready.timeout {} steward kills the child and exits 69",
                fmt_duration(cfg.config.ready.timeout)
            ),
        )
        .why(format!(
            "ready.{key} is {addr}, but the child listens on {list} ({})",
            l.path.display()
        ))
        .fix(fix)
        .at(Some(cfg.at(key))),
    )
}

fn port_of(addr: &str) -> Option<&str> {
    addr.rsplit_once(':').map(|(_, p)| p)
}

/// Each of steward's `sockets.listen` against the child's listening services: the hand-off
/// gives each socket under its key, and the child takes those whose key is one of its own
/// addresses, byte for byte.
fn socket_keys(cfg: &StewardConfig<'_>, l: &ProxyListeners) -> Vec<Finding> {
    if l.services.is_empty() {
        return Vec::new();
    }
    let list = l.services.join(", ");
    cfg.config
        .sockets
        .iter()
        .filter(|key| !l.services.contains(key))
        .map(|key| {
            let same_port = l.services.iter().find(|s| port_of(s) == port_of(key));
            let fix = match same_port {
                Some(s) => format!("write {s:?} for {key:?} in sockets.listen"),
                None => format!("remove {key:?} from sockets.listen, or make it one of the child's listeners"),
            };
            Finding::new(
                LISTENER_MISMATCH,
                Severity::Error,
                format!("the child will not claim listener {key} that steward hands it: once the child serves, steward stops it and exits 78, and every reload fails the same way"),
            )
            .why(format!(
                "the hand-off matches sockets.listen with the child's own listener addresses as strings; {} declares {list}",
                l.path.display()
            ))
            .fix(fix)
            .at(Some(cfg.at("listen")))
        })
        .collect()
}

/// `child.handoff = "inherit"` for a program that cannot take inherited listeners:
/// `inherits` says whether the program holds steward-pingora's marker (`None`: unknown,
/// the program could not be read).
pub fn handoff(cfg: &StewardConfig<'_>, inherits: Option<bool>) -> Option<Finding> {
    let c = cfg.config;
    if c.child.handoff != Handoff::Inherit || c.sockets.is_empty() || inherits != Some(false) {
        return None;
    }
    Some(
        Finding::new(
            HANDOFF_UNSUPPORTED,
            Severity::Error,
            "no generation can start: the child never reports the listeners it inherits, so steward stops it after 8 s and exits 78, and every reload fails the same way",
        )
        .why(format!(
            "child.handoff = \"inherit\" needs a Pingora server built with steward-pingora, and {} does not contain its {} variable",
            c.child.program.display(),
            crate::inherit::REPORT_ENV
        ))
        .fix("handoff = \"upgrade\" (Pingora's -u hand-off, which any Pingora server takes)")
        .at(Some(cfg.at("handoff"))),
    )
}

// ---------------------------------------------------------------------------------------
// Pingora alone

/// Everything that applies when Pingora is the unit's main process itself.
pub fn pingora_alone(p: &PingoraConf, s: &Surroundings<'_>) -> Vec<Finding> {
    let mut out = pingora_stop(p, s);
    let main = s.unit.and_then(UnitProps::main_command);
    let daemon_flag = main.is_some_and(|c| c.iter().skip(1).any(|a| a == "-d" || a == "--daemon"));
    let daemon = p.daemon || daemon_flag;
    if let Some(u) = s.unit {
        out.extend(pingora_service_type(p, u, daemon, daemon_flag));
        out.extend(pid_file(p, u, daemon));
        out.extend(watchdog(u, "Pingora never sends it"));
    }
    if !daemon {
        out.extend(foreground_settings(
            p,
            "this server runs in the foreground (no daemon: true, no -d)",
        ));
    }
    let upgrades = s.unit.is_none_or(|u| {
        u.exec_start
            .value
            .iter()
            .chain(&u.exec_reload.value)
            .any(|c| c.iter().skip(1).any(|a| a == "-u" || a == "--upgrade"))
    });
    let sock = p.upgrade_sock.as_deref().unwrap_or(DEFAULT_UPGRADE_SOCK);
    if let (true, Some(dir)) = (upgrades, shared_dir(sock)) {
        let shown_sock = match &p.upgrade_sock {
            Some(s) => format!("upgrade_sock {s}"),
            None => format!("upgrade_sock {DEFAULT_UPGRADE_SOCK} (absent: Pingora's default)"),
        };
        let at = p.at("upgrade_sock");
        let fix = match at.as_ref().and_then(|a| a.line) {
            Some(_) => "upgrade_sock: /run/pingora/upgrade.sock (with RuntimeDirectory=pingora, RuntimeDirectoryMode=0700)".to_string(),
            None => "add upgrade_sock: /run/pingora/upgrade.sock (with RuntimeDirectory=pingora, RuntimeDirectoryMode=0700)".to_string(),
        };
        out.push(
            Finding::new(
                UPGRADE_SOCK_SHARED_DIR,
                Severity::Warning,
                "during a graceful upgrade any local user can connect to the upgrade socket first and hand the new Pingora process their own listening sockets: it then serves whatever they bound",
            )
            .why(format!("{shown_sock} is in {}, which every user can write to, and Pingora makes the socket mode 0666", dir.display()))
            .fix(fix)
            .at(at),
        );
    }
    out
}

fn pingora_stop(p: &PingoraConf, s: &Surroundings<'_>) -> Vec<Finding> {
    let Some(timeout) = s.stop_timeout() else {
        return Vec::new();
    };
    let waits = s.version.shutdown_timeout_waits();
    let grace = p.grace.unwrap_or(PINGORA_DEFAULT_GRACE);
    let shutdown = p
        .shutdown_timeout
        .unwrap_or(PINGORA_DEFAULT_SHUTDOWN_TIMEOUT);
    // Saturating: the YAML may say u64::MAX, and a wrapped sum would read as "fits".
    let stop = grace.saturating_add(shutdown.saturating_mul(waits));
    if stop == 0 {
        return Vec::new();
    }
    let default_note = |set: bool| {
        if set {
            ""
        } else {
            " (absent: Pingora's default)"
        }
    };
    let twice = if waits > 1 {
        format!(
            ", twice on Pingora {} (upstream #727, fixed in 0.9)",
            s.version
        )
    } else {
        String::new()
    };
    let why = format!(
        "after SIGTERM Pingora sleeps {GRACE} {grace} s{} whether or not a request is in flight, then waits up to {SHUTDOWN_TIMEOUT} {shutdown} s{}{twice}: {stop} s in all",
        default_note(p.grace.is_some()),
        default_note(p.shutdown_timeout.is_some()),
    );
    match timeout.value {
        Span::Finite(t) if Duration::from_secs(stop) > t => {
            // Leave 5 s for Pingora's own exit and the journal.
            let budget = t.as_secs().saturating_sub(5);
            let yaml_fix = if shutdown.saturating_mul(waits) <= budget {
                format!("{GRACE}: {}", budget - shutdown.saturating_mul(waits))
            } else {
                format!("{GRACE}: 0 and {SHUTDOWN_TIMEOUT}: {}", budget / waits)
            };
            let at = p.at(GRACE);
            let yaml_fix = match at.as_ref().map(|a| a.line.is_some()) {
                Some(true) => yaml_fix,
                Some(false) => format!("add {yaml_fix}"),
                None => format!("give Pingora a conf (-c) with {yaml_fix}"),
            };
            // Pingora alone does not read STEWARD_STOP_TIMEOUT: only the platform's setting.
            let longer = if timeout.platform {
                format!("a platform stop timeout of {} s", stop.saturating_add(5))
            } else {
                format!(
                    "TimeoutStopSec={} in {}'s [Service]",
                    stop.saturating_add(5),
                    timeout.unit
                )
            };
            vec![Finding::new(STOP_TIMEOUT_EXCEEDED, Severity::Error, kill_at_timeout(s.unit, &timeout, t))
                .why(format!("{why}, longer than {}", timeout.shown))
                .fix(format!(
                    "{yaml_fix} (or {longer}, if every stop may take that long; or run Pingora under steward, which ends the stop when the last request is done)"
                ))
                .at(at)]
        }
        _ => vec![Finding::new(
            STOP_WAITS_GRACE,
            Severity::Info,
            format!(
                "every {} takes {stop} s, even with no request in flight",
                if timeout.platform { "stop" } else { "systemctl stop" }
            ),
        )
        .why(format!(
            "{why}; {} allows it ({})",
            if timeout.platform { "the platform" } else { "the unit" },
            timeout.shown
        ))
        .fix(format!("a smaller {GRACE}, or run Pingora under steward, which ends the stop when the last request is done"))
        .at(p.at(GRACE))],
    }
}

fn pingora_service_type(
    p: &PingoraConf,
    u: &UnitProps,
    daemon: bool,
    daemon_flag: bool,
) -> Option<Finding> {
    let ty = u.service_type.value.as_str();
    let daemon_shown = match (daemon_flag, p.daemon) {
        (true, _) => "ExecStart passes -d",
        (false, true) => "the conf sets daemon: true",
        (false, false) => {
            "neither ExecStart (-d) nor the conf (daemon: true) makes Pingora daemonize"
        }
    };
    let (what, line) = match (ty, daemon) {
        ("forking", true) => return None,
        ("forking", false) => ("systemctl start waits TimeoutStartSec for Pingora to fork into the background, which it does only with -d or daemon: true; then systemd kills it and the start fails", "Type=exec"),
        ("simple" | "exec" | "idle", true) => ("Pingora forks into the background and its first process exits at once: systemd takes that for the end of the service and stops the unit, killing the forked server", "Type=forking"),
        ("simple" | "exec" | "idle", false) => return None,
        ("oneshot", _) => ("systemctl start does not return until Pingora exits: the unit never becomes active", "Type=exec"),
        _ => ("systemctl start waits for READY=1 (or a D-Bus name), which Pingora never sends: after TimeoutStartSec systemd kills it and the start fails", "Type=exec"),
    };
    let (at, fix) = unit_fix(u, &u.service_type, line.to_string());
    Some(
        Finding::new(SERVICE_TYPE, Severity::Error, what)
            .why(format!(
                "{}; {daemon_shown}",
                shown("Type", ty, &u.service_type)
            ))
            .fix(format!(
                "{fix} (or run Pingora under steward with Type=notify)"
            ))
            .at(at),
    )
}

fn pid_file(p: &PingoraConf, u: &UnitProps, daemon: bool) -> Option<Finding> {
    if u.service_type.value != "forking" || !daemon {
        return None;
    }
    let expected = u.pid_file.value.as_deref()?;
    let written = p.pid_file.as_deref().unwrap_or(DEFAULT_PID_FILE);
    let norm = |s: &str| s.replacen("/var/run/", "/run/", 1);
    if norm(expected) == norm(written) {
        return None;
    }
    let written_shown = match &p.pid_file {
        Some(_) => written.to_string(),
        None => format!("{written} (absent: Pingora's default)"),
    };
    let at = p.at("pid_file");
    let fix = match at.as_ref().and_then(|a| a.line) {
        Some(_) => format!("pid_file: {expected}"),
        None => format!("add pid_file: {expected}"),
    };
    Some(
        Finding::new(
            PID_FILE_MISMATCH,
            Severity::Error,
            format!("systemctl start waits TimeoutStartSec for {expected}, which Pingora never writes; then systemd kills the server and the start fails"),
        )
        .why(format!("the unit's PIDFile is {expected}; Pingora writes its pid to pid_file {written_shown}"))
        .fix(fix)
        .at(at.or_else(|| u.fragment().map(Location::file))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_or_without_patch() {
        assert_eq!(
            PingoraVersion::parse("0.8")
                .map(|v| v.to_string())
                .as_deref(),
            Ok("0.8.0")
        );
        assert_eq!(
            PingoraVersion::parse("v0.9.1")
                .map(|v| v.to_string())
                .as_deref(),
            Ok("0.9.1")
        );
        assert!(PingoraVersion::parse("0.x").is_err());
        assert!(PingoraVersion::parse("1").is_err());
    }

    #[test]
    fn only_0_8_and_older_wait_out_the_shutdown_timeout_twice() {
        let waits = |s: &str| PingoraVersion::parse(s).map(PingoraVersion::shutdown_timeout_waits);
        assert_eq!(waits("0.8.0"), Ok(2));
        assert_eq!(waits("0.3"), Ok(2));
        assert_eq!(waits("0.9"), Ok(1));
    }

    #[test]
    fn tmp_is_shared_even_where_it_does_not_exist() {
        assert_eq!(
            shared_dir("/tmp/pingora_upgrade.sock"),
            Some(PathBuf::from("/tmp"))
        );
        assert_eq!(shared_dir("/run/steward-nonexistent/upgrade.sock"), None);
    }

    fn systemd_default() -> StopTimeout {
        StopTimeout {
            value: Span::Finite(Duration::from_secs(90)),
            shown: String::new(),
            unit: "the unit".into(),
            platform: false,
        }
    }

    #[test]
    fn the_stop_message_names_the_wait_and_the_signal() {
        assert_eq!(
            kill_at_timeout(None, &systemd_default(), Duration::from_secs(90)),
            "systemctl stop will wait 90 s and then SIGKILL every process; in-flight requests are cut at a random point"
        );
    }

    #[test]
    fn the_stop_message_names_the_platform_for_a_platform_timeout() {
        let t = StopTimeout {
            platform: true,
            ..systemd_default()
        };
        assert!(kill_at_timeout(None, &t, Duration::from_secs(30))
            .starts_with("the platform's stop (docker stop, Kubernetes) will wait 30 s"));
    }

    // ----- What mutation testing found unpinned

    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::unit::load_unit_file;

    /// A steward service's unit with nothing to report.
    const STEWARD_UNIT: &str = "[Service]\nType=notify\nKillMode=mixed\nDelegate=yes\nRuntimeDirectory=steward\nExecStart=/usr/local/bin/steward run --config /etc/steward/steward.toml\n";

    /// Pingora as its own unit, in the foreground, never upgraded.
    const PINGORA_UNIT: &str =
        "[Service]\nType=exec\nExecStart=/usr/local/bin/pingora -c /etc/pingora.yaml\n";

    /// steward's TOML up to its `[ready]` table (5 lines): a shell child, ready on 6188.
    const STEWARD_TOML: &str =
        "[child]\ncommand = [\"/bin/sh\"]\n\n[ready]\ntcp = \"127.0.0.1:6188\"\n";

    const STEWARD_TOML_PATH: &str = "/etc/steward/steward.toml";

    /// A scratch directory of its own for each call.
    fn scratch() -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "steward-rules-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// A unit read from a file named s.service, as `steward check --unit-file` reads it.
    fn unit(text: &str) -> UnitProps {
        let dir = scratch();
        let path = dir.join("s.service");
        std::fs::write(&path, text).expect("unit file");
        let u = load_unit_file(&path, &[]).expect("unit");
        let _ = std::fs::remove_dir_all(&dir);
        u
    }

    /// The clean steward unit with `more` assignments after it, from line 7 on.
    fn steward_unit_with(more: &str) -> UnitProps {
        unit(&format!("{STEWARD_UNIT}{more}"))
    }

    /// steward's TOML with `rest` after `[ready]` (from line 6 on).
    fn steward_toml(rest: &str) -> (Config, String) {
        let text = format!("{STEWARD_TOML}{rest}");
        let config = Config::parse(Path::new(STEWARD_TOML_PATH), &text).expect("config");
        (config, text)
    }

    fn pingora(yaml: &str) -> PingoraConf {
        PingoraConf::parse(Path::new("/etc/pingora.yaml"), yaml).expect("pingora conf")
    }

    /// `steward check` with this unit, or systemd's default timeout without one.
    fn around(unit: Option<&UnitProps>) -> Surroundings<'_> {
        Surroundings {
            unit,
            assume_default_unit: true,
            platform_timeout: None,
            version: PingoraVersion::ASSUMED,
        }
    }

    /// `steward check --stop-timeout <secs>` without a unit.
    fn on_platform(secs: u64) -> Surroundings<'static> {
        Surroundings {
            platform_timeout: Some(PlatformTimeout {
                value: Span::Finite(Duration::from_secs(secs)),
                source: "--stop-timeout",
            }),
            ..around(None)
        }
    }

    /// What `steward check` finds under steward with steward's TOML `rest`.
    fn under(rest: &str, p: Option<&PingoraConf>, s: &Surroundings<'_>) -> Vec<Finding> {
        let (config, text) = steward_toml(rest);
        under_steward(
            &StewardConfig {
                config: &config,
                text: &text,
            },
            p,
            None,
            s,
        )
    }

    fn the(found: &[Finding], id: Id) -> &Finding {
        found
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no {id} in {found:#?}"))
    }

    fn has(found: &[Finding], id: Id) -> bool {
        found.iter().any(|f| f.id == id)
    }

    fn toml_line(line: usize) -> Option<Location> {
        Some(Location::line(Path::new(STEWARD_TOML_PATH), Some(line)))
    }

    fn unit_line(u: &UnitProps, line: usize) -> Option<Location> {
        Some(Location::line(u.fragment().expect("fragment"), Some(line)))
    }

    // The stop under steward.

    #[test]
    fn a_deadline_past_systemds_timeout_ends_in_systemds_sigkill() {
        let found = under("[stop]\ndeadline = \"100s\"\n", None, &around(None));
        assert!(the(&found, DEADLINE_BEYOND_TIMEOUT)
            .what
            .contains(" ends in systemd's SIGKILL of every process"));
    }

    #[test]
    fn a_deadline_past_the_platforms_timeout_ends_in_the_platforms_sigkill() {
        let found = under("[stop]\ndeadline = \"60s\"\n", None, &on_platform(30));
        assert!(the(&found, DEADLINE_BEYOND_TIMEOUT)
            .what
            .contains(" ends in the platform's SIGKILL of every process"));
    }

    #[test]
    fn a_deadline_past_systemds_timeout_is_fixed_on_its_line_from_timeout_stop_sec() {
        let found = under("[stop]\ndeadline = \"100s\"\n", None, &around(None));
        let f = the(&found, DEADLINE_BEYOND_TIMEOUT);
        assert_eq!(
            f.fix,
            "deadline = \"auto\" (TimeoutStopSec minus stop.margin)"
        );
        assert_eq!(f.at, toml_line(7));
    }

    #[test]
    fn a_deadline_past_the_platforms_timeout_is_fixed_from_steward_stop_timeout() {
        let found = under("[stop]\ndeadline = \"60s\"\n", None, &on_platform(30));
        assert_eq!(
            the(&found, DEADLINE_BEYOND_TIMEOUT).fix,
            "deadline = \"auto\" (STEWARD_STOP_TIMEOUT minus stop.margin)"
        );
    }

    #[test]
    fn without_a_unit_steward_run_skips_the_stop_checks() {
        let s = Surroundings {
            assume_default_unit: false,
            ..around(None)
        };
        assert_eq!(under("[stop]\ndeadline = \"100s\"\n", None, &s), vec![]);
    }

    #[test]
    fn a_deadline_equal_to_the_timeout_is_beyond_it() {
        let found = under("[stop]\ndeadline = \"90s\"\n", None, &around(None));
        assert!(has(&found, DEADLINE_BEYOND_TIMEOUT), "{found:#?}");
        assert!(!has(&found, MARGIN_TOO_SMALL), "{found:#?}");
    }

    #[test]
    fn a_deadline_two_seconds_before_the_timeout_leaves_time_to_reap() {
        assert_eq!(
            under("[stop]\ndeadline = \"88s\"\n", None, &around(None)),
            vec![]
        );
    }

    #[test]
    fn a_deadline_one_second_before_the_timeout_leaves_too_little_to_reap() {
        let found = under("[stop]\ndeadline = \"89s\"\n", None, &around(None));
        let f = the(&found, MARGIN_TOO_SMALL);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.fix, "deadline = \"85s\"");
        assert_eq!(f.at, toml_line(7));
    }

    #[test]
    fn a_margin_as_long_as_the_units_timeout_suggests_half_the_timeout() {
        let u = steward_unit_with("TimeoutStopSec=4\n");
        let found = under("", None, &around(Some(&u)));
        let f = the(&found, MARGIN_EXCEEDS_TIMEOUT);
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(
            f.fix,
            "add margin = \"2s\" under [stop] (or raise TimeoutStopSec)"
        );
        assert_eq!(
            f.at,
            Some(Location::line(Path::new(STEWARD_TOML_PATH), None))
        );
    }

    #[test]
    fn a_margin_as_long_as_the_platforms_timeout_is_raised_with_steward_stop_timeout() {
        let found = under("", None, &on_platform(4));
        assert_eq!(
            the(&found, MARGIN_EXCEEDS_TIMEOUT).fix,
            "add margin = \"2s\" under [stop] (or raise STEWARD_STOP_TIMEOUT together with the platform's stop timeout)"
        );
    }

    #[test]
    fn the_suggested_margin_is_at_most_5s() {
        let u = steward_unit_with("TimeoutStopSec=20\n");
        let found = under("[stop]\nmargin = \"30s\"\n", None, &around(Some(&u)));
        let f = the(&found, MARGIN_EXCEEDS_TIMEOUT);
        assert_eq!(f.fix, "margin = \"5s\" (or raise TimeoutStopSec)");
        assert_eq!(f.at, toml_line(7));
    }

    #[test]
    fn with_drain_exit_a_stock_child_sleeping_past_the_timeout_is_an_error() {
        let found = under(
            "[stop]\ndeadline = \"infinity\"\ndrain = \"exit\"\n",
            Some(&pingora("version: 1\n")),
            &around(None),
        );
        let f = the(&found, STOP_TIMEOUT_EXCEEDED);
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.why.contains("sleeps out its grace period: 305 s"),
            "{f:#?}"
        );
        assert!(f.fix.starts_with("drain = \"connections\""), "{f:#?}");
        assert!(!has(&found, DEADLINE_BEYOND_TIMEOUT), "{found:#?}");
    }

    #[test]
    fn with_drain_exit_steward_proxy_is_only_a_deadline_warning() {
        let (mut config, text) =
            steward_toml("[stop]\ndeadline = \"infinity\"\ndrain = \"exit\"\n");
        config.child.program = PathBuf::from("/usr/local/bin/steward-proxy");
        let cfg = StewardConfig {
            config: &config,
            text: &text,
        };
        let found = under_steward(&cfg, Some(&pingora("version: 1\n")), None, &around(None));
        assert!(has(&found, DEADLINE_BEYOND_TIMEOUT), "{found:#?}");
        assert!(!has(&found, STOP_TIMEOUT_EXCEEDED), "{found:#?}");
    }

    #[test]
    fn with_drain_exit_a_child_done_before_the_timeout_is_only_a_deadline_warning() {
        let found = under(
            "[stop]\ndeadline = \"infinity\"\ndrain = \"exit\"\n",
            Some(&pingora("version: 1\ngrace_period_seconds: 10\n")),
            &around(None),
        );
        assert!(has(&found, DEADLINE_BEYOND_TIMEOUT), "{found:#?}");
        assert!(!has(&found, STOP_TIMEOUT_EXCEEDED), "{found:#?}");
    }

    #[test]
    fn with_drain_connections_a_long_grace_is_only_a_deadline_warning() {
        let found = under(
            "[stop]\ndeadline = \"infinity\"\n",
            Some(&pingora("version: 1\n")),
            &around(None),
        );
        assert!(has(&found, DEADLINE_BEYOND_TIMEOUT), "{found:#?}");
        assert!(!has(&found, STOP_TIMEOUT_EXCEEDED), "{found:#?}");
    }

    #[test]
    fn a_clamped_default_grace_needs_no_fix() {
        let found = under("", Some(&pingora("version: 1\n")), &around(None));
        let f = the(&found, GRACE_CLAMPED);
        assert_eq!(f.fix, "none needed");
        assert_eq!(
            f.at,
            Some(Location::line(Path::new("/etc/pingora.yaml"), None))
        );
    }

    #[test]
    fn a_clamped_written_grace_is_restated_on_its_line() {
        let p = pingora("version: 1\ngrace_period_seconds: 120\n");
        let found = under("", Some(&p), &around(None));
        let f = the(&found, GRACE_CLAMPED);
        assert_eq!(
            f.fix,
            "none needed; grace_period_seconds: 85 would say what applies"
        );
        assert_eq!(
            f.at,
            Some(Location::line(Path::new("/etc/pingora.yaml"), Some(2)))
        );
    }

    #[test]
    fn with_kill_mode_process_systemd_kills_only_the_main_process() {
        let u = steward_unit_with("KillMode=process\n");
        assert_eq!(
            kill_at_timeout(Some(&u), &systemd_default(), Duration::from_secs(90)),
            "systemctl stop will wait 90 s and then SIGKILL the main process; in-flight requests are cut at a random point"
        );
    }

    // The unit around steward.

    #[test]
    fn a_clean_steward_unit_has_no_findings() {
        let u = steward_unit_with("");
        assert_eq!(under("", None, &around(Some(&u))), vec![]);
    }

    #[test]
    fn type_forking_under_steward_is_an_error() {
        let u = steward_unit_with("Type=forking\n");
        let found = under("", None, &around(Some(&u)));
        let f = the(&found, SERVICE_TYPE);
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.what.contains("for steward to fork into the background"),
            "{f:#?}"
        );
    }

    #[test]
    fn type_dbus_under_steward_is_an_error() {
        let u = steward_unit_with("Type=dbus\n");
        let found = under("", None, &around(Some(&u)));
        let f = the(&found, SERVICE_TYPE);
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.what.contains("a D-Bus name steward never takes"),
            "{f:#?}"
        );
    }

    #[test]
    fn notify_access_all_lets_any_process_notify() {
        let u = steward_unit_with("NotifyAccess=all\n");
        let found = under("", None, &around(Some(&u)));
        assert_eq!(the(&found, NOTIFY_ACCESS).fix, "NotifyAccess=main");
    }

    #[test]
    fn kill_mode_control_group_lets_systemd_signal_the_child() {
        let u = steward_unit_with("KillMode=control-group\n");
        let found = under("", None, &around(Some(&u)));
        assert!(the(&found, KILL_MODE).what.starts_with(
            "systemctl stop sends SIGTERM to the child at the same moment as to steward"
        ));
    }

    #[test]
    fn an_unset_setting_is_shown_as_systemds_default() {
        let u = unit(&STEWARD_UNIT.replace("KillMode=mixed\n", ""));
        let found = under("", None, &around(Some(&u)));
        assert!(the(&found, KILL_MODE)
            .why
            .starts_with("KillMode control-group, systemd's default; "));
    }

    #[test]
    fn an_unset_setting_is_added_with_a_drop_in() {
        let u = unit(&STEWARD_UNIT.replace("KillMode=mixed\n", ""));
        let found = under("", None, &around(Some(&u)));
        let f = the(&found, KILL_MODE);
        assert_eq!(
            f.fix,
            "add KillMode=mixed under [Service] (a drop-in will do: systemctl edit s.service)"
        );
        assert_eq!(f.at, u.fragment().map(Location::file));
    }

    #[test]
    fn a_set_setting_is_shown_with_its_line() {
        let u = steward_unit_with("KillMode=process\n");
        let found = under("", None, &around(Some(&u)));
        let at = unit_line(&u, 7).expect("line");
        assert!(the(&found, KILL_MODE)
            .why
            .starts_with(&format!("KillMode process ({at}); ")));
    }

    #[test]
    fn a_set_setting_is_fixed_on_its_line() {
        let u = steward_unit_with("KillMode=process\n");
        let found = under("", None, &around(Some(&u)));
        let f = the(&found, KILL_MODE);
        assert_eq!(f.fix, "KillMode=mixed");
        assert_eq!(f.at, unit_line(&u, 7));
    }

    #[test]
    fn a_stop_failure_mode_of_terminate_is_fine() {
        let u = steward_unit_with("TimeoutStopFailureMode=terminate\n");
        assert!(!has(
            &under("", None, &around(Some(&u))),
            STOP_FAILURE_MODE_ABORT
        ));
    }

    #[test]
    fn restart_on_failure_with_78_prevented_is_fine() {
        let u = steward_unit_with("Restart=on-failure\nRestartPreventExitStatus=78\n");
        assert!(!has(
            &under("", None, &around(Some(&u))),
            RESTART_PREVENT_78
        ));
    }

    #[test]
    fn the_units_runtime_directory_alone_is_enough() {
        let u = steward_unit_with("");
        let (config, text) = steward_toml("");
        assert_eq!(config.runtime_dir, None);
        let cfg = StewardConfig {
            config: &config,
            text: &text,
        };
        assert!(!has(&steward_unit(&cfg, &u), NO_RUNTIME_DIRECTORY));
    }

    // steward's health probe against systemd's watchdog (health: every 2 s, 1 s timeout,
    // 3 failures: the child is replaced after 7 s).

    #[test]
    fn a_watchdog_equal_to_the_time_to_replace_the_child_is_too_short() {
        let u = steward_unit_with("WatchdogSec=7\n");
        let found = under("", None, &around(Some(&u)));
        let f = the(&found, WATCHDOG_TOO_SHORT);
        assert_eq!(
            f.fix,
            "WatchdogSec=9 (or fewer health.failures, a shorter health.interval)"
        );
        assert_eq!(f.at, unit_line(&u, 7));
    }

    #[test]
    fn a_watchdog_a_second_longer_than_the_time_to_replace_the_child_is_fine() {
        let u = steward_unit_with("WatchdogSec=8\n");
        assert!(!has(
            &under("", None, &around(Some(&u))),
            WATCHDOG_TOO_SHORT
        ));
    }

    #[test]
    fn without_health_replacement_the_watchdog_is_not_compared() {
        let u = steward_unit_with("WatchdogSec=1\n");
        let found = under("[health]\nfailures = 0\n", None, &around(Some(&u)));
        assert!(!has(&found, WATCHDOG_TOO_SHORT), "{found:#?}");
    }

    #[test]
    fn the_suggested_watchdog_is_rounded_up_to_a_whole_second() {
        let u = steward_unit_with("WatchdogSec=6\n");
        let found = under("[health]\ntimeout = \"500ms\"\n", None, &around(Some(&u)));
        assert!(the(&found, WATCHDOG_TOO_SHORT)
            .fix
            .starts_with("WatchdogSec=9 "));
    }

    // Pingora's settings under steward.

    #[test]
    fn a_pid_file_does_nothing_in_the_foreground() {
        let found = under(
            "",
            Some(&pingora("version: 1\npid_file: /run/p.pid\n")),
            &around(None),
        );
        let f = the(&found, FOREGROUND_ONLY);
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(
            f.what,
            "pid_file: /run/p.pid does nothing: Pingora writes it only when it daemonizes"
        );
    }

    #[test]
    fn a_user_is_not_switched_to_in_the_foreground() {
        let found = under(
            "",
            Some(&pingora("version: 1\nuser: nobody\n")),
            &around(None),
        );
        let f = the(&found, USER_IGNORED);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(
            f.fix,
            "User=nobody in the unit's [Service], and delete this line"
        );
    }

    #[test]
    fn a_directory_only_its_owner_can_write_is_not_shared() {
        let dir = scratch();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let shared = shared_dir(dir.join("upgrade.sock").to_str().expect("utf-8"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(shared, None);
    }

    #[test]
    fn a_world_writable_directory_is_shared() {
        let dir = scratch();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let shared = shared_dir(dir.join("upgrade.sock").to_str().expect("utf-8"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(shared, Some(dir));
    }

    // steward-proxy's listeners.

    fn listeners(services: &[&str]) -> ProxyListeners {
        ProxyListeners {
            path: PathBuf::from("/etc/steward/proxy.toml"),
            services: services.iter().map(|s| s.to_string()).collect(),
            health: None,
        }
    }

    fn listener_findings(rest: &str, l: &ProxyListeners) -> Vec<Finding> {
        let (config, text) = steward_toml(rest);
        let cfg = StewardConfig {
            config: &config,
            text: &text,
        };
        ready_listener(&cfg, l)
            .into_iter()
            .chain(socket_keys(&cfg, l))
            .collect()
    }

    #[test]
    fn a_readiness_probe_on_no_listener_never_passes() {
        let found = listener_findings("", &listeners(&["127.0.0.1:8080"]));
        let f = the(&found, READY_NOT_A_LISTENER);
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.fix, "tcp = \"127.0.0.1:8080\"");
        assert_eq!(f.at, toml_line(5));
    }

    #[test]
    fn a_readiness_probe_on_another_spelling_of_a_listener_passes() {
        assert_eq!(listener_findings("", &listeners(&["0.0.0.0:6188"])), vec![]);
    }

    const SOCKET_6188: &str = "[sockets]\nlisten = [\"127.0.0.1:6188\"]\n";

    #[test]
    fn a_socket_key_the_child_declares_is_claimed() {
        assert_eq!(
            listener_findings(SOCKET_6188, &listeners(&["127.0.0.1:6188"])),
            vec![]
        );
    }

    #[test]
    fn a_socket_key_on_a_listeners_port_is_respelled_as_the_listener() {
        let found = listener_findings(SOCKET_6188, &listeners(&["0.0.0.0:6188"]));
        assert_eq!(
            the(&found, LISTENER_MISMATCH).fix,
            "write \"0.0.0.0:6188\" for \"127.0.0.1:6188\" in sockets.listen"
        );
    }

    #[test]
    fn a_socket_key_on_no_listeners_port_is_removed() {
        let l = ProxyListeners {
            health: Some("127.0.0.1:6188".into()),
            ..listeners(&["127.0.0.1:8080"])
        };
        let found = listener_findings(SOCKET_6188, &l);
        assert!(the(&found, LISTENER_MISMATCH)
            .fix
            .starts_with("remove \"127.0.0.1:6188\" from sockets.listen"));
    }

    // Pingora alone (PINGORA_UNIT: Type=exec, TimeoutStopSec 90 s by default).

    fn alone(yaml: &str, unit_text: &str) -> Vec<Finding> {
        let u = unit(unit_text);
        pingora_alone(&pingora(yaml), &around(Some(&u)))
    }

    #[test]
    fn a_pingora_stop_well_within_the_timeout_is_an_info() {
        let found = alone("version: 1\ngrace_period_seconds: 10\n", PINGORA_UNIT);
        let f = the(&found, STOP_WAITS_GRACE);
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(
            f.what,
            "every systemctl stop takes 15 s, even with no request in flight"
        );
    }

    #[test]
    fn a_pingora_stop_exactly_as_long_as_the_timeout_fits() {
        let found = alone("version: 1\ngrace_period_seconds: 85\n", PINGORA_UNIT);
        assert!(has(&found, STOP_WAITS_GRACE), "{found:#?}");
        assert!(!has(&found, STOP_TIMEOUT_EXCEEDED), "{found:#?}");
    }

    #[test]
    fn a_pingora_stop_a_second_past_the_timeout_is_killed() {
        let found = alone("version: 1\ngrace_period_seconds: 86\n", PINGORA_UNIT);
        assert_eq!(the(&found, STOP_TIMEOUT_EXCEEDED).severity, Severity::Error);
        assert!(!has(&found, STOP_WAITS_GRACE), "{found:#?}");
    }

    #[test]
    fn a_pingora_stop_of_no_time_is_not_reported() {
        let found = alone(
            "version: 1\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 0\n",
            PINGORA_UNIT,
        );
        assert!(!has(&found, STOP_WAITS_GRACE), "{found:#?}");
        assert!(!has(&found, STOP_TIMEOUT_EXCEEDED), "{found:#?}");
    }

    #[test]
    fn pingora_0_8_waits_out_the_shutdown_timeout_twice() {
        let u = unit(PINGORA_UNIT);
        let s = Surroundings {
            version: PingoraVersion::parse("0.8").expect("version"),
            ..around(Some(&u))
        };
        let found = pingora_alone(&pingora("version: 1\ngrace_period_seconds: 10\n"), &s);
        assert!(the(&found, STOP_WAITS_GRACE)
            .why
            .contains(", twice on Pingora 0.8.0 (upstream #727, fixed in 0.9): 20 s in all"));
    }

    #[test]
    fn pingora_0_9_waits_out_the_shutdown_timeout_once() {
        let found = alone("version: 1\ngrace_period_seconds: 10\n", PINGORA_UNIT);
        let why = &the(&found, STOP_WAITS_GRACE).why;
        assert!(!why.contains("twice"), "{why}");
        assert!(
            why.contains(
                "graceful_shutdown_timeout_seconds 5 s (absent: Pingora's default): 15 s in all"
            ),
            "{why}"
        );
    }

    #[test]
    fn a_foreground_pingora_under_type_exec_is_fine() {
        let found = alone("version: 1\n", PINGORA_UNIT);
        assert!(!has(&found, SERVICE_TYPE), "{found:#?}");
    }

    #[test]
    fn a_daemon_conf_under_type_forking_is_fine() {
        let found = alone(
            "version: 1\ndaemon: true\n",
            &PINGORA_UNIT.replace("Type=exec", "Type=forking"),
        );
        assert!(!has(&found, SERVICE_TYPE), "{found:#?}");
    }

    #[test]
    fn a_daemonizing_pingora_under_type_simple_is_stopped_by_systemd() {
        let u = unit(
            "[Service]\nType=simple\nExecStart=/usr/local/bin/pingora -d -c /etc/pingora.yaml\n",
        );
        let found = pingora_alone(&pingora("version: 1\n"), &around(Some(&u)));
        let f = the(&found, SERVICE_TYPE);
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(
            f.fix,
            "Type=forking (or run Pingora under steward with Type=notify)"
        );
        assert_eq!(f.at, unit_line(&u, 2));
    }

    #[test]
    fn type_forking_without_daemon_waits_for_a_fork_that_never_comes() {
        let found = alone(
            "version: 1\n",
            &PINGORA_UNIT.replace("Type=exec", "Type=forking"),
        );
        assert!(the(&found, SERVICE_TYPE).what.starts_with(
            "systemctl start waits TimeoutStartSec for Pingora to fork into the background"
        ));
    }

    #[test]
    fn a_unit_that_upgrades_through_tmp_is_warned() {
        let found = alone(
            "version: 1\n",
            &format!("{PINGORA_UNIT}ExecReload=/usr/local/bin/pingora -u -c /etc/pingora.yaml\n"),
        );
        assert_eq!(
            the(&found, UPGRADE_SOCK_SHARED_DIR).severity,
            Severity::Warning
        );
    }

    #[test]
    fn a_unit_that_never_upgrades_is_not_warned_about_the_upgrade_socket() {
        let found = alone("version: 1\n", PINGORA_UNIT);
        assert!(!has(&found, UPGRADE_SOCK_SHARED_DIR), "{found:#?}");
    }

    const FORKING_PINGORA: &str =
        "[Service]\nType=forking\nExecStart=/usr/local/bin/pingora -d -c /etc/pingora.yaml\n";

    #[test]
    fn a_pid_file_pingora_never_writes_fails_the_start() {
        let found = alone(
            "version: 1\n",
            &format!("{FORKING_PINGORA}PIDFile=/run/pingora.pid\n"),
        );
        let f = the(&found, PID_FILE_MISMATCH);
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.fix, "add pid_file: /run/pingora.pid");
    }

    #[test]
    fn var_run_and_run_name_the_same_pid_file() {
        let found = alone(
            "version: 1\npid_file: /run/pingora.pid\n",
            &format!("{FORKING_PINGORA}PIDFile=/var/run/pingora.pid\n"),
        );
        assert!(!has(&found, PID_FILE_MISMATCH), "{found:#?}");
    }
}
