//! Shared pieces of the end-to-end tests: the real binaries, free loopback ports, a
//! scratch directory, a fake `NOTIFY_SOCKET`, a small origin server with slow responses,
//! and a raw HTTP client. Nothing here stands in for steward or Pingora.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod facts;
mod upstream;
pub use facts::{count_facts, fact_values, find_fact, log_has, parse_fields, records_with, Record};
pub use upstream::FixedUpstream;

/// A binary of this workspace, built in the same profile as the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --release --workspace`, or `make test`)",
        p.display()
    );
    p
}

/// An example program of this workspace (`target/<profile>/examples/<name>`), which
/// `cargo build --workspace --all-targets` builds.
pub fn example(name: &str) -> PathBuf {
    bin(&format!("examples/{name}"))
}

/// Path of the workspace's `etc/` directory.
pub fn etc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("etc")
}

/// A loopback port nobody listens on right now, below the kernel's ephemeral range
/// (32768 and up), so no client connection can take it meanwhile. Ports are handed out in
/// sequence from a random start, so two tests of this process never get the same one even
/// when the first has not bound it yet (a child binds its ports a second after spawn).
pub fn free_port() -> u16 {
    static START: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = *START.get_or_init(|| {
        std::process::id() as usize * 7919
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as usize)
                .unwrap_or(0)
    });
    for _ in 0..12000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20000 + ((start + n) % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// A scratch directory, removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "steward-e2e-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch dir");
        Scratch { path }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, text).expect("write scratch file");
        p
    }

    /// Writes a script a test runs as a child (mode 0755).
    pub fn write_executable(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, text);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fake systemd notify socket: records every datagram steward sends. A thread reads it
/// continuously, as systemd does, so steward never blocks on a full socket queue.
pub struct NotifySocket {
    pub path: PathBuf,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends when the scratch directory (and the socket file) is gone and the read
            // times out, or the process exits.
            let _ = sock.set_read_timeout(Some(Duration::from_secs(60)));
            loop {
                let n = match sock.recv(&mut buf) {
                    Ok(n) => n,
                    // A signal to the test process must not end the receiver: steward's
                    // next datagram would then be refused and READY never seen.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if let Ok(mut v) = sink.lock() {
                    v.push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    ));
                }
            }
        });
        NotifySocket { path, seen }
    }

    fn snapshot(&self) -> Vec<(Instant, String)> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits for a datagram containing `needle`; returns when it arrived.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        loop {
            if let Some((t, _)) = self.snapshot().iter().find(|(_, m)| m.contains(needle)) {
                return Some(*t);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn messages(&mut self) -> Vec<String> {
        self.snapshot().into_iter().map(|(_, m)| m).collect()
    }
}

/// A tiny HTTP/1.1 origin on loopback: `GET /delay/<ms>` answers after that long,
/// anything else at once. One thread per connection, `Connection: close`.
pub struct Origin {
    pub addr: String,
}

impl Origin {
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("origin listen");
        let addr = listener.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || serve_origin(conn));
            }
        });
        Origin { addr }
    }
}

fn serve_origin(mut conn: TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        match conn.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|m| m.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let body = format!("origin saw {path}\n");
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `GET path` on `addr`; the status code and body, or why it failed.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP response (got {} bytes)", out.len()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Polls until `addr` accepts a TCP connection.
pub fn wait_accepting(addr: &str, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Whether `pid` is a living stubborn-child process (not a recycled pid).
pub fn stubborn_alive(pid: i32) -> bool {
    process_alive(pid)
        && std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|e| e.to_string_lossy().contains("stubborn-child"))
}

/// Those of `pids` that are living stubborn-child processes.
pub fn stubborn_survivors(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|&p| stubborn_alive(p))
        .collect()
}

