//! Hostile clients on the control socket (issue 6), against the same `bind` and `serve`
//! the supervisor runs: junk is refused with an error reply and never reaches the
//! supervisor's loop, half-open and oversized requests cost a bounded read and a timeout,
//! and a valid `status` is answered promptly throughout.

mod fuzz_common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuzz_common::{config, Scratch};
use proptest::prelude::*;
use steward::control::{self, Command, Reply, MAX_REQUEST, READ_TIMEOUT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// A valid request is answered well within this, whatever else is connected.
const PROMPT: Duration = Duration::from_millis(500);

struct Server {
    path: PathBuf,
    /// Requests that reached the supervisor's loop.
    reached: Arc<AtomicUsize>,
    _dir: Scratch,
}

/// The control server as run.rs starts it, with a loop that answers every request at once.
fn server() -> Server {
    let dir = Scratch::new("fuzz-control");
    let (listener, path) =
        control::bind(&steward::runtime_dir::RuntimeDir::open(dir.path()).expect("dir"))
            .expect("bind");
    let (tx, mut rx) = mpsc::channel::<control::Request>(16);
    tokio::spawn(control::serve(listener, tx));
    let reached = Arc::new(AtomicUsize::new(0));
    let count = reached.clone();
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = req.reply.send(Reply::ok(req.command.as_str()));
        }
    });
    Server {
        path,
        reached,
        _dir: dir,
    }
}

/// Sends `bytes`, says it is done, and returns the one reply line.
async fn send(path: &std::path::Path, bytes: &[u8]) -> Reply {
    let mut s = UnixStream::connect(path).await.expect("connect");
    // A refusal may close the socket before all of it is written; the reply still comes.
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.expect("reply");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
}

async fn status_is_answered_promptly(path: &std::path::Path) {
    let started = Instant::now();
    let r = tokio::time::timeout(PROMPT, control::request(path, Command::Status))
        .await
        .expect("status answered in time")
        .expect("reply");
    assert_eq!(r, Reply::ok("status"), "after {:?}", started.elapsed());
}

/// Whether the server would take `bytes` for a command: its first line, as read.
fn is_a_command(bytes: &[u8]) -> bool {
    let limit = bytes.len().min(MAX_REQUEST as usize);
    let first = match bytes[..limit].iter().position(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &bytes[..limit],
    };
    std::str::from_utf8(first).is_ok_and(|l| Command::parse(l).is_some())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn only_the_three_words_parse_as_commands_whatever_the_surrounding_whitespace(
        text in any::<String>(),
        word in prop::sample::select(vec!["status", "reload", "restart"]),
        before in "[ \t\r\n]{0,3}",
        after in "[ \t\r\n]{0,3}",
    ) {
        let expected = ["status", "reload", "restart"].contains(&text.trim());
        prop_assert_eq!(Command::parse(&text).is_some(), expected);
        let padded = format!("{before}{word}{after}");
        prop_assert_eq!(Command::parse(&padded).map(Command::as_str), Some(word));
    }

    #[test]
    fn random_bytes_are_refused_with_an_error_reply_and_the_next_status_is_answered(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            "[ -~\n]{0,300}".prop_map(String::into_bytes),
            (prop::sample::select(vec!["status", "reload", "restart"]), "[ -~]{1,8}")
                .prop_map(|(w, junk)| format!("{w}{junk}\n").into_bytes()),
        ]
    ) {
        prop_assume!(!is_a_command(&bytes));
        runtime().block_on(async {
            let s = server();
            let r = send(&s.path, &bytes).await;
            assert!(!r.ok && r.error.is_some(), "{r:?} for {bytes:?}");
            assert_eq!(s.reached.load(Ordering::SeqCst), 0, "junk reached the loop");
            status_is_answered_promptly(&s.path).await;
        });
    }
}

