//! Start-up as a pipeline: from a loaded configuration to the [`Plan`] the driver runs.
//!
//! Each step is a plain function of what the steps before it produced, and each either
//! gives its result or stops the start with a sysexits code, logged and put in `STATUS=`
//! ([`Stop`]). Read top to bottom, [`prepare`] is the order of the start:
//!
//! 1. [`process`]: the I/O worker, the socket-facts source, signal handlers, the
//!    inherited descriptors and the container checks (steward's own process first).
//! 2. [`platform`]: what systemd (or the environment) says: the unit's stop timeout and
//!    properties.
//! 3. [`stop_deadline`]: the deadline from the configuration and that timeout.
//! 4. [`checks`]: the child's open-file limit and the same findings as `steward check`;
//!    an error stops the start here, with the line to fix.
//! 5. [`runtime`]: the private runtime directory, the control socket claimed first, then
//!    the effective Pingora conf.
//! 6. [`listeners`]: the sockets every generation is handed.
//! 7. [`early_signals`]: the signals that arrived meanwhile, for the machine to decide.
//! 8. [`containment`]: the subreaper flag and the generations' cgroups.
//!
//! A successor of a re-exec ([`crate::reexec`]) runs the same pipeline with the
//! predecessor's [`Handover`]: the control socket and the listeners are adopted instead of
//! bound, and the effective Pingora conf the running generation uses is kept. Its early
//! signals go to the adopted machine, which is serving (a stop drains the generation).
//!
//! The configuration itself is read before this (`steward run` exits 78 on an error
//! there, with the line), and the driver ([`super::run`]) takes the plan from here.

use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::cgroup::Cgroups;
use crate::config::{fmt_duration, Config, ConfigError, DrainMode};
use crate::control::{self, Request};
use crate::deadline::{self, Deadline, Outer};
use crate::handover::Handover;
use crate::lifecycle::Policy;
use crate::limits::{self, ChildNofile, NofileSetting};
use crate::notify::{self, Notifier};
use crate::pingora_conf::{EFFECTIVE_CONF, UPGRADE_SOCK};
use crate::runtime_dir::RuntimeDir;
use crate::signals::{Received, Signals};
use crate::sockets::{Origin, Sockets};
use crate::unit::UnitProps;
use crate::worker::Worker;
use crate::{check, child, container, exit, files, pingora_conf, runtime_dir, systemd};

/// How long a read of a configuration file may take on the I/O worker. Files are
/// regular and capped ([`files`]), so only a stuck disk makes one late.
pub const FILE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many distinct signals steward handles: at most this many are pending at once.
const HANDLED_SIGNALS: usize = 8;

/// Why the start ended before the driver: the exit code, already logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop(pub i32);

/// Everything the driver starts from.
pub struct Plan {
    pub worker: Worker,
    /// Socket facts from netlink sock_diag (else /proc/net/tcp).
    pub netlink: bool,
    pub notifier: Notifier,
    pub signals: Signals,
    pub deadline: Deadline,
    pub nofile: ChildNofile,
    pub dir: RuntimeDir,
    /// The control socket's requests, and its file, removed when this is dropped.
    pub control: mpsc::Receiver<Request>,
    pub control_file: RemoveOnDrop,
    /// The control socket's listening descriptor, for a re-exec's hand-over.
    pub control_fd: std::os::fd::RawFd,
    pub sockets: Sockets,
    /// Signals that arrived during start-up, for the machine to decide.
    pub early: Vec<Received>,
    pub cgroups: Cgroups,
    pub watchdog: Option<Duration>,
    pub policy: Policy,
}

