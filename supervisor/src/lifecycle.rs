//! The supervisor's lifecycle as a state machine with no I/O.
//!
//! steward supervises *generations* of the child: generation 1 at start, a new one at every
//! reload, restart or crash recovery. At most one generation is current (serving, or
//! starting to serve); older ones drain and are retired; a reload brings the next one up
//! beside the current one and swaps them only once the new one serves.
//!
//! ```text
//!                 Ready             Reload        ConfigChecked(ok), Ready(next)
//!  Starting ───────────▶ Serving ─────────▶ Reloading ───────────────▶ Serving (next is current,
//!     ▲                  │  │  ▲                │ check or start fails     old one drains)
//!     │ backoff over     │  │  └────────────────┘ (old generation untouched)
//!  Backoff ◀── crash ────┘  │
//!     (gives up: exit)      │ Stop (any mode)
//!                           ▼
//!                        Stopping: every generation drains; drained / deadline → kill; all gone → Exited
//! ```
//!
//! [`Lifecycle::handle`] takes an [`Event`] and the current time and returns the
//! [`Action`]s the driver must carry out; [`Lifecycle::next_wakeup`] says when the driver
//! must call back with [`Event::Tick`]. Time is passed in, never read, so the unit tests
//! drive every transition with paused tokio time and no process.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::exit;

pub type GenId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The current generation was spawned and has not passed its probe yet.
    Starting,
    Serving,
    /// A reload is checking the configuration or bringing up the next generation.
    Reloading,
    /// The current generation crashed; the next one starts when the backoff ends.
    Backoff,
    Stopping,
    Exited,
}

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

/// How a child ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    Code(i32),
    Signal(i32),
}

impl ChildStatus {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn as_exit_code(self) -> i32 {
        match self {
            ChildStatus::Code(c) => c,
            ChildStatus::Signal(s) => 128 + s,
        }
    }

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

