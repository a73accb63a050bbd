//! Asking systemd about the unit steward runs in (or one by name): D-Bus first,
//! `systemctl show` second.
//!
//! A service cannot read its own stop timeout from its environment. D-Bus answers in
//! microseconds (`GetUnitByPID` then the `TimeoutStopUSec` property); where the bus is not
//! up (minimal containers, early boot), `systemctl show` prints a human time span that
//! [`crate::duration::parse_systemd_span`] reads as systemd itself does.
//!
//! The unit's other properties ([`own_unit`], [`named_unit`]) come the same two ways. This
//! module owns the D-Bus side whole, decoding systemd's typed replies into a
//! [`UnitProps`]; the text `systemctl show` prints is read by [`crate::unit`], which also
//! reads unit files offline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::deadline::{Outer, UnitTimeout};
use crate::duration::{from_usec, parse_systemd_span};
use crate::limits::Nofile;
use crate::unit::{self, Command, Prop, UnitProps, SYSTEMD_DEFAULT_NOFILE};

const DBUS_TIMEOUT: Duration = Duration::from_secs(2);
const SYSTEMD_DEST: &str = "org.freedesktop.systemd1";

/// Whether systemd started this process as (part of) a service.
pub fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}

/// What systemd says about our unit's stop timeout, or why it could not be asked.
pub async fn query_outer() -> Outer {
    if !under_systemd() {
        return Outer::NotSystemd;
    }
    let dbus_err = match tokio::time::timeout(DBUS_TIMEOUT, via_dbus()).await {
        Ok(Ok(u)) => return Outer::Systemd(u),
        Ok(Err(e)) => e,
        Err(_) => format!("no answer within {} s", DBUS_TIMEOUT.as_secs()),
    };
    match via_systemctl().await {
        Ok(u) => {
            tracing::debug!(dbus_error = %dbus_err, "D-Bus unavailable, used systemctl show");
            Outer::Systemd(u)
        }
        Err(e) => Outer::SystemdUnreachable(format!("D-Bus: {dbus_err}; systemctl: {e}")),
    }
}

async fn via_dbus() -> Result<UnitTimeout, String> {
    let conn = zbus::Connection::system()
        .await
        .map_err(|e| format!("system bus: {e}"))?;
    let path: OwnedObjectPath = call(
        &conn,
        MANAGER_PATH,
        MANAGER,
        "GetUnitByPID",
        &(std::process::id()),
    )
    .await?;
    let get = |iface: &'static str, prop: &'static str| {
        let conn = conn.clone();
        let path = path.clone();
        async move {
            call::<_, OwnedValue>(&conn, path.as_str(), PROPERTIES, "Get", &(iface, prop)).await
        }
    };
    let id = get("org.freedesktop.systemd1.Unit", "Id").await?;
    let unit = String::try_from(id).map_err(|e| format!("Id: {e}"))?;
    let usec = get("org.freedesktop.systemd1.Service", "TimeoutStopUSec").await?;
    let usec = u64::try_from(usec).map_err(|e| format!("TimeoutStopUSec: {e}"))?;
    Ok(UnitTimeout {
        unit,
        timeout_stop: from_usec(usec),
        via: "D-Bus",
    })
}

async fn via_systemctl() -> Result<UnitTimeout, String> {
    let unit = own_unit_name()?;
    let text = systemctl(&["show", "-p", "TimeoutStopUSec", "--value", &unit]).await?;
    let timeout_stop = parse_systemd_span(text.trim()).map_err(|e| e.to_string())?;
    Ok(UnitTimeout {
        unit,
        timeout_stop,
        via: "systemctl show",
    })
}

fn own_unit_name() -> Result<String, String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    unit_from_cgroup(&cgroup).ok_or_else(|| "no .service in /proc/self/cgroup".to_string())
}

