//! steward on a busy host: a stock Pingora child under steward while `conn-holder`
//! processes keep 0, 20k, 50k and 100k established loopback TCP connections open (2 kernel
//! sockets each). What a host's other sockets cost steward: false health failures, CPU,
//! `steward status` latency, READY latency, drain overshoot and idle stop, one row per
//! level. Reports, never asserts. Writes `bench/scale.csv` for `bench/plot-scale.py`.
//!
//! Run with `make bench`, or `cargo bench -p steward-e2e --bench scale`. Environment:
//! `SCALE_LEVELS` (connections per level, default `0,20000,50000,100000`), `SCALE_SECONDS`
//! (health window at `health.interval = 200ms`, default 30), `SCALE_CPU_SECONDS` (CPU window
//! at the default interval, default 15), `SCALE_STEWARD` (the steward binary to measure,
//! default `target/release/steward`: a copy of an older build gives "before" figures).

#[path = "../tests/e2e/common.rs"]
mod common;
mod report;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::USER_YAML;
use nix::sys::signal::Signal;
use report::load_average;
use steward_e2e::*;

const DEFAULT_LEVELS: [usize; 4] = [0, 20_000, 50_000, 100_000];
const STATUS_CALLS: usize = 50;
const STATUS_GAP: Duration = Duration::from_millis(100);
/// The status phase stops here even when fewer calls were made (slow replies).
const STATUS_BUDGET: Duration = Duration::from_secs(20);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP sockets beyond the holders' that make a level's row suspect.
const FOREIGN_SOCKETS: u64 = 2_000;
/// Between READY and a measured window: the readiness probe's own work is over.
const SETTLE: Duration = Duration::from_secs(2);

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn levels() -> Vec<usize> {
    match std::env::var("SCALE_LEVELS") {
        Ok(v) => v
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("SCALE_LEVELS: {n:?} is not a number"))
            })
            .collect(),
        Err(_) => DEFAULT_LEVELS.to_vec(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One level's figures; NaN where a phase could not be measured (see `notes`).
#[derive(Default)]
struct Level {
    connections: usize,
    tcp_entries: u64,
    holders_up_s: f64,
    health_failures: f64,
    /// Health probes made (passed + failed) by the end of the window, when steward's
    /// status counts them (builds before the count have none).
    health_probes: f64,
    replacements: f64,
    ready_ms: [f64; 2],
    status_p50_ms: f64,
    status_max_ms: f64,
    status_calls: usize,
    cpu_200ms: f64,
    cpu_2s: f64,
    overshoot_ms: f64,
    idle_stop_ms: f64,
    /// The 1-minute load average once the level is measured: other work on two cores
    /// skews the timings.
    load: String,
    notes: Vec<String>,
}

impl Level {
    fn new(connections: usize) -> Level {
        Level {
            connections,
            health_failures: f64::NAN,
            health_probes: f64::NAN,
            replacements: f64::NAN,
            ready_ms: [f64::NAN; 2],
            status_p50_ms: f64::NAN,
            status_max_ms: f64::NAN,
            cpu_200ms: f64::NAN,
            cpu_2s: f64::NAN,
            overshoot_ms: f64::NAN,
            idle_stop_ms: f64::NAN,
            ..Level::default()
        }
    }
}

/// steward supervising a stock Pingora child that proxies to a local [`Origin`].
struct Run {
    scratch: Scratch,
    steward: Steward,
    notify: NotifySocket,
    proxy: String,
    _origin: Origin,
}

impl Run {
    /// `health`: the `[health]` table's lines, empty for the defaults.
    fn start(health: &str) -> Run {
        let scratch = Scratch::new("scale");
        let notify = NotifySocket::bind(&scratch.path);
        let origin = Origin::start();
        let proxy = format!("127.0.0.1:{}", free_port());
        let yaml = scratch.write("pingora.yaml", USER_YAML);
        let config = scratch.write(
            "steward.toml",
            &format!(
                "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\npingora_conf = \"{}\"\n[ready]\ntcp = \"{proxy}\"\ntimeout = \"{}s\"\n[health]\n{health}\n",
                scratch.path.display(),
                bin("stock-pingora").display(),
                yaml.display(),
                READY_TIMEOUT.as_secs()
            ),
        );
        let env = [
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("STOCK_LISTEN", proxy.clone()),
            ("STOCK_UPSTREAM", origin.addr.clone()),
        ];
        let steward = start_steward(&scratch.path, &config, &env);
        Run {
            scratch,
            steward,
            notify,
            proxy,
            _origin: origin,
        }
    }

    fn control(&self) -> PathBuf {
        self.scratch.path.join("run/control.sock")
    }

    fn exited(&mut self) -> bool {
        !matches!(self.steward.child.try_wait(), Ok(None))
    }

    /// Waits for READY=1; the spawn-to-READY time steward logs, or why there is none.
    fn wait_ready(&mut self) -> Result<f64, String> {
        let end = Instant::now() + READY_TIMEOUT + Duration::from_secs(10);
        loop {
            if self
                .notify
                .wait_for("READY=1", Duration::from_millis(100))
                .is_some()
            {
                break;
            }
            if self.exited() {
                return Err(format!("steward exited before READY: {}", self.log_tail()));
            }
            if Instant::now() >= end {
                return Err(format!("no READY=1 in {READY_TIMEOUT:?}"));
            }
        }
        // The line may reach the log file a moment after the datagram left.
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(v) = ready_after_spawn(&self.steward.log_text()) {
                return Ok(v);
            }
            if Instant::now() >= end {
                return Err("READY=1 came, but no \"passed N ms after spawn\" in the log".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        let log = self.steward.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }
}

/// As [`Steward::start`], and steward gets SIGTERM when this bench dies: a bench killed
/// mid-level leaves no steward (and so no child) behind, as it leaves no holder.
fn start_steward(dir: &Path, config: &Path, env: &[(&str, String)]) -> Steward {
    use std::os::unix::process::CommandExt;
    let log = dir.join("steward.log");
    let stderr = std::fs::File::create(&log).expect("create steward.log");
    let mut cmd = Command::new(steward_path());
    cmd.args(["run", "--log-target", "stderr", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)));
    // SAFETY: runs between fork and exec; prctl is async-signal-safe and reads no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn steward");
    Steward {
        child,
        log,
        started,
    }
}

/// "... passed 123 ms after spawn); READY=1" in steward's log.
fn ready_after_spawn(log: &str) -> Option<f64> {
    log.lines().filter(|l| l.contains("READY=1")).find_map(|l| {
        let before = l.split(" ms after spawn").next()?;
        if before.len() == l.len() {
            return None;
        }
        before.rsplit("passed ").next()?.trim().parse().ok()
    })
}

/// utime + stime of `pid` (every thread), in clock ticks.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `pid`'s CPU over `window`, in % of one core.
fn cpu_percent(pid: i32, window: Duration) -> Option<f64> {
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t0 = cpu_ticks(pid)?;
    let start = Instant::now();
    std::thread::sleep(window);
    let t1 = cpu_ticks(pid)?;
    Some((t1.saturating_sub(t0)) as f64 / hz / start.elapsed().as_secs_f64() * 100.0)
}

/// One `status` round trip on the control socket, as `steward status` makes it: connect,
/// send the line, read the JSON line back. Its time and the reply.
fn status_round_trip(socket: &Path) -> Result<(Duration, String), String> {
    let t = Instant::now();
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(b"status\n").map_err(|e| format!("send: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let took = t.elapsed();
    if line.contains("\"ok\":true") {
        Ok((took, line))
    } else {
        Err(format!("reply {:?}", line.trim()))
    }
}

/// `status.health.passed + failed` in a status reply; NaN when the reply has no count.
fn health_probes(reply: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap_or_default();
    let h = &v["status"]["health"];
    match (h["passed"].as_u64(), h["failed"].as_u64()) {
        (Some(p), Some(f)) => (p + f) as f64,
        _ => f64::NAN,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// TCP sockets in the kernel's tables (IPv4 and IPv6, TIME_WAIT included): the rows a
/// reader of /proc/net/tcp{,6} goes through.
fn tcp_entries() -> u64 {
    let field = |file: &str, proto: &str, key: &str| -> u64 {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| {
                let line = t.lines().find(|l| l.starts_with(proto))?.to_string();
                let mut it = line.split_whitespace();
                it.position(|w| w == key)?;
                it.next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    field("/proc/net/sockstat", "TCP:", "inuse")
        + field("/proc/net/sockstat", "TCP:", "tw")
        + field("/proc/net/sockstat6", "TCP6:", "inuse")
}

fn read_num(path: &str, index: usize) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .nth(index)?
        .parse()
        .ok()
}

/// What the host must allow for `n` more connections; each missing item with the sysctl
/// that would grant it. Nothing is changed here: the operator decides.
fn preflight(n: usize) -> Vec<String> {
    let mut need = vec![];
    if n == 0 {
        return need;
    }
    let n = n as u64;
    // Two descriptors (files) per connection, system-wide.
    if let (Some(used), Some(max)) = (
        read_num("/proc/sys/fs/file-nr", 0),
        read_num("/proc/sys/fs/file-nr", 2),
    ) {
        if used + 2 * n + 10_000 > max {
            need.push(format!(
                "sysctl -w fs.file-max={} ({used} files open, {max} allowed)",
                used + 2 * n + 10_000
            ));
        }
    }
    // With connection tracking active, each loopback connection takes an entry; past the
    // maximum new connections (steward's probes included) are dropped.
    if let (Some(count), Some(max)) = (
        read_num("/proc/sys/net/netfilter/nf_conntrack_count", 0),
        read_num("/proc/sys/net/netfilter/nf_conntrack_max", 0),
    ) {
        if count + n + 10_000 > max {
            need.push(format!(
                "sysctl -w net.netfilter.nf_conntrack_max={} ({count} tracked, {max} allowed)",
                count + n + 10_000
            ));
        }
    }
    // An idle connection (2 sockets, 2 open files) costs 5 to 10 KiB of kernel memory
    // (MemAvailable and Slab measured around one conn-holder of 10k); ask for the upper
    // figure and a margin.
    let avail_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    });
    if let Some(kib) = avail_kib {
        if kib < n * 10 + 512 * 1024 {
            need.push(format!(
                "about {} MiB of available memory ({} MiB now)",
                (n * 10) / 1024 + 512,
                kib / 1024
            ));
        }
    }
    need
}

fn host_limits() -> String {
    let s = |p: &str| {
        std::fs::read_to_string(p)
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join("-"))
            .unwrap_or_else(|_| "?".into())
    };
    format!(
        "ip_local_port_range {}, somaxconn {}, fs.file-max {}, nf_conntrack_max {}, open-file hard limit {}",
        s("/proc/sys/net/ipv4/ip_local_port_range"),
        s("/proc/sys/net/core/somaxconn"),
        s("/proc/sys/fs/file-max"),
        s("/proc/sys/net/netfilter/nf_conntrack_max"),
        nofile_hard()
    )
}

fn nofile_hard() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max.to_string()
    } else {
        "?".into()
    }
}

fn steward_path() -> PathBuf {
    std::env::var_os("SCALE_STEWARD")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin("steward"))
}

fn steward_binary() -> String {
    let p = steward_path();
    let mtime = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| steward::duration::utc_timestamp(d.as_secs()))
        .unwrap_or_else(|| "unknown".into());
    format!("{} (modified {mtime})", p.display())
}

