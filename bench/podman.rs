//! steward as PID 1 under podman, as etc/container ships it (`child.handoff = "inherit"`),
//! reloaded with `podman kill -s HUP`: the time from steward's record of the SIGHUP
//! (`SIGHUP: reload requested`) to its record `reload done: generation N serves`, both by
//! steward's own log timestamps, so podman's own latency is not in it. `BENCH_RUNS`
//! reloads (default 10) of one container. Reports, never asserts. Needs root, podman and
//! runc, as tests/e2e/podman.rs does; prints SKIPPED otherwise.
//! Run with `make bench` (or `cargo bench -p steward-e2e --bench podman`).

#[path = "../tests/e2e/podman_common.rs"]
mod podman_common;
mod report;

use std::cell::Cell;
use std::time::Duration;

use podman_common::{podman_ok, podman_usable, Container, Image};
use report::MedianTable;

/// Seconds since midnight (UTC) of a log line that starts with steward's RFC 3339
/// timestamp (`2026-11-30T19:44:34.269619Z ...`).
fn logged_at(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split_once('T')?.1;
    let time = time.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// When the `nth` (from 1) line of `log` containing `needle` was logged.
fn nth_logged(log: &str, needle: &str, nth: usize) -> Option<f64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .nth(nth - 1)
        .and_then(logged_at)
}

fn main() {
    if !podman_usable("bench podman") {
        return;
    }
    let image = Image::build("bench");
    let c = Container::run(&image, "bench");
    let table = MedianTable::start(&format!(
        " (reloads of one container); machine: {}; load average at the start: {}",
        report::machine(),
        report::load_average()
    ));
    let reloads = Cell::new(0);
    table.row(
        "`podman kill -s HUP` of steward as PID 1: SIGHUP to `reload done` (steward's log)",
        "-",
        || {
            let n = reloads.get() + 1;
            reloads.set(n);
            podman_ok(&["kill", "-s", "HUP", &c.name], Duration::from_secs(30));
            let log = c.wait_log(
                &format!("reload done: generation {} serves", n + 1),
                Duration::from_secs(30),
            );
            let hup = nth_logged(&log, "SIGHUP: reload requested", n);
            let done = nth_logged(&log, "reload done: generation", n);
            match (hup, done) {
                // A reload across midnight: the clock went round once.
                (Some(hup), Some(done)) => (done - hup).rem_euclid(86_400.0) * 1000.0,
                _ => panic!("no timestamps for reload {n} in the log:\n{log}"),
            }
        },
    );
}
