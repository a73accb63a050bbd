//! The child's open-file limit (`child.nofile`): steward started as systemd starts a
//! service (soft limit 1024, a high hard limit) raises its child's soft limit to the hard
//! limit, so steward-proxy serves thousands of concurrent requests; "inherit" leaves it at
//! 1024; a number above the hard limit is a configuration error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use steward_e2e::*;

/// systemd's default soft limit for a service.
const SOFT: u64 = 1024;
/// steward's hard limit: far above what [`CONCURRENT`] requests need (the shipped unit
/// gives 524288), lowered to the test's own where that is less.
const HARD: u64 = 65536;
/// Requests in flight at once. Each costs steward-proxy three descriptors (the client's
/// connection, the upstream connection, and the built-in origin's end of it): about 15,000
/// in all, far beyond 1024.
const CONCURRENT: usize = 5_000;
/// How long the origin holds each request: longer than opening all of them takes, so
/// every one is in flight at the same moment.
const DELAY_MS: u64 = 5_000;

/// The test's own `RLIMIT_NOFILE`, its soft limit first raised to its hard limit: the
/// clients below hold `CONCURRENT` sockets.
fn raise_own_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed, nothing else.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) },
        0,
        "getrlimit"
    );
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit only reads the struct passed.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) },
        0,
        "setrlimit: {}",
        std::io::Error::last_os_error()
    );
    (lim.rlim_cur, lim.rlim_max)
}

/// The hard limit steward gets: [`HARD`], or the test's own hard limit where that is
/// lower (raising a hard limit takes CAP_SYS_RESOURCE, which even root lacks in many
/// containers). None when that is too low for [`CONCURRENT`] requests.
fn steward_hard(test: &str) -> Option<u64> {
    let (_, own_hard) = raise_own_nofile();
    let hard = own_hard.min(HARD);
    if hard < (3 * CONCURRENT + 500) as u64 {
        println!("SKIPPED {test}: the test's open-file hard limit {own_hard} is too low");
        return None;
    }
    Some(hard)
}

/// steward supervising steward-proxy with `child.nofile = <nofile>` (none: the key left
/// out), started with `(SOFT, hard)`; ready. Returns steward, the proxy's address and the
/// child's pid.
fn serving(
    scratch: &Scratch,
    nofile: Option<&str>,
    hard: u64,
) -> (Steward, NotifySocket, String, i32) {
    let a = proxy_settings(scratch);
    let nofile = nofile
        .map(|n| format!("nofile = {n}\n"))
        .unwrap_or_default();
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\", \"--proxy-config\", \"{}\"]\n{nofile}[ready]\nhttp = \"http://{}/health\"\ntimeout = \"20s\"\n",
            scratch.path.display(),
            bin("steward-proxy").display(),
            a.settings.display(),
            a.health
        ),
    );
    let mut notify = NotifySocket::bind(&scratch.path);
    let steward = Steward::start_with_nofile(
        &scratch.path,
        &config,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
        (SOFT, hard),
    );
    if notify
        .wait_for("READY=1", Duration::from_secs(20))
        .is_none()
    {
        panic!("no READY=1 within 20 s; log:\n{}", steward.log_text());
    }
    let pid = steward
        .child_pid(Duration::from_secs(5))
        .expect("child pid in the log");
    (steward, notify, a.proxy, pid)
}

/// The soft and hard "Max open files" of a process, from `/proc/<pid>/limits`.
fn open_file_limits(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let mut n = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("a number"));
    (n.next().expect("soft"), n.next().expect("hard"))
}

fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sends `GET /delay/<DELAY_MS>` on `CONCURRENT` connections at once; returns the
/// connections, each with its request sent, and the errors of the ones that failed.
fn open_slow_requests(proxy: &str) -> (Vec<TcpStream>, Vec<String>) {
    let mut conns = Vec::with_capacity(CONCURRENT);
    let mut errors = vec![];
    for i in 0..CONCURRENT {
        let sent = TcpStream::connect(proxy).and_then(|mut s| {
            write!(
                s,
                "GET /delay/{DELAY_MS} HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"
            )?;
            Ok(s)
        });
        match sent {
            Ok(s) => conns.push(s),
            Err(e) => errors.push(format!("request {i}: {e}")),
        }
    }
    (conns, errors)
}

