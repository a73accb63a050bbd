//! `child.handoff = "inherit"`: steward-proxy (built with steward-pingora) inherits
//! steward's listening sockets across exec instead of waiting for them on Pingora's upgrade
//! socket, so no generation pays Pingora's one-second accept poll. Every guarantee of the
//! hand-off holds on this path: the same sockets for every generation, nothing refused, a
//! listener the child does not claim fails the spawn. A stock Pingora server keeps the
//! upgrade hand-off, and one told to inherit fails with the reason.

mod common;

use std::time::Duration;

use common::{Kind, Opts, Setup, USER_YAML};
use steward_e2e::*;

fn start(kind: Kind, handoff: Option<&str>) -> Setup {
    let mut s = Setup::start_handoff(kind, USER_YAML, handoff);
    s.wait_ready();
    s
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("host:port")
}

/// The inode of the one socket listening on 127.0.0.1:`port` (steward's).
fn listener_inode(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    let found: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect();
    assert_eq!(found.len(), 1, "listeners on port {port}: {found:?}");
    found[0]
}

/// Whether process `pid` holds socket `inode`.
fn holds(pid: i32, inode: u64) -> bool {
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == target))
        })
        .unwrap_or(false)
}

/// The command line steward logged for generation `gen`.
fn command_line(s: &Setup, gen: u64) -> String {
    let log = s.steward.log_text();
    log.lines()
        .find(|l| l.contains("started child pid") && l.contains(&format!("generation {gen} (")))
        .unwrap_or_else(|| panic!("no start of generation {gen} in the log:\n{log}"))
        .to_string()
}

#[test]
fn steward_proxy_inherits_steward_s_listener_and_is_started_without_u() {
    let s = start(Kind::StewardProxy, Some("inherit"));
    let (_, pid) = s.generation();
    let inode = listener_inode(port(&s.proxy));
    assert!(holds(s.steward.pid(), inode), "steward holds its listener");
    assert!(holds(pid, inode), "the child serves steward's listener");
    let line = command_line(&s, 1);
    assert!(!line.contains(" -u "), "{line}");
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
}

#[test]
fn a_crash_under_load_on_the_inherited_listener_refuses_nothing_and_the_next_generation_serves_the_same_socket(
) {
    let s = start(Kind::StewardProxy, Some("inherit"));
    let inode = listener_inode(port(&s.proxy));
    let (counts, errors) = s.crash_under_load(4);
    assert_eq!(counts.refused, 0, "{counts:?} {errors:?}");
    // Only requests inside the killed child can fail: at most one per client.
    assert!(counts.failed <= 4, "{counts:?} {errors:?}");
    let (gen, new) = s.generation();
    assert_eq!(gen, 2);
    assert_eq!(listener_inode(port(&s.proxy)), inode, "the same socket");
    assert!(holds(new, inode), "generation 2 serves steward's listener");
    assert!(!command_line(&s, 2).contains(" -u "));
}

#[test]
fn reloads_under_load_on_the_inherited_listener_refuse_and_fail_nothing() {
    let s = start(Kind::StewardProxy, Some("inherit"));
    let inode = listener_inode(port(&s.proxy));
    let (counts, errors) = s.load_across(4, || (1..=5).for_each(|i| s.reload(i)));
    assert!(counts.ok > 50, "{counts:?}");
    assert_eq!(counts.refused, 0, "{counts:?} {errors:?}");
    assert_eq!(
        counts.failed,
        0,
        "{counts:?} {errors:?}\nlog:\n{}",
        s.steward.log_text()
    );
    let (gen, pid) = s.generation();
    assert_eq!(gen, 6);
    assert!(holds(pid, inode), "generation 6 serves steward's listener");
    assert!(!command_line(&s, 6).contains(" -u "));
}

#[test]
fn a_listener_steward_proxy_does_not_claim_fails_the_inherited_start_with_the_key() {
    let (code, log, stray) = start_with_a_stray_listener("inherit-badkey", Some("inherit"));
    assert_eq!(code, Some(78), "log:\n{log}");
    assert!(
        log.contains(&format!("did not claim listener(s) {stray}")),
        "log:\n{log}"
    );
}

#[test]
fn a_stock_pingora_child_keeps_pingoras_upgrade_hand_off_and_serves_steward_s_listener() {
    let s = start(Kind::StockPingora, None);
    let (_, old) = s.generation();
    let inode = listener_inode(port(&s.proxy));
    assert!(command_line(&s, 1).contains(" -u "));
    assert!(holds(old, inode));
    s.reload(1);
    let (gen, new) = s.generation();
    assert_eq!(gen, 2);
    assert!(command_line(&s, 2).contains(" -u "));
    assert!(holds(new, inode), "generation 2 serves steward's listener");
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
}

