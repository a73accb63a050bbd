//! steward-pingora's clean end, without steward: the crate's example `graceful-proxy` (a
//! user's Pingora proxy that calls `steward.run(server)`) stopped by the signals an
//! operator or Pingora's own upgrade procedure sends. The example writes
//! `graceful-proxy pid N: stopped` after `run` returns, just before `main` returns: a
//! process ended from a side thread with `exit(0)` never writes it.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use steward_e2e::*;

/// A grace period far beyond any test: a server that sleeps it out fails the test's wait.
const GRACE_300: &str = "---\nversion: 1\nthreads: 2\ngrace_period_seconds: 300\n";

/// `graceful-proxy` running alone, its stderr in a file.
struct Alone {
    child: Child,
    log: PathBuf,
}

impl Alone {
    /// Starts the example on `listen` in front of `origin`, with the Pingora YAML `yaml`
    /// and Pingora's flags `args`.
    fn start(scratch: &Scratch, name: &str, yaml: &str, origin: &Origin, listen: &str) -> Alone {
        Alone::start_with(scratch, name, yaml, origin, listen, &[])
    }

    fn start_with(
        scratch: &Scratch,
        name: &str,
        yaml: &str,
        origin: &Origin,
        listen: &str,
        args: &[&str],
    ) -> Alone {
        Alone::start_program(
            &example("graceful-proxy"),
            scratch,
            name,
            yaml,
            origin,
            listen,
            args,
        )
    }

