//! `steward run`: the thin driver around [`crate::lifecycle`].
//!
//! It owns everything the state machine must not touch: child processes, the listening
//! sockets, signals, probes, the drain poll, the control socket, timers, sd_notify and the
//! log. One loop waits on all of them at once and feeds what happened to the machine as an
//! [`Event`]; the machine's [`Action`]s come back and are carried out here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant as StdInstant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval};
use tracing::{error, info, warn};

use crate::cgroup::Cgroups;
use crate::config::{fmt_duration, Config, DrainMode};
use crate::control::{
    self, Command, GenStatus, HealthStats, Reply, Request, Status, TimelineEntry,
};
use crate::deadline::{Deadline, FINAL_REAP};
use crate::lifecycle::{
    Action, ChildStatus, Event, GenId, KillReason, Lifecycle, Mode, StopSignal, Why, CHECK_TIMEOUT,
};
use crate::limits::ChildNofile;
use crate::notify::Notifier;
use crate::pingora_conf::{EFFECTIVE_CONF, UPGRADE_SOCK};
use crate::runtime_dir::RuntimeDir;
use crate::signals::{Received, Signals};
use crate::sockets::Sockets;
use crate::startup::{self, child_nofile, log_nofile, write_effective, Stop, FILE_TIMEOUT};
use crate::tcp::{self, DrainCount, Snapshot};
use crate::worker::{Worker, WorkerError};
use crate::{child, container, exit, files, probe, procfs, render, upgrade};

/// Names in the runtime directory, beside [`EFFECTIVE_CONF`] and [`UPGRADE_SOCK`].
const NEXT_CONF: &str = "pingora.next.yaml";
const CHECK_OUTPUT: &str = "check.log";
/// How long a child may take to open its upgrade socket (Pingora itself gives up after ~6 s).
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(8);
/// One readiness attempt; short, so a connection the old generation took costs little.
const READY_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// How many timeline entries `steward status` keeps.
const TIMELINE_MAX: usize = 64;
/// How long one look at a generation's sockets may take on the I/O worker.
const FACTS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a kill may take on the I/O worker: its loops are bounded well below this.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a `-t` run's output steward reads: its last lines say why it failed.
const CHECK_OUTPUT_TAIL: u64 = 64 * 1024;
/// The slowest drain poll where netlink is refused: each poll then reads the whole
/// `/proc/net/tcp`, whose cost grows with every socket of the host.
const PROCFS_DRAIN_POLL: Duration = Duration::from_millis(100);
/// The longest line of `-t` output steward repeats in a log line or a reply.
const CHECK_LINE_MAX: usize = 512;

/// Runs the supervisor until the last child is gone; returns steward's exit code.
pub async fn run(config: Config) -> i32 {
    let local = tokio::task::LocalSet::new();
    local.run_until(run_inner(config)).await
}

async fn run_inner(config: Config) -> i32 {
    let plan = match startup::prepare(&config).await {
        Ok(plan) => plan,
        Err(Stop(code)) => return code,
    };
    let (machine, first) = Lifecycle::start(plan.policy, Instant::now());
    let mut queue = VecDeque::new();
    if plan.reload_first {
        queue.push_back(Event::Reload { waiter: None });
    }
    let _control_file = plan.control_file;
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut driver = Driver {
        worker: plan.worker,
        done: done_tx,
        kills_pending: 0,
        reap_due: false,
        netlink: plan.netlink,
        config,
        next_config: None,
        notifier: plan.notifier,
        deadline: plan.deadline,
        dir: plan.dir,
        sockets: plan.sockets,
        machine,
        gens: HashMap::new(),
        started: StdInstant::now(),
        handoff: None,
        probe: None,
        health_probe: None,
        health: HealthStats::default(),
        check: None,
        drain_poll: None,
        drain_counting: false,
        waiters: HashMap::new(),
        next_waiter: 1,
        timeline: VecDeque::new(),
        timeline_origin: None,
        last_event: None,
        watchdog: plan.watchdog,
        cgroups: plan.cgroups,
        queue,
        nofile: plan.nofile,
    };
    driver
        .run_loop(plan.signals, plan.control, done_rx, first)
        .await
}

/// What the driver knows about a running generation.
struct GenRt {
    pid: Pid,
    /// What it serves (ports, listeners), taken once it serves or before its SIGTERM:
    /// its requests in flight are its downstream connections on these ports.
    snap: Option<Snapshot>,
}

