//! Container PID 1 mode: steward as PID 1 of a new PID namespace (`unshare --pid --fork
//! --mount-proc`, as a container runtime starts an entrypoint), observed from the host.
//! Needs root for the namespace; the tests that do not need it run everywhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use steward_e2e::*;

/// Whether this test can make a PID namespace. Without root it is skipped, except in CI
/// (`CI=true`), where a skip would hide that the container mode went untested.
fn can_unshare(test: &str) -> bool {
    needs_root(test, "to create a PID namespace (unshare --pid)")
}

/// steward run as PID 1 of a fresh PID namespace, seen from the host.
struct Pid1 {
    unshare: Child,
    log: PathBuf,
    /// steward's pid on the host (PID 1 inside).
    host_pid: i32,
}

impl Pid1 {
    /// `unshare --pid --fork [--mount-proc] -- steward run --config <config>`.
    fn start(dir: &Path, config: &Path, env: &[(&str, String)], mount_proc: bool) -> Pid1 {
        let log = dir.join("steward.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork"]);
        if mount_proc {
            cmd.arg("--mount-proc");
        }
        cmd.arg("--")
            .arg(bin("steward"))
            .args(["run", "--log-target", "stderr", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("STEWARD_STOP_TIMEOUT")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut unshare = cmd
            .spawn()
            .expect("spawn unshare (util-linux) to create a PID namespace");
        let host_pid = match steward_under(unshare.id() as i32, Duration::from_secs(10)) {
            Some(p) => p,
            None => {
                let _ = unshare.kill();
                let _ = unshare.wait();
                panic!(
                    "no steward process under unshare; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Pid1 {
            unshare,
            log,
            host_pid,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.host_pid), sig).expect("signal steward");
    }

    /// unshare's exit status, which is steward's: `unshare --fork` passes it on.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.unshare.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() >= end {
                panic!(
                    "steward did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until steward logged `needle`.
    fn wait_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            if Instant::now() >= end {
                panic!(
                    "no {needle:?} in the log within {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The PID namespace steward is PID 1 of, as `/proc/<pid>/ns/pid` names it.
    fn namespace(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/ns/pid", self.host_pid)).expect("steward's pid ns")
    }
}

impl Drop for Pid1 {
    /// SIGTERM as the platform would; SIGKILL to PID 1 ends the whole namespace.
    fn drop(&mut self) {
        if let Ok(None) = self.unshare.try_wait() {
            let _ = kill(Pid::from_raw(self.host_pid), Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.unshare.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = kill(Pid::from_raw(self.host_pid), Signal::SIGKILL);
            let _ = self.unshare.wait();
        }
    }
}

/// The host pid of the steward that `unshare` (pid `parent`) forked and exec'd.
fn steward_under(parent: i32, timeout: Duration) -> Option<i32> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if stat_field(pid, 0).as_deref() == Some("steward") {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Field `n` of `/proc/<pid>/stat`: 0 is the command name, then state (1), ppid (2), ...
/// starttime is 19.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    if n == 0 {
        return Some(s[open + 1..close].to_string());
    }
    s[close + 1..]
        .split_whitespace()
        .nth(n - 1)
        .map(str::to_string)
}

/// A process of the namespace as the host sees it.
struct NsProc {
    host_pid: i32,
    /// The pid inside the namespace (last entry of `NSpid:`).
    ns_pid: i32,
    state: String,
    ppid: i32,
    starttime: String,
}

/// Every process in PID namespace `ns`, from the host's /proc.
fn processes_in(ns: &Path) -> Vec<NsProc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l == ns))
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let ns_pid = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))?
                .split_whitespace()
                .last()?
                .parse()
                .ok()?;
            Some(NsProc {
                host_pid: p,
                ns_pid,
                state: stat_field(p, 1)?,
                ppid: stat_field(p, 2)?.parse().ok()?,
                starttime: stat_field(p, 19)?,
            })
        })
        .collect()
}

