//! docs/steward.1 is `steward man`'s output, committed so `man -l docs/steward.1` works
//! without a build. This fails when the CLI changed and the page was not regenerated.

use std::path::Path;
use std::process::Command;

const REGENERATE: &str = "make man (or: cargo run -q -p steward -- man > docs/steward.1)";

fn steward(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .output()
        .expect("steward runs");
    assert!(out.status.success(), "steward {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn committed_man_page_is_current() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/steward.1");
    let committed = std::fs::read_to_string(&page)
        .unwrap_or_else(|e| panic!("{}: {e}; generate it with {REGENERATE}", page.display()));
    let generated = steward(&["man"]);
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()) + 1);
        panic!(
            "docs/steward.1 is stale (first difference at line {line}): the CLI changed; \
             regenerate it with {REGENERATE} and commit it"
        );
    }
}

#[test]
fn the_page_covers_every_command_and_section() {
    let page = steward(&["man"]);
    for sub in ["run", "status", "reload", "restart", "check"] {
        assert!(
            page.contains(&format!(".SS \"steward {sub}\""))
                || page.contains(&format!(".SS steward {sub}")),
            "no section for steward {sub}"
        );
    }
    for section in ["EXIT STATUS", "SIGNALS", "ENVIRONMENT", "FILES"] {
        assert!(
            page.contains(&format!(".SH \"{section}\""))
                || page.contains(&format!(".SH {section}")),
            "no {section}"
        );
    }
    for code in ["64", "69", "70", "71", "73", "78"] {
        assert!(
            page.contains(&format!("\\fB{code}\\fR")),
            "exit status {code} missing"
        );
    }
}

#[test]
fn man_is_hidden_from_the_help() {
    let help = steward(&["--help"]);
    assert!(help.contains("check"), "{help}");
    assert!(!help.contains("man "), "{help}");
}
