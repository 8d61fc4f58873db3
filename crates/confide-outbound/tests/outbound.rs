//! The outbound client against real servers on loopback: what it refuses, what the allowlist
//! opens, where connections go, and the limits on time and size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{NameServer, Receiver, client, client_with};
use confide_outbound::{FetchOptions, OutboundError, Range};
use hickory_proto::rr::RecordType;
use http::{HeaderMap, HeaderValue, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn no_names() -> NameServer {
    NameServer::start(&[]).await
}

fn refusal(result: Result<impl std::fmt::Debug, OutboundError>) -> (Range, IpAddr) {
    match result {
        Err(OutboundError::AddressNotAllowed {
            address, reason, ..
        }) => (reason.range, address),
        other => panic!("expected address_not_allowed, got {other:?}"),
    }
}

/// Two receivers on one port, at 127.0.0.1 and 127.0.0.2, so that only the address tells them
/// apart. Another process may hold the port on 127.0.0.2: then try another.
async fn twin_receivers() -> (Receiver, Receiver) {
    loop {
        let first = Receiver::start(LOOPBACK).await;
        let twin = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), first.addr.port());
        if let Ok(second) = Receiver::start_on(twin).await {
            return (first, second);
        }
    }
}

#[tokio::test]
async fn a_webhook_reaches_an_on_premises_receiver_the_operator_allowed() {
    let receiver = Receiver::start(LOOPBACK).await;
    let dns = no_names().await;
    let outbound = client(&["127.0.0.0/8"], &dns);

    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
    let response = outbound
        .post(
            &receiver.url("/hook"),
            headers,
            br#"{"event":"ping"}"#.to_vec(),
        )
        .await
        .unwrap();

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(&response.body[..], br#"{"new_context":{"seen":"yes"}}"#);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, http::Method::POST);
    assert_eq!(seen[0].path, "/hook");
    assert_eq!(seen[0].headers["webhook-id"], "msg_1");
    assert!(
        seen[0].headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("Confide/")
    );
    assert_eq!(&seen[0].body[..], br#"{"event":"ping"}"#);
}

#[tokio::test]
async fn loopback_is_refused_by_default_however_it_is_spelled() {
    let receiver = Receiver::start(LOOPBACK).await;
    let port = receiver.addr.port();
    let dns = no_names().await;
    let outbound = client(&[], &dns);

    for host in [
        "127.0.0.1".to_owned(),
        "2130706433".to_owned(),
        "0x7f000001".to_owned(),
        "0x7f.1".to_owned(),
        "0177.0.0.1".to_owned(),
        "127.1".to_owned(),
        "[::ffff:127.0.0.1]".to_owned(),
        "[::ffff:7f00:1]".to_owned(),
        "0.0.0.0".to_owned(),
        "0".to_owned(),
    ] {
        let url = format!("http://{host}:{port}/hook");
        let result = outbound.post(&url, HeaderMap::new(), "x").await;
        let (range, _) = refusal(result);
        assert!(
            matches!(range, Range::Loopback | Range::Unspecified),
            "{url}: {range}"
        );
        // A save-time check says the same without touching the network.
        assert_eq!(
            outbound.check_url(&url).unwrap_err().code(),
            "address_not_allowed"
        );
    }
    assert_eq!(receiver.hits(), 0, "nothing reached the receiver");
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_through_the_hosts_file_is_refused() {
    let receiver = Receiver::start(LOOPBACK).await;
    let port = receiver.addr.port();
    let dns = no_names().await;
    let outbound = client(&[], &dns);

    for host in ["localhost", "LOCALHOST.", "localhost."] {
        let url = format!("http://{host}:{port}/hook");
        let (range, _) = refusal(outbound.post(&url, HeaderMap::new(), "x").await);
        assert_eq!(range, Range::Loopback, "{url}");
        let (range, _) = refusal(outbound.check_url_resolved(&url).await);
        assert_eq!(range, Range::Loopback, "{url}");
    }
    assert_eq!(receiver.hits(), 0);
}

#[tokio::test]
async fn names_resolving_to_private_metadata_or_mapped_addresses_are_refused() {
    let dns = NameServer::start(&[
        ("loop.confide.test", vec![vec!["127.0.0.1"]]),
        ("mapped.confide.test", vec![vec!["::ffff:127.0.0.1"]]),
        ("metadata.confide.test", vec![vec!["169.254.169.254"]]),
        ("aws6.confide.test", vec![vec!["fd00:ec2::254"]]),
        ("private.confide.test", vec![vec!["10.1.2.3"]]),
        ("linklocal.confide.test", vec![vec!["fe80::1"]]),
        ("nat64.confide.test", vec![vec!["64:ff9b::a9fe:a9fe"]]),
        // One public address does not excuse a private one beside it.
        (
            "mixed.confide.test",
            vec![vec!["93.184.215.14", "192.168.0.10"]],
        ),
    ])
    .await;
    let outbound = client(&[], &dns);

    for (name, range, address) in [
        ("loop.confide.test", Range::Loopback, "127.0.0.1"),
        ("mapped.confide.test", Range::Loopback, "::ffff:127.0.0.1"),
        (
            "metadata.confide.test",
            Range::CloudMetadata,
            "169.254.169.254",
        ),
        ("aws6.confide.test", Range::CloudMetadata, "fd00:ec2::254"),
        ("private.confide.test", Range::Private, "10.1.2.3"),
        ("linklocal.confide.test", Range::LinkLocal, "fe80::1"),
        (
            "nat64.confide.test",
            Range::CloudMetadata,
            "64:ff9b::a9fe:a9fe",
        ),
        ("mixed.confide.test", Range::Private, "192.168.0.10"),
    ] {
        let url = format!("https://{name}/hook");
        let found = refusal(outbound.post(&url, HeaderMap::new(), "x").await);
        assert_eq!(found, (range, address.parse().unwrap()), "{name}");
    }
}

#[tokio::test]
async fn the_allowlist_is_the_only_way_to_a_non_public_address() {
    let receiver = Receiver::start(LOOPBACK).await;
    let port = receiver.addr.port();
    let dns = no_names().await;

    // A block lets in exactly its addresses.
    let narrow = client(&["127.0.0.2/32"], &dns);
    let (range, _) = refusal(
        narrow
            .post(&receiver.url("/a"), HeaderMap::new(), "x")
            .await,
    );
    assert_eq!(range, Range::Loopback);
    assert_eq!(receiver.hits(), 0);

    let block = client(&["127.0.0.1/32"], &dns);
    let decimal = format!("http://2130706433:{port}/b");
    assert_eq!(
        block
            .post(&decimal, HeaderMap::new(), "x")
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    // `localhost` is also ::1, which the block does not cover: every address must be allowed.
    let by_name = format!("http://localhost:{port}/c");
    let (_, address) = refusal(block.post(&by_name, HeaderMap::new(), "x").await);
    assert_eq!(address, "::1".parse::<IpAddr>().unwrap());

    // A host name entry allows that name, whatever it resolves to.
    let named = client(&["localhost"], &dns);
    assert_eq!(
        named
            .post(&by_name, HeaderMap::new(), "x")
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    let paths: Vec<String> = receiver.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/b", "/c"]);
}

#[tokio::test]
async fn no_allowlist_entry_opens_a_cloud_metadata_service() {
    let dns =
        NameServer::start(&[("metadata.google.internal", vec![vec!["169.254.169.254"]])]).await;
    let outbound = client(
        &["169.254.0.0/16", "0.0.0.0/0", "metadata.google.internal"],
        &dns,
    );
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ] {
        let (range, _) = refusal(outbound.post(url, HeaderMap::new(), "x").await);
        assert_eq!(range, Range::CloudMetadata, "{url}");
    }
}

#[tokio::test]
async fn the_connection_goes_to_the_address_that_was_checked() {
    let (receiver, decoy) = twin_receivers().await;
    let port = receiver.addr.port();
    // The first answer is the receiver; any later lookup would be sent to the decoy.
    let dns = NameServer::start(&[(
        "hooks.confide.test",
        vec![vec!["127.0.0.1"], vec!["127.0.0.2"]],
    )])
    .await;
    let outbound = client(&["127.0.0.0/8"], &dns);

    let url = format!("http://hooks.confide.test:{port}/hook");
    let response = outbound.post(&url, HeaderMap::new(), "x").await.unwrap();

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(receiver.hits(), 1);
    assert_eq!(decoy.hits(), 0);
    assert_eq!(dns.queries("hooks.confide.test", RecordType::A), 1);
    assert_eq!(
        receiver.seen()[0].headers["host"],
        format!("hooks.confide.test:{port}").as_str(),
        "the request still names the host it was sent to"
    );
}

#[tokio::test]
async fn a_webhook_never_follows_a_redirect() {
    let receiver = Receiver::start(LOOPBACK).await;
    let dns = no_names().await;
    let outbound = client(&["127.0.0.1/32"], &dns);

    for location in [
        receiver.url("/landing"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let url = receiver.url(&format!("/redirect?{location}"));
        let response = outbound.post(&url, HeaderMap::new(), "x").await.unwrap();
        assert_eq!(response.status, StatusCode::FOUND);
        assert_eq!(response.headers["location"], location.as_str());
    }
    let paths: Vec<String> = receiver.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["/redirect", "/redirect"],
        "the landing page was never asked"
    );
}

#[tokio::test]
async fn a_fetch_follows_redirects_only_to_targets_that_pass_the_same_checks() {
    let (receiver, other) = twin_receivers().await;
    let port = receiver.addr.port();
    let dns = no_names().await;
    let outbound = client(&["127.0.0.1/32"], &dns);
    let options = FetchOptions::default();

    // Relative and absolute redirects to an allowed target are followed.
    let (url, page) = outbound
        .fetch(&receiver.url("/redirect?/doc"), &options)
        .await
        .unwrap();
    assert_eq!(url.as_str(), receiver.url("/doc"));
    assert_eq!(&page.body[..], b"<p>hello</p>");
    let twice = receiver.url(&format!("/redirect?{}", receiver.url("/redirect?/doc")));
    assert_eq!(
        outbound.fetch(&twice, &options).await.unwrap().0.path(),
        "/doc"
    );

    // Each hop is checked again: other addresses, spellings, names and schemes are refused.
    for (location, code) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "address_not_allowed",
        ),
        (
            "http://[::ffff:a9fe:a9fe]/".to_owned(),
            "address_not_allowed",
        ),
        (
            format!("http://127.0.0.2:{port}/doc"),
            "address_not_allowed",
        ),
        (
            format!("http://2130706434:{port}/doc"),
            "address_not_allowed",
        ),
        (
            format!("http://localhost:{port}/doc"),
            "address_not_allowed",
        ),
        ("http://10.0.0.1/".to_owned(), "address_not_allowed"),
        ("file:///etc/passwd".to_owned(), "scheme_not_allowed"),
        ("http://user:pw@127.0.0.1/".to_owned(), "invalid_url"),
    ] {
        let err = outbound
            .fetch(&receiver.url(&format!("/redirect?{location}")), &options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{location}: {err}");
    }
    assert_eq!(other.hits(), 0, "the refused hop was never connected to");

    // A loop ends at the limit.
    let err = outbound
        .fetch(
            &receiver.url("/redirect?/redirect"),
            &FetchOptions {
                max_redirects: 3,
                ..FetchOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, OutboundError::TooManyRedirects { limit: 3 });
}

#[tokio::test]
async fn a_fetch_wants_a_success_of_an_accepted_type() {
    let receiver = Receiver::start(LOOPBACK).await;
    let dns = no_names().await;
    let outbound = client(&["127.0.0.1/32"], &dns);
    let html = FetchOptions {
        content_types: vec!["text/html".to_owned()],
        accept: Some("text/html".to_owned()),
        ..FetchOptions::default()
    };

    let (_, page) = outbound.fetch(&receiver.url("/doc"), &html).await.unwrap();
    assert_eq!(&page.body[..], b"<p>hello</p>");
    assert_eq!(receiver.seen()[0].headers["accept"], "text/html");

    let pdf = FetchOptions {
        content_types: vec!["application/pdf".to_owned()],
        ..FetchOptions::default()
    };
    assert_eq!(
        outbound
            .fetch(&receiver.url("/doc"), &pdf)
            .await
            .unwrap_err(),
        OutboundError::ContentTypeNotAllowed("text/html".to_owned())
    );
    assert_eq!(
        outbound
            .fetch(&receiver.url("/missing"), &html)
            .await
            .unwrap_err(),
        OutboundError::Status(404)
    );
}

#[tokio::test]
async fn a_receiver_that_does_not_answer_in_time_is_a_timeout() {
    let receiver = Receiver::start(LOOPBACK).await;
    let dns = no_names().await;
    let outbound = client_with(&["127.0.0.1/32"], &dns, |config| {
        config.timeout = Duration::from_millis(300);
    });

    for path in ["/slow", "/stall"] {
        let err = outbound
            .post(&receiver.url(path), HeaderMap::new(), "x")
            .await
            .unwrap_err();
        assert_eq!(err, OutboundError::Timeout, "post {path}");
        let err = outbound
            .fetch(&receiver.url(path), &FetchOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err, OutboundError::Timeout, "fetch {path}");
    }
}

#[tokio::test]
async fn responses_past_the_size_limit_are_refused_while_streaming() {
    let receiver = Receiver::start(LOOPBACK).await;
    let dns = no_names().await;
    let limit = 64 * 1024;
    let outbound = client_with(&["127.0.0.1/32"], &dns, |config| {
        config.max_response_bytes = limit;
    });

    // Exactly the limit is fine; one byte more is not, declared or streamed without a length.
    let exact = outbound
        .post(
            &receiver.url(&format!("/big?{limit}")),
            HeaderMap::new(),
            "x",
        )
        .await
        .unwrap();
    assert_eq!(exact.body.len() as u64, limit);
    for path in [format!("/big?{}", limit + 1), "/endless".to_owned()] {
        let err = outbound
            .post(&receiver.url(&path), HeaderMap::new(), "x")
            .await
            .unwrap_err();
        assert_eq!(err, OutboundError::TooLarge { limit }, "{path}");
    }

    // A fetch streams: chunks come until the limit, then the error.
    let options = FetchOptions {
        max_bytes: limit,
        ..FetchOptions::default()
    };
    let mut stream = outbound
        .open(&receiver.url("/endless"), &options)
        .await
        .unwrap();
    let mut received = 0u64;
    let err = loop {
        match stream.chunk().await {
            Ok(Some(chunk)) => received += chunk.len() as u64,
            Ok(None) => panic!("an endless body ended"),
            Err(err) => break err,
        }
    };
    assert_eq!(err, OutboundError::TooLarge { limit });
    assert!(received <= limit);
    assert_eq!(
        outbound
            .fetch(&receiver.url("/endless"), &options)
            .await
            .unwrap_err(),
        OutboundError::TooLarge { limit }
    );
}

#[tokio::test]
async fn a_cut_fetch_keeps_the_head_of_a_long_document_and_says_robots_txt_whom_it_is_for() {
    let receiver = Receiver::start(LOOPBACK).await;
    let dns = no_names().await;
    let outbound = client(&["127.0.0.1/32"], &dns);
    let options = FetchOptions {
        max_bytes: 1000,
        ..FetchOptions::default()
    };
    let (_, whole, cut) = outbound
        .fetch_cut(&receiver.url("/big?1000"), &options)
        .await
        .unwrap();
    assert_eq!((whole.body.len(), cut), (1000, false));
    for (path, landed) in [
        ("/big?1001", "/big"),
        ("/endless", "/endless"),
        ("/redirect?/endless", "/endless"),
    ] {
        let (url, head, cut) = outbound
            .fetch_cut(&receiver.url(path), &options)
            .await
            .unwrap();
        assert_eq!((head.body.len(), cut), (1000, true), "{path}");
        assert_eq!(url.path(), landed);
    }
    assert_eq!(
        outbound
            .fetch_cut(&receiver.url("/missing"), &options)
            .await
            .unwrap_err(),
        OutboundError::Status(404)
    );

    let agent = receiver.seen()[0].headers[http::header::USER_AGENT].clone();
    assert!(agent.to_str().unwrap().starts_with("Confide/"), "{agent:?}");
    assert_eq!(outbound.product_token(), "Confide");
    let other = client_with(&[], &dns, |config| {
        config.user_agent = "Acme-Bot_2/3 (+https://acme.example)".to_owned();
    });
    assert_eq!(other.product_token(), "Acme-Bot_");
}

#[tokio::test]
async fn unknown_names_and_closed_ports_are_told_apart() {
    let dns = no_names().await;
    let outbound = client(&["127.0.0.1/32"], &dns);

    let err = outbound
        .post("https://nowhere.confide.test/hook", HeaderMap::new(), "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "dns_failed", "{err}");

    // A port nobody listens on: bound, noted, released.
    let closed = std::net::TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let err = outbound
        .post(&format!("http://{closed}/hook"), HeaderMap::new(), "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "connect_failed", "{err}");
}

#[tokio::test]
async fn tls_certificates_are_checked_against_the_host_name_not_the_checked_address() {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Confide test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["hooks.confide.test".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let receiver = Receiver::start_tls(cert.pem(), key.serialize_pem()).await;
    let port = receiver.addr.port();
    let dns = NameServer::start(&[
        ("hooks.confide.test", vec![vec!["127.0.0.1"]]),
        ("other.confide.test", vec![vec!["127.0.0.1"]]),
    ])
    .await;
    let trusting = client_with(&["127.0.0.1/32"], &dns, |config| {
        config.extra_root_certificates_pem = Some(ca.pem().into_bytes());
    });

    let url = format!("https://hooks.confide.test:{port}/hook");
    let response = trusting.post(&url, HeaderMap::new(), "x").await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(receiver.hits(), 1);

    // Same address, but a name (or bare address) the certificate does not carry.
    for url in [
        format!("https://other.confide.test:{port}/hook"),
        format!("https://127.0.0.1:{port}/hook"),
    ] {
        let err = trusting
            .post(&url, HeaderMap::new(), "x")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "connect_failed", "{url}: {err}");
        assert!(err.to_string().contains("certificate"), "{url}: {err}");
    }
    // Without the internal CA, the certificate is not trusted at all.
    let err = client(&["127.0.0.1/32"], &dns)
        .post(&url, HeaderMap::new(), "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "connect_failed", "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(receiver.hits(), 1);
}

#[tokio::test]
async fn a_webhook_answer_past_the_limit_is_cut_and_its_status_kept() {
    let receiver = Receiver::start(LOOPBACK).await;
    let dns = no_names().await;
    let limit = 64 * 1024;
    let outbound = client_with(&["127.0.0.1/32"], &dns, |config| {
        config.max_response_bytes = limit;
    });
    let (exact, cut) = outbound
        .post_cutting_answer(
            &receiver.url(&format!("/big?{limit}")),
            HeaderMap::new(),
            "x",
        )
        .await
        .unwrap();
    assert_eq!((exact.body.len() as u64, cut), (limit, false));
    for path in [format!("/big?{}", limit + 1), "/endless".to_owned()] {
        let (answer, cut) = outbound
            .post_cutting_answer(&receiver.url(&path), HeaderMap::new(), "x")
            .await
            .unwrap();
        assert!(answer.status.is_success(), "{path}");
        assert_eq!((answer.body.len() as u64, cut), (limit, true), "{path}");
    }
}

#[tokio::test]
async fn a_raw_request_goes_only_to_a_checked_target_and_never_follows_a_redirect() {
    let receiver = Receiver::start(LOOPBACK).await;
    let dns = no_names().await;

    // Without the allowlist, loopback is refused before anything is sent.
    let refused = client(&[], &dns)
        .send(
            http::Method::PUT,
            &receiver.url("/bucket/key"),
            HeaderMap::new(),
            "x",
        )
        .await;
    refusal(refused);
    assert_eq!(receiver.hits(), 0);

    let outbound = client(&["127.0.0.1/32"], &dns);
    let mut headers = HeaderMap::new();
    headers.insert("x-amz-date", HeaderValue::from_static("20240101T000000Z"));
    let answer = outbound
        .send(
            http::Method::PUT,
            &receiver.url("/bucket/key"),
            headers,
            b"line\n".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let location = "http://169.254.169.254/latest/meta-data/";
    let redirected = outbound
        .send(
            http::Method::PUT,
            &receiver.url(&format!("/redirect?{location}")),
            HeaderMap::new(),
            "x",
        )
        .await
        .unwrap();
    assert_eq!(redirected.status, StatusCode::FOUND);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "the redirect was not followed");
    assert_eq!(seen[0].method, http::Method::PUT);
    assert_eq!(seen[0].path, "/bucket/key");
    assert_eq!(seen[0].headers["x-amz-date"], "20240101T000000Z");
    assert_eq!(&seen[0].body[..], b"line\n");

    // The addresses a target resolves to now, for rules that depend on where it is.
    let (_, addresses) = outbound.resolve_url(&receiver.url("/")).await.unwrap();
    assert_eq!(addresses, [LOOPBACK]);
}
