//! Signal storms and signals at odd moments, against real steward and real steward-proxy
//! generations that are handed steward's listeners (operator's guide, "Signals at odd
//! moments"). Each test checks its own outcome, then that nothing is left: every
//! generation's child and process group gone, no process of the test's scratch directory
//! running, none whose parent was steward, and none of the escapees every run of the child
//! command left behind (its children die with steward by their parent-death signal
//! whatever steward does; the escapees only by steward's kill).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kind, Launcher, Opts, Setup, USER_YAML};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use steward_e2e::*;

/// (state, current generation, generations steward still has).
fn status(s: &Setup) -> (String, u64, usize) {
    let v = status_json(&s.control());
    let st = &v["status"];
    (
        st["state"].as_str().unwrap_or("").to_string(),
        st["generation"].as_u64().unwrap_or(0),
        st["generations"].as_array().map(Vec::len).unwrap_or(0),
    )
}

/// Polls `steward status` until `pred` holds; panics with the log otherwise.
fn wait_status(
    s: &Setup,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&(String, u64, usize)) -> bool,
) {
    let end = Instant::now() + timeout;
    loop {
        let st = status(s);
        if pred(&st) {
            return;
        }
        if Instant::now() >= end {
            panic!(
                "{what}: not within {timeout:?} (last status {st:?}); log:\n{}",
                s.steward.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The words the operator's guide quotes for this row of its signal table: the message
/// is the interface there, so this one assertion per key message pins its wording; the
/// test's other assertions are about facts.
fn the_guide_quotes(log: &str, words: &str) {
    assert!(
        log.contains(words),
        "the operator's guide quotes {words:?}; log:\n{log}"
    );
}

/// A reload asked for while one runs, queued behind it.
const QUEUED_DURING_A_RELOAD: [(&str, &str); 2] = [
    ("steward_event", "reload-queued"),
    ("steward_during", "reloading"),
];

/// (pid, parent pid, process group) of a running process; `None` for a zombie or when gone.
fn stat(pid: i32) -> Option<(i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = s[s.rfind(')')? + 1..].split_whitespace();
    let state = f.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

/// After steward exited: nothing of any generation is left, escapees included.
fn assert_nothing_left(s: &Setup, steward_pid: i32) {
    let log = s.steward.log_text();
    let pids = started_child_pids(&log);
    let escapees = s.escapees();
    // Every generation left one, so the check below cannot pass for want of escapees.
    assert_eq!(
        escapees.is_empty(),
        pids.is_empty(),
        "escapees {escapees:?} of generations {pids:?}"
    );
    let scratch = s.scratch.path.display().to_string();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = vec![];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Some((ppid, pgrp)) = stat(pid) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let why = if pids.contains(&pid) {
                "a generation's child"
            } else if pids.contains(&pgrp) {
                "in a generation's process group"
            } else if escapees.contains(&pid) && stubborn_alive(pid) {
                "an escapee: own session, re-parented, no parent-death signal"
            } else if ppid == steward_pid {
                "steward's child"
            } else if cmdline.contains(&scratch) {
                "runs from the test's scratch directory"
            } else {
                continue;
            };
            left.push(format!("pid {pid} ({why}): {cmdline}"));
        }
        if left.is_empty() {
            return;
        }
        if Instant::now() >= end {
            panic!(
                "left behind after steward exited (generations {pids:?}):\n{}\nlog:\n{log}",
                left.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs `steward reload` in a thread; its exit code and output.
fn reload_client(s: &Setup) -> std::thread::JoinHandle<(Option<i32>, String)> {
    let control = s.control();
    std::thread::spawn(move || steward_cli("reload", &control))
}

/// Starts a reload whose next generation runs but never becomes ready (the reloaded
/// configuration probes a path steward-proxy answers with 404), and waits until it runs
/// beside the current one: a reload under way, however fast the machine.
fn reload_held_open(s: &Setup) -> std::thread::JoinHandle<(Option<i32>, String)> {
    let toml = s.scratch.path.join("steward.toml");
    let text = std::fs::read_to_string(&toml).expect("steward.toml");
    assert!(text.contains("/health\""), "{text}");
    std::fs::write(&toml, text.replace("/health\"", "/never-ready\"")).expect("write");
    let reload = reload_client(s);
    wait_status(
        s,
        "reload under way",
        Duration::from_secs(10),
        |(st, _, n)| st == "reloading" && *n == 2,
    );
    reload
}

/// steward-proxy handed steward's listeners, each run leaving an escapee.
fn start_proxy() -> Setup {
    start_proxy_with(Opts::default())
}

fn start_proxy_with(opts: Opts) -> Setup {
    Setup::start_opts(
        Kind::StewardProxy,
        USER_YAML,
        "",
        true,
        "",
        Opts {
            launcher: Launcher::Escapee,
            ..opts
        },
    )
}

#[test]
fn a_thousand_sighups_under_load_are_coalesced_and_drop_nothing() {
    let mut s = start_proxy();
    s.wait_ready();
    let pid = s.steward.pid();
    // A first request and status call warm up what steward allocates once.
    assert_eq!(status(&s).1, 1);
    let (rss_before, fds_before) = (rss_kib(pid), fd_count(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&s.proxy, "/", 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    // Ten bursts of 100, each as fast as kill(2) goes, spread so that they land while
    // steward serves, checks a configuration and brings up the next generation.
    const BURSTS: u64 = 10;
    let t = Instant::now();
    for _ in 0..BURSTS {
        for _ in 0..100 {
            kill(Pid::from_raw(pid), Signal::SIGHUP).expect("SIGHUP to steward");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let sent_in = t.elapsed();
    // Coalesced reloads run one after another until none is pending: serving, one
    // generation, and still so a moment later.
    for _ in 0..2 {
        wait_status(
            &s,
            "settled after the storm",
            Duration::from_secs(90),
            |(st, _, n)| st == "serving" && *n == 1,
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (counts, errors) = load.join().expect("load thread");

    let (state, gen, gens) = status(&s);
    let log = s.steward.log_text();
    assert_eq!((state.as_str(), gens), ("serving", 1), "log:\n{log}");
    // A burst that finds steward serving starts a reload, and whatever of it arrives during
    // that reload is coalesced into one more after it (the kernel already merges most of a
    // burst into one pending SIGHUP): at most two reloads a burst, however many signals.
    assert!(
        (2..=1 + 2 * BURSTS).contains(&gen),
        "1000 SIGHUPs in {BURSTS} bursts (sent in {sent_in:?}) gave generation {gen}: reloads must coalesce; log:\n{log}"
    );
    assert!(
        counts.ok > 0 && counts.refused == 0 && counts.failed == 0,
        "{counts:?} {errors:?}"
    );
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    // Exactly one generation alive: every earlier one is gone.
    let pids = started_child_pids(&log);
    assert_eq!(pids.len() as u64, gen, "{pids:?}");
    for old in &pids[..pids.len() - 1] {
        let end = Instant::now() + Duration::from_secs(10);
        while process_alive(*old) {
            assert!(Instant::now() < end, "generation pid {old} still alive");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (rss_after, fds_after) = (rss_kib(pid), fd_count(pid));
    // It grows by about 120 KiB (7.0 to 7.1 MiB); 2 MiB of margin still catches a buffer
    // kept per reload or a table read kept in a thread's arena (once 7 to 32 MiB).
    assert!(
        rss_after < rss_before + 2 * 1024,
        "steward's RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(
        fds_after <= fds_before + 4,
        "steward's descriptors grew from {fds_before} to {fds_after}"
    );
    eprintln!(
        "1000 SIGHUPs in {sent_in:?}: generation {gen}, {counts:?}, RSS {rss_before}->{rss_after} KiB, fds {fds_before}->{fds_after}"
    );

    s.steward.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert_nothing_left(&s, pid);
}

#[test]
fn sighups_during_a_reload_become_one_more_reload_after_it() {
    let mut s = start_proxy();
    s.wait_ready();
    let pid = s.steward.pid();
    // A reload held open: its generation never becomes ready and is given up after 5 s.
    let toml = s.scratch.path.join("steward.toml");
    let good = std::fs::read_to_string(&toml).expect("steward.toml");
    assert!(good.contains("timeout = \"20s\""), "{good}");
    let held = good
        .replace("/health\"", "/never-ready\"")
        .replace("timeout = \"20s\"", "timeout = \"5s\"");
    std::fs::write(&toml, held).expect("write");
    let reload = reload_client(&s);
    wait_status(
        &s,
        "reload under way",
        Duration::from_secs(10),
        |(st, _, n)| st == "reloading" && *n == 2,
    );
    // Spread out, so the kernel does not merge them all into one pending signal.
    for _ in 0..10 {
        s.steward.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(20));
    }
    s.steward
        .expect_fact(&QUEUED_DURING_A_RELOAD, Duration::from_secs(5));
    // The reload they asked for reads the configuration as it is when it runs.
    std::fs::write(&toml, good).expect("write");
    let (code, out) = reload.join().expect("reload client");
    assert_eq!(code, Some(1), "the held reload fails: {out}");
    wait_status(
        &s,
        "generation 3 serves",
        Duration::from_secs(30),
        |(st, g, n)| st == "serving" && *g == 3 && *n == 1,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(status(&s), ("serving".to_string(), 3, 1), "one more only");
    let log = s.steward.log_text();
    let asked = count_facts(&log, &QUEUED_DURING_A_RELOAD);
    the_guide_quotes(
        &log,
        "reload requested during a reload: it will run once this one ends",
    );
    assert!(
        asked >= 2,
        "only {asked} SIGHUP seen during the reload; log:\n{log}"
    );
    s.steward.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert_nothing_left(&s, pid);
}

#[test]
fn sigterm_during_a_reload_stops_both_generations_and_fails_the_reload_client() {
    let mut s = start_proxy();
    s.wait_ready();
    let pid = s.steward.pid();
    let slow = s.slow_request(2000);
    std::thread::sleep(Duration::from_millis(300));
    let reload = reload_held_open(&s);
    let t = Instant::now();
    s.steward.signal(Signal::SIGTERM);
    let code = s.wait_exit(Duration::from_secs(20)).code();
    let took = t.elapsed();
    let log = s.steward.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    // Within the deadline (the 25 s fallback outside systemd): the drain ended it.
    assert!(took < Duration::from_secs(20), "{took:?}");
    let (rcode, rout) = reload.join().expect("reload client");
    assert_eq!(rcode, Some(1), "{rout}");
    assert!(
        rout.contains("reload failed: steward is stopping"),
        "{rout}"
    );
    let (r, _) = slow.join().expect("slow request");
    assert_eq!(
        r.map(|r| r.0),
        Ok(200),
        "the request in flight finishes; log:\n{log}"
    );
    let stop_in_reload = [
        ("steward_event", "stop-began"),
        ("steward_during", "reloading"),
    ];
    assert!(log_has(&log, &stop_in_reload), "{log}");
    let pids = started_child_pids(&log);
    assert_eq!(pids.len(), 2, "{log}");
    let msgs = s.notify.messages();
    assert!(
        !msgs
            .iter()
            .any(|m| m.contains("READY=1") && m.contains("generation 2")),
        "{msgs:?}"
    );
    assert_nothing_left(&s, pid);
}

#[test]
fn sigterm_before_ready_stops_the_starting_child_with_exit_0() {
    // The probe asks a path steward-proxy answers with 404: the child runs, never ready.
    let mut s = start_proxy_with(Opts {
        ready_path: Some("/never-ready"),
        ..Opts::default()
    });
    let pid = s.steward.pid();
    s.steward
        .child_pid(Duration::from_secs(10))
        .expect("child started");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status(&s).0, "starting");
    s.steward.signal(Signal::SIGTERM);
    let code = s.wait_exit(Duration::from_secs(20)).code();
    let log = s.steward.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    let stop_in_start = [
        ("steward_event", "stop-began"),
        ("steward_signal", "SIGTERM"),
        ("steward_during", "starting"),
    ];
    assert!(log_has(&log, &stop_in_start), "{log}");
    the_guide_quotes(
        &log,
        "stopping: SIGTERM received before the child was ready",
    );
    let msgs = s.notify.messages();
    assert!(!msgs.iter().any(|m| m.contains("READY=1")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
    assert_nothing_left(&s, pid);
}

#[test]
fn sigterm_before_the_child_starts_exits_0_without_starting_it() {
    let mut s = start_proxy_with(Opts {
        pending: &[Signal::SIGTERM],
        ..Opts::default()
    });
    let pid = s.steward.pid();
    let code = s.wait_exit(Duration::from_secs(20)).code();
    let log = s.steward.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    let stop_first = [
        ("steward_event", "stop-before-start"),
        ("steward_signal", "SIGTERM"),
    ];
    assert!(log_has(&log, &stop_first), "{log}");
    the_guide_quotes(&log, "stop signal before the child was started; exiting");
    assert!(started_child_pids(&log).is_empty(), "{log}");
    assert_nothing_left(&s, pid);
}

#[test]
fn sighup_before_the_child_starts_becomes_one_reload_once_it_serves() {
    let mut s = start_proxy_with(Opts {
        pending: &[Signal::SIGHUP],
        ..Opts::default()
    });
    let pid = s.steward.pid();
    wait_status(
        &s,
        "generation 2 serves",
        Duration::from_secs(30),
        |(st, g, n)| st == "serving" && *g == 2 && *n == 1,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(status(&s), ("serving".to_string(), 2, 1), "one reload only");
    let log = s.steward.log_text();
    assert!(
        log_has(&log, &[("steward_event", "reload-before-start")]),
        "{log}"
    );
    the_guide_quotes(
        &log,
        "SIGHUP before the child was started: one reload will run once it serves",
    );
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    s.steward.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert_nothing_left(&s, pid);
}

#[test]
fn sighups_while_the_first_child_starts_become_one_reload_once_it_serves() {
    let mut s = start_proxy();
    let pid = s.steward.pid();
    s.steward
        .child_pid(Duration::from_secs(10))
        .expect("child started");
    for _ in 0..100 {
        s.steward.signal(Signal::SIGHUP);
    }
    wait_status(
        &s,
        "generation 2 serves",
        Duration::from_secs(30),
        |(st, g, n)| st == "serving" && *g == 2 && *n == 1,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(status(&s), ("serving".to_string(), 2, 1), "one reload only");
    let log = s.steward.log_text();
    let queued_in_start = [
        ("steward_event", "reload-queued"),
        ("steward_during", "starting"),
    ];
    assert!(log_has(&log, &queued_in_start), "{log}");
    the_guide_quotes(
        &log,
        "reload requested while starting: it will run once the child serves",
    );
    assert!(!log_has(&log, &[("steward_reload", "failed")]), "{log}");
    s.steward.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert_nothing_left(&s, pid);
}

#[test]
fn sighup_during_a_stop_is_refused_and_the_stop_completes() {
    let mut s = start_proxy();
    s.wait_ready();
    let pid = s.steward.pid();
    let slow = s.slow_request(3000);
    std::thread::sleep(Duration::from_millis(300));
    s.steward.signal(Signal::SIGTERM);
    assert!(s
        .notify
        .wait_for("STOPPING=1", Duration::from_secs(5))
        .is_some());
    for _ in 0..10 {
        s.steward.signal(Signal::SIGHUP);
    }
    let code = s.wait_exit(Duration::from_secs(20)).code();
    let log = s.steward.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    let (r, _) = slow.join().expect("slow request");
    assert_eq!(r.map(|r| r.0), Ok(200), "log:\n{log}");
    let refused = [("steward_reload", "failed"), ("steward_during", "stopping")];
    assert!(log_has(&log, &refused), "{log}");
    the_guide_quotes(&log, "reload failed: cannot reload while stopping");
    assert_eq!(
        started_child_pids(&log).len(),
        1,
        "no generation started: {log}"
    );
    assert_nothing_left(&s, pid);
}

#[test]
fn second_sigint_during_a_reload_kills_both_generations_and_exits_0() {
    let mut s = start_proxy();
    s.wait_ready();
    let pid = s.steward.pid();
    let slow = s.slow_request(15_000);
    std::thread::sleep(Duration::from_millis(300));
    let reload = reload_held_open(&s);
    s.steward.signal(Signal::SIGINT);
    let stop_in_reload = [
        ("steward_event", "stop-began"),
        ("steward_signal", "SIGINT"),
        ("steward_during", "reloading"),
    ];
    s.steward
        .expect_fact(&stop_in_reload, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.steward.wait(Duration::ZERO).is_none(),
        "the first SIGINT drains; log:\n{}",
        s.steward.log_text()
    );
    let t = Instant::now();
    s.steward.signal(Signal::SIGINT);
    let code = s.wait_exit(Duration::from_secs(10)).code();
    let took = t.elapsed();
    let log = s.steward.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let operator = [
        ("steward_event", "killed"),
        ("steward_escalation", "operator"),
    ];
    assert!(log_has(&log, &operator), "{log}");
    let (rcode, rout) = reload.join().expect("reload client");
    assert_eq!(rcode, Some(1), "{rout}");
    assert!(
        rout.contains("reload failed: steward is stopping"),
        "{rout}"
    );
    // The request the operator chose to cut is cut, well before its 15 s.
    let (r, _) = slow.join().expect("slow request");
    assert_ne!(r.map(|r| r.0), Ok(200), "cut by the second SIGINT");
    assert_eq!(started_child_pids(&log).len(), 2, "{log}");
    assert_nothing_left(&s, pid);
}