/// The pids a stubborn-child pidfile records, in order; none when it does not exist.
pub fn recorded_pids(pidfile: &Path) -> Vec<i32> {
    std::fs::read_to_string(pidfile)
        .map(|t| t.lines().filter_map(|l| l.parse().ok()).collect())
        .unwrap_or_default()
}

/// Writes `launcher.sh`, a child command's prefix: it leaves an escapee behind, then execs
/// its arguments (the real child and steward's). The escapee is the stubborn-child fixture
/// double-forked into a session of its own: outside the child's process group, no
/// descendant of it, deaf to SIGTERM and without a parent-death signal. Re-parented to
/// steward (a subreaper), it outlives the child and, once steward has gone, steward too:
/// only steward's own kill ends it, so a steward that merely exits leaves it running.
/// Its pid is appended to `$STUBBORN_PIDFILE`.
pub fn escaping_launcher(scratch: &Scratch) -> PathBuf {
    scratch.write_executable(
        "launcher.sh",
        &format!(
            "#!/bin/sh\n{} daemonize\nexec \"$@\"\n",
            bin("stubborn-child").display()
        ),
    )
}

/// Writes `late-sigterm.sh`, a child command's prefix: it runs its arguments as the server
/// and passes SIGTERM on to it only `secs` later, so the child's own shutdown ends `secs`
/// plus its grace period after the stop began. A stop deadline much shorter than that is
/// met only by steward's kill, never by the child ending itself at the same moment.
pub fn late_sigterm_launcher(scratch: &Scratch, secs: u64) -> PathBuf {
    scratch.write_executable(
        "late-sigterm.sh",
        &format!(
            "#!/bin/sh\n\"$@\" &\nserver=$!\ntrap 'sleep {secs}; kill -TERM $server' TERM\nwhile kill -0 $server 2>/dev/null; do wait $server; done\n"
        ),
    )
}

/// The pid in steward-proxy's demo origin answer ("... (pid N)"): which generation served.
pub fn served_by_pid(body: &str) -> Option<i32> {
    body.split("(pid ")
        .nth(1)?
        .split(')')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// True when a test that needs root may run: `why` says what for. Otherwise it prints
/// SKIPPED, so the skip shows in the output, or fails under CI=true, where CI runs as root
/// and a skip would hide a regression.
pub fn needs_root(test: &str, why: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root ({why}); CI runs as root, so this must not be skipped there");
    }
    println!("SKIPPED {test}: needs root ({why})");
    false
}

/// A running `steward run`, killed (with its tree) if the test ends early.
pub struct Steward {
    pub child: Child,
    pub log: PathBuf,
    pub started: Instant,
}

impl Steward {
    /// Starts `steward run --config <config>` with stderr in `<dir>/steward.log`.
    pub fn start(dir: &Path, config: &Path, env: &[(&str, String)]) -> Steward {
        Steward::start_with_pending(dir, config, env, &[])
    }

    /// As [`Steward::start`], with `pending` signals already blocked and pending when
    /// steward's `exec` begins (both survive `exec`): they are there before steward has a
    /// handler, the earliest moment a signal can reach it.
    pub fn start_with_pending(
        dir: &Path,
        config: &Path,
        env: &[(&str, String)],
        pending: &[Signal],
    ) -> Steward {
        Steward::launch(dir, config, env, pending, None, &bin("steward"))
    }

    /// As [`Steward::start_with_pending`], running the steward binary at `program` (a copy
    /// a test replaces on disk, as a package upgrade does).
    pub fn start_program(
        dir: &Path,
        config: &Path,
        env: &[(&str, String)],
        pending: &[Signal],
        program: &Path,
    ) -> Steward {
        Steward::launch(dir, config, env, pending, None, program)
    }

    /// As [`Steward::start`], with steward's `RLIMIT_NOFILE` set to `(soft, hard)` before
    /// its `exec`, as systemd's `LimitNOFILE=soft:hard` would. A hard limit above the
    /// test's own needs root.
    pub fn start_with_nofile(
        dir: &Path,
        config: &Path,
        env: &[(&str, String)],
        nofile: (u64, u64),
    ) -> Steward {
        Steward::launch(dir, config, env, &[], Some(nofile), &bin("steward"))
    }

