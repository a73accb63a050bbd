//! The control socket: `steward status`, `steward reload`, `steward restart`.
//!
//! A unix stream socket in the runtime directory, mode 0600, and a peer-credential check
//! on top (root or steward's own user), so a wrong permission on the directory is not the
//! only guard. One request line per connection (`status`, `reload`, `restart`), one JSON
//! line back. Each connection has its own task with a read limit and a timeout, so a
//! half-open or oversized request cannot block the supervisor's loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::runtime_dir::{RuntimeDir, RuntimeDirError};

pub const SOCKET_NAME: &str = "control.sock";
/// The longest request line read; more is refused unread.
pub const MAX_REQUEST: u64 = 256;
/// How long a connection may take to send its line before it is answered with an error.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A reload can take a start timeout plus a check; the server answers within this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the client waits for `status` and `restart`: the loop answers both at once,
/// so a steward silent this long is stuck, or is not steward.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client waits for `reload`, whose reply comes when the next generation
/// serves or the reload failed: the server answers within [`REPLY_TIMEOUT`] (600 s) at
/// the latest, and the 30 s on top leave that answer time to arrive.
pub const RELOAD_CLIENT_TIMEOUT: Duration = Duration::from_secs(REPLY_TIMEOUT.as_secs() + 30);
/// The largest reply the client reads. A status with its generations and timeline is a
/// few KiB; more than this is not a reply steward sends, and is refused unread.
pub const MAX_REPLY: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Status,
    Reload,
    Restart,
}

impl Command {
    pub fn parse(line: &str) -> Option<Command> {
        match line.trim() {
            "status" => Some(Command::Status),
            "reload" => Some(Command::Reload),
            "restart" => Some(Command::Restart),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Reload => "reload",
            Command::Restart => "restart",
        }
    }
}

/// A request for the supervisor loop, answered through `reply`.
pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<Reply>,
    /// The connection's descriptor, open while `reply` waits: a re-exec hands it to the
    /// successor, which answers on it ([`answer_on`]).
    pub conn: std::os::fd::RawFd,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            error: None,
            message: Some(message.into()),
            status: None,
        }
    }

    /// The answer to `steward status`.
    pub fn status(status: Status) -> Reply {
        Reply {
            ok: true,
            error: None,
            message: None,
            status: Some(status),
        }
    }

    pub fn err(error: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(error.into()),
            message: None,
            status: None,
        }
    }
}

/// An answer worded elsewhere: `Ok` is the message, `Err` the error.
impl From<Result<String, String>> for Reply {
    fn from(result: Result<String, String>) -> Reply {
        match result {
            Ok(message) => Reply::ok(message),
            Err(error) => Reply::err(error),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub state: String,
    pub pid: u32,
    pub generation: u64,
    pub child_pid: Option<u32>,
    pub uptime_s: f64,
    pub child_uptime_s: Option<f64>,
    pub restarts: u32,
    pub in_flight: Option<usize>,
    pub generations: Vec<GenStatus>,
    pub deadline: String,
    pub last_event: Option<String>,
    pub timeline: Vec<TimelineEntry>,
    /// The health probes of this steward's life.
    #[serde(default)]
    pub health: HealthStats,
}

/// How the repeated probe has fared while the child served.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthStats {
    pub passed: u64,
    pub failed: u64,
    /// Why the last failed probe failed.
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenStatus {
    pub generation: u64,
    pub pid: Option<u32>,
    pub state: String,
    pub in_flight: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub event: String,
}

/// Binds the socket, replacing a stale one left by a steward that was killed. Refuses
/// when another steward answers on it (two stewards on one runtime directory would
/// overwrite each other's conf and hand-off socket) or when another user owns the entry.
pub fn bind(dir: &RuntimeDir) -> Result<(UnixListener, PathBuf), RuntimeDirError> {
    let path = dir.join(SOCKET_NAME);
    if let Some(entry) = dir.clear_stale(SOCKET_NAME, true)? {
        tracing::info!(
            "replaced a stale {} at {} (left by a steward that did not exit cleanly)",
            entry.describe(),
            path.display()
        );
    }
    let listener = dir
        .bind(SOCKET_NAME)
        .and_then(|l| {
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)
        })
        .map_err(|e| RuntimeDirError {
            path: path.clone(),
            message: format!("cannot bind the control socket: {e}"),
            in_use: false,
        })?;
    Ok((listener, path))
}

/// Accepts connections forever, each in its own task.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Request>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let tx = tx.clone();
                tokio::spawn(async move { connection(stream, tx).await });
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(mut stream: UnixStream, tx: mpsc::Sender<Request>) {
    // The request is read (bounded, with a timeout) before the credentials are judged, so
    // a refused client still gets its answer instead of a broken pipe.
    let request = read_request(&mut stream).await;
    let reply = match authorize(&stream) {
        Err(e) => Reply::err(e),
        Ok(()) => match request {
            Err(e) => Reply::err(e),
            Ok(command) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                if tx
                    .send(Request {
                        command,
                        reply: reply_tx,
                        conn: std::os::fd::AsRawFd::as_raw_fd(&stream),
                    })
                    .await
                    .is_err()
                {
                    Reply::err("steward is shutting down")
                } else {
                    answer_of(reply_rx).await
                }
            }
        },
    };
    write_reply(&mut stream, &reply).await;
}

