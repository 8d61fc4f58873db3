//! Generated answers through the public interface: with `[knowledge.llm]` pointing at a local
//! server that speaks OpenAI's chat completions wire format (server-sent events, the usage
//! chunk, `[DONE]`), a visitor's question is answered in the model's words from the bot's
//! passages, streamed over the widget's channel (`answer-start`, `answer-delta`, `answer-end`,
//! then the stored message under the same id) with citations of the passages sent only; the
//! model's decline lets the fallback answer and is never streamed; a spent budget or a failing
//! model leaves the passage itself to answer. With `[knowledge.embeddings]` (the same server's
//! embeddings endpoint), passages are embedded by the worker and a paraphrase is answered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::visitor::Visitor;
use common::{Credential, TestApp, each_backend_with, email};
use serde_json::{Value, json};

/// What the fake model server was asked, and how it answers.
#[derive(Default)]
struct Model {
    requests: Mutex<Vec<(Option<String>, Value)>>,
    /// The `total_tokens` its usage chunk reports.
    usage_total: AtomicU64,
    /// Every text it was asked to embed.
    embedded: Mutex<Vec<String>>,
    /// Requests it refused (a text with [`TOO_LONG`] in it, as a model refuses one past its
    /// context).
    refused: AtomicU64,
}

/// A passage the fake embedding model refuses, as a real one refuses a text past its context.
const TOO_LONG: &str = "UNEMBEDDABLE";

/// Words that mean the same to the fake embedding model: each group is one dimension.
const MEANINGS: [&[&str]; 4] = [
    &["refund", "refunds", "return", "returns", "money", "back"],
    &["days", "weeks", "long", "time"],
    &["delivery", "shipping", "ship", "deliver"],
    &["open", "opening", "hours", "closed"],
];

/// The fake model's embedding: how often each meaning occurs (other words mean nothing to it;
/// a text with none points elsewhere).
fn meaning(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0_f32; MEANINGS.len() + 1];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
    {
        if let Some(i) = MEANINGS
            .iter()
            .position(|group| group.contains(&word.as_str()))
        {
            vector[i] += 1.0;
        }
    }
    if vector.iter().all(|x| *x == 0.0) {
        vector[MEANINGS.len()] = 1.0;
    }
    vector
}

