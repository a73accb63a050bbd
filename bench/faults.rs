//! The fault report: each fault steward is built to survive, tried for real, and what came
//! of it: the outcome, the time to recover, what was lost, and which processes outlived
//! the fault. Reports, never asserts: the tests in tests/e2e and tests/systemd assert.
//!
//! Prints a Markdown table on stdout; `bench/faults.sh` puts it in the README. Run with
//! `make faults`.

#[path = "../tests/e2e/common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kind, Setup, USER_YAML};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use steward_e2e::*;

/// A fault by name, and how to try it.
type Fault = fn() -> Row;

struct Row {
    fault: &'static str,
    outcome: String,
    recover: String,
    lost: String,
    survivors: usize,
}

/// A process identified for good: pid plus start time, so a recycled pid is not mistaken
/// for a survivor.
type Proc = (i32, u64);

fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn parent(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every living descendant of `root` (and `root`), now.
fn tree(root: i32) -> Vec<Proc> {
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![];
    for p in pids {
        let mut cur = p;
        for _ in 0..64 {
            if cur == root {
                if let Some(t) = start_time(p) {
                    out.push((p, t));
                }
                break;
            }
            match parent(cur) {
                Some(pp) if pp > 1 => cur = pp,
                _ => break,
            }
        }
    }
    out
}

fn survivors(procs: &[Proc]) -> usize {
    procs
        .iter()
        .filter(|(p, t)| process_alive(*p) && start_time(*p) == Some(*t))
        .count()
}

fn serving_generation(control: &std::path::Path) -> Option<(u64, i32)> {
    let v = status_json(control);
    let s = &v["status"];
    (s["state"] == "serving").then(|| {
        (
            s["generation"].as_u64().unwrap_or(0),
            s["child_pid"].as_i64().unwrap_or(0) as i32,
        )
    })
}

/// Polls `f` every 50 ms: often enough for the times reported, rarely enough that the
/// polling (a `steward status` process each time) does not slow what it measures on two
/// cores.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn lost(c: &LoadCounts) -> String {
    format!(
        "{} refused, {} failed of {}",
        c.refused,
        c.failed,
        c.ok + c.refused + c.failed
    )
}

struct Load {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(LoadCounts, Vec<String>)>,
}

fn start_load(addr: &str) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let clients = std::env::var("FAULTS_CLIENTS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(4);
    let handle = load(addr, "/", clients, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    Load { stop, handle }
}

impl Load {
    fn finish(self) -> LoadCounts {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().map(|(c, _)| c).unwrap_or_default()
    }
}

fn stubborn(depth: Option<u32>) -> Row {
    let scratch = Scratch::new("fault-stubborn");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = stubborn_config(
        &scratch,
        &listen,
        "[stop]\ndeadline = \"1s\"\ndrain = \"exit\"\n",
    );
    let mut env = vec![
        ("STUBBORN_LISTEN", listen.clone()),
        (
            "STUBBORN_PIDFILE",
            scratch.path.join("pids").display().to_string(),
        ),
    ];
    if let Some(d) = depth {
        env.push(("STUBBORN_FORKBOMB_DEPTH", d.to_string()));
    }
    let mut s = Steward::start(&scratch.path, &config, &env);
    let want = 4 + depth.map(|d| (1usize << (d + 1)) - 1).unwrap_or(0);
    let pidfile = scratch.path.join("pids");
    wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&pidfile)
            .map(|t| t.lines().count() >= want)
            .unwrap_or(false)
            && wait_accepting(&listen, Duration::from_millis(10))
    });
    // A request the child accepts and never answers.
    let held = std::net::TcpStream::connect(&listen).ok();
    let procs = tree(s.pid());
    let t = Instant::now();
    s.signal(Signal::SIGTERM);
    let code = s.wait(Duration::from_secs(10)).and_then(|st| st.code());
    let took = t.elapsed();
    drop(held);
    Row {
        fault: if depth.is_some() {
            "fork bomb (63 processes, own session, re-forking) ignoring SIGTERM"
        } else {
            "child ignores SIGTERM; grandchildren in its group, in a new session, double-forked"
        },
        outcome: format!(
            "{} processes SIGKILLed at the 1 s deadline, exit {}",
            procs.len(),
            code.map(|c| c.to_string()).unwrap_or("none".into())
        ),
        recover: format!("stopped in {}", secs(took)),
        lost: "the one request that never ends, cut at the deadline".into(),
        survivors: survivors(&procs),
    }
}

