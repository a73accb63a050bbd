//! The lifecycle's facts in words: the journal's messages, systemd's `STATUS=` lines,
//! the control socket's replies and the names `steward status` and the journal's fields
//! use. The machine decides and says what happened as data; only this module words it,
//! so one event is worded one way wherever it shows, and tests of the machine assert facts.
//!
//! The words are an interface: the README, the operator's guide and the end-to-end
//! tests quote them.

use std::fmt;
use std::time::Duration;

#[path = "render_upgrade.rs"]
pub mod upgrade;

use crate::lifecycle::{
    ChildStatus, Crash, Fact, GenId, KillReason, Mode, ReloadError, ReloadFailure, StopSignal,
    Unclaimed, Why,
};

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Starting => "starting",
            Mode::Serving => "serving",
            Mode::Reloading => "reloading",
            Mode::Backoff => "backoff",
            Mode::Stopping => "stopping",
            Mode::Exited => "exited",
        }
    }
}

impl ChildStatus {
    pub fn describe(self) -> String {
        match self {
            ChildStatus::Code(c) => format!("exit code {c}"),
            ChildStatus::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(s)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                format!("signal {s} ({name})")
            }
        }
    }
}

impl StopSignal {
    pub fn as_str(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
        }
    }
}

impl KillReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::Drained => "drained",
            KillReason::Deadline => "deadline",
            KillReason::StartTimeout => "start-timeout",
            KillReason::Operator => "operator",
            KillReason::Unhealthy => "unhealthy",
        }
    }
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Start => "start",
            Why::Reload => "reload",
            Why::Restart => "restart",
            Why::Crash => "crash recovery",
        }
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Spawned { gen, pid, why } => write!(
                f,
                "{}: generation {gen}, child pid {pid}, waiting until it serves",
                match why {
                    Why::Start => "starting",
                    Why::Reload => "reloading",
                    Why::Restart | Why::Crash => "restarting",
                }
            ),
            Fact::StartFailed { reason } => write!(f, "failed: {reason}"),
            Fact::Serving {
                gen,
                pid,
                restarts,
                reload,
            } => {
                write!(f, "serving: generation {gen}, child pid {pid}")?;
                match restarts {
                    0 => {}
                    1 => write!(f, ", 1 restart")?,
                    n => write!(f, ", {n} restarts")?,
                }
                match reload {
                    None => Ok(()),
                    Some(Ok(())) => write!(f, " (reloaded)"),
                    Some(Err(e)) => write!(f, " (reload failed: {e})"),
                }
            }
            Fact::Checking { old } => write!(
                f,
                "reloading: checking the new configuration (generation {old} keeps serving)"
            ),
            Fact::StopBegan {
                signal,
                during,
                pid,
                left,
            } => write!(
                f,
                "stopping: {} received{}, draining child pid {pid}, {}",
                signal.as_str(),
                match during {
                    Mode::Starting => " before the child was ready",
                    Mode::Reloading => " during a reload",
                    _ => "",
                },
                TimeLeft(*left)
            ),
            Fact::StopUnderWay => {
                write!(f, "SIGTERM while stopping: the stop is already under way")
            }
            Fact::StopBeforeStart { .. } => {
                write!(f, "stop signal before the child was started; exiting")
            }
            Fact::ReloadBeforeStart => write!(
                f,
                "SIGHUP before the child was started: one reload will run once it serves"
            ),
            Fact::Draining {
                in_flight,
                pids,
                left,
            } => {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "draining: {}, child pid {}, {}",
                    InFlight(*in_flight),
                    pids.join(", "),
                    TimeLeft(*left)
                )
            }
            Fact::Killing {
                gen,
                pid,
                reason,
                in_flight,
                start_timeout,
                health_failed,
            } => match reason {
                KillReason::Drained => write!(
                    f,
                    "stopping: generation {gen} drained, no request in flight; ending child pid {pid}"
                ),
                KillReason::Deadline => write!(
                    f,
                    "killing: stop deadline reached for generation {gen} with {}; SIGKILL to child pid {pid} and its process tree",
                    InFlight(*in_flight)
                ),
                KillReason::StartTimeout => write!(
                    f,
                    "killing: generation {gen} (child pid {pid}) did not become ready within {} s",
                    start_timeout.as_secs_f64()
                ),
                KillReason::Operator => write!(
                    f,
                    "killing: second SIGINT; SIGKILL to child pid {pid} and its process tree"
                ),
                KillReason::Unhealthy => write!(
                    f,
                    "restarting: generation {gen} (child pid {pid}) failed {health_failed} health probes in a row; killing it"
                ),
            },
            Fact::Stopped { gen, pid, status } => write!(
                f,
                "generation {gen} (child pid {pid}) stopped ({})",
                status.describe()
            ),
            Fact::Retired { gen, pid, status } => write!(
                f,
                "generation {gen} (child pid {pid}) retired ({})",
                status.describe()
            ),
            Fact::Exited { gen, pid, status } => write!(
                f,
                "generation {gen} (child pid {pid}) exited ({})",
                status.describe()
            ),
            Fact::NeverServed { gen, pid } => write!(
                f,
                "exited: generation {gen} (child pid {pid}) never served"
            ),
            Fact::EndedBeforeReady { pid, status } => write!(
                f,
                "exited: child pid {pid} ended before it was ready ({})",
                status.describe()
            ),
            Fact::Crashed {
                what,
                backoff,
                crashes,
                allowed,
                window,
            } => write!(
                f,
                "{what}; restarting in {} ms (crash {crashes} of {allowed} allowed within {} s)",
                backoff.as_millis(),
                window.as_secs()
            ),
            Fact::RestartingIn { what, backoff } => {
                write!(f, "restarting in {} ms: {what}", backoff.as_millis())
            }
            Fact::GaveUp { what, crashes: None } => write!(f, "exited: {what}"),
            Fact::GaveUp {
                what,
                crashes: Some((n, window)),
            } => write!(
                f,
                "exited: {what}; {n} crashes within {} s, giving up (systemd's Restart= decides)",
                window.as_secs()
            ),
            Fact::ReloadQueued {
                during: Mode::Reloading,
            } => write!(
                f,
                "reload requested during a reload: it will run once this one ends"
            ),
            Fact::ReloadQueued { during } => write!(
                f,
                "reload requested while {}: it will run once the child serves",
                during.as_str()
            ),
            Fact::ReloadFailed(e) => {
                write!(f, "reload failed: {e}; the old generation keeps serving")
            }
            Fact::RestartIgnored { during } => {
                write!(f, "restart ignored while {}", during.as_str())
            }
            Fact::HealthFailed { gen, in_a_row } => write!(
                f,
                "generation {gen} failed its health probe ({in_a_row} in a row)"
            ),
        }
    }
}