fn progress(msg: &str) {
    eprintln!("scale: {msg}");
}

/// Phase 1, at `health.interval = 200ms`: READY, false health failures and CPU over the
/// window, status latency, then the drain overshoot of a stop during a 1 s request.
fn run_fast_health(level: &mut Level, health_window: Duration) {
    let mut run = Run::start("interval = \"200ms\"");
    match run.wait_ready() {
        Ok(v) => level.ready_ms[0] = v,
        Err(e) => {
            level.notes.push(format!("200ms run: {e}"));
            return;
        }
    }
    let pid = run.steward.pid();
    match cpu_percent(pid, health_window) {
        Some(c) if !run.exited() => level.cpu_200ms = c,
        _ => {
            level
                .notes
                .push(format!("200ms run: steward exited: {}", run.log_tail()));
            return;
        }
    }
    let log = run.steward.log_text();
    level.health_failures = log.lines().filter(|l| l.contains("health probe:")).count() as f64;
    level.replacements = log
        .lines()
        .filter(|l| l.contains("failed") && l.contains("health probes in a row"))
        .count() as f64;

    let socket = run.control();
    let mut took = vec![];
    let mut errors = 0;
    let began = Instant::now();
    while took.len() + errors < STATUS_CALLS && began.elapsed() < STATUS_BUDGET {
        match status_round_trip(&socket) {
            Ok((d, reply)) => {
                if took.is_empty() {
                    level.health_probes = health_probes(&reply);
                }
                took.push(ms(d));
            }
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    level.notes.push(format!("status: {e}"));
                }
            }
        }
        std::thread::sleep(STATUS_GAP);
    }
    took.sort_by(f64::total_cmp);
    level.status_calls = took.len();
    level.status_p50_ms = percentile(&took, 0.5);
    level.status_max_ms = took.last().copied().unwrap_or(f64::NAN);
    if errors > 0 {
        level.notes.push(format!("status: {errors} calls failed"));
    }
    if took.len() + errors < STATUS_CALLS {
        level.notes.push(format!(
            "status: {} calls made within the {} s budget",
            took.len() + errors,
            STATUS_BUDGET.as_secs()
        ));
    }

    let proxy = run.proxy.clone();
    let request = std::thread::spawn(move || {
        let r = http_get(&proxy, "/delay/1000", Duration::from_secs(60));
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200));
    run.steward.signal(Signal::SIGTERM);
    let exit = run.steward.wait(Duration::from_secs(60));
    let exited = Instant::now();
    let (reply, done) = request.join().expect("slow request thread");
    match (exit, reply) {
        (None, _) => level
            .notes
            .push("drain: steward did not exit within 60 s of SIGTERM".into()),
        (Some(_), Ok((200, _))) => level.overshoot_ms = ms(exited.saturating_duration_since(done)),
        (Some(_), other) => level
            .notes
            .push(format!("drain: the 1 s request got {other:?}")),
    }
}