fn child_crash() -> Row {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let (_, child) = serving_generation(&s.control()).unwrap_or((0, 0));
    let procs = tree(child);
    let l = start_load(&s.proxy);
    let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    let control = s.control();
    let back = wait_until(Duration::from_secs(15), || {
        serving_generation(&control).is_some_and(|(g, _)| g >= 2)
    });
    let c = l.finish();
    if std::env::var_os("FAULTS_VERBOSE").is_some() {
        eprintln!("{}", s.steward.log_text());
    }
    Row {
        fault: "child SIGKILLed under load (4 clients)",
        outcome: "steward restarts it on the same listeners; MainPID kept".into(),
        recover: back
            .map(|d| format!("serving again in {}", secs(d)))
            .unwrap_or("not within 15 s".into()),
        lost: lost(&c),
        survivors: survivors(&procs),
    }
}

fn child_hang() -> Row {
    let mut s = Setup::start_with(
        Kind::StewardProxy,
        USER_YAML,
        "",
        true,
        "[health]\ninterval = \"200ms\"\ntimeout = \"300ms\"\nfailures = 3\n",
    );
    s.wait_ready();
    let (_, child) = serving_generation(&s.control()).unwrap_or((0, 0));
    let procs = tree(child);
    let l = start_load(&s.proxy);
    let _ = kill(Pid::from_raw(child), Signal::SIGSTOP);
    let control = s.control();
    let back = wait_until(Duration::from_secs(15), || {
        serving_generation(&control).is_some_and(|(g, _)| g >= 2)
    });
    let c = l.finish();
    Row {
        fault: "child hangs (SIGSTOP) under load; health probe every 200 ms, 3 failures",
        outcome: "3 failed probes, the hung child is killed and replaced".into(),
        recover: back
            .map(|d| format!("serving again in {}", secs(d)))
            .unwrap_or("not within 15 s".into()),
        lost: format!("{} (requests the hung child had accepted)", lost(&c)),
        survivors: survivors(&procs),
    }
}

fn steward_sigkill() -> Row {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let procs = tree(s.steward.pid());
    let l = start_load(&s.proxy);
    s.steward.signal(Signal::SIGKILL);
    let _ = s.steward.wait(Duration::from_secs(5));
    let gone = wait_until(Duration::from_secs(5), || survivors(&procs) == 0);
    let second = s.scratch.path.join("second");
    let _ = std::fs::create_dir_all(&second);
    let mut notify = NotifySocket::bind(&second);
    let t = Instant::now();
    let again = Steward::start(
        &second,
        &s.scratch.path.join("steward.toml"),
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
    );
    let ready = notify
        .wait_for("READY=1", Duration::from_secs(20))
        .map(|_| t.elapsed());
    let c = l.finish();
    if std::env::var_os("FAULTS_VERBOSE").is_some() {
        eprintln!("{}", again.log_text());
    }
    drop(again);
    Row {
        fault: "steward SIGKILLed under load, then started again (same runtime dir)",
        outcome: format!(
            "child ended by its parent-death signal{}; the restart reuses the stale runtime dir",
            gone.map(|d| format!(" within {}", secs(d)))
                .unwrap_or_default()
        ),
        recover: ready
            .map(|d| format!("READY {} after the new start", secs(d)))
            .unwrap_or("no READY within 20 s".into()),
        lost: format!(
            "{} (nothing listens between the kill and the new start)",
            lost(&c)
        ),
        survivors: survivors(&procs),
    }
}