impl fmt::Display for Unclaimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the child did not claim listener(s) {} handed over by steward: sockets.listen entries must match the child's own listener addresses byte for byte (fix: sockets.listen in {})",
            self.keys.join(", "),
            self.config.display()
        )
    }
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Crash::Unhealthy { gen, pid } => {
                write!(f, "generation {gen} (child pid {pid}) was unhealthy")
            }
            Crash::Ended { gen, pid, status } => write!(
                f,
                "generation {gen}: child pid {pid} ended on its own ({})",
                status.describe()
            ),
            Crash::DidNotStart { gen, reason } => {
                write!(f, "generation {gen} did not start: {reason}")
            }
            Crash::Reload(e) => e.fmt(f),
        }
    }
}

impl fmt::Display for ReloadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadFailure::Check(e) => write!(f, "configuration check failed: {e}"),
            ReloadFailure::DidNotStart { gen, reason } => {
                write!(f, "generation {gen} did not start: {reason}")
            }
            ReloadFailure::ExitedBeforeServing { gen, pid, status } => write!(
                f,
                "generation {gen} (child pid {pid}) exited before it served ({})",
                status.describe()
            ),
        }
    }
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Failed(e) => e.fmt(f),
            ReloadError::Stopping => write!(f, "steward is stopping"),
            ReloadError::Exiting(code) => write!(f, "steward is exiting with code {code}"),
            ReloadError::Refused(mode) => write!(f, "cannot reload while {}", mode.as_str()),
        }
    }
}

/// A fact's journal fields: what `journalctl STEWARD_EVENT=...` and the end-to-end tests
/// filter on, so a record is found by what happened, not by how it is worded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The fact's name (`spawned`, `serving`, `killing`, `crashed`, ...).
    pub event: &'static str,
    pub generation: Option<GenId>,
    /// The fact's own child pid, when it names one.
    pub child_pid: Option<u32>,
    /// Why a kill is decided: [`KillReason::as_str`].
    pub escalation: Option<&'static str>,
    /// The mode a stop, a queued reload or an ignored restart arrived in.
    pub during: Option<&'static str>,
    pub signal: Option<&'static str>,
    /// How a child ended: its exit code, or the signal that ended it.
    pub child_exit_code: Option<i32>,
    pub child_signal: Option<i32>,
    pub restarts: Option<u32>,
    /// Crashes counted within the window, and how many it allows.
    pub crashes: Option<u64>,
    pub crashes_allowed: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub health_failures: Option<u32>,
}

impl Fields {
    fn ended(mut self, status: ChildStatus) -> Fields {
        match status {
            ChildStatus::Code(c) => self.child_exit_code = Some(c),
            ChildStatus::Signal(s) => self.child_signal = Some(s),
        }
        self
    }

    fn crash(mut self, what: &Crash) -> Fields {
        match what {
            Crash::Unhealthy { gen, pid } => {
                self.generation = Some(*gen);
                self.child_pid = Some(*pid);
            }
            Crash::Ended { gen, pid, status } => {
                self.generation = Some(*gen);
                self.child_pid = Some(*pid);
                self = self.ended(*status);
            }
            Crash::DidNotStart { gen, .. } => self.generation = Some(*gen),
            Crash::Reload(e) => self = self.reload_failure(e),
        }
        self
    }

