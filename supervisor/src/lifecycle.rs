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
//!
//! The mode is a `Phase` that holds the data only it has (a reload's old and next
//! generation and waiters, a backoff's end, a stop's start and signal): each transition
//! builds the next phase whole, so no mode is left holding another's data. The
//! invariants no sequence of events may break are checked by a proptest
//! (`lifecycle_invariants.rs`).

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

/// Why a generation is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Start,
    Reload,
    Restart,
    Crash,
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
    /// The generation passed its probe, but no process of it holds these listeners that
    /// steward handed over: a key matched none of its own addresses, so those ports
    /// would be served by nobody.
    Unclaimed {
        gen: GenId,
        listeners: Unclaimed,
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
    /// An operator's `steward restart`; `waiter` identifies who waits for the answer.
    Restart {
        waiter: Option<u64>,
    },
    /// One health probe of the current generation.
    Health {
        ok: bool,
    },
    /// A timer the machine asked for through [`Lifecycle::next_wakeup`] is due.
    Tick,
    /// steward's start-up is over: generation 1 may start.
    Start,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-read the configuration, write the effective Pingora conf, run the child with
    /// `-t`; answer with [`Event::ConfigChecked`].
    CheckConfig,
    /// The check ran out of time: end it and answer [`Event::ConfigChecked`] with why.
    AbandonCheck,
    /// Start a generation and hand it the sockets; answer with Spawned or SpawnFailed.
    Spawn {
        gen: GenId,
        why: Why,
    },
    /// `READY=1` with this status.
    NotifyReady(Fact),
    /// `RELOADING=1` and `MONOTONIC_USEC` with this status.
    NotifyReloading(Fact),
    /// `STOPPING=1` with this status.
    NotifyStopping(Fact),
    Status(Fact),
    /// SIGTERM to the generation's child, then watch its drain.
    Terminate {
        gen: GenId,
    },
    /// SIGKILL the generation's process group and every descendant. `drain_began` and
    /// `in_flight`: since when it drained and what it was last counted to hold, for the
    /// kill's log line.
    KillTree {
        gen: GenId,
        reason: KillReason,
        drain_began: Option<Instant>,
        in_flight: Option<usize>,
    },
    /// Close steward's copies of the listening sockets.
    CloseSockets,
    /// End a generation whose start went wrong (quietly: `reason` says why, and is
    /// reported as its failed start).
    Reject {
        gen: GenId,
        reason: String,
    },
    /// Answer these reload waiters.
    ReloadFinished {
        waiters: Vec<u64>,
        result: Result<GenId, ReloadError>,
    },
    /// Answer a restart's waiter: `Ok`, a new generation starts; `Err`, the mode that
    /// refused it.
    RestartAnswered {
        waiter: u64,
        result: Result<(), Mode>,
    },
    /// `WATCHDOG=1`.
    WatchdogPing,
    /// Something worth a log line that changes nothing else.
    Note(Fact),
    /// Something went wrong, worth a warning.
    Warn(Fact),
    /// Leave with this exit code once every descendant is reaped.
    Exit(i32),
}

/// Listeners a generation did not claim, and the configuration that names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclaimed {
    pub keys: Vec<String>,
    pub config: std::path::PathBuf,
}

/// What happened, as the machine knows it; the `render` module words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A generation runs; it is waited for until it serves.
    Spawned {
        gen: GenId,
        pid: u32,
        why: Why,
    },
    /// Generation 1 could not be started.
    StartFailed {
        reason: String,
    },
    /// The current generation serves; `reload`: what the reload that led here came to.
    Serving {
        gen: GenId,
        pid: u32,
        restarts: u32,
        reload: Option<Result<(), ReloadFailure>>,
    },
    /// A reload checks the new configuration while `old` serves.
    Checking {
        old: GenId,
    },
    /// The stop began; `during`: the mode it interrupted; `left`: until the deadline.
    StopBegan {
        signal: StopSignal,
        during: Mode,
        pid: u32,
        left: Option<Duration>,
    },
    /// A second SIGTERM, which changes nothing.
    StopUnderWay,
    /// A stop signal arrived before generation 1 was started: steward leaves at once.
    StopBeforeStart {
        signal: StopSignal,
    },
    /// A reload was asked for before generation 1 was started: one runs once it serves.
    ReloadBeforeStart,
    /// The draining generations' requests in flight (`None`: not counted yet).
    Draining {
        in_flight: Option<usize>,
        pids: Vec<u32>,
        left: Option<Duration>,
    },
    Killing {
        gen: GenId,
        pid: u32,
        reason: KillReason,
        in_flight: Option<usize>,
        start_timeout: Duration,
        health_failed: u32,
    },
    /// A generation ended during the stop.
    Stopped {
        gen: GenId,
        pid: u32,
        status: ChildStatus,
    },
    /// A retired generation ended.
    Retired {
        gen: GenId,
        pid: u32,
        status: ChildStatus,
    },
    /// A generation no phase wanted any more ended.
    Exited {
        gen: GenId,
        pid: u32,
        status: ChildStatus,
    },
    /// The first generation was killed by its start timeout.
    NeverServed {
        gen: GenId,
        pid: u32,
    },
    /// The first generation ended by itself before it served.
    EndedBeforeReady {
        pid: u32,
        status: ChildStatus,
    },
    /// A crash, counted; the next generation starts after `backoff`.
    Crashed {
        what: Crash,
        backoff: Duration,
        crashes: usize,
        allowed: u32,
        window: Duration,
    },
    RestartingIn {
        what: Crash,
        backoff: Duration,
    },
    /// steward gives up; `crashes`: how many within which window, when they decided it.
    GaveUp {
        what: Crash,
        crashes: Option<(usize, Duration)>,
    },
    /// A reload asked for `during` a mode that cannot run it now: it runs later.
    ReloadQueued {
        during: Mode,
    },
    ReloadFailed(ReloadFailure),
    RestartIgnored {
        during: Mode,
    },
    HealthFailed {
        gen: GenId,
        in_a_row: u32,
    },
}