    fn launch(
        dir: &Path,
        config: &Path,
        env: &[(&str, String)],
        pending: &[Signal],
        nofile: Option<(u64, u64)>,
        program: &Path,
    ) -> Steward {
        let log = dir.join("steward.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(program);
        cmd.args(["run", "--log-target", "stderr", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if !pending.is_empty() {
            use std::os::unix::process::CommandExt;
            let sigs: Vec<i32> = pending.iter().map(|s| *s as i32).collect();
            // SAFETY: runs between fork and exec; it only calls async-signal-safe
            // functions (sigemptyset, sigaddset, sigprocmask, getpid, kill) on a set on
            // the stack, and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    for &s in &sigs {
                        libc::sigaddset(&mut set, s);
                    }
                    if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    for &s in &sigs {
                        libc::kill(libc::getpid(), s);
                    }
                    Ok(())
                });
            }
        }
        if let Some((soft, hard)) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: runs between fork and exec; setrlimit is an async-signal-safe
            // syscall reading a struct copied onto the closure, and nothing is allocated.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn steward");
        Steward {
            child,
            log,
            started,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal steward");
    }

    /// Waits for steward to exit; `None` on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until steward's log contains `needle`; whether it came within `timeout`.
    /// A line follows the event it reports by a moment: read the log after it is there.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until a record of steward's log states all of `facts` ([`log_has`]); that
    /// record, or `None` when none came within `timeout`.
    pub fn wait_fact(&self, facts: &[(&str, &str)], timeout: Duration) -> Option<Record> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = find_fact(&self.log_text(), facts) {
                return Some(r);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// [`Steward::wait_fact`], failing the test with steward's log when no record states
    /// all of `facts` within `timeout`.
    pub fn expect_fact(&self, facts: &[(&str, &str)], timeout: Duration) -> Record {
        self.wait_fact(facts, timeout).unwrap_or_else(|| {
            panic!(
                "no record of {facts:?} in the log within {timeout:?}:\n{}",
                self.log_text()
            )
        })
    }

    /// The child pid steward logged at start.
    pub fn child_pid(&self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(&pid) = started_child_pids(&text).first() {
                return Some(pid);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Steward {
    /// A test that ends early stops steward as an operator would, so steward ends the
    /// child's whole tree; SIGKILL alone would orphan grandchildren (only the child has a
    /// parent-death signal). A stop that would wait out a long deadline (a child that
    /// ignores SIGTERM) is cut short with SIGINT, which kills the tree at once.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
            if self.wait(Duration::from_secs(5)).is_none() {
                let _ = kill(Pid::from_raw(self.pid()), Signal::SIGINT);
            }
            if self.wait(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Where a steward-proxy written by [`proxy_settings`] listens.
pub struct ProxyAddrs {
    pub settings: PathBuf,
    pub proxy: String,
    pub health: String,
    pub origin: String,
}

/// Writes steward-proxy's settings on fresh ports.
pub fn proxy_settings(scratch: &Scratch) -> ProxyAddrs {
    let (p, h, o) = (free_port(), free_port(), free_port());
    let proxy = format!("127.0.0.1:{p}");
    let health = format!("127.0.0.1:{h}");
    let origin = format!("127.0.0.1:{o}");
    let settings = scratch.write(
        "proxy.toml",
        &format!(
            "listen = [\"{proxy}\"]\nupstreams = [\"{origin}\"]\n[health]\nlisten = \"{health}\"\n[origin]\nlisten = \"{origin}\"\n"
        ),
    );
    ProxyAddrs {
        settings,
        proxy,
        health,
        origin,
    }
}

/// Counts of a load run: every request is a new connection, so a refused connection is
/// seen as such and not hidden behind a keep-alive pool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadCounts {
    pub ok: u64,
    pub refused: u64,
    /// Connected, but no complete 200 came back.
    pub failed: u64,
}

/// Runs `clients` threads of `client(addr, path, stop)` until `stop` is set; what each
/// returned.
fn run_clients<T: Send + 'static>(
    addr: &str,
    path: &str,
    clients: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: fn(&str, &str, &std::sync::atomic::AtomicBool) -> T,
) -> Vec<T> {
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, path, stop) = (addr.to_string(), path.to_string(), stop.clone());
            std::thread::spawn(move || client(&addr, &path, &stop))
        })
        .collect();
    workers.into_iter().filter_map(|w| w.join().ok()).collect()
}

/// Runs `clients` threads doing `GET path` on `addr` back to back until `stop` is set.
pub fn load(
    addr: &str,
    path: &str,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(LoadCounts, Vec<String>)> {
    let addr = addr.to_string();
    let path = path.to_string();
    std::thread::spawn(move || {
        let mut total = LoadCounts::default();
        let mut errors = vec![];
        for (c, e) in run_clients(&addr, &path, clients, &stop, load_client) {
            total.ok += c.ok;
            total.refused += c.refused;
            total.failed += c.failed;
            errors.extend(e);
        }
        (total, errors)
    })
}

fn load_client(
    addr: &str,
    path: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> (LoadCounts, Vec<String>) {
    let mut c = LoadCounts::default();
    let mut errors = vec![];
    while !stop.load(Ordering::SeqCst) {
        match http_get(addr, path, Duration::from_secs(10)) {
            Ok((200, _)) => c.ok += 1,
            Ok((code, _)) => {
                c.failed += 1;
                errors.push(format!("status {code}"));
            }
            Err(e) if e.contains("Connection refused") => {
                c.refused += 1;
                errors.push(e);
                // A refusal costs microseconds: without a pause the clients
                // would spin and starve the server that is starting up.
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                c.failed += 1;
                errors.push(format!("{e} at {}", chrono_now()));
            }
        }
    }
    (c, errors)
}

/// One HTTP/1.1 response read off a connection that stays open: its status, whether it
/// closes the connection (`Connection: close`), and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub close: bool,
    pub body: String,
}

/// Reads one response from `conn`, by its `Content-Length`, and no more: the connection
/// can carry the next request. `Err` says what came instead (EOF or a reset before the
/// whole response, a response without a length).
pub fn read_response(conn: &mut TcpStream) -> Result<Response, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn
            .read(&mut buf)
            .map_err(|e| format!("read after {} bytes: {e} ({:?})", got.len(), e.kind()))?;
        if n == 0 {
            return Err(format!(
                "closed after {} bytes, before a whole response",
                got.len()
            ));
        }
        got.extend_from_slice(&buf[..n]);
        let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no Content-Length: {head}"))?;
        if got.len() < head_end + 4 + len {
            continue;
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status line: {head}"))?;
        return Ok(Response {
            status,
            close: head.lines().any(|l| l.trim() == "connection: close"),
            body: String::from_utf8_lossy(&got[head_end + 4..head_end + 4 + len]).into_owned(),
        });
    }
}

/// Counts of a keep-alive load run ([`keep_alive_load`]): every outcome of every request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeepAliveCounts {
    /// Answered 200.
    pub ok: u64,
    /// Of those, answered with `Connection: close` (the client then connected again).
    pub closed: u64,
    /// Connections refused (no request sent).
    pub refused: u64,
    /// Requests sent that got no complete 200: a connection closed or reset before the
    /// response (Python's `RemoteDisconnected`), another status, a timeout. What happened,
    /// with the time.
    pub errors: Vec<String>,
}