    fn reload_failure(mut self, e: &ReloadFailure) -> Fields {
        match e {
            ReloadFailure::Check(_) => {}
            ReloadFailure::DidNotStart { gen, .. } => self.generation = Some(*gen),
            ReloadFailure::ExitedBeforeServing { gen, pid, status } => {
                self.generation = Some(*gen);
                self.child_pid = Some(*pid);
                self = self.ended(*status);
            }
        }
        self
    }
}

impl Fact {
    /// The fact as journal fields; [`Fact`]'s `Display` is the same fact in words.
    pub fn fields(&self) -> Fields {
        let named = |event| Fields {
            event,
            ..Fields::default()
        };
        let gen_pid = |event, gen: &GenId, pid: &u32| Fields {
            event,
            generation: Some(*gen),
            child_pid: Some(*pid),
            ..Fields::default()
        };
        match self {
            Fact::Spawned { gen, pid, .. } => gen_pid("spawned", gen, pid),
            Fact::StartFailed { .. } => named("start-failed"),
            Fact::Serving {
                gen, pid, restarts, ..
            } => Fields {
                restarts: Some(*restarts),
                ..gen_pid("serving", gen, pid)
            },
            Fact::Checking { old } => Fields {
                generation: Some(*old),
                ..named("checking")
            },
            Fact::StopBegan {
                signal,
                during,
                pid,
                ..
            } => Fields {
                child_pid: Some(*pid),
                signal: Some(signal.as_str()),
                during: Some(during.as_str()),
                ..named("stop-began")
            },
            Fact::StopUnderWay => named("stop-under-way"),
            Fact::StopBeforeStart { signal } => Fields {
                signal: Some(signal.as_str()),
                ..named("stop-before-start")
            },
            Fact::ReloadBeforeStart => named("reload-before-start"),
            Fact::Draining { .. } => named("draining"),
            Fact::Killing {
                gen, pid, reason, ..
            } => Fields {
                escalation: Some(reason.as_str()),
                ..gen_pid("killing", gen, pid)
            },
            Fact::Stopped { gen, pid, status } => gen_pid("stopped", gen, pid).ended(*status),
            Fact::Retired { gen, pid, status } => gen_pid("retired", gen, pid).ended(*status),
            Fact::Exited { gen, pid, status } => gen_pid("exited", gen, pid).ended(*status),
            Fact::NeverServed { gen, pid } => gen_pid("never-served", gen, pid),
            Fact::EndedBeforeReady { pid, status } => Fields {
                child_pid: Some(*pid),
                ..named("ended-before-ready")
            }
            .ended(*status),
            Fact::Crashed {
                what,
                backoff,
                crashes,
                allowed,
                ..
            } => Fields {
                backoff_ms: Some(backoff.as_millis() as u64),
                crashes: Some(*crashes as u64),
                crashes_allowed: Some(*allowed),
                ..named("crashed")
            }
            .crash(what),
            Fact::RestartingIn { what, backoff } => Fields {
                backoff_ms: Some(backoff.as_millis() as u64),
                ..named("restarting-in")
            }
            .crash(what),
            Fact::GaveUp { what, crashes } => Fields {
                crashes: crashes.map(|(n, _)| n as u64),
                ..named("gave-up")
            }
            .crash(what),
            Fact::ReloadQueued { during } => Fields {
                during: Some(during.as_str()),
                ..named("reload-queued")
            },
            Fact::ReloadFailed(e) => named("reload-failed").reload_failure(e),
            Fact::RestartIgnored { during } => Fields {
                during: Some(during.as_str()),
                ..named("restart-ignored")
            },
            Fact::HealthFailed { gen, in_a_row } => Fields {
                generation: Some(*gen),
                health_failures: Some(*in_a_row),
                ..named("health-failed")
            },
        }
    }
}

/// One record of a fact: `text` (the fact in words, perhaps with what systemd was told)
/// with the fact's [`Fields`]. `pid`: the current child, for facts that name none.
pub fn log_fact(level: tracing::Level, phase: &str, pid: u32, fact: &Fact, text: &str) {
    let f = fact.fields();
    macro_rules! record {
        ($level:ident) => {
            tracing::$level!(
                steward_phase = phase,
                steward_event = f.event,
                steward_generation = f.generation,
                steward_child_pid = f.child_pid.unwrap_or(pid),
                steward_escalation = f.escalation,
                steward_during = f.during,
                steward_signal = f.signal,
                steward_child_exit_code = f.child_exit_code,
                steward_child_signal = f.child_signal,
                steward_restarts = f.restarts,
                steward_crashes = f.crashes,
                steward_crashes_allowed = f.crashes_allowed,
                steward_backoff_ms = f.backoff_ms,
                steward_health_failures = f.health_failures,
                "{text}"
            )
        };
    }
    match level {
        tracing::Level::ERROR => record!(error),
        tracing::Level::WARN => record!(warn),
        _ => record!(info),
    }
}

