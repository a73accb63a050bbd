//! Asking systemd about the unit steward runs in: D-Bus first, `systemctl show` second.
//!
//! A service cannot read its own stop timeout from its environment. D-Bus answers in
//! microseconds (`GetUnitByPID` then the `TimeoutStopUSec` property); where the bus is not
//! up (minimal containers, early boot), `systemctl show` prints a human time span that
//! [`crate::duration::parse_span`] understands.

use std::time::Duration;

use crate::deadline::{Outer, UnitTimeout};
use crate::duration::{from_usec, parse_span};

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
    let reply = conn
        .call_method(
            Some(SYSTEMD_DEST),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            "GetUnitByPID",
            &(std::process::id()),
        )
        .await
        .map_err(|e| format!("GetUnitByPID: {e}"))?;
    let path: zbus::zvariant::OwnedObjectPath = reply
        .body()
        .deserialize()
        .map_err(|e| format!("GetUnitByPID reply: {e}"))?;
    let get = |iface: &'static str, prop: &'static str| {
        let conn = conn.clone();
        let path = path.clone();
        async move {
            let reply = conn
                .call_method(
                    Some(SYSTEMD_DEST),
                    path.as_str(),
                    Some("org.freedesktop.DBus.Properties"),
                    "Get",
                    &(iface, prop),
                )
                .await
                .map_err(|e| format!("{prop}: {e}"))?;
            reply
                .body()
                .deserialize::<zbus::zvariant::OwnedValue>()
                .map_err(|e| format!("{prop} reply: {e}"))
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
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let unit =
        unit_from_cgroup(&cgroup).ok_or_else(|| "no .service in /proc/self/cgroup".to_string())?;
    let out = tokio::time::timeout(
        DBUS_TIMEOUT,
        tokio::process::Command::new("systemctl")
            .args(["show", "-p", "TimeoutStopUSec", "--value", &unit])
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
    let text = String::from_utf8_lossy(&out.stdout);
    let timeout_stop = parse_span(text.trim()).map_err(|e| e.to_string())?;
    Ok(UnitTimeout {
        unit,
        timeout_stop,
        via: "systemctl show",
    })
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
