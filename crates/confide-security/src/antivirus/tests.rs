//! Replies, one by one: only `stream: OK` is clean.

use super::*;

fn verdict(reply: &str) -> Result<Verdict, ScanError> {
    parse_reply(reply.as_bytes())
}

#[test]
fn only_an_exact_ok_is_clean() {
    assert_eq!(verdict("stream: OK").unwrap(), Verdict::Clean);
    // A line end, as non-`z` commands send, changes nothing.
    assert_eq!(verdict("stream: OK\n").unwrap(), Verdict::Clean);
    for reply in [
        "OK",
        "stream:OK",
        "stream: OK then more",
        "stream: ok",
        "1: stream: OK",
        "PONG",
        "",
        "stream: ",
    ] {
        let error = verdict(reply).unwrap_err();
        assert!(
            matches!(error, ScanError::UnexpectedReply(_)),
            "{reply:?}: {error:?}"
        );
    }
}

#[test]
fn a_found_signature_is_infected_with_its_name() {
    assert_eq!(
        verdict("stream: Win.Test.EICAR_HDB-1 FOUND").unwrap(),
        Verdict::Infected {
            signature: "Win.Test.EICAR_HDB-1".to_owned()
        }
    );
    assert!(matches!(
        verdict("stream:  FOUND").unwrap_err(),
        ScanError::UnexpectedReply(_)
    ));
    assert!(matches!(
        verdict("stream: a\u{1b}[0m FOUND").unwrap_err(),
        ScanError::UnexpectedReply(_)
    ));
}

#[test]
fn errors_are_told_apart() {
    assert!(matches!(
        verdict("INSTREAM size limit exceeded. ERROR").unwrap_err(),
        ScanError::SizeLimitExceeded
    ));
    match verdict("stream: Can't allocate memory ERROR").unwrap_err() {
        ScanError::Scanner(message) => assert_eq!(message, "Can't allocate memory"),
        other => panic!("{other:?}"),
    }
    assert!(!verdict("UNKNOWN COMMAND").unwrap_err().is_unavailable());
}

#[test]
fn a_reply_cut_short_is_never_a_verdict() {
    // The start of "stream: OKAY.Sig FOUND" must not read as clean.
    let error = Reply::Cut(b"stream: OK".to_vec())
        .verdict(Stage::Reply)
        .unwrap_err();
    assert!(matches!(error, ScanError::UnexpectedReply(_)), "{error:?}");
    let error = Reply::Cut(Vec::new()).verdict(Stage::Reply).unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(
        Reply::Complete(b"stream: OK".to_vec())
            .verdict(Stage::Reply)
            .unwrap(),
        Verdict::Clean
    );
}

#[test]
fn a_verdict_before_the_end_of_the_stream_is_not_believed() {
    let error = Reply::Complete(b"stream: OK".to_vec()).before_the_end();
    assert!(matches!(error, ScanError::UnexpectedReply(_)), "{error:?}");
    let error = Reply::Complete(b"INSTREAM size limit exceeded. ERROR".to_vec()).before_the_end();
    assert!(matches!(error, ScanError::SizeLimitExceeded), "{error:?}");
}

#[test]
fn addresses_parse_from_configuration_text() {
    assert_eq!(
        "unix:/run/clamav/clamd.ctl"
            .parse::<ClamdAddress>()
            .unwrap(),
        ClamdAddress::Unix(PathBuf::from("/run/clamav/clamd.ctl"))
    );
    assert_eq!(
        "unix:///run/clamd.sock".parse::<ClamdAddress>().unwrap(),
        ClamdAddress::Unix(PathBuf::from("/run/clamd.sock"))
    );
    assert_eq!(
        "/run/clamd.sock".parse::<ClamdAddress>().unwrap(),
        ClamdAddress::Unix(PathBuf::from("/run/clamd.sock"))
    );
    let tcp = ClamdAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 3310)));
    assert_eq!("tcp://127.0.0.1:3310".parse::<ClamdAddress>().unwrap(), tcp);
    assert_eq!("127.0.0.1:3310".parse::<ClamdAddress>().unwrap(), tcp);
    assert_eq!(tcp.to_string(), "tcp://127.0.0.1:3310");
    assert!("clamd.example:3310".parse::<ClamdAddress>().is_err());
    assert!("".parse::<ClamdAddress>().is_err());
}

#[test]
fn error_codes_are_stable() {
    let codes = [
        timed_out(Stage::Connect).code(),
        ScanError::SizeLimitExceeded.code(),
        ScanError::Scanner(String::new()).code(),
        ScanError::UnexpectedReply(String::new()).code(),
        ScanError::Body(io::Error::other("x")).code(),
    ];
    assert_eq!(
        codes,
        [
            "scanner_unavailable",
            "scan_size_limit",
            "scan_error",
            "scan_unexpected_reply",
            "scan_body_unreadable"
        ]
    );
    assert!(timed_out(Stage::Reply).is_unavailable());
    assert!(!ScanError::SizeLimitExceeded.is_unavailable());
}
