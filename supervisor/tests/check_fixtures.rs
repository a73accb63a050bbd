//! The table of `steward check` fixture sets: each case directory under
//! `tests/check_fixtures/` holds a unit, steward's TOML and Pingora's YAML (as the case
//! needs), the options to check them with, and the findings expected, in order. See the
//! README there.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_fixtures")
}

/// Runs `steward check` in the case directory and returns each finding as
/// `severity id [file[:line[:column]]]`, with the case directory removed from absolute paths.
fn actual(case: &str) -> (Vec<String>, i32) {
    let dir = fixtures().join(case);
    let args = std::fs::read_to_string(dir.join("args")).expect("args");
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .arg("check")
        .args(args.split_whitespace())
        .args(["--format", "json"])
        .current_dir(&dir)
        // The cases are checked against their units or systemd's default, whatever the
        // environment of the test says.
        .env_remove("STEWARD_STOP_TIMEOUT")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", fixtures().join("bin").display()),
        )
        .output()
        .expect("steward runs");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{case}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let prefix = format!("{}/", dir.display());
    let findings = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            let mut line = format!(
                "{} {}",
                f["severity"].as_str().unwrap_or("?"),
                f["id"].as_str().unwrap_or("?")
            );
            if let Some(file) = f["file"].as_str() {
                line.push(' ');
                line.push_str(&file.replace(&prefix, ""));
                for key in ["line", "column"] {
                    match f[key].as_u64() {
                        Some(n) => line.push_str(&format!(":{n}")),
                        None => break,
                    }
                }
            }
            line
        })
        .collect();
    (findings, out.status.code().unwrap_or(-1))
}

