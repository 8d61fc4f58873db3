//! Real servers on loopback for the outbound client's tests: HTTP receivers and a name server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use confide_outbound::{Allowlist, DnsConfig, OutboundClient, OutboundConfig};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};

/// What a receiver saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP server on a loopback address that records every request and answers by path:
/// `/redirect?URL` redirects there, `/slow` never answers, `/stall` sends half a body,
/// `/big?N` sends N bytes with a length, `/endless` streams without end, `/missing` is a 404,
/// `/doc` is a small HTML page, anything else is 200 with a JSON body.
pub struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Clone)]
struct ReceiverState {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Writers of stalled bodies, kept open so those bodies never end.
    stalled: Arc<Mutex<Vec<tokio::io::DuplexStream>>>,
}

impl Receiver {
    pub async fn start(ip: IpAddr) -> Receiver {
        Receiver::start_on(SocketAddr::new(ip, 0)).await.unwrap()
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (app, seen) = Receiver::app();
        // Bound already: connections queue until the server task accepts them.
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { addr, seen })
    }

    /// An HTTPS receiver on 127.0.0.1 with this certificate and key.
    pub async fn start_tls(cert_pem: String, key_pem: String) -> Receiver {
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert_pem.into_bytes(),
            key_pem.into_bytes(),
        )
        .await
        .unwrap();
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (app, seen) = Receiver::app();
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
        tokio::spawn(server.serve(app.into_make_service()));
        Receiver { addr, seen }
    }

    fn app() -> (Router, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            seen: seen.clone(),
            stalled: Arc::new(Mutex::new(Vec::new())),
        };
        (Router::new().fallback(any(answer)).with_state(state), seen)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn answer(
    State(state): State<ReceiverState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let query = uri.query().unwrap_or_default().to_owned();
    match uri.path() {
        "/redirect" => (StatusCode::FOUND, [(header::LOCATION, query)]).into_response(),
        "/slow" => std::future::pending().await,
        "/stall" => {
            let (mut writer, reader) = tokio::io::duplex(64);
            writer.write_all(b"the first half").await.unwrap();
            state.stalled.lock().unwrap().push(writer);
            Body::from_stream(tokio_util::io::ReaderStream::new(reader)).into_response()
        }
        "/big" => {
            let size: usize = query.parse().unwrap();
            vec![b'x'; size].into_response()
        }
        "/endless" => Body::from_stream(tokio_util::io::ReaderStream::new(tokio::io::repeat(b'x')))
            .into_response(),
        "/missing" => StatusCode::NOT_FOUND.into_response(),
        "/doc" => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<p>hello</p>",
        )
            .into_response(),
        _ => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"new_context":{"seen":"yes"}}"#,
        )
            .into_response(),
    }
}

/// A name server on 127.0.0.1 answering from a table. A name may have a sequence of answers:
/// the n-th query gets the n-th (the last repeats), so a test can see a second lookup.
pub struct NameServer {
    pub addr: SocketAddr,
    queries: Arc<Mutex<HashMap<(String, RecordType), usize>>>,
}

type Answers = HashMap<(String, RecordType), Vec<Vec<IpAddr>>>;

impl NameServer {
    /// `records`: (name, answers in order), each address answering A or AAAA by its family.
    pub async fn start(records: &[(&str, Vec<Vec<&str>>)]) -> NameServer {
        let mut answers: Answers = HashMap::new();
        for (name, sequence) in records {
            for record_type in [RecordType::A, RecordType::AAAA] {
                let per_query = sequence
                    .iter()
                    .map(|answer| {
                        answer
                            .iter()
                            .map(|ip| ip.parse::<IpAddr>().unwrap())
                            .filter(|ip| (record_type == RecordType::A) == ip.is_ipv4())
                            .collect()
                    })
                    .collect();
                answers.insert((fqdn(name), record_type), per_query);
            }
        }
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(HashMap::new()));
        let counter = queries.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let Some(reply) = reply(&buffer[..len], &answers, &counter) else {
                    continue;
                };
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        NameServer { addr, queries }
    }

    /// How many times `name` was asked for records of `record_type`.
    pub fn queries(&self, name: &str, record_type: RecordType) -> usize {
        let queries = self.queries.lock().unwrap();
        queries
            .get(&(fqdn(name), record_type))
            .copied()
            .unwrap_or(0)
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

fn reply(
    packet: &[u8],
    answers: &Answers,
    counter: &Mutex<HashMap<(String, RecordType), usize>>,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let query = request.queries.first()?.clone();
    let key = (fqdn(&query.name().to_ascii()), query.query_type());
    let asked = {
        let mut counter = counter.lock().unwrap();
        let count = counter.entry(key.clone()).or_insert(0);
        *count += 1;
        *count
    };
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(query.clone());
    match answers.get(&key) {
        Some(sequence) => {
            let answer = sequence.get(asked - 1).or(sequence.last())?;
            for ip in answer {
                let data = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                // TTL 0: nothing is cached, so every lookup reaches this server and is counted.
                response.add_answer(Record::from_rdata(query.name().clone(), 0, data));
            }
        }
        None => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.to_vec().ok()
}

/// A client that resolves through `dns` (and the hosts file), never through the machine's
/// configured name servers, so no test can reach past loopback.
pub fn client(allow: &[&str], dns: &NameServer) -> OutboundClient {
    client_with(allow, dns, |_| {})
}

pub fn client_with(
    allow: &[&str],
    dns: &NameServer,
    adjust: impl FnOnce(&mut OutboundConfig),
) -> OutboundClient {
    let mut config = OutboundConfig {
        allow: Allowlist::parse(allow).unwrap(),
        dns: DnsConfig::NameServers(vec![dns.addr]),
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        ..OutboundConfig::default()
    };
    adjust(&mut config);
    OutboundClient::new(config).unwrap()
}
