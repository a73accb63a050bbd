//! Issue 11's local attacks, findings 1 to 4, reproduced as an ordinary local user against
//! the release binaries: steward runs as root, and the attacker is a throw-away account
//! ([`Attacker`]) made for each test. Each test stages the attack as the issue describes
//! it and asserts what steward must do instead of what it did:
//!
//! 1. a runtime directory under a parent another user controls is refused at start, and
//!    the upgrade socket's listeners go to nobody but the generation they are for;
//! 2. nothing an ordinary user plants in the runtime directory (a `check.log` symlink or
//!    file, a listener at `upgrade.sock`) makes steward write to it or send to it;
//! 3. a `-t` check that prints 200 MB on one line leaves steward's memory, status and log
//!    small;
//! 4. a FIFO or `/dev/zero` in place of a configuration file neither hangs steward nor
//!    grows its memory; `steward check` on one exits at once with an error.
//!
//! They need root (an account, chown, running as another uid). Without root they print
//! SKIPPED, except under CI=true, where a skip would hide a regression. SECURITY.md lists
//! the promise each one proves.

use std::io::BufRead;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use steward_e2e::*;

/// True when the test may run; prints SKIPPED otherwise (fails under CI).
fn root(test: &str) -> bool {
    needs_root(
        test,
        "a throw-away user account, chown, commands run as that user",
    )
}

/// A scratch directory (in /tmp) only root can write to, whatever the umask: the parent
/// checks of the runtime directory must find nothing wrong above what a test stages.
fn scratch(name: &str) -> Scratch {
    let s = Scratch::new(name);
    chmod(&s.path, 0o755);
    s
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A directory at `p` owned by root, with exactly `mode` (sticky bit included).
fn root_dir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).expect("mkdir");
    chmod(p, mode);
}

/// A steward.toml supervising `program` (steward-proxy or a wrapper around it), with its
/// runtime directory at `rt` and steward owning the listeners (so every generation gets
/// them through the upgrade socket); `more` is appended (tables).
fn config(scratch: &Scratch, rt: &Path, program: &Path, more: &str) -> (PathBuf, ProxyAddrs) {
    let a = proxy_settings(scratch);
    let yaml = scratch.write("pingora.yaml", common_yaml());
    let path = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}\"\n[child]\ncommand = [\"{}\", \"--proxy-config\", \"{}\"]\npingora_conf = \"{}\"\n[ready]\nhttp = \"http://{}/health\"\ntimeout = \"20s\"\n[sockets]\nlisten = [\"{}\", \"{}\"]\n{more}",
            rt.display(),
            program.display(),
            a.settings.display(),
            yaml.display(),
            a.health,
            a.proxy,
            a.origin
        ),
    );
    (path, a)
}

fn common_yaml() -> &'static str {
    "---\nversion: 1\nthreads: 2\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n"
}

/// A child program for `config`: `-t` (the reload's check) runs `on_check` (shell), then
/// steward-proxy; a serving run execs steward-proxy.
fn wrapper(scratch: &Scratch, on_check: &str) -> PathBuf {
    scratch.write_executable(
        "wrapper.sh",
        &format!(
            "#!/bin/sh\ncase \" $* \" in *\" -t \"*) {on_check}\n;; esac\nexec {} \"$@\"\n",
            bin("steward-proxy").display()
        ),
    )
}

/// What a start came to within 20 s.
#[derive(Debug)]
enum Outcome {
    /// steward exited with this code.
    Exited(Option<i32>),
    /// steward serves and answers on its control socket.
    Serving,
}