/// The control socket's answer to `steward reload`: the message of an ok or an error reply.
pub fn reload_reply(result: &Result<GenId, ReloadError>) -> Result<String, String> {
    match result {
        Ok(gen) => Ok(format!("reloaded: generation {gen} serves")),
        Err(e) => Err(format!("reload failed: {e}")),
    }
}

/// The control socket's answer to `steward restart`.
pub fn restart_reply(result: Result<(), Mode>) -> Result<String, String> {
    match result {
        Ok(()) => Ok("restarting: a new generation starts, the old one drains".to_string()),
        Err(mode) => Err(format!("cannot restart while {}", mode.as_str())),
    }
}

/// "N requests in flight", or what is known without a count.
struct InFlight(Option<usize>);

impl fmt::Display for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(1) => write!(f, "1 request in flight"),
            Some(n) => write!(f, "{n} requests in flight"),
            None => write!(f, "the child still running"),
        }
    }
}

/// The time left until a deadline, if there is one.
struct TimeLeft(Option<Duration>);

impl fmt::Display for TimeLeft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{:.1} s left", d.as_secs_f64()),
            None => write!(f, "no deadline"),
        }
    }
}

/// What a kill's log line says besides the kill itself.
pub struct KillContext<'a> {
    pub deadline: &'a crate::deadline::Deadline,
    pub ready_timeout: Duration,
    pub health_failures: u32,
    /// The mode steward is in when the kill ends.
    pub phase: &'static str,
}

/// The log line of a finished kill.
pub fn log_kill(
    kill: &crate::effects::Kill,
    result: Result<usize, crate::worker::WorkerError>,
    ctx: &KillContext<'_>,
) {
    use tracing::{error, info, warn};
    let crate::effects::Kill {
        gen,
        pid,
        reason,
        elapsed_ms,
        in_flight,
    } = *kill;
    let killed = match result {
        Ok(n) => n,
        Err(e) => {
            error!(
                steward_generation = gen,
                steward_child_pid = pid,
                "SIGKILL to child pid {pid}'s process tree did not finish: {e}"
            );
            return;
        }
    };
    let Some(reason) = reason else {
        tracing::debug!("killed child pid {pid}'s process tree ({killed} processes)");
        return;
    };
    let deadline = ctx.deadline;
    match reason {
        KillReason::Deadline => warn!(
            steward_phase = "killing",
            steward_event = "killed",
            steward_escalation = "deadline",
            steward_generation = gen,
            steward_child_pid = pid,
            steward_signal = "SIGKILL",
            steward_deadline_ms = deadline.value.map(|d| d.as_millis() as u64).unwrap_or(0),
            steward_deadline_source = deadline.source_tag(),
            steward_elapsed_ms = elapsed_ms,
            steward_in_flight = in_flight.unwrap_or(0) as u64,
            steward_killed = killed as u64,
            "stop deadline reached after {elapsed_ms} ms: SIGKILL to child pid {pid}'s process tree ({killed} processes), {} in flight were cut; {}",
            in_flight.map(|n| format!("{n} requests")).unwrap_or_else(|| "whatever was".into()),
            deadline.describe()
        ),
        KillReason::Drained => info!(
            steward_phase = ctx.phase,
            steward_event = "killed",
            steward_escalation = "drained",
            steward_generation = gen,
            steward_child_pid = pid,
            steward_signal = "SIGKILL",
            steward_elapsed_ms = elapsed_ms,
            steward_killed = killed as u64,
            "child pid {pid} drained after {elapsed_ms} ms (no request in flight); ended it instead of waiting out its grace period"
        ),
        KillReason::StartTimeout => error!(
            steward_phase = "killing",
            steward_event = "killed",
            steward_escalation = "start-timeout",
            steward_generation = gen,
            steward_child_pid = pid,
            steward_signal = "SIGKILL",
            steward_killed = killed as u64,
            "child pid {pid} did not serve within ready.timeout {}; killed its process tree",
            crate::config::fmt_duration(ctx.ready_timeout)
        ),
        KillReason::Operator => warn!(
            steward_phase = "killing",
            steward_event = "killed",
            steward_escalation = "operator",
            steward_generation = gen,
            steward_child_pid = pid,
            steward_signal = "SIGKILL",
            steward_elapsed_ms = elapsed_ms,
            steward_killed = killed as u64,
            "second SIGINT after {elapsed_ms} ms: SIGKILL to child pid {pid}'s process tree"
        ),
        KillReason::Unhealthy => warn!(
            steward_phase = "serving",
            steward_event = "killed",
            steward_escalation = "unhealthy",
            steward_generation = gen,
            steward_child_pid = pid,
            steward_signal = "SIGKILL",
            steward_killed = killed as u64,
            "child pid {pid} failed {} health probes in a row; killed its process tree to replace it (listeners kept)",
            ctx.health_failures
        ),
    }
}

