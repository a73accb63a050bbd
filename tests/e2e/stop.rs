//! Stopping: fast when idle, complete for requests in flight, bounded by the deadline.
//! Each behaviour runs against steward-proxy and against a stock Pingora binary.

mod common;

use std::time::{Duration, Instant};

use common::{Kind, Launcher, Opts, Setup, USER_YAML};
use nix::sys::signal::Signal;
use steward_e2e::*;

fn idle_stop_ends_well_under_a_second(kind: Kind) {
    let mut s = Setup::start(kind, USER_YAML, "");
    s.wait_ready();
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    let t = Instant::now();
    s.steward.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", s.steward.log_text());
    assert!(
        took < Duration::from_millis(800),
        "idle stop took {took:?} with grace_period_seconds: 300; log:\n{}",
        s.steward.log_text()
    );
    assert!(
        s.notify.wait_for("STOPPING=1", Duration::ZERO).is_some(),
        "no STOPPING=1: {:?}",
        s.notify.messages()
    );
}

#[test]
fn idle_stop_with_grace_300_ends_well_under_a_second_steward_proxy() {
    idle_stop_ends_well_under_a_second(Kind::StewardProxy);
}

#[test]
fn idle_stop_with_grace_300_ends_well_under_a_second_stock_pingora() {
    idle_stop_ends_well_under_a_second(Kind::StockPingora);
}

fn request_in_flight_completes_and_stop_ends_right_after(kind: Kind) {
    let mut s = Setup::start(kind, USER_YAML, "");
    s.wait_ready();
    // Long enough for steward's drain count to see it: reading the TCP tables takes a
    // second when other programs hold 200,000 sockets.
    let req = s.slow_request(5000);
    std::thread::sleep(Duration::from_millis(300));
    s.steward.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    let exited = Instant::now();
    let (result, done) = req.join().expect("request thread");
    assert_eq!(status.code(), Some(0), "log:\n{}", s.steward.log_text());
    let (code, body) = result.expect("the in-flight request completes");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("5000"), "{body}");
    // Right after: left to itself, the child would end with its grace period, clamped to
    // the 25 s fallback deadline, long after the request's 5 s.
    let after = exited.saturating_duration_since(done);
    assert!(
        after < Duration::from_secs(10),
        "steward exited {after:?} after the last response; log:\n{}",
        s.steward.log_text()
    );
    let msgs = s.notify.messages();
    assert!(
        draining_counts(&msgs).iter().any(|&n| n >= 1),
        "STATUS never counted the request in flight: {msgs:?}\nlog:\n{}",
        s.steward.log_text()
    );
}

/// The counts of steward's `STATUS=draining: N request(s) in flight, ...` messages. The
/// drain's end ("drained, no request in flight") is not one of them.
fn draining_counts(msgs: &[String]) -> Vec<usize> {
    msgs.iter()
        .filter_map(|m| m.split("STATUS=draining: ").nth(1))
        .filter_map(|rest| rest.split(" request").next()?.parse().ok())
        .collect()
}

#[test]
fn request_in_flight_during_stop_completes_with_200_steward_proxy() {
    request_in_flight_completes_and_stop_ends_right_after(Kind::StewardProxy);
}

#[test]
fn request_in_flight_during_stop_completes_with_200_stock_pingora() {
    request_in_flight_completes_and_stop_ends_right_after(Kind::StockPingora);
}

