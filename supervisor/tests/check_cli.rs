//! `steward check` as a program: exit statuses, the JSON document CI pipelines read, the
//! human report, and the same findings stopping `steward run` at start-up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/check_fixtures")
        .join(case)
}

fn steward(dir: &Path, args: &[&str]) -> Output {
    steward_with_env(dir, args, &[])
}

/// `steward` with `env` set; STEWARD_STOP_TIMEOUT is unset unless `env` sets it, so that
/// the caller's environment cannot change a check.
fn steward_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_fixtures/bin");
    // `steward run` writes its effective conf here rather than in /run/steward: one
    // directory per call, since tests with the same arguments run at once and each removes
    // its directory when its steward is done.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let runtime = std::env::temp_dir().join(format!(
        "steward-check-cli-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .current_dir(dir)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("RUNTIME_DIRECTORY", &runtime)
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .env_remove("STEWARD_STOP_TIMEOUT")
        .envs(env.iter().copied())
        .output()
        .expect("steward runs");
    let _ = std::fs::remove_dir_all(&runtime);
    out
}

fn check(case: &str, extra: &[&str]) -> Output {
    let dir = fixture(case);
    let args = std::fs::read_to_string(dir.join("args")).expect("args");
    let mut all = vec!["check"];
    all.extend(args.split_whitespace());
    all.extend(extra);
    steward(&dir, &all)
}

