//! `steward run`: the thin driver around [`crate::lifecycle`].
//!
//! It owns everything the state machine must not touch: the child process, signals,
//! the readiness probe, the drain poll, timers, sd_notify and the log. One loop waits on
//! all of them at once and feeds what happened to the machine as an [`Event`]; the
//! machine's [`Action`]s come back and are carried out here.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant as StdInstant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::{Instant, Interval};
use tracing::{error, info, warn};

use crate::config::{fmt_duration, Config, DrainMode, Probe};
use crate::deadline::{self, Deadline, Outer};
use crate::lifecycle::{Action, Event, KillReason, Lifecycle, Phase, StopSignal, Timing};
use crate::notify::Notifier;
use crate::signals::{Received, Signals};
use crate::{child, exit, pingora_conf, probe, procfs, runtime_dir, systemd};

/// Name of the effective Pingora conf and the upgrade socket in the runtime directory.
const EFFECTIVE_CONF: &str = "pingora.yaml";
const UPGRADE_SOCK: &str = "upgrade.sock";
/// How long steward waits on the way out for killed descendants to be reaped.
const FINAL_REAP: Duration = Duration::from_secs(2);

/// Runs the supervisor until the child is gone; returns steward's exit code.
pub async fn run(config: Config) -> i32 {
    let notifier = Notifier::from_env();
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install signal handlers");
            return exit::OSERR;
        }
    };

    let outer = systemd::query_outer().await;
    if let Outer::Systemd(u) = &outer {
        info!(
            steward_unit = %u.unit,
            "systemd unit {}: TimeoutStopSec {} (via {})",
            u.unit,
            deadline::fmt_span(u.timeout_stop),
            u.via
        );
    }
    let deadline = match deadline::resolve(
        config.stop.deadline,
        config.stop.margin,
        config.stop.fallback_deadline,
        &outer,
    ) {
        Ok(d) => d,
        Err(e) => {
            let msg = format!(
                "{}: {e} (fix: lower stop.margin or raise TimeoutStopSec)",
                config.path.display()
            );
            error!(steward_phase = "config", "{msg}");
            notifier.status(&format!("configuration error: {msg}"));
            return exit::CONFIG;
        }
    };
    info!(
        steward_deadline_ms = deadline.value.map(|d| d.as_millis() as u64).unwrap_or(0),
        steward_deadline_source = deadline.source_tag(),
        steward_margin_ms = deadline.margin.as_millis() as u64,
        "{}",
        deadline.describe()
    );
    if let Some(w) = &deadline.warning {
        warn!(steward_deadline_source = deadline.source_tag(), "{w}");
    }

    let conf_path = match prepare_child_conf(&config, &deadline) {
        Ok(p) => p,
        Err((code, msg)) => {
            error!(steward_phase = "config", "{msg}");
            notifier.status(&format!("failed: {msg}"));
            return code;
        }
    };

    if let Some(Received::Term | Received::Int) = signals.pending().await {
        info!(
            steward_phase = "exited",
            "stop signal before the child was started; exiting"
        );
        return exit::OK;
    }
    if let Err(e) = child::become_subreaper() {
        warn!(error = %e, "cannot become child subreaper; orphaned grandchildren would escape");
    }
    let spawned_at = StdInstant::now();
    let pid = match child::spawn(&config.child, &conf_path) {
        Ok(pid) => pid,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => exit::CONFIG,
                _ => exit::OSERR,
            };
            let msg = format!(
                "cannot start {}: {e} (fix: child.command in {})",
                config.child.program.display(),
                config.path.display()
            );
            error!(steward_phase = "starting", "{msg}");
            notifier.status(&format!("failed: {msg}"));
            return code;
        }
    };
    let command_line = std::iter::once(config.child.program.display().to_string())
        .chain(config.child.args.iter().cloned())
        .chain(["-c".into(), conf_path.display().to_string()])
        .collect::<Vec<_>>()
        .join(" ");
    info!(
        steward_phase = "starting",
        steward_child_pid = pid.as_raw(),
        "started child pid {pid}: {command_line}; waiting until it serves ({})",
        config.ready.probe.describe()
    );
    notifier.status(&format!(
        "starting: child pid {pid}, waiting until it serves ({})",
        config.ready.probe.describe()
    ));

    let driver = Driver {
        config: &config,
        notifier,
        deadline,
        pid,
        spawned_at,
        ports: HashSet::new(),
    };
    driver.run_loop(signals).await
}