fn start_outcome(s: &mut Steward, control: &Path) -> Outcome {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = s.child.try_wait().expect("try_wait") {
            return Outcome::Exited(st.code());
        }
        let (code, out) = steward_cli("status", control);
        if code == Some(0) && out.contains("serving") {
            return Outcome::Serving;
        }
        if Instant::now() >= end {
            panic!(
                "steward neither served nor exited within 20 s: {out}\nlog:\n{}",
                s.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut s: Steward) {
    s.signal(Signal::SIGTERM);
    match s.wait(Duration::from_secs(20)) {
        Some(st) => assert_eq!(st.code(), Some(0), "log:\n{}", s.log_text()),
        None => panic!("steward did not stop; log:\n{}", s.log_text()),
    }
}

/// Whether `text` names `p` itself, not only a path below it.
fn names_path(text: &str, p: &Path) -> bool {
    let p = p.display().to_string();
    text.match_indices(&p)
        .any(|(i, _)| !text[i + p.len()..].starts_with('/'))
}

/// Whether `text` names the attacker: by uid, or by account name.
fn names_owner(text: &str, atk: &Attacker) -> bool {
    text.contains(&format!("uid {}", atk.uid))
        || atk.name.as_deref().is_some_and(|n| text.contains(n))
}

/// `steward <args>` as a client, for at most 10 s: (exit code, output, how long it took);
/// a client that does not return within 10 s fails the test.
fn client_within(args: &[&str], socket: &Path, what: &str) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let out = output_within(
        Command::new(bin("steward"))
            .args(args)
            .arg("--socket")
            .arg(socket),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| {
        panic!(
            "`steward {}` ({what}) did not return within 10 s",
            args.join(" ")
        )
    });
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        t.elapsed(),
    )
}

/// The `unix-listen` fixture run as the attacker: a listener at a path, reporting every
/// connection and what came with it. Killed (by its pid) on drop.
struct AttackerListener {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl AttackerListener {
    /// Starts it at `at` as `atk` for at most `secs`; returns once it listens.
    fn start(atk: &Attacker, scratch: &Scratch, at: &Path, secs: u64) -> AttackerListener {
        let exe = world_copy(&scratch.path, "unix-listen");
        let mut child = atk
            .command(&exe)
            .arg(at)
            .arg(secs.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn unix-listen as the attacker");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut v) = sink.lock() {
                    v.push(line);
                }
            }
        });
        let l = AttackerListener { child, lines };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = l.lines();
            if seen.iter().any(|s| s.starts_with("listening")) {
                return l;
            }
            if let Some(bad) = seen.iter().find(|s| s.starts_with("cannot bind")) {
                panic!("the attacker's listener: {bad}");
            }
            if Instant::now() >= end {
                panic!("the attacker's listener did not start: {seen:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The connections that brought anything: bytes or descriptors.
    fn handed_anything(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with("conn ") && !l.starts_with("conn bytes=0 fds=0 "))
            .collect()
    }
}

impl Drop for AttackerListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------ finding 1: the runtime directory's parents

/// steward started with a runtime directory under `parent`, which `atk` controls: refused
/// at start with exit 73 and a message naming the parent and its owner (or, for a
/// writable parent, what is wrong with it), and the parent left as it was. Where steward
/// starts instead (the attack of finding 1), the failure shows what `atk` can now do.
fn refused_under(atk: &Attacker, scratch: &Scratch, parent: &Path, name_owner: bool) {
    let before = std::fs::symlink_metadata(parent).expect("parent");
    let rt = parent.join("rt");
    let (config, _) = config(scratch, &rt, &bin("steward-proxy"), "");
    let mut s = Steward::start(&scratch.path, &config, &[]);
    match start_outcome(&mut s, &rt.join("control.sock")) {
        Outcome::Serving => {
            // What the parent's other user can do now: rename steward's directory away
            // and put one of their own in its place.
            let (moved, out) = atk.sh(&format!(
                "cd {} && mv rt rt.gone && mkdir rt",
                parent.display()
            ));
            panic!(
                "steward started with runtime_dir {} under {} (owner uid {}, mode {:o}), which {} controls; \
                 that user then replaced the runtime directory with their own: {} {out}\nlog:\n{}",
                rt.display(),
                parent.display(),
                before.uid(),
                before.mode() & 0o7777,
                atk.label(),
                if moved { "succeeded" } else { "failed" },
                s.log_text()
            );
        }
        Outcome::Exited(code) => {
            let log = s.log_text();
            println!("{log}");
            assert_eq!(code, Some(73), "log:\n{log}");
            assert!(
                names_path(&log, parent),
                "the refusal does not name the parent {}:\n{log}",
                parent.display()
            );
            if name_owner {
                assert!(
                    names_owner(&log, atk),
                    "the refusal does not name the parent's owner, {}:\n{log}",
                    atk.label()
                );
            }
            assert!(started_child_pids(&log).is_empty(), "{log}");
        }
    }
    let after = std::fs::symlink_metadata(parent).expect("parent");
    assert_eq!(
        (after.uid(), after.gid(), after.mode(), after.ino()),
        (before.uid(), before.gid(), before.mode(), before.ino()),
        "steward changed the parent"
    );
    let left: Vec<_> = std::fs::read_dir(parent)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "steward created {left:?} in {}",
        parent.display()
    );
}