/// Descendants steward reaped that were no generation's child. Debug, not info: as a
/// container's PID 1 every orphan of the namespace lands here. One record per batch: a
/// killed fork bomb leaves hundreds at once.
pub fn log_orphans(orphans: &[(nix::unistd::Pid, ChildStatus)]) {
    match orphans {
        [] => {}
        [(pid, status)] => tracing::debug!(
            steward_reaped_pid = pid.as_raw(),
            "reaped orphaned descendant pid {pid} ({})",
            status.describe()
        ),
        many => {
            let shown: Vec<String> = many.iter().take(5).map(|(p, _)| p.to_string()).collect();
            tracing::debug!(
                steward_reaped = many.len() as u64,
                "reaped {} orphaned descendants (pids {}{})",
                many.len(),
                shown.join(", "),
                if many.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            );
        }
    }
}

/// `steward status`'s answer, from the machine and what the driver remembers.
pub fn status(
    machine: &crate::lifecycle::Lifecycle,
    deadline: &crate::deadline::Deadline,
    timeline: &crate::timeline::Timeline,
    health: &crate::control::HealthStats,
    started: std::time::Instant,
) -> crate::control::Status {
    let now = tokio::time::Instant::now();
    let current = machine.current();
    crate::control::Status {
        state: machine.mode().as_str().to_string(),
        pid: std::process::id(),
        generation: current.map(|g| g.id).unwrap_or(0),
        child_pid: current.and_then(|g| g.pid),
        uptime_s: started.elapsed().as_secs_f64(),
        child_uptime_s: current
            .and_then(|g| g.serving_since)
            .map(|t| now.saturating_duration_since(t).as_secs_f64()),
        restarts: machine.restarts(),
        // The drain's last count, not a fresh one: status answers from memory, and the
        // sockets are read only on the I/O worker.
        in_flight: machine
            .gens()
            .filter_map(|g| g.in_flight)
            .reduce(|a, b| a + b),
        generations: machine
            .gens()
            .map(|g| crate::control::GenStatus {
                generation: g.id,
                pid: g.pid,
                state: format!("{:?}", g.state).to_lowercase(),
                in_flight: g.in_flight,
            })
            .collect(),
        deadline: deadline.describe(),
        last_event: timeline.last(),
        health: health.clone(),
        timeline: timeline.entries(now),
    }
}

/// The journal line of `READY=1`.
pub fn log_ready(
    status: &str,
    fact: &Fact,
    current: Option<&crate::lifecycle::Gen>,
    probe: &crate::config::Probe,
) {
    let now = tokio::time::Instant::now();
    let (id, pid, since) = current
        .map(|g| (g.id, g.pid.unwrap_or(0), g.spawned))
        .unwrap_or((0, 0, now));
    let ms = now.saturating_duration_since(since).as_millis() as u64;
    tracing::info!(
        steward_phase = "serving",
        steward_event = fact.fields().event,
        steward_generation = id,
        steward_child_pid = pid,
        steward_restarts = fact.fields().restarts,
        steward_elapsed_ms = ms,
        "{status} ({} passed {ms} ms after spawn); READY=1",
        probe.describe()
    );
}

/// The journal line of `STOPPING=1`, with the deadline and where it came from.
pub fn log_stopping(
    status: &str,
    fact: &Fact,
    pid: u32,
    signal: Option<StopSignal>,
    deadline: &crate::deadline::Deadline,
) {
    tracing::info!(
        steward_phase = "stopping",
        steward_event = fact.fields().event,
        steward_during = fact.fields().during,
        steward_child_pid = pid,
        steward_signal = signal.map(StopSignal::as_str).unwrap_or(""),
        steward_deadline_ms = deadline.value.map(|d| d.as_millis() as u64).unwrap_or(0),
        steward_deadline_source = deadline.source_tag(),
        "{status}; STOPPING=1; {}",
        deadline.describe()
    );
}

/// The journal line of a finished reload; returns its timeline entry.
pub fn log_reload_finished(result: &Result<GenId, ReloadError>) -> String {
    match result {
        Ok(gen) => {
            tracing::info!(
                steward_phase = "serving",
                steward_event = "reload-finished",
                steward_reload = "done",
                steward_generation = *gen,
                "reload done: generation {gen} serves"
            );
            format!("reload done: generation {gen}")
        }
        Err(e) => {
            let refused_while = match e {
                ReloadError::Refused(mode) => Some(mode.as_str()),
                _ => None,
            };
            tracing::warn!(
                steward_phase = "serving",
                steward_event = "reload-finished",
                steward_reload = "failed",
                steward_during = refused_while,
                "reload failed: {e}"
            );
            format!("reload failed: {e}")
        }
    }
}

/// Who asked for a reload or a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    ReloadBySighup,
    ReloadOnSocket,
    RestartOnSocket,
}

/// The journal line of a reload or restart request, before the machine decides on it.
pub fn log_asked(asked: Asked) {
    match asked {
        Asked::ReloadBySighup => tracing::info!(
            steward_event = "reload-requested",
            steward_signal = "SIGHUP",
            "SIGHUP: reload requested"
        ),
        Asked::ReloadOnSocket => tracing::info!(
            steward_event = "reload-requested",
            "reload requested on the control socket"
        ),
        Asked::RestartOnSocket => tracing::info!(
            steward_event = "restart-requested",
            "restart requested on the control socket"
        ),
    }
}