/// Runs `clients` threads, each with one persistent HTTP/1.1 connection to `addr`, as
/// browsers and load balancers keep them: `GET path` back to back on it until `stop` is
/// set, connecting again after a `Connection: close` answer or an error, and counting
/// every outcome.
pub fn keep_alive_load(
    addr: &str,
    path: &str,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<KeepAliveCounts> {
    let addr = addr.to_string();
    let path = path.to_string();
    std::thread::spawn(move || {
        let mut total = KeepAliveCounts::default();
        for c in run_clients(&addr, &path, clients, &stop, keep_alive_client) {
            total.ok += c.ok;
            total.closed += c.closed;
            total.refused += c.refused;
            total.errors.extend(c.errors);
        }
        total
    })
}

fn keep_alive_client(
    addr: &str,
    path: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> KeepAliveCounts {
    let mut c = KeepAliveCounts::default();
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::SeqCst) {
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                    conn.insert(s)
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    c.refused += 1;
                    // A refusal costs microseconds: without a pause the clients would spin.
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => {
                    c.errors.push(format!("connect: {e} at {}", chrono_now()));
                    continue;
                }
            },
        };
        let sent = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let outcome = sent
            .map_err(|e| format!("send: {e}"))
            .and_then(|_| read_response(s));
        match outcome {
            Ok(r) if r.status == 200 => {
                c.ok += 1;
                if r.close {
                    c.closed += 1;
                    conn = None;
                }
            }
            Ok(r) => {
                c.errors
                    .push(format!("status {} at {}", r.status, chrono_now()));
                conn = None;
            }
            Err(e) => {
                c.errors.push(format!("{e} at {}", chrono_now()));
                conn = None;
            }
        }
    }
    c
}