/// Runs the pipeline; `Err` carries steward's exit code.
/// With `adopted`, the start of a re-exec's successor.
pub async fn prepare(config: &Config, adopted: Option<&Handover>) -> Result<Plan, Stop> {
    let Process {
        worker,
        netlink,
        notifier,
        mut signals,
    } = process().await?;
    let fail = |code: i32, status: String| {
        notifier.status(&status);
        Stop(code)
    };
    let Platform { outer, unit } = platform().await;
    let deadline = stop_deadline(config, &outer).map_err(|msg| fail(exit::CONFIG, msg))?;
    let unit = unit.as_ref();
    let nofile = checks(config, unit.ok()).map_err(|msg| fail(exit::CONFIG, msg))?;
    let Runtime {
        dir,
        control,
        control_file,
        control_fd,
    } = runtime(config, &worker, &deadline, adopted)
        .await
        .map_err(|(code, msg)| fail(code, msg))?;
    let store = fd_store(config, unit.ok()).then_some(&notifier);
    let sockets = match adopted {
        Some(h) => adopted_listeners(h, store),
        None => listeners(config, store).map_err(|msg| fail(exit::OSERR, msg))?,
    };
    let early = early_signals(&mut signals).await;
    let cgroups = containment(&worker, &outer, unit).await?;
    let watchdog = notify::watchdog_interval();
    if let Some(w) = watchdog {
        info!(
            "systemd watchdog every {}: WATCHDOG=1 only while the child passes its probe",
            fmt_duration(w)
        );
    }
    Ok(Plan {
        worker,
        netlink,
        notifier,
        signals,
        policy: policy(config, &deadline),
        deadline,
        nofile,
        dir,
        control,
        control_file,
        control_fd,
        sockets,
        early,
        cgroups,
        watchdog,
    })
}

struct Process {
    worker: Worker,
    netlink: bool,
    notifier: Notifier,
    signals: Signals,
}

/// steward's own process, before anything of the configuration is used.
async fn process() -> Result<Process, Stop> {
    // The I/O worker first, while threads can still be created: a child that fills the
    // unit's pids limit must not leave steward without it.
    let worker = Worker::start().map_err(|e| {
        error!(error = %e, "cannot start steward's I/O worker thread");
        Stop(exit::OSERR)
    })?;
    let netlink = match worker.call(FILE_TIMEOUT, |io| io.source()).await {
        Ok(source) => {
            info!(
                steward_sockets = source,
                "socket facts from {}",
                match source {
                    "netlink" => "netlink sock_diag (filtered by the kernel)",
                    _ => "/proc/net/tcp (netlink refused)",
                }
            );
            source == "netlink"
        }
        Err(_) => false,
    };
    let inherited = child::close_inherited_on_exec();
    if inherited > 0 {
        tracing::debug!("{inherited} inherited descriptors marked close-on-exec");
    }
    let notifier = Notifier::from_env();
    let signals = Signals::install().map_err(|e| {
        error!(error = %e, "cannot install signal handlers");
        Stop(exit::OSERR)
    })?;
    container::startup().map_err(Stop)?;
    Ok(Process {
        worker,
        netlink,
        notifier,
        signals,
    })
}

struct Platform {
    outer: Outer,
    /// The unit's properties, for the start-up check, the fd store and `Delegate=`; `Err`
    /// says why there are none (outside systemd, or systemd did not answer: the check then
    /// goes without them).
    unit: Result<UnitProps, String>,
}

/// What the service manager says about the unit steward runs in.
async fn platform() -> Platform {
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
    let unit = match systemd::under_systemd() {
        true => systemd::own_unit().await.inspect_err(|e| {
            tracing::debug!(error = %e, "unit properties unavailable");
        }),
        false => Err("not a systemd service".to_string()),
    };
    Platform { outer, unit }
}

/// The stop deadline, logged with where it came from; `Err`: the configuration error.
fn stop_deadline(config: &Config, outer: &Outer) -> Result<Deadline, String> {
    // `auto` takes STEWARD_STOP_TIMEOUT when set (a container has no systemd to ask).
    let deadline = deadline::at_start(&config.stop, outer).map_err(|e| {
        let msg = e.explain(&config.path);
        error!(steward_phase = "config", "configuration error: {msg}");
        format!("configuration error: {msg}")
    })?;
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
    Ok(deadline)
}

/// The child's open-file limit (a number above the hard limit refused), then the same
/// rules as `steward check` (README "steward check"): an error stops the start now, with
/// the line to fix, instead of later and less clearly.
fn checks(config: &Config, unit: Option<&UnitProps>) -> Result<ChildNofile, String> {
    let nofile = child_nofile(config).inspect_err(|msg| {
        error!(steward_phase = "config", "{msg}");
    })?;
    // Logged once here, and again only when a reload changes it.
    log_nofile(config, &nofile);
    if check::at_startup(config, unit) {
        return Err("configuration error: see the log (steward check)".into());
    }
    Ok(nofile)
}

