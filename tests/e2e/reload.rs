//! Reloads, restarts, crash recovery and health: steward owns the listeners and hands them
//! to every generation, so none of this refuses a connection.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kind, Setup, USER_YAML};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use steward_e2e::*;

fn status_json(s: &Setup) -> serde_json::Value {
    let v = steward_e2e::status_json(&s.control());
    assert!(!v.is_null(), "steward status gave no JSON");
    v
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn reload_starts_the_next_generation_and_retires_the_old_one() {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let (gen, old) = s.generation();
    assert_eq!(gen, 1);
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", s.steward.log_text());
    assert!(out.contains("reloaded: generation 2 serves"), "{out}");
    let (gen, new) = s.generation();
    assert_eq!(gen, 2);
    assert_ne!(new, old);
    assert!(
        wait_gone(old, Duration::from_secs(5)),
        "generation 1 still running"
    );
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
    let msgs = s.notify.messages();
    let reloading = msgs
        .iter()
        .position(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="));
    let ready_again = msgs
        .iter()
        .rposition(|m| m.contains("READY=1") && m.contains("generation 2"));
    assert!(reloading.is_some() && reloading < ready_again, "{msgs:?}");
    s.steward.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn ten_reloads_under_load_drop_nothing() {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let (counts, errors) = s.load_across(4, || (1..=10).for_each(|i| s.reload(i)));
    assert_eq!(s.generation().0, 11);
    assert!(counts.ok > 100, "{counts:?}");
    assert_eq!(counts.refused, 0, "{counts:?} {errors:?}");
    assert_eq!(
        counts.failed,
        0,
        "{counts:?} {errors:?}\nlog:\n{}",
        s.steward.log_text()
    );
}

/// `GET /health` on `addr`: the status and the process the answer names.
fn health_answer(addr: &str) -> (u16, Option<i32>) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("connect to the health endpoint");
    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        c,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("health answer");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let pid = out
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-served-by-pid:")
                .map(str::to_string)
        })
        .and_then(|p| p.trim().parse().ok());
    (status, pid)
}

/// While a retired generation drains, its successor alone answers the health port they
/// share: the retired one leaves it (were it to answer 503 beside it, the kernel would
/// hand it about half the checks, and steward's probe would fail the successor).
fn health_checks_during_a_drain_reach_the_successor(kind: Kind) {
    let mut s = Setup::start_with(kind, USER_YAML, "", true, "");
    s.wait_ready();
    let health = s.health.clone().expect("a health endpoint");
    let (_, old) = s.generation();
    let slow = s.slow_request(5000);
    std::thread::sleep(Duration::from_millis(300));
    s.reload(1);
    let (_, new) = s.generation();
    // The retired generation has had its SIGTERM.
    std::thread::sleep(Duration::from_millis(300));
    let answers: Vec<(u16, Option<i32>)> = (0..20).map(|_| health_answer(&health)).collect();
    assert!(
        process_alive(old) && !slow.is_finished(),
        "generation 1 (pid {old}) no longer drains; log:\n{}",
        s.steward.log_text()
    );
    assert!(
        answers.iter().all(|&a| a == (200, Some(new))),
        "old {old}, new {new}: {answers:?}"
    );
    let (result, _) = slow.join().expect("request thread");
    assert_eq!(result.map(|r| r.0), Ok(200));
}

#[test]
fn health_checks_during_a_drain_reach_the_successor_library() {
    health_checks_during_a_drain_reach_the_successor(Kind::Library);
}

#[test]
fn health_checks_during_a_drain_reach_the_successor_steward_proxy() {
    health_checks_during_a_drain_reach_the_successor(Kind::StewardProxy);
}

