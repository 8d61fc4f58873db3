//! The clamd client against stand-in servers on loopback and unix sockets: what it sends (the
//! INSTREAM framing), and what it makes of replies no real clamd gives on demand (nonsense,
//! silence, a closed connection). Nothing here needs ClamAV.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use confide_security::antivirus::{ClamdAddress, ClamdClient, ClamdConfig, ScanError, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A stand-in clamd on loopback that handles one connection with `serve`.
async fn stand_in<F, Fut, T>(serve: F) -> (ClamdAddress, JoinHandle<T>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve(stream).await
    });
    (ClamdAddress::Tcp(address), task)
}

fn client(address: ClamdAddress) -> ClamdClient {
    let mut config = ClamdConfig::new(address);
    config.io_timeout = Duration::from_millis(500);
    config.reply_timeout = Duration::from_millis(500);
    ClamdClient::new(config)
}

/// What a stand-in read: the command, then each chunk's length, then the body.
struct Received {
    command: Vec<u8>,
    chunk_lengths: Vec<u32>,
    body: Vec<u8>,
}

/// Reads an INSTREAM request to its zero-length chunk, as clamd does.
async fn read_instream(stream: &mut TcpStream) -> Received {
    let mut command = vec![0u8; 10];
    stream.read_exact(&mut command).await.unwrap();
    let mut received = Received {
        command,
        chunk_lengths: Vec::new(),
        body: Vec::new(),
    };
    loop {
        let length = stream.read_u32().await.unwrap();
        received.chunk_lengths.push(length);
        if length == 0 {
            return received;
        }
        let mut chunk = vec![0u8; length as usize];
        stream.read_exact(&mut chunk).await.unwrap();
        received.body.extend_from_slice(&chunk);
    }
}

/// A stand-in that reads the whole request, then answers `reply`.
async fn answering(reply: &'static [u8]) -> (ClamdAddress, JoinHandle<Received>) {
    stand_in(move |mut stream| async move {
        let received = read_instream(&mut stream).await;
        stream.write_all(reply).await.unwrap();
        received
    })
    .await
}

#[tokio::test]
async fn the_body_goes_as_length_prefixed_chunks_ended_by_a_zero_length_chunk() {
    let (address, server) = answering(b"stream: OK\0").await;
    let mut config = ClamdConfig::new(address);
    config.chunk_bytes = 1000;
    let body: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let verdict = ClamdClient::new(config).scan_bytes(&body).await.unwrap();
    assert_eq!(verdict, Verdict::Clean);
    let received = server.await.unwrap();
    assert_eq!(received.command, b"zINSTREAM\0");
    assert_eq!(received.body, body);
    assert_eq!(received.chunk_lengths.last(), Some(&0));
    assert!(
        received.chunk_lengths.iter().all(|length| *length <= 1000),
        "{:?}",
        received.chunk_lengths
    );
    assert_eq!(
        received.chunk_lengths.len(),
        4,
        "{:?}",
        received.chunk_lengths
    );
}

#[tokio::test]
async fn each_reply_becomes_its_verdict_or_error() {
    let (address, _server) = answering(b"stream: Eicar-Signature FOUND\0").await;
    assert_eq!(
        client(address).scan_bytes(b"x").await.unwrap(),
        Verdict::Infected {
            signature: "Eicar-Signature".to_owned()
        }
    );

    let (address, _server) = answering(b"INSTREAM size limit exceeded. ERROR\0").await;
    let error = client(address).scan_bytes(b"x").await.unwrap_err();
    assert!(matches!(error, ScanError::SizeLimitExceeded), "{error:?}");

    let (address, _server) = answering(b"stream: Can't allocate memory ERROR\0").await;
    let error = client(address).scan_bytes(b"x").await.unwrap_err();
    assert!(matches!(error, ScanError::Scanner(_)), "{error:?}");
    assert!(!error.is_unavailable());
}

#[tokio::test]
async fn an_unexpected_reply_is_never_taken_for_clean() {
    for reply in [
        &b"stream: maybe\0"[..],
        b"OK\0",
        b"stream: OK FOUND?\0",
        // Cut short: the start of "stream: OKAY.Sig FOUND", then the connection closes.
        b"stream: OK",
    ] {
        let (address, _server) = answering(reply).await;
        let error = client(address).scan_bytes(b"x").await.unwrap_err();
        assert!(
            matches!(error, ScanError::UnexpectedReply(_)),
            "{:?}: {error:?}",
            String::from_utf8_lossy(reply)
        );
        assert!(!error.is_unavailable());
    }
}

