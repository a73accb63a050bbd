//! Faults around the runtime directory and the descriptors steward hands its children: an
//! unwritable or full directory, stale or foreign entries at steward's socket names, a
//! second steward on the same directory, a symlink or a foreign directory in place of it,
//! descriptors leaking into a child, and descriptors piling up across 100 reloads.
//!
//! Most need root (chown to another user, mounts in a private namespace). Without root
//! they print SKIPPED, except under CI=true, where a skip would hide a regression.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::USER_YAML;
use nix::sys::signal::Signal;
use steward_e2e::*;

const NOBODY: u32 = 65534;

/// True when the test may run; prints SKIPPED otherwise (fails under CI).
fn root(test: &str) -> bool {
    needs_root(test, "chown to another user, private mounts")
}

/// A steward.toml supervising steward-proxy (through `wrapper` when given) with its
/// runtime directory at `rt`; steward owns the listeners when `sockets`.
fn config(
    scratch: &Scratch,
    rt: &Path,
    sockets: bool,
    wrapper: Option<&Path>,
) -> (PathBuf, ProxyAddrs) {
    let a = proxy_settings(scratch);
    let yaml = scratch.write("pingora.yaml", USER_YAML);
    let program = wrapper
        .map(Path::to_path_buf)
        .unwrap_or_else(|| bin("steward-proxy"));
    let socks = if sockets {
        format!("[sockets]\nlisten = [\"{}\", \"{}\"]\n", a.proxy, a.origin)
    } else {
        String::new()
    };
    let path = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}\"\n[child]\ncommand = [\"{}\", \"--proxy-config\", \"{}\"]\npingora_conf = \"{}\"\n[ready]\nhttp = \"http://{}/health\"\ntimeout = \"20s\"\n{socks}",
            rt.display(),
            program.display(),
            a.settings.display(),
            yaml.display(),
            a.health
        ),
    );
    (path, a)
}

/// Starts `program args` as steward would be started by [`Steward::start`]: stderr in
/// `<dir>/steward.log`. `program` must exec steward, so the pid is steward's.
fn start_via(dir: &Path, program: &str, args: &[String]) -> Steward {
    start_with_stdout(dir, program, args, Stdio::null(), &[])
}