/// How the current generation was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crash {
    Unhealthy {
        gen: GenId,
        pid: u32,
    },
    Ended {
        gen: GenId,
        pid: u32,
        status: ChildStatus,
    },
    DidNotStart {
        gen: GenId,
        reason: String,
    },
    /// The old generation died during a reload whose new one then failed.
    Reload(ReloadFailure),
}

/// Why a reload failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadFailure {
    /// `child -t`, or reading the configuration, said why.
    Check(String),
    DidNotStart {
        gen: GenId,
        reason: String,
    },
    ExitedBeforeServing {
        gen: GenId,
        pid: u32,
        status: ChildStatus,
    },
}

/// A reload's answer when it brought no generation up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    Failed(ReloadFailure),
    Stopping,
    Exiting(i32),
    /// Asked for in a mode that cannot run one.
    Refused(Mode),
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
    /// The child ends itself once drained (it runs steward-pingora: `child.handoff =
    /// "inherit"`, which the check refuses for any other binary). Its drained generation
    /// is then given [`SELF_EXIT_GRACE`] to exit on its own (destructors, buffered logs)
    /// before steward ends it; a stock child, which would sleep out its grace period, is
    /// ended at once.
    pub self_ending: bool,
}

/// How long a drained self-ending child may take to exit by itself before steward ends
/// it: its own drain sees the last connection gone within milliseconds, then Pingora
/// stops its runtimes. Ample on a loaded host; a child that hangs costs the stop this.
pub const SELF_EXIT_GRACE: Duration = Duration::from_secs(1);

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
    /// Health probes failed in a row while it was current.
    pub health_failed: u32,
}

/// How long a reload's configuration check (reading it, `child -t`) may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the draining STATUS line refreshes its "time left".
const STATUS_REFRESH: Duration = Duration::from_secs(1);

/// Where the machine is, with the data that exists only there: a mode cannot hold a
/// generation or a waiter it has no use for, and a transition builds the next phase whole.
#[derive(Debug)]
enum Phase {
    /// steward's start-up is still under way (no generation yet); `pending`: reloads
    /// asked for meanwhile, run once generation 1 serves.
    Preparing {
        pending: Option<Vec<u64>>,
    },
    /// `current` was spawned and has not served yet; `pending`: reloads asked for meanwhile.
    Starting {
        current: GenId,
        pending: Option<Vec<u64>>,
    },
    Serving {
        current: GenId,
    },
    Reloading(Reloading),
    /// The current generation crashed; the next one starts at `until`.
    Backoff {
        until: Instant,
        pending: Option<Vec<u64>>,
    },
    Stopping(Stopping),
    /// steward has decided to exit with `code` once the generations left are gone; `was`:
    /// the mode it was in, which it still reports.
    Leaving {
        code: i32,
        waiters: Vec<u64>,
        was: Mode,
    },
    /// `stopped`: the stop that led here, if one did.
    Exited {
        stopped: Option<Stopping>,
    },
}

#[derive(Debug)]
struct Reloading {
    step: Step,
    /// Who waits for this reload's answer.
    waiters: Vec<u64>,
    /// Reloads asked for during this one: coalesced into one more, run once it ends.
    pending: Option<Vec<u64>>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// `child -t` runs on the new configuration while `old` serves; `until`: when it is
    /// abandoned (`None` once it is).
    Checking { old: GenId, until: Option<Instant> },
    /// `next` starts beside `old`; `old` is `None` once it crashed, and `next` is then
    /// the way back.
    Starting { old: Option<GenId>, next: GenId },
}

impl Step {
    fn old(self) -> Option<GenId> {
        match self {
            Step::Checking { old, .. } => Some(old),
            Step::Starting { old, .. } => old,
        }
    }

    fn next(self) -> Option<GenId> {
        match self {
            Step::Checking { .. } => None,
            Step::Starting { next, .. } => Some(next),
        }
    }
}

#[derive(Debug, Clone)]
struct Stopping {
    began: Instant,
    signal: StopSignal,
    /// The generation that was current when the stop began, until it ends.
    current: Option<GenId>,
    /// How `current` ended: steward's exit code.
    status: Option<ChildStatus>,
    last_status: Instant,
    /// The exit code decided before the stop, if one was.
    leaving_with: Option<i32>,
}

