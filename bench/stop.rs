//! Stop and start numbers for the README: median of N runs each, printed as a table.
//! Reports, never asserts. Run with `make bench` (or `cargo bench -p steward-e2e`).
//!
//! `BENCH_RUNS` (default 10) sets the run count; `BENCH_PINGORA_ALONE=1` also measures a
//! stock Pingora with the user's YAML stopped without steward (takes its full 300 s).

#[path = "../tests/e2e/common.rs"]
mod common;
mod report;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kind, Setup, USER_YAML};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use report::{machine, ms, MedianTable};
use steward_e2e::*;

fn idle_stop(kind: Kind) -> f64 {
    let mut s = Setup::start(kind, USER_YAML, "");
    s.wait_ready();
    let t = Instant::now();
    s.steward.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
    ms(t.elapsed())
}

fn drain_overshoot(kind: Kind) -> f64 {
    let mut s = Setup::start(kind, USER_YAML, "");
    s.wait_ready();
    let req = s.slow_request(1000);
    std::thread::sleep(Duration::from_millis(200));
    s.steward.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
    let exited = Instant::now();
    let (_, done) = req.join().expect("request");
    ms(exited.saturating_duration_since(done))
}

fn deadline_precision(kind: Kind) -> f64 {
    let mut s = Setup::start(kind, USER_YAML, "deadline = \"1s\"");
    s.wait_ready();
    let _req = s.slow_request(10_000);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    s.steward.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
    ms(t.elapsed()) - 1000.0
}

/// READY=1 minus the moment the child's port first accepted a connection.
fn ready_after_accept() -> f64 {
    let mut s = Setup::start(Kind::StockPingora, USER_YAML, "");
    let accepted = loop {
        if std::net::TcpStream::connect(&s.proxy).is_ok() {
            break Instant::now();
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let ready = s
        .notify
        .wait_for("READY=1", Duration::from_secs(20))
        .expect("READY");
    let v = if ready > accepted {
        ms(ready - accepted)
    } else {
        -ms(accepted - ready)
    };
    s.steward.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
    v
}

fn rss_and_cpu() -> (f64, f64) {
    let mut s = Setup::start(Kind::StewardProxy, USER_YAML, "");
    s.wait_ready();
    let pid = s.steward.pid();
    let ticks = |pid: i32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("").to_string();
        let f: Vec<&str> = after.split_whitespace().collect();
        f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
    };
    let t0 = ticks(pid);
    std::thread::sleep(Duration::from_secs(5));
    let t1 = ticks(pid);
    let hz = 100.0;
    let cpu_pct = (t1 - t0) as f64 / hz / 5.0 * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    s.steward.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
    (rss_kb / 1024.0, cpu_pct)
}

/// Stock Pingora with the user's YAML, stopped with SIGTERM and no steward: the problem.
fn pingora_alone() -> f64 {
    let scratch = Scratch::new("alone");
    let origin = Origin::start();
    let yaml = scratch.write("pingora.yaml", USER_YAML);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(bin("stock-pingora"))
        .arg("-c")
        .arg(&yaml)
        .env("STOCK_LISTEN", &listen)
        .env("STOCK_UPSTREAM", &origin.addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(wait_accepting(&listen, Duration::from_secs(10)));
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("kill");
    let _ = child.wait();
    ms(t.elapsed())
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let table = MedianTable::start(&format!("; machine: {}", machine()));
    table.row(
        "idle stop, steward-proxy child (SIGTERM to steward's exit)",
        "< 100 ms",
        || idle_stop(Kind::StewardProxy),
    );
    table.row("idle stop, stock Pingora child", "< 250 ms", || {
        idle_stop(Kind::StockPingora)
    });
    table.row(
        "drain overshoot after the last response, steward-proxy",
        "< 100 ms",
        || drain_overshoot(Kind::StewardProxy),
    );
    table.row(
        "drain overshoot after the last response, stock Pingora",
        "< 100 ms",
        || drain_overshoot(Kind::StockPingora),
    );
    table.row(
        "deadline precision (exit minus 1 s deadline), steward-proxy",
        "within 50 ms",
        || deadline_precision(Kind::StewardProxy),
    );
    table.row(
        "deadline precision (exit minus 1 s deadline), stock Pingora",
        "within 50 ms",
        || deadline_precision(Kind::StockPingora),
    );
    table.row(
        "READY=1 after the port first accepts (stock Pingora, tcp probe)",
        "< 100 ms",
        ready_after_accept,
    );
    let (rss, cpu) = rss_and_cpu();
    println!("| steward RSS while serving | {rss:.1} MiB | - | < 8 MiB |");
    println!("| steward CPU while idle (5 s) | {cpu:.2} % | - | ~0 |");
    if std::env::var_os("BENCH_PINGORA_ALONE").is_some() {
        let v = pingora_alone();
        println!(
            "| Pingora alone, same YAML, SIGTERM to exit (1 run) | {:.1} s | - | (the problem) |",
            v / 1000.0
        );
    } else {
        println!("| Pingora alone, same YAML, SIGTERM to exit | 300 s (grace_period_seconds; BENCH_PINGORA_ALONE=1 measures it) | - | (the problem) |");
    }
}
