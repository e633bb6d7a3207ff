//! The harness for end-to-end tests: the real `imager` and `ota-server` binaries, a fresh
//! server on loopback, images fused from the firmware fixtures.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

/// A workspace binary, from the folder this test runs from (`target/PROFILE/deps/..`).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build_binaries) {
        Ok(dir) => dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)),
        Err(err) => panic!("{err}"),
    }
}

/// The folder with the workspace binaries (`target/PROFILE/`), building them only if one is
/// missing or older than a source file. `cargo test --workspace` builds `imager`, `ota-server`
/// and `fleet-sim` itself (their packages have tests), so normally nothing is built here;
/// building would use other features than the test build and make the next one rebuild them.
pub fn build_binaries() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let profile_dir = exe.parent().and_then(Path::parent).ok_or("test binary has no folder")?;
    let target_dir = profile_dir.parent().ok_or("test binary is not in a target folder")?;
    let fresh = ["imager", "ota-server", "fleet-sim"].iter().all(|name| {
        let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let Ok(built) = std::fs::metadata(&bin).and_then(|m| m.modified()) else { return false };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        [
            "firmware/src",
            "imager/src",
            "ota-proto/src",
            "ota-server/src",
            "ota-server/migrations",
            "boards/src",
            "boards/defs",
            "tests/src",
        ]
        .iter()
        .all(|dir| newest(&root.join(dir)).is_none_or(|t| t <= built))
    });
    if fresh {
        return Ok(profile_dir.to_path_buf());
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => return Err(format!("{} names no profile", profile_dir.display())),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "-p", "imager", "-p", "ota-server", "-p", "tests", "--bins"])
        .args(["--profile", profile, "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build of imager, ota-server and fleet-sim failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(profile_dir.to_path_buf())
}

/// The newest modification time of a file under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut latest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() { newest(&path) } else { entry.metadata().ok()?.modified().ok() };
        latest = latest.max(t);
    }
    latest
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// `name` in the scratch folder `dir`.
pub fn path(dir: &TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

pub use testkit::Backend;

/// Runs the async test function `$name(backend: Backend)` on both stores, as the tests
/// `$name::sqlite` and `$name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    };
}

/// A running `ota-server`, stopped when dropped: one process, or several replicas of one
/// server (on PostgreSQL and an S3 bucket: [`Server::cluster`]).
pub struct Server {
    /// Its processes.
    pub replicas: Vec<Replica>,
    /// Its URL: every replica's, separated by commas (as imager and fleet-sim take them).
    pub url: String,
    pub token: String,
    /// Its `--database` URL, where it is not the data folder's SQLite file.
    pub database: Option<String>,
    /// More `serve` arguments and environment (the bucket, say), for every replica.
    serve_args: Vec<String>,
    serve_env: Vec<(String, String)>,
}

/// One `ota-server serve` process.
pub struct Replica {
    child: Child,
    /// Its URL.
    pub url: String,
    /// Its data folder.
    pub data: String,
    /// Where its log goes (appended to across restarts).
    pub log: String,
}

impl Server {
    /// `ota-server init` in `data` with the build key and prod's release key, then `serve` on
    /// a free loopback port.
    pub fn start(dir: &TempDir, build_pub: &str, prod_pub: &str) -> Server {
        Server::start_on(dir, build_pub, prod_pub, Backend::Sqlite)
    }

    /// [`Server::start`] on `backend`.
    pub fn start_on(dir: &TempDir, build_pub: &str, prod_pub: &str, backend: Backend) -> Server {
        let database = backend.database();
        Server::start_replicas(dir, build_pub, prod_pub, database, 1, Vec::new(), Vec::new())
    }

    /// `n` replicas of one server on a fresh PostgreSQL database and a fresh Garage bucket,
    /// each with a data folder of its own.
    pub fn cluster(dir: &TempDir, build_pub: &str, prod_pub: &str, n: usize) -> Server {
        let (garage, pg) = (testkit::garage::Garage::shared(), testkit::pg::Postgres::shared());
        Server::cluster_on(dir, build_pub, prod_pub, n, garage, pg)
    }

