//! Hostile input for the Pingora YAML steward copies and for `steward check`'s readers
//! (issue 6): the effective conf never lets the child outlast the deadline, whatever the
//! numbers; no YAML panics the generator; errors point inside the file.

mod fuzz_common;

use std::path::Path;
use std::time::Duration;

use fuzz_common::{any_text, config, mutate, mutations, position_is_inside};
use proptest::prelude::*;
use serde_yaml::Value;
use steward::check::pingora::PingoraConf;
use steward::pingora_conf::{effective, Effective};
use steward::unit::{split_words, UnitProps};

const SOCK: &str = "/run/steward/upgrade.sock";

fn generate(
    text: &str,
    deadline: Option<Duration>,
) -> Result<Effective, steward::config::ConfigError> {
    effective(
        Some((Path::new("pingora.yaml"), text)),
        deadline,
        Path::new(SOCK),
    )
}

/// What the child is told, read back from the YAML steward writes for it.
fn written(e: &Effective) -> Result<serde_yaml::Mapping, TestCaseError> {
    match serde_yaml::from_str::<Value>(&e.yaml) {
        Ok(Value::Mapping(m)) => Ok(m),
        other => Err(TestCaseError::fail(format!(
            "effective conf is not a mapping: {other:?}\n{}",
            e.yaml
        ))),
    }
}

fn effective_conf_is_safe(e: &Effective, deadline: Option<Duration>) -> Result<(), TestCaseError> {
    let m = written(e)?;
    prop_assert_eq!(m.get("daemon"), Some(&Value::Bool(false)));
    prop_assert_eq!(m.get("upgrade_sock").and_then(Value::as_str), Some(SOCK));
    prop_assert_eq!(
        m.get("grace_period_seconds").and_then(Value::as_u64),
        Some(e.grace)
    );
    prop_assert_eq!(
        m.get("graceful_shutdown_timeout_seconds")
            .and_then(Value::as_u64),
        Some(e.shutdown_timeout)
    );
    if let Some(d) = deadline {
        prop_assert!(
            e.grace
                .checked_add(e.shutdown_timeout)
                .is_some_and(|s| s <= d.as_secs()),
            "grace {} + timeout {} over the deadline {d:?}",
            e.grace,
            e.shutdown_timeout
        );
    }
    Ok(())
}

fn seconds() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..400,
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(u64::from(u32::MAX)),
        Just(i64::MAX as u64),
    ]
}

fn deadline() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        (0u64..400, 0u32..1_000_000_000).prop_map(|(s, n)| Some(Duration::new(s, n))),
        any::<u64>().prop_map(|s| Some(Duration::from_secs(s))),
        Just(Some(Duration::MAX)),
    ]
}

/// The keys of Pingora 0.9.1's ServerConf, and a few that are not.
const KEYS: &[&str] = &[
    "version",
    "daemon",
    "error_log",
    "pid_file",
    "upgrade_sock",
    "user",
    "group",
    "threads",
    "listener_tasks_per_fd",
    "work_stealing",
    "ca_file",
    "grace_period_seconds",
    "graceful_shutdown_timeout_seconds",
    "client_bind_to_ipv4",
    "client_bind_to_ipv6",
    "upstream_keepalive_pool_size",
    "upstream_connect_offload_threadpools",
    "upstream_connect_offload_thread_per_pool",
    "upstream_debug_ssl_keylog",
    "max_retries",
    "working_directory",
    "some_future_key",
    "<<",
    "",
];

/// YAML scalars and collections of every kind, with the odd ones YAML is known for.
fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        seconds().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        prop::sample::select(vec![
            "",
            "~",
            "null",
            "true",
            "false",
            "yes",
            "no",
            ".inf",
            "-.inf",
            ".nan",
            "0x1F",
            "0o17",
            "1e3",
            "-1",
            "\"300\"",
            "'5'",
            "!!str 5",
            "!!int 5",
            "!custom 5",
            "*a",
            "&a 5",
            "[1, 2]",
            "{a: 1}",
            "|\n  text",
            ">-\n  folded",
            "\"\\u0000\"",
            "18446744073709551616",
            "-0",
            "+5",
            "1_000",
            "5.0",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,16}",
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..3).prop_map(|kv| {
                format!(
                    "{{{}}}",
                    kv.iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        ]
    })
}

/// A file of `key: value` lines from the real key set, some indented, some repeated.
fn structured_yaml() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(KEYS), yaml_value(), 0u8..6), 0..10).prop_map(
        |lines| {
            let mut out = String::from("---\n");
            for (k, v, form) in lines {
                match form {
                    0 => out.push_str(&format!("  {k}: {v}\n")),
                    1 => out.push_str(&format!("{k}:\n  - {v}\n")),
                    2 => out.push_str(&format!("# {k}\n{k}: {v} # note\n")),
                    _ => out.push_str(&format!("{k}: {v}\n")),
                }
            }
            out
        },
    )
}

fn yaml_text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => structured_yaml(),
        1 => any_text(),
        1 => (structured_yaml(), mutations()).prop_map(|(t, ops)| mutate(&t, &ops)),
    ]
    .boxed()
}