#[tokio::test]
async fn status_is_answered_promptly_while_many_clients_hang_half_open() {
    let s = server();
    let mut hanging = Vec::new();
    for i in 0..200 {
        let mut c = UnixStream::connect(&s.path).await.expect("connect");
        // Half of them send a partial line and keep the connection open.
        if i % 2 == 0 {
            c.write_all(b"sta").await.expect("write");
        }
        hanging.push(c);
    }
    status_is_answered_promptly(&s.path).await;
    drop(hanging);
}

#[tokio::test]
async fn a_half_open_client_gets_an_error_reply_at_the_read_timeout() {
    let s = server();
    let mut c = UnixStream::connect(&s.path).await.expect("connect");
    c.write_all(b"stat").await.expect("write");
    let started = Instant::now();
    let mut line = String::new();
    let mut reader = BufReader::new(c);
    tokio::time::timeout(
        READ_TIMEOUT + Duration::from_secs(2),
        reader.read_line(&mut line),
    )
    .await
    .expect("answered after the read timeout")
    .expect("reply");
    assert!(started.elapsed() >= READ_TIMEOUT - Duration::from_millis(100));
    let r: Reply = serde_json::from_str(&line).expect("json");
    assert!(!r.ok, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("no request"),
        "{r:?}"
    );
    assert_eq!(s.reached.load(Ordering::SeqCst), 0);
}

/// 64 MiB cannot sit in a socket buffer: the writer fails because the server stopped
/// reading after MAX_REQUEST bytes and closed, not because it read them all.
#[tokio::test]
async fn an_oversized_request_is_refused_without_being_read_to_its_end() {
    let s = server();
    let c = UnixStream::connect(&s.path).await.expect("connect");
    let (read, mut write) = c.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            write.write_all(&chunk).await?;
        }
        Ok::<(), std::io::Error>(())
    });
    let mut line = String::new();
    tokio::time::timeout(PROMPT, BufReader::new(read).read_line(&mut line))
        .await
        .expect("refused promptly")
        .expect("reply");
    let r: Reply = serde_json::from_str(&line).expect("json");
    assert!(
        r.error.as_deref().unwrap_or("").contains("longer than"),
        "{r:?}"
    );
    let written = tokio::time::timeout(PROMPT, writer)
        .await
        .expect("writer stopped")
        .expect("join");
    assert!(written.is_err(), "the server read 64 MiB");
    status_is_answered_promptly(&s.path).await;
}

#[tokio::test]
async fn clients_that_disconnect_mid_request_do_not_break_the_listener() {
    let s = server();
    for i in 0..100 {
        let mut c = UnixStream::connect(&s.path).await.expect("connect");
        if i % 2 == 0 {
            let _ = c.write_all(b"stat").await;
        }
        drop(c);
    }
    status_is_answered_promptly(&s.path).await;
    assert_eq!(s.reached.load(Ordering::SeqCst), 1);
}

/// The loop here never reads its channel: refusals must not need it.
#[tokio::test]
async fn concurrent_junk_is_refused_while_the_supervisor_loop_is_busy() {
    let dir = Scratch::new("fuzz-control");
    let (listener, path) =
        control::bind(&steward::runtime_dir::RuntimeDir::open(dir.path()).expect("dir"))
            .expect("bind");
    let (tx, mut busy_loop) = mpsc::channel::<control::Request>(16);
    tokio::spawn(control::serve(listener, tx));
    let started = Instant::now();
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let path = path.clone();
            tokio::spawn(async move {
                let junk = match i % 4 {
                    0 => b"hello\n".to_vec(),
                    1 => vec![0xff; 300],
                    2 => b"status please\n".to_vec(),
                    _ => Vec::new(),
                };
                send(&path, &junk).await
            })
        })
        .collect();
    for c in clients {
        let r = c.await.expect("join");
        assert!(!r.ok, "{r:?}");
    }
    assert!(
        started.elapsed() < PROMPT * 4,
        "took {:?}",
        started.elapsed()
    );
    assert!(busy_loop.try_recv().is_err(), "junk reached the loop");
}
