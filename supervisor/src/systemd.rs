//! Asking systemd about the unit steward runs in: D-Bus first, `systemctl show` second.
//!
//! A service cannot read its own stop timeout from its environment. D-Bus answers in
//! microseconds (`GetUnitByPID` then the `TimeoutStopUSec` property); where the bus is not
//! up (minimal containers, early boot), `systemctl show` prints a human time span that
//! [`crate::duration::parse_systemd_span`] reads as systemd itself does.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use crate::deadline::{Outer, UnitTimeout};
use crate::duration::{from_usec, parse_systemd_span};

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
pub type Properties = HashMap<String, OwnedValue>;

/// How a caller reads a unit's properties from either answer: systemd's D-Bus
/// `GetAll` of the unit's `Unit` and `Service` interfaces, or `systemctl show -p
/// <properties>` text. This module fetches; the caller (`steward check`'s unit reader)
/// decides what the properties mean, so asking systemd does not depend on judging units.
pub struct Decoder<T> {
    /// The properties `systemctl show -p` is asked for.
    pub show_properties: &'static str,
    pub from_dbus: fn(&Properties, &Properties) -> Result<T, String>,
    pub from_show: fn(&str) -> Result<T, String>,
}

/// A unit's properties, decoded: the unit this process runs in (`name` `None`: D-Bus
/// `GetUnitByPID`, else the unit in /proc/self/cgroup), or a unit by name. D-Bus first,
/// `systemctl show` second, as for the timeout; a D-Bus answer that does not decode also
/// falls back to `systemctl show`.
pub async fn query_unit<T>(name: Option<&str>, decoder: &Decoder<T>) -> Result<T, String> {
    let dbus_err = match tokio::time::timeout(DBUS_TIMEOUT, props_via_dbus(name, decoder)).await {
        Ok(Ok(p)) => return Ok(p),
        Ok(Err(e)) => e,
        Err(_) => format!("no answer within {} s", DBUS_TIMEOUT.as_secs()),
    };
    let unit = match name {
        Some(n) => n.to_string(),
        None => own_unit_name().map_err(|e| format!("D-Bus: {dbus_err}; systemctl: {e}"))?,
    };
    systemctl(&["show", "-p", decoder.show_properties, &unit])
        .await
        .and_then(|text| (decoder.from_show)(&text))
        .map_err(|e| format!("D-Bus: {dbus_err}; systemctl: {e}"))
}

async fn props_via_dbus<T>(name: Option<&str>, decoder: &Decoder<T>) -> Result<T, String> {
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
        async move {
            call::<_, HashMap<String, OwnedValue>>(
                &conn,
                path.as_str(),
                PROPERTIES,
                "GetAll",
                &(iface),
            )
            .await
        }
    };
    let unit = get_all("org.freedesktop.systemd1.Unit").await?;
    // A unit that is not loaded has no Service properties; from_dbus reports its LoadState.
    let service = get_all("org.freedesktop.systemd1.Service")
        .await
        .unwrap_or_default();
    (decoder.from_dbus)(&unit, &service)
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
}