#[tokio::test]
async fn a_verdict_sent_before_the_body_is_not_believed() {
    // Answers "clean" at once and reads nothing: the client cannot finish sending.
    let (address, _server) = stand_in(|mut stream| async move {
        stream.write_all(b"stream: OK\0").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(stream);
    })
    .await;
    let body = vec![b'a'; 32 * 1024 * 1024];
    let error = client(address).scan_bytes(&body).await.unwrap_err();
    assert!(matches!(error, ScanError::UnexpectedReply(_)), "{error:?}");
}

#[tokio::test]
async fn a_refusal_sent_while_the_body_is_still_going_ends_the_scan_at_once() {
    // clamd refuses a stream over its limit as soon as it sees the chunk that crosses it, and
    // reads no more. The client must notice then, not after its (here very long) write timeout.
    let (address, _server) = stand_in(|mut stream| async move {
        let mut command = [0u8; 10];
        stream.read_exact(&mut command).await.unwrap();
        stream
            .write_all(b"INSTREAM size limit exceeded. ERROR\0")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(stream);
    })
    .await;
    let mut config = ClamdConfig::new(address);
    config.io_timeout = Duration::from_secs(3600);
    let body = vec![b'a'; 32 * 1024 * 1024];
    let client = ClamdClient::new(config);
    let scan = client.scan_bytes(&body);
    let error = tokio::time::timeout(Duration::from_secs(60), scan)
        .await
        .expect("the scan waited for its write timeout")
        .unwrap_err();
    assert!(matches!(error, ScanError::SizeLimitExceeded), "{error:?}");
}

#[tokio::test]
async fn a_scanner_that_closes_without_a_reply_is_unavailable() {
    let (address, _server) = stand_in(|mut stream| async move {
        read_instream(&mut stream).await;
    })
    .await;
    let error = client(address).scan_bytes(b"x").await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
}

#[tokio::test]
async fn a_scanner_that_never_answers_is_unavailable_after_the_timeout() {
    let (address, _server) = stand_in(|mut stream| async move {
        read_instream(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stream);
    })
    .await;
    let error = client(address.clone()).scan_bytes(b"x").await.unwrap_err();
    match &error {
        ScanError::Unavailable { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{error:?}");
        }
        other => panic!("{other:?}"),
    }

    // Nor does it answer PING.
    let (address, _server) = stand_in(|stream| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stream);
    })
    .await;
    let error = client(address).ping().await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
}

#[tokio::test]
async fn a_scanner_that_stops_reading_is_unavailable_after_the_timeout() {
    // Accepts, then neither reads nor answers: writes stall once the socket buffers fill.
    let (address, _server) = stand_in(|stream| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stream);
    })
    .await;
    let body = vec![b'a'; 32 * 1024 * 1024];
    let error = client(address).scan_bytes(&body).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let address = ClamdAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    let error = client(address.clone()).scan_bytes(b"x").await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(client(address).ping().await.unwrap_err().is_unavailable());

    let dir = tempfile::tempdir().unwrap();
    let missing = ClamdAddress::Unix(dir.path().join("clamd.sock"));
    let error = client(missing).scan_bytes(b"x").await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
}

#[tokio::test]
async fn ping_over_a_unix_socket_expects_pong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clamd.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        for reply in [&b"PONG\0"[..], b"PANG\0"] {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut command = [0u8; 6];
            stream.read_exact(&mut command).await.unwrap();
            assert_eq!(&command, b"zPING\0");
            stream.write_all(reply).await.unwrap();
        }
    });
    let client = client(ClamdAddress::Unix(path));
    client.ping().await.unwrap();
    let error = client.ping().await.unwrap_err();
    assert!(matches!(error, ScanError::UnexpectedReply(_)), "{error:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn a_body_that_cannot_be_read_is_neither_clean_nor_the_scanners_fault() {
    struct Failing;
    impl tokio::io::AsyncRead for Failing {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::Error::other("disk gone")))
        }
    }
    let (address, _server) = stand_in(|mut stream| async move {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    })
    .await;
    let error = client(address).scan(Failing).await.unwrap_err();
    assert!(matches!(error, ScanError::Body(_)), "{error:?}");
    assert_eq!(error.code(), "scan_body_unreadable");
}