/// The answer steward gives a request, or why none came.
async fn answer_of(rx: oneshot::Receiver<Reply>) -> Reply {
    match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Reply::err("steward is shutting down"),
        Err(_) => Reply::err("no answer within 600 s"),
    }
}

/// One JSON line, then the connection's end.
async fn write_reply(stream: &mut UnixStream, reply: &Reply) {
    let mut line = serde_json::to_string(reply).unwrap_or_else(|_| "{\"ok\":false}".into());
    line.push('\n');
    let _ = stream.write_all(line.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The listening socket a predecessor handed over (see [`crate::reexec`]), served as
/// [`bind`]'s.
pub fn adopt(fd: std::os::fd::OwnedFd) -> std::io::Result<UnixListener> {
    let l = std::os::unix::net::UnixListener::from(fd);
    l.set_nonblocking(true)?;
    UnixListener::from_std(l)
}

/// A connection a predecessor accepted and handed over while its client waits for a
/// reload's answer: the answer sent through the returned sender is written to it, as
/// [`connection`] would have.
pub fn answer_on(fd: std::os::fd::OwnedFd) -> std::io::Result<oneshot::Sender<Reply>> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true)?;
    let mut stream = UnixStream::from_std(std_stream)?;
    let (tx, rx) = oneshot::channel::<Reply>();
    tokio::task::spawn_local(async move {
        let reply = answer_of(rx).await;
        write_reply(&mut stream, &reply).await;
    });
    Ok(tx)
}