async fn systemctl(args: &[&str]) -> Result<String, String> {
    let out = tokio::time::timeout(
        DBUS_TIMEOUT,
        tokio::process::Command::new("systemctl")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "no answer".to_string())?
    .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "systemctl show failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One interface's properties as D-Bus `GetAll` returns them.
type Properties = HashMap<String, OwnedValue>;

/// The unit this process runs in, read live: for `steward run`'s start-up check.
pub async fn own_unit() -> Result<UnitProps, String> {
    query_unit(None).await
}

/// A unit by name, read live: for `steward check --unit`.
pub async fn named_unit(name: &str) -> Result<UnitProps, String> {
    query_unit(Some(name)).await
}

/// A unit's properties, with the lines of its files that set them: the unit this process
/// runs in (`name` `None`: D-Bus `GetUnitByPID`, else the unit in /proc/self/cgroup), or a
/// unit by name. D-Bus first, `systemctl show` second, as for the timeout; a D-Bus answer
/// that does not decode also falls back to `systemctl show`.
async fn query_unit(name: Option<&str>) -> Result<UnitProps, String> {
    let mut props = props_of(name).await?;
    props.locate_in_files();
    Ok(props)
}

async fn props_of(name: Option<&str>) -> Result<UnitProps, String> {
    let dbus_err = match tokio::time::timeout(DBUS_TIMEOUT, props_via_dbus(name)).await {
        Ok(Ok(p)) => return Ok(p),
        Ok(Err(e)) => e,
        Err(_) => format!("no answer within {} s", DBUS_TIMEOUT.as_secs()),
    };
    let unit = match name {
        Some(n) => n.to_string(),
        None => own_unit_name().map_err(|e| format!("D-Bus: {dbus_err}; systemctl: {e}"))?,
    };
    systemctl(&["show", "-p", unit::SHOW_PROPERTIES, &unit])
        .await
        .and_then(|text| UnitProps::from_systemctl_show(&text))
        .map_err(|e| format!("D-Bus: {dbus_err}; systemctl: {e}"))
}

async fn props_via_dbus(name: Option<&str>) -> Result<UnitProps, String> {
    let conn = zbus::Connection::system()
        .await
        .map_err(|e| format!("system bus: {e}"))?;
    let path: OwnedObjectPath = match name {
        None => {
            call(
                &conn,
                MANAGER_PATH,
                MANAGER,
                "GetUnitByPID",
                &(std::process::id()),
            )
            .await?
        }
        // LoadUnit also answers for units systemd has not loaded (yet), with their LoadState.
        Some(n) => call(&conn, MANAGER_PATH, MANAGER, "LoadUnit", &(n)).await?,
    };
    let get_all = |iface: &'static str| {
        let conn = conn.clone();
        let path = path.clone();
        async move { call::<_, Properties>(&conn, path.as_str(), PROPERTIES, "GetAll", &(iface)).await }
    };
    let unit = get_all("org.freedesktop.systemd1.Unit").await?;
    // A unit that is not loaded has no Service properties; decode reports its LoadState.
    let service = get_all("org.freedesktop.systemd1.Service")
        .await
        .unwrap_or_default();
    decode(&unit, &service)
}