/// As [`start_via`], with steward's (and so its children's) stdout given.
fn start_with_stdout(
    dir: &Path,
    program: &str,
    args: &[String],
    stdout: Stdio,
    env: &[(&str, String)],
) -> Steward {
    let log = dir.join("steward.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .env_remove("INVOCATION_ID")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .expect("spawn steward");
    Steward {
        child,
        log,
        started: Instant::now(),
    }
}

fn steward_run_line(config: &Path) -> String {
    format!(
        "{} run --log-target stderr --config {}",
        bin("steward").display(),
        config.display()
    )
}

/// steward's exit code within 20 s, failing with its log otherwise.
fn exit_code(s: &mut Steward) -> Option<i32> {
    match s.wait(Duration::from_secs(20)) {
        Some(st) => st.code(),
        None => panic!("steward did not exit; log:\n{}", s.log_text()),
    }
}

fn wait_serving(s: &Steward, control: &Path) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = steward_cli("status", control);
        if code == Some(0) && out.contains("serving") {
            return;
        }
        if Instant::now() >= end {
            panic!("not serving: {out}\nlog:\n{}", s.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut s: Steward) {
    s.signal(Signal::SIGTERM);
    assert_eq!(exit_code(&mut s), Some(0), "log:\n{}", s.log_text());
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).expect("chown 65534");
}

/// Kinds of stale entries steward owns and must replace.
#[derive(Debug, Clone, Copy)]
enum Plant {
    File,
    DeadSocket,
    EmptyDir,
    Symlink,
}

const PLANTS: [Plant; 4] = [
    Plant::File,
    Plant::DeadSocket,
    Plant::EmptyDir,
    Plant::Symlink,
];

/// Plants `kind` at `at`; a symlink points at `outside`.
fn plant(kind: Plant, at: &Path, outside: &Path) {
    let _ = std::fs::remove_file(at);
    let _ = std::fs::remove_dir(at);
    match kind {
        Plant::File => std::fs::write(at, "stale").expect("plant file"),
        Plant::DeadSocket => {
            drop(std::os::unix::net::UnixListener::bind(at).expect("plant socket"))
        }
        Plant::EmptyDir => std::fs::create_dir(at).expect("plant dir"),
        Plant::Symlink => std::os::unix::fs::symlink(outside, at).expect("plant symlink"),
    }
}

/// A copy of one of the built binaries that another user can run: the build tree may be
/// private (CI clones into a 0700 directory).
fn world_copy(scratch: &Scratch, name: &str) -> PathBuf {
    let to = scratch.path.join(format!("{name}.copy"));
    std::fs::copy(bin(name), &to).expect("copy the binary");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

/// steward as nobody, supervising steward-proxy with its runtime directory at `rt`. Root
/// writes through mode bits, so a permission fault needs another user.
fn start_as_nobody(scratch: &Scratch, rt: &Path) -> Steward {
    let proxy = world_copy(scratch, "steward-proxy");
    let steward = world_copy(scratch, "steward");
    let (config, _) = config(scratch, rt, false, Some(&proxy));
    start_via(
        &scratch.path,
        "setpriv",
        &[
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            "--".into(),
            steward.display().to_string(),
            "run".into(),
            "--log-target".into(),
            "stderr".into(),
            "--config".into(),
            config.display().to_string(),
        ],
    )
}

fn private_dir(p: &Path) {
    std::fs::create_dir_all(p).expect("mkdir");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).expect("chmod");
}

// ---------------------------------------------------------------- unwritable

#[test]
fn runtime_dir_without_write_permission_exits_73_naming_the_fix() {
    if !root("runtime_dir_without_write_permission_exits_73_naming_the_fix") {
        return;
    }
    // Root writes through mode bits, so steward runs as nobody, who owns the 0500 directory.
    let scratch = Scratch::new("mode0500");
    std::fs::set_permissions(&scratch.path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let rt = scratch.path.join("run");
    std::fs::create_dir(&rt).expect("mkdir");
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    chown_nobody(&rt);
    let mut s = start_as_nobody(&scratch, &rt);
    assert_eq!(exit_code(&mut s), Some(73), "log:\n{}", s.log_text());
    let log = s.log_text();
    println!("{log}");
    assert!(
        log.contains(&format!(
            "runtime directory {}: is not writable: Permission denied",
            rt.display()
        )) && log.contains("chmod 0700"),
        "{log}"
    );
    assert_eq!(std::fs::read_dir(&rt).expect("ls").count(), 0);
}

#[test]
fn runtime_dir_under_an_unwritable_parent_exits_73_naming_the_fix() {
    if !root("runtime_dir_under_an_unwritable_parent_exits_73_naming_the_fix") {
        return;
    }
    let scratch = Scratch::new("parent");
    std::fs::set_permissions(&scratch.path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let rt = scratch.path.join("run");
    let mut s = start_as_nobody(&scratch, &rt);
    assert_eq!(exit_code(&mut s), Some(73), "log:\n{}", s.log_text());
    let log = s.log_text();
    println!("{log}");
    assert!(
        log.contains(&format!(
            "runtime directory {}: cannot create it: Permission denied",
            rt.display()
        )) && log.contains("choose another runtime_dir"),
        "{log}"
    );
    assert!(!rt.exists());
}

#[test]
fn runtime_dir_on_a_read_only_mount_exits_73_naming_the_fix() {
    if !root("runtime_dir_on_a_read_only_mount_exits_73_naming_the_fix") {
        return;
    }
    let scratch = Scratch::new("rofs");
    let mnt = scratch.path.join("ro");
    private_dir(&mnt);
    let (config, _) = config(&scratch, &mnt, false, None);
    let script = format!(
        "mount -t tmpfs -o ro,mode=0700,size=16k tmpfs {} && exec {}",
        mnt.display(),
        steward_run_line(&config)
    );
    let mut s = start_via(
        &scratch.path,
        "unshare",
        &[
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
    );
    assert_eq!(exit_code(&mut s), Some(73), "log:\n{}", s.log_text());
    let log = s.log_text();
    println!("{log}");
    assert!(
        log.contains(&format!(
            "runtime directory {}: is not writable: Read-only file system",
            mnt.display()
        )) && log.contains("mounted read-only"),
        "{log}"
    );
}

// ---------------------------------------------------------------- full

#[test]
fn full_runtime_dir_at_start_exits_73_and_leaves_nothing_half_written() {
    if !root("full_runtime_dir_at_start_exits_73_and_leaves_nothing_half_written") {
        return;
    }
    let scratch = Scratch::new("fullstart");
    let mnt = scratch.path.join("tiny");
    private_dir(&mnt);
    let listing = scratch.path.join("listing");
    let (config, _) = config(&scratch, &mnt, false, None);
    // Not exec: the listing must be taken inside the private mount namespace afterwards.
    let script = format!(
        "mount -t tmpfs -o size=16k,mode=0700 tmpfs {m} && (dd if=/dev/zero of={m}/fill bs=1k 2>/dev/null; true) && {run}; rc=$?; ls -A {m} > {l}; exit $rc",
        m = mnt.display(),
        run = steward_run_line(&config),
        l = listing.display()
    );
    let mut s = start_via(
        &scratch.path,
        "unshare",
        &[
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
    );
    assert_eq!(exit_code(&mut s), Some(73), "log:\n{}", s.log_text());
    let log = s.log_text();
    println!("{log}");
    assert!(
        log.contains(&format!(
            "runtime directory {}/pingora.yaml: cannot write: No space left on device",
            mnt.display()
        )) && log.contains("the file system is full"),
        "{log}"
    );
    // Only the filler: no conf, no temporary, no control socket.
    let left = std::fs::read_to_string(&listing).expect("listing");
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["fill"],
        "{left}"
    );
}

#[test]
fn full_runtime_dir_during_a_reload_fails_the_reload_and_the_old_generation_serves() {
    if !root("full_runtime_dir_during_a_reload_fails_the_reload_and_the_old_generation_serves") {
        return;
    }
    let scratch = Scratch::new("fullreload");
    let mnt = scratch.path.join("tiny");
    private_dir(&mnt);
    let (config, a) = config(&scratch, &mnt, true, None);
    let script = format!(
        "mount -t tmpfs -o size=64k,mode=0700 tmpfs {} && exec {}",
        mnt.display(),
        steward_run_line(&config)
    );
    let s = start_via(
        &scratch.path,
        "unshare",
        &[
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
    );
    // The directory as steward sees it, from outside its mount namespace.
    let inside = PathBuf::from(format!("/proc/{}/root{}", s.pid(), mnt.display()));
    let control = inside.join("control.sock");
    wait_serving(&s, &control);
    let before = status_json(&control);
    let conf_before = std::fs::read(inside.join("pingora.yaml")).expect("conf");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", inside.join("fill").display()))
        .arg("bs=1k")
        .stderr(Stdio::null())
        .status();
    let (code, out) = steward_cli("reload", &control);
    println!("{out}");
    assert_eq!(code, Some(1), "{out}\nlog:\n{}", s.log_text());
    assert!(
        out.contains("reload failed")
            && out.contains("pingora.next.yaml: cannot write: No space left on device"),
        "{out}"
    );
    let after = status_json(&control);
    assert_eq!(
        before["status"]["generation"],
        after["status"]["generation"]
    );
    assert_eq!(before["status"]["child_pid"], after["status"]["child_pid"]);
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    assert_eq!(
        std::fs::read(inside.join("pingora.yaml")).expect("conf"),
        conf_before
    );
    let names: Vec<String> = std::fs::read_dir(&inside)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("next")), "{names:?}");
    // With room again, the next reload works.
    std::fs::remove_file(inside.join("fill")).expect("rm fill");
    let (code, out) = steward_cli("reload", &control);
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", s.log_text());
    stop(s);
}

// ---------------------------------------------------------------- stale and foreign entries

/// steward starts past each kind of stale entry of its own at `name`, and a symlink's
/// target outside the directory is untouched.
fn stale_entries_are_replaced_at_start(name: &str) {
    for kind in PLANTS {
        let scratch = Scratch::new("stale");
        let rt = scratch.path.join("run");
        private_dir(&rt);
        let outside = scratch.write("outside", "not steward's");
        plant(kind, &rt.join(name), &outside);
        let (config, a) = config(&scratch, &rt, true, None);
        let s = Steward::start(&scratch.path, &config, &[]);
        wait_serving(&s, &rt.join("control.sock"));
        assert_eq!(
            http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
            Ok(200),
            "{kind:?}"
        );
        assert!(
            s.log_text().contains("replaced a stale"),
            "{kind:?}: {}",
            s.log_text()
        );
        let meta = std::fs::symlink_metadata(&outside).expect("outside");
        assert!(meta.is_file(), "{kind:?}");
        assert_eq!(
            std::fs::read_to_string(&outside).expect("read"),
            "not steward's"
        );
        stop(s);
    }
}

#[test]
fn stale_file_socket_dir_or_symlink_at_the_upgrade_socket_is_replaced_and_nothing_followed() {
    if !root(
        "stale_file_socket_dir_or_symlink_at_the_upgrade_socket_is_replaced_and_nothing_followed",
    ) {
        return;
    }
    stale_entries_are_replaced_at_start("upgrade.sock");
}

#[test]
fn stale_file_socket_dir_or_symlink_at_the_control_socket_is_replaced_and_nothing_followed() {
    if !root(
        "stale_file_socket_dir_or_symlink_at_the_control_socket_is_replaced_and_nothing_followed",
    ) {
        return;
    }
    stale_entries_are_replaced_at_start("control.sock");
}

/// An entry of another user at `name`: steward refuses to start and leaves it as it was.
fn foreign_entry_is_refused_at_start(name: &str) {
    for kind in [Plant::File, Plant::DeadSocket, Plant::Symlink] {
        let scratch = Scratch::new("foreign");
        let rt = scratch.path.join("run");
        private_dir(&rt);
        let outside = scratch.write("outside", "not steward's");
        let at = rt.join(name);
        plant(kind, &at, &outside);
        chown_nobody(&at);
        let before = std::fs::symlink_metadata(&at).expect("planted");
        let (config, _) = config(&scratch, &rt, true, None);
        let mut s = Steward::start(&scratch.path, &config, &[]);
        assert_eq!(exit_code(&mut s), Some(73), "{kind:?}: {}", s.log_text());
        let log = s.log_text();
        println!("{log}");
        assert!(
            log.contains(&format!("runtime directory {}: is a", at.display()))
                && log.contains(
                    "owned by uid 65534, not by steward's uid 0; steward leaves it alone"
                ),
            "{kind:?}: {log}"
        );
        let after = std::fs::symlink_metadata(&at).expect("still there");
        assert_eq!(
            (before.ino(), before.uid(), before.mtime()),
            (after.ino(), after.uid(), after.mtime())
        );
        assert_eq!(
            std::fs::read_to_string(&outside).expect("read"),
            "not steward's"
        );
        assert!(!rt.join("pingora.yaml").exists() || name == "upgrade.sock");
    }
}

#[test]
fn upgrade_socket_entry_of_another_user_is_refused_and_left_alone() {
    if !root("upgrade_socket_entry_of_another_user_is_refused_and_left_alone") {
        return;
    }
    foreign_entry_is_refused_at_start("upgrade.sock");
}

#[test]
fn control_socket_entry_of_another_user_is_refused_and_left_alone() {
    if !root("control_socket_entry_of_another_user_is_refused_and_left_alone") {
        return;
    }
    foreign_entry_is_refused_at_start("control.sock");
}

#[test]
fn stale_upgrade_socket_entry_at_a_reload_is_replaced() {
    if !root("stale_upgrade_socket_entry_at_a_reload_is_replaced") {
        return;
    }
    let scratch = Scratch::new("stalereload");
    let rt = scratch.path.join("run");
    let (config, a) = config(&scratch, &rt, true, None);
    let s = Steward::start(&scratch.path, &config, &[]);
    let control = rt.join("control.sock");
    wait_serving(&s, &control);
    let outside = scratch.write("outside", "not steward's");
    for kind in PLANTS {
        plant(kind, &rt.join("upgrade.sock"), &outside);
        let (code, out) = steward_cli("reload", &control);
        assert_eq!(code, Some(0), "{kind:?}: {out}\nlog:\n{}", s.log_text());
        assert_eq!(
            std::fs::read_to_string(&outside).expect("read"),
            "not steward's"
        );
    }
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    stop(s);
}

#[test]
fn foreign_upgrade_socket_entry_at_a_reload_fails_it_and_the_old_generation_serves() {
    if !root("foreign_upgrade_socket_entry_at_a_reload_fails_it_and_the_old_generation_serves") {
        return;
    }
    let scratch = Scratch::new("foreignreload");
    let rt = scratch.path.join("run");
    let (config, a) = config(&scratch, &rt, true, None);
    let s = Steward::start(&scratch.path, &config, &[]);
    let control = rt.join("control.sock");
    wait_serving(&s, &control);
    let before = status_json(&control);
    let at = rt.join("upgrade.sock");
    plant(Plant::File, &at, &at);
    chown_nobody(&at);
    let (code, out) = steward_cli("reload", &control);
    println!("{out}");
    assert_eq!(code, Some(1), "{out}\nlog:\n{}", s.log_text());
    assert!(
        out.contains("reload failed") && out.contains("owned by uid 65534"),
        "{out}"
    );
    let after = status_json(&control);
    assert_eq!(before["status"]["child_pid"], after["status"]["child_pid"]);
    assert_eq!(std::fs::read_to_string(&at).expect("left alone"), "stale");
    assert_eq!(std::fs::metadata(&at).expect("meta").uid(), NOBODY);
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    stop(s);
}

#[test]
fn second_steward_on_the_same_runtime_dir_refuses_to_start_and_touches_nothing() {
    if !root("second_steward_on_the_same_runtime_dir_refuses_to_start_and_touches_nothing") {
        return;
    }
    let first = Scratch::new("first");
    let rt = first.path.join("run");
    let (config1, a) = config(&first, &rt, true, None);
    let s1 = Steward::start(&first.path, &config1, &[]);
    let control = rt.join("control.sock");
    wait_serving(&s1, &control);
    let conf = rt.join("pingora.yaml");
    let conf_meta = std::fs::metadata(&conf).expect("conf");
    let sock_ino = std::fs::metadata(&control).expect("sock").ino();

    let second = Scratch::new("second");
    let (config2, _) = config(&second, &rt, true, None);
    let mut s2 = Steward::start(&second.path, &config2, &[]);
    assert_eq!(exit_code(&mut s2), Some(73), "log:\n{}", s2.log_text());
    let log = s2.log_text();
    println!("{log}");
    assert!(
        log.contains(&format!(
            "runtime directory {}: is a live socket: another steward is running with this runtime directory",
            control.display()
        )),
        "{log}"
    );
    assert!(started_child_pids(&log).is_empty(), "{log}");
    // The first one's conf and socket are as they were, and it still answers.
    let m = std::fs::metadata(&conf).expect("conf");
    assert_eq!(
        (m.ino(), m.mtime_nsec()),
        (conf_meta.ino(), conf_meta.mtime_nsec())
    );
    assert_eq!(std::fs::metadata(&control).expect("sock").ino(), sock_ino);
    let (code, out) = steward_cli("reload", &control);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    stop(s1);
}

// ---------------------------------------------------------------- the directory itself

#[test]
fn symlink_in_place_of_the_runtime_dir_is_refused_and_not_followed() {
    if !root("symlink_in_place_of_the_runtime_dir_is_refused_and_not_followed") {
        return;
    }
    let scratch = Scratch::new("rtlink");
    let target = scratch.path.join("elsewhere");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let rt = scratch.path.join("run");
    std::os::unix::fs::symlink(&target, &rt).expect("symlink");
    let (config, _) = config(&scratch, &rt, true, None);
    let mut s = Steward::start(&scratch.path, &config, &[]);
    assert_eq!(exit_code(&mut s), Some(73), "log:\n{}", s.log_text());
    let log = s.log_text();
    println!("{log}");
    assert!(
        log.contains(&format!(
            "runtime directory {}: is a symbolic link (to {}); steward does not follow it",
            rt.display(),
            target.display()
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::metadata(&target).expect("meta").mode() & 0o777,
        0o755
    );
    assert_eq!(std::fs::read_dir(&target).expect("ls").count(), 0);
}

#[test]
fn runtime_dir_of_another_user_is_refused_and_left_alone() {
    if !root("runtime_dir_of_another_user_is_refused_and_left_alone") {
        return;
    }
    let scratch = Scratch::new("rtforeign");
    let rt = scratch.path.join("run");
    std::fs::create_dir(&rt).expect("mkdir");
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    chown_nobody(&rt);
    let (config, _) = config(&scratch, &rt, true, None);
    let mut s = Steward::start(&scratch.path, &config, &[]);
    assert_eq!(exit_code(&mut s), Some(73), "log:\n{}", s.log_text());
    let log = s.log_text();
    println!("{log}");
    assert!(
        log.contains(&format!(
            "runtime directory {}: is owned by uid 65534, not by steward's uid 0; steward leaves it alone",
            rt.display()
        )),
        "{log}"
    );
    let m = std::fs::metadata(&rt).expect("meta");
    assert_eq!((m.mode() & 0o777, m.uid()), (0o755, NOBODY));
    assert_eq!(std::fs::read_dir(&rt).expect("ls").count(), 0);
}

// ---------------------------------------------------------------- descriptors

/// (fd, target) of every descriptor a process holds.
fn fds(pid: i32) -> Vec<(i32, String)> {
    let mut out = vec![];
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            let Some(n) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Ok(t) = std::fs::read_link(e.path()) {
                out.push((n, t.display().to_string()));
            }
        }
    }
    out.sort();
    out
}

fn socket_inodes(fds: &[(i32, String)]) -> HashSet<u64> {
    fds.iter()
        .filter_map(|(_, t)| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Inodes of the TCP sockets listening in `pid`'s network namespace.
fn listening_inodes(pid: i32) -> HashSet<u64> {
    let mut out = HashSet::new();
    for f in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) == Some(&"0A") {
                if let Some(ino) = cols.get(9).and_then(|i| i.parse().ok()) {
                    out.insert(ino);
                }
            }
        }
    }
    out
}

#[test]
fn children_get_no_descriptor_of_stewards_but_the_listeners() {
    if !root("children_get_no_descriptor_of_stewards_but_the_listeners") {
        return;
    }
    let scratch = Scratch::new("fdleak");
    // Lists what the child holds at exec time, that is everything steward let through,
    // on the stdout it inherited: steward's for a generation, check.log for `-t`. No
    // redirection in the script, so the shell opens nothing of its own but the script
    // (close-on-exec, filtered out below).
    let wrapper = scratch.write_executable(
        "wrapper.sh",
        &format!(
            "#!/bin/sh\necho \"ARGS $*\"\nls -l /proc/$$/fd\nexec {} \"$@\"\n",
            bin("steward-proxy").display()
        ),
    );
    let rt = scratch.path.join("run");
    let (config, a) = config(&scratch, &rt, true, Some(&wrapper));
    let out_path = scratch.path.join("stdout");
    let stdout = std::fs::File::create(&out_path).expect("stdout file");
    let notify = NotifySocket::bind(&scratch.path);
    let s = start_with_stdout(
        &scratch.path,
        bin("steward").to_str().expect("utf-8 path"),
        &[
            "run".into(),
            "--log-target".into(),
            "stderr".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        Stdio::from(stdout),
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
    );
    let control = rt.join("control.sock");
    wait_serving(&s, &control);
    // A reload runs the wrapper twice more: `-t` (the check) and the next generation.
    let (code, out) = steward_cli("reload", &control);
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", s.log_text());
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );

    let text = std::fs::read_to_string(&out_path).expect("stdout")
        + &std::fs::read_to_string(rt.join("check.log")).expect("check.log");
    println!("{text}");
    let mut seen_check = false;
    let mut serving = 0;
    let mut args = String::new();
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("ARGS ") {
            args = a.to_string();
            if args.contains("-t") {
                seen_check = true;
            } else {
                serving += 1;
            }
            continue;
        }
        let Some((left, target)) = line.split_once(" -> ") else {
            continue;
        };
        let fd: i32 = left
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .expect("fd number");
        let script = target == wrapper.display().to_string();
        assert!(
            fd <= 2 || script,
            "{args}: fd {fd} -> {target} leaked from steward into the child\n{text}"
        );
    }
    assert!(seen_check, "the -t check child was not seen");
    assert_eq!(serving, 2, "two generations expected");

    // After the hand-off the serving child shares no socket with steward but the listeners.
    let st = status_json(&control);
    let child = st["status"]["child_pid"].as_i64().expect("child pid") as i32;
    let steward_fds = fds(s.pid());
    let child_fds = fds(child);
    println!(
        "steward {}: {steward_fds:?}\nchild {child}: {child_fds:?}",
        s.pid()
    );
    let shared: HashSet<u64> = socket_inodes(&steward_fds)
        .intersection(&socket_inodes(&child_fds))
        .copied()
        .collect();
    let listening = listening_inodes(s.pid());
    assert_eq!(
        shared.len(),
        2,
        "the two listeners, nothing else: {shared:?}"
    );
    assert!(
        shared.is_subset(&listening),
        "{shared:?} not all listeners ({listening:?})"
    );
    stop(s);
}

#[test]
fn no_descriptor_accumulates_across_100_reloads() {
    if !root("no_descriptor_accumulates_across_100_reloads") {
        return;
    }
    let scratch = Scratch::new("fd100");
    let rt = scratch.path.join("run");
    let (config, a) = config(&scratch, &rt, true, None);
    let notify = NotifySocket::bind(&scratch.path);
    let s = Steward::start(
        &scratch.path,
        &config,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
    );
    let control = rt.join("control.sock");
    wait_serving(&s, &control);
    let mut steward_counts = vec![];
    let mut child_counts = vec![];
    for i in 1..=100 {
        let (code, out) = steward_cli("reload", &control);
        assert_eq!(code, Some(0), "reload {i}: {out}\nlog:\n{}", s.log_text());
        let st = status_json(&control);
        let child = st["status"]["child_pid"].as_i64().unwrap_or(0) as i32;
        steward_counts.push(fds(s.pid()).len());
        child_counts.push(fds(child).len());
    }
    println!("steward fds after each reload: {steward_counts:?}");
    println!("child fds after each reload: {child_counts:?}");
    // The first reloads settle (a drain poll, the last generation's check log); after that
    // the counts must stay flat, whatever the number of reloads.
    let settle = |v: &[usize]| {
        let tail = &v[10..];
        (
            *tail.iter().min().unwrap_or(&0),
            *tail.iter().max().unwrap_or(&0),
        )
    };
    // A sample can catch a descriptor that lives for a moment (a control connection, a
    // /proc table a blocking thread is reading, a config check's output): what matters is
    // that the floor does not rise and the spikes stay small.
    let (lo, hi) = settle(&steward_counts);
    assert!(
        hi - lo <= 6,
        "steward's descriptors vary {lo}..{hi}: {steward_counts:?}"
    );
    let floor = |v: &[usize]| *v.iter().min().unwrap_or(&0);
    assert!(
        floor(&steward_counts[80..]) <= floor(&steward_counts[10..30]),
        "steward's descriptor floor rose: {steward_counts:?}"
    );
    let (lo, hi) = settle(&child_counts);
    assert!(
        hi - lo <= 6,
        "children's descriptors vary {lo}..{hi}: {child_counts:?}"
    );

    // Exactly one generation at the end, once the last old one has drained.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let st = status_json(&control);
        let gens = st["status"]["generations"].as_array().map(Vec::len);
        let children: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", s.pid()))
            .expect("tasks")
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        if gens == Some(1) && children.len() == 1 {
            break;
        }
        if Instant::now() >= end {
            panic!("generations {gens:?}, children {children:?}\n{st}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    stop(s);
}

// ---------------------------------------------------------------- pids limit

/// A pids cgroup (v1 `pids` hierarchy, as on hybrid hosts) limited to `max` tasks.
struct PidsLimit {
    dir: PathBuf,
}

impl PidsLimit {
    fn new(name: &str, max: u32) -> Option<PidsLimit> {
        let base = Path::new("/sys/fs/cgroup/pids");
        if !base.join("cgroup.procs").exists() {
            return None;
        }
        let dir = base.join(format!("steward-e2e-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("pids.max"), max.to_string()).ok()?;
        Some(PidsLimit { dir })
    }

    fn current(&self) -> usize {
        std::fs::read_to_string(self.dir.join("pids.current"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for PidsLimit {
    fn drop(&mut self) {
        for p in self.procs() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_fork_bomb_at_its_pids_limit_is_ended_at_the_deadline_and_steward_keeps_working() {
    if !root("a_fork_bomb_at_its_pids_limit_is_ended_at_the_deadline_and_steward_keeps_working") {
        return;
    }
    let Some(limit) = PidsLimit::new("bomb", 64) else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("no pids cgroup hierarchy at /sys/fs/cgroup/pids on CI");
        }
        println!("SKIPPED: no pids cgroup hierarchy");
        return;
    };
    let scratch = Scratch::new("pids-limit");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\nenv = {{ STUBBORN_LISTEN = \"{listen}\", STUBBORN_FORKBOMB_DEPTH = \"8\" }}\n[ready]\ntcp = \"{listen}\"\n[stop]\ndeadline = \"1s\"\n",
            scratch.path.display(),
            bin("stubborn-child").display()
        ),
    );
    // steward enters the limited cgroup itself, so its child and the bomb are born in it,
    // as they would be in a unit with TasksMax=.
    let mut s = start_via(
        &scratch.path,
        "sh",
        &[
            "-c".into(),
            format!(
                "echo $$ > {}/cgroup.procs && exec {}",
                limit.dir.display(),
                steward_run_line(&config)
            ),
        ],
    );
    let end = Instant::now() + Duration::from_secs(20);
    while limit.current() < 64 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        limit.current(),
        64,
        "the bomb did not reach the limit; log:\n{}",
        s.log_text()
    );
    assert!(
        wait_accepting(&listen, Duration::from_secs(10)),
        "log:\n{}",
        s.log_text()
    );
    // A request the child never answers keeps the drain count at 1 until the deadline.
    let _held = std::net::TcpStream::connect(&listen).expect("connect");
    // Longer than tokio's default idle time for a blocking thread (10 s): the drain count
    // must find steward's blocking thread still there, since none can be created now.
    std::thread::sleep(Duration::from_secs(11));
    // At the limit, steward still answers on its control socket: it needs no new task.
    let (code, out) = steward_cli("status", &scratch.path.join("run/control.sock"));
    assert_eq!(code, Some(0), "{out}; log:\n{}", s.log_text());
    assert_eq!(limit.current(), 64, "the bomb let go of the limit");
    s.signal(Signal::SIGTERM);
    let code = exit_code(&mut s);
    let log = s.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    assert!(
        // The kill itself, not only the decision to kill.
        log_has(
            &log,
            &[
                ("steward_event", "killed"),
                ("steward_escalation", "deadline")
            ]
        ),
        "log:\n{log}"
    );
    let end = Instant::now() + Duration::from_secs(2);
    while !limit.procs().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(limit.procs(), Vec::<i32>::new(), "survivors; log:\n{log}");
}