/// 8 keep-alive clients across 3 reloads of `kind` under steward: their counts, and
/// steward's log.
fn keep_alive_clients_across_three_reloads(kind: Kind) -> (KeepAliveCounts, String) {
    let mut s = Setup::start_with(kind, USER_YAML, "", true, "");
    s.wait_ready();
    let counts = s.keep_alive_reloads(8, 3, Duration::from_millis(700));
    assert_eq!(s.generation().0, 4);
    assert!(counts.ok > 100, "{counts:?}");
    assert_eq!(counts.refused, 0, "{counts:?}");
    (counts, s.steward.log_text())
}

/// The retired generation answers with `Connection: close` and closes idle connections
/// only once no request can be on its way: not one request fails.
fn keep_alive_clients_see_no_error_across_reloads(kind: Kind) {
    let (counts, log) = keep_alive_clients_across_three_reloads(kind);
    // The connections did span the reloads: each retiring generation closed some.
    assert!(counts.closed > 0, "{counts:?}");
    assert!(
        counts.errors.is_empty(),
        "{} error(s) in {} requests: {:?}\nlog:\n{log}",
        counts.errors.len(),
        counts.ok + counts.errors.len() as u64,
        counts.errors
    );
}

#[test]
fn keep_alive_clients_see_no_error_across_reloads_library() {
    keep_alive_clients_see_no_error_across_reloads(Kind::Library);
}

#[test]
fn keep_alive_clients_see_no_error_across_reloads_steward_proxy() {
    keep_alive_clients_see_no_error_across_reloads(Kind::StewardProxy);
}

/// The premise of steward-pingora's keep-alive handling: a stock Pingora 0.9.1 server
/// closes its idle keep-alive connections at SIGTERM while clients are writing to them,
/// and the same clients see errors.
#[test]
fn keep_alive_clients_see_errors_across_reloads_of_a_stock_pingora_server() {
    let (counts, log) = keep_alive_clients_across_three_reloads(Kind::StockPingora);
    assert!(
        counts
            .errors
            .iter()
            .any(|e| e.contains("before a whole response")),
        "{counts:?}\nlog:\n{log}"
    );
}

#[test]
fn reload_with_a_broken_configuration_fails_and_the_old_generation_keeps_serving() {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let (_, old) = s.generation();
    s.scratch
        .write("pingora.yaml", "version: 1\ngrace_period_seconds: [oops\n");
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("reload failed") && out.contains("invalid YAML"),
        "{out}"
    );
    assert_eq!(s.generation(), (1, old));
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
    // A configuration only the child rejects (`-t`) fails the same way.
    s.scratch.write("pingora.yaml", USER_YAML);
    let settings = s.scratch.path.join("proxy.toml");
    let good = std::fs::read_to_string(&settings).expect("proxy.toml");
    std::fs::write(&settings, "listen = []\n").expect("write");
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("-t` failed"), "{out}");
    assert_eq!(s.generation(), (1, old));
    std::fs::write(&settings, good).expect("write");
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn sighup_reloads() {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let (_, old) = s.generation();
    s.steward.signal(Signal::SIGHUP);
    s.steward.expect_fact(
        &[("steward_event", "serving"), ("steward_generation", "2")],
        Duration::from_secs(10),
    );
    let (gen, new) = s.generation();
    assert_eq!(gen, 2);
    assert_ne!(new, old);
    assert!(
        wait_gone(old, Duration::from_secs(10)),
        "generation 1 (pid {old}) was not retired; log:\n{}",
        s.steward.log_text()
    );
    // Generation 1 is gone, so the answer can only come from generation 2.
    let (code, body) = http_get(&s.proxy, "/", Duration::from_secs(5)).expect("served");
    assert_eq!(code, 200, "{body}");
    assert_eq!(served_by_pid(&body), Some(new), "{body}");
}