/// steward.toml supervising the stubborn-child fixture, which is ready once `listen`
/// accepts; `more` follows the `[ready]` table's `tcp` line (more `[ready]` keys, then
/// other tables).
pub fn stubborn_config(scratch: &Scratch, listen: &str, more: &str) -> PathBuf {
    scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\n[ready]\ntcp = \"{listen}\"\n{more}",
            scratch.path.display(),
            bin("stubborn-child").display()
        ),
    )
}

/// steward.toml supervising a steward-proxy that serves 0.3 s after each start, then
/// crashes (SIGKILL, and its wrapper exits 3), with `max_crashes = 2` and the given
/// `backoff_min`.
pub fn crash_loop_config(scratch: &Scratch, backoff_min: &str) -> PathBuf {
    let script = scratch.write_executable(
        "child.sh",
        &format!(
            "#!/bin/sh\n# Serves a moment, then crashes.\nexec {} --proxy-config \"$PROXY\" \"$@\" & pid=$!\nsleep 0.3\nkill -9 $pid\nexit 3\n",
            bin("steward-proxy").display()
        ),
    );
    let a = proxy_settings(scratch);
    scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\nenv = {{ PROXY = \"{}\" }}\n[ready]\nhttp = \"http://{}/health\"\n[restart]\nmax_crashes = 2\nbackoff_min = \"{backoff_min}\"\n",
            scratch.path.display(),
            script.display(),
            a.settings.display(),
            a.health
        ),
    )
}

/// `steward status --json` on `socket`: the reply, or Null when no JSON came back.
pub fn status_json(socket: &Path) -> serde_json::Value {
    let out = Command::new(bin("steward"))
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .expect("steward status");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Runs `steward <command> --socket <socket>`; its exit code and output.
pub fn steward_cli(command: &str, socket: &Path) -> (Option<i32>, String) {
    let out = Command::new(bin("steward"))
        .args([command, "--socket"])
        .arg(socket)
        .output()
        .expect("run steward client");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Wall-clock time as the logs print it, to line a failure up with steward's log.
fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() % 86400;
    format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        d.subsec_micros()
    )
}

