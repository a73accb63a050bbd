//! A child that will not stop: it ignores SIGTERM, starts two grandchildren that ignore it
//! too (one in the child's process group, one that escapes into its own session), and
//! listens on a port so a readiness probe passes. Only SIGKILL ends it.
//!
//! Environment: `STUBBORN_LISTEN` (address to listen on), `STUBBORN_PIDFILE` (where to
//! write the pids of itself and its grandchildren, one per line), `STUBBORN_BIND_DELAY_MS`
//! (wait this long before listening). Any arguments (steward's `-c <conf>`) are ignored,
//! except the internal `grandchild` and `grandchild-setsid` roles.

use std::io::Write;
use std::time::Duration;

use nix::sys::signal::{signal, SigHandler, Signal};

fn ignore_term() {
    // SAFETY: installing SIG_IGN has no handler code to be unsafe about.
    unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.expect("ignore SIGTERM");
}

// The grandchildren are meant to be left unreaped: steward must find and kill them.
#[allow(clippy::zombie_processes)]
fn main() {
    ignore_term();
    let role = std::env::args().nth(1).unwrap_or_default();
    if role == "grandchild-setsid" {
        let _ = nix::unistd::setsid();
    }
    if role.starts_with("grandchild") {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let me = std::env::current_exe().expect("own path");
    let g1 = std::process::Command::new(&me)
        .arg("grandchild")
        .spawn()
        .expect("grandchild");
    let g2 = std::process::Command::new(&me)
        .arg("grandchild-setsid")
        .spawn()
        .expect("grandchild");
    if let Ok(path) = std::env::var("STUBBORN_PIDFILE") {
        let mut f = std::fs::File::create(&path).expect("pidfile");
        writeln!(f, "{}\n{}\n{}", std::process::id(), g1.id(), g2.id()).expect("write pids");
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