    /// [`Server::cluster`] on a Garage node and a PostgreSQL cluster of the test's own (to
    /// stop and start them).
    pub fn cluster_on(
        dir: &TempDir,
        build_pub: &str,
        prod_pub: &str,
        n: usize,
        garage: &testkit::garage::Garage,
        pg: &testkit::pg::Postgres,
    ) -> Server {
        let bucket = garage.create_bucket();
        let args = vec![
            "--blobs".to_owned(),
            format!("s3://{bucket}"),
            "--s3-endpoint".to_owned(),
            garage.endpoint(),
        ];
        let env = garage.aws_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Server::start_replicas(dir, build_pub, prod_pub, Some(pg.create_database()), n, args, env)
    }

    fn start_replicas(
        dir: &TempDir,
        build_pub: &str,
        prod_pub: &str,
        database: Option<String>,
        n: usize,
        serve_args: Vec<String>,
        serve_env: Vec<(String, String)>,
    ) -> Server {
        let server = bin("ota-server");
        let data = path(dir, "data");
        let init = Command::new(&server)
            .args(["init", "--data", &data, "--build-key", build_pub, "--prod-key", prod_pub])
            .args(database.iter().flat_map(|url| ["--database", url.as_str()]))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&init.stdout);
        assert!(
            init.status.success(),
            "ota-server init failed: {stdout}{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let token = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("admin token:"))
            .unwrap_or_else(|| panic!("no `admin token:` line from ota-server init: {stdout}"))
            .trim()
            .to_owned();
        let mut server = Server {
            replicas: Vec::new(),
            url: String::new(),
            token,
            database,
            serve_args,
            serve_env,
        };
        for i in 0..n {
            // The first replica's data folder is the one init made; the others are empty.
            let (data, log) = if i == 0 {
                (data.clone(), path(dir, "server.log"))
            } else {
                let own = path(dir, &format!("data-{i}"));
                std::fs::create_dir_all(&own).unwrap();
                (own, path(dir, &format!("server-{i}.log")))
            };
            let (child, url) = server.serve(&data, "127.0.0.1:0", &log);
            server.replicas.push(Replica { child, url, data, log });
        }
        server.url = server.replicas.iter().map(|r| r.url.as_str()).collect::<Vec<_>>().join(",");
        server
    }

    /// A new build key and prod release key in `dir` (`build.pem`, `prod.pem`, with their
    /// public halves), and a server started with them; returns it and the private keys' paths.
    pub fn with_new_keys(dir: &TempDir) -> (Server, Keys) {
        Server::with_new_keys_on(dir, Backend::Sqlite)
    }

    /// [`Server::with_new_keys`] on `backend`.
    pub fn with_new_keys_on(dir: &TempDir, backend: Backend) -> (Server, Keys) {
        let (build, build_pub) = keygen(dir, "build");
        let (prod, prod_pub) = keygen(dir, "prod");
        (Server::start_on(dir, &build_pub, &prod_pub, backend), Keys { build, prod })
    }

    /// Its (first) data folder.
    pub fn data(&self) -> &str {
        &self.replicas[0].data
    }

    /// Kills every replica with SIGKILL, as a crash or `kill -9` would: nothing gets to finish.
    pub fn kill(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill_replica(i);
        }
    }

    /// Kills replica `i` with SIGKILL.
    pub fn kill_replica(&mut self, i: usize) {
        let child = &mut self.replicas[i].child;
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts every replica again, on the same data folders and addresses (after a kill).
    pub fn restart(&mut self) {
        for i in 0..self.replicas.len() {
            self.restart_replica(i);
        }
    }

    /// Starts replica `i` again, on its data folder and address.
    pub fn restart_replica(&mut self, i: usize) {
        let r = &self.replicas[i];
        let address = r.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let (data, log, old_url) = (r.data.clone(), r.log.clone(), r.url.clone());
        let (child, url) = self.serve(&data, &address, &log);
        assert_eq!(url, old_url, "the restarted server listens elsewhere");
        self.replicas[i].child = child;
    }

    /// `ota-server serve` on `data`, listening on `listen`, its log appended to `log`; returns
    /// once it says where it listens, with that URL.
    fn serve(&self, data: &str, listen: &str, log: &str) -> (Child, String) {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut child = Command::new(bin("ota-server"))
            .args(["serve", "--listen", listen, "--data", data])
            .args(self.database.iter().flat_map(|url| ["--database", url.as_str()]))
            .args(&self.serve_args)
            .envs(self.serve_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => (child, url),
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("ota-server did not print `listening on URL` within 60 s; its log:\n{log}");
            }
        }
    }
}