    /// The ways a child ends when asked to stop: by itself, or by TERM, INT or KILL.
    fn is_stop_outcome(self) -> bool {
        match self {
            ChildStatus::Code(c) => c == 0,
            ChildStatus::Signal(s) => s == libc::SIGTERM || s == libc::SIGKILL || s == libc::SIGINT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Int,
}

impl StopSignal {
    pub fn as_str(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
        }
    }
}

/// Why steward SIGKILLs a generation's process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// No downstream connection left: the child has nothing more to do. A stock Pingora
    /// child would otherwise sleep out its grace period.
    Drained,
    /// The stop deadline passed with work still in flight.
    Deadline,
    /// The child never passed its readiness probe.
    StartTimeout,
    /// A second SIGINT during the stop (Ctrl-C twice): the operator wants it gone now.
    Operator,
    /// The child failed its health probe too many times in a row.
    Unhealthy,
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

/// Why a generation is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Start,
    Reload,
    Restart,
    Crash,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Spawned {
        gen: GenId,
        pid: u32,
    },
    /// The spawn or the socket hand-off failed; `code` is the exit code if that is fatal.
    SpawnFailed {
        gen: GenId,
        reason: String,
        code: i32,
    },
    Ready {
        gen: GenId,
    },
    Exited {
        gen: GenId,
        status: ChildStatus,
    },
    /// A drain poll's count of a draining generation's requests in flight. `closed`: it
    /// holds no listener any more, so it cannot take another connection and a count of
    /// zero is final (no `drain_quiet` to wait out).
    Drain {
        gen: GenId,
        in_flight: usize,
        closed: bool,
    },
    Stop(StopSignal),
    /// A reload request; `waiter` identifies who is waiting for the answer, if anyone.
    Reload {
        waiter: Option<u64>,
    },
    ConfigChecked(Result<(), String>),
    /// An operator's `steward restart`.
    Restart,
    /// One health probe of the current generation.
    Health {
        ok: bool,
    },
    /// A timer the machine asked for through [`Lifecycle::next_wakeup`] is due.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-read the configuration, write the effective Pingora conf, run the child with
    /// `-t`; answer with [`Event::ConfigChecked`].
    CheckConfig,
    /// Start a generation and hand it the sockets; answer with Spawned or SpawnFailed.
    Spawn {
        gen: GenId,
        why: Why,
    },
    /// `READY=1` with this status.
    NotifyReady(String),
    /// `RELOADING=1` and `MONOTONIC_USEC` with this status.
    NotifyReloading(String),
    /// `STOPPING=1` with this status.
    NotifyStopping(String),
    Status(String),
    /// SIGTERM to the generation's child, then watch its drain.
    Terminate {
        gen: GenId,
    },
    /// SIGKILL the generation's process group and every descendant.
    KillTree {
        gen: GenId,
        reason: KillReason,
    },
    /// Close steward's copies of the listening sockets.
    CloseSockets,
    /// Answer these reload waiters.
    ReloadFinished {
        waiters: Vec<u64>,
        result: Result<GenId, String>,
    },
    /// `WATCHDOG=1`.
    WatchdogPing,
    /// Something worth a log line that changes nothing else.
    Note(String),
    /// Something went wrong, worth a warning.
    Warn(String),
    /// Leave with this exit code once every descendant is reaped.
    Exit(i32),
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `None`: no stop deadline (the unit's TimeoutStopSec is infinity).
    pub deadline: Option<Duration>,
    pub start_timeout: Duration,
    /// `Some`: drain detection by connections, ended after this long with none in flight.
    /// `None`: wait for the child to exit by itself.
    pub drain_quiet: Option<Duration>,
    /// Crashes tolerated within `crash_window` before steward gives up; 0: never restart.
    pub max_crashes: u32,
    pub crash_window: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Serving this long resets the backoff.
    pub stable_after: Duration,
    /// Failed health probes in a row before the child is replaced; 0: never.
    pub health_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    /// Asked for, not yet running.
    Spawning,
    Starting,
    Serving,
    Draining,
    Killing(KillReason),
}

#[derive(Debug, Clone)]
pub struct Gen {
    pub id: GenId,
    pub pid: Option<u32>,
    pub state: GenState,
    pub why: Why,
    pub spawned: Instant,
    pub serving_since: Option<Instant>,
    pub drain_began: Option<Instant>,
    pub deadline_at: Option<Instant>,
    pub quiet_since: Option<Instant>,
    pub in_flight: Option<usize>,
}

/// How often the draining STATUS line refreshes its "time left".
const STATUS_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Lifecycle {
    mode: Mode,
    policy: Policy,
    gens: BTreeMap<GenId, Gen>,
    last_gen: GenId,
    current: Option<GenId>,
    /// The generation a reload is bringing up.
    next: Option<GenId>,
    stop_began: Option<Instant>,
    stop_signal: Option<StopSignal>,
    /// The current generation's status when it ended during the stop: steward's exit code.
    stop_status: Option<ChildStatus>,
    /// The exit code once steward has decided to leave (waiting for the last child).
    leaving_with: Option<i32>,
    last_status: Instant,
    crashes: Vec<Instant>,
    consecutive_crashes: u32,
    backoff_until: Option<Instant>,
    restarts: u32,
    reload_waiters: Vec<u64>,
    pending_reload: Option<Vec<u64>>,
    health_failed: u32,
    first_start: bool,
}

impl Lifecycle {
    /// A machine about to start generation 1; carry out the returned actions.
    pub fn start(policy: Policy, now: Instant) -> (Self, Vec<Action>) {
        let mut m = Lifecycle {
            mode: Mode::Starting,
            policy,
            gens: BTreeMap::new(),
            last_gen: 0,
            current: None,
            next: None,
            stop_began: None,
            stop_signal: None,
            stop_status: None,
            leaving_with: None,
            last_status: now,
            crashes: vec![],
            consecutive_crashes: 0,
            backoff_until: None,
            restarts: 0,
            reload_waiters: vec![],
            pending_reload: None,
            health_failed: 0,
            first_start: true,
        };
        let spawn = m.spawn(Why::Start, now);
        (m, spawn)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn current(&self) -> Option<&Gen> {
        self.current.and_then(|g| self.gens.get(&g))
    }

    pub fn gen(&self, id: GenId) -> Option<&Gen> {
        self.gens.get(&id)
    }

    pub fn gens(&self) -> impl Iterator<Item = &Gen> {
        self.gens.values()
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    pub fn stop_signal(&self) -> Option<StopSignal> {
        self.stop_signal
    }

    /// Time since the stop began, if it has.
    pub fn stop_elapsed(&self, now: Instant) -> Option<Duration> {
        self.stop_began.map(|t| now.saturating_duration_since(t))
    }

    /// Generations whose drain the driver must watch.
    pub fn draining(&self) -> impl Iterator<Item = GenId> + '_ {
        self.gens
            .values()
            .filter(|g| g.state == GenState::Draining)
            .map(|g| g.id)
    }

    /// The earliest time at which [`Event::Tick`] can change something.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let mut times = vec![];
        for g in self.gens.values() {
            match g.state {
                GenState::Starting => times.push(g.spawned + self.policy.start_timeout),
                GenState::Draining => {
                    times.extend(g.deadline_at);
                    if let (Some(q), Some(quiet)) = (g.quiet_since, self.policy.drain_quiet) {
                        times.push(q + quiet);
                    }
                }
                _ => {}
            }
        }
        times.extend(self.backoff_until);
        if self.mode == Mode::Stopping {
            times.push(self.last_status + STATUS_REFRESH);
        }
        times.into_iter().min()
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        if self.mode == Mode::Exited {
            return vec![];
        }
        let mut out = match event {
            Event::Spawned { gen, pid } => self.spawned(gen, pid, now),
            Event::SpawnFailed { gen, reason, code } => self.spawn_failed(gen, reason, code, now),
            Event::Ready { gen } => self.ready(gen, now),
            Event::Exited { gen, status } => self.exited(gen, status, now),
            Event::Drain {
                gen,
                in_flight,
                closed,
            } => self.observe_drain(gen, in_flight, closed, now),
            Event::Stop(sig) => self.stop(sig, now),
            Event::Reload { waiter } => self.reload(waiter),
            Event::ConfigChecked(result) => self.config_checked(result, now),
            Event::Restart => self.operator_restart(now),
            Event::Health { ok } => self.health(ok),
            Event::Tick => self.tick(now),
        };
        out.extend(self.maybe_exit());
        out
    }

