//! The driver's side of steward's in-place re-exec ([`crate::reexec`]): a reload that
//! finds steward's own binary replaced checks the new one, then hands over and execs; the
//! successor adopts what it was handed.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use super::*;
use crate::control;
use crate::effects::BoxFuture;
use crate::handover::{self, Handover};
use crate::lifecycle::{Adopted, Policy};
use crate::reexec::{self, Blocked, Exe};
use crate::sockets::Sockets;
use nix::unistd::Pid;

/// How many turns of the runtime a signal its handler already took needs to reach the
/// driver's channel (the I/O driver's wake-up, then the forwarding task).
const SIGNAL_TURNS: usize = 4;

/// What the driver keeps for a re-exec.
pub struct Upgrade {
    /// The binary steward runs from; `None` when it cannot be identified (no re-exec).
    exe: Option<Exe>,
    control_fd: RawFd,
    /// The listeners, as handed over: steward's copies never change while it serves.
    listeners: Vec<handover::Listener>,
    pending: Option<Pending>,
}

/// A new binary under check, and the reload requests waiting on it.
struct Pending {
    path: PathBuf,
    check: BoxFuture<Result<(), String>>,
    /// The waiters' ids and their control connections.
    waiters: Vec<(u64, RawFd)>,
}

impl Upgrade {
    pub fn new(control_fd: RawFd, sockets: &Sockets) -> Upgrade {
        Upgrade {
            exe: Exe::at_start(),
            control_fd,
            listeners: sockets
                .entries()
                .into_iter()
                .map(|(key, fd, port)| handover::Listener { key, fd, port })
                .collect(),
            pending: None,
        }
    }
}

/// The new binary's verdict, once its check is over.
pub(super) async fn checked(u: &mut Option<Upgrade>) -> Result<(), String> {
    match u.as_mut().and_then(|u| u.pending.as_mut()) {
        Some(p) => (&mut p.check).await,
        None => std::future::pending().await,
    }
}

/// The predecessor's steady state as the machine adopts it, its ages counted back from
/// `now`.
fn adopted(h: &Handover, now: Instant) -> Adopted {
    let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
    Adopted {
        gen: h.generation.id,
        pid: h.generation.pid,
        spawned: ago(h.generation.spawned_ms_ago),
        serving_since: ago(h.generation.serving_ms),
        last_gen: h.counters.last_gen,
        restarts: h.counters.restarts,
        consecutive_crashes: h.counters.consecutive_crashes,
        crashes: h.counters.crash_ages_ms.iter().map(|&ms| ago(ms)).collect(),
    }
}

impl<E: Effects> Driver<E> {
    /// Lets a reload re-execute steward when its binary was replaced.
    pub fn enable_upgrade(&mut self, upgrade: Upgrade) {
        self.upgrade = Some(upgrade);
    }

    /// A reload was asked for (`waiter`: its id and control connection). `Some`: the event
    /// for the machine; `None`: steward's own upgrade takes it, and the reload runs in the
    /// successor (or fails here with the new binary's reason).
    pub(super) fn reload_requested(&mut self, waiter: Option<(u64, RawFd)>) -> Option<Event> {
        let as_usual = Some(Event::Reload {
            waiter: waiter.map(|(id, _)| id),
        });
        let steady = self.steady().is_some();
        let Some(u) = self.upgrade.as_mut() else {
            return as_usual;
        };
        if let Some(p) = &mut u.pending {
            p.waiters.extend(waiter);
            return None;
        }
        let Some((exe, why)) = u.exe.as_ref().and_then(|e| Some((e, e.replaced()?))) else {
            return as_usual;
        };
        if !steady {
            render::upgrade::log_not_steady(&why);
            return as_usual;
        }
        let (path, config) = (exe.path.clone(), self.config.path.clone());
        render::upgrade::log_checking(&why, &path);
        let check_path = path.clone();
        u.pending = Some(Pending {
            path,
            check: Box::pin(async move { reexec::check(&check_path, &config).await }),
            waiters: waiter.into_iter().collect(),
        });
        self.effects.notify(Notice::Status(
            "checking the new steward binary before re-executing in place",
        ));
        None
    }

    /// The new binary's check is over: exec it from the steady state, or fail the reload
    /// with the reason, or (the state moved on meanwhile) reload as usual.
    pub(super) async fn upgrade_checked(
        &mut self,
        verdict: Result<(), String>,
        signals: &mut mpsc::UnboundedReceiver<Received>,
    ) {
        let Some(p) = self.upgrade.as_mut().and_then(|u| u.pending.take()) else {
            return;
        };
        if let Err(reason) = verdict {
            self.upgrade_failed(&p, &reason);
            return;
        }
        if self.steady().is_none() {
            render::upgrade::log_moved_on();
            self.reload_as_usual(&p);
            return;
        }
        let blocked = match Blocked::block() {
            Ok(b) => b,
            Err(e) => {
                self.upgrade_failed(&p, &format!("cannot block signals for the exec: {e}"));
                return;
            }
        };
        // What the handlers took before the block is decided here; what comes after stays
        // pending for the successor.
        for _ in 0..SIGNAL_TURNS {
            tokio::task::yield_now().await;
        }
        let mut stop = None;
        while let Ok(sig) = signals.try_recv() {
            match sig {
                Received::Term => stop = Some(StopSignal::Term),
                Received::Int => stop = Some(StopSignal::Int),
                Received::Forward(sig) => {
                    let pid = self.machine.current().and_then(|g| g.pid);
                    self.effects.forward(sig, pid);
                }
                // The reload is under way; the successor reaps whatever exited.
                Received::Hup | Received::Child => {}
            }
        }
        if let Some(sig) = stop {
            blocked.restore();
            self.upgrade_failed(&p, "a stop was requested");
            self.queue.push_back(Event::Stop(sig));
            self.reap();
            return;
        }
        let Some(h) = self.handover(&p) else {
            blocked.restore();
            self.reload_as_usual(&p);
            return;
        };
        render::upgrade::log_reexecuting(&p.path, &h);
        let err = reexec::exec(&p.path, &h, &blocked);
        blocked.restore();
        self.upgrade_failed(&p, &err.to_string());
        // Whatever arrived while the signals were blocked is delivered now.
        self.reap();
    }

