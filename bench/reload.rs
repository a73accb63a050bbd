//! Throughput and latency across reloads, restarts and crashes: steward's reload, Pingora's
//! own upgrade as its docs describe it, a plain stop/start, and a crash under steward.
//! Reports, never asserts. Writes `bench/reload-latency.csv` for `bench/plot.py`.
//!
//! Every request is a new connection (`Connection: close`), so a refused connection shows
//! as such. A second table keeps the connections alive instead, as browsers and load
//! balancers do, across reloads of three children: a stock Pingora server, the same server
//! with steward-pingora (the crate's example), and steward-proxy. Run with `make bench`.

#[path = "../tests/e2e/common.rs"]
mod common;
mod report;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Kind, Setup};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use steward_e2e::*;

const CLIENTS: usize = 4;
/// The keep-alive table: persistent clients, reloads, and the time after each reload (and
/// before the first) while the clients go on.
const KEEP_ALIVE_CLIENTS: usize = 8;
const KEEP_ALIVE_RELOADS: u32 = 3;
const KEEP_ALIVE_PAUSE: Duration = Duration::from_secs(2);
const YAML: &str =
    "---\nversion: 1\nthreads: 2\ngrace_period_seconds: 2\ngraceful_shutdown_timeout_seconds: 1\n";

#[derive(Clone, Copy)]
enum Outcome {
    Ok,
    Refused,
    Failed,
}

struct Sample {
    at: f64,
    latency_ms: f64,
    outcome: Outcome,
    /// What went wrong, for a failed request (the bench prints a tally of these).
    error: Option<String>,
}

impl Sample {
    /// Whether this request had begun when an event at `event_at` (seconds from the
    /// origin) began, and ended after it: a kill -9 of the child necessarily cuts those.
    fn spans(&self, event_at: f64) -> bool {
        self.at <= event_at && self.at + self.latency_ms / 1000.0 >= event_at
    }
}

/// One event of a row: when its disruptive act began (the kill, the reload's request,
/// the SIGTERM) and how long it took.
struct Event {
    at: Instant,
    took_ms: f64,
}

/// Load on `addr` until `stop`; every sample timed from `origin`.
fn run_load(
    addr: String,
    stop: Arc<AtomicBool>,
    origin: Instant,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (addr, stop, samples) = (addr.clone(), stop.clone(), samples.clone());
                std::thread::spawn(move || {
                    let mut mine = vec![];
                    while !stop.load(Ordering::SeqCst) {
                        let t = Instant::now();
                        let (outcome, error) = match http_get(&addr, "/", Duration::from_secs(10)) {
                            Ok((200, _)) => (Outcome::Ok, None),
                            Err(e) if e.contains("refused") => (Outcome::Refused, None),
                            Ok((code, _)) => (Outcome::Failed, Some(format!("HTTP {code}"))),
                            Err(e) => (Outcome::Failed, Some(e)),
                        };
                        mine.push(Sample {
                            at: t.duration_since(origin).as_secs_f64(),
                            latency_ms: t.elapsed().as_secs_f64() * 1000.0,
                            outcome,
                            error,
                        });
                        if matches!(outcome, Outcome::Refused) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    if let Ok(mut s) = samples.lock() {
                        s.extend(mine);
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        Arc::try_unwrap(samples)
            .ok()
            .and_then(|m| m.into_inner().ok())
            .unwrap_or_default()
    })
}

struct Row {
    name: &'static str,
    samples: Vec<Sample>,
    seconds: f64,
    /// Each event's start, in seconds from the origin, and how long it took.
    events: Vec<(f64, f64)>,
}

impl Row {
    /// Failed requests split in two: those in flight when an event began (a kill -9 of
    /// the child cuts them, whatever the supervisor does) and all others (begun after
    /// the event began, or failed away from any event), which steward must keep at 0.
    fn failures(&self) -> (Vec<&Sample>, Vec<&Sample>) {
        self.samples
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed))
            .partition(|s| self.events.iter().any(|&(at, _)| s.spans(at)))
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn print_row(r: &Row) {
    let mut lat: Vec<f64> = r
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Ok))
        .map(|s| s.latency_ms)
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let refused = r
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Refused))
        .count();
    let (cut, failed) = r.failures();
    let events = if r.events.is_empty() {
        "-".to_string()
    } else {
        r.events
            .iter()
            .map(|(_, m)| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
        r.name,
        lat.len() as f64 / r.seconds,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        cut.len(),
        failed.len(),
        refused,
        events
    );
    // What each failure was, and when it began and ended around the nearest event: a
    // request cut by a kill began before it and ended within milliseconds after it.
    for (what, list) in [("in flight at the event", cut), ("other", failed)] {
        for smp in list {
            let at = r
                .events
                .iter()
                .map(|&(at, _)| at)
                .min_by(|a, b| (a - smp.at).abs().total_cmp(&(b - smp.at).abs()))
                .unwrap_or(f64::NAN);
            eprintln!(
                "{}: failed, {what}: {} (began {:.1} ms before the event, ended {:.1} ms after)",
                r.name,
                smp.error.as_deref().unwrap_or("?"),
                (at - smp.at) * 1000.0,
                (smp.at + smp.latency_ms / 1000.0 - at) * 1000.0
            );
        }
    }
}

