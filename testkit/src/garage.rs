//! A throwaway Garage node (an S3-compatible object store, the `garage` crate from crates.io):
//! a generated `garage.toml` in a temporary folder, `garage server` on free loopback ports, one
//! node holding every copy (`replication_factor = 1`), one access key, one bucket per test.
//!
//! The node configures itself at start (`--single-node`: it assigns itself a layout in zone
//! `dc1` and applies it; `--default-access-key`: it imports the access key made here), both
//! idempotent, so [`Garage::start_again`] after [`Garage::stop`] or [`Garage::kill`] comes back
//! on the same data with the same key. Buckets are made with the `garage` command line, which
//! speaks to the running node over its RPC port, the way an operator would.
//!
//! What Garage 2.5 does not do, measured here: it ignores `If-None-Match: *` on PUT, so
//! `object_store`'s `PutMode::Create` overwrites instead of failing (do not build a "once only"
//! on it); it answers an expired presigned URL with 400 where AWS answers 403; on SIGTERM it
//! waits up to 10 s for clients' idle keep-alive connections before it exits.
//!
//! Durability is Garage's default (`metadata_fsync` and `data_fsync` off): tests kill the
//! *process*, not the machine, and a killed process loses nothing the kernel has.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The region Garage answers for; clients must sign their requests for it.
const REGION: &str = "garage";

/// How long a start may take before the harness gives up (a cold start takes well under a
/// second; the margin is for a 2-core machine busy compiling).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`Garage::stop`] waits for a clean exit before it kills the process.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const HINT: &str = "Garage (the `garage` program) is needed: scripts/test.sh installs it, or run \
                    `cargo install --locked --root target/tools garage --version 2.5.0 \
                    --no-default-features --features bundled-libs,lmdb` in the workspace";

/// A running Garage node.
#[derive(Debug)]
pub struct Garage {
    dir: TempDir,
    bin: PathBuf,
    s3_port: u16,
    admin_port: u16,
    access_key_id: String,
    secret_access_key: String,
    process: Mutex<Option<Child>>,
    buckets: AtomicU32,
}