    // ----- generations --------------------------------------------------------------

    fn spawn(&mut self, why: Why, now: Instant) -> Vec<Action> {
        self.last_gen += 1;
        let id = self.last_gen;
        self.gens.insert(
            id,
            Gen {
                id,
                pid: None,
                state: GenState::Spawning,
                why,
                spawned: now,
                serving_since: None,
                drain_began: None,
                deadline_at: None,
                quiet_since: None,
                in_flight: None,
            },
        );
        if why == Why::Reload {
            self.next = Some(id);
        } else {
            self.current = Some(id);
        }
        vec![Action::Spawn { gen: id, why }]
    }

    fn spawned(&mut self, gen: GenId, pid: u32, now: Instant) -> Vec<Action> {
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![];
        };
        g.pid = Some(pid);
        g.spawned = now;
        g.state = GenState::Starting;
        let why = g.why;
        if self.mode == Mode::Stopping {
            return self.terminate(gen, now);
        }
        vec![Action::Status(format!(
            "{}: generation {gen}, child pid {pid}, waiting until it serves",
            match why {
                Why::Start => "starting",
                Why::Reload => "reloading",
                Why::Restart | Why::Crash => "restarting",
            }
        ))]
    }

    fn spawn_failed(&mut self, gen: GenId, reason: String, code: i32, now: Instant) -> Vec<Action> {
        let Some(g) = self.gens.remove(&gen) else {
            return vec![];
        };
        match g.why {
            Why::Reload => {
                self.next = None;
                self.reload_failed(format!("generation {gen} did not start: {reason}"), now)
            }
            _ if self.mode == Mode::Stopping => vec![],
            Why::Start => {
                self.leaving_with = Some(code);
                vec![Action::Status(format!("failed: {reason}"))]
            }
            Why::Restart | Why::Crash => {
                self.current = None;
                self.crashed(
                    format!("generation {gen} did not start: {reason}"),
                    ChildStatus::Code(code),
                    None,
                    now,
                )
            }
        }
    }

