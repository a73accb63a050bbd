//! What steward-pingora's drain watcher costs while a drain has many clients left.
//!
//! During a drain the watcher decides every 5 ms whether a client connection is left. The
//! exact answer scans every socket of the process (two calls each); at tens of thousands
//! of connections that scan alone can take most of a core. The watcher now skips the scan
//! while the services still serve more connections than the process's own (a client is
//! surely left) and scans at least every 100 ms (or every ten scan lengths, where a scan is
//! slow), and at every poll once the count is low.
//! One row per level: the share of one core the polling takes, and the scans, both ways.
//!
//! `cargo bench -p steward-pingora --bench drain-scan` (in `make bench`). Environment:
//! `DRAIN_LEVELS` (connections, default `1000,10000,19000`), `DRAIN_SECONDS` (window per
//! measurement, default 2). Each level opens that many connections, one end per process: the open-file limit (raised to the hard one) must exceed it.

use std::time::Duration;

fn main() {
    raise_nofile();
    let levels: Vec<usize> = std::env::var("DRAIN_LEVELS")
        .unwrap_or_else(|_| "1000,10000,19000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let seconds: f64 = std::env::var("DRAIN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let window = Duration::from_secs_f64(seconds);
    println!(
        "| clients left | every poll scans: core share | scans | throttled: core share | scans |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for n in levels {
        match steward_pingora::drain_poll_cost(n, window) {
            Ok([(every, every_scans), (throttled, throttled_scans)]) => println!(
                "| {n} | {:.1} % | {every_scans} | {:.1} % | {throttled_scans} |",
                100.0 * every.as_secs_f64() / seconds,
                100.0 * throttled.as_secs_f64() / seconds,
            ),
            Err(e) => println!("| {n} | (cannot open the connections: {e}) | | | |"),
        }
    }
}

/// The soft open-file limit raised to the hard one: each client is two sockets here.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