fn request_longer_than_the_deadline_is_cut_at_the_deadline(kind: Kind) {
    // SIGTERM reaches the server 30 s late, so the child's own shutdown (its grace period,
    // clamped to the deadline, counted from then) would end it 32 s into the stop: only
    // steward's kill can cut the request at the 2 s deadline.
    let mut s = Setup::start_opts(
        kind,
        USER_YAML,
        "deadline = \"2s\"",
        false,
        "",
        Opts {
            launcher: Launcher::LateSigterm(30),
            ..Opts::default()
        },
    );
    s.wait_ready();
    let child = s.steward.child_pid(Duration::ZERO).expect("child pid");
    let req = s.slow_request(20_000);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    s.steward.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    let log = s.steward.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    // steward's kill, then the child's end by it: a child that ended on its own would
    // have exited with a code.
    let kill = log
        .find("stop deadline reached after")
        .unwrap_or_else(|| panic!("no deadline kill; log:\n{log}"));
    let end = log
        .find(&format!("(child pid {child}) stopped (signal 9 (SIGKILL))"))
        .unwrap_or_else(|| panic!("child {child} did not end by SIGKILL; log:\n{log}"));
    assert!(kill < end, "log:\n{log}");
    // Cut, and not before the deadline.
    let (result, done) = req.join().expect("request thread");
    assert!(
        result.as_ref().map(|r| r.0 != 200).unwrap_or(true),
        "the 20 s request should have been cut: {result:?}"
    );
    assert!(
        done.duration_since(t) >= Duration::from_secs(2),
        "the request ended {:?} into the stop, before the 2 s deadline; log:\n{log}",
        done.duration_since(t)
    );
}

#[test]
fn request_longer_than_the_deadline_is_cut_at_the_deadline_steward_proxy() {
    request_longer_than_the_deadline_is_cut_at_the_deadline(Kind::StewardProxy);
}

#[test]
fn request_longer_than_the_deadline_is_cut_at_the_deadline_stock_pingora() {
    request_longer_than_the_deadline_is_cut_at_the_deadline(Kind::StockPingora);
}

#[test]
fn child_ignoring_sigterm_is_killed_with_its_grandchildren_at_the_deadline() {
    let scratch = Scratch::new("stubborn");
    let notify = NotifySocket::bind(&scratch.path);
    let listen = format!("127.0.0.1:{}", free_port());
    let pidfile = scratch.path.join("pids");
    let config = stubborn_config(
        &scratch,
        &listen,
        "[stop]\ndeadline = \"1s\"\ndrain = \"exit\"\n",
    );
    let mut notify = notify;
    let mut steward = Steward::start(
        &scratch.path,
        &config,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("STUBBORN_LISTEN", listen.clone()),
            ("STUBBORN_PIDFILE", pidfile.display().to_string()),
        ],
    );
    assert!(notify
        .wait_for("READY=1", Duration::from_secs(10))
        .is_some());
    let pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .lines()
        .map(|l| l.parse().expect("pid"))
        .collect();
    // The child, a grandchild in its group, one in its own session, one double-forked.
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|&p| process_alive(p)));
    let child = steward.child_pid(Duration::ZERO).expect("child pid");
    let t = Instant::now();
    steward.signal(Signal::SIGTERM);
    // The child never ends on its own: steward exiting at all is its kill.
    let status = steward
        .wait(Duration::from_secs(10))
        .expect("steward exits");
    let took = t.elapsed();
    let log = steward.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(
        took >= Duration::from_secs(1),
        "stopped after {took:?}, before the 1 s deadline; log:\n{log}"
    );
    for p in pids {
        assert!(!process_alive(p), "pid {p} survived; log:\n{log}");
    }
    let killed = [
        ("steward_event", "killed"),
        ("steward_escalation", "deadline"),
    ];
    let kill = find_fact(&log, &killed).unwrap_or_else(|| panic!("no deadline kill; log:\n{log}"));
    let child_s = child.to_string();
    let stopped = [
        ("steward_event", "stopped"),
        ("steward_child_pid", child_s.as_str()),
        ("steward_child_signal", "9"),
    ];
    let end = find_fact(&log, &stopped)
        .unwrap_or_else(|| panic!("child {child} did not end by SIGKILL; log:\n{log}"));
    let at = |r: &Record| log.find(&r.line).unwrap_or(usize::MAX);
    assert!(at(&kill) < at(&end), "log:\n{log}");
    // The decision was systemd's STATUS too: the killing fact is a status record.
    let killing = [
        ("steward_event", "killing"),
        ("steward_escalation", "deadline"),
    ];
    assert!(log_has(&log, &killing), "log:\n{log}");
}