/// Reads every response; the errors of those that are not a complete 200.
fn read_responses(conns: Vec<TcpStream>) -> Vec<String> {
    let mut errors = vec![];
    for (i, mut s) in conns.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut out = Vec::new();
        if let Err(e) = s.read_to_end(&mut out) {
            errors.push(format!("response {i}: {e}"));
            continue;
        }
        let text = String::from_utf8_lossy(&out);
        if !text.starts_with("HTTP/1.1 200") || !text.ends_with(&format!("slept {DELAY_MS} ms\n")) {
            errors.push(format!(
                "response {i}: {}",
                text.lines().next().unwrap_or("(nothing)")
            ));
        }
    }
    errors
}

fn first(errors: &[String]) -> String {
    errors
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn by_default_the_child_s_soft_limit_is_raised_and_it_serves_5000_concurrent_slow_requests() {
    let test =
        "by_default_the_child_s_soft_limit_is_raised_and_it_serves_5000_concurrent_slow_requests";
    let Some(hard) = steward_hard(test) else {
        return;
    };
    let scratch = Scratch::new("limits-max");
    let (steward, _notify, proxy, pid) = serving(&scratch, None, hard);
    assert_eq!(open_file_limits(pid), (hard, hard));
    // steward itself keeps the limit it was given.
    assert_eq!(open_file_limits(steward.pid()), (SOFT, hard));
    let log = steward.log_text();
    assert!(
        log.contains(&format!("child open-file limit {hard} (soft; hard {hard})")),
        "log:\n{log}"
    );

    let began = Instant::now();
    let (conns, connect_errors) = open_slow_requests(&proxy);
    let opened_in = began.elapsed();
    // All of them in flight at once: the child holds a descriptor for each client and
    // each upstream connection (the origin's ends too, as the origin is built in).
    // The proxy opens each upstream connection a moment after accepting its client: the
    // most it holds over the next second, while every request waits on the origin.
    let held = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            open_descriptors(pid)
        })
        .max()
        .unwrap_or(0);
    let read_errors = read_responses(conns);
    let log = steward.log_text();
    assert!(
        connect_errors.is_empty(),
        "{} of {CONCURRENT} requests could not be sent: {}; log:\n{log}",
        connect_errors.len(),
        first(&connect_errors)
    );
    assert!(
        read_errors.is_empty(),
        "{} of {CONCURRENT} requests failed: {}; log:\n{log}",
        read_errors.len(),
        first(&read_errors)
    );
    assert!(
        opened_in < Duration::from_millis(DELAY_MS),
        "opening the requests took {opened_in:?}: they were not all in flight at once"
    );
    assert!(
        held > 2 * CONCURRENT,
        "the child held {held} descriptors while {CONCURRENT} requests were in flight"
    );
}

#[test]
fn with_child_nofile_inherit_the_child_keeps_steward_s_soft_limit() {
    let test = "with_child_nofile_inherit_the_child_keeps_steward_s_soft_limit";
    let Some(hard) = steward_hard(test) else {
        return;
    };
    let scratch = Scratch::new("limits-inherit");
    let (steward, _notify, _proxy, pid) = serving(&scratch, Some("\"inherit\""), hard);
    assert_eq!(open_file_limits(pid), (SOFT, hard));
    let log = steward.log_text();
    assert!(
        log.contains(&format!("child open-file limit {SOFT} (soft; hard {hard})")),
        "log:\n{log}"
    );
}

#[test]
fn with_child_nofile_a_number_the_child_gets_that_soft_limit() {
    let test = "with_child_nofile_a_number_the_child_gets_that_soft_limit";
    let Some(hard) = steward_hard(test) else {
        return;
    };
    let scratch = Scratch::new("limits-number");
    let (_steward, _notify, _proxy, pid) = serving(&scratch, Some("4096"), hard);
    assert_eq!(open_file_limits(pid), (4096, hard));
}