impl Garage {
    /// The node shared by every test of this process (started on first use). A test that stops
    /// or kills the node starts its own with [`Garage::start`].
    pub fn shared() -> &'static Garage {
        static SHARED: OnceLock<Garage> = OnceLock::new();
        SHARED.get_or_init(Garage::start)
    }

    /// Starts a new node and waits until it serves S3. Panics, saying what is missing or what
    /// Garage logged, if it cannot.
    pub fn start() -> Garage {
        let bin =
            crate::find_program("garage", &[&tools_bin()]).unwrap_or_else(|| panic!("{HINT}"));
        let dir = tempfile::Builder::new().prefix("garage-").tempdir().expect("a temporary folder");
        let garage = Garage {
            bin,
            s3_port: crate::free_port(),
            admin_port: crate::free_port(),
            // Garage's own formats: `GK` and 12 bytes in hex, a 32-byte secret in hex.
            access_key_id: format!("GK{}", random_hex(12)),
            secret_access_key: random_hex(32),
            process: Mutex::new(None),
            buckets: AtomicU32::new(0),
            dir,
        };
        let config = format!(
            "metadata_dir = {meta:?}\n\
             data_dir = {data:?}\n\
             db_engine = \"lmdb\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{rpc_secret}\"\n\
             \n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n\
             \n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin}\"\n\
             admin_token = \"{admin_token}\"\n",
            meta = garage.dir.path().join("meta").display().to_string(),
            data = garage.dir.path().join("data").display().to_string(),
            rpc = crate::free_port(),
            rpc_secret = random_hex(32),
            s3 = garage.s3_port,
            admin = garage.admin_port,
            admin_token = random_hex(32),
        );
        std::fs::write(garage.config(), config).expect("writing garage.toml");
        garage.start_again();
        garage.watchdog();
        garage
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    /// A `garage` command for this node: its config, and none of the caller's `GARAGE_*`
    /// variables (they would override the config: another node's RPC host or secret).
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GARAGE_") {
                c.env_remove(name);
            }
        }
        c.arg("-c").arg(self.config()).current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }

    /// Starts the server (again, after [`Garage::stop`] or [`Garage::kill`]: same data, same
    /// ports, same key) and waits until it serves S3. Panics if it is already running.
    pub fn start_again(&self) {
        let mut process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        assert!(process.is_none(), "Garage is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("opening garage.log");
        let child = self
            .command()
            .args(["server", "--single-node", "--default-access-key"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key_id)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_access_key)
            // Per-request lines at `info` would slow benchmarks down; warnings and errors say
            // why a start failed.
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().expect("garage.log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} ({HINT})", self.bin.display()));
        std::fs::write(self.dir.path().join("garage.pid"), child.id().to_string())
            .expect("writing garage.pid");
        *process = Some(child);
        self.wait_until_ready(process.as_mut().expect("just started"));
    }

    /// Waits until the admin API says the cluster is healthy (layout applied, the node up)
    /// and the S3 port accepts connections; panics with Garage's log if the process exits or
    /// the time runs out.
    fn wait_until_ready(&self, child: &mut Child) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("garage server exited ({status}) while starting:\n{}", self.log_tail());
            }
            if http_status(self.admin_port, "/health") == Some(200)
                && TcpStream::connect_timeout(&loopback(self.s3_port), Duration::from_secs(1))
                    .is_ok()
            {
                return;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!("garage server not ready after {READY_TIMEOUT:?}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server cleanly (SIGTERM: it finishes its requests and closes its database);
    /// kills it if it has not exited within 30 s. Takes up to 10 s while clients keep idle
    /// connections open (Garage's own drain deadline); under a second otherwise.
    pub fn stop(&self) {
        let mut process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = process.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "garage server ignored SIGTERM for {STOP_TIMEOUT:?}; killed it:\n{}",
            self.log_tail()
        );
    }

    /// Stops the server at once, as a crash would (SIGKILL).
    pub fn kill(&self) {
        let mut process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server when this process is gone, however it ends (a static [`Garage::shared`]
    /// is never dropped, and a killed test process drops nothing), and removes its folder.
    fn watchdog(&self) {
        let dir = self.dir.path().display().to_string();
        // The pid in garage.pid is that of the latest start; it is killed only if it still runs
        // this node's config (not a process that got the same pid since).
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             p=$(cat {pidfile} 2>/dev/null) && grep -qaF {config} /proc/$p/cmdline 2>/dev/null \
             && kill -9 $p; sleep 1; rm -rf {dir}",
            pid = std::process::id(),
            pidfile = crate::shell_quote(&format!("{dir}/garage.pid")),
            config = crate::shell_quote(&self.config().display().to_string()),
            dir = crate::shell_quote(&dir),
        );
        crate::watchdog(&script);
    }

    /// The S3 endpoint (`http://127.0.0.1:PORT`); path-style addressing only.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The region requests must be signed for.
    pub fn region(&self) -> &str {
        REGION
    }

    /// The access key allowed on every bucket made by [`Garage::create_bucket`].
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret of [`Garage::access_key_id`].
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The standard AWS variables for a process that should use this node:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (the endpoint is
    /// [`Garage::endpoint`]).
    pub fn aws_env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }

    /// A new, empty bucket that [`Garage::access_key_id`] may read, write and own; returns its
    /// name.
    pub fn create_bucket(&self) -> String {
        let n = self.buckets.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}-{n}", std::process::id());
        self.cli(&["bucket", "create", &name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &name,
            "--key",
            &self.access_key_id,
        ]);
        name
    }

    /// Runs `garage ARGS` against the running node; returns its output. Panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out =
            self.command().args(args).output().unwrap_or_else(|e| panic!("garage: {e} ({HINT})"));
        assert!(
            out.status.success(),
            "garage {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The end of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `target/tools/bin` of the workspace, where scripts/test.sh installs `garage`.
fn tools_bin() -> String {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    workspace.join("target/tools/bin").display().to_string()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The status code of `GET path` on loopback, or `None` if nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.x NNN"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `bytes` random bytes from the kernel, in hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .unwrap_or_else(|e| panic!("reading /dev/urandom: {e}"));
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use object_store::RetryConfig;
    use object_store::aws::{AmazonS3, AmazonS3Builder};
    use object_store::path::Path as ObjectPath;
    use object_store::signer::{Method, Signer};
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

    use super::*;

    /// 3 MiB and a bit: several of Garage's 1 MiB blocks, with bytes that differ from block to
    /// block, so a block served in the wrong place or order shows.
    fn payload() -> Vec<u8> {
        (0..3 * 1024 * 1024 + 123u32).map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8).collect()
    }

    /// The client as the server configures it: Garage's endpoint over plain HTTP, path-style
    /// addressing (`http://127.0.0.1:PORT/BUCKET/KEY`, no bucket DNS names on loopback).
    fn builder(garage: &Garage, bucket: &str, secret: &str) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(garage.endpoint())
            .with_region(garage.region())
            .with_bucket_name(bucket)
            .with_access_key_id(garage.access_key_id())
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
    }

    fn store(garage: &Garage, bucket: &str, secret: &str) -> AmazonS3 {
        builder(garage, bucket, secret).build().expect("an S3 client for Garage")
    }

    async fn get(store: &AmazonS3, path: &ObjectPath) -> Vec<u8> {
        store.get(path).await.expect("GET").bytes().await.expect("GET body").to_vec()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_node_serves_s3_and_keeps_objects_across_a_crash_and_a_restart() {
        let garage = Garage::start();
        let bucket = garage.create_bucket();
        let s3 = store(&garage, &bucket, garage.secret_access_key());
        let data = payload();
        let path = ObjectPath::from("images/a.bin");

        s3.put(&path, PutPayload::from(data.clone())).await.expect("PUT");
        assert!(get(&s3, &path).await == data, "GET returns the bytes PUT");
        let range = 1024 * 1024 - 5..1024 * 1024 + 5; // across a block boundary
        let bytes =
            s3.get_range(&path, range.start as u64..range.end as u64).await.expect("ranged GET");
        assert_eq!(&bytes[..], &data[range]);
        assert_eq!(s3.head(&path).await.expect("HEAD").size, data.len() as u64);

        s3.put(&ObjectPath::from("images/b.bin"), PutPayload::from_static(b"b"))
            .await
            .expect("PUT b");
        s3.put(&ObjectPath::from("other/c.bin"), PutPayload::from_static(b"c"))
            .await
            .expect("PUT c");
        let listed = s3.list_with_delimiter(Some(&ObjectPath::from("images"))).await.expect("LIST");
        let mut names: Vec<String> =
            listed.objects.iter().map(|o| o.location.to_string()).collect();
        names.sort();
        assert_eq!(names, ["images/a.bin", "images/b.bin"]);
        let sizes: Vec<u64> = listed.objects.iter().map(|o| o.size).collect();
        assert!(sizes.contains(&(data.len() as u64)) && sizes.contains(&1), "sizes: {sizes:?}");

        s3.delete(&ObjectPath::from("images/b.bin")).await.expect("DELETE");
        let gone = s3.get(&ObjectPath::from("images/b.bin")).await;
        assert!(
            matches!(gone, Err(object_store::Error::NotFound { .. })),
            "deleted object: {gone:?}"
        );
        let listed = s3.list_with_delimiter(Some(&ObjectPath::from("images"))).await.expect("LIST");
        assert_eq!(listed.objects.len(), 1);

        let wrong = store(&garage, &bucket, &random_hex(32));
        let refused = wrong.get(&path).await;
        assert!(
            matches!(refused, Err(object_store::Error::PermissionDenied { .. })),
            "a wrong secret is refused: {refused:?}"
        );
        garage.cli(&["bucket", "create", "not-allowed"]);
        let not_allowed =
            store(&garage, "not-allowed", garage.secret_access_key()).get(&path).await;
        assert!(
            matches!(not_allowed, Err(object_store::Error::PermissionDenied { .. })),
            "a bucket the key is not allowed on: {not_allowed:?}"
        );

        garage.kill();
        // (object_store retries a refused connection for a few seconds by default.)
        let no_retries = builder(&garage, &bucket, garage.secret_access_key())
            .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() })
            .build()
            .expect("an S3 client for Garage");
        assert!(no_retries.get(&path).await.is_err(), "nothing answers while it is down");
        garage.start_again();
        assert!(get(&s3, &path).await == data, "an acknowledged PUT survives SIGKILL");
        let after_crash = ObjectPath::from("images/after-crash.bin");
        s3.put(&after_crash, PutPayload::from_static(b"new")).await.expect("PUT after the restart");

        // Garage waits up to 10 s for clients' idle keep-alive connections on SIGTERM: closing
        // them first (the runtime runs their tasks during the sleep) makes the stop quick.
        drop((s3, wrong, no_retries));
        tokio::time::sleep(Duration::from_millis(100)).await;
        garage.stop();
        garage.start_again();
        let s3 = store(&garage, &bucket, garage.secret_access_key());
        assert!(get(&s3, &path).await == data, "and a clean restart");
        assert_eq!(get(&s3, &after_crash).await, b"new");
        let fresh = garage.create_bucket();
        assert_ne!(fresh, bucket, "each test gets its own bucket");
        let listed =
            store(&garage, &fresh, garage.secret_access_key()).list_with_delimiter(None).await;
        assert!(listed.expect("LIST a new bucket").objects.is_empty());
    }

    /// The server redirects devices to presigned URLs; a device resumes a download with a
    /// Range request on such a URL, with nothing but a plain HTTP client.
    #[tokio::test(flavor = "current_thread")]
    async fn presigned_urls_answer_range_requests() {
        let garage = Garage::shared();
        let bucket = garage.create_bucket();
        let s3 = store(garage, &bucket, garage.secret_access_key());
        let data = payload();
        let path = ObjectPath::from("images/presigned.bin");
        s3.put(&path, PutPayload::from(data.clone())).await.expect("PUT");
        let url = s3
            .signed_url(Method::GET, &path, Duration::from_secs(300))
            .await
            .expect("a presigned URL");
        assert!(url.as_str().contains("X-Amz-Signature="), "{url}");
        let http = reqwest::Client::new();

        let answer =
            http.get(url.clone()).header("Range", "bytes=10-19").send().await.expect("GET a range");
        assert_eq!(answer.status(), 206);
        let content_range =
            answer.headers().get("content-range").map(|v| v.to_str().unwrap_or("").to_owned());
        assert_eq!(content_range.as_deref(), Some(format!("bytes 10-19/{}", data.len()).as_str()));
        assert_eq!(&answer.bytes().await.expect("body")[..], &data[10..20]);

        let tail = data.len() - 1024 * 1024 - 3; // from within the second block to the end
        let answer = http
            .get(url.clone())
            .header("Range", format!("bytes={tail}-"))
            .send()
            .await
            .expect("GET");
        assert_eq!(answer.status(), 206);
        assert!(answer.bytes().await.expect("body")[..] == data[tail..]);

        let answer = http.get(url.clone()).send().await.expect("GET the whole object");
        assert_eq!(answer.status(), 200);
        assert!(answer.bytes().await.expect("body")[..] == data[..]);

        let tampered = url.as_str().replace("X-Amz-Signature=", "X-Amz-Signature=0");
        let answer = http.get(tampered).header("Range", "bytes=10-19").send().await.expect("GET");
        assert_eq!(answer.status(), 403, "a tampered signature is refused");
        let expired = s3
            .signed_url(Method::GET, &path, Duration::from_secs(1))
            .await
            .expect("a presigned URL");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let answer = http.get(expired).header("Range", "bytes=10-19").send().await.expect("GET");
        // Garage answers 400 InvalidRequest "Date is too old" where AWS answers 403: a client
        // must take any 4xx on a presigned URL as "ask for a new URL".
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        assert!(matches!(status, 400 | 403), "an expired URL is refused: {status} {body}");
    }
}
