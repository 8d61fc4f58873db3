//! A visitor in a test: a chat session and a real WebSocket subscribed to the chat's private
//! channel through the public chat endpoints, as the widget does.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::TestApp;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A visitor: the chat token and a realtime connection subscribed to the chat's channel.
pub struct Visitor {
    pub token: String,
    pub chat_id: String,
    socket: Socket,
}

impl Visitor {
    pub async fn start(app: &TestApp, bot_key: &str) -> Visitor {
        let session = app
            .send(
                app.client
                    .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
                    .json(&json!({})),
            )
            .await;
        session.expect(201);
        let session = session.json();
        let token = session["token"].as_str().unwrap().to_owned();
        let channel = session["channel"].as_str().unwrap().to_owned();
        let ws_url = app
            .url(&format!(
                "/app/{bot_key}?protocol=7&client=test&version=1.0"
            ))
            .replacen("http://", "ws://", 1);
        let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
        let established = next_event(&mut socket).await;
        assert_eq!(established["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
        let socket_id = data["socket_id"].as_str().unwrap().to_owned();
        let auth = app
            .send(
                app.client
                    .post(app.url("/chat/v1/auth"))
                    .header("x-chat-token", &token)
                    .form(&[
                        ("socket_id", socket_id.as_str()),
                        ("channel_name", channel.as_str()),
                    ]),
            )
            .await;
        auth.expect(200);
        let subscribe = json!({
            "event": "pusher:subscribe",
            "data": { "channel": channel, "auth": auth.json()["auth"] },
        });
        socket
            .send(Frame::Text(subscribe.to_string().into()))
            .await
            .unwrap();
        let subscribed = next_event(&mut socket).await;
        assert_eq!(
            subscribed["event"], "pusher_internal:subscription_succeeded",
            "{subscribed}"
        );
        Visitor {
            token,
            chat_id: session["chat_id"].as_str().unwrap().to_owned(),
            socket,
        }
    }

    pub async fn post(&self, app: &TestApp, path: &str, body: Value) -> super::Reply {
        app.send(
            app.client
                .post(app.url(path))
                .header("x-chat-token", &self.token)
                .json(&body),
        )
        .await
    }

    /// The next chat event (`message` or `handover`) on the channel, data decoded.
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            let frame = next_event(&mut self.socket).await;
            let event = frame["event"].as_str().unwrap().to_owned();
            if event.starts_with("pusher") {
                continue;
            }
            let data = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
            return (event, data);
        }
    }
}

async fn next_event(socket: &mut Socket) -> Value {
    // A generous bound so a missing event fails the test instead of hanging it.
    let frame = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) => return text.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("an event within the bound");
    serde_json::from_str(&frame).unwrap()
}