/// A unit's properties from `org.freedesktop.DBus.Properties.GetAll` of its `Unit` and
/// `Service` interfaces, typed as systemd sends them.
fn decode(unit: &Properties, service: &Properties) -> Result<UnitProps, String> {
    let s = |map: &Properties, key: &str| -> Result<String, String> {
        match map.get(key).map(|v| &**v) {
            Some(Value::Str(s)) => Ok(s.as_str().to_string()),
            other => Err(format!("{key}: expected a string, got {other:?}")),
        }
    };
    let t = |key: &str| -> Result<u64, String> {
        match service.get(key).map(|v| &**v) {
            Some(Value::U64(n)) => Ok(*n),
            other => Err(format!("{key}: expected a number, got {other:?}")),
        }
    };
    let strv = |map: &Properties, key: &str| -> Vec<String> {
        map.get(key).map(|v| strings(v)).unwrap_or_default()
    };
    let name = s(unit, "Id")?;
    unit::check_loaded(&name, &s(unit, "LoadState")?)?;
    let mut files: Vec<PathBuf> = s(unit, "FragmentPath")
        .ok()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    files.extend(strv(unit, "DropInPaths").into_iter().map(PathBuf::from));
    let prevent = match service.get("RestartPreventExitStatus").map(|v| &**v) {
        Some(Value::Structure(st)) => {
            let f = st.fields();
            let codes = f.first().map(ints).unwrap_or_default();
            let signals = f.get(1).map(ints).unwrap_or_default();
            codes
                .into_iter()
                .map(|c| c.to_string())
                .chain(signals.into_iter().map(signal_name))
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(UnitProps {
        service_type: Prop::live(s(service, "Type")?),
        kill_mode: Prop::live(s(service, "KillMode")?),
        notify_access: Prop::live(s(service, "NotifyAccess")?),
        timeout_stop: Prop::live(from_usec(t("TimeoutStopUSec")?)),
        // Absent before systemd 246, where abort did not exist.
        timeout_stop_failure_mode: Prop::live(
            s(service, "TimeoutStopFailureMode").unwrap_or_else(|_| "terminate".into()),
        ),
        restart: Prop::live(s(service, "Restart")?),
        restart_prevent_exit_status: Prop::live(prevent),
        watchdog: Prop::live(from_usec(t("WatchdogUSec")?)),
        runtime_directory: Prop::live(strv(service, "RuntimeDirectory")),
        pid_file: Prop::live(s(service, "PIDFile").ok().filter(|p| !p.is_empty())),
        exec_start: Prop::live(
            service
                .get("ExecStart")
                .map(|v| commands(v))
                .unwrap_or_default(),
        ),
        exec_reload: Prop::live(
            service
                .get("ExecReload")
                .map(|v| commands(v))
                .unwrap_or_default(),
        ),
        // Absent only before systemd 218, which had no delegation.
        delegate: Prop::live(matches!(
            service.get("Delegate").map(|v| &**v),
            Some(Value::Bool(true))
        )),
        // Both exist since systemd 229; a reply without them is judged by the default
        // rather than refused, since the limit only ever raises warnings.
        limit_nofile: Prop::live(Nofile {
            soft: t("LimitNOFILESoft").unwrap_or(SYSTEMD_DEFAULT_NOFILE.soft),
            hard: t("LimitNOFILE").unwrap_or(SYSTEMD_DEFAULT_NOFILE.hard),
        }),
        fd_store_max: Prop::live(match service.get("FileDescriptorStoreMax").map(|v| &**v) {
            Some(Value::U32(n)) => u64::from(*n),
            _ => 0,
        }),
        ..UnitProps::defaults(name, "D-Bus", files)
    })
}

fn strings(v: &Value<'_>) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .inner()
            .iter()
            .filter_map(|e| match e {
                Value::Str(s) => Some(s.as_str().to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn ints(v: &Value<'_>) -> Vec<i32> {
    match v {
        Value::Array(a) => a
            .inner()
            .iter()
            .filter_map(|e| match e {
                Value::I32(n) => Some(*n),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {n}"))
}

/// `a(sasbttttuii)`: per command (path, argv, ignore errors, times, pid, code, status).
fn commands(v: &Value<'_>) -> Vec<Command> {
    let Value::Array(a) = v else {
        return Vec::new();
    };
    a.inner()
        .iter()
        .filter_map(|e| match e {
            Value::Structure(st) => {
                let mut argv = st.fields().get(1).map(strings).unwrap_or_default();
                // argv[0] may be a name chosen with `@`; the path is what runs.
                if let (Some(Value::Str(path)), Some(first)) =
                    (st.fields().first(), argv.first_mut())
                {
                    *first = path.as_str().to_string();
                }
                (!argv.is_empty()).then_some(argv)
            }
            _ => None,
        })
        .collect()
}

const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// One call to systemd over the bus, its reply deserialized; errors name the method and,
/// for property reads, what was asked.
async fn call<B, R>(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
    method: &str,
    body: &B,
) -> Result<R, String>
where
    B: serde::Serialize + zbus::zvariant::DynamicType + std::fmt::Debug,
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    let what = format!("{method}{body:?}");
    let reply = conn
        .call_method(Some(SYSTEMD_DEST), path, Some(iface), method, body)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    reply
        .body()
        .deserialize::<R>()
        .map_err(|e| format!("{what} reply: {e}"))
}

/// The service unit in a `/proc/self/cgroup` listing (v1 `name=systemd` or v2 `0::`).
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| l.starts_with("0::") || l.contains(":name=systemd:"))
        .filter_map(|l| {
            l.rsplit(':')
                .next()?
                .split('/')
                .rev()
                .find(|c| c.ends_with(".service"))
                .map(str::to_string)
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_found_in_cgroup_v1_hybrid_listing() {
        let text = "12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/steward-proxy.service\n0::/system.slice/steward-proxy.service\n";
        assert_eq!(
            unit_from_cgroup(text).as_deref(),
            Some("steward-proxy.service")
        );
    }

    #[test]
    fn unit_is_found_in_cgroup_v2_listing_with_subgroup() {
        let text = "0::/system.slice/steward-proxy.service/payload\n";
        assert_eq!(
            unit_from_cgroup(text).as_deref(),
            Some("steward-proxy.service")
        );
    }

    #[test]
    fn no_unit_outside_a_service() {
        assert_eq!(unit_from_cgroup("0::/user.slice/session-1.scope\n"), None);
    }

    #[test]
    fn dbus_reads_delegate_as_a_boolean() {
        let unit: HashMap<String, OwnedValue> = [
            ("Id", Value::from("x.service")),
            ("LoadState", Value::from("loaded")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).expect("owned")))
        .collect();
        let service = |delegate: bool| -> HashMap<String, OwnedValue> {
            [
                ("Type", Value::from("notify")),
                ("KillMode", Value::from("mixed")),
                ("NotifyAccess", Value::from("main")),
                ("TimeoutStopUSec", Value::from(30_000_000u64)),
                ("Restart", Value::from("no")),
                ("WatchdogUSec", Value::from(0u64)),
                ("Delegate", Value::from(delegate)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).expect("owned")))
            .collect()
        };
        let read = |d| decode(&unit, &service(d)).map(|p| p.delegate.value);
        assert_eq!(read(true), Ok(true));
        assert_eq!(read(false), Ok(false));
    }
}
