//! Everything the driver does to the world, behind one small trait.
//!
//! The driver (`run`) decides nothing; it turns the machine's actions into
//! calls on [`Effects`] and the world's answers into events. Work that takes time
//! (a kill, a drain count, reading a reload's configuration, a generation's side work)
//! is started here and answers later as a [`Done`] on the channel the driver listens
//! to. [`System`] is the real world: processes, cgroups, the I/O worker, the runtime
//! directory, sd_notify. The driver's tests put a fake child behind the same trait, as
//! watchexec's supervisor tests its job task.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::cgroup::Cgroups;
use crate::config::Config;
use crate::generation::{self, Handoff, Progress, Work};
use crate::lifecycle::{ChildStatus, Event, GenId, KillReason, Why};
use crate::limits::ChildNofile;
use crate::notify::Notifier;
use crate::pingora_conf::{EFFECTIVE_CONF, UPGRADE_SOCK};
use crate::reload_check::{self, CheckRun};
use crate::runtime_dir::RuntimeDir;
use crate::sockets::Sockets;
use crate::startup::{child_nofile, log_nofile};
use crate::tcp::{self, DrainCount, Snapshot};
use crate::worker::{Worker, WorkerError};
use crate::{child, container, deadline::Deadline, exit, inherit, probe};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// How long a kill may take on the I/O worker: its loops are bounded well below this.
pub const KILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Work finished off the loop, reported back to the driver.
#[derive(Debug)]
pub enum Done {
    /// An event for the lifecycle.
    Event(Event),
    /// A generation's side work made progress ([`crate::generation`]).
    Gen(GenId, Progress),
    /// The snapshot taken right before a generation's SIGTERM (sent by the worker).
    Terminated { gen: GenId, snap: Snapshot },
    /// A drain poll's counts.
    Drained(Vec<(GenId, DrainCount)>),
    /// A kill is over: how many processes it ended.
    Killed(Kill, Result<usize, WorkerError>),
    /// A reload's configuration was read and its effective Pingora conf written.
    CheckPrepared(reload_check::Prepared),
}

/// A kill steward carries out, and what its log line will say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub gen: GenId,
    pub pid: i32,
    /// None: a start that went wrong, already reported.
    pub reason: Option<KillReason>,
    pub elapsed_ms: u64,
    pub in_flight: Option<usize>,
}

impl Kill {
    /// A generation whose start went wrong (already reported).
    pub fn rejected(gen: GenId, pid: Pid) -> Kill {
        Kill {
            gen,
            pid: pid.as_raw(),
            reason: None,
            elapsed_ms: 0,
            in_flight: None,
        }
    }

    /// The machine's kill of a generation's tree, `drained_for` after its drain began.
    pub fn tree(
        gen: GenId,
        pid: Pid,
        reason: KillReason,
        drained_for: Option<std::time::Duration>,
        in_flight: Option<usize>,
    ) -> Kill {
        Kill {
            gen,
            pid: pid.as_raw(),
            reason: Some(reason),
            elapsed_ms: drained_for.map_or(0, |d| d.as_millis() as u64),
            in_flight,
        }
    }
}

/// A generation's child runs; its side work, if any, ends when this is dropped.
pub struct Spawned {
    pub pid: Pid,
    pub work: Option<Work>,
}

/// A generation whose process could not be started at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotStarted {
    pub reason: String,
    pub code: i32,
}

