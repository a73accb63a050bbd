//! Set-ups shared by the end-to-end tests: steward supervising a real child.

#![allow(dead_code)]

use std::time::Duration;

use steward_e2e::*;

/// The user's YAML from the bug report: a grace period far beyond any stop timeout.
pub const USER_YAML: &str =
    "---\nversion: 1\nthreads: 2\npid_file: /tmp/pingora.pid\nupgrade_sock: /tmp/pingora_upgrade.sock\nerror_log: /tmp/pingora_err.log\ngrace_period_seconds: 300\n";

/// Where [`Launcher::Escapee`] records its escapees, in the scratch directory.
const ESCAPEES: &str = "escapees";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Our proxy: exits by itself once drained.
    StewardProxy,
    /// Pingora as its users write it: sleeps out its grace period.
    StockPingora,
    /// The same user's server with steward-pingora's one line (the crate's example
    /// `graceful-proxy`): exits by itself once drained.
    Library,
}

/// What starts the child: the child command itself, or a launcher in front of it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    #[default]
    None,
    /// [`escaping_launcher`]: an escapee only steward's kill ends; see [`Setup::escapees`].
    Escapee,
    /// [`late_sigterm_launcher`]: SIGTERM reaches the server this many seconds late.
    LateSigterm(u64),
}

/// Less common choices for [`Setup::start_opts`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Opts<'a> {
    /// steward-proxy's readiness path instead of `/health` (another path answers 404, so
    /// the child never becomes ready).
    pub ready_path: Option<&'a str>,
    /// Signals blocked and pending when steward starts ([`Steward::start_with_pending`]).
    pub pending: &'a [nix::sys::signal::Signal],
    /// More environment for steward (and so for the child).
    pub env: &'a [(&'a str, &'a str)],
    pub launcher: Launcher,
    /// `child.handoff` (steward's default, Pingora's `-u` hand-off, when `None`).
    pub handoff: Option<&'a str>,
    /// The steward binary to run, when not the workspace's own.
    pub program: Option<&'a std::path::Path>,
}

/// A request's outcome and when it ended.
pub type Finished = (Result<(u16, String), String>, std::time::Instant);

pub struct Setup {
    pub scratch: Scratch,
    pub steward: Steward,
    pub notify: NotifySocket,
    /// Where clients connect.
    pub proxy: String,
    pub origin: Option<Origin>,
    /// The child's own health endpoint (`host:port`), when it has one.
    pub health: Option<String>,
}

impl Setup {
    /// steward supervising `kind` with this Pingora YAML and these `[stop]` lines.
    pub fn start(kind: Kind, yaml: &str, stop: &str) -> Setup {
        Setup::start_with(kind, yaml, stop, false, "")
    }

    /// As [`Setup::start`], with steward owning the listeners when `sockets`, and `more`
    /// TOML tables appended.
    pub fn start_with(kind: Kind, yaml: &str, stop: &str, sockets: bool, more: &str) -> Setup {
        Setup::start_opts(kind, yaml, stop, sockets, more, Opts::default())
    }

    /// As [`Setup::start_with`], with [`Opts`].
    pub fn start_opts(
        kind: Kind,
        yaml: &str,
        stop: &str,
        sockets: bool,
        more: &str,
        opts: Opts,
    ) -> Setup {
        let mut extra = more.to_string();
        let scratch = Scratch::new("setup");
        let notify = NotifySocket::bind(&scratch.path);
        let yaml_path = scratch.write("pingora.yaml", yaml);
        let mut env = vec![
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            (
                "STUBBORN_PIDFILE",
                scratch.path.join(ESCAPEES).display().to_string(),
            ),
        ];
        let launcher = match opts.launcher {
            Launcher::None => None,
            Launcher::Escapee => Some(escaping_launcher(&scratch)),
            Launcher::LateSigterm(secs) => Some(late_sigterm_launcher(&scratch, secs)),
        };
        let launcher = launcher
            .map(|l| format!("\"{}\", ", l.display()))
            .unwrap_or_default();
        env.extend(opts.env.iter().map(|&(k, v)| (k, v.to_string())));
        let (command, ready, proxy, origin, health) = match kind {
            Kind::StewardProxy => {
                let a = proxy_settings(&scratch);
                if sockets {
                    extra.push_str(&format!(
                        "[sockets]\nlisten = [\"{}\", \"{}\"]\n",
                        a.proxy, a.origin
                    ));
                }
                (
                    format!(
                        "[{launcher}\"{}\", \"--proxy-config\", \"{}\"]",
                        bin("steward-proxy").display(),
                        a.settings.display()
                    ),
                    format!(
                        "http = \"http://{}{}\"",
                        a.health,
                        opts.ready_path.unwrap_or("/health")
                    ),
                    a.proxy,
                    None,
                    Some(a.health),
                )
            }
            Kind::StockPingora => {
                let origin = Origin::start();
                let proxy = format!("127.0.0.1:{}", free_port());
                env.push(("STOCK_LISTEN", proxy.clone()));
                env.push(("STOCK_UPSTREAM", origin.addr.clone()));
                if sockets {
                    extra.push_str(&format!("[sockets]\nlisten = [\"{proxy}\"]\n"));
                }
                (
                    format!("[{launcher}\"{}\"]", bin("stock-pingora").display()),
                    format!("tcp = \"{proxy}\""),
                    proxy,
                    Some(origin),
                    None,
                )
            }
            Kind::Library => {
                let origin = Origin::start();
                let proxy = format!("127.0.0.1:{}", free_port());
                let health = format!("127.0.0.1:{}", free_port());
                env.push(("LISTEN", proxy.clone()));
                env.push(("UPSTREAM", origin.addr.clone()));
                env.push(("HEALTH", health.clone()));
                if sockets {
                    extra.push_str(&format!("[sockets]\nlisten = [\"{proxy}\"]\n"));
                }
                (
                    format!("[{launcher}\"{}\"]", example("graceful-proxy").display()),
                    format!("http = \"http://{health}/health\""),
                    proxy,
                    Some(origin),
                    Some(health),
                )
            }
        };
        let handoff = opts
            .handoff
            .map(|h| format!("handoff = \"{h}\"\n"))
            .unwrap_or_default();
        let config = scratch.write(
            "steward.toml",
            &format!(
                "runtime_dir = \"{}/run\"\n[child]\ncommand = {command}\npingora_conf = \"{}\"\n{handoff}[ready]\n{ready}\ntimeout = \"20s\"\n[stop]\n{stop}\n{extra}",
                scratch.path.display(),
                yaml_path.display()
            ),
        );
        let steward = match opts.program {
            Some(p) => Steward::start_program(&scratch.path, &config, &env, opts.pending, p),
            None => Steward::start_with_pending(&scratch.path, &config, &env, opts.pending),
        };
        Setup {
            scratch,
            steward,
            notify,
            proxy,
            origin,
            health,
        }
    }