#[test]
fn a_stock_pingora_binary_takes_the_listeners_and_reloads() {
    let mut s = Setup::start_with(Kind::StockPingora, USER_YAML, "", true, "");
    s.wait_ready();
    let (_, old) = s.generation();
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", s.steward.log_text());
    let (gen, new) = s.generation();
    assert_eq!(gen, 2);
    assert_ne!(new, old);
    // Left to itself the old stock child sleeps out its grace period (clamped to the 25 s
    // fallback deadline); steward ends it once it holds no connection.
    assert!(
        wait_gone(old, Duration::from_secs(10)),
        "generation 1 (pid {old}) still running; log:\n{}",
        s.steward.log_text()
    );
    let old_s = old.to_string();
    let retired = [
        ("steward_event", "retired"),
        ("steward_generation", "1"),
        ("steward_child_pid", old_s.as_str()),
    ];
    s.steward.expect_fact(&retired, Duration::from_secs(5));
    assert_eq!(
        http_get(&s.proxy, "/x", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
}

#[test]
fn crashed_child_is_restarted_without_refusing_a_connection() {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let (counts, errors) = s.crash_under_load(4);
    assert_eq!(counts.refused, 0, "{counts:?} {errors:?}");
    // Only requests inside the killed child can fail: at most one per client.
    assert!(counts.failed <= 4, "{counts:?} {errors:?}");
    let v = status_json(&s);
    assert_eq!(v["status"]["restarts"], 1, "{v}");
    assert!(s
        .steward
        .log_text()
        .contains("ended on its own (signal 9 (SIGKILL))"));
}

#[test]
fn crash_loop_gives_up_with_the_childs_code() {
    let scratch = Scratch::new("crashloop");
    let config = crash_loop_config(&scratch, "50ms");
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let status = steward.wait(Duration::from_secs(20)).expect("gives up");
    let log = steward.log_text();
    assert_eq!(status.code(), Some(3), "log:\n{log}");
    let gave_up = find_fact(&log, &[("steward_event", "gave-up")]);
    assert!(
        gave_up.is_some_and(|r| r.get("steward_crashes").is_some()),
        "log:\n{log}"
    );
    assert!(
        log_has(&log, &[("steward_backoff_ms", "50")])
            && log_has(&log, &[("steward_backoff_ms", "100")]),
        "log:\n{log}"
    );
}

#[test]
fn a_stopped_child_fails_its_health_probe_and_is_replaced() {
    let mut s = Setup::start_with(
        Kind::StewardProxy,
        USER_YAML,
        "",
        true,
        "[health]\ninterval = \"200ms\"\ntimeout = \"300ms\"\nfailures = 3\n",
    );
    s.wait_ready();
    let (_, old) = s.generation();
    kill(Pid::from_raw(old), Signal::SIGSTOP).expect("SIGSTOP the child");
    s.steward.expect_fact(
        &[("steward_event", "spawned"), ("steward_generation", "2")],
        Duration::from_secs(10),
    );
    assert!(
        wait_gone(old, Duration::from_secs(2)),
        "the stopped child was not killed"
    );
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
    let unhealthy = [
        ("steward_event", "killed"),
        ("steward_escalation", "unhealthy"),
        ("steward_generation", "1"),
    ];
    s.steward.expect_fact(&unhealthy, Duration::from_secs(5));
    let log = s.steward.log_text();
    let third = [
        ("steward_event", "health-failed"),
        ("steward_health_failures", "3"),
    ];
    assert!(log_has(&log, &third), "log:\n{log}");
}

#[test]
fn operator_restart_keeps_the_listeners() {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let (_, old) = s.generation();
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&s.proxy, "/", 2, stop.clone());
    let (code, out) = steward_cli("restart", &s.control());
    assert_eq!(code, Some(0), "{out}");
    s.steward.expect_fact(
        &[("steward_event", "serving"), ("steward_generation", "2")],
        Duration::from_secs(10),
    );
    let (_, new) = s.generation();
    assert!(
        wait_gone(old, Duration::from_secs(10)),
        "generation 1 (pid {old}) still running; log:\n{}",
        s.steward.log_text()
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let (counts, errors) = load.join().expect("load");
    // Served throughout, not merely never refused.
    assert!(counts.ok > 0, "{counts:?} {errors:?}");
    assert_eq!(counts.refused, 0, "{counts:?} {errors:?}");
    assert_eq!(counts.failed, 0, "{counts:?} {errors:?}");
    let (code, body) = http_get(&s.proxy, "/", Duration::from_secs(5)).expect("served");
    assert_eq!(code, 200, "{body}");
    assert_eq!(served_by_pid(&body), Some(new), "{body}");
}

#[test]
fn status_reports_state_generation_and_the_last_timeline() {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    steward_cli("reload", &s.control());
    let v = status_json(&s);
    let st = &v["status"];
    assert_eq!(st["state"], "serving", "{v}");
    assert_eq!(st["generation"], 2);
    assert_eq!(st["restarts"], 0);
    assert!(
        st["child_pid"].as_i64().is_some() && st["uptime_s"].as_f64().is_some(),
        "{v}"
    );
    let events: Vec<String> = st["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        events.first().is_some_and(|e| e.starts_with("reloading")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("reload done: generation 2")),
        "{events:?}"
    );
    let (code, human) = steward_cli("status", &s.control());
    assert_eq!(code, Some(0));
    assert!(human.contains("serving, generation 2"), "{human}");
}

#[test]
fn control_socket_refuses_other_users() {
    if !needs_root(
        "control_socket_refuses_other_users",
        "to act as another user",
    ) {
        return;
    }
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    // Open the socket's mode and the directory so only the credential check stands.
    use std::os::unix::fs::PermissionsExt;
    let sock = s.control();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::fs::set_permissions(
        s.scratch.path.join("run"),
        std::fs::Permissions::from_mode(0o711),
    )
    .expect("chmod");
    std::fs::set_permissions(&s.scratch.path, std::fs::Permissions::from_mode(0o711))
        .expect("chmod");
    use std::os::unix::process::CommandExt;
    // The build tree may be private (CI clones into a 0700 directory): a world-readable copy.
    let client = s.scratch.path.join("steward-client");
    std::fs::copy(bin("steward"), &client).expect("copy steward");
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = std::process::Command::new(&client)
        .args(["reload", "--socket"])
        .arg(&sock)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("permission denied: uid 65534"), "{text}");
    assert_eq!(s.generation().0, 1, "nothing was reloaded");
}

#[test]
fn a_listener_the_child_does_not_declare_fails_the_start_with_the_key() {
    let (code, log, stray) = start_with_a_stray_listener("badkey", None);
    assert_eq!(code, Some(78), "log:\n{log}");
    assert!(
        log.contains(&format!("did not claim listener(s) {stray}")),
        "log:\n{log}"
    );
}

#[test]
fn reload_runs_the_binary_now_on_disk() {
    // The child program is a copy, replaced on disk (a new inode) before the reload, as a
    // package upgrade does.
    let scratch = Scratch::new("upgrade-binary");
    let program = scratch.path.join("my-proxy");
    std::fs::copy(bin("steward-proxy"), &program).expect("copy");
    let a = proxy_settings(&scratch);
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\", \"--proxy-config\", \"{}\"]\n[ready]\nhttp = \"http://{}/health\"\n[sockets]\nlisten = [\"{}\", \"{}\"]\n",
            scratch.path.display(),
            program.display(),
            a.settings.display(),
            a.health,
            a.proxy,
            a.origin
        ),
    );
    let mut notify = NotifySocket::bind(&scratch.path);
    let _steward = Steward::start(
        &scratch.path,
        &config,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
    );
    assert!(notify
        .wait_for("READY=1", Duration::from_secs(15))
        .is_some());
    let inode = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0)
    };
    std::fs::remove_file(&program).expect("remove old binary");
    std::fs::copy(bin("steward-proxy"), &program).expect("install new binary");
    let new_inode = inode(&program);
    let (code, out) = steward_cli("reload", &scratch.path.join("run/control.sock"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("generation 2 serves"), "{out}");
    let status = std::process::Command::new(bin("steward"))
        .args(["status", "--json", "--socket"])
        .arg(scratch.path.join("run/control.sock"))
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let pid = v["status"]["child_pid"].as_i64().expect("child pid");
    assert_eq!(
        inode(std::path::Path::new(&format!("/proc/{pid}/exe"))),
        new_inode,
        "generation 2 runs the binary installed before the reload"
    );
}

