//! `steward run`: the thin driver around [`crate::lifecycle`].
//!
//! One loop waits on everything at once (signals, the control socket, timers, work that
//! finished off the loop) and feeds what happened to the machine as an [`Event`]; the
//! machine's [`Action`]s come back and are carried out through [`Effects`]. The driver
//! keeps only what the machine does not: each generation's pid, its snapshot, the
//! configuration it runs and its side work, plus what `steward status` shows. It decides
//! nothing the machine could; its tests (`run_tests.rs`) drive it with a fake child.

use std::collections::VecDeque;
use std::time::{Duration, Instant as StdInstant};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn, Level};

use crate::config::{Config, DrainMode};
use crate::control::{Command, Reply, Request, Status, Waiters};
use crate::deadline::Deadline;
use crate::drain_poll::DrainPoll;
use crate::effects::{Conf, Done, Effects, Kill, Notice, KILL_TIMEOUT};
use crate::generation::{Generations, Progress};
use crate::health::{self, Health};
use crate::lifecycle::{Action, Event, GenId, Lifecycle, Mode, StopSignal, Unclaimed, Why};
use crate::render::{self, KillContext};
use crate::signals::Received;
use crate::timeline::Timeline;

#[path = "run_reexec.rs"]
mod reexec_hook;
pub use reexec_hook::Upgrade;

/// What the driver starts from, besides its effects.
pub struct Setup {
    pub config: Config,
    pub deadline: Deadline,
    pub policy: crate::lifecycle::Policy,
    /// Socket facts from netlink (cheap) or /proc/net/tcp (not): the drain poll's floor.
    pub netlink: bool,
    pub watchdog: Option<Duration>,
    /// Signals that arrived during start-up, before the driver's loop.
    pub early: Vec<Received>,
}

pub struct Driver<E: Effects> {
    effects: E,
    machine: Lifecycle,
    /// Signals that arrived during start-up: the machine hears them before it starts.
    early: Vec<Received>,
    config: Config,
    /// The configuration a reload's check runs on, until its generation spawns.
    checking: Option<Config>,
    deadline: Deadline,
    netlink: bool,
    watchdog: Option<Duration>,
    gens: Generations,
    started: StdInstant,
    /// Kills still running. Reaps wait for them, so a kill's log line (with how many
    /// processes it ended) comes before the exit it caused.
    kills_pending: usize,
    reap_due: bool,
    health: Health,
    drain: DrainPoll,
    waiters: Waiters,
    timeline: Timeline,
    /// Events produced while carrying out actions, fed back before waiting again.
    queue: VecDeque<Event>,
    /// steward's own binary and its upgrade under way; `None` where there is no binary to
    /// re-execute (the tests' fake child).
    upgrade: Option<Upgrade>,
}

impl<E: Effects> Driver<E> {
    pub fn new(effects: E, setup: Setup) -> Self {
        let health = Health::new(health::interval(&setup.config.health, setup.watchdog));
        Driver {
            health,
            effects,
            machine: Lifecycle::new(setup.policy),
            early: setup.early,
            config: setup.config,
            checking: None,
            deadline: setup.deadline,
            netlink: setup.netlink,
            watchdog: setup.watchdog,
            gens: Generations::default(),
            started: StdInstant::now(),
            kills_pending: 0,
            reap_due: false,
            drain: DrainPoll::default(),
            waiters: Waiters::default(),
            timeline: Timeline::default(),
            queue: VecDeque::new(),
            upgrade: None,
        }
    }

    /// Runs until the machine says exit; returns steward's exit code.
    pub async fn run(
        mut self,
        mut signals: mpsc::UnboundedReceiver<Received>,
        mut control: mpsc::Receiver<Request>,
        mut done: mpsc::UnboundedReceiver<Done>,
    ) -> i32 {
        for sig in std::mem::take(&mut self.early) {
            let ev = self.signal(sig);
            self.queue.extend(ev);
        }
        self.queue.push_back(Event::Start);
        loop {
            while let Some(ev) = self.queue.pop_front() {
                let actions = self.machine.handle(ev, Instant::now());
                if let Some(code) = self.carry_out(actions) {
                    return self.finish(code, &mut done).await;
                }
                self.upgrade_moot();
            }
            let wake = self.machine.next_wakeup();
            let event = tokio::select! {
                Some(sig) = signals.recv() => match self.signal(sig) {
                    Some(ev) => ev,
                    None => continue,
                },
                Some(d) = done.recv() => match self.finished(d) {
                    Some(ev) => ev,
                    None => continue,
                },
                next = self.health.next() => match next {
                    health::Next::Probed(ok) => Event::Health { ok },
                    health::Next::Due => {
                        self.start_health_probe();
                        continue;
                    }
                },
                _ = self.drain.tick() => {
                    self.poll_drain();
                    continue;
                }
                Some(req) = control.recv() => match self.control_request(req) {
                    Some(ev) => ev,
                    None => continue,
                },
                verdict = reexec_hook::checked(&mut self.upgrade) => {
                    self.upgrade_checked(verdict, &mut signals).await;
                    continue;
                }
                _ = sleep_opt(wake) => Event::Tick,
            };
            self.queue.push_back(event);
        }
    }

