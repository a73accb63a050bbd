//! Hostile input for steward's TOML (issue 6): whatever the file says, loading it gives a
//! `Config` or a `ConfigError` that points inside the file, never a panic.

mod fuzz_common;

use std::path::Path;
use std::time::Duration;

use fuzz_common::{any_text, config, mutate, mutations, position_is_inside, Scratch};
use proptest::prelude::*;
use steward::config::{min, Config, ConfigError, DeadlineSetting, MAX_DURATION};

const PATH: &str = "/etc/steward/steward.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new(PATH), text)
}

fn error_points_inside(text: &str, e: &ConfigError) -> Result<(), TestCaseError> {
    prop_assert!(
        position_is_inside(text, e.line, e.column),
        "{e} at {:?}:{:?} is outside the {} lines of {text:?}",
        e.line,
        e.column,
        fuzz_common::line_count(text)
    );
    prop_assert!(!e.message.is_empty(), "empty message for {text:?}");
    Ok(())
}

/// What any loaded config promises the supervisor: no timer it sets can overflow.
fn loaded_config_is_sane(c: &Config) -> Result<(), TestCaseError> {
    for d in [
        c.ready.timeout,
        c.ready.interval,
        c.stop.margin,
        c.stop.fallback_deadline,
        c.stop.drain_poll,
        c.stop.drain_quiet,
        c.restart.window,
        c.restart.backoff_min,
        c.restart.backoff_max,
        c.restart.stable_after,
        c.health.interval,
        c.health.timeout,
    ] {
        prop_assert!(d <= MAX_DURATION, "{d:?} in {c:?}");
    }
    if let DeadlineSetting::Fixed(d) = c.stop.deadline {
        prop_assert!(!d.is_zero() && d <= MAX_DURATION, "{c:?}");
    }
    prop_assert!(c.restart.backoff_min <= c.restart.backoff_max);
    // No timer fires more often than its key's minimum allows.
    prop_assert!(c.ready.interval >= min::PROBE_INTERVAL, "{c:?}");
    prop_assert!(c.health.interval >= min::HEALTH_INTERVAL, "{c:?}");
    prop_assert!(c.stop.drain_poll >= min::DRAIN_POLL, "{c:?}");
    prop_assert!(c.restart.backoff_min >= min::BACKOFF, "{c:?}");
    prop_assert!(c.child.program.is_absolute(), "{c:?}");
    Ok(())
}

// ---- rendering TOML from parts ---------------------------------------------------------

