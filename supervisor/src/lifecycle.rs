//! The supervisor's lifecycle as a state machine with no I/O.
//!
//! ```text
//!            Ready                 Stop(TERM|INT)
//! Starting ─────────▶ Serving ─────────────────────▶ Stopping ──┐ drained / deadline /
//!    │  │                │                             │        │ second SIGINT
//!    │  └─ Stop ─────────┼────────────────────────────▶│        ▼
//!    │ start timeout     │ child exits                 │     Killing
//!    ▼                   ▼                             ▼        │ child reaped
//! Killing ──────────▶ Exited ◀──────── child exits ────┘◀───────┘
//! ```
//!
//! [`Lifecycle::handle`] takes an [`Event`] and the current time and returns the
//! [`Action`]s the driver must carry out; [`Lifecycle::next_wakeup`] says when the driver
//! must call back with [`Event::Tick`] even if nothing happens. Time is passed in, never
//! read, so the unit tests drive every transition with paused tokio time and no process.

use std::time::Duration;

use tokio::time::Instant;

use crate::exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Serving,
    Stopping,
    Killing,
    Exited,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Stopping => "stopping",
            Phase::Killing => "killing",
            Phase::Exited => "exited",
        }
    }
}

/// How the child ended, as `waitpid` reports it.
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

/// Why steward SIGKILLs the child's process tree.
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
}