    fn signal(&mut self, sig: Received) -> Option<Event> {
        match sig {
            Received::Term => Some(Event::Stop(StopSignal::Term)),
            Received::Int => Some(Event::Stop(StopSignal::Int)),
            Received::Hup => {
                info!(
                    steward_event = "reload-requested",
                    steward_signal = "SIGHUP",
                    "SIGHUP: reload requested"
                );
                self.reload_requested(None)
            }
            Received::Child => {
                if self.kills_pending > 0 {
                    self.reap_due = true;
                } else {
                    self.reap();
                }
                None
            }
            Received::Forward(sig) => {
                let pid = self.machine.current().and_then(|g| g.pid);
                self.effects.forward(sig, pid);
                None
            }
        }
    }

    /// What work finished off the loop means; an event for the machine, if any.
    fn finished(&mut self, d: Done) -> Option<Event> {
        match d {
            Done::Event(Event::SpawnFailed { gen, reason, code }) => self
                .gens
                .contains(gen)
                .then(|| self.spawn_failed(gen, reason, code)),
            Done::Event(ev) => Some(ev),
            Done::Gen(gen, progress) => {
                self.gens.contains(gen).then_some(())?;
                match progress {
                    Progress::Served { unclaimed, snap } => {
                        self.gens.snapshot(gen, snap);
                        self.gens.settle(gen);
                        match unclaimed.is_empty() {
                            true => Some(Event::Ready { gen }),
                            false => Some(Event::Unclaimed {
                                gen,
                                listeners: Unclaimed {
                                    keys: unclaimed,
                                    config: self.config.path.clone(),
                                },
                            }),
                        }
                    }
                    Progress::Failed { reason, code } => Some(self.spawn_failed(gen, reason, code)),
                }
            }
            Done::Terminated { gen, snap } => {
                self.gens.snapshot(gen, snap);
                None
            }
            Done::Drained(counts) => {
                self.drain.counted();
                for (gen, count) in counts {
                    // A generation that exited meanwhile has nothing left to count.
                    if self.gens.contains(gen) {
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
                render::log_kill(&kill, result, &self.kill_context());
                if self.kills_pending == 0 && std::mem::take(&mut self.reap_due) {
                    self.reap();
                }
                None
            }
            Done::CheckPrepared(Err(msg)) => Some(Event::ConfigChecked(Err(msg))),
            Done::CheckPrepared(Ok((new, conf))) => {
                // A stop may have ended the reload while the files were read.
                if self.machine.mode() != Mode::Reloading {
                    return None;
                }
                match self.effects.run_check(&new, &conf) {
                    Ok(()) => {
                        self.checking = Some(*new);
                        None
                    }
                    Err(e) => Some(Event::ConfigChecked(Err(e))),
                }
            }
        }
    }

    fn kill_context(&self) -> KillContext<'_> {
        KillContext {
            deadline: &self.deadline,
            ready_timeout: self.config.ready.timeout,
            health_failures: self.config.health.failures,
            phase: self.machine.mode().as_str(),
        }
    }

    /// Counts the draining generations' requests in flight; one count at a time.
    fn poll_drain(&mut self) {
        if self.machine.draining().next().is_none() {
            self.drain.stop();
            return;
        }
        // A generation whose snapshot is still on its way is counted at the next tick.
        let targets = self.gens.drain_targets(self.machine.draining());
        if !targets.is_empty() && self.drain.begin() {
            self.effects.count_drain(targets);
        }
    }

    fn kill(&mut self, kill: Kill) {
        self.kills_pending += 1;
        self.effects.kill(kill);
    }

    fn start_health_probe(&mut self) {
        if self.health.probing() {
            return;
        }
        let serving = matches!(self.machine.mode(), Mode::Serving | Mode::Reloading);
        match (serving, self.machine.current().and_then(|g| g.pid)) {
            (true, Some(pid)) => {
                self.health
                    .begin(self.effects.health_probe(&self.config, pid));
            }
            // Not serving: the machine keeps the watchdog fed while it makes progress.
            _ => self.queue.push_back(Event::Health { ok: true }),
        }
    }

    fn control_request(&mut self, req: Request) -> Option<Event> {
        let command = req.command;
        if command == Command::Status {
            let _ = req.reply.send(Reply {
                ok: true,
                error: None,
                message: None,
                status: Some(self.status()),
            });
            return None;
        }
        let id = self.waiters.wait(req.reply);
        match command {
            Command::Restart => {
                info!(
                    steward_event = "restart-requested",
                    "restart requested on the control socket"
                );
                Some(Event::Restart { waiter: Some(id) })
            }
            _ => {
                info!(
                    steward_event = "reload-requested",
                    "reload requested on the control socket"
                );
                self.reload_requested(Some((id, req.conn)))
            }
        }
    }

    fn status(&self) -> Status {
        render::status(
            &self.machine,
            &self.deadline,
            &self.timeline,
            &self.health.stats,
            self.started,
        )
    }

    /// Reaps whatever exited and turns it into events.
    fn reap(&mut self) {
        let mut orphans = vec![];
        for (pid, status) in self.effects.reap() {
            match self.gens.remove_child(pid) {
                Some(gen) => {
                    self.effects.forget(gen);
                    self.queue.push_back(Event::Exited { gen, status });
                }
                None => orphans.push((pid, status)),
            }
        }
        render::log_orphans(&orphans);
    }

    /// Kills a generation whose start went wrong and reports it.
    fn spawn_failed(&mut self, gen: GenId, reason: String, code: i32) -> Event {
        self.reject(gen, &reason);
        Event::SpawnFailed { gen, reason, code }
    }

    fn reject(&mut self, gen: GenId, reason: &str) {
        if let Some(pid) = self.gens.remove(gen) {
            self.kill(Kill {
                gen,
                pid: pid.as_raw(),
                reason: None,
                elapsed_ms: 0,
                in_flight: None,
            });
        }
        error!(
            steward_event = "rejected",
            steward_generation = gen,
            "generation {gen}: {reason}"
        );
    }

    /// Carries out the machine's actions; `Some(code)` when steward must exit.
    fn carry_out(&mut self, actions: Vec<Action>) -> Option<i32> {
        for action in actions {
            match action {
                Action::CheckConfig => self.effects.prepare_check(&self.config),
                Action::AbandonCheck => {
                    self.checking = None;
                    self.effects.abandon_check(&self.config);
                }
                Action::Spawn { gen, why } => self.spawn(gen, why),
                Action::NotifyReady(fact) => {
                    let status = fact.to_string();
                    render::log_ready(
                        &status,
                        &fact,
                        self.machine.current(),
                        &self.config.ready.probe,
                    );
                    self.record(&status);
                    self.effects.notify(Notice::Ready(&status));
                }
                Action::NotifyReloading(fact) => {
                    let status = fact.to_string();
                    self.timeline.begin(Instant::now());
                    let text = format!("{status}; RELOADING=1");
                    render::log_fact(Level::INFO, "reloading", self.current_pid(), &fact, &text);
                    self.record(&status);
                    self.effects.notify(Notice::Reloading(&status));
                }
                Action::NotifyStopping(fact) => {
                    let status = fact.to_string();
                    self.timeline.begin(Instant::now());
                    let signal = self.machine.stop_signal();
                    let pid = self.current_pid();
                    render::log_stopping(&status, &fact, pid, signal, &self.deadline);
                    self.record(&status);
                    self.effects.notify(Notice::Stopping(&status));
                }
                Action::Status(fact) => {
                    let status = fact.to_string();
                    let (phase, pid) = (self.machine.mode().as_str(), self.current_pid());
                    render::log_fact(Level::INFO, phase, pid, &fact, &status);
                    self.record(&status);
                    self.effects.notify(Notice::Status(&status));
                }
                Action::Terminate { gen } => self.terminate(gen),
                Action::KillTree {
                    gen,
                    reason,
                    drain_began,
                    in_flight,
                } => {
                    let Some((pid, _)) = self.gens.settle(gen) else {
                        continue;
                    };
                    let pid = pid.as_raw();
                    let elapsed = drain_began.map(|t| Instant::now().saturating_duration_since(t));
                    let elapsed_ms = elapsed.map_or(0, |d| d.as_millis() as u64);
                    let reason = Some(reason);
                    self.kill(Kill {
                        gen,
                        pid,
                        reason,
                        elapsed_ms,
                        in_flight,
                    });
                }
                Action::Reject { gen, reason } => self.reject(gen, &reason),
                Action::CloseSockets => self.effects.close_sockets(),
                Action::ReloadFinished { waiters, result } => {
                    let text = render::log_reload_finished(&result);
                    self.record(&text);
                    let reply = Reply::from(render::reload_reply(&result));
                    for w in waiters {
                        self.waiters.answer(w, reply.clone());
                    }
                    self.checking = None;
                    let adopted = result.ok().and_then(|gen| self.gens.take_candidate(gen));
                    if let Some(new) = adopted {
                        self.effects.install_next_conf();
                        self.config = new;
                    }
                }
                Action::RestartAnswered { waiter, result } => {
                    let reply = Reply::from(render::restart_reply(result));
                    self.waiters.answer(waiter, reply);
                }
                Action::WatchdogPing => {
                    if self.watchdog.is_some() {
                        self.effects.notify(Notice::Watchdog);
                    }
                }
                Action::Note(fact) => {
                    let text = fact.to_string();
                    let (phase, pid) = (self.machine.mode().as_str(), self.current_pid());
                    render::log_fact(Level::INFO, phase, pid, &fact, &text);
                    self.record(&text);
                }
                Action::Warn(fact) => {
                    let text = fact.to_string();
                    let (phase, pid) = (self.machine.mode().as_str(), self.current_pid());
                    render::log_fact(Level::WARN, phase, pid, &fact, &text);
                    self.record(&text);
                }
                Action::Exit(code) => return Some(code),
            }
        }
        None
    }

    fn record(&mut self, text: &str) {
        self.timeline.record(Instant::now(), text);
    }

    fn current_pid(&self) -> u32 {
        self.machine.current().and_then(|g| g.pid).unwrap_or(0)
    }

    fn spawn(&mut self, gen: GenId, why: Why) {
        // A reload's generation runs the checked candidate; it is adopted only once that
        // generation serves, so a crash restart after a failed reload uses the last good one.
        let candidate = match why {
            Why::Reload => self.checking.take(),
            _ => None,
        };
        let (cfg, conf) = match &candidate {
            Some(c) => (c, Conf::Next),
            None => (&self.config, Conf::Effective),
        };
        match self.effects.spawn(gen, why, cfg, conf) {
            Ok(s) => {
                let pid = s.pid.as_raw() as u32;
                self.gens.insert(gen, s.pid, candidate, s.work);
                self.queue.push_back(Event::Spawned { gen, pid });
            }
            Err(e) => {
                error!(
                    steward_phase = "starting",
                    steward_event = "spawn-failed",
                    steward_generation = gen,
                    "{}",
                    e.reason
                );
                let (reason, code) = (e.reason, e.code);
                self.queue
                    .push_back(Event::SpawnFailed { gen, reason, code });
            }
        }
    }

    fn terminate(&mut self, gen: GenId) {
        let Some((pid, snapshot_first)) = self.gens.settle(gen) else {
            return;
        };
        self.effects
            .terminate(gen, pid, &self.config, snapshot_first);
        info!(
            steward_event = "terminate",
            steward_generation = gen,
            steward_child_pid = pid.as_raw(),
            steward_signal = "SIGTERM",
            "SIGTERM to generation {gen} (child pid {pid}): draining"
        );
        if self.config.stop.drain == DrainMode::Connections {
            self.drain.start(self.config.stop.drain_poll, self.netlink);
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
                    render::log_kill(&kill, result, &self.kill_context());
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let (leftovers, reaped) = self.effects.final_cleanup().await;
        if leftovers > 0 {
            warn!(
                steward_killed = leftovers as u64,
                "killed {leftovers} processes the children left behind"
            );
        }
        self.waiters.answer_all(Reply::err("steward exited"));
        let elapsed = self.machine.stop_elapsed(Instant::now());
        render::log_exit(code, self.machine.stop_signal().is_some(), elapsed, reaped);
        code
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