#[test]
fn runtime_dir_under_a_parent_an_ordinary_user_owns_is_refused_naming_the_parent_and_owner() {
    if !root(
        "runtime_dir_under_a_parent_an_ordinary_user_owns_is_refused_naming_the_parent_and_owner",
    ) {
        return;
    }
    let atk = Attacker::new();
    let scratch = scratch("atk-owned-parent");
    // As in the issue: /tmp/shared, made by the attacker in a public sticky directory.
    let public = scratch.path.join("public");
    root_dir(&public, 0o1777);
    let shared = public.join("shared");
    atk.must(&format!("mkdir -m 0755 {}", shared.display()));
    refused_under(&atk, &scratch, &shared, true);
}

#[test]
fn runtime_dir_under_a_group_writable_parent_without_the_sticky_bit_is_refused() {
    if !root("runtime_dir_under_a_group_writable_parent_without_the_sticky_bit_is_refused") {
        return;
    }
    let atk = Attacker::new();
    let scratch = scratch("atk-group-parent");
    // Root's directory, but the attacker's group may write to it: rename rt away included.
    let parent = scratch.path.join("team");
    root_dir(&parent, 0o770);
    std::os::unix::fs::chown(&parent, Some(0), Some(atk.gid)).expect("chgrp");
    chmod(&parent, 0o770);
    refused_under(&atk, &scratch, &parent, false);
}

#[test]
fn runtime_dir_under_a_world_writable_parent_without_the_sticky_bit_is_refused() {
    if !root("runtime_dir_under_a_world_writable_parent_without_the_sticky_bit_is_refused") {
        return;
    }
    let atk = Attacker::new();
    let scratch = scratch("atk-world-parent");
    let parent = scratch.path.join("open");
    root_dir(&parent, 0o777);
    refused_under(&atk, &scratch, &parent, false);
}

#[test]
fn runtime_dir_under_a_root_owned_sticky_world_writable_parent_is_accepted() {
    if !root("runtime_dir_under_a_root_owned_sticky_world_writable_parent_is_accepted") {
        return;
    }
    let scratch = scratch("atk-sticky-parent");
    // Like /tmp: mode 1777, owned by root. Another user can create entries in it but can
    // neither rename nor remove steward's.
    let public = scratch.path.join("public");
    root_dir(&public, 0o1777);
    let rt = public.join("rt");
    let (config, a) = config(&scratch, &rt, &bin("steward-proxy"), "");
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let control = rt.join("control.sock");
    match start_outcome(&mut s, &control) {
        Outcome::Serving => {}
        Outcome::Exited(code) => panic!("exit {code:?}; log:\n{}", s.log_text()),
    }
    let (code, out) = steward_cli("reload", &control);
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", s.log_text());
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    stop(s);
}

#[test]
fn an_ordinary_user_can_neither_replace_nor_enter_a_runtime_dir_in_a_sticky_parent() {
    if !root("an_ordinary_user_can_neither_replace_nor_enter_a_runtime_dir_in_a_sticky_parent") {
        return;
    }
    let atk = Attacker::new();
    let scratch = scratch("atk-sticky-reach");
    let public = scratch.path.join("public");
    root_dir(&public, 0o1777);
    let rt = public.join("rt");
    let (config, a) = config(&scratch, &rt, &bin("steward-proxy"), "");
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let control = rt.join("control.sock");
    match start_outcome(&mut s, &control) {
        Outcome::Serving => {}
        Outcome::Exited(code) => panic!("exit {code:?}; log:\n{}", s.log_text()),
    }
    let secret = scratch.write("secret", "root only\n");
    chmod(&secret, 0o600);
    // Each of finding 1's steps, tried by the attacker once steward runs.
    for attempt in [
        format!("mv {rt} {rt}.gone", rt = rt.display()),
        format!("rm -rf {}", rt.display()),
        format!("ln -s {} {}/check.log", secret.display(), rt.display()),
        format!("touch {}/upgrade.sock", rt.display()),
        format!("ls {}", rt.display()),
    ] {
        let (ok, out) = atk.sh(&attempt);
        assert!(!ok, "as {}: `{attempt}` succeeded: {out}", atk.label());
    }
    let m = std::fs::symlink_metadata(&rt).expect("rt");
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));
    let (code, out) = steward_cli("reload", &control);
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", s.log_text());
    assert_eq!(
        std::fs::read_to_string(&secret).expect("secret"),
        "root only\n"
    );
    // The check's output, where steward keeps it, is its own regular file.
    if let Ok(check) = std::fs::symlink_metadata(rt.join("check.log")) {
        assert!(check.is_file() && check.uid() == 0, "{check:?}");
    }
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    stop(s);
}