fn expected(case: &str) -> Vec<String> {
    std::fs::read_to_string(fixtures().join(case).join("expected"))
        .expect("expected")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn status_for(expected: &[String]) -> i32 {
    if expected.iter().any(|l| l.starts_with("error ")) {
        2
    } else if expected.iter().any(|l| l.starts_with("warning ")) {
        1
    } else {
        0
    }
}

fn assert_case(case: &str) {
    let want = expected(case);
    let (got, status) = actual(case);
    assert_eq!(got, want, "findings of case {case}");
    assert_eq!(status, status_for(&want), "exit status of case {case}");
}

macro_rules! cases {
    ($($test:ident => $dir:literal,)*) => {
        const CASES: &[&str] = &[$($dir),*];
        $(
            #[test]
            fn $test() {
                assert_case($dir);
            }
        )*
    };
}

cases! {
    users_example_documented_unit_with_grace_30_fits_but_always_waits => "pingora-documented-grace-30",
    documented_unit_with_pingora_defaults_ends_in_sigkill => "pingora-documented-defaults",
    pingora_0_8_waits_out_the_shutdown_timeout_twice => "pingora-0.8-shutdown-twice",
    pingora_0_9_waits_out_the_shutdown_timeout_once => "pingora-0.9-shutdown-once",
    pingora_alone_without_a_unit_assumes_systemds_default_timeout => "pingora-alone-no-unit",
    pingora_daemon_under_type_simple_is_lost_by_systemd => "pingora-simple-with-daemon",
    pingora_without_daemon_under_type_forking_never_starts => "pingora-forking-without-daemon",
    pingora_in_the_foreground_under_type_exec_is_right => "pingora-exec-foreground",
    shipped_files_raise_only_deliberate_infos => "shipped",
    correct_steward_setup_is_clean => "steward-clean",
    a_stock_child_told_to_inherit_its_listeners_never_starts => "steward-handoff-inherit-stock-child",
    fractional_timeout_stop_sec_is_read_as_systemd_reads_it => "steward-timeout-fractional",
    kill_mode_from_a_drop_in_is_found_in_the_drop_in => "steward-kill-mode-control-group",
    kill_mode_process_is_a_risk => "steward-kill-mode-process",
    type_simple_under_steward_is_a_risk => "steward-type-simple",
    type_forking_under_steward_cannot_start => "steward-type-forking",
    type_notify_reload_suits_steward => "steward-type-notify-reload",
    notify_access_none_is_raised_to_main_by_systemd => "steward-notify-access-none",
    notify_access_all_lets_the_child_notify => "steward-notify-access-all",
    notify_access_default_of_a_notify_unit_is_right => "steward-notify-access-default",
    timeout_stop_failure_mode_abort_dumps_core => "steward-stop-failure-abort",
    restart_without_prevent_78_loops => "steward-restart-without-78",
    restart_on_abnormal_needs_no_prevent_78 => "steward-restart-on-abnormal",
    watchdog_shorter_than_the_health_replacement_is_a_risk => "steward-watchdog-too-short",
    watchdog_long_enough_for_the_health_replacement_is_right => "steward-watchdog-long-enough",
    pingora_alone_under_a_watchdog_is_killed_by_it => "pingora-watchdog",
    no_runtime_directory_is_a_risk => "steward-no-runtime-directory",
    runtime_dir_in_steward_config_replaces_runtime_directory => "steward-runtime-dir-in-config",
    margin_of_1s_leaves_no_room_for_the_reap => "steward-margin-1s",
    margin_beyond_the_stop_timeout_refuses_to_start => "steward-margin-exceeds-timeout",
    deadline_beyond_the_stop_timeout_is_a_risk => "steward-deadline-beyond-timeout",
    drain_exit_with_a_stock_child_outlasts_the_stop_timeout => "steward-drain-exit-stock-child",
    drain_exit_with_steward_proxy_is_only_a_risk => "steward-drain-exit-steward-proxy",
    daemon_user_and_group_do_nothing_under_steward => "steward-pingora-daemon-and-user",
    ready_address_spelled_differently_still_reaches_the_listener => "steward-ready-spelled-differently",
    socket_key_spelled_differently_is_never_claimed => "steward-socket-key-spelled-differently",
    ready_address_that_is_no_listener_never_passes => "steward-ready-not-a-listener",
    unit_alone_leads_to_the_config_its_exec_start_names => "steward-unit-names-the-config",
    steward_config_without_unit_says_the_unit_was_not_checked => "steward-no-unit",
    malformed_pingora_yaml_is_located => "parse-error-pingora-yaml",
    wrong_type_in_pingora_yaml_is_located_to_the_column => "parse-error-pingora-type",
    malformed_steward_toml_is_located => "parse-error-steward-toml",
    malformed_proxy_toml_is_located => "parse-error-proxy-toml",
    unit_line_systemd_ignores_is_a_warning => "parse-error-unit-line",
    missing_pingora_conf_is_unreadable => "unreadable-pingora-conf",
    unit_without_delegate_kills_without_cgroups => "steward-delegate-missing",
    delegate_with_controllers_is_delegation => "steward-delegate-controllers",
    delegate_from_a_drop_in_is_found => "steward-delegate-from-drop-in",
    delegate_no_in_a_drop_in_wins_and_is_located_there => "steward-delegate-no-in-drop-in",
    nofile_above_the_units_hard_limit_refuses_to_start => "steward-nofile-above-hard",
    nofile_inherit_leaves_the_child_at_systemds_1024 => "steward-nofile-inherit",
    nofile_max_under_a_hard_limit_of_1024_stays_low => "steward-nofile-max-low-hard",
}

#[test]
fn every_case_directory_is_in_the_table() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .flatten()
        .filter(|e| e.path().join("expected").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed);
}

#[test]
fn every_finding_id_is_raised_by_one_case_and_absent_from_another() {
    let ids_of = |case: &str| -> Vec<String> {
        expected(case)
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    };
    for id in steward::check::ALL_IDS {
        let raising = CASES
            .iter()
            .filter(|c| ids_of(c).iter().any(|i| i == id.as_str()))
            .count();
        assert!(raising > 0, "no case raises {id}");
        assert!(raising < CASES.len(), "every case raises {id}");
    }
    for case in CASES {
        for id in ids_of(case) {
            assert!(
                steward::check::ALL_IDS.iter().any(|i| i.as_str() == id),
                "{case} expects an unknown id {id}"
            );
        }
    }
}
