//! `make install`: what lands where, that the installed unit names the installed paths
//! and passes `steward check` with the installed configuration, and that a second install
//! keeps an operator's edits.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use steward_e2e::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `make install-files` (no build: the test runs on the binaries already built) into
/// `root` with PREFIX=/usr; its output.
fn install(root: &Path) -> String {
    let release = bin("steward")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let out = Command::new("make")
        .current_dir(repo())
        .args(["-s", "install-files", "PREFIX=/usr"])
        .arg(format!("DESTDIR={}", root.display()))
        .arg(format!("RELEASE={}", release.display()))
        .output()
        .expect("make runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "make install-files failed:\n{text}");
    text
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_puts_every_file_in_its_place_with_its_mode() {
    let scratch = Scratch::new("install-files");
    install(&scratch.path);
    for (path, want) in [
        ("usr/bin/steward", 0o755),
        ("usr/bin/steward-proxy", 0o755),
        ("usr/share/man/man1/steward.1", 0o644),
        ("usr/lib/systemd/system/steward-proxy.service", 0o644),
        ("usr/lib/sysusers.d/steward.conf", 0o644),
        ("etc/steward/steward.toml", 0o644),
        ("etc/steward/proxy.toml", 0o644),
        ("etc/steward/pingora.yaml", 0o644),
        ("usr/share/doc/steward/operators-guide.md", 0o644),
        ("usr/share/bash-completion/completions/steward", 0o644),
        ("usr/share/zsh/vendor-completions/_steward", 0o644),
        ("usr/share/fish/vendor_completions.d/steward.fish", 0o644),
    ] {
        assert_eq!(mode(&scratch.path.join(path)), want, "{path}");
    }
}

#[test]
fn the_installed_completions_offer_every_subcommand() {
    let scratch = Scratch::new("install-completions");
    install(&scratch.path);
    for file in [
        "usr/share/bash-completion/completions/steward",
        "usr/share/zsh/vendor-completions/_steward",
        "usr/share/fish/vendor_completions.d/steward.fish",
    ] {
        let text = std::fs::read_to_string(scratch.path.join(file)).expect("completion script");
        for sub in ["run", "status", "reload", "restart", "check", "completions"] {
            assert!(text.contains(sub), "{file} does not offer {sub}");
        }
        assert!(
            text.contains("print-effective"),
            "{file} lacks check's options"
        );
    }
}

#[test]
fn the_installed_unit_runs_the_installed_binaries() {
    let scratch = Scratch::new("install-unit");
    install(&scratch.path);
    let unit = std::fs::read_to_string(
        scratch
            .path
            .join("usr/lib/systemd/system/steward-proxy.service"),
    )
    .expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/steward run --config /etc/steward/steward.toml"),
        "{unit}"
    );
    assert!(
        unit.contains("ExecReload=/usr/bin/steward reload"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local/"), "{unit}");
}

#[test]
fn the_installed_unit_and_configuration_pass_steward_check() {
    let scratch = Scratch::new("install-check");
    install(&scratch.path);
    let root = &scratch.path;
    let out = Command::new(root.join("usr/bin/steward"))
        .args(["check", "--unit-file"])
        .arg(root.join("usr/lib/systemd/system/steward-proxy.service"))
        .arg("--config")
        .arg(root.join("etc/steward/steward.toml"))
        // The unit's PATH finds the installed steward-proxy.
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", root.join("usr/bin").display()),
        )
        .output()
        .expect("steward check runs");
    let report = String::from_utf8_lossy(&out.stdout);
    // 0: clean or infos only; 1 would be warnings, 2 errors.
    assert_eq!(out.status.code(), Some(0), "{report}");
}

#[test]
fn a_second_install_keeps_an_edited_configuration_and_puts_the_shipped_one_beside_it() {
    let scratch = Scratch::new("install-again");
    install(&scratch.path);
    let conf = scratch.path.join("etc/steward/steward.toml");
    let mut edited = std::fs::read_to_string(&conf).expect("conf");
    edited.push_str("# the operator's edit\n");
    std::fs::write(&conf, &edited).expect("edit");
    let said = install(&scratch.path);
    assert_eq!(std::fs::read_to_string(&conf).expect("conf"), edited);
    let shipped =
        std::fs::read_to_string(repo().join("etc/steward/steward.toml")).expect("shipped");
    assert_eq!(
        std::fs::read_to_string(scratch.path.join("etc/steward/steward.toml.dist")).expect("dist"),
        shipped
    );
    assert!(said.contains("kept"), "{said}");
    // Unedited files are simply installed again, with no .dist beside them.
    assert!(!scratch.path.join("etc/steward/proxy.toml.dist").exists());
}