#[test]
fn a_fork_bomb_racing_the_kill_is_ended_at_the_deadline() {
    let scratch = Scratch::new("forkbomb");
    let listen = format!("127.0.0.1:{}", free_port());
    let pidfile = scratch.path.join("pids");
    let config = stubborn_config(
        &scratch,
        &listen,
        "[stop]\ndeadline = \"1s\"\ndrain = \"exit\"\n",
    );
    let mut s = Steward::start(
        &scratch.path,
        &config,
        &[
            ("STUBBORN_LISTEN", listen.clone()),
            ("STUBBORN_PIDFILE", pidfile.display().to_string()),
            // 63 processes, each replacing a child that dies.
            ("STUBBORN_FORKBOMB_DEPTH", "5".into()),
        ],
    );
    let end = Instant::now() + Duration::from_secs(10);
    let count = || {
        std::fs::read_to_string(&pidfile)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while count() < 4 + 63 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(count() >= 4 + 63, "the bomb did not grow: {}", count());
    s.signal(Signal::SIGTERM);
    let status = s.wait(Duration::from_secs(5)).expect("steward exits");
    let log = s.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    let pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let survivors = stubborn_survivors(&pids);
    assert!(survivors.is_empty(), "survivors {survivors:?}; log:\n{log}");
    assert!(
        // The kill itself, not only the decision to kill.
        log_has(
            &log,
            &[
                ("steward_event", "killed"),
                ("steward_escalation", "deadline")
            ]
        ),
        "log:\n{log}"
    );
}

#[test]
fn second_sigint_kills_the_draining_child_and_its_escapee() {
    let mut s = Setup::start_opts(
        Kind::StockPingora,
        USER_YAML,
        "",
        false,
        "",
        Opts {
            launcher: Launcher::Escapee,
            ..Opts::default()
        },
    );
    s.wait_ready();
    let child = s.steward.child_pid(Duration::ZERO).expect("child pid");
    // Left to itself the stop would last until the request ends (30 s) or the clamped
    // grace period does (the 25 s fallback deadline): far beyond the wait below.
    let req = s.slow_request(30_000);
    std::thread::sleep(Duration::from_millis(300));
    s.steward.signal(Signal::SIGINT);
    // Two SIGINTs before steward took the first would be one pending signal.
    assert!(
        s.notify
            .wait_for("STOPPING=1", Duration::from_secs(5))
            .is_some(),
        "log:\n{}",
        s.steward.log_text()
    );
    assert!(
        s.steward.wait(Duration::ZERO).is_none(),
        "first SIGINT drains"
    );
    s.steward.signal(Signal::SIGINT);
    let status = s.wait_exit(Duration::from_secs(10));
    let log = s.steward.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    // steward's kill, then the child's end by it: not the child ending on its own.
    let kill = log
        .find("second SIGINT after")
        .unwrap_or_else(|| panic!("no kill by the second SIGINT; log:\n{log}"));
    let end = log
        .find(&format!("(child pid {child}) stopped (signal 9 (SIGKILL))"))
        .unwrap_or_else(|| panic!("child {child} did not end by SIGKILL; log:\n{log}"));
    assert!(kill < end, "log:\n{log}");
    let (result, _) = req.join().expect("request thread");
    assert!(
        result.as_ref().map(|r| r.0 != 200).unwrap_or(true),
        "the 30 s request should have been cut: {result:?}"
    );
    // The child dies with steward whatever steward does; its escapee only by its kill.
    let escapees = s.escapees();
    assert_eq!(escapees.len(), 1, "{escapees:?}");
    let left = stubborn_survivors(&escapees);
    assert!(left.is_empty(), "escapees {left:?} survived; log:\n{log}");
}

#[test]
fn sigterm_before_ready_stops_cleanly() {
    let scratch = Scratch::new("early-term");
    let mut notify = NotifySocket::bind(&scratch.path);
    // A child that never listens keeps steward in "starting". (steward-proxy probed on an
    // address its proxy.toml does not declare is refused at start-up with 78 instead.)
    let child = scratch.write_executable("never-serves.sh", "#!/bin/sh\nexec sleep 30\n");
    let escapees = scratch.path.join("escapees");
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\", \"{}\"]\n[ready]\ntcp = \"127.0.0.1:{}\"\n",
            scratch.path.display(),
            escaping_launcher(&scratch).display(),
            child.display(),
            free_port()
        ),
    );
    let mut steward = Steward::start(
        &scratch.path,
        &config,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("STUBBORN_PIDFILE", escapees.display().to_string()),
        ],
    );
    let child = steward
        .child_pid(Duration::from_secs(5))
        .expect("child started");
    std::thread::sleep(Duration::from_millis(300));
    steward.signal(Signal::SIGTERM);
    let status = steward.wait(Duration::from_secs(3)).expect("exits");
    let log = steward.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(!process_alive(child));
    // The child dies with steward whatever steward does; its escapee only by its kill.
    let escapees = recorded_pids(&escapees);
    assert_eq!(escapees.len(), 1, "{escapees:?}");
    let left = stubborn_survivors(&escapees);
    assert!(left.is_empty(), "escapees {left:?} survived; log:\n{log}");
    let msgs = notify.messages();
    assert!(!msgs.iter().any(|m| m.contains("READY=1")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
}

/// SIGKILLs a serving steward and asserts its child dies with it (parent-death signal).
fn sigkill_steward_and_see_its_child_go(s: &mut Setup) {
    let child = s
        .steward
        .child_pid(Duration::from_secs(1))
        .expect("child pid");
    s.steward.signal(Signal::SIGKILL);
    s.wait_exit(Duration::from_secs(2));
    let end = Instant::now() + Duration::from_secs(2);
    while process_alive(child) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!process_alive(child), "child {child} outlived steward");
}

