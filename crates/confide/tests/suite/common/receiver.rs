//! A webhook receiver on 127.0.0.1 for the tests: records every request and answers as a test
//! scripts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1 that records everything. The n-th request carrying a given
/// `webhook-id` is answered with the script's n-th status, or the fallback past its end.
#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<Vec<u16>>>,
    /// Answered when the script is empty.
    pub fallback: Arc<Mutex<u16>>,
    /// The body of every answer (a `new_context` unless a test sets another).
    pub body: Arc<Mutex<String>>,
}

impl Receiver {
    pub async fn start() -> (Receiver, String) {
        let receiver = Receiver {
            fallback: Arc::new(Mutex::new(200)),
            body: Arc::new(Mutex::new(
                r#"{"new_context": {"plan": "gold"}}"#.to_owned(),
            )),
            ..Receiver::default()
        };
        let shared = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                async move {
                    let got = Received {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                            .collect(),
                        body: body.to_vec(),
                    };
                    let status = {
                        let mut received = shared.received.lock().unwrap();
                        let id = got.headers.get("webhook-id").cloned();
                        let earlier = received
                            .iter()
                            .filter(|r| r.headers.get("webhook-id") == id.as_ref())
                            .count();
                        received.push(got);
                        let script = shared.script.lock().unwrap();
                        script
                            .get(earlier)
                            .copied()
                            .unwrap_or(*shared.fallback.lock().unwrap())
                    };
                    (
                        StatusCode::from_u16(status).unwrap(),
                        shared.body.lock().unwrap().clone(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Answers every later request with `body`.
    pub fn answer_with(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_owned();
    }

    pub fn answer(&self, script: &[u16], then: u16) {
        *self.script.lock().unwrap() = script.to_vec();
        *self.fallback.lock().unwrap() = then;
    }

    /// Waits until `ready` holds for what has arrived.
    pub async fn wait_for(&self, what: &str, ready: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..3000 {
            let all = self.all();
            if ready(&all) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the receiver never saw {what}: {:?}", self.all().len());
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub fn hmac_base64(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Kindly's scheme as seed 002 describes it: base64 HMAC-SHA256 of the raw body, keyed with the
/// secret as shown.
pub fn kindly_ok(secret: &str, got: &Received) -> bool {
    got.header("kindly-hmac-algorithm") == "HMAC-SHA-256 (base64 encoded)"
        && got.header("kindly-hmac") == hmac_base64(secret.as_bytes(), &[&got.body])
}

/// Standard Webhooks: one of the space-separated `v1,` signatures is HMAC-SHA256 over
/// `id.timestamp.body` keyed with the base64-decoded part of `whsec_...`.
pub fn standard_ok(secret: &str, got: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let expected = format!(
        "v1,{}",
        hmac_base64(
            &key,
            &[
                got.header("webhook-id").as_bytes(),
                b".",
                got.header("webhook-timestamp").as_bytes(),
                b".",
                &got.body,
            ]
        )
    );
    got.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}