/// A `child -t` run checking a reload's configuration.
struct CheckRun {
    pid: Pid,
    /// The run's stdout and stderr, created by steward in its runtime directory: the
    /// tail is read back through this descriptor, not by path.
    output: std::fs::File,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Work finished off the loop (on the I/O worker, or in a task awaiting it), reported
/// back to the loop.
enum Done {
    /// An event for the lifecycle.
    Event(Event),
    /// The generation passed its probe: the sockets its group holds, and what it serves.
    Probed {
        gen: GenId,
        held: HashSet<u64>,
        snap: Snapshot,
    },
    /// The snapshot taken right before a generation's SIGTERM (sent by the worker).
    Terminated { gen: GenId, snap: Snapshot },
    /// A drain poll's counts.
    Drained(Vec<(GenId, DrainCount)>),
    /// A kill is over.
    Killed(Kill, Result<usize, WorkerError>),
    /// A reload's configuration was read and its effective Pingora conf written.
    CheckPrepared(Result<(Box<Config>, PathBuf), String>),
}

/// A kill steward carried out, and what its log line says.
#[derive(Clone, Copy)]
struct Kill {
    gen: GenId,
    pid: i32,
    /// None: a start that went wrong, already reported.
    reason: Option<KillReason>,
    elapsed_ms: u64,
    in_flight: Option<usize>,
}

struct Driver {
    worker: Worker,
    /// Where work finished off the loop reports back.
    done: mpsc::UnboundedSender<Done>,
    /// Kills still running on the worker. Reaps wait for them, so a kill's log line
    /// (with how many processes it ended) comes before the exit it caused.
    kills_pending: usize,
    reap_due: bool,
    /// Whether socket facts come from netlink (cheap) or /proc/net/tcp (not).
    netlink: bool,
    config: Config,
    /// The configuration a reload is checking; adopted when its generation spawns.
    next_config: Option<Config>,
    notifier: Notifier,
    deadline: Deadline,
    dir: RuntimeDir,
    sockets: Sockets,
    machine: Lifecycle,
    gens: HashMap<GenId, GenRt>,
    started: StdInstant,
    handoff: Option<(GenId, BoxFuture<Result<(), upgrade::HandoffError>>)>,
    probe: Option<(GenId, BoxFuture<()>)>,
    health_probe: Option<BoxFuture<Result<(), String>>>,
    health: HealthStats,
    check: Option<CheckRun>,
    drain_poll: Option<Interval>,
    /// Whether a drain count is running on the worker.
    drain_counting: bool,
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
    next_waiter: u64,
    timeline: VecDeque<(Instant, String)>,
    timeline_origin: Option<Instant>,
    last_event: Option<String>,
    watchdog: Option<Duration>,
    cgroups: Cgroups,
    /// Events produced while carrying out actions, fed back before waiting again.
    queue: VecDeque<Event>,
    /// The child open-file limit last logged: a spawn logs it again only when it differs.
    nofile: ChildNofile,
}

impl Driver {
    async fn run_loop(
        &mut self,
        mut signals: Signals,
        mut control: mpsc::Receiver<Request>,
        mut done: mpsc::UnboundedReceiver<Done>,
        first: Vec<Action>,
    ) -> i32 {
        if let Some(code) = self.carry_out(first) {
            return self.finish(code, &mut done).await;
        }
        let mut health_tick = self.health_interval().map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            while let Some(ev) = self.queue.pop_front() {
                let actions = self.machine.handle(ev, Instant::now());
                if let Some(code) = self.carry_out(actions) {
                    return self.finish(code, &mut done).await;
                }
            }
            let wake = self.machine.next_wakeup();
            let event = tokio::select! {
                sig = signals.next() => match sig {
                    Received::Term => Event::Stop(StopSignal::Term),
                    Received::Int => Event::Stop(StopSignal::Int),
                    Received::Hup => {
                        info!(steward_signal = "SIGHUP", "SIGHUP: reload requested");
                        Event::Reload { waiter: None }
                    }
                    Received::Child => {
                        if self.kills_pending > 0 {
                            self.reap_due = true;
                        } else {
                            self.reap();
                        }
                        continue;
                    }
                    Received::Forward(sig) => {
                        container::forward(sig, self.machine.current().and_then(|g| g.pid));
                        continue;
                    }
                },
                r = poll_opt(&mut self.handoff) => {
                    let (gen, result) = r;
                    self.handoff = None;
                    match result {
                        Ok(()) => {
                            info!(steward_generation = gen, "generation {gen}: listeners handed over ({})", self.sockets.keys().join(" "));
                            continue;
                        }
                        Err(e) => self.spawn_failed(gen, format!("socket hand-off failed: {e}"), exit::CONFIG),
                    }
                }
                (gen, ()) = poll_opt(&mut self.probe) => {
                    self.probe = None;
                    self.after_probe(gen);
                    continue;
                }
                Some(d) = done.recv() => match self.finished(d) {
                    Some(ev) => ev,
                    None => continue,
                },
                r = poll_opt_val(&mut self.health_probe) => {
                    self.health_probe = None;
                    let ok = r.is_ok();
                    match r {
                        Ok(()) => self.health.passed += 1,
                        Err(e) => {
                            warn!(steward_phase = "serving", "health probe: {e}");
                            self.health.failed += 1;
                            self.health.last_failure = Some(e);
                        }
                    }
                    Event::Health { ok }
                }
                _ = tick_opt(&mut self.drain_poll) => {
                    self.poll_drain();
                    continue;
                }
                _ = tick_opt(&mut health_tick) => {
                    self.start_health_probe();
                    continue;
                }
                req = control.recv() => match req {
                    Some(req) => match self.control_request(req) {
                        Some(ev) => ev,
                        None => continue,
                    },
                    None => continue,
                },
                _ = sleep_opt(wake) => Event::Tick,
            };
            self.queue.push_back(event);
        }
    }

