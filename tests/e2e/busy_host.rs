//! steward on a busy host: tens of thousands of sockets that are not the child's, and
//! operator files that are not what they should be. The event loop never waits on any of
//! it: probes stay right, status answers, a stop is acted on.

mod common;

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use steward_e2e::*;

/// Connections held on the host by other processes: 20,000 is 40,000 kernel TCP sockets,
/// about what a modest production proxy host holds.
const HOST_CONNECTIONS: usize = 20_000;

/// Lines of steward's log that report a failed health probe.
fn health_failures(log: &str) -> Vec<String> {
    records_with(log, &[("steward_event", "health-failed")])
        .into_iter()
        .map(|r| r.line)
        .collect()
}

#[test]
fn a_healthy_stock_child_passes_every_health_probe_on_a_host_with_20k_connections() {
    let _host = HostConnections::hold(HOST_CONNECTIONS, 120);
    let mut s = Setup::start_with(
        Kind::StockPingora,
        USER_YAML,
        "",
        false,
        "[health]\ninterval = \"100ms\"\ntimeout = \"1s\"\nfailures = 3\n",
    );
    s.wait_ready();
    let at_ready = status(&s);
    std::thread::sleep(Duration::from_secs(10));
    let status = status(&s);
    let passed = status["health"]["passed"].as_u64().unwrap_or(0)
        - at_ready["health"]["passed"].as_u64().unwrap_or(0);
    let log = s.steward.log_text();
    assert_eq!(
        health_failures(&log),
        Vec::<String>::new(),
        "a healthy child failed probes; log:\n{log}"
    );
    // About 100 probes in 10 s; on a loaded machine fewer run, but each one passed.
    assert!(
        passed >= 30,
        "only {passed} probes passed in 10 s: {status}"
    );
    assert_eq!(status["health"]["failed"], 0, "{status}");
    assert_eq!(status["state"], "serving", "{status}");
    assert_eq!(
        status["child_pid"], at_ready["child_pid"],
        "the child was replaced: {status}"
    );
    assert_eq!(status["restarts"], 0, "{status}");
}

/// `steward status`'s JSON status.
fn status(s: &Setup) -> serde_json::Value {
    status_json(&s.control())["status"].clone()
}

#[test]
fn a_stop_on_a_host_with_20k_connections_returns_the_request_in_flight_then_ends() {
    let _host = HostConnections::hold(HOST_CONNECTIONS, 120);
    let mut s = Setup::start(Kind::StockPingora, USER_YAML, "");
    s.wait_ready();
    let req = s.slow_request(1000);
    std::thread::sleep(Duration::from_millis(300));
    s.steward.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    let exited = Instant::now();
    let (result, done) = req.join().expect("request thread");
    let log = s.steward.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    let (code, body) = result.expect("the request in flight gets its response");
    assert_eq!(code, 200, "{body}");
    // Ordering, not timing: the response came, then steward ended the sleeping child
    // because it had drained (not because its deadline came).
    assert!(done <= exited);
    assert!(
        log_has(&log, &[("steward_escalation", "drained")]),
        "log:\n{log}"
    );
    assert!(
        !log_has(&log, &[("steward_escalation", "deadline")]),
        "log:\n{log}"
    );
}

/// steward-proxy with steward's own listeners, ready; its Pingora YAML is then replaced
/// by `make(path)`.
fn serving_then(make: impl FnOnce(&std::path::Path)) -> Setup {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let yaml = s.scratch.path.join("pingora.yaml");
    std::fs::remove_file(&yaml).expect("remove pingora.yaml");
    make(&yaml);
    s
}

/// A reload that must fail with `expect` in its answer, leaving generation 1 serving,
/// `steward status` answering, and SIGTERM acted on.
fn reload_fails_and_steward_stays_responsive(mut s: Setup, expect: &str) {
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(1), "{out}\nlog:\n{}", s.steward.log_text());
    assert!(
        out.contains(expect) && out.contains("pingora.yaml"),
        "{out}"
    );
    let status = status(&s);
    assert_eq!(status["state"], "serving", "{status}");
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
    s.steward.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", s.steward.log_text());
}

#[test]
fn a_fifo_as_pingora_conf_fails_the_reload_at_once_and_steward_keeps_answering() {
    let s = serving_then(|p| {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo")
    });
    reload_fails_and_steward_stays_responsive(s, "is a FIFO, not a regular file");
}

#[test]
fn a_device_as_pingora_conf_fails_the_reload_instead_of_filling_memory() {
    let s = serving_then(|p| symlink("/dev/zero", p).expect("symlink"));
    reload_fails_and_steward_stays_responsive(s, "is a character device, not a regular file");
}

#[test]
fn a_huge_pingora_conf_fails_the_reload_with_its_size() {
    let s = serving_then(|p| {
        std::fs::write(p, vec![b'#'; 2 * 1024 * 1024]).expect("write a 2 MiB file")
    });
    reload_fails_and_steward_stays_responsive(s, "is larger than 1048576 bytes");
}

#[test]
fn a_fifo_as_stewards_own_configuration_fails_the_reload_at_once() {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let toml = s.scratch.path.join("steward.toml");
    std::fs::remove_file(&toml).expect("remove steward.toml");
    nix::unistd::mkfifo(&toml, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("steward.toml") && out.contains("is a FIFO"),
        "{out}"
    );
    s.steward.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", s.steward.log_text());
}

#[test]
fn a_fifo_as_pingora_conf_at_start_is_a_config_error_naming_it() {
    let scratch = Scratch::new("fifo-start");
    let fifo = scratch.path.join("pingora.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\npingora_conf = \"{}\"\n[ready]\ntcp = \"127.0.0.1:1\"\n",
            scratch.path.display(),
            bin("stock-pingora").display(),
            fifo.display()
        ),
    );
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let status = steward
        .wait(Duration::from_secs(10))
        .expect("steward exits");
    let log = steward.log_text();
    assert_eq!(status.code(), Some(78), "log:\n{log}");
    assert!(log.contains("is a FIFO, not a regular file"), "log:\n{log}");
}

#[test]
fn without_netlink_steward_warns_once_and_the_drain_still_returns_the_request_in_flight() {
    let mut s = Setup::start_opts(
        Kind::StockPingora,
        USER_YAML,
        "",
        false,
        "",
        Opts {
            env: &[("STEWARD_SOCK_DIAG", "off")],
            ..Opts::default()
        },
    );
    s.wait_ready();
    let req = s.slow_request(1000);
    std::thread::sleep(Duration::from_millis(300));
    s.steward.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    let (result, _) = req.join().expect("request thread");
    let log = s.steward.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert_eq!(result.map(|r| r.0), Ok(200), "log:\n{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("netlink sock_diag is not available"))
        .collect();
    assert_eq!(warnings.len(), 1, "log:\n{log}");
    assert!(
        log_has(&log, &[("steward_sockets", "procfs")]),
        "log:\n{log}"
    );
    assert!(
        log_has(&log, &[("steward_escalation", "drained")]),
        "log:\n{log}"
    );
}