/// `steward check` of a fixture case with STEWARD_STOP_TIMEOUT set to `timeout`.
fn check_with_stop_timeout(case: &str, timeout: &str, extra: &[&str]) -> Output {
    let dir = fixture(case);
    let args = std::fs::read_to_string(dir.join("args")).expect("args");
    let mut all = vec!["check"];
    all.extend(args.split_whitespace());
    all.extend(extra);
    steward_with_env(&dir, &all, &[("STEWARD_STOP_TIMEOUT", timeout)])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_clean_check_exits_0() {
    assert_eq!(check("steward-clean", &[]).status.code(), Some(0));
}

#[test]
fn infos_alone_exit_0() {
    assert_eq!(check("shipped", &[]).status.code(), Some(0));
}

#[test]
fn warnings_alone_exit_1() {
    assert_eq!(
        check("steward-kill-mode-process", &[]).status.code(),
        Some(1)
    );
}

#[test]
fn an_error_exits_2() {
    assert_eq!(
        check("pingora-documented-defaults", &[]).status.code(),
        Some(2)
    );
}

#[test]
fn contradictory_options_are_a_usage_error() {
    let o = steward(
        &fixture("steward-clean"),
        &[
            "check",
            "--config",
            "steward.toml",
            "--pingora-conf",
            "pingora.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn json_has_status_summary_inputs_and_located_findings() {
    let o = check("pingora-documented-defaults", &["--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(doc["status"], 2);
    assert_eq!(
        doc["summary"],
        serde_json::json!({"errors": 2, "warnings": 1, "infos": 0})
    );
    assert_eq!(doc["inputs"]["mode"], "pingora");
    assert_eq!(doc["inputs"]["unit"]["name"], "pingora.service");
    assert_eq!(doc["inputs"]["unit"]["via"], "unit file");
    assert_eq!(doc["inputs"]["pingora_conf"], "pingora.yaml");
    assert_eq!(doc["inputs"]["pingora_version"], "0.9.1");
    let first = &doc["findings"][0];
    for key in [
        "id", "severity", "what", "why", "fix", "file", "line", "column",
    ] {
        assert!(first.get(key).is_some(), "finding without {key}: {first}");
    }
    assert_eq!(first["id"], "stop-timeout-exceeded");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["file"], "pingora.yaml");
}

#[test]
fn defaults_under_the_documented_unit_say_how_the_stop_ends() {
    let out = stdout(&check("pingora-documented-defaults", &[]));
    assert!(
        out.contains("error[stop-timeout-exceeded]: systemctl stop will wait 90 s and then SIGKILL every process; in-flight requests are cut at a random point"),
        "{out}"
    );
    assert!(
        out.contains("grace_period_seconds 300 s (absent: Pingora's default)"),
        "{out}"
    );
    assert!(
        out.contains("fix: pingora.yaml: add grace_period_seconds: 80"),
        "{out}"
    );
}

#[test]
fn human_report_puts_the_worst_first_and_ends_with_a_summary() {
    let out = stdout(&check("pingora-alone-no-unit", &[]));
    let warning = out.find("warning[").expect("a warning");
    let info = out.find("info[").expect("an info");
    assert!(warning < info, "{out}");
    assert!(
        out.ends_with("steward check: 0 errors, 2 warnings, 3 infos\n"),
        "{out}"
    );
}

#[test]
fn users_example_shows_the_stop_it_always_waits_for() {
    let out = stdout(&check("pingora-documented-grace-30", &[]));
    assert!(
        out.contains("info[stop-waits-grace]: every systemctl stop takes 35 s, even with no request in flight"),
        "{out}"
    );
}

#[test]
fn parse_errors_show_file_line_and_column() {
    let out = stdout(&check("parse-error-pingora-type", &[]));
    assert!(out.contains("fix: pingora.yaml:3:10: "), "{out}");
    assert!(out.contains("expected usize"), "{out}");
}

#[test]
fn run_stops_with_78_on_an_error_finding_and_names_it() {
    // The readiness address is none of steward-proxy's listeners: the start could never succeed.
    let o = steward(
        &fixture("steward-ready-not-a-listener"),
        &["run", "--config", "steward.toml", "--log-target", "stderr"],
    );
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{log}");
    assert!(
        log.contains(
            "configuration error: steward.toml:9: steward's readiness probe can never pass"
        ),
        "{log}"
    );
    assert!(
        log.contains("steward_check=\"ready-not-a-listener\""),
        "{log}"
    );
    assert!(!log.contains("started child"), "{log}");
}

#[test]
fn run_logs_warnings_and_goes_on() {
    let dir = std::env::temp_dir().join(format!("steward-check-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::write(dir.join("pingora.yaml"), "version: 1\nuser: nobody\n").expect("yaml");
    std::fs::write(
        dir.join("steward.toml"),
        "[child]\ncommand = [\"my-pingora\"]\npingora_conf = \"pingora.yaml\"\n[ready]\ntcp = \"127.0.0.1:1\"\ntimeout = \"1s\"\n",
    )
    .expect("toml");
    let o = steward(
        &dir,
        &["run", "--config", "steward.toml", "--log-target", "stderr"],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("steward_check=\"user-ignored\""), "{log}");
    assert!(log.contains("started child"), "{log}");
}

#[test]
fn the_report_says_the_stop_timeout_came_from_the_environment() {
    let o = check_with_stop_timeout("steward-no-unit", "30", &[]);
    let out = stdout(&o);
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.contains("stop timeout 30 s from STEWARD_STOP_TIMEOUT")),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(0), "{out}");
}

#[test]
fn the_margin_is_checked_against_the_stop_timeout_from_the_environment() {
    // The default margin 5 s leaves nothing of 4 s; against systemd's 90 s it would fit.
    let o = check_with_stop_timeout("steward-no-unit", "4", &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("error[margin-exceeds-timeout]"), "{out}");
    assert!(out.contains("STEWARD_STOP_TIMEOUT 4 s"), "{out}");
}

#[test]
fn without_a_stop_timeout_in_the_environment_systemds_default_is_assumed() {
    let out = stdout(&check("steward-no-unit", &[]));
    assert!(
        out.contains("the stop checks assume TimeoutStopSec 90 s, systemd's default"),
        "{out}"
    );
}

#[test]
fn an_invalid_stop_timeout_in_the_environment_is_an_error_naming_it() {
    let o = check_with_stop_timeout("steward-no-unit", "soon", &["--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(o.status.code(), Some(2));
    let first = &doc["findings"][0];
    assert_eq!(first["id"], "parse-error", "{doc}");
    assert_eq!(first["severity"], "error", "{doc}");
    let what = first["what"].as_str().unwrap_or_default();
    assert!(what.starts_with("STEWARD_STOP_TIMEOUT=\"soon\""), "{what}");
}

#[test]
fn the_stop_timeout_option_outranks_the_environment() {
    let o = check_with_stop_timeout("steward-no-unit", "4", &["--stop-timeout", "30"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("stop timeout 30 s from --stop-timeout"),
        "{out}"
    );
}

#[test]
fn the_stop_timeout_option_with_a_unit_is_a_usage_error() {
    let o = check("steward-clean", &["--stop-timeout", "30"]);
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn a_unit_outranks_the_stop_timeout_in_the_environment() {
    // The unit's TimeoutStopSec is the timer that fires; the shell's variable is not the service's.
    let o = check_with_stop_timeout("steward-clean", "4", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn control_characters_from_the_files_read_are_escaped_in_the_report() {
    let dir = std::env::temp_dir().join(format!("steward-check-esc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    // `user` is quoted by the user-ignored finding; \e[2J would clear the terminal.
    std::fs::write(dir.join("pingora.yaml"), "version: 1\nuser: \"x\\e[2Jy\"\n").expect("yaml");
    std::fs::write(
        dir.join("steward.toml"),
        "[child]\ncommand = [\"my-pingora\"]\npingora_conf = \"pingora.yaml\"\n[ready]\ntcp = \"127.0.0.1:1\"\n",
    )
    .expect("toml");
    let o = steward(&dir, &["check", "--config", "steward.toml"]);
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("user-ignored"), "{out}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains("x\\u{1b}[2Jy"), "{out}");
}

/// `--print-effective`'s standard output split into its two documents: steward's
/// settings and the effective Pingora YAML.
fn effective_documents(o: &Output) -> (String, String) {
    let out = stdout(o);
    let at = out
        .find("# The effective Pingora conf")
        .unwrap_or_else(|| panic!("no Pingora document in:\n{out}"));
    (out[..at].to_string(), out[at..].to_string())
}

#[test]
fn print_effective_writes_the_configuration_to_stdout_and_the_verdict_to_stderr() {
    let o = check("steward-clean", &["--print-effective"]);
    assert_eq!(o.status.code(), Some(0));
    let (settings, yaml) = effective_documents(&o);
    assert!(settings.contains("[child]\ncommand = ["), "{settings}");
    assert!(yaml.contains("grace_period_seconds: 20"), "{yaml}");
    assert!(!stdout(&o).contains("steward check:"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("steward check: 0 errors"));
}

#[test]
fn the_printed_settings_are_a_configuration_steward_loads() {
    let dir = fixture("steward-clean");
    let (settings, _) = effective_documents(&check("steward-clean", &["-T"]));
    let config = steward::config::Config::parse(&dir.join("printed.toml"), &settings)
        .unwrap_or_else(|e| panic!("{e}\n{settings}"));
    assert_eq!(config.child.working_directory, dir);
    assert_eq!(
        config.child.pingora_conf.as_deref(),
        Some(dir.join("pingora.yaml").as_path())
    );
}

#[test]
fn the_printed_deadline_and_pingora_yaml_follow_the_stop_timeout() {
    let o = check_with_stop_timeout("steward-no-unit", "12", &["--print-effective"]);
    let (settings, yaml) = effective_documents(&o);
    assert!(
        settings.contains(
            "deadline = \"auto\"  # stop deadline 7 s = STEWARD_STOP_TIMEOUT 12 s - margin 5 s"
        ),
        "{settings}"
    );
    assert!(yaml.contains("grace_period_seconds: 7\n"), "{yaml}");
    assert!(yaml.contains("daemon: false\n"), "{yaml}");
}

#[test]
fn print_effective_of_a_config_that_does_not_load_says_why_on_stderr() {
    let o = check("parse-error-steward-toml", &["--print-effective"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to print"));
}