/// Options for a fleet of `devices` simulated micro:bits of `env` against `server`, named
/// `prefix-N`, with power cut during a share `cuts` of their updates.
pub fn fleet_options(
    server: &Server,
    env: &str,
    devices: usize,
    prefix: &str,
    cuts: f64,
) -> tests::fleet::Options {
    tests::fleet::Options {
        server: server.url.clone(),
        token: server.token.clone(),
        devices,
        board: "microbit".parse().unwrap(),
        environment: env.parse().unwrap(),
        prefix: prefix.into(),
        behaviour: tests::fleet::device::Behaviour {
            power_cut_ratio: cuts,
            ..tests::fleet::device::Behaviour::default()
        },
        checkin_interval: Duration::from_millis(20),
        max_idle_rounds: 50,
        concurrency: 64,
        seed: 7,
        verbose: false,
        outage_limit: Duration::from_secs(60),
    }
}

/// The private keys [`Server::with_new_keys`] made (PEM files).
pub struct Keys {
    /// Signs images.
    pub build: String,
    /// Signs prod's releases.
    pub prod: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The typed API client with the server's admin token, for what no imager command does.
pub fn admin(server: &Server) -> ota_proto::client::Blocking {
    let client = ota_proto::client::Client::new(&server.url, &server.token).unwrap();
    ota_proto::client::Blocking::new(client).unwrap()
}

/// Runs `imager` with the server (if any) given through the environment, as CI would.
pub fn imager(server: Option<&Server>, args: &[&str]) -> Output {
    let mut command = Command::new(bin("imager"));
    command.args(args);
    for var in ["IMAGER_SERVER", "IMAGER_TOKEN", "IMAGER_BOARDS", "http_proxy", "HTTP_PROXY"] {
        command.env_remove(var);
    }
    command.env_remove("ALL_PROXY").env_remove("all_proxy");
    if let Some(server) = server {
        command.env("IMAGER_SERVER", &server.url).env("IMAGER_TOKEN", &server.token);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{args:?}: {stderr}"
    );
    out
}

pub fn ok(server: Option<&Server>, args: &[&str]) -> String {
    let out = imager(server, args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn json(server: &Server, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = ok(Some(server), &args);
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{args:?}: {err}: {text}"))
}

/// Runs a command that must fail with exit code 1 and one `error: ...` line; returns it.
pub fn fails(server: Option<&Server>, args: &[&str]) -> String {
    let out = imager(server, args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.lines().count() == 1, "{args:?}: {stderr:?}");
    stderr
}

pub fn keygen(dir: &TempDir, name: &str) -> (String, String) {
    ok(None, &["keygen", "--out", &path(dir, name)]);
    (path(dir, &format!("{name}.pem")), path(dir, &format!("{name}.pub.pem")))
}

/// Fuses the microbit fixtures as `version`, signed with `key`; returns the file and its id.
pub fn fuse(dir: &TempDir, key: &str, version: &str) -> (String, String) {
    fuse_with(dir, key, version, 0)
}

/// Fuses the microbit fixtures as `version` with `counter` as its security counter, plus a
/// 3 KiB data part whose bytes differ per version (so versions differ in more than their
/// header: a swap that mixed up pages would not verify).
pub fn fuse_with(dir: &TempDir, key: &str, version: &str, counter: u32) -> (String, String) {
    use sha2::{Digest, Sha256};
    let data = path(dir, &format!("data-{version}.bin"));
    let mut bytes = Vec::new();
    let mut block: [u8; 32] = Sha256::digest(version.as_bytes()).into();
    while bytes.len() < 3 * 1024 {
        bytes.extend_from_slice(&block);
        block = Sha256::digest(block).into();
    }
    std::fs::write(&data, &bytes).unwrap();
    let (os, app) = (fixture("microbit/os.elf"), fixture("microbit/app.elf"));
    let counter = counter.to_string();
    let data_arg = format!("version={data}@0x20000");
    fuse_files(dir, key, &os, &app, version, &["--data", &data_arg, "--security-counter", &counter])
}

/// Fuses `os` and `app` (ELF files) for the micro:bit as `version`, signed with `key`, with
/// `extra` fuse arguments; returns the file and its image id.
pub fn fuse_files(
    dir: &TempDir,
    key: &str,
    os: &Path,
    app: &Path,
    version: &str,
    extra: &[&str],
) -> (String, String) {
    let app = app.to_str().unwrap();
    fuse_os(dir, key, os, version, &[&["--app", app], extra].concat())
}

/// Fuses `os` (an ELF file, alone unless `extra` adds an app) for the micro:bit as `version`,
/// signed with `key`, with `extra` fuse arguments; returns the file and its image id.
pub fn fuse_os(
    dir: &TempDir,
    key: &str,
    os: &Path,
    version: &str,
    extra: &[&str],
) -> (String, String) {
    let out = path(dir, &format!("microbit-{version}.fwi"));
    let os = os.to_str().unwrap();
    let mut args = vec!["fuse", "--board", "microbit", "--os", os, "--version", version];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--key", key, "--out", &out]);
    ok(None, &args);
    let summary: Value = serde_json::from_str(&ok(None, &["inspect", &out, "--json"])).unwrap();
    (out, summary["id"].as_str().unwrap().to_owned())
}

/// The bytes a programming file (Intel HEX or ELF) puts at `base..base + len`, as imager's own
/// reader sees them, other bytes `erased`.
pub fn read_back(file: &str, base: u32, erased: u8, len: usize) -> Vec<u8> {
    let read = imager::input::Input::read(file, None).unwrap();
    let mut back = vec![erased; len];
    for s in &read.segments {
        let at = (s.address - base) as usize;
        back[at..at + s.bytes.len()].copy_from_slice(&s.bytes);
    }
    back
}

/// A programming file (`format`: `ihex` or `elf32-littlearm`) as GNU objcopy (Debian's
/// binutils-arm-none-eabi) turns it into a binary: from its lowest address, gaps `erased`.
pub fn objcopy_binary(file: &str, format: &str, erased: u8) -> Vec<u8> {
    let out = format!("{file}.objcopy.bin");
    let status = Command::new("arm-none-eabi-objcopy")
        .args(["-I", format, "-O", "binary", "--gap-fill", &format!("{erased:#x}"), file, &out])
        .status()
        .expect("arm-none-eabi-objcopy is needed (Debian: binutils-arm-none-eabi)");
    assert!(status.success(), "objcopy of {file}");
    std::fs::read(&out).unwrap()
}

/// An HTTP proxy in front of `server` that passes everything on, one request per connection,
/// but inverts bytes from `at` on of every file downloaded from under `path` (the device API's
/// `/api/v1/device/images/` or `/api/v1/device/patches/`): a device (or gateway) using it gets
/// a damaged image or patch. Returns its URL.
pub fn corrupting_proxy(server: &str, path: &'static str, at: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = server.trim_start_matches("http://").trim_end_matches('/').to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || relay(client, &upstream, path, at));
        }
    });
    url
}