/// Words as systemd would quote them.
fn quote_word(w: &str) -> String {
    let mut out = String::from("\"");
    for c in w.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_effective_grace_period_never_exceeds_the_deadline_for_any_numbers(
        grace in prop::option::of(seconds()),
        timeout in prop::option::of(seconds()),
        deadline in deadline(),
    ) {
        let mut text = String::from("version: 1\n");
        if let Some(g) = grace {
            text.push_str(&format!("grace_period_seconds: {g}\n"));
        }
        if let Some(t) = timeout {
            text.push_str(&format!("graceful_shutdown_timeout_seconds: {t}\n"));
        }
        let e = generate(&text, deadline).map_err(|e| TestCaseError::fail(e.to_string()))?;
        effective_conf_is_safe(&e, deadline)?;
        // What fits is kept as written, and a change is always explained.
        let (g, t) = (grace.unwrap_or(300), timeout.unwrap_or(5));
        let fits = deadline.is_none_or(|d| g.checked_add(t).is_some_and(|s| s <= d.as_secs()));
        if fits {
            prop_assert_eq!((e.grace, e.shutdown_timeout), (g, t));
        } else {
            prop_assert!(!e.changes.is_empty());
        }
    }

    #[test]
    fn any_yaml_gives_a_safe_effective_conf_or_an_error_inside_the_file(
        text in yaml_text(),
        deadline in deadline(),
    ) {
        match generate(&text, deadline) {
            Ok(e) => effective_conf_is_safe(&e, deadline)?,
            Err(e) => {
                prop_assert!(position_is_inside(&text, e.line, e.column), "{e} {:?}:{:?} in {text:?}", e.line, e.column);
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn steward_check_reads_any_yaml_or_reports_a_position_inside_the_file(text in yaml_text()) {
        match PingoraConf::parse(Path::new("pingora.yaml"), &text) {
            Ok(p) => {
                // Whatever it read, steward's own copy agrees on the numbers.
                if let Ok(e) = generate(&text, None) {
                    prop_assert_eq!(e.grace, p.grace.unwrap_or(300));
                    prop_assert_eq!(e.shutdown_timeout, p.shutdown_timeout.unwrap_or(5));
                }
            }
            Err(f) => {
                let at = f.at.as_ref();
                prop_assert!(
                    position_is_inside(&text, at.and_then(|l| l.line), at.and_then(|l| l.column)),
                    "{f:?} in {text:?}"
                );
            }
        }
    }

    #[test]
    fn systemctl_show_output_of_any_shape_is_read_or_refused_and_names_the_unit_it_printed(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "Id", "LoadState", "FragmentPath", "DropInPaths", "Type", "KillMode",
                    "NotifyAccess", "TimeoutStopUSec", "TimeoutStopFailureMode", "Restart",
                    "RestartPreventExitStatus", "WatchdogUSec", "RuntimeDirectory", "PIDFile",
                    "ExecStart", "ExecReload", "", "x",
                ]),
                prop_oneof![
                    "[ -~]{0,30}",
                    Just("loaded".to_string()),
                    Just("{ path=/bin/x ; argv[]=/bin/x \"a b\" -c 'y' ; ignore_errors=no }".to_string()),
                    Just("{ argv[]=".to_string()),
                    Just("1min 30s".to_string()),
                    Just("infinity".to_string()),
                    any::<u64>().prop_map(|n| format!("{n}us")),
                ],
            ),
            0..20,
        )
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        // systemctl prints each property once; the last one printed is the one read.
        if let Ok(u) = UnitProps::from_systemctl_show(&text) {
            let id = lines.iter().rev().find(|(k, _)| *k == "Id").map(|(_, v)| v.clone());
            prop_assert_eq!(Some(u.name), id);
        }
    }

    #[test]
    fn quoted_words_split_back_into_the_same_words(words in prop::collection::vec(any::<String>(), 0..6)) {
        let line = words.iter().map(|w| quote_word(w)).collect::<Vec<_>>().join(" \t ");
        prop_assert_eq!(split_words(&line), words);
    }
}

// ---- regressions found by the properties above -----------------------------------------

/// u64::MAX + 5 wrapped to 4 in a release build, which "fit" any deadline: the child was
/// told to sleep u64::MAX seconds.
#[test]
fn a_grace_period_of_u64_max_is_clamped_to_the_deadline() {
    let text = format!("grace_period_seconds: {}\n", u64::MAX);
    let e = generate(&text, Some(Duration::from_secs(25))).expect("ok");
    assert_eq!((e.grace, e.shutdown_timeout), (25, 0));
}

#[test]
fn a_shutdown_timeout_of_u64_max_is_clamped_to_the_deadline() {
    let text = format!(
        "grace_period_seconds: 10\ngraceful_shutdown_timeout_seconds: {}\n",
        u64::MAX
    );
    let e = generate(&text, Some(Duration::from_secs(25))).expect("ok");
    assert_eq!((e.grace, e.shutdown_timeout), (10, 15));
}

/// libyaml reports an error at the end of a file without a final newline on the line after
/// the last: an editor cannot go there.
#[test]
fn a_yaml_error_at_the_end_of_the_file_is_reported_on_its_last_line() {
    let e = generate("\n[", None).expect_err("refused");
    assert_eq!((e.line, e.column), (Some(2), Some(2)), "{e}");
}

#[test]
fn steward_check_reports_a_yaml_error_at_the_end_of_the_file_on_its_last_line() {
    let f = PingoraConf::parse(Path::new("pingora.yaml"), "---\ndaemon:\n  - [fa")
        .expect_err("refused");
    let at = f.at.clone().expect("located");
    assert_eq!((at.line, at.column), (Some(3), Some(8)), "{f:?}");
}