/// Established, idle loopback TCP connections held on the host by `conn-holder` processes
/// (both ends of each in one holder: 2 kernel sockets per connection), so steward can be
/// tried on a host whose TCP tables are as full as a busy proxy's. A process holds at
/// most what its open-file hard limit allows, so the total is spread over as many holders
/// as needed. They are SIGKILLed on drop, exit by themselves after `seconds`, and die with
/// the thread that created them (`PR_SET_PDEATHSIG` follows the spawning thread): keep a
/// `HostConnections` on the thread that made it.
pub struct HostConnections {
    holders: Vec<Child>,
    total: usize,
}

impl HostConnections {
    /// Holds `total` connections for at most `seconds`; returns once every holder reports
    /// its connections up. Panics with the holder's message when one cannot.
    pub fn hold(total: usize, seconds: u64) -> HostConnections {
        let exe = bin("conn-holder");
        let mut held = HostConnections {
            holders: vec![],
            total,
        };
        if total == 0 {
            return held;
        }
        let out = Command::new(&exe)
            .arg("--capacity")
            .output()
            .expect("run conn-holder --capacity");
        let per: usize = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| {
                panic!(
                    "conn-holder --capacity: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let n = total.div_ceil(per);
        let mut counts = vec![];
        let mut left = total;
        // Started together, the holders set up their connections in parallel.
        for i in 0..n {
            let count = left / (n - i);
            left -= count;
            let child = Command::new(&exe)
                .args([
                    "--connections",
                    &count.to_string(),
                    "--seconds",
                    &seconds.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn conn-holder");
            held.holders.push(child);
            counts.push(count);
        }
        for (child, count) in held.holders.iter_mut().zip(counts) {
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            }
            if line.trim() != format!("holding {count}") {
                // The holder has exited (stdout closed without the line): its message is
                // all there is on stderr.
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "conn-holder pid {} could not hold {count} connections: {}",
                    child.id(),
                    err.trim()
                );
            }
        }
        held
    }

    /// The connections held.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Whether every holder still runs (one that reached its time limit has let go).
    pub fn alive(&mut self) -> bool {
        self.holders
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for HostConnections {
    fn drop(&mut self) {
        for c in &mut self.holders {
            let _ = c.kill();
        }
        for c in &mut self.holders {
            let _ = c.wait();
        }
    }
}

/// An ordinary local user for the attack tests (`tests/e2e/attacks.rs`): a throw-away
/// account made with `useradd` (`steward-atk-<pid>-<n>`, no home, no login shell, its own
/// group) and removed with `userdel` on drop. Where `useradd` is missing or fails, an uid
/// and gid no account uses (4000 and up) stand in for it. Only root can make one, and only
/// root can run commands as it: the attack tests are root-only ([`needs_root`]).
pub struct Attacker {
    /// The account's name; `None` for a bare uid (no account).
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

impl Attacker {
    pub fn new() -> Attacker {
        static N: AtomicUsize = AtomicUsize::new(0);
        // useradd locks /etc/passwd: two at once from parallel tests would fail.
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("steward-atk-{}-{n}", std::process::id());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut why = String::new();
        // Other test processes may be adding accounts too: a lock held on /etc/passwd is
        // waited out for up to 10 s.
        for _ in 0..50 {
            match Command::new("useradd")
                .args([
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--user-group",
                    &name,
                ])
                .output()
            {
                Ok(out) if out.status.success() => {
                    if let Ok(Some(u)) = nix::unistd::User::from_name(&name) {
                        return Attacker {
                            name: Some(name),
                            uid: u.uid.as_raw(),
                            gid: u.gid.as_raw(),
                        };
                    }
                    why = format!("useradd {name} succeeded but the account is not found");
                    break;
                }
                Ok(out) => {
                    why = format!(
                        "useradd {name}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    // Another process holds the lock on /etc/passwd: try again shortly.
                    if !why.contains("lock") {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    why = format!("useradd: {e}");
                    break;
                }
            }
        }
        let mut id = 4000 + (std::process::id() as usize % 500) * 8 + n % 8;
        while nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id as u32))
            .ok()
            .flatten()
            .is_some()
            || nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id as u32))
                .ok()
                .flatten()
                .is_some()
        {
            id += 1;
        }
        println!("no throw-away account ({why}): the attacker is the bare uid/gid {id}");
        Attacker {
            name: None,
            uid: id as u32,
            gid: id as u32,
        }
    }

    /// The attacker in a test's messages: "uid N", with the account's name when there is one.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("uid {} ({n})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }

    /// `program` to be run as the attacker: its uid, its gid and no supplementary group
    /// (std drops root's groups when it sets the uid), nothing of the test's environment
    /// but PATH.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        cmd.uid(self.uid)
            .gid(self.gid)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `sh -c script` as the attacker; whether it succeeded, and its output.
    pub fn sh(&self, script: &str) -> (bool, String) {
        let out = self
            .command("/bin/sh")
            .args(["-c", script])
            .output()
            .expect("run sh as the attacker");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Runs `sh -c script` as the attacker and fails the test if it does not succeed:
    /// for the set-up of an attack, which an ordinary user can do.
    pub fn must(&self, script: &str) -> String {
        let (ok, out) = self.sh(script);
        assert!(ok, "as {}: `{script}` failed: {out}", self.label());
        out
    }
}

impl Default for Attacker {
    fn default() -> Attacker {
        Attacker::new()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        // userdel refuses a user who still runs processes: a test kills the ones it
        // started as the attacker (by their pid) before the attacker goes.
        if let Some(name) = &self.name {
            for _ in 0..5 {
                match Command::new("userdel").arg(name).output() {
                    Ok(out) if out.status.success() => return,
                    Ok(_) => std::thread::sleep(Duration::from_millis(200)),
                    Err(_) => return,
                }
            }
        }
    }
}

/// A copy of one of the built binaries in `dir`, mode 0755, that another user can run:
/// the build tree may be private (CI clones into a 0700 directory).
pub fn world_copy(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(format!("{name}.copy"));
    std::fs::copy(bin(name), &to).expect("copy the binary");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

/// Runs `cmd` for at most `timeout`: its output, or `None` (and it is killed) when it took
/// longer. For commands that an attack could make hang.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read in threads so a full pipe never stalls the child.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let to = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = so.read_to_end(&mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = se.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = to.join().unwrap_or_default();
    let stderr = te.join().unwrap_or_default();
    status.map(|status| std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// A process's peak and current resident memory in KiB (VmHWM, VmRSS of
/// /proc/<pid>/status); zeros when it is gone.
pub fn memory_kib(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Every generation's child pid, in order: the `spawned` facts in steward's log.
pub fn started_child_pids(log: &str) -> Vec<i32> {
    fact_values(log, &[("steward_event", "spawned")], "steward_child_pid")
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// steward-proxy under steward with one `sockets.listen` key it serves nothing on, and
/// `child.handoff = handoff` when given: steward's exit code, its log and the stray key.
pub fn start_with_a_stray_listener(
    name: &str,
    handoff: Option<&str>,
) -> (Option<i32>, String, String) {
    let scratch = Scratch::new(name);
    let a = proxy_settings(&scratch);
    let stray = format!("127.0.0.1:{}", free_port());
    let handoff = handoff
        .map(|h| format!("handoff = \"{h}\"\n"))
        .unwrap_or_default();
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\", \"--proxy-config\", \"{}\"]\n{handoff}[ready]\nhttp = \"http://{}/health\"\n[sockets]\nlisten = [\"{}\", \"{}\", \"{stray}\"]\n",
            scratch.path.display(),
            bin("steward-proxy").display(),
            a.settings.display(),
            a.health,
            a.proxy,
            a.origin
        ),
    );
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let status = steward.wait(Duration::from_secs(15)).expect("exits");
    (status.code(), steward.log_text(), stray)
}