/// An event whose disruptive act begins now: `act` runs, then `until` (waiting for
/// its effect); the event took both.
fn event_now(act: impl FnOnce(), until: impl FnOnce()) -> Event {
    let at = Instant::now();
    act();
    until();
    Event {
        at,
        took_ms: at.elapsed().as_secs_f64() * 1000.0,
    }
}

/// Load for `seconds`, with `event` run at 1 s and then every `every` seconds.
fn measure(
    name: &'static str,
    addr: &str,
    seconds: f64,
    every: f64,
    mut event: impl FnMut() -> Event,
) -> Row {
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let load = run_load(addr.to_string(), stop.clone(), origin);
    let mut events = vec![];
    std::thread::sleep(Duration::from_secs(1));
    while origin.elapsed().as_secs_f64() + every < seconds {
        let e = event();
        events.push((e.at.duration_since(origin).as_secs_f64(), e.took_ms));
        let next = Duration::from_secs_f64(every);
        std::thread::sleep(next.saturating_sub(Duration::from_millis(e.took_ms as u64)));
    }
    std::thread::sleep(Duration::from_secs_f64(
        (seconds - origin.elapsed().as_secs_f64()).max(0.5),
    ));
    stop.store(true, Ordering::SeqCst);
    let samples = load.join().unwrap_or_default();
    Row {
        name,
        samples,
        seconds: origin.elapsed().as_secs_f64(),
        events,
    }
}

fn steward_setup(handoff: &str) -> Setup {
    let mut s = Setup::start_handoff(Kind::StewardProxy, YAML, Some(handoff));
    s.wait_ready();
    s
}

/// `steward reload`; a failure is printed (as `what`), and shows in the row's figures.
fn reload(control: &std::path::Path, what: &str) {
    let (code, out) = steward_cli("reload", control);
    if code != Some(0) {
        eprintln!("{what} failed: {out}");
    }
}

/// `BENCH_ONLY=crash` (a part of a row's key) runs only the rows it names; unset, all.
fn wanted(key: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| key.contains(&only))
}