/// The defence behind the parent check (SO_PEERCRED): even a listener at the upgrade
/// socket that is not the generation being started gets nothing. Staged by giving the
/// attacker write access to the runtime directory once steward runs (what finding 1's
/// rename gave them) and by a child that, at the reload, never binds its own upgrade
/// socket: the attacker binds one there instead, as in the issue.
#[test]
fn a_listener_at_the_upgrade_socket_that_is_not_the_new_generation_gets_no_listeners() {
    if !root("a_listener_at_the_upgrade_socket_that_is_not_the_new_generation_gets_no_listeners") {
        return;
    }
    let atk = Attacker::new();
    let scratch = scratch("atk-peercred");
    let first = scratch.path.join("first-served");
    let second = scratch.path.join("second-started");
    // The first serving run is steward-proxy; the reload's generation only says it started
    // and waits (steward kills it when the hand-off fails).
    let program = scratch.write_executable(
        "wrapper.sh",
        &format!(
            "#!/bin/sh\ncase \" $* \" in *\" -t \"*) exec {proxy} \"$@\";; esac\nif [ -e {first} ]; then touch {second}; exec sleep 60; fi\ntouch {first}\nexec {proxy} \"$@\"\n",
            proxy = bin("steward-proxy").display(),
            first = first.display(),
            second = second.display()
        ),
    );
    let rt = scratch.path.join("run");
    let (config, a) = config(&scratch, &rt, &program, "");
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let control = rt.join("control.sock");
    match start_outcome(&mut s, &control) {
        Outcome::Serving => {}
        Outcome::Exited(code) => panic!("exit {code:?}; log:\n{}", s.log_text()),
    }
    let before = status_json(&control);
    chmod(&rt, 0o777);
    let sock = rt.join("upgrade.sock");
    let reload = {
        let control = control.clone();
        std::thread::spawn(move || steward_cli("reload", &control))
    };
    let end = Instant::now() + Duration::from_secs(20);
    while !second.exists() {
        assert!(
            Instant::now() < end,
            "the reload's generation did not start; log:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let listener = AttackerListener::start(&atk, &scratch, &sock, 30);
    let (code, out) = reload.join().expect("reload client");
    println!(
        "reload: {code:?} {out}\nattacker's listener: {:?}",
        listener.lines()
    );
    let handed = listener.handed_anything();
    assert!(
        handed.is_empty(),
        "steward handed the listeners to {}'s socket: {handed:?}\nlog:\n{}",
        atk.label(),
        s.log_text()
    );
    assert_ne!(code, Some(0), "the reload cannot have succeeded: {out}");
    // Refused by the peer check, which names who held the socket.
    assert!(
        out.contains("is held by pid") && out.contains("steward sent it nothing"),
        "{out}"
    );
    chmod(&rt, 0o700);
    let after = status_json(&control);
    assert_eq!(
        before["status"]["child_pid"], after["status"]["child_pid"],
        "{after}"
    );
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    drop(listener);
    stop(s);
}

// ------------------------------------------------ finding 2: entries planted in the runtime dir

/// A runtime directory that already exists, mode 1777, owned by root (steward's user), so
/// steward accepts it (and makes it 0700 at start): anyone could plant entries in it
/// before that.
fn public_runtime_dir(scratch: &Scratch) -> PathBuf {
    let rt = scratch.path.join("rt");
    root_dir(&rt, 0o1777);
    rt
}

/// What came of a start and one `steward reload`.
#[derive(Debug)]
enum Run {
    /// steward refused to start: exit code and log.
    Refused(Option<i32>, String),
    /// steward served; the reload's exit code and output.
    Reloaded(Option<i32>, String),
}

fn start_and_reload(s: &mut Steward, control: &Path) -> Run {
    match start_outcome(s, control) {
        Outcome::Exited(code) => Run::Refused(code, s.log_text()),
        Outcome::Serving => {
            let (code, out) = steward_cli("reload", control);
            Run::Reloaded(code, out)
        }
    }
}

/// steward either refused at start (73) naming the planted entry or the runtime directory
/// `rt` itself (which anyone could write into before the start), or it reloaded: then the
/// reload worked, or failed saying why with the entry's name.
fn refused_or_reloaded(run: &Run, rt: &Path, entry: &str, s: &Steward) {
    println!("{run:?}");
    match run {
        Run::Refused(code, log) => {
            assert_eq!(*code, Some(73), "log:\n{log}");
            assert!(
                log.contains(entry) || names_path(log, rt),
                "the refusal names neither {entry} nor {}:\n{log}",
                rt.display()
            );
        }
        Run::Reloaded(Some(0), _) => {}
        Run::Reloaded(code, out) => {
            assert_eq!(*code, Some(1), "{out}\nlog:\n{}", s.log_text());
            assert!(
                out.contains("reload failed") && out.contains(entry),
                "the failed reload does not name {entry}: {out}"
            );
        }
    }
}

#[test]
fn a_check_log_symlink_planted_by_an_ordinary_user_is_never_followed() {
    if !root("a_check_log_symlink_planted_by_an_ordinary_user_is_never_followed") {
        return;
    }
    let atk = Attacker::new();
    let scratch = scratch("atk-checklog-link");
    let secret = scratch.write("secret", "root only\n");
    chmod(&secret, 0o600);
    let rt = public_runtime_dir(&scratch);
    // No race needed: the link is there before steward starts.
    atk.must(&format!(
        "ln -s {} {}/check.log",
        secret.display(),
        rt.display()
    ));
    let (config, a) = config(&scratch, &rt, &bin("steward-proxy"), "");
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let run = start_and_reload(&mut s, &rt.join("control.sock"));
    let m = std::fs::metadata(&secret).expect("secret");
    assert_eq!(
        std::fs::read_to_string(&secret).expect("secret"),
        "root only\n",
        "steward wrote the check's output through {}'s symlink into a root-only file ({run:?})",
        atk.label()
    );
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    refused_or_reloaded(&run, &rt, "check.log", &s);
    if matches!(run, Run::Reloaded(..)) {
        assert_eq!(
            http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
            Ok(200)
        );
        stop(s);
    }
}

#[test]
fn a_check_log_file_planted_by_an_ordinary_user_never_receives_the_check_output() {
    if !root("a_check_log_file_planted_by_an_ordinary_user_never_receives_the_check_output") {
        return;
    }
    let atk = Attacker::new();
    let scratch = scratch("atk-checklog-file");
    let rt = public_runtime_dir(&scratch);
    // The attacker's own file, hard-linked into the runtime directory: once steward has
    // made the directory 0700, they still read it by its other name.
    let own = scratch.path.join("attacker");
    root_dir(&own, 0o700);
    std::os::unix::fs::chown(&own, Some(atk.uid), Some(atk.gid)).expect("chown");
    let mine = own.join("check-output");
    atk.must(&format!(
        "printf planted > {m} && chmod 0666 {m} && ln {m} {}/check.log",
        rt.display(),
        m = mine.display()
    ));
    let program = wrapper(&scratch, "echo CHECK-OUTPUT-OF-THE-RELOAD");
    let (config, a) = config(&scratch, &rt, &program, "");
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let run = start_and_reload(&mut s, &rt.join("control.sock"));
    let (_, seen) = atk.sh(&format!("cat {}", mine.display()));
    assert_eq!(
        seen,
        "planted",
        "steward wrote the check into {}'s file ({run:?})",
        atk.label()
    );
    refused_or_reloaded(&run, &rt, "check.log", &s);
    if matches!(run, Run::Reloaded(..)) {
        assert_eq!(
            http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
            Ok(200)
        );
        stop(s);
    }
}

#[test]
fn an_upgrade_socket_listener_planted_by_an_ordinary_user_gets_nothing() {
    if !root("an_upgrade_socket_listener_planted_by_an_ordinary_user_gets_nothing") {
        return;
    }
    let atk = Attacker::new();
    let scratch = scratch("atk-upgrade-plant");
    let rt = public_runtime_dir(&scratch);
    let sock = rt.join("upgrade.sock");
    let listener = AttackerListener::start(&atk, &scratch, &sock, 60);
    let (config, a) = config(&scratch, &rt, &bin("steward-proxy"), "");
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let run = start_and_reload(&mut s, &rt.join("control.sock"));
    println!("attacker's listener: {:?}", listener.lines());
    let handed = listener.handed_anything();
    assert!(
        handed.is_empty(),
        "steward handed the listeners to {}'s socket: {handed:?} ({run:?})",
        atk.label()
    );
    refused_or_reloaded(&run, &rt, "upgrade.sock", &s);
    // Whatever steward did, the attacker's entry is theirs: not steward's to delete.
    if let Ok(m) = std::fs::symlink_metadata(&sock) {
        assert_eq!(m.uid(), atk.uid);
    }
    if matches!(run, Run::Reloaded(..)) {
        assert_eq!(
            http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
            Ok(200)
        );
        stop(s);
    }
}

// ------------------------------------------------ finding 3: a huge `-t` output

#[test]
fn a_check_printing_200_mb_on_one_line_leaves_stewards_memory_status_and_log_small() {
    if !root("a_check_printing_200_mb_on_one_line_leaves_stewards_memory_status_and_log_small") {
        return;
    }
    let scratch = scratch("atk-huge-check");
    let program = wrapper(
        &scratch,
        "head -c 200000000 /dev/zero | tr '\\0' x; echo; echo 'the reason at the end'; exit 1",
    );
    let rt = scratch.path.join("run");
    let (config, a) = config(&scratch, &rt, &program, "");
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let control = rt.join("control.sock");
    match start_outcome(&mut s, &control) {
        Outcome::Serving => {}
        Outcome::Exited(code) => panic!("exit {code:?}; log:\n{}", s.log_text()),
    }
    let before = status_json(&control);
    let t = Instant::now();
    let out = output_within(
        Command::new(bin("steward"))
            .args(["reload", "--socket"])
            .arg(&control),
        Duration::from_secs(120),
    )
    .expect("steward reload returned within 120 s");
    let reply =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!(
        "reload: exit {:?} after {:?}, {} bytes of reply",
        out.status.code(),
        t.elapsed(),
        reply.len()
    );
    assert_eq!(out.status.code(), Some(1), "{:.2000}", reply);
    assert!(
        reply.contains("the reason at the end"),
        "the failure's reason is lost: {:.2000}",
        reply
    );
    assert!(
        reply.len() < 1024 * 1024,
        "reload reply of {} bytes",
        reply.len()
    );
    let check = std::fs::metadata(rt.join("check.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("check.log: {check} bytes");

    let (hwm, rss) = memory_kib(s.pid());
    println!("steward VmHWM {hwm} KiB, VmRSS {rss} KiB");
    assert!(
        hwm > 0 && hwm < 200 * 1024,
        "steward's peak memory: {hwm} KiB"
    );
    let t = Instant::now();
    let status = output_within(
        Command::new(bin("steward"))
            .args(["status", "--json", "--socket"])
            .arg(&control),
        Duration::from_secs(10),
    )
    .expect("steward status --json within 10 s");
    println!(
        "status --json: {} bytes in {:?}",
        status.stdout.len(),
        t.elapsed()
    );
    assert_eq!(status.status.code(), Some(0));
    assert!(
        status.stdout.len() < 1024 * 1024,
        "status --json is {} bytes",
        status.stdout.len()
    );
    let after: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status is JSON");
    assert_eq!(before["status"]["child_pid"], after["status"]["child_pid"]);
    let log = std::fs::metadata(&s.log).map(|m| m.len()).unwrap_or(0);
    assert!(log < 4 * 1024 * 1024, "steward's log grew to {log} bytes");
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    stop(s);
}

// ------------------------------------------------ finding 4: special files as configuration

/// steward serving with a 3 s stop deadline; its Pingora YAML's path.
fn serving_with_yaml(scratch: &Scratch) -> (Steward, PathBuf, PathBuf, ProxyAddrs) {
    let rt = scratch.path.join("run");
    let (config, a) = config(
        scratch,
        &rt,
        &bin("steward-proxy"),
        "[stop]\ndeadline = \"3s\"\n",
    );
    let mut s = Steward::start(&scratch.path, &config, &[]);
    let control = rt.join("control.sock");
    match start_outcome(&mut s, &control) {
        Outcome::Serving => {}
        Outcome::Exited(code) => panic!("exit {code:?}; log:\n{}", s.log_text()),
    }
    (s, control, scratch.path.join("pingora.yaml"), a)
}

/// After a SIGHUP that must fail on the YAML at `yaml`: the failure names it and says
/// `what`, steward still answers `status` at once, and SIGTERM ends it within its stop
/// deadline (3 s) and a margin.
fn sighup_fails_and_steward_stays_responsive(
    mut s: Steward,
    control: &Path,
    yaml: &Path,
    what: &str,
    a: &ProxyAddrs,
) {
    let before = status_json(control);
    s.signal(Signal::SIGHUP);
    let failed = s.wait_fact(
        &[("steward_event", "reload-failed")],
        Duration::from_secs(15),
    );
    let log = s.log_text();
    let line = failed
        .unwrap_or_else(|| panic!("no failed reload within 15 s; log:\n{log}"))
        .line;
    assert!(
        line.contains(&yaml.display().to_string()) && line.contains(what),
        "the failure does not name {} as {what}: {line}",
        yaml.display()
    );
    let (code, out, took) = client_within(&["status"], control, "after the SIGHUP");
    println!("status after the SIGHUP: {code:?} in {took:?}");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("serving"), "{out}");
    let after = status_json(control);
    assert_eq!(before["status"]["child_pid"], after["status"]["child_pid"]);
    assert_eq!(
        http_get(&a.proxy, "/", Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    let (hwm, _) = memory_kib(s.pid());
    println!("steward VmHWM {hwm} KiB");
    assert!(
        hwm > 0 && hwm < 200 * 1024,
        "steward's peak memory: {hwm} KiB"
    );
    let t = Instant::now();
    s.signal(Signal::SIGTERM);
    let st = s.wait(Duration::from_secs(3 + 10));
    println!("stopped after SIGTERM in {:?}: {st:?}", t.elapsed());
    assert_eq!(
        st.and_then(|st| st.code()),
        Some(0),
        "SIGTERM did not end steward within its 3 s stop deadline and a margin; log:\n{}",
        s.log_text()
    );
}

#[test]
fn pingora_conf_replaced_by_a_fifo_then_sighup_steward_answers_and_stops_on_sigterm() {
    if !root("pingora_conf_replaced_by_a_fifo_then_sighup_steward_answers_and_stops_on_sigterm") {
        return;
    }
    let scratch = scratch("atk-fifo-conf");
    let (s, control, yaml, a) = serving_with_yaml(&scratch);
    std::fs::remove_file(&yaml).expect("rm yaml");
    // No writer ever opens it: a blocking open() for reading would wait forever.
    nix::unistd::mkfifo(&yaml, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    sighup_fails_and_steward_stays_responsive(s, &control, &yaml, "FIFO", &a);
}

#[test]
fn pingora_conf_replaced_by_a_symlink_to_dev_zero_then_sighup_fails_naming_it_in_bounded_memory() {
    if !root(
        "pingora_conf_replaced_by_a_symlink_to_dev_zero_then_sighup_fails_naming_it_in_bounded_memory",
    ) {
        return;
    }
    let scratch = scratch("atk-zero-conf");
    let (s, control, yaml, a) = serving_with_yaml(&scratch);
    std::fs::remove_file(&yaml).expect("rm yaml");
    std::os::unix::fs::symlink("/dev/zero", &yaml).expect("symlink");
    sighup_fails_and_steward_stays_responsive(s, &control, &yaml, "character device", &a);
}

#[test]
fn steward_check_on_a_fifo_or_dev_zero_unit_file_exits_at_once_with_an_error() {
    // Needs no root: any user can point `steward check` at these.
    let scratch = scratch("atk-check-special");
    let fifo = scratch.path.join("steward.service");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    for (unit, what) in [
        (fifo.as_path(), "FIFO"),
        (Path::new("/dev/zero"), "character device"),
    ] {
        let t = Instant::now();
        let out = output_within(
            Command::new(bin("steward"))
                .args(["check", "--unit-file"])
                .arg(unit),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("steward check --unit-file {} ran over 10 s", unit.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        println!(
            "check --unit-file {}: exit {:?} in {:?}\n{text}",
            unit.display(),
            out.status.code(),
            t.elapsed()
        );
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains(&unit.display().to_string()) && text.contains(what),
            "the error does not name {} as a {what}:\n{text}",
            unit.display()
        );
        assert!(text.len() < 64 * 1024, "{} bytes of output", text.len());
    }
}