/// Reads the operator's Pingora YAML and writes the effective copy; on failure the exit
/// code and the one-line reason.
fn prepare_child_conf(
    config: &Config,
    deadline: &Deadline,
) -> Result<std::path::PathBuf, (i32, String)> {
    let dir = runtime_dir::choose(config.runtime_dir.as_deref());
    runtime_dir::prepare(&dir).map_err(|e| (exit::CANTCREAT, e.to_string()))?;
    let text = match &config.child.pingora_conf {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            (
                exit::CONFIG,
                format!(
                    "{}: cannot read the Pingora conf: {e} (fix: child.pingora_conf in {})",
                    p.display(),
                    config.path.display()
                ),
            )
        })?),
        None => None,
    };
    let source = config
        .child
        .pingora_conf
        .as_deref()
        .zip(text.as_deref())
        .map(|(p, t): (&Path, &str)| (p, t));
    let eff = pingora_conf::effective(source, deadline.value, &dir.join(UPGRADE_SOCK))
        .map_err(|e| (exit::CONFIG, e.to_string()))?;
    for change in &eff.changes {
        warn!(steward_phase = "config", "effective Pingora conf: {change}");
    }
    let path = runtime_dir::write_file(&dir, EFFECTIVE_CONF, &eff.yaml)
        .map_err(|e| (exit::CANTCREAT, e.to_string()))?;
    info!(
        "effective Pingora conf {} (grace_period_seconds {}, graceful_shutdown_timeout_seconds {})",
        path.display(),
        eff.grace,
        eff.shutdown_timeout
    );
    Ok(path)
}

struct Driver<'a> {
    config: &'a Config,
    notifier: Notifier,
    deadline: Deadline,
    pid: Pid,
    spawned_at: StdInstant,
    /// The child's listening ports, captured when the stop begins (Pingora closes them at
    /// SIGTERM); downstream connections on them are the requests still in flight.
    ports: HashSet<u16>,
}

type ProbeFuture = Pin<Box<dyn Future<Output = ()>>>;

