//! Test support (feature `testing`) for the suites that need a Redis: what a test does when
//! Redis is not there, decided in one place, and a `redis-server` of a test's own.
//!
//! A test without Redis is skipped with a note, so the suite runs on a machine without one;
//! with `CONFIDE_REQUIRE_REDIS=1` (as CI sets it, having started Redis) it fails instead, so a
//! Redis that did not come up cannot pass for a green run.

use std::fmt::Display;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to make tests that need Redis fail, rather than skip, when it is not there.
pub const REQUIRE_REDIS_VAR: &str = "CONFIDE_REQUIRE_REDIS";

/// Whether tests that need Redis must have it (`CONFIDE_REQUIRE_REDIS=1`).
pub fn redis_required() -> bool {
    std::env::var(REQUIRE_REDIS_VAR).is_ok_and(|value| value == "1")
}

/// What `test` does when it cannot have Redis (`why`): returns after a note, and the caller
/// skips; panics when Redis is required.
#[track_caller]
pub fn skip_without_redis(test: &str, why: impl Display) {
    assert!(
        !redis_required(),
        "{test} needs Redis ({REQUIRE_REDIS_VAR}=1), but {why}"
    );
    eprintln!("note: skipping {test}: {why}");
}

/// A `redis-server` of a test's own on a free port, so the test can stop and restart it.
pub struct TempRedis {
    port: u16,
    child: Option<Child>,
}

impl TempRedis {
    /// Starts one for `test`; when `redis-server` cannot be started, `None` after
    /// [`skip_without_redis`] decided.
    #[track_caller]
    pub fn start(test: &str) -> Option<TempRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port());
        if let Ok(port) = port {
            let mut redis = TempRedis { port, child: None };
            if redis.spawn() {
                return Some(redis);
            }
        }
        skip_without_redis(test, "redis-server could not be started");
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, after [`TempRedis::stop`]) and waits until it accepts
    /// connections.
    pub fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