    fn start_program(
        program: &std::path::Path,
        scratch: &Scratch,
        name: &str,
        yaml: &str,
        origin: &Origin,
        listen: &str,
        args: &[&str],
    ) -> Alone {
        let yaml = scratch.write(&format!("{name}.yaml"), yaml);
        let log = scratch.path.join(format!("{name}.log"));
        let child = Command::new(program)
            .arg("-c")
            .arg(&yaml)
            .args(args)
            .env("LISTEN", listen)
            .env("UPSTREAM", &origin.addr)
            .env("HEALTH", format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn the example");
        Alone { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("signal the example");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The line the example writes after `steward.run(server)` returned.
    fn stopped_line(&self) -> String {
        format!("graceful-proxy pid {}: stopped", self.pid())
    }

    /// Its exit status, or a failed test if it still runs after `within`.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() >= end {
                panic!(
                    "the example still runs {within:?} after the signal; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request's outcome and when it ended.
type Outcome = (Result<(u16, String), String>, Instant);

/// `GET path` on `addr` from another thread.
fn request(addr: &str, path: &str) -> std::thread::JoinHandle<Outcome> {
    let (addr, path) = (addr.to_string(), path.to_string());
    std::thread::spawn(move || {
        let r = http_get(&addr, &path, Duration::from_secs(60));
        (r, Instant::now())
    })
}

/// The example, alone, listening on `listen`.
fn listening(scratch: &Scratch, yaml: &str, origin: &Origin, listen: &str) -> Alone {
    let server = Alone::start(scratch, "server", yaml, origin, listen);
    assert!(
        wait_accepting(listen, Duration::from_secs(10)),
        "the example never listened; log:\n{}",
        server.log()
    );
    server
}

type Request = std::thread::JoinHandle<Outcome>;

fn assert_answered(req: Request, log: &str) {
    let (result, _) = req.join().expect("request thread");
    assert_eq!(
        result.map(|(code, _)| code),
        Ok(200),
        "the request in flight; log:\n{log}"
    );
}

fn assert_cut(req: Request, log: &str) {
    let (result, _) = req.join().expect("request thread");
    assert!(
        result.as_ref().map_or(true, |(code, _)| *code != 200),
        "the request in flight was answered: {result:?}; log:\n{log}"
    );
}

#[test]
fn after_sigterm_and_the_drain_run_returns_and_main_ends_the_process_with_0() {
    let scratch = Scratch::new("library-run-returns");
    let origin = Origin::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = listening(&scratch, GRACE_300, &origin, &listen);
    let req = request(&listen, "/delay/1000");
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(20));
    let log = server.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert_answered(req, &log);
    assert!(log.contains(&server.stopped_line()), "log:\n{log}");
}

#[test]
fn sigint_while_draining_stops_at_once_cutting_the_request_in_flight() {
    let scratch = Scratch::new("library-sigint-draining");
    let origin = Origin::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = listening(&scratch, GRACE_300, &origin, &listen);
    let req = request(&listen, "/delay/10000");
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGINT);
    let status = server.wait_exit(Duration::from_secs(20));
    let log = server.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    // Waited for, the 10 s request would have been answered.
    assert_cut(req, &log);
    assert!(log.contains(&server.stopped_line()), "log:\n{log}");
}

#[test]
fn sigquit_hands_the_listeners_to_the_new_process_and_the_old_one_finishes_its_request() {
    // Pingora's own reload, as its docs' systemd unit does it: a new process with -u, then
    // SIGQUIT to the old one, which sends its listeners over the upgrade socket.
    let scratch = Scratch::new("library-sigquit");
    let origin = Origin::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let yaml = format!(
        "{GRACE_300}upgrade_sock: {}\n",
        scratch.path.join("upgrade.sock").display()
    );
    let mut old = Alone::start(&scratch, "old", &yaml, &origin, &listen);
    assert!(
        wait_accepting(&listen, Duration::from_secs(10)),
        "the old process never listened; log:\n{}",
        old.log()
    );
    // Longer than the 5 s the old process goes on accepting after the hand-off: Pingora
    // would then end it with its runtimes.
    let req = request(&listen, "/delay/7000");
    std::thread::sleep(Duration::from_millis(300));
    let mut new = Alone::start_with(&scratch, "new", &yaml, &origin, &listen, &["-u"]);
    old.signal(Signal::SIGQUIT);
    let status = old.wait_exit(Duration::from_secs(30));
    let log = old.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    let (result, _) = req.join().expect("request thread");
    assert_eq!(
        result.map(|(code, _)| code),
        Ok(200),
        "the old process's request in flight; log:\n{log}"
    );
    assert!(log.contains(&old.stopped_line()), "log:\n{log}");
    // The listener lives on in the new process.
    let after = http_get(&listen, "/", Duration::from_secs(10));
    assert_eq!(
        after.map(|(code, _)| code),
        Ok(200),
        "new process's log:\n{}",
        new.log()
    );
    new.signal(Signal::SIGTERM);
    let status = new.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "new process's log:\n{}", new.log());
}

#[test]
fn the_grace_period_bounds_the_drain_and_run_still_returns() {
    let scratch = Scratch::new("library-grace-bound");
    let origin = Origin::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let yaml = "---\nversion: 1\nthreads: 2\ngrace_period_seconds: 1\n";
    let mut server = listening(&scratch, yaml, &origin, &listen);
    let req = request(&listen, "/delay/10000");
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(20));
    let log = server.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    // Past the 1 s grace period the request is cut, not waited for.
    assert_cut(req, &log);
    assert!(log.contains(&server.stopped_line()), "log:\n{log}");
}

#[test]
fn a_server_that_keeps_run_forever_still_ends_when_drained() {
    // The library's fallback: Pingora's run_forever() would sleep out the 300 s grace
    // period after the drain; the library's thread ends the process once drained.
    let scratch = Scratch::new("library-run-forever");
    let origin = Origin::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Alone::start_program(
        &bin("library-run-forever"),
        &scratch,
        "server",
        GRACE_300,
        &origin,
        &listen,
        &[],
    );
    assert!(
        wait_accepting(&listen, Duration::from_secs(10)),
        "the server never listened; log:\n{}",
        server.log()
    );
    let req = request(&listen, "/delay/1000");
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(20));
    let log = server.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert_answered(req, &log);
}
