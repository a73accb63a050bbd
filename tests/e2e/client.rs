//! `steward status` (and the other control commands) as an operator runs them: with
//! `-c FILE` rather than `--socket`, against a steward that runs or one that does not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use steward_e2e::*;

/// `steward <args>` with no runtime directory from the environment (the default socket is
/// then /run/steward's or /tmp's, never one a test made); exit code, stdout, stderr.
fn steward(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(bin("steward"))
        .args(args)
        .arg("-c")
        .arg(config)
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run steward");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A ready steward supervising the stubborn child (which ignores SIGTERM: a stop ends it
/// at the 1 s deadline), and its configuration file.
fn running(scratch: &Scratch) -> (Steward, PathBuf) {
    let listen = format!("127.0.0.1:{}", free_port());
    let config = stubborn_config(scratch, &listen, "[stop]\ndeadline = \"1s\"\n");
    let mut notify = NotifySocket::bind(&scratch.path);
    let steward = Steward::start(
        &scratch.path,
        &config,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("STUBBORN_LISTEN", listen),
        ],
    );
    assert!(
        notify
            .wait_for("READY=1", Duration::from_secs(10))
            .is_some(),
        "log:\n{}",
        steward.log_text()
    );
    (steward, config)
}

#[test]
fn status_with_a_config_that_no_longer_loads_says_why_and_still_finds_steward() {
    let scratch = Scratch::new("client-broken");
    let (_steward, config) = running(&scratch);
    // The operator is mid-edit: a misspelt key.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("deadlin = \"10s\"\n{text}")).expect("write");
    let (code, out, err) = steward(&["status"], &config);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("serving"), "{out}{err}");
    assert!(
        err.contains("configuration error")
            && err.contains("unknown field")
            && err.contains("deadlin"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}/run/control.sock", scratch.path.display()))
            && err.contains("its runtime_dir nevertheless"),
        "{err}"
    );
}

#[test]
fn status_with_a_config_that_cannot_be_read_says_why_and_which_socket_it_tried() {
    let scratch = Scratch::new("client-missing");
    let config = scratch.path.join("nowhere.toml");
    let (code, out, err) = steward(&["status"], &config);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("nowhere.toml") && err.contains("cannot read the configuration"),
        "{err}"
    );
    assert!(
        err.contains("the default runtime directory") && err.contains("control.sock"),
        "{err}"
    );
}

#[test]
fn status_exits_3_when_no_control_socket_exists() {
    let scratch = Scratch::new("client-absent");
    let (code, out) = steward_cli("status", &scratch.path.join("run/control.sock"));
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("cannot reach steward"), "{out}");
}

#[test]
fn status_exits_3_once_steward_has_stopped() {
    let scratch = Scratch::new("client-stopped");
    let (mut running, config) = running(&scratch);
    assert_eq!(steward(&["status"], &config).0, Some(0));
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let status = running.wait(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", running.log_text());
    let (code, out, err) = steward(&["status"], &config);
    assert_eq!(code, Some(3), "{out}{err}");
}

#[test]
fn status_exits_3_on_a_socket_file_nobody_listens_on() {
    let scratch = Scratch::new("client-stale");
    let path = scratch.path.join("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let (code, out) = steward_cli("status", &path);
    assert_eq!(code, Some(3), "{out}");
}

#[test]
fn reload_and_restart_of_a_steward_that_is_not_running_still_exit_69() {
    let scratch = Scratch::new("client-absent-reload");
    let path = scratch.path.join("run/control.sock");
    for command in ["reload", "restart"] {
        let (code, out) = steward_cli(command, &path);
        assert_eq!(code, Some(69), "{command}: {out}");
    }
}

#[test]
fn status_of_a_steward_that_does_not_answer_in_time_still_exits_69() {
    let scratch = Scratch::new("client-silent");
    let path = scratch.path.join("control.sock");
    // Listening, never accepting: the connection is queued and nothing ever answers.
    let _silent = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let (code, out) = steward_cli("status", &path);
    assert_eq!(code, Some(69), "{out}");
    assert!(out.contains("no reply"), "{out}");
}

#[test]
fn status_shows_when_steward_and_its_child_started_beside_how_long_ago() {
    let scratch = Scratch::new("client-since");
    let (_steward, config) = running(&scratch);
    let (code, out, err) = steward(&["status"], &config);
    assert_eq!(code, Some(0), "{out}{err}");
    let line = out.lines().next().unwrap_or_default();
    // "... up 0.4 s (since 2026-11-30 11:20:01 UTC), child serving for 0.3 s (since ...)".
    let stamps: Vec<&str> = line
        .split("(since ")
        .skip(1)
        .filter_map(|rest| rest.split(" UTC)").next())
        .collect();
    assert_eq!(stamps.len(), 2, "{line}");
    // Started within the last minute, as this machine's clock says.
    let now = Command::new("date")
        .args(["-u", "+%s"])
        .output()
        .expect("date");
    let now: i64 = String::from_utf8_lossy(&now.stdout)
        .trim()
        .parse()
        .expect("epoch");
    for stamp in stamps {
        let out = Command::new("date")
            .args(["-u", "-d", &format!("{stamp} UTC"), "+%s"])
            .output()
            .expect("date -d");
        let at: i64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a date: {stamp:?} in {line}"));
        assert!(
            (0..60).contains(&(now - at)),
            "{stamp} vs now {now}: {line}"
        );
    }
}