impl Driver<'_> {
    async fn run_loop(mut self, mut signals: Signals) -> i32 {
        let timing = Timing {
            deadline: self.deadline.value,
            start_timeout: self.config.ready.timeout,
            drain_quiet: match self.config.stop.drain {
                DrainMode::Connections => Some(self.config.stop.drain_quiet),
                DrainMode::Exit => None,
            },
        };
        let mut machine = Lifecycle::new(self.pid.as_raw() as u32, timing, Instant::now());
        let last_probe_error = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
        let mut probe: Option<ProbeFuture> = Some(Box::pin(wait_ready(
            self.config.ready.probe.clone(),
            self.config.ready.interval,
            self.pid.as_raw(),
            last_probe_error.clone(),
        )));
        let mut drain_poll: Option<Interval> = None;

        loop {
            let wake = machine.next_wakeup();
            let event = tokio::select! {
                sig = signals.next() => match sig {
                    Received::Term => Event::Stop(StopSignal::Term),
                    Received::Int => Event::Stop(StopSignal::Int),
                    Received::Hup => {
                        warn!(steward_signal = "SIGHUP", "SIGHUP ignored: reload is not supported by this version of steward");
                        continue;
                    }
                    Received::Child => match self.reap() {
                        Some(status) => Event::ChildExited(status),
                        None => continue,
                    },
                },
                _ = poll_opt(&mut probe) => {
                    probe = None;
                    Event::Ready
                }
                _ = tick_opt(&mut drain_poll) => Event::Drain {
                    in_flight: procfs::downstream_connections(self.pid.as_raw(), &self.ports),
                },
                _ = sleep_opt(wake) => Event::Tick,
            };
            let before = machine.phase();
            let actions = machine.handle(event, Instant::now());
            if before == Phase::Starting && machine.phase() != Phase::Starting {
                probe = None;
            }
            for action in actions {
                match action {
                    Action::NotifyReady(status) => {
                        let ms = self.spawned_at.elapsed().as_millis() as u64;
                        info!(
                            steward_phase = "serving",
                            steward_child_pid = self.pid.as_raw(),
                            steward_elapsed_ms = ms,
                            "{status} ({} passed {ms} ms after spawn); READY=1",
                            self.config.ready.probe.describe()
                        );
                        self.notifier.ready(&status);
                    }
                    Action::NotifyStopping(status) => {
                        self.ports = procfs::listening_ports(self.pid.as_raw());
                        self.ports.extend(self.config.ready.probe.port());
                        info!(
                            steward_phase = "stopping",
                            steward_child_pid = self.pid.as_raw(),
                            steward_signal =
                                machine.stop_signal().map(StopSignal::as_str).unwrap_or(""),
                            steward_deadline_ms = self.deadline_ms(),
                            steward_deadline_source = self.deadline.source_tag(),
                            "{status}; STOPPING=1; {}",
                            self.deadline.describe()
                        );
                        self.notifier.stopping(&status);
                        if self.config.stop.drain == DrainMode::Connections {
                            let mut i = tokio::time::interval(self.config.stop.drain_poll);
                            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            drain_poll = Some(i);
                        }
                    }
                    Action::Status(status) => {
                        info!(
                            steward_phase = machine.phase().as_str(),
                            steward_child_pid = self.pid.as_raw(),
                            "{status}"
                        );
                        self.notifier.status(&status);
                    }
                    Action::ForwardTerm => {
                        if let Err(e) = child::signal(self.pid, Signal::SIGTERM) {
                            warn!(error = %e, "cannot forward SIGTERM to child pid {}", self.pid);
                        }
                    }
                    Action::KillTree(reason) => {
                        drain_poll = None;
                        self.kill_tree(reason, &machine, &last_probe_error.borrow());
                    }
                    Action::Ignored(what) => {
                        info!(steward_phase = machine.phase().as_str(), "{what}")
                    }
                    Action::Exit(code) => return self.finish(code, &machine),
                }
            }
        }
    }

    fn deadline_ms(&self) -> u64 {
        self.deadline
            .value
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Reaps whatever exited; returns the main child's status if it was among them.
    fn reap(&self) -> Option<crate::lifecycle::ChildStatus> {
        let mut main = None;
        for (pid, status) in child::reap_exited() {
            if pid == self.pid {
                main = Some(status);
            } else {
                info!(
                    steward_reaped_pid = pid.as_raw(),
                    "reaped orphaned descendant pid {pid} ({})",
                    status.describe()
                );
            }
        }
        main
    }

    fn kill_tree(&self, reason: KillReason, machine: &Lifecycle, probe_error: &str) {
        let now = Instant::now();
        let elapsed_ms = machine
            .stop_elapsed(now)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let killed = child::kill_tree(self.pid);
        let pid = self.pid.as_raw();
        match reason {
            KillReason::Deadline => warn!(
                steward_phase = "killing",
                steward_escalation = "deadline",
                steward_child_pid = pid,
                steward_signal = "SIGKILL",
                steward_deadline_ms = self.deadline_ms(),
                steward_deadline_source = self.deadline.source_tag(),
                steward_elapsed_ms = elapsed_ms,
                steward_in_flight = machine.in_flight().unwrap_or(0) as u64,
                steward_killed = killed as u64,
                "stop deadline reached after {elapsed_ms} ms: SIGKILL to child pid {pid}'s process tree ({killed} processes), {} in flight were cut; {}",
                machine.in_flight().map(|n| format!("{n} requests")).unwrap_or_else(|| "whatever was".into()),
                self.deadline.describe()
            ),
            KillReason::Drained => info!(
                steward_phase = "stopping",
                steward_escalation = "drained",
                steward_child_pid = pid,
                steward_signal = "SIGKILL",
                steward_elapsed_ms = elapsed_ms,
                steward_killed = killed as u64,
                "child pid {pid} drained after {elapsed_ms} ms (no connection left for {}); ended it instead of waiting out its grace period",
                fmt_duration(self.config.stop.drain_quiet)
            ),
            KillReason::StartTimeout => error!(
                steward_phase = "killing",
                steward_escalation = "start-timeout",
                steward_child_pid = pid,
                steward_signal = "SIGKILL",
                steward_killed = killed as u64,
                "child pid {pid} did not serve within ready.timeout {} (last probe: {probe_error}); killed its process tree",
                fmt_duration(self.config.ready.timeout)
            ),
            KillReason::Operator => warn!(
                steward_phase = "killing",
                steward_escalation = "operator",
                steward_child_pid = pid,
                steward_signal = "SIGKILL",
                steward_elapsed_ms = elapsed_ms,
                steward_killed = killed as u64,
                "second SIGINT after {elapsed_ms} ms: SIGKILL to child pid {pid}'s process tree"
            ),
        }
    }

    /// Kills and reaps whatever the child left behind, then reports the outcome.
    fn finish(&self, code: i32, machine: &Lifecycle) -> i32 {
        let leftovers = child::kill_tree(self.pid);
        let reaped = child::reap_all(FINAL_REAP);
        if leftovers > 0 {
            warn!(
                steward_killed = leftovers as u64,
                "killed {leftovers} processes the child left behind"
            );
        }
        let elapsed_ms = machine
            .stop_elapsed(Instant::now())
            .map(|d| d.as_millis() as u64);
        let how = match machine.kill_reason() {
            Some(r) => r.as_str(),
            None if machine.stop_signal().is_some() => "exited",
            None => "exited-on-its-own",
        };
        info!(
            steward_phase = "exited",
            steward_child_pid = self.pid.as_raw(),
            steward_exit_code = code,
            steward_stop = how,
            steward_elapsed_ms = elapsed_ms.unwrap_or(0),
            steward_reaped = reaped.len() as u64,
            "steward exits with code {code}{}",
            elapsed_ms
                .map(|ms| format!(" {ms} ms after the stop began ({how})"))
                .unwrap_or_default()
        );
        code
    }
}

/// Probes until the child serves, from a port the child itself listens on.
async fn wait_ready(
    probe: Probe,
    interval: Duration,
    pgid: i32,
    last_error: std::rc::Rc<std::cell::RefCell<String>>,
) {
    let mut warned = false;
    loop {
        match probe::attempt(&probe).await {
            Ok(()) => {
                let ports = procfs::listening_ports(pgid);
                match probe.port() {
                    Some(port) if !ports.is_empty() && !ports.contains(&port) => {
                        let msg = format!(
                            "port {port} answers, but child pid {pgid} does not listen on it (it listens on {ports:?}); is another process holding it?"
                        );
                        if !warned {
                            warn!("{msg}");
                            warned = true;
                        }
                        *last_error.borrow_mut() = msg;
                    }
                    _ => return,
                }
            }
            Err(e) => *last_error.borrow_mut() = e,
        }
        tokio::time::sleep(interval).await;
    }
}

async fn poll_opt(f: &mut Option<ProbeFuture>) {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(i: &mut Option<Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
