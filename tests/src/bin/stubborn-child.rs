//! A child that will not stop, and whose descendants try every way out of its process tree.
//! It ignores SIGTERM and starts processes that ignore it too:
//! - `grandchild`: stays in the child's process group;
//! - `grandchild-setsid`: escapes into a session of its own;
//! - `daemon`: double-forked (its parent exits at once) and in its own session, so it is
//!   re-parented away from the child;
//! - with `STUBBORN_FORKBOMB_DEPTH=N`, a `bomb`: a binary tree of processes N levels deep
//!   in its own session, each replacing any child that dies, so killing it one process at a
//!   time is a race against its forks. Under a pids limit, forks that fail are retried.
//!
//! It then listens on a port so a readiness probe passes. Only SIGKILL ends any of them.
//!
//! Environment: `STUBBORN_LISTEN` (address to listen on), `STUBBORN_PIDFILE` (every process
//! of the tree appends its pid, one per line, before the child listens; bomb processes
//! append theirs as they start), `STUBBORN_BIND_DELAY_MS` (wait this long before
//! listening). Arguments other than the internal roles (steward's `-c <conf>`) are ignored.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::wait;

fn ignore_term() {
    // SAFETY: installing SIG_IGN has no handler code to be unsafe about.
    unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.expect("ignore SIGTERM");
}

fn record(pid: u32) {
    if let Ok(path) = std::env::var("STUBBORN_PIDFILE") {
        // One short write with O_APPEND: lines from many processes never interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = f.write_all(format!("{pid}\n").as_bytes());
        }
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn me() -> std::path::PathBuf {
    std::env::current_exe().expect("own path")
}

/// Keeps two children of depth-1 alive for ever; a fork that fails is retried.
fn bomb(depth: u32) -> ! {
    record(std::process::id());
    if depth == 0 {
        sleep_forever();
    }
    let mut kids = 0;
    loop {
        while kids < 2 {
            match Command::new(me())
                .args(["bomb", &(depth - 1).to_string()])
                .spawn()
            {
                Ok(_) => kids += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        if wait().is_ok() {
            kids -= 1;
        }
    }
}

// The grandchildren are meant to be left unreaped: steward must find and kill them.
#[allow(clippy::zombie_processes)]
fn main() {
    ignore_term();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str).unwrap_or_default() {
        "grandchild" => sleep_forever(),
        "grandchild-setsid" | "daemon" => {
            let _ = nix::unistd::setsid();
            sleep_forever()
        }
        // The middle of the double fork: start the daemon, say who it is, and vanish.
        "daemonize" => {
            let d = Command::new(me()).arg("daemon").spawn().expect("daemon");
            record(d.id());
            std::process::exit(0);
        }
        "bomb" => {
            let _ = nix::unistd::setsid();
            bomb(args.get(2).and_then(|d| d.parse().ok()).unwrap_or(0))
        }
        _ => {}
    }
    record(std::process::id());
    for role in ["grandchild", "grandchild-setsid"] {
        let g = Command::new(me()).arg(role).spawn().expect("grandchild");
        record(g.id());
    }
    let mut middle = Command::new(me())
        .arg("daemonize")
        .spawn()
        .expect("daemonize");
    let _ = middle.wait();
    if let Ok(depth) = std::env::var("STUBBORN_FORKBOMB_DEPTH") {
        Command::new(me())
            .args(["bomb", &depth])
            .spawn()
            .expect("bomb");
    }
    if let Ok(ms) = std::env::var("STUBBORN_BIND_DELAY_MS") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
    }
    let addr = std::env::var("STUBBORN_LISTEN").unwrap_or_else(|_| "127.0.0.1:6388".into());
    let listener = std::net::TcpListener::bind(&addr).expect("listen");
    // Accept and hold connections forever: a request that never finishes.
    let mut held = vec![];
    for conn in listener.incoming().flatten() {
        held.push(conn);
    }
}