struct Runtime {
    dir: RuntimeDir,
    control: mpsc::Receiver<Request>,
    control_file: RemoveOnDrop,
    control_fd: std::os::fd::RawFd,
}

/// The runtime directory with the control socket claimed and the effective Pingora conf
/// written; `Err`: the exit code and the `STATUS=` text.
async fn runtime(
    config: &Config,
    worker: &Worker,
    deadline: &Deadline,
    adopted: Option<&Handover>,
) -> Result<Runtime, (i32, String)> {
    let failed = |e: &dyn std::fmt::Display| {
        error!(steward_phase = "config", "{e}");
        (exit::CANTCREAT, format!("failed: {e}"))
    };
    let dir = RuntimeDir::open(&runtime_dir::choose(config.runtime_dir.as_deref()))
        .map_err(|e| failed(&e))?;
    // The control socket is claimed before anything else is written: a second steward on
    // the same directory must stop here, before it overwrites the first one's conf.
    let (control_tx, control) = mpsc::channel(16);
    let listener = match adopted {
        Some(h) => {
            // SAFETY: the predecessor named this descriptor as its control socket, and
            // Handover::decode checked it is an open socket named once.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(h.control_fd) };
            let listener = control::adopt(fd).map_err(|e| failed(&e))?;
            info!(
                "control socket {} (kept from the previous steward binary)",
                dir.join(control::SOCKET_NAME).display()
            );
            listener
        }
        None => {
            let (listener, path) = control::bind(&dir).map_err(|e| failed(&e))?;
            info!("control socket {}", path.display());
            listener
        }
    };
    let control_fd = listener.as_raw_fd();
    tokio::task::spawn_local(control::serve(listener, control_tx));
    let control_file = RemoveOnDrop(dir.clone(), control::SOCKET_NAME);
    // The running generation was started on the effective conf there; a reload writes
    // the next one.
    if adopted.is_some() {
        return Ok(Runtime {
            dir,
            control,
            control_file,
            control_fd,
        });
    }
    // The socket is the child's to create; whatever a dead child or someone else left
    // there would refuse the hand-off.
    match dir.clear_stale(UPGRADE_SOCK, false) {
        Ok(Some(entry)) => info!(
            "replaced a stale {} at {}",
            entry.describe(),
            dir.join(UPGRADE_SOCK).display()
        ),
        Ok(None) => {}
        Err(e) => return Err(failed(&e)),
    }
    write_effective(worker, config, deadline, &dir, EFFECTIVE_CONF)
        .await
        .map_err(|(code, msg)| {
            error!(steward_phase = "config", "{msg}");
            (code, format!("failed: {msg}"))
        })?;
    Ok(Runtime {
        dir,
        control,
        control_file,
        control_fd,
    })
}

/// Whether the listeners go into systemd's fd store, so they outlive a crash of steward:
/// only where the unit leaves room for all of them (systemd would drop the rest).
fn fd_store(config: &Config, unit: Option<&UnitProps>) -> bool {
    let (Some(u), n) = (unit, config.sockets.len() as u64) else {
        return false;
    };
    let max = u.fd_store_max.value;
    match max {
        _ if n == 0 => false,
        0 => {
            info!("listeners not kept in systemd's fd store (FileDescriptorStoreMax=0): a crash of steward closes them until systemd restarts it");
            false
        }
        m if m < n => {
            warn!("FileDescriptorStoreMax={m} holds fewer than the {n} listeners of sockets.listen: none is stored, and a crash of steward closes them until systemd restarts it; raise it to at least {n}");
            false
        }
        _ => true,
    }
}

