//! Start-up: READY=1 only when the child really serves; STATUS along the way.

mod common;

use std::time::Duration;

use common::{Kind, Setup, USER_YAML};
use nix::sys::signal::Signal;
use steward_e2e::*;

#[test]
fn ready_arrives_only_after_the_port_accepts() {
    let scratch = Scratch::new("late-bind");
    let mut notify = NotifySocket::bind(&scratch.path);
    let listen = format!("127.0.0.1:{}", free_port());
    let config = stubborn_config(
        &scratch,
        &listen,
        "[stop]\ndeadline = \"1s\"\ndrain = \"exit\"\n",
    );
    let steward = Steward::start(
        &scratch.path,
        &config,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("STUBBORN_LISTEN", listen.clone()),
            ("STUBBORN_BIND_DELAY_MS", "700".into()),
        ],
    );
    let ready = notify
        .wait_for("READY=1", Duration::from_secs(10))
        .expect("READY=1");
    assert!(
        ready.duration_since(steward.started) >= Duration::from_millis(700),
        "READY after {:?}, before the child listened",
        ready.duration_since(steward.started)
    );
    assert!(std::net::TcpStream::connect(&listen).is_ok());
    let msgs = notify.messages();
    // systemd was told a status (generation 1 spawned) before READY=1.
    let status = msgs.iter().position(|m| m.starts_with("STATUS="));
    let ready_at = msgs.iter().position(|m| m.contains("READY=1"));
    assert!(status < ready_at && status.is_some(), "{msgs:?}");
    let spawned = [("steward_event", "spawned"), ("steward_generation", "1")];
    assert!(log_has(&steward.log_text(), &spawned));
}

#[test]
fn proxy_serves_the_moment_ready_is_sent() {
    let mut s = Setup::start(Kind::StewardProxy, USER_YAML, "");
    s.wait_ready();
    let (code, body) = http_get(&s.proxy, "/", Duration::from_secs(2)).expect("served");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("demo origin"), "{body}");
    let serving = [("steward_event", "serving"), ("steward_generation", "1")];
    assert!(
        log_has(&s.steward.log_text(), &serving),
        "{}",
        s.steward.log_text()
    );
    s.steward.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn stock_pingora_serves_the_moment_ready_is_sent() {
    let mut s = Setup::start(Kind::StockPingora, USER_YAML, "");
    s.wait_ready();
    let (code, body) = http_get(&s.proxy, "/hello", Duration::from_secs(2)).expect("served");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("origin saw /hello"), "{body}");
}

#[test]
fn effective_conf_is_clamped_and_private_and_the_users_file_untouched() {
    let mut s = Setup::start(Kind::StewardProxy, USER_YAML, "deadline = \"10s\"");
    s.wait_ready();
    let user = std::fs::read_to_string(s.scratch.path.join("pingora.yaml")).expect("user yaml");
    assert_eq!(user, USER_YAML);
    let eff_path = s.scratch.path.join("run/pingora.yaml");
    let eff = std::fs::read_to_string(&eff_path).expect("effective yaml");
    assert!(eff.contains("grace_period_seconds: 10"), "{eff}");
    assert!(
        eff.contains("graceful_shutdown_timeout_seconds: 0"),
        "{eff}"
    );
    let sock = format!(
        "upgrade_sock: {}/run/upgrade.sock",
        s.scratch.path.display()
    );
    assert!(eff.contains(&sock), "{eff}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.scratch.path.join("run"))
        .expect("run dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let log = s.steward.log_text();
    assert!(
        log.contains("grace_period_seconds 300")
            && log.contains("clamped to grace_period_seconds 10"),
        "the clamp warning names both numbers; log:\n{log}"
    );
}

#[test]
fn deadline_outside_systemd_is_the_documented_fallback_with_a_warning() {
    let mut s = Setup::start(Kind::StewardProxy, USER_YAML, "");
    s.wait_ready();
    let log = s.steward.log_text();
    assert!(
        log.contains("stop deadline 25 s (stop.fallback_deadline: not running under systemd)"),
        "log:\n{log}"
    );
    assert!(
        log.contains("WARN") && log.contains("not running under systemd"),
        "log:\n{log}"
    );
}

#[test]
fn explicit_deadline_is_logged_as_configured() {
    let mut s = Setup::start(Kind::StewardProxy, USER_YAML, "deadline = \"7s\"");
    s.wait_ready();
    let log = s.steward.log_text();
    assert!(
        log.contains("stop deadline 7 s (stop.deadline in steward's config)"),
        "log:\n{log}"
    );
}

#[test]
fn child_that_never_serves_fails_the_start_within_the_timeout() {
    let scratch = Scratch::new("never-ready");
    // A child that runs and never listens. (steward-proxy probed on an address its proxy.toml
    // does not declare is not even started: the start-up check refuses it with 78.)
    let child = scratch.write_executable("never-serves.sh", "#!/bin/sh\nexec sleep 30\n");
    let escapees = scratch.path.join("escapees");
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\", \"{}\"]\n[ready]\ntcp = \"127.0.0.1:{}\"\ntimeout = \"1s\"\n",
            scratch.path.display(),
            escaping_launcher(&scratch).display(),
            child.display(),
            free_port()
        ),
    );
    let mut steward = Steward::start(
        &scratch.path,
        &config,
        &[("STUBBORN_PIDFILE", escapees.display().to_string())],
    );
    let child = steward.child_pid(Duration::from_secs(5)).expect("child");
    // The child would run for 30 s: an exit well before is steward giving up on it.
    let status = steward.wait(Duration::from_secs(10)).expect("exits");
    let log = steward.log_text();
    assert_eq!(status.code(), Some(69), "log:\n{log}");
    assert!(!process_alive(child));
    // The child dies with steward whatever steward does; its escapee only by its kill.
    let escapees = recorded_pids(&escapees);
    assert_eq!(escapees.len(), 1, "{escapees:?}");
    let left = stubborn_survivors(&escapees);
    assert!(left.is_empty(), "escapees {left:?} survived; log:\n{log}");
    let start_timeout = [
        ("steward_event", "killed"),
        ("steward_escalation", "start-timeout"),
    ];
    assert!(log_has(&log, &start_timeout), "log:\n{log}");
}

#[test]
fn infinite_deadline_keeps_the_operators_grace_and_says_so() {
    let mut s = Setup::start(Kind::StewardProxy, USER_YAML, "deadline = \"infinity\"");
    s.wait_ready();
    let log = s.steward.log_text();
    assert!(
        log.contains("stop deadline none: stop.deadline = \"infinity\""),
        "log:\n{log}"
    );
    let eff = std::fs::read_to_string(s.scratch.path.join("run/pingora.yaml")).expect("eff");
    assert!(eff.contains("grace_period_seconds: 300"), "{eff}");
    s.steward.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(5)).code(), Some(0));
}
