//! The clamd client against a real clamd of each test's own (`antivirus::testing::TempClamd`),
//! over its unix socket and over loopback TCP. Skipped, with a note, when ClamAV is not
//! installed (failed instead with `CONFIDE_REQUIRE_CLAMD=1`, as in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use confide_security::antivirus::testing::{EICAR, EICAR_SIGNATURE, TempClamd};
use confide_security::antivirus::{ClamdClient, ClamdConfig, ScanError, Verdict};

/// clamd's `StreamMaxLength` in these tests.
const STREAM_MAX: u64 = 1024 * 1024;

fn clamd(test: &str) -> Option<TempClamd> {
    TempClamd::start(test, STREAM_MAX)
}

fn infected_by_eicar(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Infected { signature } if signature.starts_with(EICAR_SIGNATURE))
}

#[tokio::test]
async fn the_eicar_test_file_is_found_with_its_signature_over_unix_and_tcp() {
    let Some(clamd) = clamd("eicar_found") else {
        return;
    };
    for address in [clamd.unix(), clamd.tcp()] {
        let verdict = clamd
            .client(address.clone())
            .scan_bytes(EICAR)
            .await
            .unwrap();
        assert!(infected_by_eicar(&verdict), "{address}: {verdict:?}");
    }
    // The signature name as clamd reports a database that is not ClamAV's own.
    let verdict = clamd.client(clamd.unix()).scan_bytes(EICAR).await.unwrap();
    assert_eq!(
        verdict,
        Verdict::Infected {
            signature: format!("{EICAR_SIGNATURE}.UNOFFICIAL")
        }
    );
}

#[tokio::test]
async fn a_clean_file_is_clean_over_unix_and_tcp() {
    let Some(clamd) = clamd("clean_file") else {
        return;
    };
    // Several chunks, and a near miss: EICAR with one byte changed.
    let text = "Our opening hours are 9 to 5, Monday to Friday.\n".repeat(5_000);
    let mut near_miss = EICAR.to_vec();
    near_miss[0] = b'Y';
    for address in [clamd.unix(), clamd.tcp()] {
        let client = clamd.client(address.clone());
        assert_eq!(
            client.scan_bytes(text.as_bytes()).await.unwrap(),
            Verdict::Clean,
            "{address}"
        );
        assert_eq!(
            client.scan_bytes(&near_miss).await.unwrap(),
            Verdict::Clean,
            "{address}"
        );
        assert_eq!(client.scan_bytes(b"").await.unwrap(), Verdict::Clean);
        client.ping().await.unwrap();
    }
}

#[tokio::test]
async fn the_body_is_streamed_from_a_reader_in_small_chunks() {
    let Some(clamd) = clamd("streamed_chunks") else {
        return;
    };
    // EICAR split over 7-byte chunks is still the whole file to clamd.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(EICAR).unwrap();
    let body = tokio::fs::File::open(file.path()).await.unwrap();
    let mut config = ClamdConfig::new(clamd.unix());
    config.chunk_bytes = 7;
    let verdict = ClamdClient::new(config).scan(body).await.unwrap();
    assert!(infected_by_eicar(&verdict), "{verdict:?}");
}

#[tokio::test]
async fn a_body_over_the_scanners_size_limit_is_a_failed_scan_not_a_clean_one() {
    let Some(clamd) = clamd("over_size_limit") else {
        return;
    };
    let body = vec![b'a'; 3 * STREAM_MAX as usize];
    for address in [clamd.unix(), clamd.tcp()] {
        let error = clamd
            .client(address.clone())
            .scan_bytes(&body)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ScanError::SizeLimitExceeded),
            "{address}: {error:?}"
        );
        assert!(!error.is_unavailable());
    }
    // Just under the limit is scanned.
    let under = vec![b'a'; STREAM_MAX as usize - 1];
    let verdict = clamd.client(clamd.tcp()).scan_bytes(&under).await.unwrap();
    assert_eq!(verdict, Verdict::Clean);
}

#[tokio::test]
async fn a_stopped_scanner_is_unavailable_not_clean() {
    let Some(mut clamd) = clamd("stopped_scanner") else {
        return;
    };
    let unix = clamd.client(clamd.unix());
    let tcp = clamd.client(clamd.tcp());
    assert_eq!(unix.scan_bytes(b"hello").await.unwrap(), Verdict::Clean);
    clamd.stop();
    for client in [unix, tcp] {
        let address = client.config().address.clone();
        let error = client.scan_bytes(EICAR).await.unwrap_err();
        assert!(error.is_unavailable(), "{address}: {error:?}");
        assert_eq!(error.code(), "scanner_unavailable");
        let error = client.ping().await.unwrap_err();
        assert!(error.is_unavailable(), "{address}: {error:?}");
    }
}