/// A generation whose start went wrong is killed and dropped.
pub fn log_rejected(gen: GenId, reason: &str) {
    tracing::error!(
        steward_event = "rejected",
        steward_generation = gen,
        "generation {gen}: {reason}"
    );
}

/// A generation's child could not even be spawned.
pub fn log_spawn_failed(gen: GenId, reason: &str) {
    tracing::error!(
        steward_phase = "starting",
        steward_event = "spawn-failed",
        steward_generation = gen,
        "{reason}"
    );
}

/// SIGTERM sent to a generation: its drain begins.
pub fn log_terminate(gen: GenId, pid: nix::unistd::Pid) {
    tracing::info!(
        steward_event = "terminate",
        steward_generation = gen,
        steward_child_pid = pid.as_raw(),
        steward_signal = "SIGTERM",
        "SIGTERM to generation {gen} (child pid {pid}): draining"
    );
}

/// Processes the children left behind, killed at steward's exit.
pub fn log_leftovers(killed: usize) {
    if killed > 0 {
        tracing::warn!(
            steward_killed = killed as u64,
            "killed {killed} processes the children left behind"
        );
    }
}

/// steward's last journal line. `stopped`: a stop signal ended it (else its child did).
pub fn log_exit(code: i32, stopped: bool, elapsed: Option<Duration>, reaped: usize) {
    let elapsed_ms = elapsed.map(|d| d.as_millis() as u64);
    tracing::info!(
        steward_phase = "exited",
        steward_event = "exit",
        steward_exit_code = code,
        steward_stop = if stopped { "stopped" } else { "child-exited" },
        steward_elapsed_ms = elapsed_ms.unwrap_or(0),
        steward_reaped = reaped as u64,
        "steward exits with code {code}{}",
        elapsed_ms
            .map(|ms| format!(" {ms} ms after the stop began"))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    //! The words operators, the README and the end-to-end tests rely on, one fact at a time.

    use super::*;

    const S25: Duration = Duration::from_secs(25);

    fn text(f: Fact) -> String {
        f.to_string()
    }

    #[test]
    fn a_child_status_is_described_by_its_code_or_its_signals_name() {
        assert_eq!(ChildStatus::Code(3).describe(), "exit code 3");
        assert_eq!(ChildStatus::Signal(9).describe(), "signal 9 (SIGKILL)");
    }

    /// These names are journal field values (`STEWARD_KILL_REASON`, ...) operators filter on.
    #[test]
    fn stop_signals_kill_reasons_and_spawn_causes_keep_their_journal_names() {
        assert_eq!(
            [StopSignal::Term.as_str(), StopSignal::Int.as_str()],
            ["SIGTERM", "SIGINT"]
        );
        assert_eq!(
            [
                KillReason::Drained,
                KillReason::Deadline,
                KillReason::StartTimeout,
                KillReason::Operator,
                KillReason::Unhealthy
            ]
            .map(KillReason::as_str),
            [
                "drained",
                "deadline",
                "start-timeout",
                "operator",
                "unhealthy"
            ]
        );
        assert_eq!(
            [Why::Start, Why::Reload, Why::Restart, Why::Crash].map(Why::as_str),
            ["start", "reload", "restart", "crash recovery"]
        );
    }

    #[test]
    fn modes_keep_the_names_steward_status_shows() {
        assert_eq!(
            [
                Mode::Starting,
                Mode::Serving,
                Mode::Reloading,
                Mode::Backoff,
                Mode::Stopping,
                Mode::Exited
            ]
            .map(Mode::as_str),
            [
                "starting",
                "serving",
                "reloading",
                "backoff",
                "stopping",
                "exited"
            ]
        );
    }

    #[test]
    fn serving_names_the_generation_its_pid_its_restarts_and_the_reload() {
        let serving = |restarts, reload| Fact::Serving {
            gen: 2,
            pid: 43,
            restarts,
            reload,
        };
        assert_eq!(
            text(serving(0, None)),
            "serving: generation 2, child pid 43"
        );
        assert_eq!(
            text(serving(1, None)),
            "serving: generation 2, child pid 43, 1 restart"
        );
        assert_eq!(
            text(serving(3, Some(Ok(())))),
            "serving: generation 2, child pid 43, 3 restarts (reloaded)"
        );
        assert_eq!(
            text(serving(0, Some(Err(ReloadFailure::Check("bad".into()))))),
            "serving: generation 2, child pid 43 (reload failed: configuration check failed: bad)"
        );
    }

    #[test]
    fn a_spawned_generation_says_why_it_starts() {
        for (why, word) in [
            (Why::Start, "starting"),
            (Why::Reload, "reloading"),
            (Why::Crash, "restarting"),
            (Why::Restart, "restarting"),
        ] {
            assert_eq!(
                text(Fact::Spawned {
                    gen: 2,
                    pid: 43,
                    why
                }),
                format!("{word}: generation 2, child pid 43, waiting until it serves")
            );
        }
    }

    #[test]
    fn the_stop_says_what_it_interrupted_and_the_time_left() {
        let began = |during, left| {
            text(Fact::StopBegan {
                signal: StopSignal::Term,
                during,
                pid: 42,
                left,
            })
        };
        assert_eq!(
            began(Mode::Serving, Some(S25)),
            "stopping: SIGTERM received, draining child pid 42, 25.0 s left"
        );
        assert_eq!(
            began(Mode::Starting, None),
            "stopping: SIGTERM received before the child was ready, draining child pid 42, no deadline"
        );
        assert_eq!(
            began(Mode::Reloading, Some(S25)),
            "stopping: SIGTERM received during a reload, draining child pid 42, 25.0 s left"
        );
        assert_eq!(
            text(Fact::StopUnderWay),
            "SIGTERM while stopping: the stop is already under way"
        );
    }

    #[test]
    fn draining_counts_requests_in_flight_and_time_left() {
        let draining = |in_flight, pids, left| {
            text(Fact::Draining {
                in_flight,
                pids,
                left,
            })
        };
        assert_eq!(
            draining(Some(3), vec![42], Some(S25)),
            "draining: 3 requests in flight, child pid 42, 25.0 s left"
        );
        assert_eq!(
            draining(Some(1), vec![42, 43], Some(Duration::from_secs(24))),
            "draining: 1 request in flight, child pid 42, 43, 24.0 s left"
        );
        assert_eq!(
            draining(None, vec![42], None),
            "draining: the child still running, child pid 42, no deadline"
        );
    }

    #[test]
    fn each_kill_says_why() {
        let kill = |reason| {
            text(Fact::Killing {
                gen: 1,
                pid: 42,
                reason,
                in_flight: Some(1),
                start_timeout: Duration::from_millis(1500),
                health_failed: 3,
            })
        };
        for (reason, words) in [
            (
                KillReason::Drained,
                "stopping: generation 1 drained, no request in flight; ending child pid 42",
            ),
            (
                KillReason::Deadline,
                "killing: stop deadline reached for generation 1 with 1 request in flight; SIGKILL to child pid 42 and its process tree",
            ),
            (
                KillReason::StartTimeout,
                "killing: generation 1 (child pid 42) did not become ready within 1.5 s",
            ),
            (
                KillReason::Operator,
                "killing: second SIGINT; SIGKILL to child pid 42 and its process tree",
            ),
            (
                KillReason::Unhealthy,
                "restarting: generation 1 (child pid 42) failed 3 health probes in a row; killing it",
            ),
        ] {
            assert_eq!(kill(reason), words);
        }
    }

    #[test]
    fn a_generation_ending_says_how() {
        let status = ChildStatus::Code(0);
        assert_eq!(
            text(Fact::Stopped {
                gen: 1,
                pid: 42,
                status
            }),
            "generation 1 (child pid 42) stopped (exit code 0)"
        );
        assert_eq!(
            text(Fact::Retired {
                gen: 1,
                pid: 42,
                status
            }),
            "generation 1 (child pid 42) retired (exit code 0)"
        );
        assert_eq!(
            text(Fact::Exited {
                gen: 1,
                pid: 42,
                status
            }),
            "generation 1 (child pid 42) exited (exit code 0)"
        );
        assert_eq!(
            text(Fact::NeverServed { gen: 1, pid: 42 }),
            "exited: generation 1 (child pid 42) never served"
        );
        assert_eq!(
            text(Fact::EndedBeforeReady { pid: 42, status }),
            "exited: child pid 42 ended before it was ready (exit code 0)"
        );
        assert_eq!(
            text(Fact::StartFailed {
                reason: "ENOENT".into()
            }),
            "failed: ENOENT"
        );
    }

    #[test]
    fn a_crash_says_what_ended_the_backoff_and_the_count() {
        let what = Crash::Ended {
            gen: 1,
            pid: 42,
            status: ChildStatus::Signal(9),
        };
        let backoff = Duration::from_millis(200);
        assert_eq!(
            text(Fact::Crashed {
                what: what.clone(),
                backoff,
                crashes: 2,
                allowed: 3,
                window: Duration::from_secs(300),
            }),
            "generation 1: child pid 42 ended on its own (signal 9 (SIGKILL)); restarting in 200 ms (crash 2 of 3 allowed within 300 s)"
        );
        assert_eq!(
            text(Fact::RestartingIn {
                what: Crash::Unhealthy { gen: 1, pid: 42 },
                backoff
            }),
            "restarting in 200 ms: generation 1 (child pid 42) was unhealthy"
        );
        assert_eq!(
            text(Fact::GaveUp {
                what: Crash::DidNotStart {
                    gen: 2,
                    reason: "ENOENT".into()
                },
                crashes: None
            }),
            "exited: generation 2 did not start: ENOENT"
        );
        assert_eq!(
            text(Fact::GaveUp {
                what,
                crashes: Some((4, Duration::from_secs(300)))
            }),
            "exited: generation 1: child pid 42 ended on its own (signal 9 (SIGKILL)); 4 crashes within 300 s, giving up (systemd's Restart= decides)"
        );
    }

    #[test]
    fn reloads_say_what_they_check_queue_and_why_they_fail() {
        assert_eq!(
            text(Fact::Checking { old: 1 }),
            "reloading: checking the new configuration (generation 1 keeps serving)"
        );
        assert_eq!(
            text(Fact::ReloadQueued {
                during: Mode::Reloading
            }),
            "reload requested during a reload: it will run once this one ends"
        );
        assert_eq!(
            text(Fact::ReloadQueued {
                during: Mode::Backoff
            }),
            "reload requested while backoff: it will run once the child serves"
        );
        let exited = ReloadFailure::ExitedBeforeServing {
            gen: 2,
            pid: 43,
            status: ChildStatus::Code(1),
        };
        assert_eq!(
            text(Fact::ReloadFailed(exited.clone())),
            "reload failed: generation 2 (child pid 43) exited before it served (exit code 1); the old generation keeps serving"
        );
        assert_eq!(
            ReloadError::Failed(ReloadFailure::DidNotStart {
                gen: 2,
                reason: "no".into()
            })
            .to_string(),
            "generation 2 did not start: no"
        );
        assert_eq!(
            Crash::Reload(exited).to_string(),
            "generation 2 (child pid 43) exited before it served (exit code 1)"
        );
        assert_eq!(ReloadError::Stopping.to_string(), "steward is stopping");
        assert_eq!(
            ReloadError::Exiting(2).to_string(),
            "steward is exiting with code 2"
        );
        assert_eq!(
            ReloadError::Refused(Mode::Stopping).to_string(),
            "cannot reload while stopping"
        );
    }

    #[test]
    fn the_control_socket_answers_reloads_and_restarts() {
        assert_eq!(
            reload_reply(&Ok(2)),
            Ok("reloaded: generation 2 serves".to_string())
        );
        assert_eq!(
            reload_reply(&Err(ReloadError::Stopping)),
            Err("reload failed: steward is stopping".to_string())
        );
        assert_eq!(
            restart_reply(Ok(())),
            Ok("restarting: a new generation starts, the old one drains".to_string())
        );
        assert_eq!(
            restart_reply(Err(Mode::Backoff)),
            Err("cannot restart while backoff".to_string())
        );
    }

    /// `STEWARD_EVENT` and the facts beside it are journal fields operators and the
    /// end-to-end tests filter on: a fact keeps them whatever its words.
    #[test]
    fn facts_keep_their_journal_event_and_fields() {
        let killing = Fact::Killing {
            gen: 1,
            pid: 42,
            reason: KillReason::Deadline,
            in_flight: Some(1),
            start_timeout: S25,
            health_failed: 0,
        }
        .fields();
        assert_eq!(
            (
                killing.event,
                killing.generation,
                killing.child_pid,
                killing.escalation
            ),
            ("killing", Some(1), Some(42), Some("deadline"))
        );
        let stopped = Fact::Stopped {
            gen: 2,
            pid: 43,
            status: ChildStatus::Signal(9),
        }
        .fields();
        assert_eq!(
            (stopped.event, stopped.child_exit_code, stopped.child_signal),
            ("stopped", None, Some(9))
        );
        let began = Fact::StopBegan {
            signal: StopSignal::Int,
            during: Mode::Reloading,
            pid: 42,
            left: None,
        }
        .fields();
        assert_eq!(
            (began.event, began.signal, began.during),
            ("stop-began", Some("SIGINT"), Some("reloading"))
        );
        let crashed = Fact::Crashed {
            what: Crash::Ended {
                gen: 1,
                pid: 42,
                status: ChildStatus::Code(3),
            },
            backoff: Duration::from_millis(200),
            crashes: 2,
            allowed: 3,
            window: S25,
        }
        .fields();
        assert_eq!(
            (
                crashed.event,
                crashed.generation,
                crashed.child_exit_code,
                crashed.crashes,
                crashed.crashes_allowed,
                crashed.backoff_ms
            ),
            ("crashed", Some(1), Some(3), Some(2), Some(3), Some(200))
        );
        let queued = Fact::ReloadQueued {
            during: Mode::Starting,
        }
        .fields();
        assert_eq!(
            (queued.event, queued.during),
            ("reload-queued", Some("starting"))
        );
        let health = Fact::HealthFailed {
            gen: 1,
            in_a_row: 3,
        }
        .fields();
        assert_eq!(
            (health.event, health.health_failures),
            ("health-failed", Some(3))
        );
    }

    #[test]
    fn restarts_and_health_probes_say_what_happened() {
        assert_eq!(
            text(Fact::RestartIgnored {
                during: Mode::Backoff
            }),
            "restart ignored while backoff"
        );
        assert_eq!(
            text(Fact::HealthFailed {
                gen: 1,
                in_a_row: 2
            }),
            "generation 1 failed its health probe (2 in a row)"
        );
    }
}
