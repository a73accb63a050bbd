//! A real container engine: rootful podman runs steward as PID 1 of an image built from
//! this checkout's release binaries and etc/container's configuration
//! (tests/podman/build-image.sh), and stops and reloads it as an operator would, with
//! `podman stop` and `podman kill -s HUP`; requests go through podman's published ports.
//!
//! Needs root and podman with runc (`scripts/setup` installs both under CI=true).
//! Elsewhere the tests print SKIPPED with the reason; under CI=true a missing or unusable
//! podman fails them, since CI runs as root and a skip would hide the container story.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, Resource};
use steward_e2e::*;

/// The platform's stop timeout the tests stop with (`podman stop -t`), and so the
/// container's STEWARD_STOP_TIMEOUT, as etc/container/Dockerfile says to pass with `-t 10`:
/// steward's deadline is 10 s - the shipped margin 8 s = 2 s.
const STOP_TIMEOUT: u64 = 10;

/// Whether podman can run containers here; prints SKIPPED with podman's own error when it
/// cannot, or fails under CI=true.
fn podman_usable(test: &str) -> bool {
    if !needs_root(test, "rootful podman") {
        return false;
    }
    for (tool, args) in [("podman", ["info"]), ("runc", ["--version"])] {
        let why = match Command::new(tool).args(args).output() {
            Ok(out) if out.status.success() => continue,
            Ok(out) => format!(
                "`{tool} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => format!("{tool}: {e} (apt-get install podman runc)"),
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test} needs podman and runc, which scripts/setup installs on CI: {why}");
        }
        println!("SKIPPED {test}: {why}");
        return false;
    }
    true
}

/// Runs `podman args`, killed after `timeout`; its exit code and stdout, stderr.
fn podman(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let out = output_within(Command::new("podman").args(args), timeout)
        .unwrap_or_else(|| panic!("`podman {}` took over {timeout:?}", args.join(" ")));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `podman args` and fails the test, with podman's words, unless it succeeds.
fn podman_ok(args: &[&str], timeout: Duration) -> String {
    let (code, out, err) = podman(args, timeout);
    assert_eq!(
        code,
        Some(0),
        "`podman {}` failed:\n{out}{err}",
        args.join(" ")
    );
    out
}

/// A local image of steward-proxy under steward, removed on drop.
struct Image {
    tag: String,
}

impl Image {
    /// tests/podman/build-image.sh from the release binaries this test runs with.
    fn build(name: &str) -> Image {
        let tag = format!("localhost/steward-e2e-{}-{name}:latest", std::process::id());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("podman/build-image.sh");
        let release = bin("steward").parent().expect("release dir").to_path_buf();
        let out = output_within(
            Command::new("bash")
                .arg(script)
                .arg(&tag)
                .env("RELEASE_DIR", release),
            Duration::from_secs(120),
        )
        .expect("build-image.sh took over 120 s");
        let image = Image { tag };
        assert!(
            out.status.success(),
            "build-image.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.tag], Duration::from_secs(60));
    }
}

/// A container of an [`Image`], removed (killed if it still runs) on drop, even when the
/// test fails.
struct Container {
    name: String,
    /// steward-proxy's listener (6188 inside), published on the host's loopback.
    proxy: String,
}

impl Container {
    /// `podman run -d` of `image` with STEWARD_STOP_TIMEOUT=STOP_TIMEOUT; returns once
    /// steward reports the first generation serving.
    fn run(image: &Image, name: &str) -> Container {
        let name = format!("steward-e2e-{}-{name}", std::process::id());
        let proxy = format!("127.0.0.1:{}", free_port());
        // A container's limits cannot exceed those of the runtime podman starts, and
        // without CAP_SYS_RESOURCE (a sandbox may withhold it) runc cannot raise them: podman's
        // default open-file limit (1048576) is above this host's hard limit ("error setting
        // rlimit type 7: operation not permitted"), and podman runs with an nproc limit of
        // 32768, below which an explicit one must stay (type 6 otherwise).
        let (_, nofile) = getrlimit(Resource::RLIMIT_NOFILE).expect("RLIMIT_NOFILE");
        let (_, nproc) = getrlimit(Resource::RLIMIT_NPROC).expect("RLIMIT_NPROC");
        let nproc = nproc.min(32768);
        let c = Container {
            name: name.clone(),
            proxy: proxy.clone(),
        };
        podman_ok(
            &[
                // crun 1.8 refuses this host's hybrid cgroups ("cgroups in hybrid mode
                // not supported, drop all controllers from cgroupv2"); runc accepts them.
                "--runtime",
                "runc",
                "run",
                "-d",
                "--name",
                &name,
                "--ulimit",
                &format!("nofile={nofile}:{nofile}"),
                "--ulimit",
                &format!("nproc={nproc}:{nproc}"),
                "-p",
                &format!("{proxy}:6188"),
                "-e",
                &format!("STEWARD_STOP_TIMEOUT={STOP_TIMEOUT}"),
                &image.tag,
            ],
            Duration::from_secs(60),
        );
        c.wait_log("READY=1", Duration::from_secs(30));
        c
    }

    /// steward's log: the container's stdout and stderr, as `podman logs` shows them.
    fn logs(&self) -> String {
        let (_, out, err) = podman(&["logs", &self.name], Duration::from_secs(30));
        format!("{out}{err}")
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let log = self.logs();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} in the container's log within {timeout:?}:\n{log}"
            );
            // A steward that exited (a configuration error is 78) will not log it later.
            assert_eq!(
                self.inspect("{{.State.Running}}"),
                "true",
                "the container exited (code {}) before {needle:?}:\n{}",
                self.inspect("{{.State.ExitCode}}"),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `podman inspect --format` of the container.
    fn inspect(&self, format: &str) -> String {
        podman_ok(
            &["inspect", "--format", format, &self.name],
            Duration::from_secs(30),
        )
        .trim()
        .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(
            &["rm", "-f", "-t", "0", &self.name],
            Duration::from_secs(60),
        );
    }
}

#[test]
fn podman_stop_during_a_2_s_request_returns_its_response_and_steward_exits_0_before_the_timeout() {
    let test =
        "podman_stop_during_a_2_s_request_returns_its_response_and_steward_exits_0_before_the_timeout";
    if !podman_usable(test) {
        return;
    }
    let image = Image::build("stop");
    let c = Container::run(&image, "stop");
    let proxy = c.proxy.clone();
    let req = std::thread::spawn(move || http_get(&proxy, "/delay/2000", Duration::from_secs(30)));
    // The request is in steward-proxy's hands before the stop: the deadline (2 s) then
    // still covers the 1.5 s it has left.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let (code, out, err) = podman(
        &["stop", "-t", &STOP_TIMEOUT.to_string(), &c.name],
        Duration::from_secs(STOP_TIMEOUT + 30),
    );
    let took = t.elapsed();
    let log = c.logs();
    assert_eq!(code, Some(0), "podman stop:\n{out}{err}\nlog:\n{log}");
    let (status, body) = req
        .join()
        .expect("request thread")
        .unwrap_or_else(|e| panic!("the in-flight request failed: {e}; log:\n{log}"));
    assert_eq!(status, 200, "{body}\nlog:\n{log}");
    assert!(body.contains("slept 2000 ms"), "{body}");
    // 137 (and podman's "resorting to SIGKILL") is podman's kill at the timeout: steward
    // did not stop by itself.
    assert!(
        !err.contains("resorting to SIGKILL"),
        "podman stop:\n{err}\nlog:\n{log}"
    );
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "log:\n{log}");
    assert!(
        log.contains("steward exits with code 0"),
        "steward did not report its exit; log:\n{log}"
    );
    assert!(
        took < Duration::from_secs(STOP_TIMEOUT - 4),
        "podman stop took {took:?}, near the {STOP_TIMEOUT} s timeout; log:\n{log}"
    );
    println!("podman stop -t {STOP_TIMEOUT} took {took:?}; exit code 0");
}

