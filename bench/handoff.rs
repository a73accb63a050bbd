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
mod report;

use std::time::{Duration, Instant};

use common::{Kind, Setup, USER_YAML};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use report::{ms, MedianTable};
use steward_e2e::*;

fn start(kind: Kind, handoff: &'static str) -> Setup {
    Setup::start_handoff(kind, USER_YAML, Some(handoff))
}

/// steward started to its `READY=1` datagram.
fn start_to_ready(kind: Kind, handoff: &'static str) -> f64 {
    let t = Instant::now();
    let mut s = start(kind, handoff);
    let Some(ready) = s.notify.wait_for("READY=1", Duration::from_secs(20)) else {
        panic!("no READY=1; log:\n{}", s.steward.log_text())
    };
    let v = ms(ready.saturating_duration_since(t));
    s.stop();
    v
}

/// SIGKILL to the child to the 200 of a request on a fresh connection made right after
/// it (it waits in the backlog of steward's socket for the next generation).
fn crash_to_serving(kind: Kind, handoff: &'static str) -> f64 {
    let mut s = start(kind, handoff);
    s.wait_ready();
    let (_, pid) = s.generation();
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
    s.stop();
    v
}

/// `steward reload` until it returns (the new generation serves).
fn reload_returns(kind: Kind, handoff: &'static str) -> f64 {
    let mut s = start(kind, handoff);
    s.wait_ready();
    let t = Instant::now();
    s.reload(1);
    let v = ms(t.elapsed());
    s.stop();
    v
}

fn main() {
    let table = MedianTable::start("");
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
        table.row(
            &format!("start to READY=1, {what}"),
            if fast { "<= 100 ms" } else { "-" },
            || start_to_ready(kind, handoff),
        );
        table.row(
            &format!("kill -9 of the child to a request served, {what}"),
            if fast { "<= 150 ms" } else { "-" },
            || crash_to_serving(kind, handoff),
        );
        table.row(
            &format!("`steward reload` returning, {what}"),
            if fast { "<= 300 ms" } else { "-" },
            || reload_returns(kind, handoff),
        );
    }
}