fn broken_reload() -> Row {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let l = start_load(&s.proxy);
    s.scratch
        .write("pingora.yaml", "version: 1\ngrace_period_seconds: [oops\n");
    let t = Instant::now();
    let (code, _) = steward_cli("reload", &s.control());
    let took = t.elapsed();
    let c = l.finish();
    let same = serving_generation(&s.control()).is_some_and(|(g, _)| g == 1);
    Row {
        fault: "reload with a broken Pingora YAML, under load",
        outcome: format!(
            "`steward reload` exits {} with the YAML error; generation 1 {}",
            code.map(|c| c.to_string()).unwrap_or("none".into()),
            if same {
                "keeps serving"
            } else {
                "was replaced"
            }
        ),
        recover: format!("refused in {}", secs(took)),
        lost: lost(&c),
        survivors: 0,
    }
}

fn sighup_storm() -> Row {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let l = start_load(&s.proxy);
    let pid = Pid::from_raw(s.steward.pid());
    for _ in 0..1000 {
        let _ = kill(pid, Signal::SIGHUP);
    }
    let control = s.control();
    // Settled: serving, and no reload pending for a while.
    let mut last = 0;
    let mut stable_since = Instant::now();
    let settled = wait_until(Duration::from_secs(60), || {
        match serving_generation(&control) {
            Some((g, _)) if g == last => stable_since.elapsed() > Duration::from_secs(3),
            Some((g, _)) => {
                last = g;
                stable_since = Instant::now();
                false
            }
            None => false,
        }
    });
    let c = l.finish();
    if std::env::var_os("FAULTS_VERBOSE").is_some() {
        for line in s
            .steward
            .log_text()
            .lines()
            .filter(|l| l.contains("reload") || l.contains("generation"))
        {
            eprintln!("{line}");
        }
    }
    Row {
        fault: "1,000 SIGHUPs in a burst, under load",
        // One burst gives one reload or two, by design: the one its first SIGHUP starts,
        // and one more after it if part of the burst arrives while that one runs.
        outcome: match last.saturating_sub(1) {
            1 => "coalesced into 1 reload (at most 2: one, then one more for those during it)"
                .to_string(),
            n => format!(
                "coalesced into {n} reloads (at most 2: one, then one more for those during it)"
            ),
        },
        recover: settled
            .map(|d| {
                format!(
                    "settled in {}",
                    secs(d.saturating_sub(Duration::from_secs(3)))
                )
            })
            .unwrap_or("not settled in 60 s".into()),
        lost: lost(&c),
        survivors: 0,
    }
}

fn sigterm_during_reload() -> Row {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "deadline = \"3s\"", true, "");
    s.wait_ready();
    let procs = tree(s.steward.pid());
    let _ = kill(Pid::from_raw(s.steward.pid()), Signal::SIGHUP);
    let control = s.control();
    wait_until(Duration::from_secs(5), || {
        status_json(&control)["status"]["state"] == "reloading"
    });
    let more = tree(s.steward.pid());
    let t = Instant::now();
    s.steward.signal(Signal::SIGTERM);
    let code = s
        .steward
        .wait(Duration::from_secs(10))
        .and_then(|st| st.code());
    let took = t.elapsed();
    let all: Vec<Proc> = procs.into_iter().chain(more).collect();
    Row {
        fault: "SIGTERM in the middle of a reload",
        outcome: format!(
            "both generations drained and ended, exit {}",
            code.map(|c| c.to_string()).unwrap_or("none".into())
        ),
        recover: format!("stopped in {} (deadline 3 s)", secs(took)),
        lost: "nothing in flight".into(),
        survivors: survivors(&all),
    }
}

fn never_ready() -> Row {
    let scratch = Scratch::new("fault-never-ready");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = stubborn_config(&scratch, &listen, "timeout = \"2s\"\n");
    // It listens elsewhere: the probe never passes.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let t = Instant::now();
    let mut s = Steward::start(&scratch.path, &config, &[("STUBBORN_LISTEN", elsewhere)]);
    std::thread::sleep(Duration::from_millis(500));
    let procs = tree(s.pid());
    let code = s.wait(Duration::from_secs(10)).and_then(|st| st.code());
    Row {
        fault: "child never becomes ready (ready.timeout 2 s)",
        outcome: format!(
            "start fails: \"did not serve within ready.timeout\", exit {}",
            code.map(|c| c.to_string()).unwrap_or("none".into())
        ),
        recover: format!("gave up after {}", secs(t.elapsed())),
        lost: "nothing (never served)".into(),
        survivors: survivors(&procs),
    }
}