#[test]
fn steward_killed_with_sigkill_takes_its_child_along() {
    let mut s = Setup::start(Kind::StewardProxy, USER_YAML, "");
    s.wait_ready();
    sigkill_steward_and_see_its_child_go(&mut s);
}

#[test]
fn after_steward_was_sigkilled_the_next_start_serves_with_the_same_runtime_dir() {
    // steward owns the listeners, so the stale files are all there: the control socket,
    // the upgrade socket and the effective conf of the killed steward.
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    sigkill_steward_and_see_its_child_go(&mut s);
    assert!(
        s.control().exists(),
        "the killed steward left no control socket behind"
    );

    let second = s.scratch.path.join("second");
    std::fs::create_dir_all(&second).expect("mkdir");
    let mut notify = NotifySocket::bind(&second);
    let config = s.scratch.path.join("steward.toml");
    let mut again = Steward::start(
        &second,
        &config,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
    );
    assert!(
        notify
            .wait_for("READY=1", Duration::from_secs(20))
            .is_some(),
        "no READY after the restart; log:\n{}",
        again.log_text()
    );
    let r = http_get(&s.proxy, "/", Duration::from_secs(5));
    assert!(
        matches!(r, Ok((200, _))),
        "{r:?}; log:\n{}",
        again.log_text()
    );
    let (code, out) = steward_cli("status", &s.control());
    assert_eq!(code, Some(0), "{out}");
    again.signal(Signal::SIGTERM);
    assert_eq!(
        again.wait(Duration::from_secs(5)).and_then(|st| st.code()),
        Some(0),
        "log:\n{}",
        again.log_text()
    );
}

/// How a held client connection ended: EOF or reset (closed by the server), or what
/// else came, and when.
type Closed = (Result<(), String>, Instant);

/// Reads `conn` until it ends, in a thread: closed by the peer (EOF or reset) is `Ok`;
/// bytes, or no end within 60 s, are the `Err`.
fn watch_close(mut conn: std::net::TcpStream) -> std::thread::JoinHandle<Closed> {
    use std::io::Read;
    std::thread::spawn(move || {
        conn.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut buf = [0u8; 256];
        let r = match conn.read(&mut buf) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!(
                "{n} bytes: {:?}",
                String::from_utf8_lossy(&buf[..n])
            )),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        };
        (r, Instant::now())
    })
}

