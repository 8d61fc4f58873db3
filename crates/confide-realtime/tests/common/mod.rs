//! A real hub on 127.0.0.1:0 and real clients: WebSocket through tokio-tungstenite, the HTTP API
//! through reqwest.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confide_realtime::{
    AddressPolicy, App, AppDirectory, Hub, HubConfig, OriginPolicy, StaticApps, routes, signature,
};
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Server {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
}

pub fn app(id: &str, key: &str, secret: &str) -> App {
    App {
        id: id.to_owned(),
        key: key.to_owned(),
        secret: SecretString::from(secret.to_owned()),
        client_events: false,
        origins: OriginPolicy::Any,
        addresses: AddressPolicy::any(),
        owner: None,
    }
}

/// The shop's app (client events on) and the blog's app (client events off).
pub fn two_apps() -> Vec<App> {
    let mut shop = app("shop", "shop-key", "shop-secret");
    shop.client_events = true;
    vec![shop, app("blog", "blog-key", "blog-secret")]
}

pub async fn start(apps: Vec<App>, config: HubConfig) -> Server {
    start_with(Arc::new(StaticApps::new(apps)), config).await
}

pub async fn start_with(directory: Arc<dyn AppDirectory>, config: HubConfig) -> Server {
    let hub = Hub::new(directory, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = routes(hub.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server { addr, hub }
}

pub async fn start_default() -> Server {
    start(two_apps(), HubConfig::default()).await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub socket_id: String,
    pub established: Value,
}

/// How a connection ended, with the events received before the close frame.
#[derive(Debug)]
pub struct Closed {
    pub code: u16,
    pub events: Vec<Value>,
}

impl Closed {
    pub fn error_code(&self) -> Option<i64> {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "pusher:error")
            .and_then(|e| e["data"]["code"].as_i64())
    }
}

pub async fn open(addr: SocketAddr, path_and_query: &str, origin: Option<&str>) -> Ws {
    let mut request = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws
}

pub fn ws_path(key: &str) -> String {
    format!("/app/{key}?protocol=7&client=js&version=8.4.0&flash=false")
}

/// Parses the `data` of a server event: pusher-js accepts an object or a JSON string of one.
pub fn data_of(event: &Value) -> Value {
    match &event["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

pub async fn next_message(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(m))) => Some(m),
        Ok(_) => None,
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}

/// The next event; panics on a close or silence.
pub async fn next_event(ws: &mut Ws) -> Value {
    loop {
        match next_message(ws).await {
            Some(Message::Text(t)) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Reads until the server closes; answers the close code and the events before it.
pub async fn closed(ws: &mut Ws) -> Closed {
    let mut events = Vec::new();
    loop {
        match next_message(ws).await {
            Some(Message::Text(t)) => events.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Message::Close(frame)) => {
                return Closed {
                    code: frame.map_or(1005, |f| u16::from(f.code)),
                    events,
                };
            }
            Some(_) => continue,
            None => {
                return Closed { code: 1006, events };
            }
        }
    }
}

/// Asserts that nothing arrives for a while.
pub async fn silent_for(ws: &mut Ws, wait: Duration) {
    if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, ws.next()).await {
        panic!("expected silence, got {message:?}");
    }
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

impl Client {
    pub async fn connect(server: &Server, key: &str) -> Client {
        Client::connect_from(server, key, None).await
    }

    pub async fn connect_from(server: &Server, key: &str, origin: Option<&str>) -> Client {
        let mut ws = open(server.addr, &ws_path(key), origin).await;
        let established = next_event(&mut ws).await;
        assert_eq!(established["event"], "pusher:connection_established");
        let data = data_of(&established);
        let socket_id = data["socket_id"].as_str().unwrap().to_owned();
        Client {
            ws,
            socket_id,
            established,
        }
    }

    pub async fn send(&mut self, value: Value) {
        send(&mut self.ws, value).await;
    }

    pub async fn next_event(&mut self) -> Value {
        next_event(&mut self.ws).await
    }

    pub async fn closed(&mut self) -> Closed {
        closed(&mut self.ws).await
    }

    pub async fn silent_for(&mut self, wait: Duration) {
        silent_for(&mut self.ws, wait).await;
    }

    /// Subscribes and answers the server's reply (success or error).
    pub async fn subscribe(&mut self, data: Value) -> Value {
        self.send(serde_json::json!({ "event": "pusher:subscribe", "data": data }))
            .await;
        self.next_event().await
    }

    pub async fn subscribe_public(&mut self, channel: &str) {
        let reply = self
            .subscribe(serde_json::json!({ "channel": channel }))
            .await;
        assert_eq!(
            reply["event"], "pusher_internal:subscription_succeeded",
            "{reply}"
        );
    }

    /// Subscribes to a private channel with a correct signature.
    pub async fn subscribe_private(&mut self, key: &str, secret: &str, channel: &str) {
        let sig = signature::private_channel(&secret_of(secret), &self.socket_id, channel);
        let reply = self
            .subscribe(serde_json::json!({
                "channel": channel,
                "auth": signature::auth_string(key, &sig),
            }))
            .await;
        assert_eq!(
            reply["event"], "pusher_internal:subscription_succeeded",
            "{reply}"
        );
    }

    /// Joins a presence channel as `user_id`; answers the server's reply.
    pub async fn join_presence(
        &mut self,
        key: &str,
        secret: &str,
        channel: &str,
        user_id: &str,
        info: Value,
    ) -> Value {
        let channel_data = serde_json::json!({ "user_id": user_id, "user_info": info }).to_string();
        let sig = signature::presence_channel(
            &secret_of(secret),
            &self.socket_id,
            channel,
            &channel_data,
        );
        self.subscribe(serde_json::json!({
            "channel": channel,
            "auth": signature::auth_string(key, &sig),
            "channel_data": channel_data,
        }))
        .await
    }
}

pub fn secret_of(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signed HTTP API URL, as Pusher's SDKs build it (values unencoded).
/// `credentials` is `(key, secret)`.
pub fn signed_url(
    server: &Server,
    (key, secret): (&str, &str),
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
    extra: &[(&str, &str)],
) -> String {
    let params = signature::signed_api_query(
        key,
        &secret_of(secret),
        method,
        path,
        body,
        timestamp,
        extra,
    );
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("http://{}{path}?{query}", server.addr)
}

/// POSTs a JSON body signed for the app.
pub async fn post_signed(
    server: &Server,
    key: &str,
    secret: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    let body = body.to_string();
    let url = signed_url(
        server,
        (key, secret),
        "POST",
        path,
        body.as_bytes(),
        now(),
        &[],
    );
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

pub async fn get_signed(
    server: &Server,
    key: &str,
    secret: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let url = signed_url(server, (key, secret), "GET", path, b"", now(), extra);
    reqwest::get(url).await.unwrap()
}
