//! `steward check --print-effective`: what `steward run` would run with, as `nginx -T`
//! shows it. Two documents on standard output: steward's settings with every default
//! filled in and every relative path resolved (TOML that `steward run` accepts as it is),
//! and the Pingora YAML the child is given, clamped to the stop deadline resolved against
//! the same unit or platform timeout as the checks.
//!
//! Rendering only: the caller resolves the deadline and the runtime directory, so the
//! output is the same function of the inputs that `steward run` applies.

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, DeadlineSetting, DrainMode, Probe};
use crate::deadline::{Deadline, DeadlineError};
use crate::limits::NofileSetting;
use crate::pingora_conf::{self, EFFECTIVE_CONF, UPGRADE_SOCK};

/// Both documents, each introduced by a comment saying where it comes from.
pub fn render(
    config: &Config,
    deadline: Option<&Result<Deadline, DeadlineError>>,
    runtime_dir: &Path,
) -> String {
    let mut out = steward_settings(config, deadline, runtime_dir);
    out.push('\n');
    out.push_str(&pingora_yaml(config, deadline, runtime_dir));
    out
}

/// A TOML string literal (quoted and escaped as TOML wants).
fn q(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A path made absolute against the current directory, as `steward run` started here
/// would open it, with `.` components dropped: the output names each file once, exactly.
fn path(p: &Path) -> String {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    q(&crate::files::tidy(&abs).to_string_lossy())
}

/// A duration as the configuration accepts it back ("30s", "1m 30s", "250ms").
fn span(d: Duration) -> String {
    q(&humantime::format_duration(d).to_string())
}

/// steward's TOML with every key: what `steward run --config` would use.
pub fn steward_settings(
    config: &Config,
    deadline: Option<&Result<Deadline, DeadlineError>>,
    runtime_dir: &Path,
) -> String {
    let c = config;
    let mut t = format!(
        "# steward's effective settings: {} with every default filled in and relative\n\
         # paths resolved (steward check --print-effective).\n",
        c.path.display()
    );
    let ch = &c.child;
    let command: Vec<String> = std::iter::once(path(&ch.program))
        .chain(ch.args.iter().map(|a| q(a)))
        .collect();
    t += &format!("runtime_dir = {}\n", path(runtime_dir));
    t += "\n[child]\n";
    t += &format!("command = [{}]\n", command.join(", "));
    if let Some(p) = &ch.pingora_conf {
        t += &format!("pingora_conf = {}\n", path(p));
    }
    t += &format!("working_directory = {}\n", path(&ch.working_directory));
    t += &format!(
        "nofile = {}\n",
        match ch.nofile {
            NofileSetting::Max => q("max"),
            NofileSetting::Inherit => q("inherit"),
            NofileSetting::Soft(n) => n.to_string(),
        }
    );
    if !ch.env.is_empty() {
        t += "\n[child.env]\n";
        for (k, v) in &ch.env {
            t += &format!("{} = {}\n", q(k), q(v));
        }
    }
    t += "\n[sockets]\n";
    t += &format!(
        "listen = [{}]\n",
        c.sockets
            .iter()
            .map(|s| q(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    t += "\n[ready]\n";
    t += &match &c.ready.probe {
        Probe::Tcp(a) => format!("tcp = {}\n", q(a)),
        Probe::Http(u) => format!("http = {}\n", q(&u.to_string())),
    };
    t += &format!("timeout = {}\n", span(c.ready.timeout));
    t += &format!("interval = {}\n", span(c.ready.interval));
    t += "\n[stop]\n";
    let resolved = match deadline {
        Some(Ok(d)) => format!("  # {}", d.describe()),
        Some(Err(e)) => format!("  # steward refuses to start: {e}"),
        None => "  # not resolved: no stop timeout is known".to_string(),
    };
    t += &format!(
        "deadline = {}{resolved}\n",
        match c.stop.deadline {
            DeadlineSetting::Auto => q("auto"),
            DeadlineSetting::Infinity => q("infinity"),
            DeadlineSetting::Fixed(d) => span(d),
        }
    );
    t += &format!("margin = {}\n", span(c.stop.margin));
    t += &format!("fallback_deadline = {}\n", span(c.stop.fallback_deadline));
    t += &format!(
        "drain = {}\n",
        q(match c.stop.drain {
            DrainMode::Connections => "connections",
            DrainMode::Exit => "exit",
        })
    );
    t += &format!("drain_poll = {}\n", span(c.stop.drain_poll));
    t += &format!("drain_quiet = {}\n", span(c.stop.drain_quiet));
    let r = &c.restart;
    t += "\n[restart]\n";
    t += &format!("max_crashes = {}\n", r.max_crashes);
    t += &format!("window = {}\n", span(r.window));
    t += &format!("backoff_min = {}\n", span(r.backoff_min));
    t += &format!("backoff_max = {}\n", span(r.backoff_max));
    t += &format!("stable_after = {}\n", span(r.stable_after));
    let h = &c.health;
    t += "\n[health]\n";
    t += &format!("interval = {}\n", span(h.interval));
    t += &format!("timeout = {}\n", span(h.timeout));
    t += &format!("failures = {}\n", h.failures);
    t
}

/// The effective Pingora conf: what the child reads from `pingora.yaml` in the runtime
/// directory. Without a resolved deadline the operator's grace period stays unclamped,
/// as `steward run` leaves it under an infinite one.
pub fn pingora_yaml(
    config: &Config,
    deadline: Option<&Result<Deadline, DeadlineError>>,
    runtime_dir: &Path,
) -> String {
    let value = match deadline {
        Some(Ok(d)) => d.value,
        _ => None,
    };
    let text = config
        .child
        .pingora_conf
        .as_deref()
        .map(|p| (p, crate::files::read_to_string(p)));
    let source = match &text {
        Some((p, Ok(t))) => Some((*p, t.as_str())),
        Some((p, Err(e))) => {
            return format!(
                "# the effective Pingora conf cannot be built: cannot read {}: {e}\n",
                p.display()
            )
        }
        None => None,
    };
    let mut out = format!(
        "# The effective Pingora conf the child is started with (-c {}):\n",
        runtime_dir.join(EFFECTIVE_CONF).display()
    );
    match pingora_conf::effective(source, value, &runtime_dir.join(UPGRADE_SOCK)) {
        Ok(eff) => {
            for change in &eff.changes {
                out += &format!("# changed: {change}\n");
            }
            out += &eff.yaml;
        }
        Err(e) => out += &format!("# cannot be built: {e}\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadline::Source;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("/etc/steward/steward.toml"), text).expect("config")
    }

    const MINIMAL: &str = "[child]\ncommand = [\"/bin/echo\", \"a b\", \"quote \\\" and \\\\\"]\n[ready]\ntcp = \"127.0.0.1:6188\"\n";

    fn deadline(secs: u64) -> Deadline {
        Deadline {
            value: Some(Duration::from_secs(secs)),
            margin: Duration::from_secs(5),
            source: Source::Config,
            warning: None,
        }
    }

    #[test]
    fn the_effective_settings_are_a_configuration_steward_accepts_unchanged() {
        let c = config(MINIMAL);
        let printed = steward_settings(&c, None, Path::new("/run/steward"));
        let again = config(&printed);
        assert_eq!(
            steward_settings(&again, None, Path::new("/run/steward")),
            printed
        );
    }

    #[test]
    fn every_default_is_written_out() {
        let printed = steward_settings(&config(MINIMAL), None, Path::new("/run/steward"));
        for key in [
            "working_directory = \"/etc/steward\"",
            "nofile = \"max\"",
            "deadline = \"auto\"",
            "margin = \"5s\"",
            "drain = \"connections\"",
            "max_crashes = ",
            "backoff_max = ",
            "failures = ",
            "runtime_dir = \"/run/steward\"",
        ] {
            assert!(printed.contains(key), "{key} missing from:\n{printed}");
        }
    }

    #[test]
    fn the_resolved_deadline_is_shown_beside_the_setting() {
        let printed = steward_settings(
            &config(MINIMAL),
            Some(&Ok(deadline(25))),
            Path::new("/run/steward"),
        );
        assert!(
            printed.contains("deadline = \"auto\"  # stop deadline 25 s"),
            "{printed}"
        );
    }

    #[test]
    fn the_pingora_yaml_is_clamped_to_the_deadline_and_names_the_runtime_directory() {
        let yaml = pingora_yaml(
            &config(MINIMAL),
            Some(&Ok(deadline(25))),
            Path::new("/run/x"),
        );
        assert!(yaml.contains("grace_period_seconds: 25"), "{yaml}");
        assert!(yaml.contains("upgrade_sock: /run/x/upgrade.sock"), "{yaml}");
        assert!(yaml.contains("# changed: grace_period_seconds"), "{yaml}");
        assert!(yaml.contains("daemon: false"), "{yaml}");
    }

    #[test]
    fn a_pingora_conf_gone_since_the_configuration_was_read_is_said_instead_of_a_yaml() {
        let file =
            std::env::temp_dir().join(format!("steward-effective-{}.yaml", std::process::id()));
        std::fs::write(&file, "version: 1\n").expect("scratch yaml");
        let c = config(&format!(
            "[child]\ncommand = [\"/bin/echo\"]\npingora_conf = {}\n[ready]\ntcp = \"127.0.0.1:6188\"\n",
            q(&file.to_string_lossy())
        ));
        std::fs::remove_file(&file).expect("remove scratch yaml");
        let yaml = pingora_yaml(&c, None, Path::new("/run/x"));
        assert!(
            yaml.starts_with("# the effective Pingora conf cannot be built: cannot read"),
            "{yaml}"
        );
    }
}
