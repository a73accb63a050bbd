//! The lifecycle's invariants, checked after every event of random event sequences: the
//! unit tests pin each transition, this pins what no sequence of them may break.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence};

use super::*;

/// Something that can happen to the machine; a generation is picked among those it has.
#[derive(Debug, Clone)]
enum Op {
    Spawned(Index),
    SpawnFailed(Index),
    Ready(Index),
    /// It passed its probe without every listener.
    Unclaimed(Index),
    Exited(Index, ChildStatus),
    Drain(Index, usize, bool),
    Stop(StopSignal),
    /// A reload; `true`: someone waits for its answer.
    Reload(bool),
    Checked(bool),
    /// A restart; `true`: someone waits for its answer.
    Restart(bool),
    Health(bool),
    /// Time passes by this many milliseconds, then a tick.
    Wait(u64),
    /// Time passes to the machine's next wakeup, then a tick.
    Wake,
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop_oneof![
        (0..4i32).prop_map(ChildStatus::Code),
        prop_oneof![
            Just(libc::SIGTERM),
            Just(libc::SIGKILL),
            Just(libc::SIGSEGV)
        ]
        .prop_map(ChildStatus::Signal),
    ];
    prop_oneof![
        1 => any::<Index>().prop_map(Op::Spawned),
        1 => any::<Index>().prop_map(Op::SpawnFailed),
        6 => any::<Index>().prop_map(Op::Ready),
        1 => any::<Index>().prop_map(Op::Unclaimed),
        2 => (any::<Index>(), status).prop_map(|(i, s)| Op::Exited(i, s)),
        3 => (any::<Index>(), 0..3usize, any::<bool>()).prop_map(|(i, n, c)| Op::Drain(i, n, c)),
        1 => prop_oneof![Just(StopSignal::Term), Just(StopSignal::Int)].prop_map(Op::Stop),
        3 => any::<bool>().prop_map(Op::Reload),
        4 => any::<bool>().prop_map(Op::Checked),
        1 => any::<bool>().prop_map(Op::Restart),
        2 => any::<bool>().prop_map(Op::Health),
        2 => (0..2_000u64).prop_map(Op::Wait),
        3 => Just(Op::Wake),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::option::of(1..5u64),
        prop::option::of(10..200u64),
        0..3u32,
        0..3u32,
        any::<bool>(),
    )
        .prop_map(
            |(deadline, quiet, max_crashes, health_failures, self_ending)| Policy {
                deadline: deadline.map(Duration::from_secs),
                start_timeout: Duration::from_secs(5),
                drain_quiet: quiet.map(Duration::from_millis),
                max_crashes,
                crash_window: Duration::from_secs(10),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                stable_after: Duration::from_secs(5),
                health_failures,
                self_ending,
            },
        )
}

/// What the checks need to remember across events.
struct Observer {
    now: Instant,
    next_waiter: u64,
    asked: BTreeSet<u64>,
    answers: BTreeMap<u64, usize>,
    stopped: bool,
}

impl Observer {
    /// A new waiter, if someone waits.
    fn waiter(&mut self, waits: bool) -> Option<u64> {
        waits.then(|| {
            self.next_waiter += 1;
            self.asked.insert(self.next_waiter);
            self.next_waiter
        })
    }