fn main() {
    let load = report::load_average();
    let mut rows = vec![];

    if wanted("steady reload crash-upgrade") {
        let s = steward_setup("upgrade");
        let addr = s.proxy.clone();
        if wanted("steady") {
            rows.push(measure("steady (no event)", &addr, 4.0, 100.0, || {
                event_now(|| (), || ())
            }));
        }
        if wanted("reload") {
            let control = s.control();
            rows.push(measure(
                "steward reload (every 2 s)",
                &addr,
                9.0,
                2.0,
                || event_now(|| reload(&control, "reload"), || ()),
            ));
        }
        if wanted("crash-upgrade") {
            rows.push(crash(
                &s,
                "crash (kill -9 of the child) under steward, once",
            ));
        }
        s.stop();
    }
    if wanted("crash-inherit") {
        let s = steward_setup("inherit");
        rows.push(crash(
            &s,
            "the same crash with `child.handoff = \"inherit\"`",
        ));
        s.stop();
    }

    if wanted("steward-upgrade") {
        rows.push(steward_upgrade());
    }
    if wanted("pingora-upgrade") {
        rows.push(pingora_upgrade());
    }
    if wanted("stop-start") {
        rows.push(stop_start());
    }

    println!(
        "clients: {CLIENTS}, a new connection per request; machine: {}; load average at the start: {load}",
        report::machine()
    );
    println!();
    println!(
        "| scenario | req/s | p50 ms | p99 ms | max ms | failed: in flight at the event | failed: others | refused | event took (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        print_row(r);
    }
    if wanted("keep-alive") {
        keep_alive_table();
    }
    // A partial run would leave bench/plot.py only its rows.
    if std::env::var_os("BENCH_ONLY").is_none() {
        write_csv(&rows);
    }
}

/// A kill -9 of steward's child under load, once; the event lasts until a request on a
/// fresh connection is served again.
fn crash(s: &Setup, name: &'static str) -> Row {
    let addr = s.proxy.clone();
    measure(name, &addr, 6.0, 4.0, || {
        // The pid first: the event begins with the kill itself, so that a request is
        // counted as in flight at the kill only if it was.
        let (_, pid) = s.generation();
        event_now(
            || {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            },
            || {
                while http_get(&addr, "/", Duration::from_secs(5)).map(|r| r.0) != Ok(200) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            },
        )
    })
}

fn keep_alive_table() {
    println!();
    println!(
        "keep-alive: {KEEP_ALIVE_CLIENTS} clients, each a persistent HTTP/1.1 connection (a new one after `Connection: close` or an error), {KEEP_ALIVE_RELOADS} steward reloads {} s apart",
        KEEP_ALIVE_PAUSE.as_secs()
    );
    println!();
    println!(
        "| child under steward | requests | answered with Connection: close | errors | refused |"
    );
    println!("|---|---|---|---|---|");
    for (name, kind) in [
        ("stock Pingora 0.9.1 server", Kind::StockPingora),
        ("the same server with steward-pingora", Kind::Library),
        ("steward-proxy", Kind::StewardProxy),
    ] {
        let mut s = Setup::start_handoff(kind, YAML, None);
        s.wait_ready();
        let c = s.keep_alive_reloads(KEEP_ALIVE_CLIENTS, KEEP_ALIVE_RELOADS, KEEP_ALIVE_PAUSE);
        println!(
            "| {name} | {} | {} | {} | {} |",
            c.ok + c.errors.len() as u64,
            c.closed,
            c.errors.len(),
            c.refused
        );
        for e in c.errors.iter().take(3) {
            eprintln!("{name}: {e}");
        }
        s.stop();
    }
}

/// Every sample, for `bench/plot.py`.
fn write_csv(rows: &[Row]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/reload-latency.csv");
    if let Ok(mut f) = std::fs::File::create(&path) {
        let _ = writeln!(f, "scenario,t_s,latency_ms,outcome");
        for r in rows {
            let (cut, _) = r.failures();
            for smp in &r.samples {
                let o = match smp.outcome {
                    Outcome::Ok => "ok",
                    Outcome::Refused => "refused",
                    Outcome::Failed if cut.iter().any(|c| std::ptr::eq(*c, smp)) => "cut",
                    Outcome::Failed => "failed",
                };
                // CSV quoting: a quote inside the name is doubled.
                let name = r.name.replace('"', "\"\"");
                let _ = writeln!(f, "\"{name}\",{:.4},{:.3},{o}", smp.at, smp.latency_ms);
            }
        }
        println!("\nsamples: {}", path.display());
    }
}