/// steward's TOML for `command` with a TCP readiness probe on `ready` and these `[stop]`
/// lines.
fn steward_toml(scratch: &Scratch, command: &str, ready: &str, stop: &str) -> PathBuf {
    scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = {command}\n[ready]\n{ready}\ntimeout = \"20s\"\n[stop]\n{stop}\n",
            scratch.path.display()
        ),
    )
}

/// A shell child that listens through stubborn-child (same process group, so the probe
/// counts it as the child's own) and runs `body` in the foreground.
fn shell_child(scratch: &Scratch, body: &str) -> (String, String, Vec<(&'static str, String)>) {
    let listen = format!("127.0.0.1:{}", free_port());
    let script =
        scratch.write_executable("child.sh", &format!("#!/bin/sh\n\"$STUBBORN\" &\n{body}\n"));
    (
        format!("[\"{}\"]", script.display()),
        format!("tcp = \"{listen}\""),
        vec![
            ("STUBBORN", bin("stubborn-child").display().to_string()),
            ("STUBBORN_LISTEN", listen),
        ],
    )
}

#[test]
fn orphans_exiting_in_the_namespace_never_accumulate_as_zombies() {
    if !can_unshare("orphans_exiting_in_the_namespace_never_accumulate_as_zombies") {
        return;
    }
    let scratch = Scratch::new("pid1-zombies");
    let orphans = scratch.path.join("orphans");
    // Each round leaves a `sleep` whose parent has exited: it is re-parented to PID 1 and
    // becomes a zombie when it ends, unless PID 1 reaps it.
    let (command, ready, mut env) = shell_child(
        &scratch,
        "while :; do sh -c 'sleep 0.1 & echo x >> \"$ORPHANS\"'; sleep 0.05; done",
    );
    env.push(("ORPHANS", orphans.display().to_string()));
    let config = steward_toml(&scratch, &command, &ready, "");
    let mut s = Pid1::start(&scratch.path, &config, &env, true);
    s.wait_log("READY=1", Duration::from_secs(10));
    s.wait_log("is PID 1 of its PID namespace", Duration::ZERO);
    let ns = s.namespace();

    // A zombie that is still there a second later was not reaped promptly; reaping only
    // at exit would let them pile up.
    let mut first_seen: std::collections::HashMap<(i32, String), Instant> = Default::default();
    let mut reparented = 0;
    let mut worst = 0;
    let mut lingering = vec![];
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        let procs = processes_in(&ns);
        assert!(
            procs
                .iter()
                .any(|p| p.host_pid == s.host_pid && p.ns_pid == 1),
            "steward is not PID 1 of its namespace"
        );
        let zombies: Vec<&NsProc> = procs.iter().filter(|p| p.state == "Z").collect();
        worst = worst.max(zombies.len());
        for z in zombies {
            let t = *first_seen
                .entry((z.host_pid, z.starttime.clone()))
                .or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(1) {
                lingering.push(z.ns_pid);
            }
        }
        reparented += procs
            .iter()
            .filter(|p| p.ppid == s.host_pid && p.state != "Z")
            .filter(|p| stat_field(p.host_pid, 0).as_deref() == Some("sleep"))
            .count();
        std::thread::sleep(Duration::from_millis(50));
    }
    let made = std::fs::read_to_string(&orphans)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        made >= 10,
        "only {made} orphans were made; the test proves nothing"
    );
    assert!(
        reparented > 0,
        "no orphan was ever seen re-parented to steward; the test proves nothing"
    );
    assert!(
        lingering.is_empty(),
        "zombies lingered over a second (namespace pids {lingering:?}); log:\n{}",
        s.log_text()
    );
    assert!(worst <= 3, "{worst} zombies at once after {made} orphans");
    s.signal(Signal::SIGTERM);
    assert_eq!(
        s.wait(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        s.log_text()
    );
}