    fn ready(&mut self, gen: GenId, now: Instant) -> Vec<Action> {
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![];
        };
        if g.state != GenState::Starting {
            return vec![];
        }
        g.state = GenState::Serving;
        g.serving_since = Some(now);
        self.health_failed = 0;
        match g.why {
            Why::Reload if self.next == Some(gen) => {
                self.next = None;
                let old = self.current.replace(gen);
                let mut out = vec![];
                if let Some(old) = old {
                    out.extend(self.terminate(old, now));
                }
                self.mode = Mode::Serving;
                out.push(Action::NotifyReady(self.serving_status(" (reloaded)")));
                out.push(Action::ReloadFinished {
                    waiters: std::mem::take(&mut self.reload_waiters),
                    result: Ok(gen),
                });
                if let Some(waiters) = self.pending_reload.take() {
                    out.extend(self.begin_reload(waiters));
                }
                out
            }
            _ => {
                self.mode = Mode::Serving;
                self.first_start = false;
                let mut out = vec![Action::NotifyReady(self.serving_status(""))];
                // Reloads requested before this generation served.
                if let Some(waiters) = self.pending_reload.take() {
                    out.extend(self.begin_reload(waiters));
                }
                out
            }
        }
    }

    fn serving_status(&self, suffix: &str) -> String {
        let (gen, pid) = self
            .current()
            .map(|g| (g.id, g.pid.unwrap_or(0)))
            .unwrap_or((0, 0));
        let restarts = match self.restarts {
            0 => String::new(),
            1 => ", 1 restart".to_string(),
            n => format!(", {n} restarts"),
        };
        format!("serving: generation {gen}, child pid {pid}{restarts}{suffix}")
    }

    fn terminate(&mut self, gen: GenId, now: Instant) -> Vec<Action> {
        let deadline = self.policy.deadline.map(|d| now + d);
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![];
        };
        match g.state {
            GenState::Killing(_) => return vec![],
            GenState::Draining => {
                // A stop during a retirement: the earlier of the two deadlines holds.
                g.deadline_at = match (g.deadline_at, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                return vec![];
            }
            GenState::Spawning => return vec![],
            GenState::Starting | GenState::Serving => {}
        }
        g.state = GenState::Draining;
        g.drain_began = Some(now);
        g.deadline_at = deadline;
        vec![Action::Terminate { gen }]
    }

    fn kill(&mut self, gen: GenId, reason: KillReason) -> Vec<Action> {
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![];
        };
        if matches!(g.state, GenState::Killing(_)) {
            return vec![];
        }
        g.state = GenState::Killing(reason);
        let pid = g.pid.unwrap_or(0);
        let status = match reason {
            KillReason::Drained => {
                format!("stopping: generation {gen} drained, no request in flight; ending child pid {pid}")
            }
            KillReason::Deadline => format!(
                "killing: stop deadline reached for generation {gen} with {}; SIGKILL to child pid {pid} and its process tree",
                in_flight_text(g.in_flight)
            ),
            KillReason::StartTimeout => format!(
                "killing: generation {gen} (child pid {pid}) did not become ready within {} s",
                self.policy.start_timeout.as_secs_f64()
            ),
            KillReason::Operator => {
                format!("killing: second SIGINT; SIGKILL to child pid {pid} and its process tree")
            }
            KillReason::Unhealthy => format!(
                "restarting: generation {gen} (child pid {pid}) failed {} health probes in a row; killing it",
                self.health_failed
            ),
        };
        let mut out = vec![];
        // Retiring an old generation quietly is routine; only the current one is news.
        if self.mode == Mode::Stopping || Some(gen) == self.current || reason != KillReason::Drained
        {
            out.push(Action::Status(status));
        } else {
            out.push(Action::Note(status));
        }
        out.push(Action::KillTree { gen, reason });
        out
    }

    fn exited(&mut self, gen: GenId, status: ChildStatus, now: Instant) -> Vec<Action> {
        let Some(g) = self.gens.remove(&gen) else {
            return vec![];
        };
        let pid = g.pid.unwrap_or(0);
        let was_current = self.current == Some(gen);
        if was_current {
            self.current = None;
        }
        if self.next == Some(gen) {
            self.next = None;
        }
        if self.mode == Mode::Stopping {
            if was_current {
                self.stop_status = Some(status);
            }
            return vec![Action::Note(format!(
                "generation {gen} (child pid {pid}) stopped ({})",
                status.describe()
            ))];
        }
        match g.state {
            GenState::Draining | GenState::Killing(KillReason::Drained | KillReason::Deadline) => {
                // A retired generation ending is the plan working.
                vec![Action::Note(format!(
                    "generation {gen} (child pid {pid}) retired ({})",
                    status.describe()
                ))]
            }
            _ if g.why == Why::Reload && !was_current => self.reload_failed(
                format!(
                    "generation {gen} (child pid {pid}) exited before it served ({})",
                    status.describe()
                ),
                now,
            ),
            GenState::Killing(KillReason::StartTimeout) if self.first_start => {
                self.leaving_with = Some(exit::UNAVAILABLE);
                vec![Action::Status(format!(
                    "exited: generation {gen} (child pid {pid}) never served"
                ))]
            }
            GenState::Starting if self.first_start => {
                // A server that leaves before it ever served failed to start.
                let code = match status {
                    ChildStatus::Code(0) => exit::UNAVAILABLE,
                    other => other.as_exit_code(),
                };
                self.leaving_with = Some(code);
                vec![Action::Status(format!(
                    "exited: child pid {pid} ended before it was ready ({})",
                    status.describe()
                ))]
            }
            GenState::Killing(KillReason::Unhealthy) => self.crashed(
                format!("generation {gen} (child pid {pid}) was unhealthy"),
                status,
                g.serving_since,
                now,
            ),
            _ if was_current => self.crashed(
                format!(
                    "generation {gen}: child pid {pid} ended on its own ({})",
                    status.describe()
                ),
                status,
                g.serving_since,
                now,
            ),
            _ => vec![Action::Note(format!(
                "generation {gen} (child pid {pid}) exited ({})",
                status.describe()
            ))],
        }
    }

    /// The current generation is gone without being asked to: restart with backoff, or
    /// give up so systemd's `Restart=` policy takes over.
    fn crashed(
        &mut self,
        what: String,
        status: ChildStatus,
        serving_since: Option<Instant>,
        now: Instant,
    ) -> Vec<Action> {
        if self.policy.max_crashes == 0 {
            self.leaving_with = Some(status.as_exit_code());
            return vec![Action::Status(format!("exited: {what}"))];
        }
        if serving_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.policy.stable_after)
        {
            self.consecutive_crashes = 0;
        }
        self.crashes.push(now);
        let window = self.policy.crash_window;
        self.crashes
            .retain(|t| now.saturating_duration_since(*t) < window);
        if self.crashes.len() as u32 > self.policy.max_crashes {
            let code = match status.as_exit_code() {
                0 => exit::SOFTWARE,
                c => c,
            };
            self.leaving_with = Some(code);
            return vec![Action::Status(format!(
                "exited: {what}; {} crashes within {} s, giving up (systemd's Restart= decides)",
                self.crashes.len(),
                window.as_secs()
            ))];
        }
        self.consecutive_crashes += 1;
        let exp = self.consecutive_crashes.saturating_sub(1).min(20);
        let backoff = self
            .policy
            .backoff_min
            .saturating_mul(1u32 << exp)
            .min(self.policy.backoff_max);
        self.backoff_until = Some(now + backoff);
        self.mode = Mode::Backoff;
        let mut out = vec![Action::Warn(format!(
            "{what}; restarting in {} ms (crash {} of {} allowed within {} s)",
            backoff.as_millis(),
            self.crashes.len(),
            self.policy.max_crashes,
            window.as_secs()
        ))];
        out.push(Action::Status(format!(
            "restarting in {} ms: {what}",
            backoff.as_millis()
        )));
        if self.next.is_some() {
            // A reload was bringing up the next generation; it becomes the way back.
            self.backoff_until = None;
            self.mode = Mode::Reloading;
        }
        out
    }

    // ----- stop ------------------------------------------------------------------------

    fn stop(&mut self, sig: StopSignal, now: Instant) -> Vec<Action> {
        if self.mode == Mode::Stopping {
            return match sig {
                StopSignal::Int => {
                    let ids: Vec<GenId> = self.gens.keys().copied().collect();
                    ids.into_iter()
                        .flat_map(|g| self.kill(g, KillReason::Operator))
                        .collect()
                }
                StopSignal::Term => vec![Action::Note(
                    "SIGTERM while stopping: the stop is already under way".into(),
                )],
            };
        }
        let before = self.mode;
        self.mode = Mode::Stopping;
        self.stop_began = Some(now);
        self.stop_signal = Some(sig);
        self.last_status = now;
        self.backoff_until = None;
        let when = match before {
            Mode::Starting => " before the child was ready",
            Mode::Reloading => " during a reload",
            _ => "",
        };
        let pid = self.current().and_then(|g| g.pid).unwrap_or(0);
        let mut out = vec![
            Action::NotifyStopping(format!(
                "stopping: {} received{when}, draining child pid {pid}, {}",
                sig.as_str(),
                time_left(self.policy.deadline.map(|d| now + d), now)
            )),
            Action::CloseSockets,
        ];
        let mut waiters = std::mem::take(&mut self.reload_waiters);
        waiters.extend(self.pending_reload.take().unwrap_or_default());
        if !waiters.is_empty() {
            out.push(Action::ReloadFinished {
                waiters,
                result: Err("steward is stopping".into()),
            });
        }
        let ids: Vec<GenId> = self.gens.keys().copied().collect();
        for g in ids {
            out.extend(self.terminate(g, now));
        }
        out
    }

    fn observe_drain(
        &mut self,
        gen: GenId,
        in_flight: usize,
        closed: bool,
        now: Instant,
    ) -> Vec<Action> {
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![];
        };
        if g.state != GenState::Draining {
            return vec![];
        }
        let changed = g.in_flight != Some(in_flight);
        g.in_flight = Some(in_flight);
        if in_flight == 0 {
            g.quiet_since.get_or_insert(now);
        } else {
            g.quiet_since = None;
        }
        let mut out = vec![];
        if changed && self.mode == Mode::Stopping {
            self.last_status = now;
            out.push(Action::Status(self.draining_status(now)));
        }
        if in_flight == 0 && closed {
            out.extend(self.kill(gen, KillReason::Drained));
        }
        out.extend(self.tick(now));
        out
    }

    fn draining_status(&self, now: Instant) -> String {
        let draining: Vec<&Gen> = self
            .gens
            .values()
            .filter(|g| g.state == GenState::Draining)
            .collect();
        let in_flight: Option<usize> = draining
            .iter()
            .map(|g| g.in_flight)
            .try_fold(0usize, |acc, n| n.map(|n| acc + n));
        let pids: Vec<String> = draining
            .iter()
            .filter_map(|g| g.pid.map(|p| p.to_string()))
            .collect();
        let deadline = draining.iter().filter_map(|g| g.deadline_at).min();
        format!(
            "draining: {}, child pid {}, {}",
            in_flight_text(in_flight),
            pids.join(", "),
            time_left(deadline, now)
        )
    }

    // ----- reload and restart -----------------------------------------------------------

    fn reload(&mut self, waiter: Option<u64>) -> Vec<Action> {
        match self.mode {
            Mode::Serving => self.begin_reload(waiter.into_iter().collect()),
            Mode::Reloading => {
                // Coalesced: however many arrive now, one more reload runs after this one.
                self.pending_reload
                    .get_or_insert_with(Vec::new)
                    .extend(waiter);
                vec![Action::Note(
                    "reload requested during a reload: it will run once this one ends".into(),
                )]
            }
            Mode::Starting | Mode::Backoff => {
                // Before a generation serves there is nothing to hand over from, but the
                // request must not be lost: the configuration may have changed after the
                // starting generation read it. Coalesced like a reload during a reload,
                // it runs once the starting (or recovering) generation serves.
                let first = self.pending_reload.is_none();
                self.pending_reload
                    .get_or_insert_with(Vec::new)
                    .extend(waiter);
                match first {
                    true => vec![Action::Note(format!(
                        "reload requested while {}: it will run once the child serves",
                        self.mode.as_str()
                    ))],
                    false => vec![],
                }
            }
            mode => vec![Action::ReloadFinished {
                waiters: waiter.into_iter().collect(),
                result: Err(format!("cannot reload while {}", mode.as_str())),
            }],
        }
    }

    fn begin_reload(&mut self, waiters: Vec<u64>) -> Vec<Action> {
        self.mode = Mode::Reloading;
        self.reload_waiters = waiters;
        let gen = self.current.unwrap_or(0);
        vec![
            Action::NotifyReloading(format!(
                "reloading: checking the new configuration (generation {gen} keeps serving)"
            )),
            Action::CheckConfig,
        ]
    }

    fn config_checked(&mut self, result: Result<(), String>, now: Instant) -> Vec<Action> {
        if self.mode != Mode::Reloading || self.next.is_some() {
            return vec![];
        }
        match result {
            Ok(()) => self.spawn(Why::Reload, now),
            Err(e) => self.reload_failed(format!("configuration check failed: {e}"), now),
        }
    }

    fn reload_failed(&mut self, reason: String, now: Instant) -> Vec<Action> {
        if self.mode == Mode::Stopping {
            return vec![];
        }
        if self.current.is_none() {
            // The old generation died during the reload and the new one failed: recover.
            self.mode = Mode::Serving;
            let mut out = vec![Action::ReloadFinished {
                waiters: std::mem::take(&mut self.reload_waiters),
                result: Err(reason.clone()),
            }];
            out.extend(self.crashed(reason, ChildStatus::Code(1), None, now));
            return out;
        }
        self.mode = Mode::Serving;
        let mut out = vec![
            Action::Warn(format!(
                "reload failed: {reason}; the old generation keeps serving"
            )),
            Action::NotifyReady(self.serving_status(&format!(" (reload failed: {reason})"))),
            Action::ReloadFinished {
                waiters: std::mem::take(&mut self.reload_waiters),
                result: Err(reason),
            },
        ];
        if let Some(waiters) = self.pending_reload.take() {
            out.extend(self.begin_reload(waiters));
        }
        out
    }

    fn operator_restart(&mut self, now: Instant) -> Vec<Action> {
        if !matches!(self.mode, Mode::Serving | Mode::Starting) {
            return vec![Action::Note(format!(
                "restart ignored while {}",
                self.mode.as_str()
            ))];
        }
        self.restarts += 1;
        let mut out = vec![];
        if let Some(old) = self.current.take() {
            out.extend(self.terminate(old, now));
        }
        self.mode = Mode::Starting;
        out.extend(self.spawn(Why::Restart, now));
        out
    }

    fn health(&mut self, ok: bool) -> Vec<Action> {
        match self.mode {
            Mode::Serving | Mode::Reloading if ok => {
                self.health_failed = 0;
                vec![Action::WatchdogPing]
            }
            Mode::Serving | Mode::Reloading => {
                self.health_failed += 1;
                let gen = self.current.unwrap_or(0);
                let mut out = vec![Action::Warn(format!(
                    "generation {gen} failed its health probe ({} in a row)",
                    self.health_failed
                ))];
                if self.policy.health_failures > 0
                    && self.health_failed >= self.policy.health_failures
                    && self.mode == Mode::Serving
                {
                    out.extend(self.kill(gen, KillReason::Unhealthy));
                }
                out
            }
            // Starting, restarting or stopping is progress: systemd must not kill steward
            // for it. Only a serving child that fails its probe withholds the ping.
            Mode::Starting | Mode::Backoff | Mode::Stopping => vec![Action::WatchdogPing],
            Mode::Exited => vec![],
        }
    }

    // ----- timers ------------------------------------------------------------------------

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = vec![];
        let ids: Vec<GenId> = self.gens.keys().copied().collect();
        for id in ids {
            let Some(g) = self.gens.get(&id) else {
                continue;
            };
            match g.state {
                GenState::Starting if now >= g.spawned + self.policy.start_timeout => {
                    out.extend(self.kill(id, KillReason::StartTimeout));
                }
                GenState::Draining => {
                    if g.deadline_at.is_some_and(|d| now >= d) {
                        out.extend(self.kill(id, KillReason::Deadline));
                    } else if let (Some(since), Some(quiet)) =
                        (g.quiet_since, self.policy.drain_quiet)
                    {
                        if now >= since + quiet {
                            out.extend(self.kill(id, KillReason::Drained));
                        }
                    }
                }
                _ => {}
            }
        }
        if self.mode == Mode::Backoff && self.backoff_until.is_some_and(|t| now >= t) {
            self.backoff_until = None;
            self.restarts += 1;
            self.mode = Mode::Starting;
            out.extend(self.spawn(Why::Crash, now));
        }
        // Once every generation is killed, "draining" would be wrong; the exit follows.
        let draining = self.gens.values().any(|g| g.state == GenState::Draining);
        if self.mode == Mode::Stopping
            && draining
            && now >= self.last_status + STATUS_REFRESH
            && out.is_empty()
        {
            self.last_status = now;
            out.push(Action::Status(self.draining_status(now)));
        }
        out
    }

    /// Leaves once the decision is made and no generation is left.
    fn maybe_exit(&mut self) -> Vec<Action> {
        if !self.gens.is_empty() {
            return vec![];
        }
        let code = if let Some(code) = self.leaving_with {
            code
        } else if self.mode == Mode::Stopping {
            match self.stop_status {
                Some(s) if !s.is_stop_outcome() => s.as_exit_code(),
                _ => exit::OK,
            }
        } else {
            return vec![];
        };
        self.mode = Mode::Exited;
        let mut out = vec![];
        // Reloads requested before a start that failed: nobody is left to run them.
        let mut waiters = std::mem::take(&mut self.reload_waiters);
        waiters.extend(self.pending_reload.take().unwrap_or_default());
        if !waiters.is_empty() {
            out.push(Action::ReloadFinished {
                waiters,
                result: Err(format!("steward is exiting with code {code}")),
            });
        }
        out.push(Action::Exit(code));
        out
    }
}

fn in_flight_text(n: Option<usize>) -> String {
    match n {
        Some(1) => "1 request in flight".to_string(),
        Some(n) => format!("{n} requests in flight"),
        None => "the child still running".to_string(),
    }
}

fn time_left(deadline: Option<Instant>, now: Instant) -> String {
    match deadline {
        Some(d) => format!(
            "{:.1} s left",
            d.saturating_duration_since(now).as_secs_f64()
        ),
        None => "no deadline".to_string(),
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