    /// A generation passed its probe: before it counts as serving, the worker checks it
    /// holds every listener steward handed over and takes its snapshot.
    fn after_probe(&mut self, gen: GenId) {
        let Some(rt) = self.gens.get(&gen) else {
            return;
        };
        let pid = rt.pid.as_raw();
        let extra = self.extra_ports();
        let (worker, done) = (self.worker.clone(), self.done.clone());
        tokio::task::spawn_local(async move {
            let facts = worker
                .call(FACTS_TIMEOUT, move |io| {
                    (
                        procfs::group_socket_inodes(io, pid),
                        tcp::snapshot(io, pid, &extra),
                    )
                })
                .await;
            let d = match facts {
                Ok((held, snap)) => Done::Probed { gen, held, snap },
                Err(e) => Done::Event(Event::SpawnFailed {
                    gen,
                    reason: format!("cannot read generation {gen}'s sockets: {e}"),
                    code: exit::OSERR,
                }),
            };
            let _ = done.send(d);
        });
    }

    /// What work finished off the loop means; an event for the machine, if any.
    fn finished(&mut self, d: Done) -> Option<Event> {
        match d {
            Done::Event(Event::SpawnFailed { gen, reason, code })
                if self.gens.contains_key(&gen) =>
            {
                Some(self.spawn_failed(gen, reason, code))
            }
            Done::Event(Event::SpawnFailed { .. }) => None,
            Done::Event(ev) => Some(ev),
            Done::Probed { gen, held, snap } => {
                let rt = self.gens.get_mut(&gen)?;
                rt.snap.get_or_insert(snap);
                match self.unclaimed_listeners(&held) {
                    None => Some(Event::Ready { gen }),
                    Some(msg) => Some(self.spawn_failed(gen, msg, exit::CONFIG)),
                }
            }
            Done::Terminated { gen, snap } => {
                if let Some(rt) = self.gens.get_mut(&gen) {
                    rt.snap.get_or_insert(snap);
                }
                None
            }
            Done::Drained(counts) => {
                self.drain_counting = false;
                for (gen, count) in counts {
                    // A generation that exited meanwhile has nothing left to count.
                    if self.gens.contains_key(&gen) {
                        self.queue.push_back(Event::Drain {
                            gen,
                            in_flight: count.in_flight,
                            closed: count.closed,
                        });
                    }
                }
                None
            }
            Done::Killed(kill, result) => {
                self.kills_pending = self.kills_pending.saturating_sub(1);
                self.log_kill(&kill, result);
                if self.kills_pending == 0 && std::mem::take(&mut self.reap_due) {
                    self.reap();
                }
                None
            }
            Done::CheckPrepared(Err(msg)) => Some(Event::ConfigChecked(Err(msg))),
            Done::CheckPrepared(Ok((new, conf))) => {
                self.run_check(*new, conf);
                None
            }
        }
    }