async fn embeddings(
    State(model): State<Arc<Model>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    assert_eq!(
        headers.get("authorization").unwrap(),
        "Bearer sk-embed-key",
        "the embeddings key"
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["model"], "fake-embedder");
    assert_eq!(body["encoding_format"], "float");
    let inputs: Vec<String> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    if inputs.iter().any(|text| text.contains(TOO_LONG)) {
        model.refused.fetch_add(1, Ordering::SeqCst);
        // OpenAI's answer to an input past the model's context.
        let error = json!({"error": {
            "message": "This model's maximum context length is 8192 tokens, however you requested 9000 tokens.",
            "type": "invalid_request_error", "param": null, "code": null}});
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    model
        .embedded
        .lock()
        .unwrap()
        .extend(inputs.iter().cloned());
    // Answered in reverse order: the index says which input each is.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": meaning(text)}))
        .collect();
    axum::Json(
        json!({"object": "list", "data": data, "model": "fake-embedder",
        "usage": {"prompt_tokens": 5, "total_tokens": 5}}),
    )
    .into_response()
}

/// The passages' text and the question, read back from the prompt.
fn prompt_parts(body: &Value) -> (Vec<String>, String) {
    let user = body["messages"][1]["content"].as_str().unwrap_or_default();
    let passages = user
        .split("<<<\n")
        .skip(1)
        .map(|rest| rest.split("\n>>>\n").next().unwrap_or_default().to_owned())
        .collect();
    let question = user
        .rsplit("Question: ")
        .next()
        .unwrap_or_default()
        .to_owned();
    (passages, question)
}

fn chunk(content: &str) -> String {
    let data = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "fake", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {data}\n\n")
}

async fn completions(
    State(model): State<Arc<Model>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    model.requests.lock().unwrap().push((auth, body.clone()));
    let (passages, question) = prompt_parts(&body);
    if question.contains("down") {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": {"message": "overloaded", "type": "server_error"}})),
        )
            .into_response();
    }
    // The first event says who speaks, with no text, as OpenAI's does; a keep-alive comment.
    let role = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "fake", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
    let mut events = vec![
        format!("data: {role}\r\n\r\n"),
        ": keep-alive\n\n".to_owned(),
    ];
    if question.contains("bicycle") {
        events.extend([chunk("NO_"), chunk("ANSW"), chunk("ER")]);
    } else if question.contains("broken") {
        events.push(chunk("The answer starts well enough, "));
        events.push(
            "data: {\"error\":{\"message\":\"the model crashed\",\"type\":\"server_error\"}}\n\n"
                .to_owned(),
        );
    } else {
        let answer = format!(
            "From the documents: {} [1]. See also [7].",
            passages.first().cloned().unwrap_or_default()
        );
        let chars: Vec<char> = answer.chars().collect();
        for piece in chars.chunks(7) {
            events.push(chunk(&piece.iter().collect::<String>()));
        }
        let stop = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        events.push(format!("data: {stop}\n\n"));
        let total = model.usage_total.load(Ordering::SeqCst);
        let usage = json!({"choices": null, "usage": {"prompt_tokens": total / 2,
            "completion_tokens": total - total / 2, "total_tokens": total}});
        events.push(format!("data: {usage}\n\n"));
        events.push("data: [DONE]\n\n".to_owned());
    }
    // Sent a little at a time, split inside events, as a real server's writes arrive.
    let bytes = events.concat().into_bytes();
    let pieces: Vec<Vec<u8>> = bytes.chunks(23).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::unfold(pieces.into_iter(), |mut rest| async move {
        let piece = rest.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, std::io::Error>(piece), rest))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

/// The fake model server on 127.0.0.1; answers its base URL.
async fn model_server(model: Arc<Model>) -> String {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(model);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}/v1")
}

struct Bot {
    org: String,
    owner: Credential,
    id: String,
    key: String,
}

impl Bot {
    fn path(&self, rest: &str) -> String {
        format!("/api/v1/orgs/{}/bots/{}{rest}", self.org, self.id)
    }
}

/// A bot that learned one text file, ready.
async fn taught(app: &TestApp, filename: &str, text: &str) -> Bot {
    let (owner, session) = app.owner(&email("owner"), "Library").await;
    let created = app
        .create_bot(&session.bearer(), &owner.org_id, "Librarian")
        .await;
    let bot = Bot {
        org: owner.org_id,
        owner: session.bearer(),
        id: created.id,
        key: created.key,
    };
    teach(app, &bot, filename, text).await;
    bot
}

/// Uploads a text file to the bot and waits until it is learned.
async fn teach(app: &TestApp, bot: &Bot, filename: &str, text: &str) {
    let part =
        reqwest::multipart::Part::bytes(text.as_bytes().to_vec()).file_name(filename.to_owned());
    let form = reqwest::multipart::Form::new().part("file", part);
    let request = app
        .client
        .post(app.url(&bot.path("/knowledge/files")))
        .multipart(form);
    let reply = app
        .send(app.authorize(request, &reqwest::Method::POST, &bot.owner))
        .await;
    reply.expect(202);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let source = app
            .get(&bot.path(&format!("/knowledge/sources/{id}")), &bot.owner)
            .await
            .json();
        if source["status"] == "ready" {
            break;
        }
        assert_ne!(source["status"], "rejected", "{source}");
        assert!(tokio::time::Instant::now() < deadline, "{source}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event on the chat's channel from asking `question` up to the bot's stored reply.
async fn ask(app: &TestApp, visitor: &mut Visitor, question: &str) -> Vec<(String, Value)> {
    visitor
        .post(app, "/chat/v1/messages", json!({ "text": question }))
        .await
        .expect(202);
    let mut events = Vec::new();
    loop {
        let (event, data) = visitor.next().await;
        let done = event == "message" && data["sender"] == "bot";
        events.push((event, data));
        if done {
            return events;
        }
    }
}

fn reply_of(events: &[(String, Value)]) -> &Value {
    &events.last().unwrap().1
}

fn named<'a>(events: &'a [(String, Value)], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|(event, _)| event == name)
        .map(|(_, data)| data)
        .collect()
}

