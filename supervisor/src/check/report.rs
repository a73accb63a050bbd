//! How `steward check` shows its findings: a block per finding for people, one JSON
//! document for CI pipelines, and an exit status for both.

use serde::Serialize;

use super::{Checked, Finding, Inputs, Severity};

/// 0: nothing or only infos, 1: warnings, 2: errors.
pub fn exit_status(findings: &[Finding]) -> i32 {
    match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Error) => 2,
        Some(Severity::Warning) => 1,
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
}

pub fn summary(findings: &[Finding]) -> Summary {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    Summary {
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        infos: count(Severity::Info),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// ```text
/// error[stop-timeout-exceeded]: systemctl stop will wait 90 s and then SIGKILL every process; ...
///   why: after SIGTERM Pingora sleeps grace_period_seconds 300 s ...
///   fix: /etc/pingora.conf:3: grace_period_seconds: 80 ...
/// ```
pub fn human(c: &Checked) -> String {
    let mut out = format!("steward check: {}\n", describe_inputs(&c.inputs));
    for f in &c.findings {
        out.push_str(&format!("\n{}[{}]: {}\n", f.severity, f.id, f.what));
        if !f.why.is_empty() {
            out.push_str(&format!("  why: {}\n", f.why));
        }
        match (&f.at, f.fix.is_empty()) {
            (Some(at), false) => out.push_str(&format!("  fix: {at}: {}\n", f.fix)),
            (None, false) => out.push_str(&format!("  fix: {}\n", f.fix)),
            (Some(at), true) => out.push_str(&format!("  at:  {at}\n")),
            (None, true) => {}
        }
    }
    let s = summary(&c.findings);
    out.push_str(&format!(
        "\nsteward check: {}, {}, {}\n",
        plural(s.errors, "error"),
        plural(s.warnings, "warning"),
        plural(s.infos, "info")
    ));
    out
}

fn describe_inputs(i: &Inputs) -> String {
    let mut parts = Vec::new();
    if let Some(u) = &i.unit {
        let files = u
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        parts.push(format!("unit {} (via {}: {files})", u.name, u.via));
    }
    match i.mode {
        Some("steward") => {
            if let Some(p) = &i.steward_config {
                parts.push(format!("steward config {}", p.display()));
            }
            parts.extend(pingora_conf(i));
            if let Some(p) = &i.proxy_config {
                parts.push(format!("steward-proxy settings {}", p.display()));
            }
        }
        Some(_) => {
            parts.extend(pingora_conf(i));
            parts.push(format!("Pingora {} without steward", i.pingora_version));
        }
        None => {}
    }
    if let Some(t) = &i.stop_timeout {
        parts.push(format!("stop timeout {} from {}", t.value, t.source));
    }
    if parts.is_empty() {
        "nothing could be read".into()
    } else {
        parts.join("; ")
    }
}

fn pingora_conf(i: &Inputs) -> Option<String> {
    match (&i.pingora_conf, i.pingora_defaults) {
        (Some(p), _) => Some(format!("Pingora conf {}", p.display())),
        (None, true) => Some("no Pingora conf (Pingora's defaults)".into()),
        (None, false) => None,
    }
}

#[derive(Serialize)]
struct Json<'a> {
    status: i32,
    summary: Summary,
    inputs: &'a Inputs,
    findings: &'a [Finding],
}

pub fn json(c: &Checked) -> String {
    let doc = Json {
        status: exit_status(&c.findings),
        summary: summary(&c.findings),
        inputs: &c.inputs,
        findings: &c.findings,
    };
    // Serializing plain strings, numbers and paths cannot fail.
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
        format!("{{\"status\": 2, \"error\": \"cannot write the report: {e}\"}}")
    });
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::findings::{KILL_MODE, NO_UNIT, PARSE_ERROR};

    fn finding(id: crate::check::findings::Id, s: Severity) -> Finding {
        Finding::new(id, s, "what")
    }

    #[test]
    fn infos_alone_exit_0() {
        assert_eq!(exit_status(&[finding(NO_UNIT, Severity::Info)]), 0);
        assert_eq!(exit_status(&[]), 0);
    }

    #[test]
    fn warnings_exit_1_and_errors_exit_2() {
        assert_eq!(exit_status(&[finding(KILL_MODE, Severity::Warning)]), 1);
        assert_eq!(
            exit_status(&[
                finding(KILL_MODE, Severity::Warning),
                finding(PARSE_ERROR, Severity::Error)
            ]),
            2
        );
    }

    #[test]
    fn the_summary_line_counts_each_severity() {
        let c = Checked {
            inputs: Inputs::default(),
            effective: None,
            findings: vec![finding(KILL_MODE, Severity::Warning)],
        };
        assert!(human(&c).ends_with("steward check: 0 errors, 1 warning, 0 infos\n"));
    }
}