/// What a crash count says.
enum Verdict {
    /// Restart after this backoff.
    Backoff(Duration),
    /// Give up: exit with this code; `crashes`: how many, within which window, if their
    /// count decided it.
    GiveUp {
        code: i32,
        crashes: Option<(usize, Duration)>,
    },
}

/// Which part a generation plays in the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Current,
    /// The generation a reload is bringing up.
    Next,
    /// Retired, or spawned for a phase that has ended.
    Other,
}

#[derive(Debug)]
pub struct Lifecycle {
    phase: Phase,
    policy: Policy,
    gens: BTreeMap<GenId, Gen>,
    last_gen: GenId,
    crashes: Vec<Instant>,
    consecutive_crashes: u32,
    restarts: u32,
    /// Whether any generation has served: before that, a generation that fails ends steward.
    served_once: bool,
}

impl Lifecycle {
    /// A machine about to start generation 1; carry out the returned actions.
    /// A machine still preparing: signals are decided (a stop ends steward before any
    /// child, a reload waits for generation 1) until [`Event::Start`] starts it.
    pub fn new(policy: Policy) -> Self {
        Lifecycle {
            phase: Phase::Preparing { pending: None },
            policy,
            gens: BTreeMap::new(),
            last_gen: 0,
            crashes: vec![],
            consecutive_crashes: 0,
            restarts: 0,
            served_once: false,
        }
    }

    /// A machine whose start-up is over: generation 1 is asked for.
    pub fn start(policy: Policy, now: Instant) -> (Self, Vec<Action>) {
        let mut m = Lifecycle::new(policy);
        let spawn = m.handle(Event::Start, now);
        (m, spawn)
    }

    /// Before generation 1: only a stop or a reload means anything yet.
    fn preparing(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let Phase::Preparing { pending } = &mut self.phase else {
            return vec![];
        };
        match event {
            Event::Start => {
                let pending = pending.take();
                let (current, spawn) = self.spawn(Why::Start, now);
                self.phase = Phase::Starting { current, pending };
                spawn
            }
            Event::Stop(signal) => {
                self.phase = Phase::Exited { stopped: None };
                vec![
                    Action::Note(Fact::StopBeforeStart { signal }),
                    Action::Exit(exit::OK),
                ]
            }
            Event::Reload { waiter } => {
                let first = pending.is_none();
                pending.get_or_insert_with(Vec::new).extend(waiter);
                first
                    .then_some(Action::Note(Fact::ReloadBeforeStart))
                    .into_iter()
                    .collect()
            }
            Event::Restart { waiter } => waiter
                .map(|waiter| Action::RestartAnswered {
                    waiter,
                    result: Err(Mode::Starting),
                })
                .into_iter()
                .collect(),
            _ => vec![],
        }
    }

    pub fn mode(&self) -> Mode {
        match &self.phase {
            Phase::Preparing { .. } | Phase::Starting { .. } => Mode::Starting,
            Phase::Serving { .. } => Mode::Serving,
            Phase::Reloading(_) => Mode::Reloading,
            Phase::Backoff { .. } => Mode::Backoff,
            Phase::Stopping(_) => Mode::Stopping,
            Phase::Leaving { was, .. } => *was,
            Phase::Exited { .. } => Mode::Exited,
        }
    }

    fn current_id(&self) -> Option<GenId> {
        match &self.phase {
            Phase::Starting { current, .. } | Phase::Serving { current } => Some(*current),
            Phase::Reloading(r) => r.step.old(),
            Phase::Stopping(s) => s.current,
            Phase::Preparing { .. }
            | Phase::Backoff { .. }
            | Phase::Leaving { .. }
            | Phase::Exited { .. } => None,
        }
    }

    fn role(&self, gen: GenId) -> Role {
        match &self.phase {
            Phase::Reloading(r) if r.step.next() == Some(gen) => Role::Next,
            _ if self.current_id() == Some(gen) => Role::Current,
            _ => Role::Other,
        }
    }