#[test]
fn sigterm_to_pid_1_stops_steward_proxy_after_its_request_with_exit_0() {
    if !can_unshare("sigterm_to_pid_1_stops_steward_proxy_after_its_request_with_exit_0") {
        return;
    }
    let scratch = Scratch::new("pid1-proxy");
    let a = proxy_settings(&scratch);
    let config = steward_toml(
        &scratch,
        &format!(
            "[\"{}\", \"--proxy-config\", \"{}\"]",
            bin("steward-proxy").display(),
            a.settings.display()
        ),
        &format!("http = \"http://{}/health\"", a.health),
        "margin = \"2s\"",
    );
    let mut s = Pid1::start(
        &scratch.path,
        &config,
        &[("STEWARD_STOP_TIMEOUT", "10".into())],
        true,
    );
    s.wait_log("READY=1", Duration::from_secs(20));
    assert!(
        wait_accepting(&a.proxy, Duration::from_secs(10)),
        "{}",
        s.log_text()
    );
    let proxy = a.proxy.clone();
    let req = std::thread::spawn(move || http_get(&proxy, "/delay/1500", Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    s.signal(Signal::SIGTERM);
    let status = s.wait(Duration::from_secs(20));
    let took = t.elapsed();
    let log = s.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    let (code, body) = req
        .join()
        .expect("request thread")
        .expect("the in-flight request completes");
    assert_eq!(code, 200, "{body}");
    assert!(
        took < Duration::from_secs(8),
        "stop took {took:?}, beyond the 8 s deadline; log:\n{log}"
    );
    assert!(
        !log_has(&log, &[("steward_escalation", "deadline")]),
        "killed at the deadline instead of drained; log:\n{log}"
    );
}

#[test]
fn stop_timeout_env_minus_margin_is_the_deadline_for_a_child_ignoring_sigterm() {
    if !can_unshare("stop_timeout_env_minus_margin_is_the_deadline_for_a_child_ignoring_sigterm") {
        return;
    }
    let scratch = Scratch::new("pid1-deadline");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = steward_toml(
        &scratch,
        &format!("[\"{}\"]", bin("stubborn-child").display()),
        &format!("tcp = \"{listen}\""),
        // exit: wait for the child itself, which never comes, so only the deadline ends it.
        // A margin that puts the platform's timeout (20 s) far beyond the deadline (3 s):
        // a kill at one cannot pass for a kill at the other.
        "margin = \"17s\"\ndrain = \"exit\"",
    );
    let mut s = Pid1::start(
        &scratch.path,
        &config,
        &[
            ("STEWARD_STOP_TIMEOUT", "20s".into()),
            ("STUBBORN_LISTEN", listen),
        ],
        true,
    );
    s.wait_log("READY=1", Duration::from_secs(20));
    let child = *started_child_pids(&s.log_text())
        .first()
        .expect("child pid in the log");
    let t = Instant::now();
    s.signal(Signal::SIGTERM);
    let status = s.wait(Duration::from_secs(40));
    let took = t.elapsed();
    let log = s.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(
        log.contains("stop deadline 3 s = STEWARD_STOP_TIMEOUT 20 s - margin 17 s (environment)"),
        "log:\n{log}"
    );
    let killed = [
        ("steward_event", "killed"),
        ("steward_escalation", "deadline"),
    ];
    let escalation =
        find_fact(&log, &killed).unwrap_or_else(|| panic!("no deadline escalation; log:\n{log}"));
    assert_eq!(
        escalation.get("steward_deadline_source"),
        Some("environment"),
        "{escalation:?}"
    );
    // steward's kill, then the child's end by it (the child never ends on its own).
    let child_s = child.to_string();
    let stopped = [
        ("steward_event", "stopped"),
        ("steward_child_pid", child_s.as_str()),
        ("steward_child_signal", "9"),
    ];
    let end = find_fact(&log, &stopped)
        .unwrap_or_else(|| panic!("child {child} did not end by SIGKILL; log:\n{log}"));
    let at = |r: &Record| log.find(&r.line).unwrap_or(usize::MAX);
    assert!(at(&escalation) < at(&end), "log:\n{log}");
    // Killed at the deadline, not before, and before the platform's 20 s.
    assert!(
        took >= Duration::from_millis(2900),
        "stopped after {took:?}, before the 3 s deadline; log:\n{log}"
    );
    assert!(
        took < Duration::from_secs(20),
        "stopped after {took:?}, not before the platform's 20 s; log:\n{log}"
    );
}

#[test]
fn sigusr1_is_forwarded_to_the_child_and_sigquit_ignored() {
    if !can_unshare("sigusr1_is_forwarded_to_the_child_and_sigquit_ignored") {
        return;
    }
    let scratch = Scratch::new("pid1-forward");
    let got = scratch.path.join("got");
    let (command, ready, mut env) = shell_child(
        &scratch,
        "trap 'echo USR1 >> \"$GOT\"' USR1\nwhile :; do sleep 0.05; done",
    );
    env.push(("GOT", got.display().to_string()));
    let config = steward_toml(&scratch, &command, &ready, "");
    let mut s = Pid1::start(&scratch.path, &config, &env, true);
    s.wait_log("READY=1", Duration::from_secs(20));
    s.signal(Signal::SIGQUIT);
    s.wait_log("SIGQUIT ignored", Duration::from_secs(5));
    s.signal(Signal::SIGUSR1);
    let end = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&got).is_ok_and(|t| t.contains("USR1")) {
        assert!(
            Instant::now() < end,
            "the child never got SIGUSR1; log:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.log_text().contains("SIGUSR1 forwarded to child pid"));
    s.signal(Signal::SIGTERM);
    assert_eq!(
        s.wait(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        s.log_text()
    );
}

#[test]
fn proc_of_another_pid_namespace_is_refused_with_71() {
    if !can_unshare("proc_of_another_pid_namespace_is_refused_with_71") {
        return;
    }
    let scratch = Scratch::new("pid1-noproc");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = steward_toml(
        &scratch,
        &format!("[\"{}\"]", bin("stubborn-child").display()),
        &format!("tcp = \"{listen}\""),
        "",
    );
    // No --mount-proc: /proc still shows the host's processes under the host's pids.
    // steward exits at once, so it is run to completion rather than watched as a Pid1.
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--"])
        .arg(bin("steward"))
        .args(["run", "--log-target", "stderr", "--config"])
        .arg(&config)
        .env_remove("INVOCATION_ID")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env("STUBBORN_LISTEN", listen)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare (util-linux)");
    let status = out.status;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(71), "log:\n{log}");
    assert!(
        log.contains("/proc belongs to another PID namespace"),
        "{log}"
    );
    assert!(log.contains("--mount-proc"), "{log}");
}

#[test]
fn garbage_stop_timeout_is_exit_78_naming_the_variable() {
    let scratch = Scratch::new("bad-stop-timeout");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = steward_toml(
        &scratch,
        &format!("[\"{}\"]", bin("stubborn-child").display()),
        &format!("tcp = \"{listen}\""),
        "",
    );
    let mut s = Steward::start(
        &scratch.path,
        &config,
        &[
            ("STEWARD_STOP_TIMEOUT", "thirty".into()),
            ("STUBBORN_LISTEN", listen),
        ],
    );
    let status = s.wait(Duration::from_secs(10)).expect("steward exits");
    let log = s.log_text();
    assert_eq!(status.code(), Some(78), "log:\n{log}");
    assert!(
        log.contains("STEWARD_STOP_TIMEOUT=\"thirty\" is not a stop timeout"),
        "{log}"
    );
    assert!(
        started_child_pids(&log).is_empty(),
        "a child was started: {log}"
    );
}

#[test]
fn status_shows_the_deadline_from_the_environment() {
    let scratch = Scratch::new("status-env");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = steward_toml(
        &scratch,
        &format!("[\"{}\"]", bin("stubborn-child").display()),
        &format!("tcp = \"{listen}\""),
        "margin = \"5s\"",
    );
    let s = Steward::start(
        &scratch.path,
        &config,
        &[
            ("STEWARD_STOP_TIMEOUT", "30".into()),
            ("STUBBORN_LISTEN", listen),
        ],
    );
    let end = Instant::now() + Duration::from_secs(20);
    while !s.log_text().contains("READY=1") {
        assert!(Instant::now() < end, "not serving; log:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, out) = steward_cli("status", &scratch.path.join("run/control.sock"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("stop deadline 25 s = STEWARD_STOP_TIMEOUT 30 s - margin 5 s (environment)"),
        "{out}"
    );
}