    fn event(&mut self, m: &Lifecycle, op: &Op) -> Event {
        let gens: Vec<GenId> = m.gens().map(|g| g.id).collect();
        // No generation left: the event names one that is gone, which must change nothing.
        let pick = |i: &Index| match gens.len() {
            0 => 99,
            n => gens[i.index(n)],
        };
        match op {
            Op::Spawned(i) => Event::Spawned {
                gen: pick(i),
                pid: 100 + pick(i) as u32,
            },
            Op::SpawnFailed(i) => Event::SpawnFailed {
                gen: pick(i),
                reason: "refused".into(),
                code: exit::CONFIG,
            },
            Op::Ready(i) => Event::Ready { gen: pick(i) },
            Op::Unclaimed(i) => Event::Unclaimed {
                gen: pick(i),
                listeners: crate::lifecycle::Unclaimed {
                    keys: vec!["127.0.0.1:8080".into()],
                    config: "/etc/steward/steward.toml".into(),
                },
            },
            Op::Exited(i, status) => Event::Exited {
                gen: pick(i),
                status: *status,
            },
            Op::Drain(i, in_flight, closed) => Event::Drain {
                gen: pick(i),
                in_flight: *in_flight,
                closed: *closed,
            },
            Op::Stop(sig) => Event::Stop(*sig),
            Op::Reload(waits) => Event::Reload {
                waiter: self.waiter(*waits),
            },
            Op::Checked(ok) => Event::ConfigChecked(match ok {
                true => Ok(()),
                false => Err("bad".into()),
            }),
            Op::Restart(waits) => Event::Restart {
                waiter: self.waiter(*waits),
            },
            Op::Health(ok) => Event::Health { ok: *ok },
            Op::Wait(ms) => {
                self.now += Duration::from_millis(*ms);
                Event::Tick
            }
            Op::Wake => {
                if let Some(t) = m.next_wakeup() {
                    self.now = self.now.max(t);
                }
                Event::Tick
            }
        }
    }

    fn check(
        &mut self,
        before: &BTreeMap<GenId, Gen>,
        event: &Event,
        m: &Lifecycle,
        actions: &[Action],
    ) -> Result<(), TestCaseError> {
        // At most one current generation: one serves at a time, and it is the current one.
        let serving: Vec<GenId> = m
            .gens()
            .filter(|g| g.state == GenState::Serving)
            .map(|g| g.id)
            .collect();
        prop_assert!(serving.len() <= 1, "serving: {serving:?}");
        if let Some(&s) = serving.first() {
            prop_assert_eq!(m.current().map(|g| g.id), Some(s));
        }
        if let Phase::Reloading(r) = &m.phase {
            if let Some(next) = r.step.next() {
                prop_assert!(m.gen(next).is_some(), "next {next} is gone");
                prop_assert_ne!(r.step.old(), Some(next));
            }
            if let Some(old) = r.step.old() {
                prop_assert!(m.gen(old).is_some(), "old {old} is gone");
            }
        }
        if let Phase::Starting { current, .. } | Phase::Serving { current } = &m.phase {
            prop_assert!(m.gen(*current).is_some(), "current {current} is gone");
        }

        // Exit only when no generation is left, and then nothing more happens.
        if actions.iter().any(|a| matches!(a, Action::Exit(_))) {
            prop_assert_eq!(m.gens().count(), 0);
            prop_assert_eq!(m.mode(), Mode::Exited);
            prop_assert!(matches!(actions.last(), Some(Action::Exit(_))));
        }
        if m.mode() == Mode::Exited {
            prop_assert_eq!(m.gens().count(), 0);
        }

        // Every waiter answered exactly once; until then the machine holds it.
        for a in actions {
            match a {
                Action::ReloadFinished { waiters, .. } => {
                    for w in waiters {
                        *self.answers.entry(*w).or_default() += 1;
                    }
                }
                Action::RestartAnswered { waiter, .. } => {
                    *self.answers.entry(*waiter).or_default() += 1;
                }
                _ => {}
            }
        }
        for (w, n) in &self.answers {
            prop_assert_eq!(*n, 1, "waiter {} answered {} times", w, n);
            prop_assert!(self.asked.contains(w), "waiter {w} was never asked");
        }
        let held: BTreeSet<u64> = m.unanswered().into_iter().collect();
        for w in &self.asked {
            prop_assert!(
                held.contains(w) != self.answers.contains_key(w),
                "waiter {w}: held {}, answered {}",
                held.contains(w),
                self.answers.contains_key(w)
            );
        }

        // No kill before the deadline unless drained (or the operator's second SIGINT).
        for a in actions {
            let Action::KillTree { gen, reason, .. } = a else {
                continue;
            };
            let g = m.gen(*gen);
            match reason {
                KillReason::Deadline => {
                    let at = g.and_then(|g| g.deadline_at);
                    prop_assert!(
                        at.is_some_and(|d| self.now >= d),
                        "deadline kill of {gen} before {at:?}"
                    );
                }
                KillReason::Drained => {
                    prop_assert_eq!(g.and_then(|g| g.in_flight), Some(0));
                }
                KillReason::Operator => {
                    prop_assert_eq!(event, &Event::Stop(StopSignal::Int));
                }
                KillReason::StartTimeout => {
                    let b = before.get(gen);
                    let due = b.is_some_and(|b| {
                        b.state == GenState::Starting
                            && self.now >= b.spawned + m.policy.start_timeout
                    });
                    prop_assert!(due, "start-timeout kill of {} too early", gen);
                }
                KillReason::Unhealthy => {
                    prop_assert_eq!(event, &Event::Health { ok: false });
                }
            }
        }

        // The deadline never moves later.
        for (id, b) in before {
            if let (Some(was), Some(g)) = (b.deadline_at, m.gen(*id)) {
                prop_assert!(
                    g.deadline_at.is_some_and(|d| d <= was),
                    "generation {id}'s deadline moved from {was:?} to {:?}",
                    g.deadline_at
                );
            }
        }

        // Nothing new starts once the stop began.
        if self.stopped {
            let spawned = actions.iter().any(|a| matches!(a, Action::Spawn { .. }));
            prop_assert!(!spawned, "spawn after the stop: {:?}", actions);
        }
        self.stopped |= m.stop_signal().is_some();
        Ok(())
    }
}

