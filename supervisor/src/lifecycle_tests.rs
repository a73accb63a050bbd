//! The lifecycle, specified transition by transition with paused tokio time.

use super::*;
use tokio::time::{advance, Instant};

const DEADLINE: Duration = Duration::from_secs(25);
const QUIET: Duration = Duration::from_millis(50);

fn policy() -> Policy {
    Policy {
        deadline: Some(DEADLINE),
        start_timeout: Duration::from_secs(60),
        drain_quiet: Some(QUIET),
        max_crashes: 3,
        crash_window: Duration::from_secs(300),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
        stable_after: Duration::from_secs(60),
        health_failures: 3,
        self_ending: false,
    }
}

fn now() -> Instant {
    Instant::now()
}

/// A machine whose generation 1 runs as pid 42, not yet ready.
fn starting_with(p: Policy) -> Lifecycle {
    let (mut m, a) = Lifecycle::start(p, now());
    assert_eq!(
        a,
        vec![Action::Spawn {
            gen: 1,
            why: Why::Start
        }]
    );
    m.handle(Event::Spawned { gen: 1, pid: 42 }, now());
    m
}

fn starting() -> Lifecycle {
    starting_with(policy())
}

fn serving() -> Lifecycle {
    let mut m = starting();
    m.handle(Event::Ready { gen: 1 }, now());
    m
}

/// A serving machine whose reload has checked the configuration and spawned generation 2
/// as pid 43, not yet ready.
fn next_generation_started(m: &mut Lifecycle, waiter: Option<u64>) {
    m.handle(Event::Reload { waiter }, now());
    m.handle(Event::ConfigChecked(Ok(())), now());
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
}

fn kills(a: &[Action]) -> Vec<(GenId, KillReason)> {
    a.iter()
        .filter_map(|a| match a {
            Action::KillTree { gen, reason, .. } => Some((*gen, *reason)),
            _ => None,
        })
        .collect()
}

fn exit_code(a: &[Action]) -> Option<i32> {
    a.iter().find_map(|a| match a {
        Action::Exit(c) => Some(*c),
        _ => None,
    })
}

fn spawns(a: &[Action]) -> Vec<(GenId, Why)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Spawn { gen, why } => Some((*gen, *why)),
            _ => None,
        })
        .collect()
}

fn reload_result(a: &[Action]) -> Option<(Vec<u64>, Result<GenId, ReloadError>)> {
    a.iter().find_map(|a| match a {
        Action::ReloadFinished { waiters, result } => Some((waiters.clone(), result.clone())),
        _ => None,
    })
}

// ----- start ------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn ready_is_announced_only_when_the_probe_passes() {
    let mut m = starting();
    assert_eq!(m.mode(), Mode::Starting);
    assert!(m.handle(Event::Tick, now()).is_empty());
    let a = m.handle(Event::Ready { gen: 1 }, now());
    assert!(
        a == vec![Action::NotifyReady(Fact::Serving {
            gen: 1,
            pid: 42,
            restarts: 0,
            reload: None
        })],
        "{a:?}"
    );
    assert_eq!(m.mode(), Mode::Serving);
}

#[tokio::test(start_paused = true)]
async fn child_leaving_cleanly_before_ready_is_a_failed_start() {
    let mut m = starting();
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(exit::UNAVAILABLE));
}

#[tokio::test(start_paused = true)]
async fn child_failing_before_ready_passes_its_code_on() {
    let mut m = starting();
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(3),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(3));
}

#[tokio::test(start_paused = true)]
async fn spawn_failure_at_start_exits_with_its_code() {
    let (mut m, _) = Lifecycle::start(policy(), now());
    let a = m.handle(
        Event::SpawnFailed {
            gen: 1,
            reason: "ENOENT".into(),
            code: exit::CONFIG,
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(exit::CONFIG));
}

#[tokio::test(start_paused = true)]
async fn start_timeout_kills_and_exits_unavailable() {
    let mut m = starting();
    assert_eq!(m.next_wakeup(), Some(now() + Duration::from_secs(60)));
    advance(Duration::from_secs(60)).await;
    let a = m.handle(Event::Tick, now());
    assert_eq!(kills(&a), vec![(1, KillReason::StartTimeout)]);
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(exit::UNAVAILABLE));
}

// ----- stop -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn stop_sends_stopping_closes_sockets_and_forwards_sigterm() {
    let mut m = serving();
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    assert!(
        matches!(&a[0], Action::NotifyStopping(Fact::StopBegan { left: Some(d), .. }) if *d == DEADLINE),
        "{a:?}"
    );
    assert_eq!(a[1], Action::CloseSockets);
    assert_eq!(a[2], Action::Terminate { gen: 1 });
    assert_eq!(m.mode(), Mode::Stopping);
}

#[tokio::test(start_paused = true)]
async fn idle_child_is_ended_after_the_quiet_period() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: false,
        },
        now(),
    );
    assert!(kills(&a).is_empty());
    assert_eq!(m.next_wakeup(), Some(now() + QUIET));
    advance(QUIET).await;
    let a = m.handle(Event::Tick, now());
    assert_eq!(kills(&a), vec![(1, KillReason::Drained)]);
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
}

#[tokio::test(start_paused = true)]
async fn an_idle_child_whose_listeners_are_closed_is_ended_at_once() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: true,
        },
        now(),
    );
    assert_eq!(kills(&a), vec![(1, KillReason::Drained)]);
}

#[tokio::test(start_paused = true)]
async fn the_last_request_ending_after_the_listeners_closed_ends_the_child_at_once() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 1,
            closed: true,
        },
        now(),
    );
    assert!(kills(&a).is_empty(), "a request is still in flight: {a:?}");
    advance(Duration::from_millis(5)).await;
    let a = m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: true,
        },
        now(),
    );
    assert_eq!(kills(&a), vec![(1, KillReason::Drained)]);
}

