//! steward upgraded in place: its binary replaced on disk, then a reload re-executes it
//! with the same pid, handing the listeners and the running generation to the new binary,
//! which then reloads as usual. A new binary that cannot take over fails the reload and
//! leaves the old steward serving. Real binaries, no systemd.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Kind, Opts, Setup, USER_YAML};
use steward_e2e::*;

/// Copies a program with `cp`: written in this process, the file would be open for
/// writing in every child another test thread forks meanwhile, and exec'ing it would fail
/// with ETXTBSY until those children exec.
fn copy_program(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp")
        .success();
    assert!(ok, "cp {} {}", from.display(), to.display());
}

/// The "installed" steward: a copy of the workspace's binary a test can replace.
fn installed(scratch: &Scratch) -> PathBuf {
    let path = scratch.path.join("steward");
    copy_program(&bin("steward"), &path);
    path
}

/// Replaces `path` with `new` as a package manager does: a new file renamed over it, so
/// the running binary keeps the old inode (now deleted).
fn replace(path: &Path, new: &Path) {
    let tmp = path.with_extension("new");
    copy_program(new, &tmp);
    std::fs::rename(&tmp, path).expect("rename over");
}

fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn generation(s: &Setup) -> (u64, i32, i64) {
    let v = status_json(&s.control());
    (
        v["status"]["generation"].as_u64().unwrap_or(0),
        v["status"]["child_pid"].as_i64().unwrap_or(0) as i32,
        v["status"]["pid"].as_i64().unwrap_or(0),
    )
}

fn start(program: &Path) -> Setup {
    let mut s = Setup::start_opts(
        Kind::StewardProxy,
        USER_YAML,
        "",
        true,
        "",
        Opts {
            program: Some(program),
            ..Opts::default()
        },
    );
    s.wait_ready();
    s
}

#[test]
fn a_replaced_steward_binary_is_re_executed_in_place_and_the_reload_continues_under_load() {
    let bins = Scratch::new("reexec-bin");
    let program = installed(&bins);
    let mut s = start(&program);
    let pid = s.steward.pid();
    let (gen, child, _) = generation(&s);
    assert_eq!(gen, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&s.proxy, "/", 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    replace(&program, &bin("steward"));
    assert!(exe_of(pid).ends_with("(deleted)"), "{}", exe_of(pid));
    let (code, out) = steward_cli("reload", &s.control());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (counts, errors) = load.join().expect("load");
    let log = s.steward.log_text();
    assert_eq!(code, Some(0), "{out}\nlog:\n{log}");
    assert!(out.contains("generation 2 serves"), "{out}");

    // Same process, now running the file on disk.
    let (gen, new_child, status_pid) = generation(&s);
    assert_eq!(status_pid, i64::from(pid));
    assert_eq!(exe_of(pid), program.display().to_string());
    // The old binary's child was adopted, then replaced by the successor's reload.
    assert!(
        log.contains(&format!("adopted generation 1 (child pid {child})")),
        "{log}"
    );
    assert_eq!(gen, 2);
    assert_ne!(new_child, child);
    // systemd hears one reload: no second READY=1 before the successor's generation
    // serves, and no MAINPID= (the pid never changed).
    let msgs = s.notify.messages();
    let count = |what: &str| msgs.iter().filter(|m| m.contains(what)).count();
    assert_eq!(
        (count("READY=1"), count("RELOADING=1"), count("MAINPID=")),
        (2, 1, 0),
        "{msgs:?}"
    );
    assert!(counts.ok > 0, "{counts:?}");
    assert_eq!(
        (counts.refused, counts.failed),
        (0, 0),
        "{errors:?}\nlog:\n{log}"
    );
}

#[test]
fn a_new_binary_that_cannot_take_over_fails_the_reload_and_the_old_steward_serves_on() {
    let bins = Scratch::new("reexec-broken");
    let program = installed(&bins);
    let s = start(&program);
    let pid = s.steward.pid();
    let (_, child, _) = generation(&s);
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&s.proxy, "/", 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    let broken = bins.write_executable("broken", "#!/bin/sh\necho 'segfault, say' >&2\nexit 1\n");
    replace(&program, &broken);
    let (code, out) = steward_cli("reload", &s.control());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (counts, errors) = load.join().expect("load");
    let log = s.steward.log_text();
    assert_eq!(code, Some(1), "{out}\nlog:\n{log}");
    assert!(
        out.contains("refused the hand-over: segfault, say"),
        "{out}"
    );

    assert!(process_alive(pid));
    assert!(exe_of(pid).ends_with("(deleted)"), "{}", exe_of(pid));
    assert_eq!(generation(&s), (1, child, i64::from(pid)));
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
    assert_eq!(
        (counts.refused, counts.failed),
        (0, 0),
        "{errors:?}\nlog:\n{log}"
    );
}

#[test]
fn a_new_file_that_is_not_executable_fails_the_reload_with_the_reason() {
    let bins = Scratch::new("reexec-noexec");
    let program = installed(&bins);
    let s = start(&program);
    let pid = s.steward.pid();
    let plain = bins.write("plain", "not a program\n");
    std::fs::rename(&plain, &program).expect("rename over");
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot be run"), "{out}");
    assert!(process_alive(pid));
    assert_eq!(generation(&s).0, 1);
}

#[test]
fn without_a_new_binary_a_reload_stays_in_the_same_program_image() {
    let bins = Scratch::new("reexec-same");
    let program = installed(&bins);
    let s = start(&program);
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(0), "{out}");
    assert!(!s.steward.log_text().contains("re-executing"));
    assert_eq!(exe_of(s.steward.pid()), program.display().to_string());
}

