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
use tracing::Level;

use crate::config::{Config, DrainMode};
use crate::control::{Command, Reply, Request, Status, Waiters};
use crate::deadline::Deadline;
use crate::drain_poll::DrainPoll;
use crate::effects::{Conf, Done, Effects, Kill, Notice, KILL_TIMEOUT};
use crate::generation::{Generations, Progress};
use crate::health::{self, Health};
use crate::kills::Kills;
use crate::lifecycle::{Action, Event, GenId, Lifecycle, Mode, StopSignal, Why};
use crate::render::{self, Asked, KillContext};
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
    kills: Kills,
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
            kills: Kills::default(),
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
                render::log_asked(Asked::ReloadBySighup);
                self.reload_requested(None)
            }
            Received::Child => {
                if self.kills.may_reap() {
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
                        Some(self.gens.served(gen, snap, unclaimed, &self.config.path))
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
                let events = self.gens.drain_events(counts);
                self.queue.extend(events);
                None
            }
            Done::Killed(kill, result) => {
                render::log_kill(&kill, result, &self.kill_context());
                if self.kills.finished() {
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
        self.kills.started();
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
            let _ = req.reply.send(Reply::status(self.status()));
            return None;
        }
        let id = self.waiters.wait(req.reply);
        match command {
            Command::Restart => {
                render::log_asked(Asked::RestartOnSocket);
                Some(Event::Restart { waiter: Some(id) })
            }
            _ => {
                render::log_asked(Asked::ReloadOnSocket);
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
            self.kill(Kill::rejected(gen, pid));
        }
        render::log_rejected(gen, reason);
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
                    let current = self.machine.current();
                    render::log_ready(&status, &fact, current, &self.config.ready.probe);
                    self.publish(&status, Notice::Ready);
                }
                Action::NotifyReloading(fact) => {
                    let status = fact.to_string();
                    self.timeline.begin(Instant::now());
                    let text = format!("{status}; RELOADING=1");
                    render::log_fact(Level::INFO, "reloading", self.current_pid(), &fact, &text);
                    self.publish(&status, Notice::Reloading);
                }
                Action::NotifyStopping(fact) => {
                    let status = fact.to_string();
                    self.timeline.begin(Instant::now());
                    let signal = self.machine.stop_signal();
                    let pid = self.current_pid();
                    render::log_stopping(&status, &fact, pid, signal, &self.deadline);
                    self.publish(&status, Notice::Stopping);
                }
                Action::Status(fact) => {
                    let status = self.note(Level::INFO, &fact);
                    self.effects.notify(Notice::Status(&status));
                }
                Action::Terminate { gen } => self.terminate(gen),
                Action::KillTree {
                    gen,
                    reason,
                    drain_began,
                    in_flight,
                } => {
                    if let Some((pid, _)) = self.gens.settle(gen) {
                        let since =
                            drain_began.map(|t| Instant::now().saturating_duration_since(t));
                        self.kill(Kill::tree(gen, pid, reason, since, in_flight));
                    }
                }
                Action::Reject { gen, reason } => self.reject(gen, &reason),
                Action::CloseSockets => self.effects.close_sockets(),
                Action::ReloadFinished { waiters, result } => {
                    let text = render::log_reload_finished(&result);
                    self.record(&text);
                    self.waiters
                        .answer_each(waiters, render::reload_reply(&result).into());
                    self.checking = None;
                    let adopted = result.ok().and_then(|gen| self.gens.take_candidate(gen));
                    if let Some(new) = adopted {
                        self.effects.install_next_conf();
                        self.config = new;
                    }
                }
                Action::RestartAnswered { waiter, result } => {
                    self.waiters
                        .answer(waiter, render::restart_reply(result).into());
                }
                Action::WatchdogPing => {
                    if self.watchdog.is_some() {
                        self.effects.notify(Notice::Watchdog);
                    }
                }
                Action::Note(fact) => {
                    self.note(Level::INFO, &fact);
                }
                Action::Warn(fact) => {
                    self.note(Level::WARN, &fact);
                }
                Action::Exit(code) => return Some(code),
            }
        }
        None
    }

    fn record(&mut self, text: &str) {
        self.timeline.record(Instant::now(), text);
    }

    /// Remembers a status line and tells systemd.
    fn publish<'a>(&mut self, status: &'a str, notice: fn(&'a str) -> Notice<'a>) {
        self.record(status);
        self.effects.notify(notice(status));
    }

    /// Journals a fact at `level` and remembers it; returns its words.
    fn note(&mut self, level: Level, fact: &crate::lifecycle::Fact) -> String {
        let text = fact.to_string();
        let (phase, pid) = (self.machine.mode().as_str(), self.current_pid());
        render::log_fact(level, phase, pid, fact, &text);
        self.record(&text);
        text
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
                render::log_spawn_failed(gen, &e.reason);
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
        render::log_terminate(gen, pid);
        if self.config.stop.drain == DrainMode::Connections {
            self.drain.start(self.config.stop.drain_poll, self.netlink);
        }
    }

    /// Kills and reaps whatever is left, then reports the outcome.
    async fn finish(&mut self, code: i32, done: &mut mpsc::UnboundedReceiver<Done>) -> i32 {
        // Kills still running log their lines first.
        let end = Instant::now() + KILL_TIMEOUT;
        while !self.kills.idle() {
            match tokio::time::timeout_at(end, done.recv()).await {
                Ok(Some(Done::Killed(kill, result))) => {
                    self.kills.finished();
                    render::log_kill(&kill, result, &self.kill_context());
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let (leftovers, reaped) = self.effects.final_cleanup().await;
        render::log_leftovers(leftovers);
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