/// The driver's answer to each spawn it is asked for: the process runs.
fn spawned_events(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { gen, .. } => Some(Event::Spawned {
                gen: *gen,
                pid: 100 + *gen as u32,
            }),
            _ => None,
        })
        .collect()
}

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_event_sequence_breaks_the_lifecycles_invariants(
        policy in policy(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut obs = Observer {
            now: Instant::now(),
            next_waiter: 0,
            asked: BTreeSet::new(),
            answers: BTreeMap::new(),
            stopped: false,
        };
        let (mut m, first) = Lifecycle::start(policy, obs.now);
        let mut spawned = spawned_events(&first);
        for op in &ops {
            // After its exit the driver feeds the machine nothing more.
            if m.mode() == Mode::Exited {
                break;
            }
            // As the driver does, a spawn is reported before anything else happens.
            let events: Vec<Event> = match spawned.is_empty() {
                true => vec![obs.event(&m, op)],
                false => std::mem::take(&mut spawned),
            };
            for event in events {
                let before = m.gens.clone();
                let actions = m.handle(event.clone(), obs.now);
                obs.check(&before, &event, &m, &actions)?;
                spawned.extend(spawned_events(&actions));
            }
        }
        // Whatever was left running, a stop and enough time end it, answering everyone.
        for event in [Event::Stop(StopSignal::Term), Event::Stop(StopSignal::Int)] {
            let before = m.gens.clone();
            let actions = m.handle(event.clone(), obs.now);
            obs.check(&before, &event, &m, &actions)?;
        }
        let ids: Vec<GenId> = m.gens().map(|g| g.id).collect();
        for gen in ids {
            let event = Event::Exited { gen, status: ChildStatus::Signal(libc::SIGKILL) };
            let before = m.gens.clone();
            let actions = m.handle(event.clone(), obs.now);
            obs.check(&before, &event, &m, &actions)?;
        }
        prop_assert_eq!(m.mode(), Mode::Exited);
        for w in &obs.asked {
            prop_assert_eq!(obs.answers.get(w), Some(&1), "waiter {} unanswered", w);
        }
    }
}
