//! A machine that starts in Serving with a generation already running: the successor of a
//! steward that re-executed itself in place ([`crate::reexec`]) adopts the generation its
//! predecessor started, with the counters the crash limit and `steward status` use, instead
//! of spawning a first one. The predecessor re-executes only from the steady state
//! ([`Lifecycle::steady`]), so that is the one state to rebuild.

use super::*;

/// What the successor knows of the running generation and of the predecessor's counters.
#[derive(Debug, Clone)]
pub struct Adopted {
    pub gen: GenId,
    pub pid: u32,
    pub spawned: Instant,
    pub serving_since: Instant,
    pub last_gen: GenId,
    pub restarts: u32,
    pub consecutive_crashes: u32,
    /// The crashes still inside the crash window.
    pub crashes: Vec<Instant>,
}

impl Lifecycle {
    /// A machine serving with `a.gen` current, as its predecessor left it. No action
    /// follows: the generation already serves and systemd already had READY=1.
    pub fn adopt(policy: Policy, a: Adopted) -> Self {
        let mut gens = BTreeMap::new();
        gens.insert(
            a.gen,
            Gen {
                id: a.gen,
                pid: Some(a.pid),
                state: GenState::Serving,
                why: Why::Start,
                spawned: a.spawned,
                serving_since: Some(a.serving_since),
                drain_began: None,
                deadline_at: None,
                quiet_since: None,
                in_flight: None,
                health_failed: 0,
            },
        );
        Lifecycle {
            phase: Phase::Serving { current: a.gen },
            policy,
            gens,
            last_gen: a.last_gen.max(a.gen),
            crashes: a.crashes,
            consecutive_crashes: a.consecutive_crashes,
            restarts: a.restarts,
            served_once: true,
        }
    }

    /// The state a re-exec may start from and [`Lifecycle::adopt`] rebuilds: serving, with
    /// the current generation the only one (none starting, draining or being killed) and
    /// nothing pending. `Some` with what the successor needs.
    pub fn steady(&self) -> Option<Adopted> {
        let Phase::Serving { current } = self.phase else {
            return None;
        };
        let g = self.gens.get(&current)?;
        if self.gens.len() != 1 || g.state != GenState::Serving {
            return None;
        }
        Some(Adopted {
            gen: current,
            pid: g.pid?,
            spawned: g.spawned,
            serving_since: g.serving_since?,
            last_gen: self.last_gen,
            restarts: self.restarts,
            consecutive_crashes: self.consecutive_crashes,
            crashes: self.crashes.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> Policy {
        Policy {
            deadline: Some(Duration::from_secs(25)),
            start_timeout: Duration::from_secs(60),
            drain_quiet: Some(Duration::from_millis(50)),
            max_crashes: 1,
            crash_window: Duration::from_secs(300),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(60),
            health_failures: 3,
            self_ending: false,
        }
    }

    fn serving() -> Lifecycle {
        let (mut m, _) = Lifecycle::start(policy(), Instant::now());
        m.handle(Event::Spawned { gen: 1, pid: 42 }, Instant::now());
        m.handle(Event::Ready { gen: 1 }, Instant::now());
        m
    }

    #[tokio::test(start_paused = true)]
    async fn a_serving_machine_with_one_generation_is_steady_and_adopts_as_it_was() {
        let m = serving();
        let a = m.steady().expect("steady");
        assert_eq!((a.gen, a.pid, a.last_gen), (1, 42, 1));
        let adopted = Lifecycle::adopt(policy(), a);
        assert_eq!(adopted.mode(), Mode::Serving);
        assert_eq!(adopted.current().and_then(|g| g.pid), Some(42));
        assert_eq!(adopted.steady().map(|a| a.gen), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_steady_while_a_reload_or_a_start_is_under_way() {
        let (mut m, _) = Lifecycle::start(policy(), Instant::now());
        m.handle(Event::Spawned { gen: 1, pid: 42 }, Instant::now());
        assert!(m.steady().is_none(), "starting");
        m.handle(Event::Ready { gen: 1 }, Instant::now());
        m.handle(Event::Reload { waiter: None }, Instant::now());
        assert!(m.steady().is_none(), "reloading");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retired_generation_still_draining_is_not_steady() {
        let mut m = serving();
        m.handle(Event::Restart { waiter: None }, Instant::now());
        m.handle(Event::Spawned { gen: 2, pid: 43 }, Instant::now());
        m.handle(Event::Ready { gen: 2 }, Instant::now());
        assert_eq!(m.mode(), Mode::Serving);
        assert!(m.steady().is_none(), "generation 1 drains");
        m.handle(
            Event::Exited {
                gen: 1,
                status: ChildStatus::Signal(15),
            },
            Instant::now(),
        );
        assert_eq!(m.steady().map(|a| a.gen), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_generation_after_adoption_follows_the_predecessors_numbering() {
        let mut a = serving().steady().expect("steady");
        a.last_gen = 7;
        a.gen = 7;
        let mut m = Lifecycle::adopt(policy(), a);
        let actions = m.handle(Event::Restart { waiter: None }, Instant::now());
        assert!(
            actions.contains(&Action::Spawn {
                gen: 8,
                why: Why::Restart
            }),
            "{actions:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_predecessors_crashes_still_count_toward_the_crash_limit() {
        let crash = |m: &mut Lifecycle| {
            m.handle(
                Event::Exited {
                    gen: 1,
                    status: ChildStatus::Code(3),
                },
                Instant::now(),
            )
        };
        let fresh = serving().steady().expect("steady");
        let mut m = Lifecycle::adopt(policy(), fresh.clone());
        crash(&mut m);
        assert_eq!(m.mode(), Mode::Backoff, "a first crash backs off");
        // max_crashes is 1: the predecessor's crash inside the window makes this the second.
        let mut m = Lifecycle::adopt(
            policy(),
            Adopted {
                crashes: vec![Instant::now()],
                consecutive_crashes: 1,
                ..fresh
            },
        );
        let actions = crash(&mut m);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Status(Fact::GaveUp { .. }))),
            "a second crash in the window gives up: {actions:?}"
        );
    }
}