#[test]
fn a_stock_pingora_child_told_to_inherit_is_refused_at_start_by_the_check() {
    let mut s = Setup::start_opts(
        Kind::StockPingora,
        USER_YAML,
        "",
        true,
        "",
        Opts {
            handoff: Some("inherit"),
            ..Opts::default()
        },
    );
    let status = s.wait_exit(Duration::from_secs(30));
    let log = s.steward.log_text();
    assert_eq!(status.code(), Some(78), "log:\n{log}");
    assert!(
        log.contains("handoff-unsupported") && log.contains("handoff = \"upgrade\""),
        "log:\n{log}"
    );
    assert!(
        s.notify.messages().iter().all(|m| !m.contains("READY=1")),
        "never ready"
    );
}

#[test]
fn a_child_that_never_reports_its_inherited_listeners_fails_its_start_naming_the_setting() {
    // A stock Pingora server behind a script that holds steward-pingora's marker, so the
    // start-up check lets it through: only the missing report can stop it.
    let scratch = Scratch::new("inherit-noreport");
    let origin = Origin::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let wrapper = scratch.write_executable(
        "claims-to-inherit.sh",
        &format!(
            "#!/bin/sh\n# STEWARD_LISTENERS_REPORT\nexec {} \"$@\"\n",
            bin("stock-pingora").display()
        ),
    );
    let config = scratch.write(
        "steward.toml",
        &format!(
            "runtime_dir = \"{}/run\"\n[child]\ncommand = [\"{}\"]\nhandoff = \"inherit\"\n[child.env]\nSTOCK_LISTEN = \"{listen}\"\nSTOCK_UPSTREAM = \"{}\"\n[ready]\ntcp = \"{listen}\"\n[sockets]\nlisten = [\"{listen}\"]\n",
            scratch.path.display(),
            wrapper.display(),
            origin.addr
        ),
    );
    let mut steward = Steward::start(&scratch.path, &config, &[]);
    let status = steward.wait(Duration::from_secs(30)).expect("exits");
    let log = steward.log_text();
    assert_eq!(status.code(), Some(78), "log:\n{log}");
    assert!(
        log.contains("did not report the listeners it took")
            && log.contains("child.handoff = \"upgrade\""),
        "log:\n{log}"
    );
}

#[test]
fn a_user_s_binary_with_steward_pingora_inherits_steward_s_listener() {
    let s = start(Kind::Library, Some("inherit"));
    let (_, pid) = s.generation();
    let inode = listener_inode(port(&s.proxy));
    assert!(holds(pid, inode), "the example serves steward's listener");
    assert!(!command_line(&s, 1).contains(" -u "));
    assert_eq!(
        http_get(&s.proxy, "/", Duration::from_secs(2)).map(|r| r.0),
        Ok(200)
    );
}

/// What process `pid` holds above stdin, stdout and stderr: the link targets.
fn held_above_stdio(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.parse::<i32>().ok())
                        .is_some_and(|fd| fd > 2)
                })
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                // Sockets and pipes name their inode; `anon_inode:[eventfd]` names a kind.
                .filter(|t| t.starts_with("socket:[") || t.starts_with("pipe:["))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_child_on_inherited_listeners_shares_no_descriptor_with_steward_but_the_listeners() {
    let s = start(Kind::StewardProxy, Some("inherit"));
    let (_, pid) = s.generation();
    // Every sockets.listen entry: the proxy's and the demo origin's.
    let config = std::fs::read_to_string(s.scratch.path.join("steward.toml")).expect("config");
    let listeners: Vec<String> = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = ["))
        .expect("sockets.listen")
        .split('"')
        .filter(|a| a.contains(':'))
        .map(|a| format!("socket:[{}]", listener_inode(port(a))))
        .collect();
    assert_eq!(listeners.len(), 2, "{config}");
    let stewards = held_above_stdio(s.steward.pid());
    let shared: Vec<String> = held_above_stdio(pid)
        .into_iter()
        .filter(|t| stewards.contains(t))
        .collect();
    assert!(
        shared.iter().all(|t| listeners.contains(t)),
        "shared beyond the listeners {listeners:?}: {shared:?}"
    );
    assert!(listeners.iter().all(|l| shared.contains(l)), "{shared:?}");
}