/// Which of `pids` holds the server end of the loopback connection whose client end is
/// `client`: the socket's inode from the TCP table, then each pid's descriptors. Stock
/// Pingora's answers do not name the process that served them; the socket does.
fn server_end_holder(server_port: u16, client_port: u16, pids: &[i32]) -> Option<i32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |field: &str| {
        field
            .split(':')
            .nth(1)
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && port(f[1]) == Some(server_port) && port(f[2]) == Some(client_port))
            .then(|| f[9].to_string())
    })?;
    let target = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.to_string_lossy() == target.as_str())
                })
            })
            .unwrap_or(false)
    })
}

/// A request through `proxy` whose server end is held long enough to see who holds it:
/// `GET /delay/<ms>`; the pid of `pids` holding it (None if none did), and the outcome.
fn request_and_its_server(
    proxy: &str,
    ms: u64,
    pids: &[i32],
) -> (Option<i32>, Result<(u16, String), String>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(
        s,
        "GET /delay/{ms} HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let server_port = s.peer_addr().expect("peer").port();
    let client_port = s.local_addr().expect("local").port();
    // The request is on its way to the origin for `ms`: look until its server end shows.
    let end = Instant::now() + Duration::from_millis(ms);
    let mut holder = None;
    while holder.is_none() && Instant::now() < end {
        holder = server_end_holder(server_port, client_port, pids);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = Vec::new();
    let r = s
        .read_to_end(&mut out)
        .map_err(|e| format!("read: {e}"))
        .and_then(|_| {
            let text = String::from_utf8_lossy(&out).into_owned();
            let code = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
            Ok((code, text))
        });
    (holder, r)
}

/// A reload retires a generation with a slow request in flight: the old child finishes it
/// (200) while the new one already answers new requests on the same ports, and ends right
/// after its last response, not when its own grace period would.
fn retired_generation_drains_while_the_next_serves(kind: Kind) {
    let mut s = Setup::start_with(kind, USER_YAML, "", true, "");
    s.wait_ready();
    let (_, old) = s.generation();
    // Long enough that the reload (the new child takes its listeners about 1 s after it
    // starts) and a request to the new generation (held 1.5 s, so its server end is seen
    // on a loaded machine) both fit inside it.
    let slow = s.slow_request(8000);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", s.steward.log_text());
    let (gen, new) = s.generation();
    assert_eq!(gen, 2);
    assert_ne!(new, old);
    // During the drain: the old child still runs, its request is still in flight, and a
    // new request is served by the new child.
    assert!(process_alive(old), "log:\n{}", s.steward.log_text());
    let (holder, r) = request_and_its_server(&s.proxy, 1500, &[old, new]);
    let (code, body) = r.unwrap_or_else(|e| panic!("{e}; log:\n{}", s.steward.log_text()));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        holder,
        Some(new),
        "the request during the drain (old {old}, new {new}); log:\n{}",
        s.steward.log_text()
    );
    assert!(
        !slow.is_finished(),
        "the slow request ended before the new generation answered; log:\n{}",
        s.steward.log_text()
    );
    assert!(process_alive(old), "log:\n{}", s.steward.log_text());
    let (result, _) = slow.join().expect("request thread");
    let (code, body) = result.unwrap_or_else(|e| panic!("{e}; log:\n{}", s.steward.log_text()));
    assert_eq!(code, 200, "{body}");
    // Right after: left to itself a stock child sleeps out its grace period, clamped to
    // the 25 s fallback deadline from its SIGTERM, long after the 8 s request.
    assert!(
        wait_gone(old, Duration::from_secs(10)),
        "generation 1 (pid {old}) outlived its request; log:\n{}",
        s.steward.log_text()
    );
    let old_s = old.to_string();
    let retired = [
        ("steward_event", "retired"),
        ("steward_generation", "1"),
        ("steward_child_pid", old_s.as_str()),
    ];
    s.steward.expect_fact(&retired, Duration::from_secs(5));
    if kind == Kind::StockPingora {
        // Ended by steward once drained, not by its own grace period.
        let drained = [
            ("steward_event", "killed"),
            ("steward_escalation", "drained"),
            ("steward_child_pid", old_s.as_str()),
        ];
        assert!(
            log_has(&s.steward.log_text(), &drained),
            "log:\n{}",
            s.steward.log_text()
        );
    }
    assert_eq!(s.generation(), (2, new), "log:\n{}", s.steward.log_text());
}

#[test]
fn retired_generation_drains_its_request_while_the_next_serves_stock_pingora() {
    retired_generation_drains_while_the_next_serves(Kind::StockPingora);
}

#[test]
fn retired_generation_drains_its_request_while_the_next_serves_steward_proxy() {
    retired_generation_drains_while_the_next_serves(Kind::StewardProxy);
}

/// [`crash_loop_config`] (max_crashes = 2) with `restart.window = "2s"` and a fixed
/// backoff, so how close together the crashes come is set by the backoff alone.
fn crash_loop_in_a_2s_window(scratch: &Scratch, backoff: &str) -> std::path::PathBuf {
    let config = crash_loop_config(scratch, backoff);
    let text = std::fs::read_to_string(&config).expect("steward.toml");
    // [restart] is the file's last table.
    scratch.write(
        "steward.toml",
        &format!("{text}window = \"2s\"\nbackoff_max = \"{backoff}\"\n"),
    )
}

#[test]
fn crashes_spread_wider_than_the_window_never_give_up() {
    let scratch = Scratch::new("crash-window-expiry");
    // Each crash comes 0.3 s after its start, and each start 1.5 s after the crash before:
    // any three crashes span 3.6 s or more, so the 2 s window never holds more than two,
    // whatever the load (a slower machine only spreads them further).
    let config = crash_loop_in_a_2s_window(&scratch, "1500ms");
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let crashed = [("steward_event", "crashed"), ("steward_backoff_ms", "1500")];
    let crashes = |log: &str| count_facts(log, &crashed);
    let end = Instant::now() + Duration::from_secs(60);
    while crashes(&steward.log_text()) < 5 && Instant::now() < end {
        assert!(
            steward.wait(Duration::from_millis(50)).is_none(),
            "steward exited after {} crashes; log:\n{}",
            crashes(&steward.log_text()),
            steward.log_text()
        );
    }
    let log = steward.log_text();
    // Five crashes, more than max_crashes = 2 in all, and steward still restarts.
    assert!(crashes(&log) >= 5, "log:\n{log}");
    assert!(
        !log_has(&log, &[("steward_event", "gave-up")]),
        "log:\n{log}"
    );
    let counted = fact_values(&log, &[("steward_event", "crashed")], "steward_crashes");
    assert!(
        counted
            .iter()
            .all(|n| n.parse::<u32>().is_ok_and(|n| n <= 2)),
        "three crashes counted within the window; log:\n{log}"
    );
    assert!(steward.wait(Duration::ZERO).is_none(), "log:\n{log}");
}

#[test]
fn crashes_inside_the_window_give_up() {
    let scratch = Scratch::new("crash-window-inside");
    // The same policy with a 50 ms backoff: three crashes within about a second.
    let config = crash_loop_in_a_2s_window(&scratch, "50ms");
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let status = steward.wait(Duration::from_secs(30)).expect("gives up");
    let log = steward.log_text();
    assert_eq!(status.code(), Some(3), "log:\n{log}");
    assert!(
        log_has(
            &log,
            &[("steward_event", "gave-up"), ("steward_crashes", "3")]
        ),
        "log:\n{log}"
    );
}
