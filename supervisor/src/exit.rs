//! Exit statuses, sysexits-style, so systemd's `Restart=` and `RestartPreventExitStatus=`
//! can tell a crash (restart it) from a broken configuration (restarting cannot help).

/// A clean stop.
pub const OK: i32 = 0;
/// The child never served: it left before its probe passed, or the start timed out.
pub const UNAVAILABLE: i32 = 69;
/// A bug in steward itself.
pub const SOFTWARE: i32 = 70;
/// The operating system refused something steward needs (fork, signals, prctl).
pub const OSERR: i32 = 71;
/// The runtime directory or a file in it cannot be created.
pub const CANTCREAT: i32 = 73;
/// A configuration error: the unit ships `RestartPreventExitStatus=78`.
pub const CONFIG: i32 = 78;
/// `steward status`: no steward runs there (no control socket, or nobody listening on
/// it), as `systemctl status` and LSB init scripts say "not running".
pub const NOT_RUNNING: i32 = 3;
/// Bad command-line usage.
pub const USAGE: i32 = 64;