#[test]
fn a_new_binary_that_does_not_answer_its_check_fails_the_reload_after_the_check_timeout() {
    let bins = Scratch::new("reexec-hang");
    let program = installed(&bins);
    let s = start(&program);
    let pid = s.steward.pid();
    let hung = bins.write_executable("hung", "#!/bin/sh\nexec sleep 60\n");
    replace(&program, &hung);
    let (code, out) = steward_cli("reload", &s.control());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("did not answer `handover-check` within 10 s"),
        "{out}"
    );
    assert!(process_alive(pid));
    assert_eq!(generation(&s).0, 1);
}

/// `steward run` started as a successor whose hand-over (on descriptor 9) is `document`:
/// its exit code and log.
fn successor_with_handover(document: &str) -> (Option<i32>, String) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let scratch = Scratch::new("reexec-successor");
    let doc = scratch.write("handover.json", document);
    let file = std::fs::File::open(&doc).expect("open");
    let raw = file.as_raw_fd();
    let mut cmd = std::process::Command::new(bin("steward"));
    cmd.args([
        "run",
        "--log-target",
        "stderr",
        "--config",
        "/nonexistent.toml",
    ])
    .env("STEWARD_HANDOVER_FD", "9")
    .env_remove("NOTIFY_SOCKET");
    // SAFETY: runs between fork and exec; dup2 and fcntl are async-signal-safe and the
    // descriptor is owned by `file`, alive until the child has started.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set: clear it instead.
            let r = match raw {
                9 => libc::fcntl(9, libc::F_SETFD, 0),
                _ => libc::dup2(raw, 9),
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = output_within(&mut cmd, Duration::from_secs(10)).expect("steward exits");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_successor_refuses_a_handover_of_a_version_it_does_not_read() {
    let (code, log) = successor_with_handover("{\"version\": 2}");
    assert_eq!(code, Some(70), "{log}");
    assert!(
        log.contains("cannot take over from the previous steward binary: hand-over format version 2 is not one this steward reads"),
        "{log}"
    );
}

#[test]
fn a_successor_refuses_a_handover_that_is_not_one() {
    let (code, log) = successor_with_handover("garbage");
    assert_eq!(code, Some(70), "{log}");
    assert!(
        log.contains("the hand-over is not a steward hand-over"),
        "{log}"
    );
}

#[test]
fn a_stop_during_the_new_binarys_check_stops_steward_instead_of_upgrading_it() {
    let bins = Scratch::new("reexec-stop");
    let program = installed(&bins);
    let mut s = start(&program);
    let pid = s.steward.pid();
    let (_, child, _) = generation(&s);
    // A new binary whose check takes 2 s, and which is steward itself otherwise.
    let slow = bins.write_executable(
        "slow",
        &format!(
            "#!/bin/sh\n[ \"$1\" = handover-check ] && sleep 2\nexec {} \"$@\"\n",
            bin("steward").display()
        ),
    );
    replace(&program, &slow);
    let control = s.control();
    let reload = std::thread::spawn(move || steward_cli("reload", &control));
    assert!(s
        .steward
        .wait_log("before re-executing in place", Duration::from_secs(5)));
    s.steward.signal(nix::sys::signal::Signal::SIGTERM);
    let status = s.steward.wait(Duration::from_secs(20));
    let (code, out) = reload.join().expect("reload");
    let log = s.steward.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert_eq!(code, Some(1), "{out}");
    assert!(!log.contains("re-executing in place as"), "{log}");
    assert!(
        !process_alive(child),
        "child pid {child} outlived steward pid {pid}"
    );
}

fn open_fds(pid: i32) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn an_upgrade_leaves_no_descriptor_behind() {
    let bins = Scratch::new("reexec-fds");
    let program = installed(&bins);
    let s = start(&program);
    let pid = s.steward.pid();
    // One upgrade first: the first reload of a steward opens what every later one reuses.
    replace(&program, &bin("steward"));
    assert_eq!(steward_cli("reload", &s.control()).0, Some(0));
    // The retired generation's drain and kill read /proc on the I/O worker for a moment.
    let settled = || {
        let mut fds = open_fds(pid);
        fds.retain(|f| !f.contains(" -> /proc/"));
        fds
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = settled();
    for _ in 0..3 {
        replace(&program, &bin("steward"));
        let (code, out) = steward_cli("reload", &s.control());
        assert_eq!(code, Some(0), "{out}");
    }
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let mut after = settled();
    while after.len() > before.len() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        after = settled();
    }
    assert_eq!(
        after.len(),
        before.len(),
        "before: {before:#?}\nafter: {after:#?}"
    );
}