fn relay(
    mut client: std::net::TcpStream,
    upstream: &str,
    path: &str,
    at: usize,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
    }
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let mut server = std::net::TcpStream::connect(upstream)?;
    server.write_all(head.as_bytes())?;
    server.write_all(b"Connection: close\r\n\r\n")?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    if head.strip_prefix("GET ").is_some_and(|rest| rest.starts_with(path)) {
        corrupt(&mut answer, at);
    }
    client.write_all(&answer)
}

/// Inverts `CORRUPTED` bytes of the file from byte `at` in an HTTP answer carrying the
/// whole file (200) or a part of it (206, after a resume), so that every download is damaged
/// the same way. A span rather than one bit: one flipped bit in the compressed stream can
/// land in a back-reference into a run of equal bytes and decode to the same output, which
/// depends on the build's exact layout.
fn corrupt(answer: &mut [u8], at: usize) {
    const CORRUPTED: usize = 64;
    let Some(start) = answer.windows(4).position(|w| w == b"\r\n\r\n").map(|end| end + 4) else {
        return;
    };
    let head = String::from_utf8_lossy(&answer[..start]).to_ascii_lowercase();
    let first = if head.starts_with("http/1.1 200") {
        0
    } else if head.starts_with("http/1.1 206") {
        // content-range: bytes FIRST-LAST/LEN
        match head
            .lines()
            .find_map(|l| l.strip_prefix("content-range: bytes "))
            .and_then(|r| r.split('-').next()?.trim().parse::<usize>().ok())
        {
            Some(first) => first,
            None => return,
        }
    } else {
        return;
    };
    for offset in at.max(first)..at + CORRUPTED {
        if let Some(byte) = answer.get_mut(start + offset - first) {
            *byte ^= 0xff;
        }
    }
}