    pub fn current(&self) -> Option<&Gen> {
        self.current_id().and_then(|g| self.gens.get(&g))
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

    fn stopping(&self) -> Option<&Stopping> {
        match &self.phase {
            Phase::Stopping(s) => Some(s),
            Phase::Exited { stopped } => stopped.as_ref(),
            _ => None,
        }
    }

    pub fn stop_signal(&self) -> Option<StopSignal> {
        self.stopping().map(|s| s.signal)
    }

    /// Time since the stop began, if it has.
    pub fn stop_elapsed(&self, now: Instant) -> Option<Duration> {
        self.stopping()
            .map(|s| now.saturating_duration_since(s.began))
    }

    /// Reload waiters not answered yet.
    #[cfg(test)]
    fn unanswered(&self) -> Vec<u64> {
        match &self.phase {
            Phase::Preparing { pending }
            | Phase::Starting { pending, .. }
            | Phase::Backoff { pending, .. } => pending.clone().unwrap_or_default(),
            Phase::Reloading(r) => r
                .waiters
                .iter()
                .chain(r.pending.iter().flatten())
                .copied()
                .collect(),
            Phase::Leaving { waiters, .. } => waiters.clone(),
            Phase::Serving { .. } | Phase::Stopping(_) | Phase::Exited { .. } => vec![],
        }
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
                    if let (Some(q), Some(quiet)) = (g.quiet_since, self.quiet()) {
                        times.push(q + quiet);
                    }
                }
                _ => {}
            }
        }
        match &self.phase {
            Phase::Backoff { until, .. } => times.push(*until),
            Phase::Reloading(Reloading {
                step: Step::Checking {
                    until: Some(until), ..
                },
                ..
            }) => times.push(*until),
            Phase::Stopping(s) => times.push(s.last_status + STATUS_REFRESH),
            _ => {}
        }
        times.into_iter().min()
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Exited { .. } => return vec![],
            Phase::Preparing { .. } => return self.preparing(event, now),
            _ => {}
        }
        let mut out = match event {
            Event::Start => vec![],
            Event::Spawned { gen, pid } => self.spawned(gen, pid, now),
            Event::SpawnFailed { gen, reason, code } => self.spawn_failed(gen, reason, code, now),
            Event::Ready { gen } => self.ready(gen, now),
            Event::Unclaimed { gen, listeners } => self.unclaimed(gen, listeners, now),
            Event::Exited { gen, status } => self.exited(gen, status, now),
            Event::Drain {
                gen,
                in_flight,
                closed,
            } => self.observe_drain(gen, in_flight, closed, now),
            Event::Stop(sig) => self.stop(sig, now),
            Event::Reload { waiter } => self.reload(waiter, now),
            Event::ConfigChecked(result) => self.config_checked(result, now),
            Event::Restart { waiter } => self.operator_restart(waiter, now),
            Event::Health { ok } => self.health(ok),
            Event::Tick => self.tick(now),
        };
        out.extend(self.maybe_exit());
        out
    }

    // ----- generations --------------------------------------------------------------

    /// A new generation, asked for; the caller makes it current or next.
    fn spawn(&mut self, why: Why, now: Instant) -> (GenId, Vec<Action>) {
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
                health_failed: 0,
            },
        );
        (id, vec![Action::Spawn { gen: id, why }])
    }

    fn spawned(&mut self, gen: GenId, pid: u32, now: Instant) -> Vec<Action> {
        let stopping = matches!(self.phase, Phase::Stopping(_));
        let role = self.role(gen);
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![];
        };
        if g.state != GenState::Spawning {
            return vec![];
        }
        g.pid = Some(pid);
        g.spawned = now;
        g.state = GenState::Starting;
        let why = g.why;
        // A generation the phase no longer wants (a stop, or a restart while it was
        // being spawned) is retired as soon as it runs.
        if stopping || role == Role::Other {
            return self.terminate(gen, now);
        }
        vec![Action::Status(Fact::Spawned { gen, pid, why })]
    }

    fn spawn_failed(&mut self, gen: GenId, reason: String, code: i32, now: Instant) -> Vec<Action> {
        let role = self.role(gen);
        let Some(g) = self.gens.remove(&gen) else {
            return vec![];
        };
        if let Phase::Stopping(_) = self.phase {
            return vec![];
        }
        match role {
            Role::Next => self.reload_failed(ReloadFailure::DidNotStart { gen, reason }, now),
            // Before anything served, any failure of the current generation is the
            // start's (the first generation's; none is restarted before it served).
            Role::Current if !self.served_once => {
                let waiters = self.take_waiters();
                self.leave(
                    code,
                    waiters,
                    vec![Action::Status(Fact::StartFailed { reason })],
                    now,
                )
            }
            // The driver killed it: the current generation is gone.
            Role::Current => self.current_crashed(
                Crash::DidNotStart { gen, reason },
                ChildStatus::Code(code),
                g.serving_since,
                now,
            ),
            Role::Other => vec![],
        }
    }

    /// A generation that serves without all of steward's listeners did not start: a
    /// reload fails with the old generation untouched, a first start ends steward with
    /// the configuration error, a restart backs off as any failed start does.
    fn unclaimed(&mut self, gen: GenId, listeners: Unclaimed, now: Instant) -> Vec<Action> {
        let starting = self
            .gens
            .get(&gen)
            .is_some_and(|g| g.state == GenState::Starting);
        if !starting || self.role(gen) == Role::Other {
            return vec![];
        }
        let reason = listeners.to_string();
        let mut out = vec![Action::Reject {
            gen,
            reason: reason.clone(),
        }];
        out.extend(self.spawn_failed(gen, reason, exit::CONFIG, now));
        out
    }

    fn ready(&mut self, gen: GenId, now: Instant) -> Vec<Action> {
        let role = self.role(gen);
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![];
        };
        if g.state != GenState::Starting || role == Role::Other {
            return vec![];
        }
        g.state = GenState::Serving;
        g.serving_since = Some(now);
        let serving = Phase::Serving { current: gen };
        match std::mem::replace(&mut self.phase, serving) {
            Phase::Reloading(r) => {
                let mut out = vec![];
                if let Some(old) = r.step.old() {
                    out.extend(self.terminate(old, now));
                }
                out.push(Action::NotifyReady(self.serving(Some(Ok(())))));
                out.push(Action::ReloadFinished {
                    waiters: r.waiters,
                    result: Ok(gen),
                });
                if let Some(waiters) = r.pending {
                    out.extend(self.begin_reload(gen, waiters, now));
                }
                out
            }
            Phase::Starting { pending, .. } => {
                self.served_once = true;
                let mut out = vec![Action::NotifyReady(self.serving(None))];
                // Reloads requested before this generation served.
                if let Some(waiters) = pending {
                    out.extend(self.begin_reload(gen, waiters, now));
                }
                out
            }
            // Current or next exist only while starting or reloading.
            other => {
                self.phase = other;
                vec![]
            }
        }
    }

    fn serving(&self, reload: Option<Result<(), ReloadFailure>>) -> Fact {
        let (gen, pid) = self
            .current()
            .map(|g| (g.id, g.pid.unwrap_or(0)))
            .unwrap_or((0, 0));
        Fact::Serving {
            gen,
            pid,
            restarts: self.restarts,
            reload,
        }
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
            // Terminated once it runs (see `spawned`).
            GenState::Spawning => return vec![],
            GenState::Starting | GenState::Serving => {}
        }
        g.state = GenState::Draining;
        g.drain_began = Some(now);
        g.deadline_at = deadline;
        vec![Action::Terminate { gen }]
    }

    fn kill(&mut self, gen: GenId, reason: KillReason) -> Vec<Action> {
        let stopping = matches!(self.phase, Phase::Stopping(_));
        let current = self.current_id();
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![];
        };
        if matches!(g.state, GenState::Killing(_)) {
            return vec![];
        }
        g.state = GenState::Killing(reason);
        let pid = g.pid.unwrap_or(0);
        let status = Fact::Killing {
            gen,
            pid,
            reason,
            in_flight: g.in_flight,
            start_timeout: self.policy.start_timeout,
            health_failed: g.health_failed,
        };
        let mut out = vec![];
        // Retiring an old generation quietly is routine; only the current one is news.
        if stopping || Some(gen) == current || reason != KillReason::Drained {
            out.push(Action::Status(status));
        } else {
            out.push(Action::Note(status));
        }
        out.push(Action::KillTree {
            gen,
            reason,
            drain_began: g.drain_began,
            in_flight: g.in_flight,
        });
        out
    }

    fn exited(&mut self, gen: GenId, status: ChildStatus, now: Instant) -> Vec<Action> {
        let role = self.role(gen);
        let Some(g) = self.gens.remove(&gen) else {
            return vec![];
        };
        let pid = g.pid.unwrap_or(0);
        if let Phase::Stopping(s) = &mut self.phase {
            if role == Role::Current {
                s.current = None;
                s.status = Some(status);
            }
            return vec![Action::Note(Fact::Stopped { gen, pid, status })];
        }
        if let GenState::Draining | GenState::Killing(KillReason::Drained | KillReason::Deadline) =
            g.state
        {
            // A retired generation ending is the plan working.
            return vec![Action::Note(Fact::Retired { gen, pid, status })];
        }
        match role {
            Role::Next => {
                self.reload_failed(ReloadFailure::ExitedBeforeServing { gen, pid, status }, now)
            }
            Role::Current if !self.served_once && g.state == GenState::Starting => {
                // A server that leaves before it ever served failed to start.
                let code = match status {
                    ChildStatus::Code(0) => exit::UNAVAILABLE,
                    other => other.as_exit_code(),
                };
                let waiters = self.take_waiters();
                self.leave(
                    code,
                    waiters,
                    vec![Action::Status(Fact::EndedBeforeReady { pid, status })],
                    now,
                )
            }
            Role::Current
                if !self.served_once && g.state == GenState::Killing(KillReason::StartTimeout) =>
            {
                let waiters = self.take_waiters();
                self.leave(
                    exit::UNAVAILABLE,
                    waiters,
                    vec![Action::Status(Fact::NeverServed { gen, pid })],
                    now,
                )
            }
            Role::Current => {
                let what = match g.state {
                    GenState::Killing(KillReason::Unhealthy) => Crash::Unhealthy { gen, pid },
                    _ => Crash::Ended { gen, pid, status },
                };
                self.current_crashed(what, status, g.serving_since, now)
            }
            Role::Other => vec![Action::Note(Fact::Exited { gen, pid, status })],
        }
    }

    /// Every reload waiter the phase holds, taken out of it.
    fn take_waiters(&mut self) -> Vec<u64> {
        match &mut self.phase {
            Phase::Preparing { pending }
            | Phase::Starting { pending, .. }
            | Phase::Backoff { pending, .. } => pending.take().unwrap_or_default(),
            Phase::Reloading(r) => {
                let mut w = std::mem::take(&mut r.waiters);
                w.extend(r.pending.take().unwrap_or_default());
                w
            }
            Phase::Leaving { waiters, .. } => std::mem::take(waiters),
            Phase::Serving { .. } | Phase::Stopping(_) | Phase::Exited { .. } => vec![],
        }
    }

    /// The current generation ended without being asked to.
    fn current_crashed(
        &mut self,
        what: Crash,
        status: ChildStatus,
        serving_since: Option<Instant>,
        now: Instant,
    ) -> Vec<Action> {
        let pending = match &mut self.phase {
            Phase::Reloading(r) => match r.step {
                // A reload was bringing up the next generation; it becomes the way back.
                Step::Starting { next, .. } => {
                    r.step = Step::Starting { old: None, next };
                    return match self.judge_crash(status, serving_since, now) {
                        Verdict::Backoff(backoff) => self.crash_warning(what, backoff),
                        Verdict::GiveUp { code, crashes } => {
                            let waiters = self.take_waiters();
                            let gave_up = Fact::GaveUp { what, crashes };
                            self.leave(code, waiters, vec![Action::Status(gave_up)], now)
                        }
                    };
                }
                // The reload runs again once a generation serves: the one that recovers
                // starts from the configuration the reload has not adopted.
                Step::Checking { .. } => Some(self.take_waiters()),
            },
            Phase::Starting { pending, .. } => pending.take(),
            _ => None,
        };
        self.crashed(what, status, serving_since, pending, now)
    }

    /// No generation is current any more: restart with backoff, or give up so systemd's
    /// `Restart=` policy takes over. `pending`: reloads to run once one serves again.
    fn crashed(
        &mut self,
        what: Crash,
        status: ChildStatus,
        serving_since: Option<Instant>,
        pending: Option<Vec<u64>>,
        now: Instant,
    ) -> Vec<Action> {
        match self.judge_crash(status, serving_since, now) {
            Verdict::GiveUp { code, crashes } => self.leave(
                code,
                pending.unwrap_or_default(),
                vec![Action::Status(Fact::GaveUp { what, crashes })],
                now,
            ),
            Verdict::Backoff(backoff) => {
                self.phase = Phase::Backoff {
                    until: now + backoff,
                    pending,
                };
                self.crash_warning(what, backoff)
            }
        }
    }

    /// Counts a crash and says what follows it.
    fn judge_crash(
        &mut self,
        status: ChildStatus,
        serving_since: Option<Instant>,
        now: Instant,
    ) -> Verdict {
        if self.policy.max_crashes == 0 {
            return Verdict::GiveUp {
                code: status.as_exit_code(),
                crashes: None,
            };
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
            return Verdict::GiveUp {
                code: match status.as_exit_code() {
                    0 => exit::SOFTWARE,
                    c => c,
                },
                crashes: Some((self.crashes.len(), window)),
            };
        }
        self.consecutive_crashes += 1;
        let exp = self.consecutive_crashes.saturating_sub(1).min(20);
        Verdict::Backoff(
            self.policy
                .backoff_min
                .saturating_mul(1u32 << exp)
                .min(self.policy.backoff_max),
        )
    }

    fn crash_warning(&self, what: Crash, backoff: Duration) -> Vec<Action> {
        vec![
            Action::Warn(Fact::Crashed {
                what: what.clone(),
                backoff,
                crashes: self.crashes.len(),
                allowed: self.policy.max_crashes,
                window: self.policy.crash_window,
            }),
            Action::Status(Fact::RestartingIn { what, backoff }),
        ]
    }

    /// steward exits with `code` once no generation is left; one still starting or
    /// serving would never leave by itself, so it is retired.
    fn leave(
        &mut self,
        code: i32,
        waiters: Vec<u64>,
        mut out: Vec<Action>,
        now: Instant,
    ) -> Vec<Action> {
        let was = self.mode();
        self.phase = Phase::Leaving { code, waiters, was };
        let live: Vec<GenId> = self
            .gens
            .values()
            .filter(|g| matches!(g.state, GenState::Starting | GenState::Serving))
            .map(|g| g.id)
            .collect();
        for gen in live {
            out.extend(self.terminate(gen, now));
        }
        out
    }

    // ----- stop ------------------------------------------------------------------------

    fn stop(&mut self, sig: StopSignal, now: Instant) -> Vec<Action> {
        if let Phase::Stopping(_) = self.phase {
            return match sig {
                StopSignal::Int => {
                    let ids: Vec<GenId> = self.gens.keys().copied().collect();
                    ids.into_iter()
                        .flat_map(|g| self.kill(g, KillReason::Operator))
                        .collect()
                }
                StopSignal::Term => vec![Action::Note(Fact::StopUnderWay)],
            };
        }
        let during = self.mode();
        let pid = self.current().and_then(|g| g.pid).unwrap_or(0);
        let current = self.current_id();
        let waiters = self.take_waiters();
        let leaving_with = match self.phase {
            Phase::Leaving { code, .. } => Some(code),
            _ => None,
        };
        self.phase = Phase::Stopping(Stopping {
            began: now,
            signal: sig,
            current,
            status: None,
            last_status: now,
            leaving_with,
        });
        let mut out = vec![
            Action::NotifyStopping(Fact::StopBegan {
                signal: sig,
                during,
                pid,
                left: self.policy.deadline,
            }),
            Action::CloseSockets,
        ];
        if !waiters.is_empty() {
            out.push(Action::ReloadFinished {
                waiters,
                result: Err(ReloadError::Stopping),
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
        if changed {
            if let Phase::Stopping(s) = &mut self.phase {
                s.last_status = now;
                out.push(Action::Status(self.draining_fact(now)));
            }
        }
        if in_flight == 0 && closed && !self.policy.self_ending {
            out.extend(self.kill(gen, KillReason::Drained));
        }
        out.extend(self.tick(now));
        out
    }

    /// How long a draining generation with nothing in flight is left before steward ends
    /// it; `None`: never for that (it exits by itself or meets the deadline).
    fn quiet(&self) -> Option<Duration> {
        let quiet = self.policy.drain_quiet?;
        Some(match self.policy.self_ending {
            true => quiet.max(SELF_EXIT_GRACE),
            false => quiet,
        })
    }

    fn draining_fact(&self, now: Instant) -> Fact {
        let draining: Vec<&Gen> = self
            .gens
            .values()
            .filter(|g| g.state == GenState::Draining)
            .collect();
        let in_flight: Option<usize> = draining
            .iter()
            .map(|g| g.in_flight)
            .try_fold(0usize, |acc, n| n.map(|n| acc + n));
        let deadline = draining.iter().filter_map(|g| g.deadline_at).min();
        Fact::Draining {
            in_flight,
            pids: draining.iter().filter_map(|g| g.pid).collect(),
            left: deadline.map(|d| d.saturating_duration_since(now)),
        }
    }

    // ----- reload and restart -----------------------------------------------------------

    fn reload(&mut self, waiter: Option<u64>, now: Instant) -> Vec<Action> {
        let mode = self.mode();
        match &mut self.phase {
            Phase::Serving { current } => {
                let current = *current;
                self.begin_reload(current, waiter.into_iter().collect(), now)
            }
            Phase::Reloading(r) => {
                // Coalesced: however many arrive now, one more reload runs after this one.
                r.pending.get_or_insert_with(Vec::new).extend(waiter);
                vec![Action::Note(Fact::ReloadQueued {
                    during: Mode::Reloading,
                })]
            }
            Phase::Preparing { pending }
            | Phase::Starting { pending, .. }
            | Phase::Backoff { pending, .. } => {
                // Before a generation serves there is nothing to hand over from, but the
                // request must not be lost: the configuration may have changed after the
                // starting generation read it. Coalesced like a reload during a reload,
                // it runs once the starting (or recovering) generation serves.
                let first = pending.is_none();
                pending.get_or_insert_with(Vec::new).extend(waiter);
                match first {
                    true => vec![Action::Note(Fact::ReloadQueued { during: mode })],
                    false => vec![],
                }
            }
            Phase::Leaving { code, .. } => vec![Action::ReloadFinished {
                waiters: waiter.into_iter().collect(),
                result: Err(ReloadError::Exiting(*code)),
            }],
            Phase::Stopping(_) | Phase::Exited { .. } => vec![Action::ReloadFinished {
                waiters: waiter.into_iter().collect(),
                result: Err(ReloadError::Refused(mode)),
            }],
        }
    }

    /// From serving: check the new configuration while `old` keeps serving.
    fn begin_reload(&mut self, old: GenId, waiters: Vec<u64>, now: Instant) -> Vec<Action> {
        self.phase = Phase::Reloading(Reloading {
            step: Step::Checking {
                old,
                until: Some(now + CHECK_TIMEOUT),
            },
            waiters,
            pending: None,
        });
        vec![
            Action::NotifyReloading(Fact::Checking { old }),
            Action::CheckConfig,
        ]
    }

    fn config_checked(&mut self, result: Result<(), String>, now: Instant) -> Vec<Action> {
        let Phase::Reloading(Reloading {
            step: Step::Checking { old, .. },
            ..
        }) = self.phase
        else {
            return vec![];
        };
        match result {
            Ok(()) => {
                let (next, out) = self.spawn(Why::Reload, now);
                if let Phase::Reloading(r) = &mut self.phase {
                    r.step = Step::Starting {
                        old: Some(old),
                        next,
                    };
                }
                out
            }
            Err(e) => self.reload_failed(ReloadFailure::Check(e), now),
        }
    }

    /// The reload's check or its next generation failed.
    fn reload_failed(&mut self, reason: ReloadFailure, now: Instant) -> Vec<Action> {
        let Phase::Reloading(r) = &mut self.phase else {
            return vec![];
        };
        let (step, waiters, pending) = (r.step, std::mem::take(&mut r.waiters), r.pending.take());
        let Some(old) = step.old() else {
            // The old generation died during the reload and the new one failed: recover.
            let mut out = vec![Action::ReloadFinished {
                waiters,
                result: Err(ReloadError::Failed(reason.clone())),
            }];
            let what = Crash::Reload(reason);
            out.extend(self.crashed(what, ChildStatus::Code(1), None, pending, now));
            return out;
        };
        self.phase = Phase::Serving { current: old };
        let mut out = vec![
            Action::Warn(Fact::ReloadFailed(reason.clone())),
            Action::NotifyReady(self.serving(Some(Err(reason.clone())))),
            Action::ReloadFinished {
                waiters,
                result: Err(ReloadError::Failed(reason)),
            },
        ];
        if let Some(waiters) = pending {
            out.extend(self.begin_reload(old, waiters, now));
        }
        out
    }

    fn operator_restart(&mut self, waiter: Option<u64>, now: Instant) -> Vec<Action> {
        let answer = |result| waiter.map(|waiter| Action::RestartAnswered { waiter, result });
        let (old, pending) = match &mut self.phase {
            Phase::Serving { current } => (*current, None),
            Phase::Starting { current, pending } => (*current, pending.take()),
            _ => {
                let during = self.mode();
                let mut out: Vec<Action> = answer(Err(during)).into_iter().collect();
                out.push(Action::Note(Fact::RestartIgnored { during }));
                return out;
            }
        };
        self.restarts += 1;
        let (current, spawn) = self.spawn(Why::Restart, now);
        self.phase = Phase::Starting { current, pending };
        let mut out: Vec<Action> = answer(Ok(())).into_iter().collect();
        out.extend(self.terminate(old, now));
        out.extend(spawn);
        out
    }

    fn health(&mut self, ok: bool) -> Vec<Action> {
        let (gen, serving) = match &self.phase {
            Phase::Serving { current } => (*current, true),
            Phase::Reloading(Reloading {
                step: Step::Checking { old, .. } | Step::Starting { old: Some(old), .. },
                ..
            }) => (*old, false),
            // Starting, restarting or stopping is progress: systemd must not kill steward
            // for it. Only a serving child that fails its probe withholds the ping.
            _ => return vec![Action::WatchdogPing],
        };
        let Some(g) = self.gens.get_mut(&gen) else {
            return vec![Action::WatchdogPing];
        };
        if ok {
            g.health_failed = 0;
            return vec![Action::WatchdogPing];
        }
        g.health_failed += 1;
        let failed = g.health_failed;
        let mut out = vec![Action::Warn(Fact::HealthFailed {
            gen,
            in_a_row: failed,
        })];
        if serving && self.policy.health_failures > 0 && failed >= self.policy.health_failures {
            out.extend(self.kill(gen, KillReason::Unhealthy));
        }
        out
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
                    } else if let (Some(since), Some(quiet)) = (g.quiet_since, self.quiet()) {
                        if now >= since + quiet {
                            out.extend(self.kill(id, KillReason::Drained));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Phase::Reloading(Reloading {
            step: Step::Checking { until, .. },
            ..
        }) = &mut self.phase
        {
            if until.is_some_and(|t| now >= t) {
                *until = None;
                out.push(Action::AbandonCheck);
            }
        }
        if let Phase::Backoff { until, pending } = &mut self.phase {
            if now >= *until {
                let pending = pending.take();
                self.restarts += 1;
                let (current, spawn) = self.spawn(Why::Crash, now);
                self.phase = Phase::Starting { current, pending };
                out.extend(spawn);
            }
        }
        // Once every generation is killed, "draining" would be wrong; the exit follows.
        let draining = self.gens.values().any(|g| g.state == GenState::Draining);
        if let Phase::Stopping(s) = &self.phase {
            if draining && now >= s.last_status + STATUS_REFRESH && out.is_empty() {
                let status = self.draining_fact(now);
                if let Phase::Stopping(s) = &mut self.phase {
                    s.last_status = now;
                }
                out.push(Action::Status(status));
            }
        }
        out
    }

    /// Leaves once the decision is made and no generation is left.
    fn maybe_exit(&mut self) -> Vec<Action> {
        if !self.gens.is_empty() {
            return vec![];
        }
        let (code, waiters, stopped) =
            match std::mem::replace(&mut self.phase, Phase::Exited { stopped: None }) {
                Phase::Leaving { code, waiters, .. } => (code, waiters, None),
                Phase::Stopping(s) => {
                    let code = s.leaving_with.unwrap_or(match s.status {
                        Some(st) if !st.is_stop_outcome() => st.as_exit_code(),
                        _ => exit::OK,
                    });
                    (code, vec![], Some(s))
                }
                other => {
                    self.phase = other;
                    return vec![];
                }
            };
        self.phase = Phase::Exited { stopped };
        let mut out = vec![];
        // Reloads requested before a start that failed: nobody is left to run them.
        if !waiters.is_empty() {
            out.push(Action::ReloadFinished {
                waiters,
                result: Err(ReloadError::Exiting(code)),
            });
        }
        out.push(Action::Exit(code));
        out
    }
}

#[path = "lifecycle_adopt.rs"]
mod adopt;
pub use adopt::Adopted;

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "lifecycle_invariants.rs"]
mod invariants;