impl KillReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::Drained => "drained",
            KillReason::Deadline => "deadline",
            KillReason::StartTimeout => "start-timeout",
            KillReason::Operator => "operator",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The readiness probe passed.
    Ready,
    Stop(StopSignal),
    /// A drain observation: downstream connections the child still holds.
    Drain {
        in_flight: usize,
    },
    ChildExited(ChildStatus),
    /// A timer the machine asked for through [`Lifecycle::next_wakeup`] is due.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `READY=1` with this status.
    NotifyReady(String),
    /// `STOPPING=1` with this status.
    NotifyStopping(String),
    Status(String),
    /// Forward SIGTERM to the child.
    ForwardTerm,
    /// SIGKILL the child's process group and every descendant.
    KillTree(KillReason),
    /// Something happened that changes nothing; logged at info.
    Ignored(&'static str),
    /// Leave with this exit code once every descendant is reaped.
    Exit(i32),
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `None`: no stop deadline (the unit's TimeoutStopSec is infinity).
    pub deadline: Option<Duration>,
    pub start_timeout: Duration,
    /// `Some`: drain detection by connections, ended after this long with none in flight.
    /// `None`: wait for the child to exit by itself.
    pub drain_quiet: Option<Duration>,
}

/// How often the draining STATUS line refreshes its "time left".
const STATUS_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Lifecycle {
    phase: Phase,
    timing: Timing,
    child_pid: u32,
    started: Instant,
    stop_began: Option<Instant>,
    stop_signal: Option<StopSignal>,
    quiet_since: Option<Instant>,
    in_flight: Option<usize>,
    in_flight_at_stop: Option<usize>,
    last_status: Instant,
    kill_reason: Option<KillReason>,
    exit_status: Option<ChildStatus>,
}

impl Lifecycle {
    /// A machine for a child that was just spawned.
    pub fn new(child_pid: u32, timing: Timing, now: Instant) -> Self {
        Lifecycle {
            phase: Phase::Starting,
            timing,
            child_pid,
            started: now,
            stop_began: None,
            stop_signal: None,
            quiet_since: None,
            in_flight: None,
            in_flight_at_stop: None,
            last_status: now,
            kill_reason: None,
            exit_status: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn child_pid(&self) -> u32 {
        self.child_pid
    }

    pub fn kill_reason(&self) -> Option<KillReason> {
        self.kill_reason
    }

    pub fn in_flight(&self) -> Option<usize> {
        self.in_flight
    }

    pub fn in_flight_at_stop(&self) -> Option<usize> {
        self.in_flight_at_stop
    }

    pub fn stop_signal(&self) -> Option<StopSignal> {
        self.stop_signal
    }

    /// Time since the stop began, if it has.
    pub fn stop_elapsed(&self, now: Instant) -> Option<Duration> {
        self.stop_began.map(|t| now.saturating_duration_since(t))
    }

    pub fn deadline_at(&self) -> Option<Instant> {
        Some(self.stop_began? + self.timing.deadline?)
    }

    /// The earliest time at which [`Event::Tick`] can change something.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match self.phase {
            Phase::Starting => Some(self.started + self.timing.start_timeout),
            Phase::Stopping => [
                self.deadline_at(),
                self.quiet_since
                    .zip(self.timing.drain_quiet)
                    .map(|(t, q)| t + q),
                Some(self.last_status + STATUS_REFRESH),
            ]
            .into_iter()
            .flatten()
            .min(),
            Phase::Serving | Phase::Killing | Phase::Exited => None,
        }
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match (self.phase, event) {
            (Phase::Exited, _) => vec![],

            (_, Event::ChildExited(status)) => self.child_exited(status),

            (Phase::Starting, Event::Ready) => {
                self.phase = Phase::Serving;
                vec![Action::NotifyReady(format!(
                    "serving: child pid {}",
                    self.child_pid
                ))]
            }
            (Phase::Starting | Phase::Serving, Event::Stop(sig)) => self.begin_stop(sig, now),
            (Phase::Starting, Event::Tick) => {
                if now >= self.started + self.timing.start_timeout {
                    self.kill(KillReason::StartTimeout)
                } else {
                    vec![]
                }
            }

            (Phase::Stopping, Event::Stop(StopSignal::Int)) => self.kill(KillReason::Operator),
            (Phase::Stopping, Event::Stop(StopSignal::Term)) => {
                vec![Action::Ignored(
                    "SIGTERM while stopping: the stop is already under way",
                )]
            }
            (Phase::Stopping, Event::Drain { in_flight }) => self.observe_drain(in_flight, now),
            (Phase::Stopping, Event::Tick) => self.stopping_tick(now),

            (Phase::Killing, Event::Stop(_)) => {
                vec![Action::Ignored(
                    "stop signal while killing: already ending the child",
                )]
            }
            _ => vec![],
        }
    }

    fn begin_stop(&mut self, sig: StopSignal, now: Instant) -> Vec<Action> {
        let was_serving = self.phase == Phase::Serving;
        self.phase = Phase::Stopping;
        self.stop_began = Some(now);
        self.stop_signal = Some(sig);
        self.last_status = now;
        let when = if was_serving {
            ""
        } else {
            " before the child was ready"
        };
        vec![
            Action::NotifyStopping(format!(
                "stopping: {} received{when}, draining child pid {}, {}",
                sig.as_str(),
                self.child_pid,
                self.time_left(now)
            )),
            Action::ForwardTerm,
        ]
    }

    fn observe_drain(&mut self, in_flight: usize, now: Instant) -> Vec<Action> {
        let changed = self.in_flight != Some(in_flight);
        if self.in_flight_at_stop.is_none() {
            self.in_flight_at_stop = Some(in_flight);
        }
        self.in_flight = Some(in_flight);
        if in_flight == 0 {
            self.quiet_since.get_or_insert(now);
        } else {
            self.quiet_since = None;
        }
        let mut actions = vec![];
        if changed {
            self.last_status = now;
            actions.push(Action::Status(self.draining_status(now)));
        }
        actions.extend(self.stopping_tick(now));
        actions
    }

    fn stopping_tick(&mut self, now: Instant) -> Vec<Action> {
        if self.deadline_at().is_some_and(|d| now >= d) {
            return self.kill(KillReason::Deadline);
        }
        if let (Some(since), Some(quiet)) = (self.quiet_since, self.timing.drain_quiet) {
            if now >= since + quiet {
                return self.kill(KillReason::Drained);
            }
        }
        if now >= self.last_status + STATUS_REFRESH {
            self.last_status = now;
            return vec![Action::Status(self.draining_status(now))];
        }
        vec![]
    }

    fn kill(&mut self, reason: KillReason) -> Vec<Action> {
        self.phase = Phase::Killing;
        self.kill_reason = Some(reason);
        let pid = self.child_pid;
        let status = match reason {
            KillReason::Drained => {
                format!("stopping: drained, no request in flight; ending child pid {pid}")
            }
            KillReason::Deadline => format!(
                "killing: stop deadline reached with {}; SIGKILL to child pid {pid} and its process tree",
                self.in_flight_text()
            ),
            KillReason::StartTimeout => format!(
                "killing: child pid {pid} did not become ready within {} s",
                self.timing.start_timeout.as_secs_f64()
            ),
            KillReason::Operator => {
                format!("killing: second SIGINT; SIGKILL to child pid {pid} and its process tree")
            }
        };
        vec![Action::Status(status), Action::KillTree(reason)]
    }

    fn child_exited(&mut self, status: ChildStatus) -> Vec<Action> {
        let before = self.phase;
        self.phase = Phase::Exited;
        self.exit_status = Some(status);
        let code = match before {
            // A server that leaves before it ever served failed to start, whatever its code.
            Phase::Starting if status == ChildStatus::Code(0) => exit::UNAVAILABLE,
            Phase::Starting | Phase::Serving => status.as_exit_code(),
            Phase::Stopping => match status {
                ChildStatus::Code(0) => exit::OK,
                ChildStatus::Signal(s)
                    if s == libc::SIGTERM || s == libc::SIGKILL || s == libc::SIGINT =>
                {
                    exit::OK
                }
                other => other.as_exit_code(),
            },
            Phase::Killing => match self.kill_reason {
                Some(KillReason::StartTimeout) => exit::UNAVAILABLE,
                _ => exit::OK,
            },
            Phase::Exited => return vec![],
        };
        let pid = self.child_pid;
        let text = match before {
            Phase::Starting => format!(
                "exited: child pid {pid} ended before it was ready ({})",
                status.describe()
            ),
            Phase::Serving => format!(
                "exited: child pid {pid} ended on its own ({})",
                status.describe()
            ),
            _ => format!("exited: child pid {pid} stopped ({})", status.describe()),
        };
        vec![Action::Status(text), Action::Exit(code)]
    }

    fn time_left(&self, now: Instant) -> String {
        match self.deadline_at() {
            Some(d) => format!(
                "{:.1} s left",
                d.saturating_duration_since(now).as_secs_f64()
            ),
            None => "no deadline".to_string(),
        }
    }

    fn in_flight_text(&self) -> String {
        match self.in_flight {
            Some(1) => "1 request in flight".to_string(),
            Some(n) => format!("{n} requests in flight"),
            None => "the child still running".to_string(),
        }
    }

    fn draining_status(&self, now: Instant) -> String {
        format!(
            "draining: {}, child pid {}, {}",
            self.in_flight_text(),
            self.child_pid,
            self.time_left(now)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, Instant};

    const DEADLINE: Duration = Duration::from_secs(25);
    const QUIET: Duration = Duration::from_millis(50);

    fn machine(drain: bool) -> Lifecycle {
        Lifecycle::new(
            42,
            Timing {
                deadline: Some(DEADLINE),
                start_timeout: Duration::from_secs(60),
                drain_quiet: drain.then_some(QUIET),
            },
            Instant::now(),
        )
    }

    fn serving(drain: bool) -> Lifecycle {
        let mut m = machine(drain);
        m.handle(Event::Ready, Instant::now());
        m
    }

    fn kills(actions: &[Action]) -> Option<KillReason> {
        actions.iter().find_map(|a| match a {
            Action::KillTree(r) => Some(*r),
            _ => None,
        })
    }

    fn exit_code(actions: &[Action]) -> Option<i32> {
        actions.iter().find_map(|a| match a {
            Action::Exit(c) => Some(*c),
            _ => None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn ready_is_announced_only_when_the_probe_passes() {
        let mut m = machine(true);
        assert_eq!(m.phase(), Phase::Starting);
        let a = m.handle(Event::Tick, Instant::now());
        assert!(a.is_empty());
        let a = m.handle(Event::Ready, Instant::now());
        assert!(matches!(&a[..], [Action::NotifyReady(s)] if s.contains("pid 42")));
        assert_eq!(m.phase(), Phase::Serving);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_sends_stopping_and_forwards_sigterm() {
        let mut m = serving(true);
        let a = m.handle(Event::Stop(StopSignal::Term), Instant::now());
        assert!(matches!(&a[0], Action::NotifyStopping(s) if s.contains("25.0 s left")));
        assert_eq!(a[1], Action::ForwardTerm);
        assert_eq!(m.phase(), Phase::Stopping);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_child_is_ended_after_the_quiet_period() {
        let mut m = serving(true);
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        let a = m.handle(Event::Drain { in_flight: 0 }, Instant::now());
        assert_eq!(kills(&a), None);
        assert_eq!(m.next_wakeup(), Some(Instant::now() + QUIET));
        advance(QUIET).await;
        let a = m.handle(Event::Tick, Instant::now());
        assert_eq!(kills(&a), Some(KillReason::Drained));
        let a = m.handle(Event::ChildExited(ChildStatus::Signal(9)), Instant::now());
        assert_eq!(exit_code(&a), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_resets_the_quiet_period() {
        let mut m = serving(true);
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        m.handle(Event::Drain { in_flight: 0 }, Instant::now());
        advance(Duration::from_millis(30)).await;
        m.handle(Event::Drain { in_flight: 1 }, Instant::now());
        advance(Duration::from_millis(30)).await;
        let a = m.handle(Event::Drain { in_flight: 0 }, Instant::now());
        assert_eq!(kills(&a), None);
        advance(Duration::from_millis(49)).await;
        assert_eq!(kills(&m.handle(Event::Tick, Instant::now())), None);
        advance(Duration::from_millis(1)).await;
        assert_eq!(
            kills(&m.handle(Event::Tick, Instant::now())),
            Some(KillReason::Drained)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn draining_status_counts_requests_in_flight() {
        let mut m = serving(true);
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        let a = m.handle(Event::Drain { in_flight: 3 }, Instant::now());
        assert!(
            matches!(&a[..], [Action::Status(s)] if s.contains("3 requests in flight") && s.contains("25.0 s left")),
            "{a:?}"
        );
        advance(Duration::from_secs(1)).await;
        let a = m.handle(Event::Tick, Instant::now());
        assert!(
            matches!(&a[..], [Action::Status(s)] if s.contains("24.0 s left")),
            "{a:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_kills_the_tree_with_work_in_flight() {
        let mut m = serving(true);
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        m.handle(Event::Drain { in_flight: 1 }, Instant::now());
        assert_eq!(m.deadline_at(), Some(Instant::now() + DEADLINE));
        advance(DEADLINE - Duration::from_millis(1)).await;
        assert_eq!(kills(&m.handle(Event::Tick, Instant::now())), None);
        advance(Duration::from_millis(1)).await;
        let a = m.handle(Event::Tick, Instant::now());
        assert_eq!(kills(&a), Some(KillReason::Deadline));
        assert!(matches!(&a[0], Action::Status(s) if s.contains("1 request in flight")));
        let a = m.handle(Event::ChildExited(ChildStatus::Signal(9)), Instant::now());
        assert_eq!(exit_code(&a), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn exit_mode_waits_for_the_child_until_the_deadline() {
        let mut m = serving(false);
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        advance(DEADLINE / 2).await;
        assert_eq!(kills(&m.handle(Event::Tick, Instant::now())), None);
        advance(DEADLINE / 2).await;
        assert_eq!(
            kills(&m.handle(Event::Tick, Instant::now())),
            Some(KillReason::Deadline)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn child_that_drains_by_itself_ends_the_stop_cleanly() {
        let mut m = serving(true);
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        let a = m.handle(Event::ChildExited(ChildStatus::Code(0)), Instant::now());
        assert_eq!(exit_code(&a), Some(0));
        assert_eq!(m.phase(), Phase::Exited);
    }

    #[tokio::test(start_paused = true)]
    async fn child_failing_during_the_stop_passes_its_code_on() {
        let mut m = serving(true);
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        let a = m.handle(Event::ChildExited(ChildStatus::Code(3)), Instant::now());
        assert_eq!(exit_code(&a), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn second_sigterm_is_ignored_but_second_sigint_kills() {
        let mut m = serving(true);
        m.handle(Event::Stop(StopSignal::Term), Instant::now());
        let a = m.handle(Event::Stop(StopSignal::Term), Instant::now());
        assert!(matches!(&a[..], [Action::Ignored(_)]));
        let a = m.handle(Event::Stop(StopSignal::Int), Instant::now());
        assert_eq!(kills(&a), Some(KillReason::Operator));
    }

    #[tokio::test(start_paused = true)]
    async fn sigterm_before_ready_stops_cleanly() {
        let mut m = machine(true);
        let a = m.handle(Event::Stop(StopSignal::Term), Instant::now());
        assert!(
            matches!(&a[0], Action::NotifyStopping(s) if s.contains("before the child was ready"))
        );
        assert_eq!(a[1], Action::ForwardTerm);
        let a = m.handle(Event::ChildExited(ChildStatus::Code(0)), Instant::now());
        assert_eq!(exit_code(&a), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn child_exiting_on_its_own_passes_its_code_on() {
        let mut m = serving(true);
        let a = m.handle(Event::ChildExited(ChildStatus::Code(2)), Instant::now());
        assert_eq!(exit_code(&a), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn child_killed_by_a_signal_exits_128_plus_n() {
        let mut m = serving(true);
        let a = m.handle(Event::ChildExited(ChildStatus::Signal(11)), Instant::now());
        assert_eq!(exit_code(&a), Some(139));
    }

    #[tokio::test(start_paused = true)]
    async fn child_leaving_cleanly_before_ready_is_a_failed_start() {
        let mut m = machine(true);
        let a = m.handle(Event::ChildExited(ChildStatus::Code(0)), Instant::now());
        assert_eq!(exit_code(&a), Some(exit::UNAVAILABLE));
    }

    #[tokio::test(start_paused = true)]
    async fn start_timeout_kills_and_exits_unavailable() {
        let mut m = machine(true);
        assert_eq!(
            m.next_wakeup(),
            Some(Instant::now() + Duration::from_secs(60))
        );
        advance(Duration::from_secs(60)).await;
        let a = m.handle(Event::Tick, Instant::now());
        assert_eq!(kills(&a), Some(KillReason::StartTimeout));
        let a = m.handle(Event::ChildExited(ChildStatus::Signal(9)), Instant::now());
        assert_eq!(exit_code(&a), Some(exit::UNAVAILABLE));
    }

    #[tokio::test(start_paused = true)]
    async fn infinite_deadline_never_kills_a_busy_child() {
        let mut m = Lifecycle::new(
            7,
            Timing {
                deadline: None,
                start_timeout: Duration::from_secs(60),
                drain_quiet: Some(QUIET),
            },
            Instant::now(),
        );
        m.handle(Event::Ready, Instant::now());
        let a = m.handle(Event::Stop(StopSignal::Term), Instant::now());
        assert!(matches!(&a[0], Action::NotifyStopping(s) if s.contains("no deadline")));
        m.handle(Event::Drain { in_flight: 1 }, Instant::now());
        advance(Duration::from_secs(3600)).await;
        assert_eq!(kills(&m.handle(Event::Tick, Instant::now())), None);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_happens_after_exit() {
        let mut m = serving(true);
        m.handle(Event::ChildExited(ChildStatus::Code(0)), Instant::now());
        assert!(m
            .handle(Event::Stop(StopSignal::Term), Instant::now())
            .is_empty());
        assert_eq!(m.next_wakeup(), None);
    }
}
