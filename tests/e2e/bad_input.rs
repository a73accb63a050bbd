//! Bad input: one clear line naming the file (and line), exit 78, no panic.

use std::time::Duration;

use steward_e2e::*;

/// Runs steward on `toml` (with `{dir}` replaced by the scratch path) and returns its exit
/// code and log.
fn run(toml: &str, files: &[(&str, &str)]) -> (Option<i32>, String) {
    let scratch = Scratch::new("bad");
    for (name, text) in files {
        scratch.write(name, text);
    }
    let text = toml
        .replace("{dir}", &scratch.path.display().to_string())
        .replace("{proxy}", &bin("steward-proxy").display().to_string());
    let config = scratch.write("steward.toml", &text);
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let status = steward
        .wait(Duration::from_secs(10))
        .expect("steward exits");
    let log = steward.log_text();
    assert!(!log.contains("panicked"), "panic:\n{log}");
    assert!(!log.contains("RUST_BACKTRACE"), "backtrace hint:\n{log}");
    (status.code(), log)
}

fn assert_config_error(toml: &str, files: &[(&str, &str)], expect: &[&str]) {
    let (code, log) = run(toml, files);
    assert_eq!(code, Some(78), "log:\n{log}");
    for e in expect {
        assert!(log.contains(e), "expected {e:?} in:\n{log}");
    }
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line, got:\n{log}");
}

const OK_HEAD: &str = "runtime_dir = \"{dir}/run\"\n[child]\ncommand = [\"{proxy}\"]\n";
const READY: &str = "[ready]\ntcp = \"127.0.0.1:1\"\n";

#[test]
fn malformed_toml_names_file_and_line() {
    assert_config_error(
        "runtime_dir = \"{dir}/run\"\n[child]\ncommand = [\"{proxy}\"\n",
        &[],
        &[
            "steward.toml:4",
            "invalid array",
            "fix: correct the TOML syntax",
        ],
    );
}

#[test]
fn unknown_key_names_the_key_and_line() {
    assert_config_error(
        &format!("{OK_HEAD}{READY}[stop]\ndeadlin = \"5s\"\n"),
        &[],
        &["steward.toml:7", "deadlin"],
    );
}

#[test]
fn missing_child_program_is_a_config_error() {
    assert_config_error(
        "runtime_dir = \"{dir}/run\"\n[child]\ncommand = [\"/nonexistent/pingora\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n",
        &[],
        &["steward.toml:3", "/nonexistent/pingora", "fix:"],
    );
}

#[test]
fn non_executable_child_is_a_config_error() {
    assert_config_error(
        "runtime_dir = \"{dir}/run\"\n[child]\ncommand = [\"{dir}/plain.txt\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n",
        &[("plain.txt", "not a program")],
        &["not executable"],
    );
}

#[test]
fn missing_pingora_conf_is_a_config_error() {
    assert_config_error(
        &format!("{OK_HEAD}pingora_conf = \"{{dir}}/nope.yaml\"\n{READY}"),
        &[],
        &["nope.yaml", "steward.toml:4"],
    );
}

#[test]
fn unreadable_pingora_conf_is_a_config_error() {
    // A directory where the file should be cannot be read, even by root.
    assert_config_error(
        &format!("{OK_HEAD}pingora_conf = \"{{dir}}\"\n{READY}"),
        &[],
        &["cannot read the Pingora conf", "fix: child.pingora_conf"],
    );
}

#[test]
fn malformed_pingora_yaml_names_file_and_line() {
    assert_config_error(
        &format!("{OK_HEAD}pingora_conf = \"{{dir}}/p.yaml\"\n{READY}"),
        &[("p.yaml", "version: 1\ngrace_period_seconds: [30\n")],
        &["p.yaml:", "invalid YAML"],
    );
}

#[test]
fn non_numeric_grace_period_is_a_config_error() {
    assert_config_error(
        &format!("{OK_HEAD}pingora_conf = \"{{dir}}/p.yaml\"\n{READY}"),
        &[("p.yaml", "version: 1\ngrace_period_seconds: soon\n")],
        &["p.yaml:2", "whole number"],
    );
}

#[test]
fn zero_deadline_is_a_config_error() {
    assert_config_error(
        &format!("{OK_HEAD}{READY}[stop]\ndeadline = \"0s\"\n"),
        &[],
        &["steward.toml:7", "zero"],
    );
}

#[test]
fn absurd_deadline_is_a_config_error() {
    assert_config_error(
        &format!("{OK_HEAD}{READY}[stop]\ndeadline = \"3000h\"\n"),
        &[],
        &["steward.toml:7", "longer than"],
    );
}

/// Issue 11, finding 7: `health.interval = "1ns"` was accepted and burnt 79 % of a core.
#[test]
fn a_duration_under_its_minimum_is_a_config_error() {
    assert_config_error(
        &format!("{OK_HEAD}{READY}[health]\ninterval = \"1ns\"\n"),
        &[],
        &[
            "steward.toml:7",
            "health.interval 1ns is shorter than the minimum of 100 ms",
        ],
    );
}

#[test]
fn garbage_duration_is_a_config_error() {
    assert_config_error(
        &format!("{OK_HEAD}{READY}[stop]\nmargin = \"a bit\"\n"),
        &[],
        &["steward.toml:7", "margin"],
    );
}

#[test]
fn missing_config_file_is_a_config_error() {
    let scratch = Scratch::new("noconf");
    let mut steward = Steward::start(&scratch.path, &scratch.path.join("absent.toml"), &[]);
    let status = steward.wait(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(78));
    assert!(steward
        .log_text()
        .contains("absent.toml: cannot read the configuration"));
}

#[test]
fn child_config_error_surfaces_as_78() {
    // steward-proxy itself refuses a broken proxy.toml with 78 before it ever serves.
    let (code, log) = run(
        &format!("runtime_dir = \"{{dir}}/run\"\n[child]\ncommand = [\"{{proxy}}\", \"--proxy-config\", \"{{dir}}/proxy.toml\"]\n{READY}"),
        &[("proxy.toml", "listen = [\"127.0.0.1:1\"]\nupstream = []\n")],
    );
    assert_eq!(code, Some(78), "log:\n{log}");
    assert!(log.contains("proxy.toml:2"), "log:\n{log}");
}

/// Issue 11, finding 7: a configuration in a directory whose name is not UTF-8 had its
/// relative `pingora_conf` written lossily (as another path) into the effective conf.
#[test]
fn a_pingora_conf_path_that_is_not_utf8_is_a_config_error_naming_the_key() {
    use std::os::unix::ffi::OsStrExt;
    let scratch = Scratch::new("bad-utf8");
    let dir = scratch.path.join(std::ffi::OsStr::from_bytes(b"conf-\xff"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("pingora.yaml"), "version: 1\n").expect("yaml");
    let config = dir.join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\npingora_conf = \"pingora.yaml\"\n{READY}",
            scratch.path.display(),
            bin("steward-proxy").display()
        ),
    )
    .expect("toml");
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let status = steward
        .wait(Duration::from_secs(10))
        .expect("steward exits");
    let log = steward.log_text();
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(
        log.contains("pingora_conf") && log.contains("not valid UTF-8"),
        "{log}"
    );
    assert!(started_child_pids(&log).is_empty(), "{log}");
}