#[tokio::test(start_paused = true)]
async fn zero_in_flight_with_a_listener_still_open_waits_out_the_quiet_period() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: false,
        },
        now(),
    );
    assert!(kills(&a).is_empty(), "{a:?}");
    assert_eq!(m.next_wakeup(), Some(now() + QUIET));
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_resets_the_quiet_period() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: false,
        },
        now(),
    );
    advance(Duration::from_millis(30)).await;
    m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 1,
            closed: false,
        },
        now(),
    );
    advance(Duration::from_millis(30)).await;
    let a = m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: false,
        },
        now(),
    );
    assert!(kills(&a).is_empty());
    advance(Duration::from_millis(49)).await;
    assert!(kills(&m.handle(Event::Tick, now())).is_empty());
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        kills(&m.handle(Event::Tick, now())),
        vec![(1, KillReason::Drained)]
    );
}

#[tokio::test(start_paused = true)]
async fn draining_status_counts_requests_in_flight_and_time_left() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 3,
            closed: false,
        },
        now(),
    );
    assert!(
        a == vec![Action::Status(Fact::Draining {
            in_flight: Some(3),
            pids: vec![42],
            left: Some(DEADLINE)
        })],
        "{a:?}"
    );
    advance(Duration::from_secs(1)).await;
    let a = m.handle(Event::Tick, now());
    assert!(
        matches!(&a[..], [Action::Status(Fact::Draining { left: Some(d), .. })] if *d == Duration::from_secs(24)),
        "{a:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_kills_the_tree_with_work_in_flight() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 1,
            closed: false,
        },
        now(),
    );
    advance(DEADLINE - Duration::from_millis(1)).await;
    assert!(kills(&m.handle(Event::Tick, now())).is_empty());
    advance(Duration::from_millis(1)).await;
    let a = m.handle(Event::Tick, now());
    assert_eq!(kills(&a), vec![(1, KillReason::Deadline)]);
    assert!(
        matches!(
            &a[0],
            Action::Status(Fact::Killing {
                gen: 1,
                in_flight: Some(1),
                ..
            })
        ),
        "{a:?}"
    );
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_killed_generation_waiting_to_be_reaped_is_not_reported_as_draining() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    advance(DEADLINE).await;
    assert_eq!(
        kills(&m.handle(Event::Tick, now())),
        vec![(1, KillReason::Deadline)]
    );
    // Killing a large tree can take longer than a status refresh.
    advance(Duration::from_secs(2)).await;
    let a = m.handle(Event::Tick, now());
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Status(Fact::Draining { .. }))),
        "{a:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn exit_mode_waits_for_the_child_until_the_deadline() {
    let mut m = starting_with(Policy {
        drain_quiet: None,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    m.handle(Event::Stop(StopSignal::Term), now());
    advance(DEADLINE / 2).await;
    assert!(kills(&m.handle(Event::Tick, now())).is_empty());
    advance(DEADLINE / 2).await;
    assert_eq!(
        kills(&m.handle(Event::Tick, now())),
        vec![(1, KillReason::Deadline)]
    );
}

#[tokio::test(start_paused = true)]
async fn child_that_drains_by_itself_ends_the_stop_cleanly() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
    assert_eq!(m.mode(), Mode::Exited);
}

#[tokio::test(start_paused = true)]
async fn child_failing_during_the_stop_passes_its_code_on() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(3),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(3));
}

#[tokio::test(start_paused = true)]
async fn second_sigterm_is_ignored_but_second_sigint_kills() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    assert!(
        kills(&a).is_empty() && matches!(&a[..], [Action::Note(_)]),
        "{a:?}"
    );
    let a = m.handle(Event::Stop(StopSignal::Int), now());
    assert_eq!(kills(&a), vec![(1, KillReason::Operator)]);
}

#[tokio::test(start_paused = true)]
async fn sigterm_before_ready_stops_cleanly() {
    let mut m = starting();
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    assert!(matches!(
        &a[0],
        Action::NotifyStopping(Fact::StopBegan {
            during: Mode::Starting,
            ..
        })
    ));
    assert!(a.contains(&Action::Terminate { gen: 1 }));
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
}

#[tokio::test(start_paused = true)]
async fn infinite_deadline_never_kills_a_busy_child() {
    let mut m = starting_with(Policy {
        deadline: None,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    assert!(matches!(
        &a[0],
        Action::NotifyStopping(Fact::StopBegan { left: None, .. })
    ));
    m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 1,
            closed: false,
        },
        now(),
    );
    advance(Duration::from_secs(3600)).await;
    assert!(kills(&m.handle(Event::Tick, now())).is_empty());
}