    /// The machine left the steady state (a stop, a crash, a restart) while the new binary
    /// is checked: the upgrade is abandoned at once and its waiters' reloads go to the
    /// machine, which answers them as it answers any reload in that state (a stop's exit
    /// must not leave them unanswered).
    pub(super) fn upgrade_moot(&mut self) {
        if self.machine.steady().is_some() {
            return;
        }
        let Some(p) = self.upgrade.as_mut().and_then(|u| u.pending.take()) else {
            return;
        };
        render::upgrade::log_abandoned(&p.path);
        self.reload_as_usual(&p);
    }

    /// The machine's steady state, when the driver has nothing under way either: no kill,
    /// no reload check (work the exec would cut off). A generation's side work ends when it
    /// serves, so the machine's steady state has none.
    fn steady(&self) -> Option<Adopted> {
        let idle = self.kills.idle() && self.checking.is_none();
        idle.then(|| self.machine.steady()).flatten()
    }

    /// The hand-over of the steady state; `None` if it is not steady after all.
    fn handover(&self, p: &Pending) -> Option<Handover> {
        let a = self.steady()?;
        let u = self.upgrade.as_ref()?;
        let now = Instant::now();
        let ms = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        Some(Handover {
            version: handover::VERSION,
            config: self.config.path.clone(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            control_fd: u.control_fd,
            listeners: u.listeners.clone(),
            generation: handover::Generation {
                id: a.gen,
                pid: a.pid,
                spawned_ms_ago: ms(a.spawned),
                serving_ms: ms(a.serving_since),
            },
            counters: handover::Counters {
                last_gen: a.last_gen,
                restarts: a.restarts,
                consecutive_crashes: a.consecutive_crashes,
                crash_ages_ms: a.crashes.iter().map(|&t| ms(t)).collect(),
                health_passed: self.health.stats.passed,
                health_failed: self.health.stats.failed,
            },
            waiters: p.waiters.iter().map(|&(_, fd)| fd).collect(),
        })
    }

    /// The reload fails with `reason`; the old binary and its generation go on.
    fn upgrade_failed(&mut self, p: &Pending, reason: &str) {
        let gen = self.machine.current().map(|g| g.id).unwrap_or(0);
        let text = render::upgrade::log_failed(&p.path, reason, gen, self.machine.mode());
        self.record(&text);
        self.effects.notify(Notice::Status(&text));
        for (id, _) in &p.waiters {
            self.waiters.answer(*id, Reply::err(text.clone()));
        }
    }

    fn reload_as_usual(&mut self, p: &Pending) {
        if p.waiters.is_empty() {
            self.queue.push_back(Event::Reload { waiter: None });
        }
        for (id, _) in &p.waiters {
            self.queue.push_back(Event::Reload { waiter: Some(*id) });
        }
    }

    /// The successor's start: the predecessor's generation, counters and waiting clients
    /// are taken on instead of a first generation, then the reload it was asked for runs
    /// as usual.
    pub fn adopt(&mut self, mut h: Handover, policy: Policy) {
        self.machine = Lifecycle::adopt(policy, adopted(&h, Instant::now()));
        self.queue.clear();
        self.started = StdInstant::now()
            .checked_sub(Duration::from_millis(h.uptime_ms))
            .unwrap_or_else(StdInstant::now);
        self.health.stats.passed = h.counters.health_passed;
        self.health.stats.failed = h.counters.health_failed;
        let pid = Pid::from_raw(h.generation.pid as i32);
        self.gens.insert(h.generation.id, pid, None, None);
        let mut asked = 0;
        for fd in std::mem::take(&mut h.waiters) {
            // SAFETY: the predecessor named `fd` as a waiting control connection, and
            // Handover::decode checked it is an open socket named once.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            match control::answer_on(owned) {
                Ok(tx) => {
                    let id = self.waiters.wait(tx);
                    self.queue.push_back(Event::Reload { waiter: Some(id) });
                    asked += 1;
                }
                Err(e) => render::upgrade::log_waiter_lost(&e),
            }
        }
        if asked == 0 {
            self.queue.push_back(Event::Reload { waiter: None });
        }
        render::upgrade::log_adopted(&h);
        // A child that exited during the exec is a zombie now, its SIGCHLD maybe merged.
        self.reap();
    }
}