/// The listeners of `sockets.listen`: steward's own back from systemd's fd store, a
/// socket unit's, or bound now (and stored, with `store`).
fn listeners(config: &Config, store: Option<&Notifier>) -> Result<Sockets, String> {
    let (sockets, origins) = Sockets::open(&config.sockets, store).map_err(|e| {
        error!(steward_phase = "starting", "cannot open {e}");
        format!("failed: cannot open {e}")
    })?;
    for (addr, origin) in origins {
        info!(
            "listener {addr} {}; handed to every generation",
            match origin {
                Origin::Bound if store.is_some() => "bound by steward, kept in systemd's fd store",
                Origin::Bound => "bound by steward",
                Origin::Activated => "taken from systemd socket activation",
                Origin::Stored => "taken back from systemd's fd store, still open since an earlier steward of this unit",
            }
        );
    }
    Ok(sockets)
}

/// The listeners a predecessor handed over, as it had them.
fn adopted_listeners(h: &Handover, store: Option<&Notifier>) -> Sockets {
    let entries = h
        .listeners
        .iter()
        .map(|l| {
            // SAFETY: the predecessor named this descriptor as listener `key`, and
            // Handover::decode checked it is an open socket named once.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(l.fd) };
            info!(
                "listener {} kept from the previous steward binary; handed to every generation",
                l.key
            );
            (l.key.clone(), fd, l.port)
        })
        .collect();
    Sockets::adopt(entries, store)
}

/// The signals that arrived during start-up, in order, for the machine to decide
/// (`Lifecycle` is still preparing: a stop ends steward before any child, a SIGHUP
/// becomes one reload once generation 1 serves).
async fn early_signals(signals: &mut Signals) -> Vec<Received> {
    let mut early = vec![];
    for _ in 0..HANDLED_SIGNALS {
        match signals.pending().await {
            Some(sig) => early.push(sig),
            None => break,
        }
    }
    early
}

/// What keeps every process a generation starts within steward's reach: the subreaper
/// flag, and a cgroup per generation where the unit delegates (`Delegate=`, from the
/// unit's properties [`platform`] read).
async fn containment(
    worker: &Worker,
    outer: &Outer,
    unit: Result<&UnitProps, &String>,
) -> Result<Cgroups, Stop> {
    if let Err(e) = child::become_subreaper() {
        warn!(error = %e, "cannot become child subreaper; orphaned grandchildren would escape");
    }
    let (unit_name, delegated) = match outer {
        Outer::Systemd(u) => {
            let delegated = unit.map(|p| p.delegate.value).unwrap_or_else(|e| {
                warn!("cannot ask whether unit {} has Delegate=yes: {e}", u.unit);
                false
            });
            (Some(u.unit.clone()), delegated)
        }
        _ => (None, false),
    };
    let cgroups = worker
        .call(FILE_TIMEOUT, move |io| {
            Cgroups::setup(io, unit_name.as_deref(), delegated)
        })
        .await
        .map_err(|e| {
            error!("cannot set up cgroups: {e}");
            Stop(exit::OSERR)
        })?;
    info!(
        steward_cgroup = cgroups.tag(),
        "kills: {}",
        cgroups.describe()
    );
    Ok(cgroups)
}

/// The lifecycle's numbers from the configuration and the resolved deadline.
pub fn policy(config: &Config, deadline: &Deadline) -> Policy {
    Policy {
        deadline: deadline.value,
        start_timeout: config.ready.timeout,
        drain_quiet: match config.stop.drain {
            DrainMode::Connections => Some(config.stop.drain_quiet),
            DrainMode::Exit => None,
        },
        max_crashes: config.restart.max_crashes,
        crash_window: config.restart.window,
        backoff_min: config.restart.backoff_min,
        backoff_max: config.restart.backoff_max,
        stable_after: config.restart.stable_after,
        health_failures: config.health.failures,
        self_ending: config.child.handoff == crate::config::Handoff::Inherit,
    }
}

/// steward's control socket file, removed on every way out of `run`, so an early exit
/// leaves nothing a later start would have to judge.
pub struct RemoveOnDrop(RuntimeDir, &'static str);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = self.0.remove(self.1);
    }
}

