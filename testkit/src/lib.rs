//! Real services for tests and benchmarks, started by the tests themselves on loopback and
//! stopped when the test process ends (even when it is killed: each service has a watchdog
//! that stops it once its test process is gone).
//!
//! - [`pg`]: a throwaway PostgreSQL cluster (Debian's `postgresql` package).
//! - [`garage`]: a throwaway Garage node, an S3-compatible object store (crates.io's `garage`,
//!   installed into `target/tools` by scripts/test.sh).

pub mod garage;
pub mod pg;

/// Which store a test's ota-server runs on: every test about the server's behaviour runs on
/// both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in the data folder (the embedded default).
    Sqlite,
    /// A fresh database on the test process's PostgreSQL cluster.
    Postgres,
}

impl Backend {
    /// The `--database` URL for a new server on this backend (`None`: the data folder's
    /// SQLite file).
    pub fn database(self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(pg::Postgres::shared().create_database()),
        }
    }
}

use std::path::{Path, PathBuf};
use std::process::Command;

/// A TCP port on loopback that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on loopback: {e}"))
}

/// The program `name`: on `PATH`, else in one of `also` (the newest first).
pub fn find_program(name: &str, also: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut extra: Vec<PathBuf> = Vec::new();
    for pattern in also {
        // A trailing `*/bin` style pattern: every subfolder of the parent, newest version last.
        if let Some((parent, rest)) = pattern.split_once("/*/") {
            if let Ok(entries) = std::fs::read_dir(parent) {
                let mut dirs: Vec<PathBuf> =
                    entries.flatten().map(|e| e.path().join(rest)).collect();
                dirs.sort();
                extra.extend(dirs.into_iter().rev().map(|d| d.join(name)));
            }
        } else {
            extra.push(Path::new(pattern).join(name));
        }
    }
    on_path.into_iter().chain(extra).find(|p| p.is_file())
}

/// Runs the shell `script` in the background, detached from this process's output: a
/// watchdog that outlives the test process to stop what it started.
fn watchdog(script: &str) {
    let _ = Command::new("sh")
        .args(["-c", script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Whether this process runs as root (services that refuse root are then run as `nobody`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `text` as one word for `sh -c` scripts (the watchdogs).
pub(crate) fn shell_quote(text: &str) -> String {
    if text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=: ".contains(&b))
        && !text.contains(' ')
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