/// Phase 2, at the default health interval (2 s): READY, CPU while serving, idle stop.
fn run_default_health(level: &mut Level, cpu_window: Duration) {
    let mut run = Run::start("");
    match run.wait_ready() {
        Ok(v) => level.ready_ms[1] = v,
        Err(e) => {
            level.notes.push(format!("2s run: {e}"));
            return;
        }
    }
    std::thread::sleep(SETTLE);
    match cpu_percent(run.steward.pid(), cpu_window) {
        Some(c) if !run.exited() => level.cpu_2s = c,
        _ => {
            level
                .notes
                .push(format!("2s run: steward exited: {}", run.log_tail()));
            return;
        }
    }
    let t = Instant::now();
    run.steward.signal(Signal::SIGTERM);
    match run.steward.wait(Duration::from_secs(60)) {
        Some(_) => level.idle_stop_ms = ms(t.elapsed()),
        None => level
            .notes
            .push("idle stop: steward did not exit within 60 s of SIGTERM".into()),
    }
}

/// "3", or "3 of 150" when steward counted its probes.
fn failures_cell(r: &Level) -> String {
    if r.health_probes.is_nan() {
        fmt(r.health_failures, 0)
    } else {
        format!("{} of {}", fmt(r.health_failures, 0), r.health_probes)
    }
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.digits$}")
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let levels = levels();
    let health_window = Duration::from_secs(env_num("SCALE_SECONDS", 30));
    let cpu_window = Duration::from_secs(env_num("SCALE_CPU_SECONDS", 15));
    // The holders' own limit, for when this bench is killed in a way that even the
    // parent-death signal misses; drop ends them as soon as a level is measured.
    let holder_seconds = health_window.as_secs() + cpu_window.as_secs() + 240;

    println!("- steward: {}", steward_binary());
    println!("- machine: {}", machine());
    println!("- host: {}", host_limits());
    println!("- load average at the start: {}", load_average());
    println!();
    let mut rows = vec![];
    for &n in &levels {
        let mut level = Level::new(n);
        let need = preflight(n);
        if !need.is_empty() {
            let msg = format!("skipped: this host needs {}", need.join("; "));
            println!("- {n} connections {msg}");
            level.notes.push(msg);
            rows.push(level);
            continue;
        }
        progress(&format!("{n} connections: starting holders"));
        let before = tcp_entries();
        let t = Instant::now();
        let mut holders = HostConnections::hold(n, holder_seconds);
        level.holders_up_s = t.elapsed().as_secs_f64();
        level.tcp_entries = tcp_entries();
        progress(&format!(
            "{n} connections up in {:.1} s, {} TCP entries; 200ms run",
            level.holders_up_s, level.tcp_entries
        ));
        run_fast_health(&mut level, health_window);
        progress(&format!("{n} connections: 2s run"));
        run_default_health(&mut level, cpu_window);
        if !holders.alive() {
            level
                .notes
                .push("a holder ended before the level was measured".into());
        }
        // Sockets that are not the holders' (another test, a build downloading) change
        // what steward has to read: flag them so such a row is not taken at face value.
        let after = tcp_entries();
        let expected = 2 * n as u64;
        let drift = |v: u64| v.abs_diff(expected) > FOREIGN_SOCKETS;
        if drift(level.tcp_entries) || drift(after) {
            level.notes.push(format!(
                "other TCP sockets on the host: {before} before the holders, {} with them up, {after} at the end (the holders' own: {expected})",
                level.tcp_entries
            ));
        }
        level.load = load_average()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        drop(holders);
        rows.push(level);
    }

    println!(
        "| host connections | TCP entries | false health failures in {} s @200ms | child replaced | READY after spawn (ms) @200ms / @2s | `status` p50 / max (ms) | steward CPU @200ms | steward CPU @2s | drain overshoot (ms) | idle stop (ms) | load |",
        health_window.as_secs()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} / {} | {} / {} | {} % | {} % | {} | {} | {} |",
            r.connections,
            r.tcp_entries,
            failures_cell(r),
            fmt(r.replacements, 0),
            fmt(r.ready_ms[0], 0),
            fmt(r.ready_ms[1], 0),
            fmt(r.status_p50_ms, 2),
            fmt(r.status_max_ms, 2),
            fmt(r.cpu_200ms, 1),
            fmt(r.cpu_2s, 2),
            fmt(r.overshoot_ms, 1),
            fmt(r.idle_stop_ms, 1),
            r.load,
        );
    }
    println!();
    println!(
        "Each connection is 2 sockets (both ends held by conn-holder processes); \"TCP entries\" counts the kernel's TCP sockets (sockstat inuse + tw) with the holders up. \
         false health failures: `health probe:` lines in steward's log from READY to the end of the {} s window (\"of N\": the probes made, when `steward status` counts them); child replaced: `failed N health probes in a row` lines. \
         `status`: {STATUS_CALLS} round trips on the control socket (connect, `status`, one JSON line back; no CLI process), {} ms apart, as many as fit in {} s. \
         CPU: utime+stime of steward's process over the window ({} s at 200ms, {} s at the default 2s), in % of one core. \
         drain overshoot: steward's exit minus the end of a 1 s request that was in flight at SIGTERM. idle stop: SIGTERM to exit, nothing in flight. load: 1-minute load average after the level.",
        health_window.as_secs(),
        STATUS_GAP.as_millis(),
        STATUS_BUDGET.as_secs(),
        health_window.as_secs(),
        cpu_window.as_secs()
    );
    println!();
    for r in &rows {
        for n in &r.notes {
            println!("- {} connections: {n}", r.connections);
        }
    }
    println!("- steward at the end: {}", steward_binary());
    println!("- load average at the end: {}", load_average());

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/scale.csv");
    match std::fs::File::create(&path) {
        Ok(mut f) => {
            let _ = writeln!(
                f,
                "connections,tcp_entries,holders_up_s,health_failures,replacements,ready_ms_200ms_run,ready_ms_2s_run,status_p50_ms,status_max_ms,status_calls,cpu_pct_200ms,cpu_pct_2s,drain_overshoot_ms,idle_stop_ms,load1,health_probes"
            );
            for r in &rows {
                let c = |v: f64| {
                    if v.is_nan() {
                        String::new()
                    } else {
                        format!("{v:.3}")
                    }
                };
                let _ = writeln!(
                    f,
                    "{},{},{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.connections,
                    r.tcp_entries,
                    r.holders_up_s,
                    c(r.health_failures),
                    c(r.replacements),
                    c(r.ready_ms[0]),
                    c(r.ready_ms[1]),
                    c(r.status_p50_ms),
                    c(r.status_max_ms),
                    r.status_calls,
                    c(r.cpu_200ms),
                    c(r.cpu_2s),
                    c(r.overshoot_ms),
                    c(r.idle_stop_ms),
                    r.load,
                    c(r.health_probes),
                );
            }
            println!("- figures: {}", path.display());
        }
        Err(e) => println!("cannot write {}: {e}", path.display()),
    }
}

/// The machine, with its kernel.
fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{}, Linux {kernel}", report::machine())
}
