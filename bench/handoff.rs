//! How long a generation takes to serve, by how it gets steward's listeners
//! (`child.handoff`): start to READY, crash to serving again, and `steward reload`
//! returning. Median of `BENCH_RUNS` runs (default 10). Reports, never asserts.
//! Run with `make bench` (or `cargo bench -p steward-e2e --bench handoff`).
//!
//! "upgrade" is Pingora's own `-u` hand-off, the only one a stock Pingora binary takes:
//! its receiver (pingora-core 0.9.1 `server/transfer_fd`, `accept_with_retry_timeout`)
//! sleeps a whole second when its first non-blocking `accept()` finds nobody connected
//! yet, and steward, which can only connect once the socket exists, practically always
//! comes after that first `accept()`. "inherit" leaves steward's sockets open across exec
//! for a server built with steward-pingora (steward-proxy).

#[path = "../tests/e2e/common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Kind, Opts, Setup, USER_YAML};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use steward_e2e::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn start(kind: Kind, handoff: &'static str) -> Setup {
    Setup::start_opts(
        kind,
        USER_YAML,
        "",
        true,
        "",
        Opts {
            handoff: Some(handoff),
            ..Opts::default()
        },
    )
}

fn stop(mut s: Setup) {
    s.steward.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
}

/// steward started to its `READY=1` datagram.
fn start_to_ready(kind: Kind, handoff: &'static str) -> f64 {
    let t = Instant::now();
    let mut s = start(kind, handoff);
    let Some(ready) = s.notify.wait_for("READY=1", Duration::from_secs(20)) else {
        panic!("no READY=1; log:\n{}", s.steward.log_text())
    };
    let v = ms(ready.saturating_duration_since(t));
    stop(s);
    v
}

/// SIGKILL to the child to the 200 of a request on a fresh connection made right after
/// it (it waits in the backlog of steward's socket for the next generation).
fn crash_to_serving(kind: Kind, handoff: &'static str) -> f64 {
    let mut s = start(kind, handoff);
    s.wait_ready();
    let v = status_json(&s.control());
    let pid = v["status"]["child_pid"].as_i64().expect("child pid") as i32;
    let t = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 the child");
    let served = loop {
        match http_get(&s.proxy, "/", Duration::from_secs(10)) {
            Ok((200, _)) => break Instant::now(),
            // Refused or cut: not expected (steward holds the socket); try again.
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let v = ms(served - t);
    stop(s);
    v
}

/// `steward reload` until it returns (the new generation serves).
fn reload_returns(kind: Kind, handoff: &'static str) -> f64 {
    let mut s = start(kind, handoff);
    s.wait_ready();
    let t = Instant::now();
    s.reload(1);
    let v = ms(t.elapsed());
    stop(s);
    v
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let row = |name: &str, target: &str, f: &dyn Fn() -> f64| {
        let v: Vec<f64> = (0..runs).map(|_| f()).collect();
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "| {name} | {:.1} ms | {:.1} .. {:.1} ms | {target} |",
            median(v),
            min,
            max
        );
    };
    println!("runs per row: {runs}");
    println!();
    println!("| measure | median | min .. max | target |");
    println!("|---|---|---|---|");
    let cases = [
        (
            "steward-proxy, handoff = \"inherit\"",
            Kind::StewardProxy,
            "inherit",
        ),
        (
            "steward-proxy, handoff = \"upgrade\"",
            Kind::StewardProxy,
            "upgrade",
        ),
        (
            "stock Pingora, handoff = \"upgrade\"",
            Kind::StockPingora,
            "upgrade",
        ),
    ];
    for (what, kind, handoff) in cases {
        let fast = handoff == "inherit";
        row(
            &format!("start to READY=1, {what}"),
            if fast { "<= 100 ms" } else { "-" },
            &|| start_to_ready(kind, handoff),
        );
        row(
            &format!("kill -9 of the child to a request served, {what}"),
            if fast { "<= 150 ms" } else { "-" },
            &|| crash_to_serving(kind, handoff),
        );
        row(
            &format!("`steward reload` returning, {what}"),
            if fast { "<= 300 ms" } else { "-" },
            &|| reload_returns(kind, handoff),
        );
    }
}