#[tokio::test(start_paused = true)]
async fn nothing_happens_after_exit() {
    let mut m = starting_with(Policy {
        max_crashes: 0,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert_eq!(m.mode(), Mode::Exited);
    assert!(m.handle(Event::Stop(StopSignal::Term), now()).is_empty());
    assert_eq!(m.next_wakeup(), None);
}

// ----- crashes ------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn without_restarts_a_crash_passes_the_childs_code_on() {
    let mut m = starting_with(Policy {
        max_crashes: 0,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(11),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(139));
}

#[tokio::test(start_paused = true)]
async fn a_crash_restarts_after_the_minimum_backoff() {
    let mut m = serving();
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(exit_code(&a), None);
    assert_eq!(m.mode(), Mode::Backoff);
    assert_eq!(m.next_wakeup(), Some(now() + Duration::from_millis(100)));
    advance(Duration::from_millis(100)).await;
    let a = m.handle(Event::Tick, now());
    assert_eq!(spawns(&a), vec![(2, Why::Crash)]);
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    let a = m.handle(Event::Ready { gen: 2 }, now());
    assert!(
        a == vec![Action::NotifyReady(Fact::Serving {
            gen: 2,
            pid: 43,
            restarts: 1,
            reload: None
        })],
        "{a:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_up_to_its_maximum() {
    let mut m = starting_with(Policy {
        max_crashes: 100,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    let mut waits = vec![];
    for gen in 1..=9 {
        m.handle(
            Event::Exited {
                gen,
                status: ChildStatus::Code(1),
            },
            now(),
        );
        let wait = m.next_wakeup().expect("backoff timer") - now();
        waits.push(wait.as_millis());
        advance(wait).await;
        m.handle(Event::Tick, now());
        m.handle(
            Event::Spawned {
                gen: gen + 1,
                pid: 100 + gen as u32,
            },
            now(),
        );
        m.handle(Event::Ready { gen: gen + 1 }, now());
    }
    assert_eq!(
        waits,
        vec![100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stable_minute_resets_the_backoff() {
    let mut m = serving();
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(1),
        },
        now(),
    );
    advance(Duration::from_millis(100)).await;
    m.handle(Event::Tick, now());
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    m.handle(Event::Ready { gen: 2 }, now());
    advance(Duration::from_secs(61)).await;
    m.handle(
        Event::Exited {
            gen: 2,
            status: ChildStatus::Code(1),
        },
        now(),
    );
    assert_eq!(m.next_wakeup(), Some(now() + Duration::from_millis(100)));
}

#[tokio::test(start_paused = true)]
async fn too_many_crashes_in_the_window_give_up_with_the_childs_code() {
    let mut m = serving();
    for gen in 1..=3 {
        m.handle(
            Event::Exited {
                gen,
                status: ChildStatus::Code(2),
            },
            now(),
        );
        let wait = m.next_wakeup().expect("backoff") - now();
        advance(wait).await;
        m.handle(Event::Tick, now());
        m.handle(
            Event::Spawned {
                gen: gen + 1,
                pid: 50 + gen as u32,
            },
            now(),
        );
        m.handle(Event::Ready { gen: gen + 1 }, now());
    }
    let a = m.handle(
        Event::Exited {
            gen: 4,
            status: ChildStatus::Code(2),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(2));
}

#[tokio::test(start_paused = true)]
async fn stop_during_backoff_exits_at_once() {
    let mut m = serving();
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(1),
        },
        now(),
    );
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    assert_eq!(exit_code(&a), Some(0));
}

// ----- reload -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn reload_checks_then_starts_the_next_generation_then_retires_the_old() {
    let mut m = serving();
    let a = m.handle(Event::Reload { waiter: Some(7) }, now());
    assert!(a[0] == Action::NotifyReloading(Fact::Checking { old: 1 }));
    assert_eq!(a[1], Action::CheckConfig);
    let a = m.handle(Event::ConfigChecked(Ok(())), now());
    assert_eq!(spawns(&a), vec![(2, Why::Reload)]);
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    assert_eq!(
        m.current().map(|g| g.id),
        Some(1),
        "the old generation serves until the new one does"
    );
    let a = m.handle(Event::Ready { gen: 2 }, now());
    assert_eq!(a[0], Action::Terminate { gen: 1 });
    assert!(
        a[1] == Action::NotifyReady(Fact::Serving {
            gen: 2,
            pid: 43,
            restarts: 0,
            reload: Some(Ok(()))
        }),
        "{a:?}"
    );
    assert_eq!(reload_result(&a), Some((vec![7], Ok(2))));
    assert_eq!(m.mode(), Mode::Serving);
    // The old generation drains like a stop, with its own deadline, and nothing else moves.
    m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: false,
        },
        now(),
    );
    advance(QUIET).await;
    assert_eq!(
        kills(&m.handle(Event::Tick, now())),
        vec![(1, KillReason::Drained)]
    );
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert!(exit_code(&a).is_none());
    assert_eq!(m.mode(), Mode::Serving);
}

#[tokio::test(start_paused = true)]
async fn failed_check_leaves_the_old_generation_serving_untouched() {
    let mut m = serving();
    m.handle(Event::Reload { waiter: Some(1) }, now());
    let a = m.handle(Event::ConfigChecked(Err("bad yaml".into())), now());
    assert!(spawns(&a).is_empty() && kills(&a).is_empty());
    assert!(a.iter().any(|x| matches!(
        x,
        Action::NotifyReady(Fact::Serving {
            gen: 1,
            reload: Some(Err(_)),
            ..
        })
    )));
    let (w, r) = reload_result(&a).expect("answered");
    assert_eq!(w, vec![1]);
    assert_eq!(
        r,
        Err(ReloadError::Failed(ReloadFailure::Check("bad yaml".into())))
    );
    assert_eq!(m.mode(), Mode::Serving);
    assert_eq!(m.current().map(|g| g.id), Some(1));
}

#[tokio::test(start_paused = true)]
async fn next_generation_exiting_before_ready_fails_the_reload() {
    let mut m = serving();
    next_generation_started(&mut m, None);
    let a = m.handle(
        Event::Exited {
            gen: 2,
            status: ChildStatus::Code(1),
        },
        now(),
    );
    assert!(reload_result(&a).expect("answered").1.is_err());
    assert!(exit_code(&a).is_none());
    assert_eq!(m.current().map(|g| g.id), Some(1));
    assert_eq!(m.mode(), Mode::Serving);
}

#[tokio::test(start_paused = true)]
async fn next_generation_that_never_serves_is_killed_and_the_reload_fails() {
    let mut m = serving();
    next_generation_started(&mut m, None);
    advance(Duration::from_secs(60)).await;
    assert_eq!(
        kills(&m.handle(Event::Tick, now())),
        vec![(2, KillReason::StartTimeout)]
    );
    let a = m.handle(
        Event::Exited {
            gen: 2,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert!(reload_result(&a).expect("answered").1.is_err());
    assert_eq!(m.current().map(|g| g.id), Some(1));
}

#[tokio::test(start_paused = true)]
async fn reloads_during_a_reload_are_coalesced_into_one_more() {
    let mut m = serving();
    m.handle(Event::Reload { waiter: Some(1) }, now());
    for w in 2..=5 {
        let a = m.handle(Event::Reload { waiter: Some(w) }, now());
        assert!(!a.contains(&Action::CheckConfig));
    }
    m.handle(Event::ConfigChecked(Ok(())), now());
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    let a = m.handle(Event::Ready { gen: 2 }, now());
    assert_eq!(reload_result(&a), Some((vec![1], Ok(2))));
    assert_eq!(
        a.iter().filter(|x| **x == Action::CheckConfig).count(),
        1,
        "{a:?}"
    );
    m.handle(Event::ConfigChecked(Ok(())), now());
    m.handle(Event::Spawned { gen: 3, pid: 44 }, now());
    let a = m.handle(Event::Ready { gen: 3 }, now());
    assert_eq!(reload_result(&a), Some((vec![2, 3, 4, 5], Ok(3))));
    assert!(!a.contains(&Action::CheckConfig));
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_reload_answers_the_waiters_and_stops_every_generation() {
    let mut m = serving();
    next_generation_started(&mut m, Some(9));
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    assert!(reload_result(&a).expect("answered").1.is_err());
    assert!(a.contains(&Action::Terminate { gen: 1 }) && a.contains(&Action::Terminate { gen: 2 }));
    m.handle(
        Event::Exited {
            gen: 2,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
}

// ----- signals at odd moments (operator's guide, "Signals at odd moments") -------------

#[tokio::test(start_paused = true)]
async fn reload_before_the_child_serves_waits_and_runs_once_it_serves() {
    let mut m = starting();
    let a = m.handle(Event::Reload { waiter: Some(3) }, now());
    assert!(reload_result(&a).is_none(), "not answered yet: {a:?}");
    assert!(!a.contains(&Action::CheckConfig), "{a:?}");
    assert!(
        a == vec![Action::Note(Fact::ReloadQueued {
            during: Mode::Starting
        })],
        "logged: {a:?}"
    );
    assert_eq!(m.mode(), Mode::Starting);
    let a = m.handle(Event::Ready { gen: 1 }, now());
    assert!(matches!(
        &a[0],
        Action::NotifyReady(Fact::Serving { gen: 1, .. })
    ));
    assert!(a.contains(&Action::CheckConfig), "{a:?}");
    assert_eq!(m.mode(), Mode::Reloading);
    m.handle(Event::ConfigChecked(Ok(())), now());
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    let a = m.handle(Event::Ready { gen: 2 }, now());
    assert_eq!(reload_result(&a), Some((vec![3], Ok(2))));
}

#[tokio::test(start_paused = true)]
async fn many_sighups_before_the_child_serves_become_one_reload() {
    let mut m = starting();
    for _ in 0..1000 {
        m.handle(Event::Reload { waiter: None }, now());
    }
    let a = m.handle(Event::Ready { gen: 1 }, now());
    assert_eq!(
        a.iter().filter(|x| **x == Action::CheckConfig).count(),
        1,
        "{a:?}"
    );
    m.handle(Event::ConfigChecked(Ok(())), now());
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    let a = m.handle(Event::Ready { gen: 2 }, now());
    assert!(!a.contains(&Action::CheckConfig), "no second reload: {a:?}");
    assert_eq!(m.mode(), Mode::Serving);
}

#[tokio::test(start_paused = true)]
async fn reload_during_crash_backoff_runs_once_the_recovered_generation_serves() {
    let mut m = serving();
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(1),
        },
        now(),
    );
    assert_eq!(m.mode(), Mode::Backoff);
    let a = m.handle(Event::Reload { waiter: Some(4) }, now());
    assert!(reload_result(&a).is_none(), "{a:?}");
    advance(Duration::from_millis(100)).await;
    assert_eq!(spawns(&m.handle(Event::Tick, now())), vec![(2, Why::Crash)]);
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    let a = m.handle(Event::Ready { gen: 2 }, now());
    assert!(a.contains(&Action::CheckConfig), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn stop_before_the_child_serves_answers_the_waiting_reload() {
    let mut m = starting();
    m.handle(Event::Reload { waiter: Some(5) }, now());
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    let (w, r) = reload_result(&a).expect("answered");
    assert_eq!(w, vec![5]);
    assert_eq!(r, Err(ReloadError::Stopping));
    assert!(a.contains(&Action::Terminate { gen: 1 }));
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
    assert!(!a.contains(&Action::CheckConfig));
}

#[tokio::test(start_paused = true)]
async fn failed_first_start_answers_the_waiting_reload_before_exiting() {
    let mut m = starting();
    m.handle(Event::Reload { waiter: Some(6) }, now());
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(2),
        },
        now(),
    );
    let (w, r) = reload_result(&a).expect("answered");
    assert_eq!(w, vec![6]);
    assert_eq!(r, Err(ReloadError::Exiting(2)), "{a:?}");
    assert_eq!(a.last(), Some(&Action::Exit(2)), "answered first: {a:?}");
}

#[tokio::test(start_paused = true)]
async fn sighup_during_a_stop_is_refused_and_changes_nothing() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(Event::Reload { waiter: None }, now());
    assert_eq!(
        a,
        vec![Action::ReloadFinished {
            waiters: vec![],
            result: Err(ReloadError::Refused(Mode::Stopping))
        }]
    );
    assert_eq!(m.mode(), Mode::Stopping);
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
}

#[tokio::test(start_paused = true)]
async fn sigterm_during_a_reload_check_stops_without_spawning_the_next_generation() {
    let mut m = serving();
    m.handle(Event::Reload { waiter: Some(8) }, now());
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    assert!(reload_result(&a).expect("answered").1.is_err());
    let a = m.handle(Event::ConfigChecked(Ok(())), now());
    assert!(spawns(&a).is_empty(), "{a:?}");
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
}

#[tokio::test(start_paused = true)]
async fn second_sigint_during_a_reload_kills_both_generations_and_exits_0() {
    let mut m = serving();
    next_generation_started(&mut m, Some(9));
    let a = m.handle(Event::Stop(StopSignal::Int), now());
    assert!(reload_result(&a).expect("answered").1.is_err());
    assert!(kills(&a).is_empty(), "the first SIGINT drains: {a:?}");
    let a = m.handle(Event::Stop(StopSignal::Int), now());
    assert_eq!(
        kills(&a),
        vec![(1, KillReason::Operator), (2, KillReason::Operator)]
    );
    m.handle(
        Event::Exited {
            gen: 2,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(0));
}

// ----- operator restart and health ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn operator_restart_starts_a_new_generation_and_retires_the_old() {
    let mut m = serving();
    let a = m.handle(Event::Restart { waiter: None }, now());
    assert!(a.contains(&Action::Terminate { gen: 1 }));
    assert_eq!(spawns(&a), vec![(2, Why::Restart)]);
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    let a = m.handle(Event::Ready { gen: 2 }, now());
    assert!(matches!(
        &a[..],
        [Action::NotifyReady(Fact::Serving {
            gen: 2,
            restarts: 1,
            ..
        })]
    ));
}

#[tokio::test(start_paused = true)]
async fn healthy_probes_feed_the_watchdog() {
    let mut m = serving();
    assert_eq!(
        m.handle(Event::Health { ok: true }, now()),
        vec![Action::WatchdogPing]
    );
}

#[tokio::test(start_paused = true)]
async fn failed_probes_withhold_the_watchdog_and_replace_the_child() {
    let mut m = serving();
    for _ in 0..2 {
        let a = m.handle(Event::Health { ok: false }, now());
        assert!(!a.contains(&Action::WatchdogPing) && kills(&a).is_empty());
    }
    let a = m.handle(Event::Health { ok: false }, now());
    assert_eq!(kills(&a), vec![(1, KillReason::Unhealthy)]);
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(m.mode(), Mode::Backoff);
    advance(Duration::from_millis(100)).await;
    assert_eq!(spawns(&m.handle(Event::Tick, now())), vec![(2, Why::Crash)]);
}

#[tokio::test(start_paused = true)]
async fn a_passing_probe_resets_the_failure_count() {
    let mut m = serving();
    m.handle(Event::Health { ok: false }, now());
    m.handle(Event::Health { ok: false }, now());
    m.handle(Event::Health { ok: true }, now());
    let a = m.handle(Event::Health { ok: false }, now());
    assert!(kills(&a).is_empty());
}

// Starting and restarting are progress: a probe that fails then must not withhold the
// ping, or systemd's watchdog would kill steward for a child that is still coming up.

#[tokio::test(start_paused = true)]
async fn starting_keeps_the_watchdog_fed() {
    let mut m = starting();
    assert_eq!(
        m.handle(Event::Health { ok: false }, now()),
        vec![Action::WatchdogPing]
    );
}

#[tokio::test(start_paused = true)]
async fn crash_backoff_keeps_the_watchdog_fed() {
    let mut m = serving();
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(m.mode(), Mode::Backoff);
    assert_eq!(
        m.handle(Event::Health { ok: false }, now()),
        vec![Action::WatchdogPing]
    );
}

// ----- What mutation testing found unpinned (cargo-mutants over lifecycle.rs) -----------

fn statuses(a: &[Action]) -> Vec<&Fact> {
    a.iter()
        .filter_map(|a| match a {
            Action::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn notes(a: &[Action]) -> Vec<&Fact> {
    a.iter()
        .filter_map(|a| match a {
            Action::Note(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// A serving machine that has reloaded once: generation 2 (pid 43) serves, generation 1
/// drains.
fn reloaded() -> Lifecycle {
    let mut m = serving();
    next_generation_started(&mut m, None);
    m.handle(Event::Ready { gen: 2 }, now());
    m
}

#[test]
fn a_clean_exit_and_term_int_or_kill_are_how_a_child_stops() {
    for s in [
        ChildStatus::Code(0),
        ChildStatus::Signal(libc::SIGTERM),
        ChildStatus::Signal(libc::SIGINT),
        ChildStatus::Signal(libc::SIGKILL),
    ] {
        assert!(s.is_stop_outcome(), "{s:?}");
    }
    for s in [ChildStatus::Code(1), ChildStatus::Signal(libc::SIGSEGV)] {
        assert!(!s.is_stop_outcome(), "{s:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn every_live_generation_is_listed_during_a_reload() {
    let mut m = serving();
    next_generation_started(&mut m, None);
    assert_eq!(m.gen(1).and_then(|g| g.pid), Some(42));
    assert_eq!(m.gen(2).and_then(|g| g.pid), Some(43));
    let mut ids: Vec<GenId> = m.gens().map(|g| g.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn restarts_count_crash_recoveries_from_zero() {
    let mut m = serving();
    assert_eq!(m.restarts(), 0);
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    advance(Duration::from_millis(100)).await;
    m.handle(Event::Tick, now());
    assert_eq!(m.restarts(), 1);
}

#[tokio::test(start_paused = true)]
async fn stop_elapsed_counts_from_the_stop() {
    let mut m = serving();
    assert_eq!(m.stop_elapsed(now()), None);
    m.handle(Event::Stop(StopSignal::Term), now());
    advance(Duration::from_secs(2)).await;
    assert_eq!(m.stop_elapsed(now()), Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn only_generations_waiting_for_their_requests_are_draining() {
    let mut m = serving();
    assert_eq!(m.draining().count(), 0);
    m.handle(Event::Stop(StopSignal::Term), now());
    assert_eq!(m.draining().collect::<Vec<_>>(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn retiring_an_old_generation_after_a_reload_is_a_note_not_a_status() {
    let mut m = reloaded();
    m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: false,
        },
        now(),
    );
    advance(QUIET).await;
    let a = m.handle(Event::Tick, now());
    assert_eq!(kills(&a), vec![(1, KillReason::Drained)]);
    assert!(statuses(&a).is_empty(), "{a:?}");
    assert_eq!(notes(&a).len(), 1, "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn the_current_generation_drained_at_a_stop_is_a_status() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: false,
        },
        now(),
    );
    advance(QUIET).await;
    let a = m.handle(Event::Tick, now());
    assert_eq!(kills(&a), vec![(1, KillReason::Drained)]);
    assert_eq!(statuses(&a).len(), 1, "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retired_generation_ending_is_noted_and_changes_nothing() {
    let mut m = reloaded();
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    assert!(
        matches!(&notes(&a)[..], [Fact::Retired { gen: 1, .. }]),
        "{a:?}"
    );
    assert!(spawns(&a).is_empty() && statuses(&a).is_empty(), "{a:?}");
    assert_eq!(m.mode(), Mode::Serving);
    assert_eq!(m.current().map(|g| g.id), Some(2));
}

#[tokio::test(start_paused = true)]
async fn an_old_generation_ending_during_the_next_reload_does_not_lose_it() {
    let mut m = reloaded();
    m.handle(Event::Reload { waiter: Some(9) }, now());
    m.handle(Event::ConfigChecked(Ok(())), now());
    m.handle(Event::Spawned { gen: 3, pid: 44 }, now());
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(0),
        },
        now(),
    );
    let a = m.handle(Event::Ready { gen: 3 }, now());
    assert_eq!(reload_result(&a), Some((vec![9], Ok(3))));
    assert_eq!(m.current().map(|g| g.id), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_recovery_generation_that_never_serves_is_another_crash_not_the_end() {
    let mut m = serving();
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    advance(Duration::from_millis(100)).await;
    assert_eq!(spawns(&m.handle(Event::Tick, now())), vec![(2, Why::Crash)]);
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    advance(Duration::from_secs(60)).await;
    assert_eq!(
        kills(&m.handle(Event::Tick, now())),
        vec![(2, KillReason::StartTimeout)]
    );
    let a = m.handle(
        Event::Exited {
            gen: 2,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(exit_code(&a), None, "{a:?}");
    assert_eq!(m.mode(), Mode::Backoff);
}

#[tokio::test(start_paused = true)]
async fn with_health_failures_zero_failed_probes_never_replace_the_child() {
    let mut m = starting_with(Policy {
        health_failures: 0,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    for _ in 0..10 {
        let a = m.handle(Event::Health { ok: false }, now());
        assert!(kills(&a).is_empty(), "{a:?}");
    }
    assert_eq!(m.mode(), Mode::Serving);
}

#[tokio::test(start_paused = true)]
async fn a_tick_before_the_backoff_ends_starts_nothing() {
    let mut m = serving();
    m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    advance(Duration::from_millis(50)).await;
    assert!(spawns(&m.handle(Event::Tick, now())).is_empty());
    assert_eq!(m.mode(), Mode::Backoff);
}

#[tokio::test(start_paused = true)]
async fn during_a_stop_even_an_old_generations_drained_kill_is_a_status() {
    let mut m = reloaded();
    m.handle(Event::Stop(StopSignal::Term), now());
    // Generation 1 holds no listener and nothing in flight: it is ended at once.
    let a = m.handle(
        Event::Drain {
            gen: 1,
            in_flight: 0,
            closed: true,
        },
        now(),
    );
    assert_eq!(kills(&a), vec![(1, KillReason::Drained)]);
    assert!(
        statuses(&a)
            .iter()
            .any(|s| matches!(s, Fact::Killing { gen: 1, .. })),
        "{a:?}"
    );
}

// ----- what the phases' data rules out ------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_reload_whose_generation_crashed_during_its_check_runs_once_the_next_one_serves() {
    let mut m = serving();
    m.handle(Event::Reload { waiter: Some(7) }, now());
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Signal(9),
        },
        now(),
    );
    assert_eq!(reload_result(&a), None, "{a:?}");
    assert_eq!(m.mode(), Mode::Backoff);
    // The check's answer comes too late to matter.
    assert!(m.handle(Event::ConfigChecked(Ok(())), now()).is_empty());
    advance(Duration::from_millis(100)).await;
    m.handle(Event::Tick, now());
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    let a = m.handle(Event::Ready { gen: 2 }, now());
    assert!(a.contains(&Action::CheckConfig), "{a:?}");
    m.handle(Event::ConfigChecked(Ok(())), now());
    m.handle(Event::Spawned { gen: 3, pid: 44 }, now());
    let a = m.handle(Event::Ready { gen: 3 }, now());
    assert_eq!(reload_result(&a), Some((vec![7], Ok(3))));
}

#[tokio::test(start_paused = true)]
async fn giving_up_while_a_reload_starts_the_next_generation_retires_it() {
    let mut m = starting_with(Policy {
        max_crashes: 0,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    next_generation_started(&mut m, Some(5));
    let a = m.handle(
        Event::Exited {
            gen: 1,
            status: ChildStatus::Code(3),
        },
        now(),
    );
    assert!(a.contains(&Action::Terminate { gen: 2 }), "{a:?}");
    assert!(m.handle(Event::Ready { gen: 2 }, now()).is_empty());
    let a = m.handle(
        Event::Exited {
            gen: 2,
            status: ChildStatus::Signal(15),
        },
        now(),
    );
    assert_eq!(exit_code(&a), Some(3));
    assert_eq!(
        reload_result(&a),
        Some((vec![5], Err(ReloadError::Exiting(3))))
    );
}

#[tokio::test(start_paused = true)]
async fn a_generation_replaced_while_it_was_being_spawned_is_retired_once_it_runs() {
    let (mut m, _) = Lifecycle::start(policy(), now());
    let a = m.handle(Event::Restart { waiter: None }, now());
    assert_eq!(spawns(&a), vec![(2, Why::Restart)]);
    let a = m.handle(Event::Spawned { gen: 1, pid: 42 }, now());
    assert_eq!(a, vec![Action::Terminate { gen: 1 }]);
    assert_eq!(m.current().map(|g| g.id), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_serving_generation_whose_hand_off_failed_late_is_a_crash() {
    let mut m = reloaded();
    let a = m.handle(
        Event::SpawnFailed {
            gen: 2,
            reason: "socket hand-off failed".into(),
            code: exit::CONFIG,
        },
        now(),
    );
    assert_eq!(m.mode(), Mode::Backoff, "{a:?}");
    assert_eq!(m.current().map(|g| g.id), None);
}

#[tokio::test(start_paused = true)]
async fn a_restart_is_answered_yes_while_serving_or_starting() {
    for mut m in [starting(), serving()] {
        let a = m.handle(Event::Restart { waiter: Some(4) }, now());
        assert_eq!(
            a.first(),
            Some(&Action::RestartAnswered {
                waiter: 4,
                result: Ok(())
            }),
            "{a:?}"
        );
        assert_eq!(spawns(&a), vec![(2, Why::Restart)]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_is_refused_with_the_mode_that_cannot_run_it() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    let a = m.handle(Event::Restart { waiter: Some(4) }, now());
    assert_eq!(
        a,
        vec![
            Action::RestartAnswered {
                waiter: 4,
                result: Err(Mode::Stopping)
            },
            Action::Note(Fact::RestartIgnored {
                during: Mode::Stopping
            })
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_that_runs_out_of_time_is_abandoned_once() {
    let mut m = serving();
    m.handle(Event::Reload { waiter: Some(3) }, now());
    assert_eq!(m.next_wakeup(), Some(now() + CHECK_TIMEOUT));
    advance(CHECK_TIMEOUT - Duration::from_millis(1)).await;
    assert!(m.handle(Event::Tick, now()).is_empty());
    advance(Duration::from_millis(1)).await;
    assert_eq!(m.handle(Event::Tick, now()), vec![Action::AbandonCheck]);
    assert_eq!(m.next_wakeup(), None);
    assert!(m.handle(Event::Tick, now()).is_empty());
    let a = m.handle(Event::ConfigChecked(Err("too slow".into())), now());
    assert_eq!(
        reload_result(&a),
        Some((
            vec![3],
            Err(ReloadError::Failed(ReloadFailure::Check("too slow".into())))
        ))
    );
    assert_eq!(m.current().map(|g| g.id), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_check_that_passed_in_time_has_no_timer() {
    let mut m = serving();
    m.handle(Event::Reload { waiter: None }, now());
    m.handle(Event::ConfigChecked(Ok(())), now());
    m.handle(Event::Spawned { gen: 2, pid: 43 }, now());
    assert_eq!(m.next_wakeup(), Some(now() + Duration::from_secs(60)));
}

fn unclaimed(gen: GenId) -> Event {
    Event::Unclaimed {
        gen,
        listeners: crate::lifecycle::Unclaimed {
            keys: vec!["127.0.0.1:8080".into()],
            config: "/etc/steward/steward.toml".into(),
        },
    }
}

#[tokio::test(start_paused = true)]
async fn a_first_generation_serving_without_a_listener_is_rejected_and_steward_exits_78() {
    let mut m = starting();
    let a = m.handle(unclaimed(1), now());
    assert!(
        matches!(a.first(), Some(Action::Reject { gen: 1, reason }) if reason.contains("127.0.0.1:8080")),
        "{a:?}"
    );
    assert_eq!(a.last(), Some(&Action::Exit(exit::CONFIG)), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reload_whose_generation_left_a_listener_unclaimed_fails_with_the_old_one_serving() {
    let mut m = serving();
    next_generation_started(&mut m, Some(7));
    let a = m.handle(unclaimed(2), now());
    assert!(
        matches!(a.first(), Some(Action::Reject { gen: 2, .. })),
        "{a:?}"
    );
    assert!(
        a.iter().any(|x| matches!(x, Action::ReloadFinished { waiters, result: Err(_) } if waiters == &vec![7])),
        "{a:?}"
    );
    assert!(
        !a.iter().any(|x| matches!(x, Action::Terminate { gen: 1 })),
        "{a:?}"
    );
    assert_eq!(
        (m.mode(), m.current().map(|g| g.id)),
        (Mode::Serving, Some(1))
    );
}

#[tokio::test(start_paused = true)]
async fn unclaimed_listeners_of_a_serving_generation_change_nothing() {
    let mut m = serving();
    assert_eq!(m.handle(unclaimed(1), now()), vec![]);
    assert_eq!(m.mode(), Mode::Serving);
}

#[tokio::test(start_paused = true)]
async fn a_stop_before_the_start_exits_0_without_a_child() {
    let mut m = Lifecycle::new(policy());
    let a = m.handle(Event::Stop(StopSignal::Term), now());
    assert_eq!(a.last(), Some(&Action::Exit(exit::OK)), "{a:?}");
    assert!(spawns(&a).is_empty());
    assert!(m.handle(Event::Start, now()).is_empty());
    assert_eq!(m.mode(), Mode::Exited);
}

#[tokio::test(start_paused = true)]
async fn a_reload_before_the_start_runs_once_generation_1_serves() {
    let mut m = Lifecycle::new(policy());
    let first = m.handle(Event::Reload { waiter: None }, now());
    assert_eq!(first, vec![Action::Note(Fact::ReloadBeforeStart)]);
    assert!(m.handle(Event::Reload { waiter: None }, now()).is_empty());
    assert_eq!(
        spawns(&m.handle(Event::Start, now())),
        vec![(1, Why::Start)]
    );
    m.handle(Event::Spawned { gen: 1, pid: 42 }, now());
    let a = m.handle(Event::Ready { gen: 1 }, now());
    assert!(a.contains(&Action::CheckConfig), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn before_the_start_nothing_else_happens() {
    let mut m = Lifecycle::new(policy());
    for ev in [
        Event::Tick,
        Event::Health { ok: false },
        Event::Ready { gen: 1 },
    ] {
        assert!(m.handle(ev, now()).is_empty());
    }
    assert_eq!(
        (m.mode(), m.current().map(|g| g.id)),
        (Mode::Starting, None)
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_asked_before_the_start_is_refused_as_starting() {
    let mut m = Lifecycle::new(policy());
    let a = m.handle(Event::Restart { waiter: Some(7) }, now());
    assert_eq!(
        a,
        vec![Action::RestartAnswered {
            waiter: 7,
            result: Err(Mode::Starting)
        }]
    );
    assert_eq!(
        spawns(&m.handle(Event::Start, now())),
        vec![(1, Why::Start)]
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_stop_has_ended_the_machine_still_tells_its_signal_and_when_it_began() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    advance(Duration::from_millis(300)).await;
    let status = ChildStatus::Code(0);
    m.handle(Event::Exited { gen: 1, status }, now());
    assert_eq!(m.mode(), Mode::Exited);
    assert_eq!(m.stop_signal(), Some(StopSignal::Term));
    assert_eq!(m.stop_elapsed(now()), Some(Duration::from_millis(300)));
}

#[tokio::test(start_paused = true)]
async fn while_a_stop_drains_the_machine_wakes_to_refresh_its_status() {
    let mut m = starting_with(Policy {
        drain_quiet: None,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    m.handle(Event::Stop(StopSignal::Term), now());
    assert_eq!(m.next_wakeup(), Some(now() + STATUS_REFRESH));
}

#[tokio::test(start_paused = true)]
async fn a_retired_generation_killed_at_its_deadline_is_news_not_a_note() {
    let mut m = starting_with(Policy {
        drain_quiet: None,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    next_generation_started(&mut m, None);
    m.handle(Event::Ready { gen: 2 }, now());
    advance(DEADLINE).await;
    let a = m.handle(Event::Tick, now());
    assert_eq!(kills(&a), vec![(1, KillReason::Deadline)], "{a:?}");
    assert!(
        a.iter().any(|x| matches!(
            x,
            Action::Status(Fact::Killing {
                gen: 1,
                reason: KillReason::Deadline,
                ..
            })
        )),
        "{a:?}"
    );
}

fn self_ending_stop() -> Lifecycle {
    let mut m = starting_with(Policy {
        self_ending: true,
        ..policy()
    });
    m.handle(Event::Ready { gen: 1 }, now());
    m.handle(Event::Stop(StopSignal::Term), now());
    m
}

fn drained(gen: GenId) -> Event {
    Event::Drain {
        gen,
        in_flight: 0,
        closed: true,
    }
}

#[tokio::test(start_paused = true)]
async fn a_drained_self_ending_child_is_left_to_exit_by_itself() {
    let mut m = self_ending_stop();
    assert!(kills(&m.handle(drained(1), now())).is_empty());
    advance(SELF_EXIT_GRACE - Duration::from_millis(1)).await;
    assert!(kills(&m.handle(Event::Tick, now())).is_empty());
    let status = ChildStatus::Code(0);
    let a = m.handle(Event::Exited { gen: 1, status }, now());
    assert_eq!(exit_code(&a), Some(exit::OK), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn a_drained_self_ending_child_that_does_not_exit_is_ended_after_its_grace() {
    let mut m = self_ending_stop();
    m.handle(drained(1), now());
    assert_eq!(m.next_wakeup(), Some(now() + SELF_EXIT_GRACE));
    advance(SELF_EXIT_GRACE).await;
    assert_eq!(
        kills(&m.handle(Event::Tick, now())),
        vec![(1, KillReason::Drained)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_drained_stock_child_is_ended_at_once() {
    let mut m = serving();
    m.handle(Event::Stop(StopSignal::Term), now());
    assert_eq!(
        kills(&m.handle(drained(1), now())),
        vec![(1, KillReason::Drained)]
    );
}
