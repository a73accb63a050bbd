//! steward-proxy's own settings (`--proxy-config`, TOML): what Pingora's YAML cannot say.

use std::fmt;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/steward/proxy.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Addresses clients connect to. Passed to Pingora's `add_tcp` as written: the listener
    /// hand-off of a graceful upgrade matches these strings exactly.
    pub listen: Vec<String>,
    /// Upstreams, chosen round robin.
    pub upstreams: Vec<String>,
    pub health: Health,
    /// The built-in demo origin, so the shipped configuration needs no other program.
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Its own listener: it keeps answering (503) while the proxy listeners are closed.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub listen: String,
}

#[derive(Debug)]
pub struct SettingsError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let err = |line, message: String| SettingsError {
            file: path.to_path_buf(),
            line,
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(None, format!("cannot read the proxy settings: {e}")))?;
        Settings::parse(path, &text)
    }

    /// Reads and validates `text`, the contents of `path` (named in every error).
    pub fn parse(path: &Path, text: &str) -> Result<Settings, SettingsError> {
        let err = |line, message: String| SettingsError {
            file: path.to_path_buf(),
            line,
            message,
        };
        let s: Settings = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|sp| text[..sp.start.min(text.len())].matches('\n').count() + 1);
            err(line, e.message().trim().replace('\n', "; "))
        })?;
        if s.listen.is_empty() {
            return Err(err(
                None,
                "listen is empty: give at least one address such as \"127.0.0.1:6188\"".into(),
            ));
        }
        if s.upstreams.is_empty() {
            return Err(err(
                None,
                "upstreams is empty: give at least one host:port".into(),
            ));
        }
        let all = s
            .listen
            .iter()
            .chain(&s.upstreams)
            .chain(std::iter::once(&s.health.listen))
            .chain(s.origin.iter().map(|o| &o.listen));
        for addr in all {
            if addr.contains(' ') || addr.to_socket_addrs().is_err() {
                return Err(err(None, format!("{addr:?} is not a host:port address")));
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, SettingsError> {
        Settings::parse(Path::new("/etc/steward/proxy.toml"), text)
    }

    const MINIMAL: &str = "listen = [\"127.0.0.1:6188\"]\nupstreams = [\"127.0.0.1:8080\"]\n[health]\nlisten = \"127.0.0.1:6190\"\n";

    #[test]
    fn the_shipped_settings_load() {
        let s = parse(include_str!("../../etc/steward/proxy.toml")).expect("shipped proxy.toml");
        assert!(!s.listen.is_empty());
        assert!(s.origin.is_some());
    }

    #[test]
    fn listen_keys_are_kept_exactly_as_written() {
        let s = parse(&MINIMAL.replace("127.0.0.1:6188", "localhost:6188")).expect("settings");
        assert_eq!(s.listen, ["localhost:6188"]);
    }

    #[test]
    fn an_unknown_key_is_an_error_on_its_line() {
        let e = parse(&format!("{MINIMAL}upstream = []\n")).expect_err("unknown key");
        assert_eq!(e.line, Some(5));
        assert!(
            e.to_string().starts_with("/etc/steward/proxy.toml:5: "),
            "{e}"
        );
    }

    #[test]
    fn empty_listen_or_upstreams_are_refused() {
        assert!(parse(&MINIMAL.replace("[\"127.0.0.1:6188\"]", "[]"))
            .expect_err("no listener")
            .message
            .contains("listen is empty"));
        assert!(parse(&MINIMAL.replace("[\"127.0.0.1:8080\"]", "[]"))
            .expect_err("no upstream")
            .message
            .contains("upstreams is empty"));
    }

    #[test]
    fn an_address_that_is_not_host_port_is_named() {
        let e =
            parse(&MINIMAL.replace("127.0.0.1:8080", "origin.example")).expect_err("bad address");
        assert!(
            e.message
                .contains("\"origin.example\" is not a host:port address"),
            "{e}"
        );
    }
}
