//! Exit statuses that systemd's Restart= policy reads.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use steward_e2e::*;

fn script_config(scratch: &Scratch, script: &str, ready: &str) -> std::path::PathBuf {
    let path = scratch.write_executable("child.sh", script);
    scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\n[ready]\n{ready}\n",
            scratch.path.display(),
            path.display()
        ),
    )
}

#[test]
fn child_exit_code_is_passed_on() {
    let scratch = Scratch::new("exit3");
    let config = script_config(
        &scratch,
        "#!/bin/sh\nexit 3\n",
        &format!("tcp = \"127.0.0.1:{}\"", free_port()),
    );
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let status = steward.wait(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(3), "log:\n{}", steward.log_text());
    let ended = [
        ("steward_event", "ended-before-ready"),
        ("steward_child_exit_code", "3"),
    ];
    assert!(log_has(&steward.log_text(), &ended));
}

#[test]
fn without_restarts_a_child_killed_by_a_signal_gives_128_plus_n() {
    let scratch = Scratch::new("sig9");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = stubborn_config(&scratch, &listen, "[restart]\nmax_crashes = 0\n");
    let mut notify = NotifySocket::bind(&scratch.path);
    let mut steward = Steward::start(
        &scratch.path,
        &config,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("STUBBORN_LISTEN", listen),
        ],
    );
    assert!(notify
        .wait_for("READY=1", Duration::from_secs(10))
        .is_some());
    let child = steward.child_pid(Duration::from_secs(1)).expect("child");
    kill(Pid::from_raw(child), Signal::SIGKILL).expect("kill child");
    let status = steward.wait(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(137), "log:\n{}", steward.log_text());
    assert!(steward
        .log_text()
        .contains("ended on its own (signal 9 (SIGKILL))"));
}