/// An HTTP/1.1 keep-alive connection after one complete exchange (`GET /` without
/// `Connection: close`), left idle.
fn idle_keep_alive(addr: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(c, "GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let r = read_response(&mut c).expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.close, "{r:?}");
    c
}

/// The premise of counting connections: after SIGTERM, an idle keep-alive connection and
/// one that never sent a byte are closed by the child, so they hold no drain. The stop
/// ends drained while a request in flight still gets its 200.
fn idle_and_silent_clients_do_not_hold_the_stop(kind: Kind) {
    let mut s = self_ending_or_stock(kind);
    s.wait_ready();
    let child = s.steward.child_pid(Duration::ZERO).expect("child pid");
    let keep_alive = watch_close(idle_keep_alive(&s.proxy));
    let silent = watch_close(std::net::TcpStream::connect(&s.proxy).expect("connect"));
    // As in the in-flight test: long enough for the drain count to see it.
    let req = s.slow_request(5000);
    std::thread::sleep(Duration::from_millis(300));
    s.steward.signal(Signal::SIGTERM);
    // Held, the two idle connections would keep the drain open until the 25 s fallback
    // deadline.
    let status = s.wait_exit(Duration::from_secs(40));
    let log = s.steward.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(
        !log_has(&log, &[("steward_escalation", "deadline")]),
        "log:\n{log}"
    );
    let (result, done) = req.join().expect("request thread");
    let (code, body) = result.expect("the in-flight request completes");
    assert_eq!(code, 200, "{body}");
    for (what, h) in [("idle keep-alive", keep_alive), ("silent", silent)] {
        let (closed, at) = h.join().expect("watch thread");
        assert_eq!(closed, Ok(()), "{what} client; log:\n{log}");
        // Closed by the child's shutdown, not by its end after the drain.
        assert!(
            at <= done,
            "{what} client closed only after the request in flight ended; log:\n{log}"
        );
    }
    // Drained: steward ended the stock child once it held nothing (it would sleep out its
    // grace period); steward-proxy and the crate's example (which logs nothing) ended
    // themselves once their last request was done.
    let child_s = child.to_string();
    let pid = ("steward_child_pid", child_s.as_str());
    let drained = match kind {
        Kind::StockPingora => log_has(
            &log,
            &[
                ("steward_event", "killed"),
                ("steward_escalation", "drained"),
                pid,
            ],
        ),
        // steward-proxy's own line: the child's words, not steward's facts.
        Kind::StewardProxy => log.contains("drained: no request in flight; exiting"),
        Kind::Library => log_has(
            &log,
            &[
                ("steward_event", "stopped"),
                ("steward_child_exit_code", "0"),
                pid,
            ],
        ),
    };
    assert!(drained, "log:\n{log}");
}

#[test]
fn idle_keep_alive_and_silent_clients_do_not_hold_the_stop_stock_pingora() {
    idle_and_silent_clients_do_not_hold_the_stop(Kind::StockPingora);
}

#[test]
fn idle_keep_alive_and_silent_clients_do_not_hold_the_stop_steward_proxy() {
    idle_and_silent_clients_do_not_hold_the_stop(Kind::StewardProxy);
}

#[test]
fn idle_keep_alive_and_silent_clients_do_not_hold_the_stop_library() {
    idle_and_silent_clients_do_not_hold_the_stop(Kind::Library);
}

/// steward over `kind`: a child built on steward-pingora with `child.handoff = "inherit"`,
/// which tells steward it ends itself once drained (steward then leaves it time to, instead
/// of ending it the moment its count reaches 0 as it does a stock child).
fn self_ending_or_stock(kind: Kind) -> Setup {
    match kind {
        Kind::StockPingora => Setup::start(kind, USER_YAML, ""),
        _ => Setup::start_handoff(kind, USER_YAML, Some("inherit")),
    }
}

/// How long after its last response a server with steward-pingora may take to exit. Its
/// drain polls every 5 ms and wants two empty polls in a row, then Pingora shuts its
/// runtimes down: tens of milliseconds (bench/stop.rs measures it). A stock server would
/// take its grace period (300 s in [`USER_YAML`]); the bound tells the two apart with
/// room for a loaded CI host, and asserts no figure.
const EXIT_AFTER_LAST_RESPONSE: Duration = Duration::from_secs(3);

/// What a stop of steward over a self-ending `kind` left, once SIGTERM came with a 1 s
/// request in flight: steward exited 0, the request got its whole 200, and the child
/// ended itself with exit code 0 (a child ended by steward's kill would show
/// "stopped (signal 9 (SIGKILL))").
struct StoppedWithARequest {
    log: String,
    /// The request's response body.
    body: String,
    child: i32,
    /// When the request's response was complete, and when steward had exited.
    done: Instant,
    exited: Instant,
}

fn sigterm_with_a_1s_request_in_flight(kind: Kind) -> StoppedWithARequest {
    let mut s = self_ending_or_stock(kind);
    s.wait_ready();
    let child = s.steward.child_pid(Duration::ZERO).expect("child pid");
    let req = s.slow_request(1000);
    std::thread::sleep(Duration::from_millis(300));
    s.steward.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    let exited = Instant::now();
    let log = s.steward.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    let (result, done) = req.join().expect("request thread");
    let (code, body) = result.expect("the in-flight request completes");
    assert_eq!(code, 200, "{body}");
    let child_s = child.to_string();
    let stopped = [
        ("steward_event", "stopped"),
        ("steward_child_pid", child_s.as_str()),
        ("steward_child_exit_code", "0"),
    ];
    assert!(log_has(&log, &stopped), "log:\n{log}");
    StoppedWithARequest {
        log,
        body,
        child,
        done,
        exited,
    }
}

#[test]
fn library_stop_with_a_1s_request_in_flight_returns_it_and_ends_right_after_without_sigkill() {
    let stop = sigterm_with_a_1s_request_in_flight(Kind::Library);
    let log = &stop.log;
    // The example's origin names the path it answered.
    assert!(stop.body.contains("/delay/1000"), "{}", stop.body);
    let after = stop.exited.saturating_duration_since(stop.done);
    assert!(
        after < EXIT_AFTER_LAST_RESPONSE,
        "steward exited {after:?} after the last response; log:\n{log}"
    );
    // The example's line after `steward.run(server)` returned.
    assert!(
        log.contains(&format!("graceful-proxy pid {}: stopped", stop.child)),
        "log:\n{log}"
    );
}

#[test]
fn library_stop_without_steward_returns_the_request_in_flight_and_ends_right_after() {
    // As `systemctl stop` of the server alone would: SIGTERM to it, nobody to kill it.
    let scratch = Scratch::new("library-alone");
    let origin = Origin::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let health = format!("127.0.0.1:{}", free_port());
    let yaml = scratch.write("pingora.yaml", USER_YAML);
    let log = scratch.path.join("server.log");
    let mut server = std::process::Command::new(example("graceful-proxy"))
        .arg("-c")
        .arg(&yaml)
        .env("LISTEN", &listen)
        .env("UPSTREAM", &origin.addr)
        .env("HEALTH", &health)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn the example");
    assert!(
        wait_accepting(&listen, Duration::from_secs(10)),
        "the example never listened"
    );
    let proxy = listen.clone();
    let req = std::thread::spawn(move || {
        let r = http_get(&proxy, "/delay/1000", Duration::from_secs(60));
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = server.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = server.kill();
            let _ = server.wait();
            panic!(
                "the server still ran 20 s after SIGTERM (its grace period is 300 s); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let exited = Instant::now();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let (result, done) = req.join().expect("request thread");
    let (code, body) = result.expect("the in-flight request completes");
    assert_eq!(code, 200, "{body}");
    let after = exited.saturating_duration_since(done);
    assert!(
        after < EXIT_AFTER_LAST_RESPONSE,
        "the server exited {after:?} after the last response"
    );
}

#[test]
fn steward_proxy_returns_from_run_after_its_drain_and_main_ends_with_0() {
    let stop = sigterm_with_a_1s_request_in_flight(Kind::StewardProxy);
    let log = &stop.log;
    // steward-proxy's line after `steward.run(server)` returned: an exit from a side
    // thread would never write it.
    assert!(
        log.contains(&format!("steward-proxy pid {} stopped", stop.child)),
        "log:\n{log}"
    );
}