/// What systemd hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice<'a> {
    Ready(&'a str),
    Reloading(&'a str),
    Stopping(&'a str),
    Status(&'a str),
    Watchdog,
}

/// Which Pingora conf a generation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conf {
    /// The one the running configuration wrote.
    Effective,
    /// The one a reload's check wrote.
    Next,
}

pub trait Effects {
    /// Starts generation `gen`'s child on `cfg`; its side work answers as [`Done::Gen`].
    fn spawn(
        &mut self,
        gen: GenId,
        why: Why,
        cfg: &Config,
        conf: Conf,
    ) -> Result<Spawned, NotStarted>;
    /// SIGTERM to a generation's child. `snapshot_first`: what it serves is not known yet,
    /// so it is read before the SIGTERM closes its listeners ([`Done::Terminated`]).
    fn terminate(&mut self, gen: GenId, pid: Pid, cfg: &Config, snapshot_first: bool);
    /// SIGKILL to a process tree; answers [`Done::Killed`].
    fn kill(&mut self, kill: Kill);
    /// Collects every child that exited (a reload's check run answers by itself).
    fn reap(&mut self) -> Vec<(Pid, ChildStatus)>;
    /// A generation's child exited: what it left behind goes.
    fn forget(&mut self, gen: GenId);
    /// Counts requests in flight of draining generations; answers [`Done::Drained`].
    fn count_drain(&mut self, targets: Vec<(GenId, i32, Snapshot)>);
    fn notify(&mut self, notice: Notice<'_>);
    /// Reads a reload's configuration and writes its Pingora conf; answers
    /// [`Done::CheckPrepared`].
    fn prepare_check(&mut self, cfg: &Config);
    /// Runs the child with `-t` on the prepared conf; its exit answers
    /// [`Event::ConfigChecked`].
    fn run_check(&mut self, cfg: &Config, conf: &Path) -> Result<(), String>;
    /// Ends a check run that took too long; answers [`Event::ConfigChecked`] with why.
    fn abandon_check(&mut self, cfg: &Config);
    /// One health probe of the serving child.
    fn health_probe(&mut self, cfg: &Config, pid: u32) -> BoxFuture<Result<(), String>>;
    /// Passes a signal the child should have to it.
    fn forward(&mut self, sig: Signal, pid: Option<u32>);
    /// Closes steward's copies of the listeners.
    fn close_sockets(&mut self);
    /// A reload succeeded: its Pingora conf is the effective one from now on.
    fn install_next_conf(&mut self);
    /// Before steward exits: kills and reaps whatever is left; how many were killed and
    /// how many reaped.
    fn final_cleanup(&mut self) -> BoxFuture<(usize, usize)>;
}

/// The real world.
pub struct System {
    pub worker: Worker,
    pub done: mpsc::UnboundedSender<Done>,
    pub notifier: Notifier,
    pub dir: RuntimeDir,
    pub sockets: Sockets,
    pub cgroups: Cgroups,
    pub deadline: Deadline,
    /// The child open-file limit last logged: a spawn logs it again only when it differs.
    pub nofile: ChildNofile,
    pub check: Option<CheckRun>,
}

impl System {
    fn not_started(reason: String, code: i32) -> NotStarted {
        NotStarted { reason, code }
    }

    fn extra_ports(&self, cfg: &Config) -> Vec<u16> {
        self.sockets
            .ports()
            .into_iter()
            .chain(cfg.ready.probe.port())
            .collect()
    }
}

impl Effects for System {
    fn spawn(
        &mut self,
        gen: GenId,
        why: Why,
        cfg: &Config,
        conf: Conf,
    ) -> Result<Spawned, NotStarted> {
        let conf = match conf {
            Conf::Effective => self.dir.join(EFFECTIVE_CONF),
            Conf::Next => self.dir.join(reload_check::NEXT_CONF),
        };
        // A socket file left by a child that died mid-bootstrap would refuse the hand-off;
        // an entry of another user is not steward's to remove.
        self.dir
            .clear_stale(UPGRADE_SOCK, false)
            .map_err(|e| Self::not_started(e.to_string(), exit::CANTCREAT))?;
        // Decided again at each spawn: a reload may have changed child.nofile, and the
        // hard limit is steward's, which `prlimit` can lower while it runs.
        let nofile = child_nofile(cfg).map_err(|r| Self::not_started(r, exit::CONFIG))?;
        if nofile != self.nofile {
            log_nofile(cfg, &nofile);
            self.nofile = nofile;
        }
        let listeners = inherit::Plan::new(
            cfg.child.handoff,
            &self.sockets.keys(),
            &self.sockets.raw_fds(),
        )
        .map_err(|e| Self::not_started(e.to_string(), exit::CONFIG))?;
        let upgrade = matches!(listeners, inherit::Plan::Upgrade);
        let cgroup = self.cgroups.prepare_generation(gen).unwrap_or_else(|e| {
            warn!(
                steward_generation = gen,
                "cannot create generation {gen}'s cgroup: {e}; its kill reaches its process group and descendants only"
            );
            None
        });
        let spawned = child::spawn(
            &cfg.child,
            &conf,
            child::SpawnMode::Serve {
                listeners: listeners.listeners(),
            },
            cgroup.as_ref().map(|c| c.procs_fd()),
            nofile.apply.then_some(nofile.limit),
        );
        if let (Some(c), Ok(pid)) = (&cgroup, &spawned) {
            let (cgroups, dir, pid) = (self.cgroups.clone(), c.dir.clone(), pid.as_raw());
            self.worker.send(move |io| {
                if !cgroups.holds(io, gen, pid) {
                    warn!(
                        steward_generation = gen,
                        "child pid {pid} did not enter {}; its kill reaches its process group and descendants only",
                        dir.display()
                    );
                }
            });
        }
        drop(cgroup);
        // steward's end of the report pipe closes here, so the report ends with the child's.
        let inherited = listeners.into_report();
        let pid = spawned.map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => exit::CONFIG,
                _ => exit::OSERR,
            };
            Self::not_started(
                format!(
                    "cannot start {}: {e} (fix: child.command in {})",
                    cfg.child.program.display(),
                    cfg.path.display()
                ),
                code,
            )
        })?;
        let command_line = std::iter::once(cfg.child.program.display().to_string())
            .chain(cfg.child.args.iter().cloned())
            .chain(upgrade.then(|| "-u".to_string()))
            .chain(["-c".into(), conf.display().to_string()])
            .collect::<Vec<_>>()
            .join(" ");
        info!(
            steward_phase = "starting",
            steward_generation = gen,
            steward_child_pid = pid.as_raw(),
            "started child pid {pid}: {command_line}; generation {gen} ({}); waiting until it serves ({})",
            why.as_str(),
            cfg.ready.probe.describe()
        );
        let handoff = upgrade.then(|| Handoff {
            path: self.dir.reach(UPGRADE_SOCK),
            shown: self.dir.join(UPGRADE_SOCK),
            keys: self.sockets.keys(),
            fds: self.sockets.raw_fds(),
        });
        let plan = generation::Plan {
            gen,
            pid,
            handoff,
            probe: cfg.ready.probe.clone(),
            interval: cfg.ready.interval,
            listeners: self.sockets.inodes(),
            extra_ports: self.extra_ports(cfg),
            inherited,
        };
        let done = self.done.clone();
        let work = generation::start(plan, self.worker.clone(), move |gen, p| {
            let _ = done.send(Done::Gen(gen, p));
        });
        Ok(Spawned {
            pid,
            work: Some(work),
        })
    }

    fn terminate(&mut self, gen: GenId, pid: Pid, cfg: &Config, snapshot_first: bool) {
        if !snapshot_first {
            if let Err(e) = child::signal(pid, Signal::SIGTERM) {
                warn!(error = %e, "cannot send SIGTERM to child pid {pid}");
            }
            return;
        }
        let extra = self.extra_ports(cfg);
        let done = self.done.clone();
        self.worker.send(move |io| {
            let snap = tcp::snapshot(io, pid.as_raw(), &extra);
            if let Err(e) = child::signal(pid, Signal::SIGTERM) {
                warn!(error = %e, "cannot send SIGTERM to child pid {pid}");
            }
            let _ = done.send(Done::Terminated { gen, snap });
        });
    }

    fn kill(&mut self, kill: Kill) {
        let (gen, pid) = (kill.gen, Pid::from_raw(kill.pid));
        let cgroups = self.cgroups.clone();
        let (worker, done) = (self.worker.clone(), self.done.clone());
        tokio::task::spawn_local(async move {
            let result = worker
                .call(KILL_TIMEOUT, move |io| {
                    let in_cgroup = if gen > 0 {
                        cgroups.kill_generation(io, gen).unwrap_or(0)
                    } else {
                        0
                    };
                    in_cgroup + child::kill_tree(io, pid)
                })
                .await;
            let _ = done.send(Done::Killed(kill, result));
        });
    }

    fn reap(&mut self) -> Vec<(Pid, ChildStatus)> {
        let mut exited = vec![];
        for (pid, status) in child::reap_exited() {
            match self.check.take_if(|c| c.pid == pid) {
                Some(check) => {
                    let done = self.done.clone();
                    check.finished(status, &self.worker, move |r| {
                        let _ = done.send(Done::Event(Event::ConfigChecked(r)));
                    })
                }
                None => exited.push((pid, status)),
            }
        }
        exited
    }

    fn forget(&mut self, gen: GenId) {
        // Whatever the generation left in its cgroup has lost its reason to run.
        let cgroups = self.cgroups.clone();
        self.worker.send(move |io| {
            tcp::forget(io, gen);
            if let Some(n) = cgroups.kill_generation(io, gen).filter(|&n| n > 0) {
                warn!(
                    steward_generation = gen,
                    steward_killed = n as u64,
                    "generation {gen}'s child exited and left {n} processes in its cgroup; killed them"
                );
            }
            cgroups.remove_generation(gen);
        });
    }

    fn count_drain(&mut self, targets: Vec<(GenId, i32, Snapshot)>) {
        let (worker, done) = (self.worker.clone(), self.done.clone());
        tokio::task::spawn_local(async move {
            let counts = worker
                .call(generation::FACTS_TIMEOUT, move |io| {
                    targets
                        .into_iter()
                        .filter_map(|(gen, pid, snap)| {
                            tcp::drain(io, gen, pid, &snap).map(|c| (gen, c))
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_else(|e| {
                    warn!("drain count: {e}");
                    vec![]
                });
            let _ = done.send(Done::Drained(counts));
        });
    }

    fn notify(&mut self, notice: Notice<'_>) {
        match notice {
            Notice::Ready(s) => self.notifier.ready(s),
            Notice::Reloading(s) => self.notifier.reloading(s),
            Notice::Stopping(s) => self.notifier.stopping(s),
            Notice::Status(s) => self.notifier.status(s),
            Notice::Watchdog => self.notifier.watchdog(),
        }
    }

    fn prepare_check(&mut self, cfg: &Config) {
        let done = self.done.clone();
        reload_check::prepare(cfg, &self.deadline, &self.dir, &self.worker, move |r| {
            let _ = done.send(Done::CheckPrepared(r));
        });
    }

    fn run_check(&mut self, cfg: &Config, conf: &Path) -> Result<(), String> {
        self.check = Some(CheckRun::start(cfg, conf, &self.dir)?);
        Ok(())
    }

    fn abandon_check(&mut self, cfg: &Config) {
        let Some(c) = self.check.take() else {
            return;
        };
        self.kill(Kill {
            gen: 0,
            pid: c.pid.as_raw(),
            reason: None,
            elapsed_ms: 0,
            in_flight: None,
        });
        let _ = self.done.send(Done::Event(Event::ConfigChecked(Err(
            reload_check::timed_out(cfg),
        ))));
    }

    fn health_probe(&mut self, cfg: &Config, pid: u32) -> BoxFuture<Result<(), String>> {
        let probe = cfg.ready.probe.clone();
        let timeout = cfg.health.timeout;
        let worker = self.worker.clone();
        Box::pin(async move { probe::attempt_owned(&probe, pid as i32, timeout, &worker).await })
    }

    fn forward(&mut self, sig: Signal, pid: Option<u32>) {
        container::forward(sig, pid);
    }

    fn close_sockets(&mut self) {
        if !self.sockets.is_empty() {
            info!("closing steward's copies of the listeners");
            self.sockets.close();
        }
    }

    fn install_next_conf(&mut self) {
        if let Err(e) = self.dir.rename(reload_check::NEXT_CONF, EFFECTIVE_CONF) {
            warn!("cannot install the reloaded Pingora conf as {EFFECTIVE_CONF}: {e}; a later restart would use the previous one");
        }
    }

    fn final_cleanup(&mut self) -> BoxFuture<(usize, usize)> {
        let check = self.check.take().map(|c| c.pid);
        let cgroups = self.cgroups.clone();
        let worker = self.worker.clone();
        let dir = self.dir.clone();
        Box::pin(async move {
            let leftovers = worker
                .call(KILL_TIMEOUT, move |io| {
                    if let Some(pid) = check {
                        child::kill_tree(io, pid);
                    }
                    cgroups.kill_all_but_self(io) + child::kill_descendants(io)
                })
                .await
                .unwrap_or_else(|e| {
                    warn!("killing what the children left: {e}");
                    0
                });
            let reaped = child::reap_all(crate::deadline::FINAL_REAP).await;
            let _ = dir.remove(crate::control::SOCKET_NAME);
            (leftovers, reaped.len())
        })
    }
}