fn authorize(stream: &UnixStream) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot read peer credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == me {
        Ok(())
    } else {
        Err(format!(
            "permission denied: uid {} is neither root nor steward's user (uid {me})",
            cred.uid()
        ))
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<Command, String> {
    let mut line = String::new();
    let mut limited = BufReader::new(stream.take(MAX_REQUEST));
    match tokio::time::timeout(READ_TIMEOUT, limited.read_line(&mut line)).await {
        Err(_) => return Err("no request within 2 s".into()),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    Command::parse(&line).ok_or_else(|| {
        let shown: String = line.trim().chars().take(40).collect();
        format!("unknown request {shown:?}; expected status, reload or restart")
    })
}

/// Why the client got no reply it can show.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach steward at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no reply from {} within {} (is steward stuck, or is something else listening there?)", path.display(), crate::duration::fmt_duration(*timeout))]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("reading from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the reply from {} is longer than {MAX_REPLY} bytes without ending; not steward's", path.display())]
    TooLarge { path: PathBuf },
    #[error("malformed reply from {}: {source}", path.display())]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Whether no steward runs at the socket: it does not exist, or nothing listens on it
    /// (a socket file left behind). A steward that is there but silent, or a socket the
    /// caller may not open, is something else.
    pub fn is_not_running(&self) -> bool {
        match self {
            ClientError::Connect { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ),
            _ => false,
        }
    }
}

/// How long the client waits for `command`'s reply, connecting and sending included.
pub fn client_timeout(command: Command) -> Duration {
    match command {
        Command::Reload => RELOAD_CLIENT_TIMEOUT,
        Command::Status | Command::Restart => CLIENT_TIMEOUT,
    }
}

/// The client side: sends one command and returns the reply, within
/// [`client_timeout`] and [`MAX_REPLY`] bytes.
pub async fn request(path: &Path, command: Command) -> Result<Reply, ClientError> {
    request_within(path, command, client_timeout(command), MAX_REPLY).await
}

async fn request_within(
    path: &Path,
    command: Command,
    timeout: Duration,
    max: u64,
) -> Result<Reply, ClientError> {
    let exchange = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        // A write error still leaves steward's answer (a refusal, say) to be read.
        let _ = s
            .write_all(format!("{}\n", command.as_str()).as_bytes())
            .await;
        let mut text = Vec::new();
        BufReader::new(s.take(max))
            .read_until(b'\n', &mut text)
            .await
            .map_err(|source| ClientError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if !text.ends_with(b"\n") && text.len() as u64 >= max {
            return Err(ClientError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        serde_json::from_slice(&text).map_err(|source| ClientError::Malformed {
            path: path.to_path_buf(),
            source,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                path: path.to_path_buf(),
                timeout,
            })
        })
}

/// Requests waiting for their answer, by the id the lifecycle knows them by.
#[derive(Default)]
pub struct Waiters {
    last: u64,
    waiting: std::collections::HashMap<u64, oneshot::Sender<Reply>>,
}

impl Waiters {
    /// Keeps `reply` until its answer; the id to answer it by.
    pub fn wait(&mut self, reply: oneshot::Sender<Reply>) -> u64 {
        self.last += 1;
        self.waiting.insert(self.last, reply);
        self.last
    }

    /// Answers one waiter (once: a second answer finds nobody).
    pub fn answer(&mut self, id: u64, reply: Reply) {
        if let Some(tx) = self.waiting.remove(&id) {
            let _ = tx.send(reply);
        }
    }

    /// Answers each of `ids` with the same reply.
    pub fn answer_each(&mut self, ids: impl IntoIterator<Item = u64>, reply: Reply) {
        for id in ids {
            self.answer(id, reply.clone());
        }
    }

    /// Answers everyone still waiting.
    pub fn answer_all(&mut self, reply: Reply) {
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(reply.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_single_words() {
        assert_eq!(Command::parse("status\n"), Some(Command::Status));
        assert_eq!(Command::parse(" reload "), Some(Command::Reload));
        assert_eq!(Command::parse("restart"), Some(Command::Restart));
        assert_eq!(Command::parse("rm -rf /"), None);
    }

    /// A control server in a scratch directory, removed when the returned guard drops.
    async fn server() -> (PathBuf, mpsc::Receiver<Request>, Scratch) {
        let dir = std::env::temp_dir().join(format!(
            "steward-control-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let rt = RuntimeDir::open(&dir).expect("dir");
        let (listener, path) = bind(&rt).expect("bind");
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(serve(listener, tx));
        (path, rx, Scratch(dir))
    }

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn socket_is_private() {
        let (path, _rx, _dir) = server().await;
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        ) & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn a_request_reaches_the_loop_and_its_reply_comes_back() {
        let (path, mut rx, _dir) = server().await;
        let answer = tokio::spawn(async move {
            let req = rx.recv().await.expect("request");
            assert_eq!(req.command, Command::Reload);
            let _ = req.reply.send(Reply::ok("reloaded"));
        });
        let r = request(&path, Command::Reload).await.expect("reply");
        assert_eq!(r, Reply::ok("reloaded"));
        answer.await.expect("join");
    }

    #[tokio::test]
    async fn malformed_and_oversized_requests_are_refused_and_the_socket_survives() {
        let (path, mut rx, _dir) = server().await;
        for junk in ["hello\n".to_string(), "x".repeat(10_000)] {
            let mut s = UnixStream::connect(&path).await.expect("connect");
            let _ = s.write_all(junk.as_bytes()).await;
            let mut text = String::new();
            BufReader::new(s).read_line(&mut text).await.expect("reply");
            let r: Reply = serde_json::from_str(&text).expect("json");
            assert!(!r.ok, "{r:?}");
        }
        // A half-open connection that never sends is dropped after the timeout, and the
        // next client is still served meanwhile.
        let _idle = UnixStream::connect(&path).await.expect("connect");
        let answer = tokio::spawn(async move {
            let req = rx.recv().await.expect("request");
            let _ = req.reply.send(Reply::ok("fine"));
        });
        let r = request(&path, Command::Status).await.expect("reply");
        assert!(r.ok);
        answer.await.expect("join");
    }
    /// A fake steward on a scratch socket: accepts one client and hands it to `serve`.
    async fn fake_server<F, Fut>(serve: F) -> (PathBuf, Scratch)
    where
        F: FnOnce(UnixStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let dir = std::env::temp_dir().join(format!(
            "steward-control-fake-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            if let Ok((stream, _)) = listener.accept().await {
                serve(stream).await;
            }
        });
        (path, Scratch(dir))
    }

    #[tokio::test]
    async fn the_client_gives_up_on_a_server_that_never_answers() {
        let (path, _dir) = fake_server(|s| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        })
        .await;
        let started = std::time::Instant::now();
        let e = request_within(
            &path,
            Command::Status,
            Duration::from_millis(300),
            MAX_REPLY,
        )
        .await
        .expect_err("no reply");
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("no reply from"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn no_socket_at_all_is_not_running() {
        let dir = Scratch(
            std::env::temp_dir().join(format!("steward-control-absent-{}", std::process::id())),
        );
        let e = request(&dir.0.join(SOCKET_NAME), Command::Status)
            .await
            .expect_err("no socket");
        assert!(e.is_not_running(), "{e}");
    }

    #[tokio::test]
    async fn a_socket_file_nobody_listens_on_is_not_running() {
        let dir =
            std::env::temp_dir().join(format!("steward-control-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let dir = Scratch(dir);
        let path = dir.0.join(SOCKET_NAME);
        // Bound, then closed: the file stays, and a connect is refused.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let e = request(&path, Command::Status).await.expect_err("refused");
        assert!(e.is_not_running(), "{e}");
    }

    #[tokio::test]
    async fn a_steward_that_does_not_answer_in_time_is_not_not_running() {
        let (path, _dir) = fake_server(|s| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        })
        .await;
        let e = request_within(
            &path,
            Command::Status,
            Duration::from_millis(100),
            MAX_REPLY,
        )
        .await
        .expect_err("no reply");
        assert!(!e.is_not_running(), "{e}");
    }

    #[tokio::test]
    async fn the_client_refuses_a_reply_that_never_ends() {
        let (path, _dir) = fake_server(|mut s| async move {
            let chunk = vec![b'x'; 64 * 1024];
            while s.write_all(&chunk).await.is_ok() {}
        })
        .await;
        let e = request(&path, Command::Status)
            .await
            .expect_err("endless reply");
        assert!(matches!(e, ClientError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn reload_waits_longer_than_the_server_may_take_and_status_waits_briefly() {
        assert!(client_timeout(Command::Reload) > REPLY_TIMEOUT);
        assert_eq!(client_timeout(Command::Status), CLIENT_TIMEOUT);
        assert_eq!(client_timeout(Command::Restart), CLIENT_TIMEOUT);
    }
}