    /// steward supervising `kind` with this Pingora YAML on steward-owned listeners,
    /// handed to every generation by `handoff` (`child.handoff`; steward's default when
    /// `None`). Not yet waited for.
    pub fn start_handoff(kind: Kind, yaml: &str, handoff: Option<&str>) -> Setup {
        Setup::start_opts(
            kind,
            yaml,
            "",
            true,
            "",
            Opts {
                handoff,
                ..Opts::default()
            },
        )
    }

    /// steward's control socket.
    pub fn control(&self) -> std::path::PathBuf {
        self.scratch.path.join("run/control.sock")
    }

    /// The current generation and its child's pid, from `steward status --json`.
    pub fn generation(&self) -> (u64, i32) {
        let v = status_json(&self.control());
        assert!(!v.is_null(), "steward status gave no JSON");
        (
            v["status"]["generation"].as_u64().unwrap_or(0),
            v["status"]["child_pid"].as_i64().unwrap_or(0) as i32,
        )
    }

    /// `clients` clients on the proxy, each opening a fresh connection per request
    /// ([`load`]), for 300 ms, then while `event` runs, then 300 ms more: their counts
    /// and errors.
    pub fn load_across(&self, clients: usize, event: impl FnOnce()) -> (LoadCounts, Vec<String>) {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = load(&self.proxy, "/", clients, stop.clone());
        std::thread::sleep(Duration::from_millis(300));
        event();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        load.join().expect("load")
    }

    /// A kill -9 of the current child under [`Setup::load_across`], which lasts until the
    /// next generation serves.
    pub fn crash_under_load(&self, clients: usize) -> (LoadCounts, Vec<String>) {
        let (gen, pid) = self.generation();
        let next = (gen + 1).to_string();
        self.load_across(clients, || {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill -9 the child");
            let serving = [
                ("steward_event", "serving"),
                ("steward_generation", next.as_str()),
            ];
            self.steward.expect_fact(&serving, Duration::from_secs(10));
        })
    }

    /// SIGTERM to steward, which must exit within 30 s.
    pub fn stop(mut self) {
        self.steward.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(30));
    }

    /// Waits for READY=1, failing the test with steward's log if it does not come.
    pub fn wait_ready(&mut self) {
        if self
            .notify
            .wait_for("READY=1", Duration::from_secs(20))
            .is_none()
        {
            panic!("no READY=1 within 20 s; log:\n{}", self.steward.log_text());
        }
    }

    /// The escapees [`Launcher::Escapee`] left, one per run of the child command (every
    /// generation, and every configuration check of a reload).
    pub fn escapees(&self) -> Vec<i32> {
        recorded_pids(&self.scratch.path.join(ESCAPEES))
    }

    /// Starts `GET /delay/<ms>` through the proxy in a thread; returns its join handle.
    pub fn slow_request(&self, ms: u64) -> std::thread::JoinHandle<Finished> {
        let proxy = self.proxy.clone();
        std::thread::spawn(move || {
            let r = http_get(&proxy, &format!("/delay/{ms}"), Duration::from_secs(60));
            (r, std::time::Instant::now())
        })
    }

    /// `steward reload`, which must succeed: the `i`th of a test.
    pub fn reload(&self, i: u32) {
        let (code, out) = steward_cli("reload", &self.control());
        assert_eq!(
            code,
            Some(0),
            "reload {i}: {out}\nlog:\n{}",
            self.steward.log_text()
        );
    }

    /// `clients` clients as browsers and load balancers are ([`keep_alive_load`]: each a
    /// persistent HTTP/1.1 connection, the next request as soon as the last is answered)
    /// on the proxy across `reloads` reloads, each followed by `pause` while the retired
    /// generation drains and the clients go on. Their counts.
    pub fn keep_alive_reloads(
        &self,
        clients: usize,
        reloads: u32,
        pause: Duration,
    ) -> KeepAliveCounts {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = keep_alive_load(&self.proxy, "/", clients, stop.clone());
        std::thread::sleep(pause);
        for i in 1..=reloads {
            self.reload(i);
            std::thread::sleep(pause);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        load.join().expect("keep-alive clients")
    }

    /// Steward's exit status, failing with its log on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        match self.steward.wait(timeout) {
            Some(s) => s,
            None => panic!(
                "steward did not exit within {timeout:?}; log:\n{}",
                self.steward.log_text()
            ),
        }
    }
}
