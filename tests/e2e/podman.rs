//! A real container engine: rootful podman runs steward as PID 1 of an image built from
//! this checkout's release binaries and etc/container's configuration
//! (tests/podman/build-image.sh), and stops and reloads it as an operator would, with
//! `podman stop` and `podman kill -s HUP`; requests go through podman's published ports.
//!
//! Needs root and podman with runc (`scripts/setup` installs both under CI=true).
//! Elsewhere the tests print SKIPPED with the reason; under CI=true a missing or unusable
//! podman fails them, since CI runs as root and a skip would hide the container story.

mod podman_common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podman_common::{podman, podman_ok, podman_usable, Container, Image, STOP_TIMEOUT};
use steward_e2e::*;

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
