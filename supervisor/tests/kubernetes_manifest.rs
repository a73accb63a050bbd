//! The example Kubernetes manifest (etc/kubernetes/steward-proxy.yaml) keeps its numbers in
//! agreement: the kubelet's grace period and steward's stop timeout, the preStop sleep and
//! steward's margin, and every port named twice. A manifest edited in one place only fails
//! here instead of in a rollout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use steward::deadline::{self, Outer};
use steward::duration::{parse_span, Span};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn manifest() -> Vec<Value> {
    let path = repo().join("etc/kubernetes/steward-proxy.yaml");
    let text = std::fs::read_to_string(&path).expect("read the manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("the manifest is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn object(kind: &str) -> Value {
    manifest()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

fn pod_spec() -> Value {
    object("Deployment")["spec"]["template"]["spec"].clone()
}

fn container() -> Value {
    pod_spec()["containers"][0].clone()
}

/// A file of the ConfigMap.
fn config_file(name: &str) -> String {
    object("ConfigMap")["data"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in the ConfigMap"))
        .to_string()
}

fn toml_of(name: &str) -> toml::Table {
    config_file(name)
        .parse()
        .unwrap_or_else(|e| panic!("{name} in the ConfigMap: {e}"))
}

fn env_var(name: &str) -> String {
    container()["env"]
        .as_sequence()
        .expect("env list")
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in the container's env"))
        .to_string()
}

fn secs(text: &str) -> Duration {
    match parse_span(text) {
        Ok(Span::Finite(d)) => d,
        other => panic!("{text:?} is not a finite duration: {other:?}"),
    }
}

fn margin() -> Duration {
    secs(
        toml_of("steward.toml")["stop"]["margin"]
            .as_str()
            .expect("stop.margin is set"),
    )
}

fn grace() -> Duration {
    Duration::from_secs(
        pod_spec()["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds is set"),
    )
}

/// The preStop hook's sleep, `exec: sleep N` or Kubernetes 1.30's `sleep: {seconds: N}`.
fn prestop_sleep() -> Duration {
    let pre = &container()["lifecycle"]["preStop"];
    if let Some(n) = pre["sleep"]["seconds"].as_u64() {
        return Duration::from_secs(n);
    }
    match pre["exec"]["command"].as_sequence() {
        Some(cmd) if cmd.first().and_then(Value::as_str) == Some("sleep") => secs(
            cmd.get(1)
                .and_then(Value::as_str)
                .expect("sleep's argument"),
        ),
        Some(cmd) => panic!("preStop runs {cmd:?}: its time is not known to this check"),
        None => Duration::ZERO,
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| {
            p.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// A port as Kubernetes refers to it: a number, or the name of one of the container's.
fn resolve_port(v: &Value) -> u16 {
    if let Some(n) = v.as_u64() {
        return u16::try_from(n).expect("a port number");
    }
    let name = v.as_str().expect("a port number or name");
    container()["ports"]
        .as_sequence()
        .expect("containerPorts")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("no containerPort named {name:?}"))
}

#[test]
fn termination_grace_period_equals_steward_stop_timeout() {
    let env = deadline::parse_stop_timeout(env_var(deadline::STOP_TIMEOUT_ENV).as_ref())
        .expect("STEWARD_STOP_TIMEOUT parses as steward parses it");
    assert_eq!(
        env,
        Span::Finite(grace()),
        "terminationGracePeriodSeconds and STEWARD_STOP_TIMEOUT must be the same number"
    );
}

#[test]
fn stop_margin_covers_the_prestop_sleep_with_room_to_kill() {
    // steward's deadline runs from SIGTERM, which comes after the preStop hook; the
    // kubelet's SIGKILL runs from the start. 2 s: what `steward check` asks of a margin.
    let (margin, sleep) = (margin(), prestop_sleep());
    assert!(
        margin >= sleep + Duration::from_secs(2),
        "stop.margin {margin:?} must cover the preStop sleep {sleep:?} plus 2 s"
    );
    let d = deadline::resolve_with_env(
        steward::config::DeadlineSetting::Auto,
        margin,
        Duration::from_secs(25),
        &Outer::NotSystemd,
        Some(Span::Finite(grace())),
    )
    .expect("the deadline resolves");
    let kill_at = sleep + d.value.expect("a finite deadline");
    assert!(
        kill_at + Duration::from_secs(2) <= grace(),
        "steward would kill at {kill_at:?} after termination began, too close to the kubelet's {:?}",
        grace()
    );
}

#[test]
fn configmap_files_are_etc_container_verbatim() {
    for name in ["steward.toml", "proxy.toml", "pingora.yaml"] {
        let shipped = std::fs::read_to_string(repo().join("etc/container").join(name))
            .expect("etc/container file");
        assert_eq!(
            config_file(name),
            shipped,
            "the ConfigMap's {name} differs from etc/container/{name} (the Dockerfile's copy)"
        );
    }
}

#[test]
fn embedded_config_passes_steward_check() {
    let dir = std::env::temp_dir().join(format!("steward-k8s-manifest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for name in ["steward.toml", "proxy.toml", "pingora.yaml"] {
        std::fs::write(dir.join(name), config_file(name)).expect("write");
    }
    // steward-proxy is a bare name in the TOML, found in PATH as in the image.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_steward"));
    let bins = bin.parent().expect("target directory");
    let path = std::env::join_paths(std::iter::once(bins.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let out = Command::new(&bin)
        .args(["check", "--config"])
        .arg(dir.join("steward.toml"))
        .env("PATH", path)
        // As in the pod: the stop checks then use the manifest's timeout, not systemd's 90 s.
        .env("STEWARD_STOP_TIMEOUT", env_var("STEWARD_STOP_TIMEOUT"))
        .output()
        .expect("run steward check");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "steward check on the ConfigMap's files:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ports_agree_across_proxy_steward_probe_and_service() {
    let proxy = toml_of("proxy.toml");
    let steward = toml_of("steward.toml");
    let listen: Vec<&str> = proxy["listen"]
        .as_array()
        .expect("listen")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let health = proxy["health"]["listen"].as_str().expect("health.listen");
    let http_port = resolve_port(&Value::from("http"));
    assert_eq!(
        listen.iter().map(|a| port_of(a)).collect::<Vec<_>>(),
        vec![http_port],
        "proxy.toml listen vs containerPort http"
    );
    let service_target = &object("Service")["spec"]["ports"][0]["targetPort"];
    assert_eq!(
        resolve_port(service_target),
        http_port,
        "Service targetPort"
    );
    let probe = &container()["readinessProbe"]["httpGet"];
    assert_eq!(
        resolve_port(&probe["port"]),
        port_of(health),
        "readinessProbe port"
    );
    assert_eq!(probe["path"].as_str(), Some("/health"));
    let ready = steward["ready"]["http"].as_str().expect("ready.http");
    assert_eq!(
        port_of(ready.trim_end_matches("/health")),
        port_of(health),
        "steward's ready.http vs health.listen"
    );
    let sockets: Vec<&str> = steward["sockets"]["listen"]
        .as_array()
        .expect("sockets.listen")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for a in &listen {
        assert!(
            sockets.contains(a),
            "{a} is not in sockets.listen {sockets:?}"
        );
    }
}

#[test]
fn config_mount_and_runtime_dir_are_where_steward_looks() {
    let c = container();
    let mounts = c["volumeMounts"].as_sequence().expect("volumeMounts");
    let mounted = |p: &str| mounts.iter().any(|m| m["mountPath"].as_str() == Some(p));
    let command: Vec<&str> = c["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config = command
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("--config in the command");
    let config_dir = Path::new(config).parent().and_then(Path::to_str);
    assert!(
        mounted(config_dir.expect("config dir")),
        "{config} is not on a mount"
    );
    let runtime = toml_of("steward.toml")["runtime_dir"]
        .as_str()
        .expect("runtime_dir")
        .to_string();
    assert!(
        mounted(&runtime),
        "runtime_dir {runtime} is not a mounted volume"
    );
}