#[test]
fn child_nofile_above_the_hard_limit_stops_the_start_with_a_configuration_error() {
    let scratch = Scratch::new("limits-above");
    let a = proxy_settings(&scratch);
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\", \"--proxy-config\", \"{}\"]\nnofile = 4096\n[ready]\nhttp = \"http://{}/health\"\n",
            scratch.path.display(),
            bin("steward-proxy").display(),
            a.settings.display(),
            a.health
        ),
    );
    let mut steward = Steward::start_with_nofile(&scratch.path, &config, &[], (1024, 2048));
    let status = steward
        .wait(Duration::from_secs(10))
        .expect("steward exits");
    let log = steward.log_text();
    assert_eq!(status.code(), Some(78), "log:\n{log}");
    assert!(
        log.contains("child.nofile = 4096 is above the open-file hard limit")
            && log.contains("(2048)")
            && log.contains("LimitNOFILE="),
        "log:\n{log}"
    );
    assert!(started_child_pids(&log).is_empty(), "log:\n{log}");
    assert!(!Path::new(&scratch.path.join("run/control.sock")).exists());
}

/// Rewrites `child.nofile` in the configuration of a steward started by [`serving`].
fn set_nofile(scratch: &Scratch, value: &str) {
    let path = scratch.path.join("steward.toml");
    let text = std::fs::read_to_string(&path).expect("steward.toml");
    let text: String = text
        .lines()
        .map(|l| match l.starts_with("nofile = ") {
            true => format!("nofile = {value}\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, text).expect("write steward.toml");
}

#[test]
fn a_reload_that_changes_child_nofile_gives_the_next_generation_the_new_limit() {
    let test = "a_reload_that_changes_child_nofile_gives_the_next_generation_the_new_limit";
    let Some(hard) = steward_hard(test) else {
        return;
    };
    let scratch = Scratch::new("limits-reload");
    let (steward, _notify, _proxy, first) = serving(&scratch, Some("4096"), hard);
    assert_eq!(open_file_limits(first).0, 4096);
    set_nofile(&scratch, "8192");
    let (code, out) = steward_cli("reload", &scratch.path.join("run/control.sock"));
    let log = steward.log_text();
    assert_eq!(code, Some(0), "{out}\nlog:\n{log}");
    let second = status_json(&scratch.path.join("run/control.sock"))["status"]["child_pid"]
        .as_i64()
        .expect("child pid") as i32;
    assert_ne!(second, first);
    assert_eq!(open_file_limits(second), (8192, hard));
    assert!(
        log.contains(&format!("child open-file limit 8192 (soft; hard {hard})")),
        "log:\n{log}"
    );
}

#[test]
fn a_reload_that_asks_for_more_than_the_hard_limit_fails_and_the_child_keeps_serving() {
    let test = "a_reload_that_asks_for_more_than_the_hard_limit_fails_and_the_child_keeps_serving";
    let Some(hard) = steward_hard(test) else {
        return;
    };
    let scratch = Scratch::new("limits-reload-above");
    let (steward, _notify, proxy, first) = serving(&scratch, Some("4096"), hard);
    set_nofile(&scratch, &(hard + 1).to_string());
    let (code, out) = steward_cli("reload", &scratch.path.join("run/control.sock"));
    assert_eq!(code, Some(1), "{out}\nlog:\n{}", steward.log_text());
    assert!(
        out.contains(&format!(
            "child.nofile = {} is above the open-file hard limit",
            hard + 1
        )) && out.contains("LimitNOFILE="),
        "{out}"
    );
    let status = status_json(&scratch.path.join("run/control.sock"));
    assert_eq!(status["status"]["child_pid"], first, "{status}");
    assert_eq!(status["status"]["generation"], 1, "{status}");
    assert_eq!(
        http_get(&proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
}