fn crash_loop() -> Row {
    let scratch = Scratch::new("fault-crashloop");
    let config = crash_loop_config(&scratch, "100ms");
    let t = Instant::now();
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let code = s.wait(Duration::from_secs(30)).and_then(|st| st.code());
    let log = s.log_text();
    let waits: Vec<String> = log
        .split("restarting in ")
        .skip(1)
        // Only the decision records ("restarting in 100 ms (crash 1 of 2 ...").
        .filter_map(|x| x.split_once(" (crash").map(|(wait, _)| wait.to_string()))
        .filter(|w| w.split_whitespace().count() == 2)
        .collect();
    Row {
        fault: "crash loop (child dies 0.3 s after each start)",
        outcome: format!(
            "restarts after {}, then gives up with the child's code {}; systemd's Restart= takes over",
            waits.join(", "),
            code.map(|c| c.to_string()).unwrap_or("none".into())
        ),
        recover: format!("gave up after {}", secs(t.elapsed())),
        lost: "n/a (never stable)".into(),
        survivors: 0,
    }
}

fn runtime_dir_blocked() -> Row {
    let scratch = Scratch::new("fault-rtdir");
    let blocker = scratch.write("not-a-dir", "x");
    let a = proxy_settings(&scratch);
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\", \"--proxy-config\", \"{}\"]\n[ready]\nhttp = \"http://{}/health\"\n",
            blocker.display(),
            bin("steward-proxy").display(),
            a.settings.display(),
            a.health
        ),
    );
    let t = Instant::now();
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let code = s.wait(Duration::from_secs(10)).and_then(|st| st.code());
    let line = s
        .log_text()
        .lines()
        .find(|l| l.contains("runtime directory"))
        .map(|l| {
            let msg = l.split("runtime directory").nth(1).unwrap_or("");
            msg.split(" steward_")
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let line = line.replace(&scratch.path.display().to_string(), "…");
    Row {
        fault: "runtime directory cannot be created (a file is in the way)",
        outcome: format!(
            "exit {}: \"runtime directory {line}\"",
            code.map(|c| c.to_string()).unwrap_or("none".into())
        ),
        recover: format!("refused in {}", secs(t.elapsed())),
        lost: "nothing (never started the child)".into(),
        survivors: 0,
    }
}

fn half_open_control_clients() -> Row {
    let mut s = Setup::start_with(Kind::StewardProxy, USER_YAML, "", true, "");
    s.wait_ready();
    let hung: Vec<_> = (0..200)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(s.control()).ok())
        .collect();
    let t = Instant::now();
    let (code, _) = steward_cli("status", &s.control());
    let took = t.elapsed();
    drop(hung);
    Row {
        fault: "200 half-open clients on the control socket",
        outcome: format!(
            "`steward status` still answered (exit {})",
            code.map(|c| c.to_string()).unwrap_or("none".into())
        ),
        recover: format!("answered in {}", secs(took)),
        lost: "nothing".into(),
        survivors: 0,
    }
}

fn main() {
    // cargo bench passes --bench; a filter argument picks faults by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let faults: Vec<(&str, Fault)> = vec![
        ("stubborn", || stubborn(None)),
        ("forkbomb", || stubborn(Some(5))),
        ("crash", child_crash),
        ("hang", child_hang),
        ("steward-sigkill", steward_sigkill),
        ("broken-reload", broken_reload),
        ("sighup-storm", sighup_storm),
        ("sigterm-reload", sigterm_during_reload),
        ("never-ready", never_ready),
        ("crash-loop", crash_loop),
        ("runtime-dir", runtime_dir_blocked),
        ("control-half-open", half_open_control_clients),
    ];
    println!("| fault | outcome | time to recover | lost | survivors |");
    println!("|---|---|---|---|---|");
    for (name, f) in faults {
        if !filter.is_empty() && !filter.iter().any(|x| name.contains(x.as_str())) {
            continue;
        }
        eprintln!("fault: {name}");
        let r = f();
        println!(
            "| {} | {} | {} | {} | {} |",
            r.fault, r.outcome, r.recover, r.lost, r.survivors
        );
    }
}
