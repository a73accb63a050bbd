//! Hostile input from issue 11 (findings 5 and 6): an ordinary local user answering the
//! readiness probe in the child's name, and a newline in a value that reaches sd_notify.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kind, Setup, USER_YAML};
use nix::sys::signal::Signal;
use steward_e2e::*;

/// `nobody`: an ordinary local user with no rights over steward or its child.
const ATTACKER_UID: u32 = 65534;

/// A listener that answers every connection with 200 and `X-Served-By-Pid: <pid>`, the
/// header steward-proxy's health endpoint sends; one line on stdout per connection.
const FAKE_HEALTH: &str = r#"
import socket, sys
port, pid = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    print("connection", flush=True)
    c.settimeout(1)
    try:
        c.recv(4096)
    except OSError:
        pass
    try:
        c.sendall(("HTTP/1.1 200 OK\r\nX-Served-By-Pid: %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok" % pid).encode())
    except OSError:
        pass
    c.close()
"#;

/// Finding 5: an unprivileged listener on the probe's port, naming the child's pid (which
/// anyone can read in /proc), for a child that never listens: steward must never say
/// READY=1, since the kernel shows that the child did not accept the probe's connection.
#[test]
fn a_foreign_listener_naming_the_childs_pid_never_makes_it_ready() {
    if !needs_root(
        "a_foreign_listener_naming_the_childs_pid_never_makes_it_ready",
        "to run the attacker as uid 65534",
    ) {
        return;
    }
    let scratch = Scratch::new("hostile-probe");
    let mut notify = NotifySocket::bind(&scratch.path);
    let child = scratch.write_executable("never-listens.sh", "#!/bin/sh\nexec sleep 60\n");
    let script = scratch.write("fake_health.py", FAKE_HEALTH);
    let port = free_port();
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\n[ready]\nhttp = \"http://127.0.0.1:{port}/health\"\ntimeout = \"20s\"\n",
            scratch.path.display(),
            child.display(),
        ),
    );
    let steward = Steward::start(
        &scratch.path,
        &config,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
    );
    let pid = steward
        .child_pid(Duration::from_secs(5))
        .expect("child pid");
    let attacker_log = scratch.path.join("attacker.log");
    let mut attacker = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&attacker_log).expect("attacker log"))
        .stderr(Stdio::null())
        .uid(ATTACKER_UID)
        .gid(ATTACKER_UID)
        .spawn()
        .expect("attacker");
    // The probe retries every few hundred ms: let it reach the attacker several times.
    let end = Instant::now() + Duration::from_secs(10);
    let connections = || {
        std::fs::read_to_string(&attacker_log)
            .unwrap_or_default()
            .matches("connection")
            .count()
    };
    while connections() < 5 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = connections();
    let ready = notify.wait_for("READY=1", Duration::from_millis(500));
    let _ = attacker.kill();
    let _ = attacker.wait();
    let log = steward.log_text();
    drop(steward);
    assert!(
        seen >= 5,
        "the probe reached the attacker {seen} times; log:\n{log}"
    );
    assert!(
        ready.is_none(),
        "READY=1 for a child that never listened; notify: {:?}\nlog:\n{log}",
        notify.messages()
    );
}

/// The assignments steward sends; anything else in a datagram was injected.
const KNOWN: &[&str] = &[
    "READY=1",
    "RELOADING=1",
    "STOPPING=1",
    "WATCHDOG=1",
    "MONOTONIC_USEC=",
    "STATUS=",
];

/// Finding 6: a newline in a value that reaches `STATUS=` (here a `pingora_conf` path in a
/// reload's configuration error) must not add assignments systemd would honour.
#[test]
fn a_newline_in_a_reload_error_cannot_forge_notify_assignments() {
    let mut s = Setup::start(Kind::StewardProxy, USER_YAML, "");
    s.wait_ready();
    let toml_path = s.scratch.path.join("steward.toml");
    let toml = std::fs::read_to_string(&toml_path).expect("steward.toml");
    let hostile: String = toml
        .lines()
        .map(|l| {
            if l.starts_with("pingora_conf") {
                // TOML's escapes: the path itself holds the newlines.
                r#"pingora_conf = "/nonexistent\nMAINPID=4242\nREADY=1""#.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(hostile, toml.trim_end(), "no pingora_conf line in:\n{toml}");
    std::fs::write(&toml_path, hostile + "\n").expect("rewrite steward.toml");
    s.steward.signal(Signal::SIGHUP);
    assert!(
        s.notify
            .wait_for("reload failed", Duration::from_secs(10))
            .is_some(),
        "no failed reload reported; log:\n{}",
        s.steward.log_text()
    );
    let messages = s.notify.messages();
    for m in &messages {
        for line in m.lines() {
            assert!(
                KNOWN.iter().any(|k| line.starts_with(k)),
                "an injected assignment {line:?} in {m:?}"
            );
        }
        assert!(
            m.lines().filter(|l| *l == "READY=1").count() <= 1,
            "READY=1 twice in {m:?}"
        );
        assert!(!m.lines().any(|l| l == "MAINPID=4242"), "{m:?}");
    }
    // The reason is still there for the operator, escaped.
    assert!(
        messages
            .iter()
            .any(|m| m.contains("/nonexistent\\nMAINPID=4242\\nREADY=1")),
        "{messages:?}"
    );
}