/// steward itself upgraded in place: its binary replaced on disk (a new file renamed over
/// it, as a package does), then `steward reload`, which re-executes steward with the same
/// pid and then reloads the child.
fn steward_upgrade() -> Row {
    let bins = Scratch::new("steward-upgrade");
    let program = bins.path.join("steward");
    std::fs::copy(bin("steward"), &program).expect("install steward");
    let mut s = Setup::start_opts(
        Kind::StewardProxy,
        YAML,
        "",
        true,
        "",
        common::Opts {
            program: Some(&program),
            ..common::Opts::default()
        },
    );
    s.wait_ready();
    let (addr, control, pid) = (s.proxy.clone(), s.control(), s.steward.pid());
    let row = measure(
        "steward upgraded in place (binary replaced, then reload; every 2 s)",
        &addr,
        9.0,
        2.0,
        || {
            event_now(
                || {
                    let new = program.with_extension("new");
                    std::fs::copy(bin("steward"), &new).expect("copy");
                    std::fs::rename(&new, &program).expect("rename");
                    reload(&control, "upgrade");
                },
                || (),
            )
        },
    );
    let upgrades = s.steward.log_text().matches("re-executed in place").count();
    if upgrades == 0 || !process_alive(pid) {
        eprintln!(
            "steward upgrade: {upgrades} re-execs seen; steward pid {pid} alive: {}",
            process_alive(pid)
        );
    }
    s.stop();
    row
}

/// Pingora's documented upgrade: SIGQUIT to the old process, the new one started with -u.
fn pingora_upgrade() -> Row {
    let scratch = Scratch::new("pingora-upgrade");
    let origin = Origin::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let yaml = scratch.write(
        "pingora.yaml",
        &format!(
            "{YAML}upgrade_sock: {}/upgrade.sock\n",
            scratch.path.display()
        ),
    );
    let start = |upgrade: bool| {
        let mut c = Command::new(bin("stock-pingora"));
        if upgrade {
            c.arg("-u");
        }
        c.arg("-c")
            .arg(&yaml)
            .env("STOCK_LISTEN", &listen)
            .env("STOCK_UPSTREAM", &origin.addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stock-pingora")
    };
    let current = Arc::new(Mutex::new(start(false)));
    assert!(wait_accepting(&listen, Duration::from_secs(10)));
    let mut retired = vec![];
    let row = measure(
        "Pingora's own upgrade (SIGQUIT old, -u new; every 2 s)",
        &listen,
        9.0,
        2.0,
        || {
            event_now(
                || {
                    let mut cur = current.lock().expect("lock");
                    let _ = kill(Pid::from_raw(cur.id() as i32), Signal::SIGQUIT);
                    let new = start(true);
                    retired.push(std::mem::replace(&mut *cur, new));
                },
                || (),
            )
        },
    );
    let mut cur = current.lock().expect("lock");
    let _ = cur.kill();
    let _ = cur.wait();
    for mut r in retired {
        let _ = r.kill();
        let _ = r.wait();
    }
    row
}

/// A plain restart: stop steward (no owned sockets), start a new one.
fn stop_start() -> Row {
    // No `[sockets]`: steward-proxy binds its own listeners.
    let mut s = Setup::start(Kind::StewardProxy, YAML, "");
    s.wait_ready();
    let addr = s.proxy.clone();
    let config = s.scratch.path.join("steward.toml");
    let dir = s.scratch.path.clone();
    let notify = s.notify.path.display().to_string();
    measure(
        "plain stop/start (no steward-owned sockets; every 2 s)",
        &addr,
        9.0,
        2.0,
        || {
            event_now(
                || {
                    s.steward.signal(Signal::SIGTERM);
                    let _ = s.steward.wait(Duration::from_secs(10));
                    s.steward = Steward::start(&dir, &config, &[("NOTIFY_SOCKET", notify.clone())]);
                },
                || {
                    while http_get(&addr, "/", Duration::from_secs(5)).map(|r| r.0) != Ok(200) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                },
            )
        },
    )
}
