//! Rootful podman for the end-to-end tests (tests/e2e/podman.rs) and the bench
//! (bench/podman.rs): whether it runs here, and an image of this checkout's release
//! binaries (tests/podman/build-image.sh) and a container of it, both removed on drop.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, Resource};
use steward_e2e::*;

/// The platform's stop timeout the tests stop with (`podman stop -t`), and so the
/// container's STEWARD_STOP_TIMEOUT, as etc/container/Dockerfile says to pass with `-t 10`:
/// steward's deadline is 10 s - the shipped margin 8 s = 2 s.
pub const STOP_TIMEOUT: u64 = 10;

/// Whether podman can run containers here; prints SKIPPED with podman's own error when it
/// cannot, or fails under CI=true.
pub fn podman_usable(test: &str) -> bool {
    if !needs_root(test, "rootful podman") {
        return false;
    }
    for (tool, args) in [("podman", ["info"]), ("runc", ["--version"])] {
        let why = match Command::new(tool).args(args).output() {
            Ok(out) if out.status.success() => continue,
            Ok(out) => format!(
                "`{tool} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => format!("{tool}: {e} (apt-get install podman runc)"),
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test} needs podman and runc, which scripts/setup installs on CI: {why}");
        }
        println!("SKIPPED {test}: {why}");
        return false;
    }
    true
}

/// Runs `podman args`, killed after `timeout`; its exit code and stdout, stderr.
pub fn podman(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let out = output_within(Command::new("podman").args(args), timeout)
        .unwrap_or_else(|| panic!("`podman {}` took over {timeout:?}", args.join(" ")));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `podman args` and fails the test, with podman's words, unless it succeeds.
pub fn podman_ok(args: &[&str], timeout: Duration) -> String {
    let (code, out, err) = podman(args, timeout);
    assert_eq!(
        code,
        Some(0),
        "`podman {}` failed:\n{out}{err}",
        args.join(" ")
    );
    out
}

/// A local image of steward-proxy under steward, removed on drop.
pub struct Image {
    pub tag: String,
}

impl Image {
    /// tests/podman/build-image.sh from the release binaries this test runs with.
    pub fn build(name: &str) -> Image {
        let tag = format!("localhost/steward-e2e-{}-{name}:latest", std::process::id());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("podman/build-image.sh");
        let release = bin("steward").parent().expect("release dir").to_path_buf();
        let out = output_within(
            Command::new("bash")
                .arg(script)
                .arg(&tag)
                .env("RELEASE_DIR", release),
            Duration::from_secs(120),
        )
        .expect("build-image.sh took over 120 s");
        let image = Image { tag };
        assert!(
            out.status.success(),
            "build-image.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.tag], Duration::from_secs(60));
    }
}

/// A container of an [`Image`], removed (killed if it still runs) on drop, even when the
/// test fails.
pub struct Container {
    pub name: String,
    /// steward-proxy's listener (6188 inside), published on the host's loopback.
    pub proxy: String,
}

impl Container {
    /// `podman run -d` of `image` with STEWARD_STOP_TIMEOUT=STOP_TIMEOUT; returns once
    /// steward reports the first generation serving.
    pub fn run(image: &Image, name: &str) -> Container {
        let name = format!("steward-e2e-{}-{name}", std::process::id());
        let proxy = format!("127.0.0.1:{}", free_port());
        // A container's limits cannot exceed those of the runtime podman starts, and
        // without CAP_SYS_RESOURCE (a sandbox may withhold it) runc cannot raise them: podman's
        // default open-file limit (1048576) is above this host's hard limit ("error setting
        // rlimit type 7: operation not permitted"), and podman runs with an nproc limit of
        // 32768, below which an explicit one must stay (type 6 otherwise).
        let (_, nofile) = getrlimit(Resource::RLIMIT_NOFILE).expect("RLIMIT_NOFILE");
        let (_, nproc) = getrlimit(Resource::RLIMIT_NPROC).expect("RLIMIT_NPROC");
        let nproc = nproc.min(32768);
        let c = Container {
            name: name.clone(),
            proxy: proxy.clone(),
        };
        podman_ok(
            &[
                // crun 1.8 refuses this host's hybrid cgroups ("cgroups in hybrid mode
                // not supported, drop all controllers from cgroupv2"); runc accepts them.
                "--runtime",
                "runc",
                "run",
                "-d",
                "--name",
                &name,
                "--ulimit",
                &format!("nofile={nofile}:{nofile}"),
                "--ulimit",
                &format!("nproc={nproc}:{nproc}"),
                "-p",
                &format!("{proxy}:6188"),
                "-e",
                &format!("STEWARD_STOP_TIMEOUT={STOP_TIMEOUT}"),
                &image.tag,
            ],
            Duration::from_secs(60),
        );
        c.wait_log("READY=1", Duration::from_secs(30));
        c
    }

    /// steward's log: the container's stdout and stderr, as `podman logs` shows them.
    pub fn logs(&self) -> String {
        let (_, out, err) = podman(&["logs", &self.name], Duration::from_secs(30));
        format!("{out}{err}")
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let log = self.logs();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} in the container's log within {timeout:?}:\n{log}"
            );
            // A steward that exited (a configuration error is 78) will not log it later.
            assert_eq!(
                self.inspect("{{.State.Running}}"),
                "true",
                "the container exited (code {}) before {needle:?}:\n{}",
                self.inspect("{{.State.ExitCode}}"),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `podman inspect --format` of the container.
    pub fn inspect(&self, format: &str) -> String {
        podman_ok(
            &["inspect", "--format", format, &self.name],
            Duration::from_secs(30),
        )
        .trim()
        .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(
            &["rm", "-f", "-t", "0", &self.name],
            Duration::from_secs(60),
        );
    }
}
