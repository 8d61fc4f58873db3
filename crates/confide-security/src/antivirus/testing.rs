//! Test support (feature `testing`): a real `clamd` of a test's own, with a database built by
//! `sigtool` from the EICAR test string (the whole file by its hash, and the string anywhere
//! inside a file), listening on a unix socket in a temporary directory and on a free loopback
//! port.
//!
//! Without `clamd` or `sigtool` a test is skipped with a note, so the suite runs on a machine
//! without ClamAV; with `CONFIDE_REQUIRE_CLAMD=1` (as CI sets it, having installed ClamAV) it
//! fails instead, so a scanner that did not come up cannot pass for a green run.

use std::fmt::Display;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{ClamdAddress, ClamdClient, ClamdConfig};

/// Set to `1` to make tests that need clamd fail, rather than skip, when it is not there.
pub const REQUIRE_CLAMD_VAR: &str = "CONFIDE_REQUIRE_CLAMD";

/// The EICAR anti-virus test file: harmless, and detected by every scanner that knows it.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The name of the test database's one signature (clamd reports it with `.UNOFFICIAL`).
pub const EICAR_SIGNATURE: &str = "Confide.Test.EICAR";

/// Whether tests that need clamd must have it (`CONFIDE_REQUIRE_CLAMD=1`).
pub fn clamd_required() -> bool {
    std::env::var(REQUIRE_CLAMD_VAR).is_ok_and(|value| value == "1")
}

/// What `test` does when it cannot have clamd (`why`): returns after a note, and the caller
/// skips; panics when clamd is required.
#[track_caller]
pub fn skip_without_clamd(test: &str, why: impl Display) {
    assert!(
        !clamd_required(),
        "{test} needs clamd ({REQUIRE_CLAMD_VAR}=1), but {why}"
    );
    eprintln!("note: skipping {test}: {why}");
}

/// A `clamd` of a test's own; stopped (and its directory removed) when dropped.
pub struct TempClamd {
    dir: PathBuf,
    socket: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TempClamd {
    /// Starts one for `test` that accepts streams up to `stream_max_bytes`; `None` after
    /// [`skip_without_clamd`] decided, when ClamAV is missing or clamd does not come up.
    #[track_caller]
    pub fn start(test: &str, stream_max_bytes: u64) -> Option<TempClamd> {
        match Self::try_start(stream_max_bytes) {
            Ok(clamd) => Some(clamd),
            Err(why) => {
                skip_without_clamd(test, why);
                None
            }
        }
    }

    fn try_start(stream_max_bytes: u64) -> Result<TempClamd, String> {
        find_program("clamd").ok_or("clamd is not installed")?;
        let sigtool = find_program("sigtool").ok_or("sigtool is not installed")?;
        let dir = unique_dir()?;
        let mut clamd = TempClamd {
            socket: dir.join("clamd.sock"),
            dir,
            port: free_port()?,
            child: None,
        };
        let database = clamd.dir.join("db");
        std::fs::create_dir(&database).map_err(|e| format!("creating {database:?}: {e}"))?;

        // `sigtool --md5 FILE` prints `md5:size:FILE`, and FILE names the signature.
        std::fs::write(clamd.dir.join(EICAR_SIGNATURE), EICAR).map_err(|e| e.to_string())?;
        let hashed = Command::new(&sigtool)
            .args(["--md5", EICAR_SIGNATURE])
            .current_dir(&clamd.dir)
            .output()
            .map_err(|e| format!("running sigtool: {e}"))?;
        if !hashed.status.success() || hashed.stdout.is_empty() {
            return Err(format!(
                "sigtool --md5 failed: {}",
                String::from_utf8_lossy(&hashed.stderr)
            ));
        }
        std::fs::write(database.join("eicar.hdb"), &hashed.stdout).map_err(|e| e.to_string())?;
        // The same string anywhere inside a file (a body signature, `Name:Target:Offset:Hex`):
        // a payload carried by an otherwise valid picture, past what its format reads.
        let hex = Command::new(&sigtool)
            .arg("--hex-dump")
            .stdin(std::fs::File::open(clamd.dir.join(EICAR_SIGNATURE)).map_err(|e| e.to_string())?)
            .output()
            .map_err(|e| format!("running sigtool: {e}"))?;
        let hex = String::from_utf8_lossy(&hex.stdout).trim().to_owned();
        if hex.is_empty() {
            return Err("sigtool --hex-dump printed nothing".to_owned());
        }
        std::fs::write(
            database.join("eicar.ndb"),
            format!("{EICAR_SIGNATURE}:0:*:{hex}\n"),
        )
        .map_err(|e| e.to_string())?;

        let config = clamd.dir.join("clamd.conf");
        let text = format!(
            "DatabaseDirectory {database}\n\
             LocalSocket {socket}\n\
             TCPSocket {port}\n\
             TCPAddr 127.0.0.1\n\
             Foreground yes\n\
             StreamMaxLength {stream_max_bytes}\n\
             LogFile {log}\n\
             TemporaryDirectory {dir}\n\
             MaxThreads 4\n",
            database = database.display(),
            socket = clamd.socket.display(),
            port = clamd.port,
            log = clamd.dir.join("clamd.log").display(),
            dir = clamd.dir.display(),
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;

        clamd.spawn()?;
        Ok(clamd)
    }

    /// Runs clamd on this instance's configuration and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        let clamd_program = find_program("clamd").ok_or("clamd is not installed")?;
        let child = Command::new(clamd_program)
            .arg("-c")
            .arg(self.dir.join("clamd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting clamd: {e}"))?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    /// Starts clamd again after [`TempClamd::stop`], on the same socket and port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let _ = std::fs::remove_file(&self.socket);
        self.spawn()
    }

    /// Waits until clamd answers PING on its socket (it does once its database is loaded).
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("clamd exited ({status}): {}", self.log()));
            }
            if ping(&self.socket) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("clamd did not answer PING: {}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("clamd.log")).unwrap_or_default()
    }

    /// Its unix socket.
    pub fn unix(&self) -> ClamdAddress {
        ClamdAddress::Unix(self.socket.clone())
    }

    /// Its loopback TCP address.
    pub fn tcp(&self) -> ClamdAddress {
        ClamdAddress::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)))
    }

    /// A client of it at `address` (one of [`TempClamd::unix`] and [`TempClamd::tcp`]).
    pub fn client(&self, address: ClamdAddress) -> ClamdClient {
        ClamdClient::new(ClamdConfig::new(address))
    }

    /// Stops clamd (at once, as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TempClamd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = [0u8; 5];
    stream.write_all(b"zPING\0").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"PONG\0"
}

/// `name` on the PATH, or in the sbin directories a non-root PATH may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// A new directory under the temporary directory; short, as a unix socket path must be.
fn unique_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "confide-clamd-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
    Ok(dir)
}