fn with_model(base_url: String) -> impl Fn(&mut confide::config::Config) {
    move |config| {
        let url = confide_outbound::Url::parse(&base_url).unwrap();
        let mut llm = confide_web::knowledge::answers::LlmSettings::new(url, "fake-model".into());
        llm.api_key = Some("sk-test-key".to_owned().into());
        llm.max_tokens = 300;
        llm.tokens_per_bot = 5_000;
        llm.tokens_per_bot_max = 50_000;
        config.knowledge.llm = Some(llm);
    }
}

fn with_embedder(base_url: String) -> impl Fn(&mut confide::config::Config) {
    move |config| {
        let url = confide_outbound::Url::parse(&base_url).unwrap();
        let mut dense =
            confide_web::knowledge::embeddings::EmbeddingSettings::new(url, "fake-embedder".into());
        dense.api_key = Some("sk-embed-key".to_owned().into());
        dense.min_similarity = 0.5;
        config.knowledge.embeddings = Some(dense);
    }
}

#[tokio::test]
async fn a_grounded_answer_is_streamed_with_citations_of_the_passages_sent() {
    let model = Arc::new(Model::default());
    model.usage_total.store(120, Ordering::SeqCst);
    let base = model_server(model.clone()).await;
    each_backend_with(with_model(base), async |app| {
        model.requests.lock().unwrap().clear();
        let bot = taught(
            app,
            "returns.txt",
            "Returns are free within <b>30 days</b> of delivery.",
        )
        .await;
        let mut visitor = Visitor::start(app, &bot.key).await;
        let events = ask(app, &mut visitor, "How many days do I have for returns?").await;

        // Announced, streamed in pieces, ended with its citations, then stored under that id.
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        let start = names.iter().position(|n| *n == "answer-start").unwrap();
        let end = names.iter().position(|n| *n == "answer-end").unwrap();
        assert!(start < end && end < names.len() - 1, "{names:?}");
        let id = &events[start].1["message_id"];
        let deltas = named(&events, "answer-delta");
        assert!(deltas.len() >= 2, "streamed in pieces: {names:?}");
        assert!(deltas.iter().all(|d| d["message_id"] == *id));
        let streamed: String = deltas.iter().map(|d| d["text"].as_str().unwrap()).collect();
        assert_eq!(
            streamed,
            "From the documents: Returns are free within <b>30 days</b> of delivery. [1]. See also [7]."
        );
        let citations = &events[end].1["citations"];
        assert_eq!(citations.as_array().unwrap().len(), 1, "{citations}");
        assert_eq!(citations[0]["n"], 1);
        assert_eq!(citations[0]["title"], "returns.txt");
        let reply = reply_of(&events);
        assert_eq!(reply["id"], *id, "the stored message replaces what was streamed");
        let text = reply["text"].as_str().unwrap();
        // The model's words are text (never markup), the invented citation is gone, and the
        // source is named.
        assert!(
            text.contains("Returns are free within &lt;b&gt;30 days&lt;/b&gt; of delivery. [1]."),
            "{text}"
        );
        assert!(!text.contains("[7]") && !text.contains("<b>"), "{text}");
        assert!(text.contains("[1] <em>returns.txt</em>"), "{text}");

        // What the model was sent: the key, the model, a bounded streamed answer, the passage
        // fenced, the question.
        let requests = model.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        let (auth, body) = &requests[0];
        assert_eq!(auth.as_deref(), Some("Bearer sk-test-key"));
        assert_eq!(body["model"], "fake-model");
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 300);
        let (passages, question) = prompt_parts(body);
        assert_eq!(passages, ["Returns are free within <b>30 days</b> of delivery."]);
        assert_eq!(question, "How many days do I have for returns?");
        assert!(
            body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("NO_ANSWER")
        );

        // A question the passages do not cover is not sent to the model at all.
        let events = ask(app, &mut visitor, "Who won the football match yesterday?").await;
        assert!(named(&events, "answer-start").is_empty());
        assert_eq!(model.requests.lock().unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_declined_answer_is_never_streamed_and_the_fallback_answers() {
    let model = Arc::new(Model::default());
    let base = model_server(model.clone()).await;
    each_backend_with(with_model(base), async |app| {
        let bot = taught(
            app,
            "shop.txt",
            "We sell bicycle helmets and bicycle lights, but we do not repair bicycles.",
        )
        .await;
        let mut visitor = Visitor::start(app, &bot.key).await;
        let events = ask(app, &mut visitor, "Do you sell bicycle helmets and lights?").await;
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("answer-")),
            "nothing of a decline reaches the widget: {names:?}"
        );
        let text = reply_of(&events)["text"].as_str().unwrap();
        assert!(text.contains("did not understand"), "the fallback: {text}");
        assert!(!text.contains("NO_"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn without_budget_or_with_a_failing_model_the_passage_itself_answers() {
    let model = Arc::new(Model::default());
    // Each answer reports nearly the whole monthly budget the bot is given below.
    model.usage_total.store(950, Ordering::SeqCst);
    let base = model_server(model.clone()).await;
    each_backend_with(with_model(base), async |app| {
        model.requests.lock().unwrap().clear();
        let bot = taught(
            app,
            "hours.txt",
            "The shop is open from nine to five on weekdays. The broken window is being repaired. \
             The phone line is down on Mondays.",
        )
        .await;
        let settings = |budget: Value| {
            json!({ "greeting": "Hi!", "fallback_reply": "I am only a bot.",
                    "allowed_domains": [], "answer_tokens_per_month": budget })
        };
        // Owners may not give a bot more than the server allows.
        app.put(
            &bot.path("/chat-settings"),
            &bot.owner,
            settings(json!(50_001)),
        )
        .await
        .expect_error(422, "invalid_answer_budget");
        let put = app
            .put(
                &bot.path("/chat-settings"),
                &bot.owner,
                settings(json!(1_000)),
            )
            .await;
        put.expect(200);
        assert_eq!(put.json()["answer_tokens_per_month"], 1_000);

        let mut visitor = Visitor::start(app, &bot.key).await;
        let first = ask(app, &mut visitor, "When is the shop open on weekdays?").await;
        assert_eq!(named(&first, "answer-start").len(), 1);
        // 950 of 1,000 used: the next answer is the passage, and the model is not asked.
        let second = ask(app, &mut visitor, "When is the shop open on weekdays?").await;
        assert!(named(&second, "answer-start").is_empty());
        let text = reply_of(&second)["text"].as_str().unwrap();
        assert!(text.contains("open from nine to five"), "{text}");
        assert!(text.contains("<em>hours.txt</em>"), "{text}");
        assert_eq!(model.requests.lock().unwrap().len(), 1);

        // A budget of 0: no generated answers for this bot.
        app.put(&bot.path("/chat-settings"), &bot.owner, settings(json!(0)))
            .await
            .expect(200);
        let events = ask(app, &mut visitor, "When is the shop open on weekdays?").await;
        assert!(named(&events, "answer-start").is_empty());
        assert_eq!(model.requests.lock().unwrap().len(), 1);

        // The server's default again, with room: a model that fails before writing anything
        // leaves the passage to answer, with nothing streamed.
        app.put(
            &bot.path("/chat-settings"),
            &bot.owner,
            settings(Value::Null),
        )
        .await
        .expect(200);
        let events = ask(app, &mut visitor, "Is the phone line down on Mondays?").await;
        assert!(named(&events, "answer-start").is_empty());
        let text = reply_of(&events)["text"].as_str().unwrap();
        assert!(text.contains("phone line is down"), "{text}");
        // One that fails midway: what was streamed is ended as failed, and the passage is
        // stored under the same id, replacing it.
        let events = ask(app, &mut visitor, "Is the broken window being repaired?").await;
        let start = named(&events, "answer-start");
        assert_eq!(start.len(), 1, "{events:?}");
        let end = named(&events, "answer-end");
        assert_eq!(end[0]["failed"], true);
        let reply = reply_of(&events);
        assert_eq!(reply["id"], start[0]["message_id"]);
        assert!(reply["text"].as_str().unwrap().contains("broken window"));
    })
    .await;
}

#[tokio::test]
async fn with_dense_retrieval_a_paraphrase_finds_the_passage_its_words_miss() {
    let model = Arc::new(Model::default());
    let base = model_server(model.clone()).await;
    each_backend_with(with_embedder(base), async |app| {
        let bot = taught(
            app,
            "policy.txt",
            "Returns are free within 30 days of delivery.",
        )
        .await;
        teach(
            app,
            &bot,
            "hours.txt",
            "Our opening hours are nine to five.",
        )
        .await;
        // The worker embeds the passages.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !model
            .embedded
            .lock()
            .unwrap()
            .iter()
            .any(|text| text.contains("Returns are free"))
        {
            assert!(tokio::time::Instant::now() < deadline, "never embedded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut visitor = Visitor::start(app, &bot.key).await;
        // None of these words is in the passage: BM25 alone would not answer.
        let events = ask(app, &mut visitor, "Can I get my money back?").await;
        let text = reply_of(&events)["text"].as_str().unwrap();
        assert!(text.contains("Returns are free within 30 days"), "{text}");
        assert!(text.contains("<em>policy.txt</em>"), "{text}");
        // The question was embedded with the same model.
        assert!(
            model
                .embedded
                .lock()
                .unwrap()
                .iter()
                .any(|t| t == "Can I get my money back?")
        );
        // Nothing close in meaning or in words: the fallback.
        let events = ask(app, &mut visitor, "Tell me a joke about penguins").await;
        let text = reply_of(&events)["text"].as_str().unwrap();
        assert!(text.contains("did not understand"), "{text}");
        // Words still answer on their own.
        let events = ask(app, &mut visitor, "What are your opening hours?").await;
        let text = reply_of(&events)["text"].as_str().unwrap();
        assert!(text.contains("nine to five"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn a_passage_the_embeddings_endpoint_refuses_is_set_aside_and_the_others_are_embedded() {
    let model = Arc::new(Model::default());
    let base = model_server(model.clone()).await;
    each_backend_with(with_embedder(base), async |app| {
        let embedded = |text: &str| {
            model
                .embedded
                .lock()
                .unwrap()
                .iter()
                .any(|t| t.contains(text))
        };
        let wait_for = async |text: &str| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !embedded(text) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{text} never embedded"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let bot = taught(app, "odd.txt", &format!("{TOO_LONG} telemetry blob.")).await;
        teach(
            app,
            &bot,
            "policy.txt",
            "Returns are free within 30 days of delivery.",
        )
        .await;
        wait_for("Returns are free").await;
        assert!(model.refused.load(Ordering::SeqCst) >= 1);
        // The endpoint was asked whether it embeds anything at all before the passage was set
        // aside.
        assert!(embedded("hello"));
        let mut visitor = Visitor::start(app, &bot.key).await;
        let events = ask(app, &mut visitor, "Can I get my money back?").await;
        let text = reply_of(&events)["text"].as_str().unwrap();
        assert!(text.contains("Returns are free within 30 days"), "{text}");

        // Set aside for good: later batches embed new passages without asking for it again.
        let refused = model.refused.load(Ordering::SeqCst);
        teach(
            app,
            &bot,
            "hours.txt",
            "Our opening hours are nine to five.",
        )
        .await;
        wait_for("opening hours are nine").await;
        assert_eq!(model.refused.load(Ordering::SeqCst), refused);
        // The new passage answers by meaning alone ("closed" is in no passage): this node's
        // copy of the bot's vectors, read for the first question, followed the new embedding.
        let events = ask(app, &mut visitor, "When are you closed?").await;
        let text = reply_of(&events)["text"].as_str().unwrap();
        assert!(text.contains("nine to five"), "{text}");
    })
    .await;
}