#[test]
fn podman_kill_hup_reloads_to_a_new_child_with_every_request_served_and_pid_1_kept() {
    let test = "podman_kill_hup_reloads_to_a_new_child_with_every_request_served_and_pid_1_kept";
    if !podman_usable(test) {
        return;
    }
    let image = Image::build("reload");
    let c = Container::run(&image, "reload");
    let steward_pid = c.inspect("{{.State.Pid}}");
    let first = started_child_pids(&c.logs());
    assert_eq!(first.len(), 1, "log:\n{}", c.logs());

    // Requests one after another through the reload, each on a new connection.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, done, proxy) = (stop.clone(), done.clone(), c.proxy.clone());
        std::thread::spawn(move || {
            let mut results = vec![];
            while !stop.load(Ordering::SeqCst) {
                results.push(http_get(&proxy, "/", Duration::from_secs(10)));
                done.fetch_add(1, Ordering::SeqCst);
            }
            results
        })
    };
    let end = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < end, "no requests served before the reload");
        std::thread::sleep(Duration::from_millis(10));
    }
    podman_ok(&["kill", "-s", "HUP", &c.name], Duration::from_secs(30));
    let log = c.wait_log(
        &format!("generation 1 (child pid {}) retired", first[0]),
        Duration::from_secs(30),
    );
    // Some requests after the old generation has gone, so the new one served too.
    let after = done.load(Ordering::SeqCst) + 20;
    let end = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::SeqCst) < after && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    let results = load.join().expect("load thread");

    let children = started_child_pids(&log);
    assert_eq!(children.len(), 2, "log:\n{log}");
    let (old, new) = (children[0], children[1]);
    assert_ne!(old, new, "log:\n{log}");
    assert!(log.contains("reload done: generation 2 serves"), "{log}");
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the reload: {failed:?}\nlog:\n{log}",
        failed.len(),
        results.len()
    );
    let served: Vec<Option<i32>> = results
        .iter()
        .flatten()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            served_by_pid(body)
        })
        .collect();
    assert!(served.contains(&Some(old)), "none served by generation 1");
    assert!(served.contains(&Some(new)), "none served by generation 2");
    assert_eq!(c.inspect("{{.State.Pid}}"), steward_pid, "log:\n{log}");
    assert_eq!(c.inspect("{{.State.Running}}"), "true", "log:\n{log}");
    let status = podman_ok(
        &["exec", &c.name, "/usr/local/bin/steward", "status"],
        Duration::from_secs(30),
    );
    assert!(
        status.contains(&format!(
            "steward pid 1: serving, generation 2 (child pid {new})"
        )),
        "{status}"
    );
    println!(
        "reloaded from child pid {old} to {new}; {} requests, all 200",
        results.len()
    );
}