#[derive(Debug, Clone)]
enum V {
    Str(String),
    Int(i64),
    Bool(bool),
    Float(f64),
    Array(Vec<V>),
    Table(Vec<(String, V)>),
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render(v: &V) -> String {
    match v {
        V::Str(s) => quote(s),
        V::Int(i) => i.to_string(),
        V::Bool(b) => b.to_string(),
        V::Float(f) if f.is_finite() => format!("{f:?}"),
        V::Float(f) if f.is_nan() => "nan".into(),
        V::Float(f) => if *f > 0.0 { "inf" } else { "-inf" }.into(),
        V::Array(items) => format!(
            "[{}]",
            items.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
        V::Table(kv) => format!(
            "{{ {} }}",
            kv.iter()
                .map(|(k, v)| format!("{} = {}", key(k), render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

/// Every section and key steward reads.
const KEYS: &[(&str, &[&str])] = &[
    ("", &["runtime_dir"]),
    (
        "child",
        &["command", "pingora_conf", "working_directory", "env"],
    ),
    ("ready", &["tcp", "http", "timeout", "interval"]),
    (
        "stop",
        &[
            "deadline",
            "margin",
            "fallback_deadline",
            "drain",
            "drain_poll",
            "drain_quiet",
        ],
    ),
    ("sockets", &["listen"]),
    (
        "restart",
        &[
            "max_crashes",
            "window",
            "backoff_min",
            "backoff_max",
            "stable_after",
        ],
    ),
    ("health", &["interval", "timeout", "failures"]),
];

/// Values of the kinds the keys take, near their edges, and of the wrong kinds.
fn value() -> impl Strategy<Value = V> {
    let duration_text = prop_oneof![
        (
            0u64..100_000,
            prop::sample::select(vec!["", "s", "ms", "us", "min", "h", "d", "w", "y", " s"])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_string()),
        Just("infinity".to_string()),
        Just("auto".to_string()),
        Just("1min 30s".to_string()),
        Just("-5s".to_string()),
        Just("".to_string()),
    ];
    let address = prop_oneof![
        (0u32..70_000).prop_map(|p| format!("127.0.0.1:{p}")),
        (0u32..70_000).prop_map(|p| format!("[::1]:{p}")),
        (0u32..70_000, "[ -~]{0,12}").prop_map(|(p, path)| format!("http://127.0.0.1:{p}/{path}")),
        "[ -~]{0,20}",
    ];
    let word = prop_oneof![
        Just("/bin/sh".to_string()),
        Just("sh".to_string()),
        Just("-c".to_string()),
        Just("--conf=x".to_string()),
        Just("-d".to_string()),
        Just("-u".to_string()),
        Just("/dev/null".to_string()),
        Just("/nonexistent".to_string()),
        Just("connections".to_string()),
        Just("exit".to_string()),
        "[ -~]{0,12}",
        any::<String>(),
    ];
    let leaf = prop_oneof![
        3 => duration_text.prop_map(V::Str),
        2 => address.prop_map(V::Str),
        2 => word.prop_map(V::Str),
        1 => any::<i64>().prop_map(V::Int),
        1 => (0i64..10).prop_map(V::Int),
        1 => Just(V::Int(i64::from(u32::MAX) + 1)),
        1 => any::<bool>().prop_map(V::Bool),
        1 => any::<f64>().prop_map(V::Float),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(V::Array),
            prop::collection::vec(("[A-Z_]{0,6}|[ -~]{0,4}", inner), 0..3).prop_map(V::Table),
        ]
    })
}

/// A key from the real set, sometimes misspelt or in the wrong section.
fn key_name() -> impl Strategy<Value = (usize, String)> {
    (0..KEYS.len(), any::<prop::sample::Index>(), 0u8..10).prop_map(|(s, i, typo)| {
        let keys = KEYS[s].1;
        let k = keys[i.index(keys.len())].to_string();
        let k = match typo {
            0 => format!("{k}x"),
            1 => k[..k.len() - 1].to_string(),
            _ => k,
        };
        (s, k)
    })
}

/// A whole file: sections from the real set, keys with values of random kinds, sometimes as
/// dotted keys or inline tables, sections sometimes repeated or left out.
fn structured_toml() -> impl Strategy<Value = String> {
    prop::collection::vec((key_name(), value(), 0u8..8), 0..14).prop_map(|entries| {
        let mut out = String::new();
        // A valid core most of the time, so that the later checks are reached.
        out.push_str("[child]\ncommand = [\"/bin/sh\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n");
        let mut top = String::new();
        for ((section, k), v, form) in entries {
            let name = KEYS[section].0;
            let assignment = format!("{} = {}\n", key(&k), render(&v));
            if name.is_empty() {
                top.push_str(&assignment);
            } else if form == 0 {
                // Dotted keys at the top level.
                top.push_str(&format!("{name}.{assignment}"));
            } else {
                out.push_str(&format!("[{name}]\n{assignment}"));
            }
        }
        format!("{top}{out}")
    })
}

// ---- valid configs and their noisy spellings -------------------------------------------

#[derive(Debug, Clone)]
struct Valid(Vec<(&'static str, Vec<(&'static str, V)>)>);

fn valid_config() -> impl Strategy<Value = Valid> {
    let secs = |lo: u64, hi: u64| (lo..hi).prop_map(|n| V::Str(format!("{n}s")));
    let ms = |lo: u64, hi: u64| (lo..hi).prop_map(|n| V::Str(format!("{n}ms")));
    let port = 1u16..u16::MAX;
    (
        (
            prop::collection::vec("[a-z0-9]{1,8}", 0..3),
            prop::collection::btree_map("[A-Z][A-Z0-9_]{0,6}", "[ -~]{0,12}", 0..3),
            any::<bool>(),
        ),
        (
            port.clone(),
            any::<bool>(),
            "[a-z/]{0,10}",
            ms(100, 5000),
            ms(10, 100),
        ),
        (
            prop_oneof![
                Just(V::Str("auto".into())),
                Just(V::Str("infinity".into())),
                secs(1, 3600)
            ],
            secs(0, 60),
            secs(1, 3600),
            prop::sample::select(vec!["connections", "exit"]),
            ms(1, 100),
            ms(10, 1000),
        ),
        (
            prop::collection::vec(port.clone(), 0..3),
            0u32..50,
            ms(10, 1000),
            secs(1, 100),
        ),
        (ms(100, 10_000), ms(10, 10_000), 0u32..10),
    )
        .prop_map(|(child, ready, stop, restart, health)| {
            let (args, env, with_dir) = child;
            let mut command = vec![V::Str("/bin/sh".into())];
            command.extend(args.into_iter().map(V::Str));
            let mut child_keys = vec![("command", V::Array(command))];
            if with_dir {
                child_keys.push(("working_directory", V::Str("/".into())));
            }
            child_keys.push((
                "env",
                V::Table(env.into_iter().map(|(k, v)| (k, V::Str(v))).collect()),
            ));
            let (port, http, path, timeout, interval) = ready;
            let probe = if http {
                ("http", V::Str(format!("http://127.0.0.1:{port}/{path}")))
            } else {
                ("tcp", V::Str(format!("127.0.0.1:{port}")))
            };
            let (deadline, margin, fallback, drain, poll, quiet) = stop;
            let (listen, max_crashes, backoff_min, backoff_max) = restart;
            let (h_interval, h_timeout, failures) = health;
            Valid(vec![
                ("child", child_keys),
                (
                    "ready",
                    vec![probe, ("timeout", timeout), ("interval", interval)],
                ),
                (
                    "stop",
                    vec![
                        ("deadline", deadline),
                        ("margin", margin),
                        ("fallback_deadline", fallback),
                        ("drain", V::Str(drain.into())),
                        ("drain_poll", poll),
                        ("drain_quiet", quiet),
                    ],
                ),
                (
                    "sockets",
                    vec![(
                        "listen",
                        V::Array(
                            listen
                                .into_iter()
                                .map(|p| V::Str(format!("127.0.0.1:{p}")))
                                .collect(),
                        ),
                    )],
                ),
                (
                    "restart",
                    vec![
                        ("max_crashes", V::Int(max_crashes.into())),
                        ("backoff_min", backoff_min),
                        ("backoff_max", backoff_max),
                    ],
                ),
                (
                    "health",
                    vec![
                        ("interval", h_interval),
                        ("timeout", h_timeout),
                        ("failures", V::Int(failures.into())),
                    ],
                ),
            ])
        })
}

/// Noise an operator may add without changing the meaning: blank lines, comments (any
/// text, '#' and '=' included), spaces and tabs around keys and `=`, and another section
/// order.
#[derive(Debug, Clone)]
struct Noise {
    pad: Vec<(u8, u8, String)>,
    order: Vec<prop::sample::Index>,
}

fn noise() -> impl Strategy<Value = Noise> {
    (
        // TOML allows any character in a comment but the control characters, tab aside.
        prop::collection::vec((0u8..4, 0u8..4, "[^\x00-\x08\x0A-\x1F\x7F]{0,20}"), 64),
        prop::collection::vec(any::<prop::sample::Index>(), 6),
    )
        .prop_map(|(pad, order)| Noise { pad, order })
}

fn spell(c: &Valid, noise: Option<&Noise>) -> String {
    let mut sections = c.0.clone();
    let mut n = 0usize;
    let mut next = || {
        let p = noise.map(|x| x.pad[n % x.pad.len()].clone());
        n += 1;
        p
    };
    if let Some(noise) = noise {
        for (i, idx) in noise.order.iter().enumerate() {
            let len = sections.len();
            sections.swap(i % len, idx.index(len));
        }
    }
    let ws = |k: u8| [" ", "", "\t", "  \t "][usize::from(k % 4)];
    let mut out = String::new();
    for (name, keys) in &sections {
        if let Some((a, b, comment)) = next() {
            out.push_str(&format!("{}[{name}]{}#{comment}\n", ws(a), ws(b)));
        } else {
            out.push_str(&format!("[{name}]\n"));
        }
        for (k, v) in keys {
            match next() {
                Some((a, b, comment)) => {
                    if a == 0 {
                        out.push_str(&format!("{}# {comment}\n\n", ws(b)));
                    }
                    out.push_str(&format!(
                        "{}{k}{}={}{}{}#{comment}\n",
                        ws(a),
                        ws(b),
                        ws(b + 1),
                        render(v),
                        ws(a + b),
                    ));
                }
                None => out.push_str(&format!("{k} = {}\n", render(v))),
            }
        }
    }
    out
}

// ---- the properties --------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_text_loads_or_fails_at_a_position_inside_the_file(text in any_text()) {
        match parse(&text) {
            Ok(c) => loaded_config_is_sane(&c)?,
            Err(e) => error_points_inside(&text, &e)?,
        }
    }

    #[test]
    fn structured_configs_load_or_fail_at_a_position_inside_the_file(text in structured_toml()) {
        match parse(&text) {
            Ok(c) => loaded_config_is_sane(&c)?,
            Err(e) => error_points_inside(&text, &e)?,
        }
    }

    #[test]
    fn damaged_valid_configs_load_or_fail_at_a_position_inside_the_file(
        c in valid_config(),
        ops in mutations(),
    ) {
        let text = mutate(&spell(&c, None), &ops);
        match parse(&text) {
            Ok(c) => loaded_config_is_sane(&c)?,
            Err(e) => error_points_inside(&text, &e)?,
        }
    }

    #[test]
    fn valid_configs_load_the_same_whatever_the_whitespace_comments_and_section_order(
        c in valid_config(),
        noise in noise(),
    ) {
        let plain = spell(&c, None);
        let noisy = spell(&c, Some(&noise));
        let a = parse(&plain);
        prop_assert!(a.is_ok(), "generated config refused: {:?}\n{plain}", a.err());
        let b = parse(&noisy);
        prop_assert!(b.is_ok(), "noise changed the meaning: {:?}\n{noisy}", b.err());
        let (a, b) = (a.map_err(|e| TestCaseError::fail(e.to_string()))?, b.map_err(|e| TestCaseError::fail(e.to_string()))?);
        loaded_config_is_sane(&a)?;
        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}

// ---- regressions found by the properties above -----------------------------------------

/// `Instant + Duration` panics past the clock's range, and every duration key becomes a
/// timer; a bare number is seconds, so this one parsed.
#[test]
fn a_duration_beyond_the_clocks_range_is_a_config_error() {
    let text = "[child]\ncommand = [\"/bin/sh\"]\n[ready]\ntcp = \"127.0.0.1:1\"\ntimeout = \"18446744073709551615\"\n";
    let e = parse(text).expect_err("refused");
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("longer than"), "{e}");
}

/// toml gives no message for a control character in a comment; the error must still say what.
#[test]
fn a_control_character_in_a_comment_is_named_in_the_error() {
    let e = parse("#\0").expect_err("refused");
    assert!(e.message.contains("'\\0'"), "{e}");
    assert_eq!((e.line, e.column), (Some(1), Some(2)), "{e}");
}

#[test]
fn durations_up_to_thirty_days_are_accepted() {
    let text = "[child]\ncommand = [\"/bin/sh\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n[restart]\nwindow = \"30d\"\n";
    let c = parse(text).expect("valid");
    assert_eq!(c.restart.window, Duration::from_secs(30 * 24 * 3600));
}

/// The line of a missing child.pingora_conf was looked up by reading the config path again:
/// another file (or a newer version of this one) gave a line this text does not have.
#[test]
fn a_missing_pingora_conf_is_reported_at_its_line_in_the_text_that_was_parsed() {
    let dir = Scratch::new("fuzz-config");
    let on_disk = dir.path().join("steward.toml");
    let other = "\n".repeat(50) + "pingora_conf = \"/elsewhere\"\n";
    std::fs::write(&on_disk, other).expect("write");
    let text = "[child]\ncommand = [\"/bin/sh\"]\npingora_conf = \"/nonexistent/pingora.yaml\"\n[ready]\ntcp = \"127.0.0.1:1\"\n";
    let e = Config::parse(&on_disk, text).expect_err("refused");
    assert_eq!(e.line, Some(3), "{e}");
}