    /// Counts the draining generations' requests in flight, on the worker; one count at
    /// a time.
    fn poll_drain(&mut self) {
        let draining: Vec<GenId> = self.machine.draining().collect();
        if draining.is_empty() {
            self.drain_poll = None;
            return;
        }
        if self.drain_counting {
            return;
        }
        // A generation whose snapshot is still on its way is counted at the next tick.
        let targets: Vec<(GenId, i32, Snapshot)> = draining
            .iter()
            .filter_map(|g| {
                let rt = self.gens.get(g)?;
                Some((*g, rt.pid.as_raw(), rt.snap.clone()?))
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        self.drain_counting = true;
        let (worker, done) = (self.worker.clone(), self.done.clone());
        tokio::task::spawn_local(async move {
            let counts = worker
                .call(FACTS_TIMEOUT, move |io| {
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

    /// SIGKILLs a generation's tree on the worker (its cgroup, its process group, its
    /// descendants, until none is left); the log line follows when it is done.
    fn start_kill(&mut self, kill: Kill) {
        let gen = kill.gen;
        let pid = Pid::from_raw(kill.pid);
        let cgroups = self.cgroups.clone();
        let (worker, done) = (self.worker.clone(), self.done.clone());
        self.kills_pending += 1;
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

    fn program_name(&self) -> String {
        self.config.child.program.display().to_string()
    }

    fn health_interval(&self) -> Option<Duration> {
        let base = self.config.health.interval;
        match self.watchdog {
            Some(w) => Some(base.min(w / 2)),
            None if self.config.health.failures > 0 => Some(base),
            None => None,
        }
    }

    fn start_health_probe(&mut self) {
        if self.health_probe.is_some() {
            return;
        }
        let serving = matches!(self.machine.mode(), Mode::Serving | Mode::Reloading);
        let current = self.machine.current().and_then(|g| g.pid);
        match (serving, current) {
            (true, Some(pid)) => {
                let probe = self.config.ready.probe.clone();
                let timeout = self.config.health.timeout;
                let worker = self.worker.clone();
                self.health_probe = Some(Box::pin(async move {
                    probe::attempt_owned(&probe, pid as i32, timeout, &worker).await
                }));
            }
            // Not serving: the machine keeps the watchdog fed while it makes progress.
            _ => self.queue.push_back(Event::Health { ok: true }),
        }
    }

    fn control_request(&mut self, req: Request) -> Option<Event> {
        match req.command {
            Command::Status => {
                let _ = req.reply.send(Reply {
                    ok: true,
                    error: None,
                    message: None,
                    status: Some(self.status()),
                });
                None
            }
            Command::Reload => {
                let id = self.next_waiter;
                self.next_waiter += 1;
                self.waiters.insert(id, req.reply);
                info!("reload requested on the control socket");
                Some(Event::Reload { waiter: Some(id) })
            }
            Command::Restart => {
                let id = self.next_waiter;
                self.next_waiter += 1;
                self.waiters.insert(id, req.reply);
                info!("restart requested on the control socket");
                Some(Event::Restart { waiter: Some(id) })
            }
        }
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let current = self.machine.current();
        let origin = self.timeline_origin.unwrap_or(now);
        Status {
            state: self.machine.mode().as_str().to_string(),
            pid: std::process::id(),
            generation: current.map(|g| g.id).unwrap_or(0),
            child_pid: current.and_then(|g| g.pid),
            uptime_s: self.started.elapsed().as_secs_f64(),
            child_uptime_s: current
                .and_then(|g| g.serving_since)
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            restarts: self.machine.restarts(),
            // The drain's last count, not a fresh one: status answers from memory, and
            // the sockets are read only on the I/O worker.
            in_flight: self
                .machine
                .gens()
                .filter_map(|g| g.in_flight)
                .reduce(|a, b| a + b),
            generations: self
                .machine
                .gens()
                .map(|g| GenStatus {
                    generation: g.id,
                    pid: g.pid,
                    state: format!("{:?}", g.state).to_lowercase(),
                    in_flight: g.in_flight,
                })
                .collect(),
            deadline: self.deadline.describe(),
            last_event: self.last_event.clone(),
            health: self.health.clone(),
            timeline: self
                .timeline
                .iter()
                .map(|(t, e)| TimelineEntry {
                    at_ms: t.saturating_duration_since(origin).as_millis() as u64,
                    event: e.clone(),
                })
                .collect(),
        }
    }

    /// Starts a new timeline (a reload or a stop) for `steward status`.
    fn timeline_begin(&mut self) {
        self.timeline.clear();
        self.timeline_origin = Some(Instant::now());
    }

    fn record(&mut self, text: &str) {
        self.last_event = Some(text.to_string());
        if self.timeline_origin.is_some() {
            if self.timeline.len() >= TIMELINE_MAX {
                self.timeline.pop_front();
            }
            self.timeline.push_back((Instant::now(), text.to_string()));
        }
    }

    /// Reaps whatever exited and turns it into events.
    fn reap(&mut self) {
        let mut orphans = vec![];
        for (pid, status) in child::reap_exited() {
            if self.check.as_ref().is_some_and(|c| c.pid == pid) {
                let Some(check) = self.check.take() else {
                    continue;
                };
                if status == ChildStatus::Code(0) {
                    self.queue.push_back(Event::ConfigChecked(Ok(())));
                    continue;
                }
                // Why it failed is at the end of its output, which may be huge: only the
                // tail is read, on the worker.
                let program = self.program_name();
                let (worker, done) = (self.worker.clone(), self.done.clone());
                tokio::task::spawn_local(async move {
                    let output = worker
                        .call(FILE_TIMEOUT, move |_| {
                            files::read_tail_of(check.output, CHECK_OUTPUT_TAIL)
                                .unwrap_or_else(|e| format!("(its output: {e})"))
                        })
                        .await
                        .unwrap_or_else(|e| format!("(its output: {e})"));
                    let _ = done.send(Done::Event(Event::ConfigChecked(Err(format!(
                        "`{program} -t` failed ({}): {}",
                        status.describe(),
                        last_lines(&output, 3)
                    )))));
                });
                continue;
            }
            match self
                .gens
                .iter()
                .find(|(_, rt)| rt.pid == pid)
                .map(|(g, _)| *g)
            {
                Some(gen) => {
                    self.gens.remove(&gen);
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
                    self.drop_probe(gen);
                    if self.handoff.as_ref().is_some_and(|(g, _)| *g == gen) {
                        self.handoff = None;
                    }
                    self.queue.push_back(Event::Exited { gen, status });
                }
                None => orphans.push((pid, status)),
            }
        }
        // Debug, not info: as a container's PID 1 every orphan of the namespace lands
        // here. One record per batch: a killed fork bomb leaves hundreds at once.
        match &orphans[..] {
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

    /// Drops the generation's readiness probe: one that exited, drains, is killed or
    /// failed to start must never be reported ready.
    fn drop_probe(&mut self, gen: GenId) {
        if self.probe.as_ref().is_some_and(|(g, _)| *g == gen) {
            self.probe = None;
        }
    }

    /// Kills a generation whose start went wrong and reports it.
    fn spawn_failed(&mut self, gen: GenId, reason: String, code: i32) -> Event {
        if let Some(rt) = self.gens.remove(&gen) {
            self.start_kill(Kill {
                gen,
                pid: rt.pid.as_raw(),
                reason: None,
                elapsed_ms: 0,
                in_flight: None,
            });
        }
        self.drop_probe(gen);
        error!(steward_generation = gen, "generation {gen}: {reason}");
        Event::SpawnFailed { gen, reason, code }
    }

    /// After a generation passed its probe: every listener steward handed over must be
    /// held by it, or a key did not match its own listener addresses.
    fn unclaimed_listeners(&self, held: &HashSet<u64>) -> Option<String> {
        let missing: Vec<String> = self
            .sockets
            .inodes()
            .into_iter()
            .filter(|(_, ino)| !held.contains(ino))
            .map(|(k, _)| k)
            .collect();
        if missing.is_empty() {
            None
        } else {
            Some(format!(
                "the child did not claim listener(s) {} handed over by steward: sockets.listen entries must match the child's own listener addresses byte for byte (fix: sockets.listen in {})",
                missing.join(", "),
                self.config.path.display()
            ))
        }
    }

    /// Carries out the machine's actions; `Some(code)` when steward must exit.
    fn carry_out(&mut self, actions: Vec<Action>) -> Option<i32> {
        for action in actions {
            match action {
                Action::CheckConfig => self.check_config(),
                Action::AbandonCheck => self.abandon_check(),
                Action::Spawn { gen, why } => self.spawn(gen, why),
                Action::NotifyReady(status) => {
                    let status = status.to_string();
                    let gen = self.machine.current();
                    let (id, pid, since) = gen
                        .map(|g| (g.id, g.pid.unwrap_or(0), g.spawned))
                        .unwrap_or((0, 0, Instant::now()));
                    let ms = Instant::now().saturating_duration_since(since).as_millis() as u64;
                    info!(
                        steward_phase = "serving",
                        steward_generation = id,
                        steward_child_pid = pid,
                        steward_elapsed_ms = ms,
                        "{status} ({} passed {ms} ms after spawn); READY=1",
                        self.config.ready.probe.describe()
                    );
                    self.record(&status);
                    self.notifier.ready(&status);
                }
                Action::NotifyReloading(status) => {
                    let status = status.to_string();
                    self.timeline_begin();
                    info!(steward_phase = "reloading", "{status}; RELOADING=1");
                    self.record(&status);
                    self.notifier.reloading(&status);
                }
                Action::NotifyStopping(status) => {
                    let status = status.to_string();
                    self.timeline_begin();
                    let pid = self.machine.current().and_then(|g| g.pid).unwrap_or(0);
                    info!(
                        steward_phase = "stopping",
                        steward_child_pid = pid,
                        steward_signal = self
                            .machine
                            .stop_signal()
                            .map(StopSignal::as_str)
                            .unwrap_or(""),
                        steward_deadline_ms = self.deadline_ms(),
                        steward_deadline_source = self.deadline.source_tag(),
                        "{status}; STOPPING=1; {}",
                        self.deadline.describe()
                    );
                    self.record(&status);
                    self.notifier.stopping(&status);
                }
                Action::Status(status) => {
                    let status = status.to_string();
                    let pid = self.machine.current().and_then(|g| g.pid).unwrap_or(0);
                    info!(
                        steward_phase = self.machine.mode().as_str(),
                        steward_child_pid = pid,
                        "{status}"
                    );
                    self.record(&status);
                    self.notifier.status(&status);
                }
                Action::Terminate { gen } => self.terminate(gen),
                Action::KillTree { gen, reason } => self.kill_tree(gen, reason),
                Action::CloseSockets => {
                    if !self.sockets.is_empty() {
                        info!("closing steward's copies of the listeners");
                        self.sockets.close();
                    }
                }
                Action::ReloadFinished { waiters, result } => {
                    match &result {
                        Ok(gen) => info!(
                            steward_phase = "serving",
                            steward_generation = *gen,
                            "reload done: generation {gen} serves"
                        ),
                        Err(e) => warn!(steward_phase = "serving", "reload failed: {e}"),
                    }
                    let reply = Reply::from(render::reload_reply(&result));
                    self.record(&match &result {
                        Ok(gen) => format!("reload done: generation {gen}"),
                        Err(e) => format!("reload failed: {e}"),
                    });
                    for w in waiters {
                        if let Some(tx) = self.waiters.remove(&w) {
                            let _ = tx.send(reply.clone());
                        }
                    }
                    if let Some(new) = self.next_config.take().filter(|_| result.is_ok()) {
                        if let Err(e) = self.dir.rename(NEXT_CONF, EFFECTIVE_CONF) {
                            warn!("cannot install the reloaded Pingora conf as {EFFECTIVE_CONF}: {e}; a later restart would use the previous one");
                        }
                        self.config = new;
                    }
                }
                Action::RestartAnswered { waiter, result } => {
                    let reply = Reply::from(render::restart_reply(result));
                    if let Some(tx) = self.waiters.remove(&waiter) {
                        let _ = tx.send(reply);
                    }
                }
                Action::WatchdogPing => {
                    if self.watchdog.is_some() {
                        self.notifier.watchdog();
                    }
                }
                Action::Note(text) => {
                    let text = text.to_string();
                    info!(steward_phase = self.machine.mode().as_str(), "{text}");
                    self.record(&text);
                }
                Action::Warn(text) => {
                    let text = text.to_string();
                    warn!(steward_phase = self.machine.mode().as_str(), "{text}");
                    self.record(&text);
                }
                Action::Exit(code) => return Some(code),
            }
        }
        None
    }

    fn deadline_ms(&self) -> u64 {
        self.deadline
            .value
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Re-reads the configuration and writes the candidate's effective Pingora conf, off
    /// the loop (the files are the operator's: one may be a FIFO, or huge); then
    /// [`Self::run_check`] runs the child with `-t` on it.
    fn check_config(&mut self) {
        let path = self.config.path.clone();
        let sockets = self.config.sockets.clone();
        let (deadline, dir) = (self.deadline.clone(), self.dir.clone());
        let (worker, done) = (self.worker.clone(), self.done.clone());
        tokio::task::spawn_local(async move {
            let prepared = async {
                let new = worker
                    .call(FILE_TIMEOUT, move |_| {
                        Config::load(&path).map_err(|e| format!("configuration error: {e}"))
                    })
                    .await
                    .map_err(|e| format!("configuration error: {e}"))??;
                // A reload that asks for more than the hard limit fails here, with the
                // running generation untouched, rather than at its spawn.
                child_nofile(&new)?;
                if new.sockets != sockets {
                    return Err("sockets.listen changed; a reload keeps the listeners: restart steward to change them".to_string());
                }
                let conf = write_effective(&worker, &new, &deadline, &dir, NEXT_CONF)
                    .await
                    .map_err(|(_, msg)| msg)?;
                Ok((Box::new(new), conf))
            };
            let _ = done.send(Done::CheckPrepared(prepared.await));
        });
    }

    /// The machine's check timer ran out: the `-t` run is killed and the reload fails.
    /// Reading the configuration before it is bounded by the worker's timeouts, well
    /// within the check's time; a run already over has its answer on the way.
    fn abandon_check(&mut self) {
        let Some(c) = self.check.take() else {
            return;
        };
        self.start_kill(Kill {
            gen: 0,
            pid: c.pid.as_raw(),
            reason: None,
            elapsed_ms: 0,
            in_flight: None,
        });
        self.queue.push_back(Event::ConfigChecked(Err(format!(
            "`{} -t` did not finish within {} s",
            self.program_name(),
            CHECK_TIMEOUT.as_secs()
        ))));
    }

    /// Runs the child with `-t` on a reload's prepared configuration.
    fn run_check(&mut self, new: Config, conf: PathBuf) {
        // A stop may have ended the reload while the files were read.
        if self.machine.mode() != Mode::Reloading {
            return;
        }
        let spawned = self
            .dir
            .create_private(CHECK_OUTPUT)
            .map_err(|e| e.to_string())
            .and_then(|output| {
                // The `-t` run only reads its configuration: steward's own limits do.
                let pid = child::spawn(
                    &new.child,
                    &conf,
                    child::SpawnMode::Test { output: &output },
                    None,
                    None,
                )
                .map_err(|e| format!("cannot run {} -t: {e}", new.child.program.display()))?;
                Ok((pid, output))
            });
        match spawned {
            Ok((pid, output)) => {
                info!(
                    steward_phase = "reloading",
                    "checking the new configuration: {} -t (pid {pid})",
                    new.child.program.display()
                );
                self.check = Some(CheckRun { pid, output });
                self.next_config = Some(new);
            }
            Err(e) => self.queue.push_back(Event::ConfigChecked(Err(e))),
        }
    }

    /// A generation whose process could not be started at all: logged, and told to the
    /// machine (there is nothing to kill, unlike [`Self::spawn_failed`]).
    fn not_started(&mut self, gen: GenId, reason: String, code: i32) {
        error!(
            steward_phase = "starting",
            steward_generation = gen,
            "{reason}"
        );
        self.queue
            .push_back(Event::SpawnFailed { gen, reason, code });
    }

    fn spawn(&mut self, gen: GenId, why: Why) {
        // A reload's generation runs the checked candidate; it is adopted only once that
        // generation serves, so a crash restart after a failed reload uses the last good one.
        let (cfg, conf) = match (why, &self.next_config) {
            (Why::Reload, Some(next)) => (next.clone(), self.dir.join(NEXT_CONF)),
            _ => (self.config.clone(), self.dir.join(EFFECTIVE_CONF)),
        };
        let (upgrade_sock, upgrade_shown) =
            (self.dir.reach(UPGRADE_SOCK), self.dir.join(UPGRADE_SOCK));
        // A socket file left by a child that died mid-bootstrap would refuse the hand-off;
        // an entry of another user is not steward's to remove.
        if let Err(e) = self.dir.clear_stale(UPGRADE_SOCK, false) {
            return self.not_started(gen, e.to_string(), exit::CANTCREAT);
        }
        // Decided again at each spawn: a reload may have changed child.nofile, and the
        // hard limit is steward's, which `prlimit` can lower while it runs.
        let nofile = match child_nofile(&cfg) {
            Ok(n) => n,
            Err(reason) => return self.not_started(gen, reason, exit::CONFIG),
        };
        if nofile != self.nofile {
            log_nofile(&cfg, &nofile);
            self.nofile = nofile;
        }
        let upgrade = !self.sockets.is_empty();
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
            child::SpawnMode::Serve { upgrade },
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
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        exit::CONFIG
                    }
                    _ => exit::OSERR,
                };
                let msg = format!(
                    "cannot start {}: {e} (fix: child.command in {})",
                    cfg.child.program.display(),
                    cfg.path.display()
                );
                return self.not_started(gen, msg, code);
            }
        };
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
        self.gens.insert(gen, GenRt { pid, snap: None });
        if upgrade {
            let keys = self.sockets.keys();
            let fds = self.sockets.raw_fds();
            self.handoff = Some((
                gen,
                Box::pin(async move {
                    upgrade::hand_off(
                        &upgrade_sock,
                        &upgrade_shown,
                        &keys,
                        &fds,
                        pid,
                        HANDOFF_TIMEOUT,
                    )
                    .await
                }),
            ));
        }
        let probe = cfg.ready.probe.clone();
        let interval = cfg.ready.interval;
        let worker = self.worker.clone();
        self.probe = Some((
            gen,
            Box::pin(async move { wait_ready(probe, interval, pid.as_raw(), &worker).await }),
        ));
        self.queue.push_back(Event::Spawned {
            gen,
            pid: pid.as_raw() as u32,
        });
    }

    /// Ports steward knows are the generation's: its own listeners and the probe's.
    fn extra_ports(&self) -> Vec<u16> {
        self.sockets
            .ports()
            .into_iter()
            .chain(self.config.ready.probe.port())
            .collect()
    }

    fn terminate(&mut self, gen: GenId) {
        let Some(rt) = self.gens.get(&gen) else {
            return;
        };
        let pid = rt.pid;
        match rt.snap {
            Some(_) => {
                if let Err(e) = child::signal(pid, Signal::SIGTERM) {
                    warn!(error = %e, "cannot send SIGTERM to child pid {pid}");
                }
            }
            // Stopped before it served: what it serves must be known before SIGTERM closes
            // its listeners, so the worker takes the snapshot and then sends the SIGTERM.
            None => {
                let extra = self.extra_ports();
                let done = self.done.clone();
                self.worker.send(move |io| {
                    let snap = tcp::snapshot(io, pid.as_raw(), &extra);
                    if let Err(e) = child::signal(pid, Signal::SIGTERM) {
                        warn!(error = %e, "cannot send SIGTERM to child pid {pid}");
                    }
                    let _ = done.send(Done::Terminated { gen, snap });
                });
            }
        }
        info!(
            steward_generation = gen,
            steward_child_pid = pid.as_raw(),
            "SIGTERM to generation {gen} (child pid {pid}): draining"
        );
        if self.config.stop.drain == DrainMode::Connections && self.drain_poll.is_none() {
            let every = match self.netlink {
                true => self.config.stop.drain_poll,
                false => self.config.stop.drain_poll.max(PROCFS_DRAIN_POLL),
            };
            let mut i = tokio::time::interval(every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            self.drain_poll = Some(i);
        }
        self.drop_probe(gen);
    }

    fn kill_tree(&mut self, gen: GenId, reason: KillReason) {
        let Some(rt) = self.gens.get(&gen) else {
            return;
        };
        let pid = rt.pid.as_raw();
        self.drop_probe(gen);
        let now = Instant::now();
        let g = self.machine.gen(gen);
        let elapsed_ms = g
            .and_then(|g| g.drain_began)
            .map(|t| now.saturating_duration_since(t).as_millis() as u64)
            .unwrap_or(0);
        let in_flight = g.and_then(|g| g.in_flight);
        self.start_kill(Kill {
            gen,
            pid,
            reason: Some(reason),
            elapsed_ms,
            in_flight,
        });
    }

    /// The log line of a finished kill.
    fn log_kill(&self, kill: &Kill, result: Result<usize, WorkerError>) {
        let Kill {
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
        match reason {
            KillReason::Deadline => warn!(
                steward_phase = "killing",
                steward_escalation = "deadline",
                steward_generation = gen,
                steward_child_pid = pid,
                steward_signal = "SIGKILL",
                steward_deadline_ms = self.deadline_ms(),
                steward_deadline_source = self.deadline.source_tag(),
                steward_elapsed_ms = elapsed_ms,
                steward_in_flight = in_flight.unwrap_or(0) as u64,
                steward_killed = killed as u64,
                "stop deadline reached after {elapsed_ms} ms: SIGKILL to child pid {pid}'s process tree ({killed} processes), {} in flight were cut; {}",
                in_flight.map(|n| format!("{n} requests")).unwrap_or_else(|| "whatever was".into()),
                self.deadline.describe()
            ),
            KillReason::Drained => info!(
                steward_phase = self.machine.mode().as_str(),
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
                steward_escalation = "start-timeout",
                steward_generation = gen,
                steward_child_pid = pid,
                steward_signal = "SIGKILL",
                steward_killed = killed as u64,
                "child pid {pid} did not serve within ready.timeout {}; killed its process tree",
                fmt_duration(self.config.ready.timeout)
            ),
            KillReason::Operator => warn!(
                steward_phase = "killing",
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
                steward_escalation = "unhealthy",
                steward_generation = gen,
                steward_child_pid = pid,
                steward_signal = "SIGKILL",
                steward_killed = killed as u64,
                "child pid {pid} failed {} health probes in a row; killed its process tree to replace it (listeners kept)",
                self.config.health.failures
            ),
        }
    }

    /// Kills and reaps whatever is left, then reports the outcome.
    async fn finish(&mut self, code: i32, done: &mut mpsc::UnboundedReceiver<Done>) -> i32 {
        // Kills still running log their lines first.
        let end = Instant::now() + KILL_TIMEOUT;
        while self.kills_pending > 0 {
            match tokio::time::timeout_at(end, done.recv()).await {
                Ok(Some(Done::Killed(kill, result))) => {
                    self.kills_pending -= 1;
                    self.log_kill(&kill, result);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let check = self.check.take().map(|c| c.pid);
        let cgroups = self.cgroups.clone();
        let leftovers = self
            .worker
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
        let reaped = child::reap_all(FINAL_REAP).await;
        if leftovers > 0 {
            warn!(
                steward_killed = leftovers as u64,
                "killed {leftovers} processes the children left behind"
            );
        }
        for (_, tx) in self.waiters.drain() {
            let _ = tx.send(Reply::err("steward exited"));
        }
        let elapsed_ms = self
            .machine
            .stop_elapsed(Instant::now())
            .map(|d| d.as_millis() as u64);
        let how = match self.machine.stop_signal() {
            Some(_) => "stopped",
            None => "child-exited",
        };
        info!(
            steward_phase = "exited",
            steward_exit_code = code,
            steward_stop = how,
            steward_elapsed_ms = elapsed_ms.unwrap_or(0),
            steward_reaped = reaped.len() as u64,
            "steward exits with code {code}{}",
            elapsed_ms
                .map(|ms| format!(" {ms} ms after the stop began"))
                .unwrap_or_default()
        );
        let _ = self.dir.remove(control::SOCKET_NAME);
        code
    }
}

/// Probes until the generation serves on a connection its own processes accepted.
async fn wait_ready(probe: crate::config::Probe, interval: Duration, pgid: i32, worker: &Worker) {
    let mut last = String::new();
    loop {
        match probe::attempt_owned(&probe, pgid, READY_ATTEMPT_TIMEOUT, worker).await {
            Ok(()) => return,
            Err(e) => {
                if e != last {
                    tracing::debug!("readiness probe: {e}");
                    last = e;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn poll_opt<T>(f: &mut Option<(GenId, BoxFuture<T>)>) -> (GenId, T) {
    match f {
        Some((gen, fut)) => {
            let v = fut.await;
            (*gen, v)
        }
        None => std::future::pending().await,
    }
}

/// The last `n` non-empty lines of a child's output, each cut to [`CHECK_LINE_MAX`]
/// characters, joined with " | ".
fn last_lines(output: &str, n: usize) -> String {
    let mut tail: Vec<String> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(n)
        .map(|l| match l.char_indices().nth(CHECK_LINE_MAX) {
            Some((at, _)) => format!("{}...", &l[..at]),
            None => l.to_string(),
        })
        .collect();
    tail.reverse();
    tail.join(" | ")
}

async fn poll_opt_val<T>(f: &mut Option<BoxFuture<T>>) -> T {
    match f {
        Some(fut) => fut.await,
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