/// Reads the operator's Pingora YAML (on the I/O worker: a FIFO or a huge file at that
/// path is an error naming it, never a hang) and writes the effective copy as `name`; on
/// failure the exit code and the one-line reason. At start and at each reload.
pub async fn write_effective(
    worker: &Worker,
    config: &Config,
    deadline: &Deadline,
    dir: &RuntimeDir,
    name: &str,
) -> Result<PathBuf, (i32, String)> {
    let text = match &config.child.pingora_conf {
        Some(p) => {
            let path = p.clone();
            let read = worker
                .call(FILE_TIMEOUT, move |_| {
                    files::read_text(&path, files::CONFIG_MAX).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            Some(read.map_err(|e| {
                (
                    exit::CONFIG,
                    format!(
                        "{}: cannot read the Pingora conf: {e} (fix: child.pingora_conf in {})",
                        p.display(),
                        config.path.display()
                    ),
                )
            })?)
        }
        None => None,
    };
    let source = config.child.pingora_conf.as_deref().zip(text.as_deref());
    let eff = pingora_conf::effective(source, deadline.value, &dir.join(UPGRADE_SOCK))
        .map_err(|e| (exit::CONFIG, format!("configuration error: {e}")))?;
    for change in &eff.changes {
        warn!(steward_phase = "config", "effective Pingora conf: {change}");
    }
    let path = dir
        .write_file(name, &eff.yaml)
        .map_err(|e| (exit::CANTCREAT, e.to_string()))?;
    info!(
        "effective Pingora conf {} (grace_period_seconds {}, graceful_shutdown_timeout_seconds {})",
        path.display(),
        eff.grace,
        eff.shutdown_timeout
    );
    Ok(path)
}

/// The child's open-file limit for `config`, or the configuration error that names the
/// file and the fix (a number above steward's hard limit). At start, at a reload's check
/// and at each spawn.
pub fn child_nofile(config: &Config) -> Result<ChildNofile, String> {
    limits::for_child(config.child.nofile).map_err(|e| {
        format!(
            "configuration error: {}",
            ConfigError::new(&config.path, e.to_string()).with_fix(e.fix())
        )
    })
}

/// The child's open-file limit, as an operator sizing the unit's `LimitNOFILE=` needs it.
pub fn log_nofile(config: &Config, n: &ChildNofile) {
    info!(
        steward_child_nofile = n.limit.soft,
        "child open-file limit {} (soft; hard {}){}",
        n.limit.soft,
        n.limit.hard,
        match (config.child.nofile, n.apply) {
            (NofileSetting::Inherit, _) => " inherited from steward (child.nofile = \"inherit\")",
            (_, false) => " as steward's own",
            (NofileSetting::Max, true) => ", raised to the hard limit (child.nofile = \"max\")",
            (NofileSetting::Soft(_), true) => " from child.nofile",
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::load_unit_file;

    fn config(listeners: usize) -> Config {
        let listen: Vec<String> = (0..listeners)
            .map(|i| format!("\"127.0.0.1:{}\"", 16000 + i))
            .collect();
        Config::parse(
            std::path::Path::new("/nonexistent/steward.toml"),
            &format!(
                "[child]\ncommand = [\"/bin/echo\"]\n[ready]\ntcp = \"127.0.0.1:16000\"\n[sockets]\nlisten = [{}]\n",
                listen.join(", ")
            ),
        )
        .expect("config")
    }

    fn unit(extra: &str) -> UnitProps {
        let dir = std::env::temp_dir().join(format!("steward-startup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        // One file per call: the tests run at once.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("u{n}.service"));
        std::fs::write(&path, format!("[Service]\nType=notify\n{extra}")).expect("unit");
        let u = load_unit_file(&path, &[]).expect("unit loads");
        let _ = std::fs::remove_file(&path);
        u
    }

    #[test]
    fn listeners_are_stored_where_the_unit_has_room_for_all_of_them() {
        assert!(fd_store(
            &config(2),
            Some(&unit("FileDescriptorStoreMax=2\n"))
        ));
    }

    #[test]
    fn nothing_is_stored_without_room_for_every_listener() {
        assert!(!fd_store(
            &config(3),
            Some(&unit("FileDescriptorStoreMax=2\n"))
        ));
        assert!(!fd_store(&config(1), Some(&unit(""))));
    }

    #[test]
    fn nothing_is_stored_outside_systemd_or_without_listeners() {
        assert!(!fd_store(&config(1), None));
        assert!(!fd_store(
            &config(0),
            Some(&unit("FileDescriptorStoreMax=2\n"))
        ));
    }
}
