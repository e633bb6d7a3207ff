//! Reference scenario R2 (`../shared/DESIGN.md`): check-ins from 100,000 enrolled devices and
//! image downloads, each measured next to a baseline in the same run, with the load coming from a
//! separate process on loopback; the server on each of its stores (SQLite, PostgreSQL) in turn,
//! in the same run, so that the stores can be compared.
//!
//! ```sh
//! cargo build --release -p ota-server
//! cargo run --release -p ota-server --example r2-bench
//! ```
//!
//! One binary plays three parts:
//!
//! - no arguments: the orchestrator. For each store of `R2_STORES` it starts a fresh, real
//!   `ota-server` process (the release binary next to this example, `target/release/ota-server`;
//!   it builds nothing itself; `init` then `serve`, with `--database postgres://...` for
//!   PostgreSQL), sets it up through the API with the typed client everything else uses
//!   (`ota_proto::client`): uploads and releases an image, enrolls the devices in one batch (and
//!   measures that rate), then runs the load generator against the server and the baselines, in
//!   turn, and finally prints one results table per phase with a row per store, and the ratios
//!   PostgreSQL / SQLite.
//! - `--load ...`: the load generator. Keep-alive connections on loopback, each a loop of one
//!   request, then its whole response; every request takes the next device token in turn.
//!   It speaks just enough HTTP/1.1 (fixed requests, `Content-Length` responses) to cost the
//!   machine as little as possible, and prints one JSON line of figures. It is a load tool, not
//!   an API client: what it measures must not include a client's own cost.
//! - `--bare`: the check-in baseline, a minimal hyper 1.x HTTP/1 server on a default
//!   multi-thread tokio runtime (as `ota-server serve` uses) that reads the body and answers
//!   `{"offer":null}`, what `ota-server` answers a device with nothing to install.
//!
//! The download baseline is nginx (`nginx` on `PATH` or `/usr/sbin/nginx`) serving the same
//! file bytes from a temporary folder with `sendfile on`; without nginx that half is skipped,
//! and the output says so.
//!
//! PostgreSQL is a real server the benchmark starts itself (`testkit::pg`: `initdb` and `pg_ctl`
//! on a temporary folder, PostgreSQL's server programs on `PATH` or in
//! `/usr/lib/postgresql/*/bin`) with durable settings (`fsync=on`, `synchronous_commit=on`: the
//! server's defaults), one cluster for the PostgreSQL store's measurements, stopped after them.
//! Its CPU time counts as the server's: the postmaster (its pid from the data folder's
//! `postmaster.pid`) and all its children, exited ones included.
//!
//! Measurements alternate between a server and its baseline, `R2_ROUNDS` times each, so that
//! drift on a shared machine hits both; the baselines run once for each store. Settings
//! (environment): `R2_STORES` (`sqlite,postgres`: the stores to measure, in that order),
//! `R2_DEVICES` (100000), `R2_ROUNDS` (5), `R2_SECS` (3, each check-in round, after 1 s of
//! warm-up), `R2_DL_SECS` (2, each download round, after 0.5 s), `R2_CONNS` (128 check-in
//! connections), `R2_DL_CONNS` (64), `R2_LOAD_THREADS` (1: the load generator's tokio threads),
//! `R2_ENROLL_BATCH` (devices per enrollment request: 100000, all at once), `R2_NGINX` (the nginx
//! binary, or `none`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benchkit::Figure;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use firmware::image::{
    ComponentSource, EncodedImage, HeatshrinkParams, ImageSpec, Role, SlotLayout, encode_image,
};
use ota_proto::client::{Blocking, Bytes, Client};
use ota_proto::{BoardName, CheckIn, DeviceId, EnvironmentName, NewDevice, NewDevices, NewRelease};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--load") => load::main(&args[1..]),
        Some("--bare") => bare::main(),
        Some(other) => Err(format!("unknown argument {other:?} (none, --load or --bare)").into()),
        None => orchestrate(),
    };
    if let Err(e) = result {
        eprintln!("r2-bench: error: {e}");
        std::process::exit(1);
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ----- the orchestrator -----

/// A child process killed when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited (something outside the benchmark may stop it).
    fn alive(&mut self, what: &str) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!("{what} exited during the benchmark ({status})").into()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The 1-minute load average: other work on the machine shows here.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Starts a server that prints `listening on http://ADDR` on stdout when ready.
fn start_listening(mut cmd: Command, what: &'static str) -> Result<(Proc, SocketAddr)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let proc = Proc { child };
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .ok_or_else(|| format!("{what} did not start: {line:?}"))?
        .parse()?;
    Ok((proc, addr))
}

fn write_public_pem(path: &Path, key: &SigningKey) -> Result<()> {
    std::fs::write(path, key.verifying_key().to_public_key_pem(LineEnding::LF)?)?;
    Ok(())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/microbit")
}

/// An image for `board` whose one component is `code` at the start of slot A.
fn image(board: &str, code: Vec<u8>, key: &SigningKey) -> Result<EncodedImage> {
    let catalog = boards::Catalog::builtin()?;
    let b = catalog.get(board)?;
    let slot = SlotLayout {
        start: b.slot_a_address(),
        size: b.partitions.slot_a.size,
        header_size: b.image.header_size,
    };
    let spec = ImageSpec {
        board: board.to_owned(),
        version: "1.0.0".parse()?,
        security_counter: 0,
        compression: Some(HeatshrinkParams::DEFAULT),
        components: vec![ComponentSource {
            role: Role::Os,
            name: "os".into(),
            load_address: slot.start + slot.header_size,
            bytes: code,
        }],
        slot: Some(slot),
    };
    Ok(encode_image(&spec, std::slice::from_ref(key))?)
}

/// The fixtures' real compiler output (the OS and app ELF files, the app binary) repeated to
/// `size` bytes: an image of realistic size whose contents compress like firmware does.
fn big_code(size: usize) -> Result<Vec<u8>> {
    let mut unit = Vec::new();
    for f in ["os.elf", "app.elf", "app.bin"] {
        unit.extend(std::fs::read(fixtures().join(f))?);
    }
    Ok(unit.iter().copied().cycle().take(size).collect())
}

/// Everything the load generator reports (one JSON line).
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
struct Figures {
    requests: u64,
    errors: u64,
    secs: f64,
    bytes: u64,
    /// Latencies: (microseconds / [`BUCKET_US`], count), ascending.
    histogram: Vec<(u64, u64)>,
    load_cpu_s: f64,
    /// CPU time of every watched process tree together (the server and, on PostgreSQL, the
    /// database server).
    server_cpu_s: f64,
    /// The same, per watched process tree, in the order of `--watch`: the server, then the
    /// PostgreSQL cluster if there is one.
    #[serde(default)]
    watched_cpu_s: Vec<f64>,
    /// Busy share of all the machine's cores over the measurement (from `/proc/stat`).
    machine_busy: f64,
    sample: String,
    first_error: String,
}

/// Latency histogram resolution, microseconds.
const BUCKET_US: u64 = 10;

impl Figures {
    /// Several measurements of the same thing as one.
    fn merge(parts: Vec<Figures>) -> Figures {
        let mut histogram = BTreeMap::new();
        let mut all = Figures::default();
        let mut busy = 0.0;
        for f in parts {
            for (b, n) in &f.histogram {
                *histogram.entry(*b).or_insert(0) += n;
            }
            all.requests += f.requests;
            all.errors += f.errors;
            all.secs += f.secs;
            all.bytes += f.bytes;
            all.load_cpu_s += f.load_cpu_s;
            all.server_cpu_s += f.server_cpu_s;
            if all.watched_cpu_s.len() < f.watched_cpu_s.len() {
                all.watched_cpu_s.resize(f.watched_cpu_s.len(), 0.0);
            }
            for (sum, s) in all.watched_cpu_s.iter_mut().zip(&f.watched_cpu_s) {
                *sum += s;
            }
            busy += f.machine_busy * f.secs;
            if all.sample.is_empty() {
                all.sample = f.sample;
            }
            if all.first_error.is_empty() {
                all.first_error = f.first_error;
            }
        }
        all.machine_busy = busy / all.secs.max(1e-9);
        all.histogram = histogram.into_iter().collect();
        all
    }

    /// The `p` quantile of the latencies (upper edge of its bucket), microseconds.
    fn quantile_us(&self, p: f64) -> u64 {
        let total: u64 = self.histogram.iter().map(|(_, n)| n).sum();
        let rank = ((total as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in &self.histogram {
            seen += n;
            if seen >= rank {
                return (b + 1) * BUCKET_US;
            }
        }
        0
    }

    fn p99_us(&self) -> f64 {
        self.quantile_us(0.99) as f64
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }

    /// The columns of [`COMMON_HEAD`].
    fn common(&self) -> String {
        format!(
            "{} | {} | {} | {} | {:.1} µs | {} | {:.0} % | {:.0} % | {} |",
            ms(self.quantile_us(0.5)),
            ms(self.quantile_us(0.9)),
            ms(self.quantile_us(0.99)),
            ms(self.quantile_us(0.999)),
            self.cpu_us(),
            self.db_cpu_us().map_or_else(|| "–".into(), |us| format!("{us:.1} µs")),
            self.load_cpu_s / self.secs * 100.0,
            self.machine_busy * 100.0,
            self.errors
        )
    }

    /// Server CPU time per request (with its database server's), microseconds.
    fn cpu_us(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.requests.max(1) as f64
    }

    /// The database server's share of [`Figures::cpu_us`], if it has one.
    fn db_cpu_us(&self) -> Option<f64> {
        self.watched_cpu_s.get(1).map(|s| s * 1e6 / self.requests.max(1) as f64)
    }
}

/// Columns every results table has, after the throughput.
const COMMON_HEAD: &str = "p50 | p90 | p99 | p99.9 | server CPU per request | of it, PostgreSQL \
                           | load generator CPU (of one core) | machine busy (all cores) | errors |";
const COMMON_RULE: &str = "---|---|---|---|---|---|---|---|---|";

struct LoadRun<'a> {
    addr: SocketAddr,
    method: &'a str,
    path: &'a str,
    tokens: &'a Path,
    body: &'a str,
    conns: u64,
    warmup: f64,
    secs: f64,
    /// Stop after this many requests instead of after `secs`.
    count: Option<u64>,
    /// The server's process and, on PostgreSQL, the postmaster (CPU time is measured over each
    /// and its children).
    watch: &'a [u32],
}

fn run_load(run: &LoadRun) -> Result<Figures> {
    let exe = std::env::current_exe()?;
    let watch: Vec<String> = run.watch.iter().map(u32::to_string).collect();
    let mut cmd = Command::new(exe);
    cmd.arg("--load")
        .args(["--addr", &run.addr.to_string()])
        .args(["--method", run.method, "--path", run.path])
        .arg("--tokens")
        .arg(run.tokens)
        .args(["--body", run.body])
        .args(["--conns", &run.conns.to_string()])
        .args(["--threads", &setting("R2_LOAD_THREADS", 1).to_string()])
        .args(["--warmup", &run.warmup.to_string(), "--secs", &run.secs.to_string()])
        .args(["--watch", &watch.join(",")]);
    if let Some(n) = run.count {
        cmd.args(["--count", &n.to_string()]);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(format!("load generator failed ({})", out.status).into());
    }
    let figures: Figures = serde_json::from_slice(&out.stdout)?;
    if figures.errors > 0 {
        eprintln!(
            "  warning: {} requests failed (connection errors or answers other than 200) \
             besides {} answered; first: {}",
            figures.errors, figures.requests, figures.first_error
        );
    }
    Ok(figures)
}

/// The ratio of each round, "0.91 0.87 ...".
fn per_round(ours: &[Figures], theirs: &[Figures], measure: fn(&Figures) -> f64) -> String {
    let ratios: Vec<String> =
        ours.iter().zip(theirs).map(|(a, b)| format!("{:.2}", measure(a) / measure(b))).collect();
    ratios.join(" ")
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// A store the server runs on, as `R2_STORES` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite,postgres`, in the order given.
    fn list(text: &str) -> Result<Vec<Backend>> {
        let mut list = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let backend = match word.to_ascii_lowercase().as_str() {
                "sqlite" => Backend::Sqlite,
                "postgres" | "postgresql" | "pg" => Backend::Postgres,
                _ => {
                    return Err(
                        format!("R2_STORES: unknown store {word:?} (sqlite, postgres)").into()
                    );
                }
            };
            if !list.contains(&backend) {
                list.push(backend);
            }
        }
        if list.is_empty() {
            return Err("R2_STORES names no store (sqlite, postgres)".into());
        }
        Ok(list)
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// The database server of the PostgreSQL store: a cluster of its own (`testkit::pg`) with the
/// server's durable defaults, stopped when dropped.
struct Cluster {
    pg: testkit::pg::Postgres,
    /// The postmaster, from the data folder's `postmaster.pid`: every other process of the
    /// cluster (backends, WAL writer, checkpointer, autovacuum...) is its child.
    postmaster: u32,
    /// Version and durability settings, as the server reports them.
    settings: String,
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let pg = testkit::pg::Postgres::start(testkit::pg::Options { fast: false });
        let show = |name: &str| pg.sql("postgres", &format!("SHOW {name}"));
        let pidfile = Path::new(&show("data_directory")).join("postmaster.pid");
        let postmaster = std::fs::read_to_string(&pidfile)?
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("no pid in {}", pidfile.display()))?;
        let fsync = show("fsync");
        if fsync != "on" {
            return Err(format!("the benchmark's PostgreSQL runs with fsync={fsync}").into());
        }
        let settings = format!(
            "PostgreSQL {}, a cluster of its own started by the benchmark with durable settings: \
             fsync={fsync}, synchronous_commit={}, full_page_writes={}, wal_sync_method={}, \
             shared_buffers={}; postmaster pid {postmaster}",
            show("server_version"),
            show("synchronous_commit"),
            show("full_page_writes"),
            show("wal_sync_method"),
            show("shared_buffers"),
        );
        Ok(Cluster { pg, postmaster, settings })
    }

    /// Fails if the postmaster has exited.
    fn alive(&self) -> Result<()> {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.postmaster)).unwrap_or_default();
        match stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()) {
            Some(state) if state != "Z" && state != "X" => Ok(()),
            _ => Err("PostgreSQL's postmaster exited during the benchmark".into()),
        }
    }

    /// The write-ahead log's current position, bytes: the difference of two is the WAL written
    /// between them (exact, unlike the statistics views, which backends update lazily).
    fn wal_position(&self) -> f64 {
        self.pg
            .sql("postgres", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
            .parse()
            .unwrap_or(0.0)
    }

    /// What PostgreSQL did in database `url` since the cluster started, one line.
    fn activity(&self, url: &str) -> String {
        let db = testkit::pg::Postgres::database_of(url);
        let table = |name: &str| {
            self.pg.sql(
                db,
                &format!(
                    "SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup, autovacuum_count, \
                     pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE relname = \
                     '{name}'"
                ),
            )
        };
        let devices: Vec<f64> =
            table("devices").split('|').filter_map(|v| v.parse().ok()).collect();
        let changes: Vec<f64> =
            table("changes").split('|').filter_map(|v| v.parse().ok()).collect();
        let wal: Vec<f64> = self
            .pg
            .sql("postgres", "SELECT wal_records, wal_fpi, wal_sync FROM pg_stat_wal")
            .split('|')
            .filter_map(|v| v.parse().ok())
            .collect();
        let checkpoints = self
            .pg
            .sql("postgres", "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter");
        let (Some(d), Some(c), Some(w)) = (devices.get(..5), changes.get(4), wal.get(..3)) else {
            return "(no statistics)".into();
        };
        format!(
            "table devices: {} row updates, {} of them HOT, {} dead rows left, {} autovacuum runs, \
             {:.1} MB; table changes (the change log): {:.1} MB; WAL: {} records, {} full-page \
             images, {} syncs; {checkpoints} checkpoints (statistics since the cluster started, \
             as PostgreSQL had them at the end)",
            thousands(d[0]),
            thousands(d[1]),
            thousands(d[2]),
            d[3],
            d[4] / 1e6,
            c / 1e6,
            thousands(w[0]),
            thousands(w[1]),
            thousands(w[2]),
        )
    }
}

/// What the measurements of every store share.
struct Bench {
    server_bin: PathBuf,
    dir: PathBuf,
    devices: u64,
    rounds: u64,
    secs: f64,
    dl_secs: f64,
    conns: u64,
    dl_conns: u64,
    batch: usize,
    running: EncodedImage,
    download: EncodedImage,
    bare: Proc,
    bare_addr: SocketAddr,
    nginx: Option<nginx::Nginx>,
}

/// One store's figures.
struct StoreRun {
    backend: Backend,
    /// What the database is (PostgreSQL: version and settings).
    database: String,
    enroll_secs: f64,
    /// CPU time of the server and (PostgreSQL) of the cluster over the enrollment, seconds.
    enroll_cpu: Vec<f64>,
    enroll_busy: f64,
    first: Figures,
    steady: Figures,
    bare: Figures,
    checkin_rounds: String,
    /// The CPU time of the server (and PostgreSQL) over the whole steady phase, its own and
    /// the baseline's rounds.
    steady_all_cpu: Vec<f64>,
    /// The CPU time of the idle server (and PostgreSQL) while the baselines ran, and how long
    /// that was: work left over from the server's own rounds (last-seen times, autovacuum).
    idle_cpu: Vec<f64>,
    idle_secs: f64,
    dl: Figures,
    nginx_dl: Option<Figures>,
    dl_rounds: String,
    /// PostgreSQL: WAL written by each phase, and what it did (see [`Cluster::activity`]).
    wal: Vec<(&'static str, f64)>,
    pg_activity: Option<String>,
}

impl StoreRun {
    fn enroll_rate(&self, devices: u64) -> f64 {
        devices as f64 / self.enroll_secs
    }
}

fn orchestrate() -> Result<()> {
    let exe = std::env::current_exe()?;
    let server_bin = benchkit::sibling_binary("ota-server").map_err(|e| e.to_string())?;
    let backends =
        Backend::list(&std::env::var("R2_STORES").unwrap_or_else(|_| "sqlite,postgres".into()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = loadavg();
    println!(
        "r2-bench: {cores} cores ({}); servers, database server, baselines and load generator \
         share them, nothing pinned; load average {load_start} at the start",
        benchkit::cpu_model(),
    );

    let dir = tempfile::tempdir()?;
    let build_key = SigningKey::from_bytes(&[11; 32]);
    let prod_key = SigningKey::from_bytes(&[22; 32]);
    write_public_pem(&dir.path().join("build.pub.pem"), &build_key)?;
    write_public_pem(&dir.path().join("prod.pub.pem"), &prod_key)?;

    // What the check-in devices run (a micro:bit image of the fixture's code), and the image
    // to download (nRF52840 DK: a micro:bit slot holds at most 91 KiB).
    let running = image("microbit", std::fs::read(fixtures().join("app.bin"))?, &build_key)?;
    let download = image("nrf52840dk", big_code(440 << 10)?, &build_key)?;

    // The baselines run once for each store, alternating with that store's server.
    let mut cmd = Command::new(&exe);
    cmd.arg("--bare");
    let (bare, bare_addr) = start_listening(cmd, "bare hyper")?;
    let nginx = match nginx::find() {
        None => {
            println!(
                "nginx: NOT INSTALLED (not on PATH, no /usr/sbin/nginx, or R2_NGINX=none): the \
                 download baseline is skipped"
            );
            None
        }
        Some(bin) => {
            let www = dir.path().join("www");
            std::fs::create_dir_all(&www)?;
            std::fs::write(www.join("image.fwi"), &download.bytes)?;
            Some(nginx::start(&bin, dir.path())?)
        }
    };
    let mut bench = Bench {
        server_bin,
        dir: dir.path().to_owned(),
        devices: setting("R2_DEVICES", 100_000),
        rounds: setting("R2_ROUNDS", 5).max(1),
        secs: setting("R2_SECS", 3) as f64,
        dl_secs: setting("R2_DL_SECS", 2) as f64,
        conns: setting("R2_CONNS", 128),
        dl_conns: setting("R2_DL_CONNS", 64),
        batch: setting("R2_ENROLL_BATCH", 100_000).max(1) as usize,
        running,
        download,
        bare,
        bare_addr,
        nginx,
    };
    let mut runs = Vec::new();
    for backend in backends {
        runs.push(measure(&mut bench, backend)?);
    }
    let nginx_version = bench.nginx.as_ref().map(|n| n.version.clone());
    drop(bench.nginx.take());
    print!("{}", report(&bench, &runs, nginx_version.as_deref(), &load_start)?);
    record_figures(&bench, &runs, nginx_version.as_deref())
}

/// The run's figures in `benchkit`'s form (`r2.<store>.*`), each against its baseline when it
/// has one.
fn record_figures(bench: &Bench, runs: &[StoreRun], nginx_version: Option<&str>) -> Result<()> {
    for run in runs {
        let store = format!("r2.{}", run.backend.name().to_ascii_lowercase());
        Figure::new(format!("{store}.enroll"), run.enroll_rate(bench.devices), "devices/s")
            .record()?;
        Figure::new(format!("{store}.first-checkins"), run.first.rate(), "check-ins/s").record()?;
        Figure::new(format!("{store}.checkins"), run.steady.rate(), "check-ins/s")
            .against("bare hyper", run.bare.rate())
            .record()?;
        Figure::new(format!("{store}.checkin-p99"), run.steady.p99_us() / 1e3, "ms")
            .against("bare hyper", run.bare.p99_us() / 1e3)
            .record()?;
        let downloads = Figure::new(format!("{store}.downloads"), run.dl.mbps(), "MB/s");
        match (&run.nginx_dl, nginx_version) {
            (Some(nginx), Some(version)) => downloads.against(version, nginx.mbps()).record()?,
            _ => downloads.record()?,
        }
    }
    Ok(())
}

/// Starts a fresh server on `backend` and runs every phase against it.
fn measure(bench: &mut Bench, backend: Backend) -> Result<StoreRun> {
    println!();
    println!("--- {} ---", backend.name());
    let cluster = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(Cluster::start()?),
    };
    let db_url = cluster.as_ref().map(|c| c.pg.create_database());
    let database = match &cluster {
        Some(c) => c.settings.clone(),
        None => "SQLite, the data folder's ota.db (WAL, synchronous=FULL)".to_owned(),
    };
    println!("{database}");
    let data = bench.dir.join(format!("data-{}", backend.name().to_ascii_lowercase()));
    let mut init = Command::new(&bench.server_bin);
    init.arg("init")
        .arg("--data")
        .arg(&data)
        .arg("--build-key")
        .arg(bench.dir.join("build.pub.pem"))
        .arg("--prod-key")
        .arg(bench.dir.join("prod.pub.pem"))
        .env_remove("OTA_DATABASE");
    if let Some(url) = &db_url {
        init.args(["--database", url]);
    }
    let out = init.output()?;
    if !out.status.success() {
        return Err(format!("init: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let admin = String::from_utf8(out.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("admin token: ").map(str::to_owned))
        .ok_or("init did not print the admin token")?;
    let mut cmd = Command::new(&bench.server_bin);
    cmd.arg("serve")
        .arg("--data")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("OTA_DATABASE")
        .env_remove("OTA_CONFIG")
        .env("OTA_LOG", "warn");
    if let Some(url) = &db_url {
        cmd.args(["--database", url]);
    }
    let (mut server, addr) = start_listening(cmd, "ota-server")?;
    // CPU time is measured over the server and, on PostgreSQL, over the postmaster and its
    // children (every process of the cluster).
    let mut watch = vec![server.pid()];
    watch.extend(cluster.as_ref().map(|c| c.postmaster));
    let alive = |server: &mut Proc| -> Result<()> {
        server.alive("ota-server")?;
        cluster.as_ref().map_or(Ok(()), Cluster::alive)
    };
    let api = Blocking::new(Client::new(&format!("http://{addr}"), &admin)?)?;

    for img in [&bench.running, &bench.download] {
        let uploaded = api.run(|c| c.upload(Bytes::from(img.bytes.clone()), None))?;
        if !uploaded.new {
            return Err(format!("upload of {}: the server had it already", img.id).into());
        }
    }
    let release = NewRelease { image_id: bench.download.id, statement: None };
    let dev = "dev".parse()?;
    api.run(|c| c.create_release(&dev, &release))?;

    // Enrollment, through the API, in batches (each all or nothing, one durable commit).
    let enroll = |ids: Vec<String>, env: &str, board: &str| -> Result<Vec<String>> {
        let (environment, board): (EnvironmentName, BoardName) = (env.parse()?, board.parse()?);
        let mut tokens = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(bench.batch) {
            let devices = chunk
                .iter()
                .map(|id| {
                    let (environment, board) = (environment.clone(), board.clone());
                    Ok(NewDevice { id: DeviceId::new(id.as_str())?, board, environment })
                })
                .collect::<Result<Vec<_>>>()?;
            let request = NewDevices { devices };
            let enrolled = api.run(|c| c.create_devices(&request))?;
            tokens.extend(enrolled.tokens.into_iter().map(|t| t.token));
        }
        Ok(tokens)
    };
    let devices = bench.devices;
    let cpu = |watch: &[u32]| -> Vec<f64> { watch.iter().map(|p| load::cpu_secs(*p)).collect() };
    let wal = || cluster.as_ref().map_or(0.0, Cluster::wal_position);
    let mut wal_mark = wal();
    let mut wal_phases = Vec::new();
    let mut phase_done = |name: &'static str| {
        let now = wal();
        wal_phases.push((name, now - wal_mark));
        wal_mark = now;
    };
    let (cpu0, machine0, t) = (cpu(&watch), load::machine_jiffies(), Instant::now());
    let tokens = enroll((0..devices).map(|i| format!("r2-{i:06}")).collect(), "prod", "microbit")?;
    let enroll_secs = t.elapsed().as_secs_f64();
    let (cpu1, machine1) = (cpu(&watch), load::machine_jiffies());
    phase_done("enrollment");
    let enroll_cpu: Vec<f64> = cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).collect();
    let enroll_busy = (machine1.0 - machine0.0) as f64 / (machine1.1 - machine0.1).max(1) as f64;
    alive(&mut server)?;
    let dl_tokens =
        enroll((0..bench.dl_conns).map(|i| format!("dl-{i:03}")).collect(), "dev", "nrf52840dk")?;
    println!(
        "enrolled {} devices in {enroll_secs:.2} s: {} devices/s",
        thousands(devices as f64),
        thousands(devices as f64 / enroll_secs)
    );
    let tokens_file = bench.dir.join("tokens.txt");
    std::fs::write(&tokens_file, tokens.join("\n"))?;
    let dl_tokens_file = bench.dir.join("dl-tokens.txt");
    std::fs::write(&dl_tokens_file, dl_tokens.join("\n"))?;

    // ----- check-ins -----
    let report = CheckIn { image_id: Some(bench.running.id), trial: false, ..CheckIn::default() };
    let body = serde_json::to_string(&report)?;
    let checkin = |addr, watch: &[u32], warmup, secs, count| {
        run_load(&LoadRun {
            addr,
            method: "POST",
            path: "/api/v1/device/checkin",
            tokens: &tokens_file,
            body: &body,
            conns: bench.conns,
            warmup,
            secs,
            count,
            watch,
        })
    };
    // Each device's first check-in changes what the server knows of it (the image it runs,
    // confirmed): a durable write, through the group commit.
    let first = checkin(addr, &watch, 0.0, 0.0, Some(devices))?;
    alive(&mut server)?;
    phase_done("first check-ins");
    println!("first check-ins: {}/s, p99 {}", thousands(first.rate()), ms(first.quantile_us(0.99)));
    // Then steady state: nothing changes; last-seen times are written every 5 s. Rounds
    // alternate between the server and its baseline so that drift on a shared machine hits both.
    let (bare_addr, bare_pid) = (bench.bare_addr, bench.bare.pid());
    let (mut ota, mut bare) = (Vec::new(), Vec::new());
    let sum = |a: &mut Vec<f64>, b: &[f64], c: &[f64]| {
        a.resize(b.len(), 0.0);
        a.iter_mut().zip(b.iter().zip(c)).for_each(|(a, (b, c))| *a += b - c);
    };
    let (mut idle_cpu, mut idle_secs) = (Vec::new(), 0.0);
    let steady_cpu0 = cpu(&watch);
    for _ in 0..bench.rounds {
        ota.push(checkin(addr, &watch, 1.0, bench.secs, None)?);
        alive(&mut server)?;
        let (before, t) = (cpu(&watch), Instant::now());
        bare.push(checkin(bare_addr, &[bare_pid], 1.0, bench.secs, None)?);
        bench.bare.alive("bare hyper")?;
        idle_secs += t.elapsed().as_secs_f64();
        sum(&mut idle_cpu, &cpu(&watch), &before);
    }
    let mut steady_all_cpu = Vec::new();
    sum(&mut steady_all_cpu, &cpu(&watch), &steady_cpu0);
    phase_done("steady check-ins");
    let checkin_rounds = per_round(&ota, &bare, Figures::rate);
    let (steady, bare) = (Figures::merge(ota), Figures::merge(bare));
    println!(
        "steady check-ins: {}/s, p99 {} (bare hyper {}/s)",
        thousands(steady.rate()),
        ms(steady.quantile_us(0.99)),
        thousands(bare.rate())
    );

    // ----- downloads -----
    let device = api.client().with_token(&dl_tokens[0])?;
    let nothing_yet = CheckIn::default();
    let offer = api.run(|_| device.checkin(&nothing_yet))?.offer;
    let url = offer.ok_or("the download device was offered nothing")?.url;
    let dl = |addr, path: &str, watch: &[u32]| {
        run_load(&LoadRun {
            addr,
            method: "GET",
            path,
            tokens: &dl_tokens_file,
            body: "",
            conns: bench.dl_conns,
            warmup: 0.5,
            secs: bench.dl_secs,
            count: None,
            watch,
        })
    };
    let (mut ota_dl, mut nginx_dl) = (Vec::new(), Vec::new());
    for _ in 0..bench.rounds {
        ota_dl.push(dl(addr, &url, &watch)?);
        alive(&mut server)?;
        if let Some(n) = &mut bench.nginx {
            nginx_dl.push(dl(n.addr, "/image.fwi", &[n.proc.pid()])?);
            n.proc.alive("nginx")?;
        }
    }
    let dl_rounds = per_round(&ota_dl, &nginx_dl, Figures::mbps);
    let dl = Figures::merge(ota_dl);
    let nginx_dl = bench.nginx.is_some().then(|| Figures::merge(nginx_dl));
    println!("downloads: {} MB/s", thousands(dl.mbps()));
    phase_done("downloads");
    let pg_activity = cluster.as_ref().zip(db_url.as_ref()).map(|(c, url)| c.activity(url));
    drop(api);
    drop(server);
    let cluster_was = cluster.is_some();
    drop(cluster);
    Ok(StoreRun {
        backend,
        database,
        enroll_secs,
        enroll_cpu,
        enroll_busy,
        first,
        steady,
        bare,
        checkin_rounds,
        steady_all_cpu,
        idle_cpu,
        idle_secs,
        dl,
        nginx_dl,
        dl_rounds,
        wal: if cluster_was { wal_phases } else { Vec::new() },
        pg_activity,
    })
}

/// The results: one table per phase with a row per store, then PostgreSQL / SQLite.
fn report(
    bench: &Bench,
    runs: &[StoreRun],
    nginx_version: Option<&str>,
    load_start: &str,
) -> Result<String> {
    let (devices, rounds, secs, conns) = (bench.devices, bench.rounds, bench.secs, bench.conns);
    let mut report = String::new();
    let r = &mut report;
    writeln!(r)?;
    writeln!(r, "=== results ===")?;
    writeln!(r)?;
    for run in runs {
        writeln!(r, "{}: {}", run.backend.name(), run.database)?;
    }
    writeln!(
        r,
        "server CPU: the ota-server process; on PostgreSQL plus the cluster's postmaster and all \
         its child processes (backends, WAL writer, checkpointer, autovacuum...), user + system \
         time, children that exited included (column \"of it, PostgreSQL\")"
    )?;

    // Enrollment.
    writeln!(r)?;
    writeln!(
        r,
        "enrollment of {} devices through the API, {} per batch request (each all or nothing, \
         one durable commit); target >= 20,000 devices/s on each store",
        thousands(devices as f64),
        thousands(bench.batch.min(devices as usize) as f64)
    )?;
    writeln!(r)?;
    writeln!(
        r,
        "| store | time | devices/s | server CPU per device | of it, PostgreSQL | machine busy \
         (all cores) | target |"
    )?;
    writeln!(r, "|---|---|---|---|---|---|---|")?;
    for run in runs {
        let per = |s: f64| format!("{:.1} µs", s * 1e6 / devices.max(1) as f64);
        writeln!(
            r,
            "| {} | {:.2} s | {} | {} | {} | {:.0} % | {} |",
            run.backend.name(),
            run.enroll_secs,
            thousands(run.enroll_rate(devices)),
            per(run.enroll_cpu.iter().sum()),
            run.enroll_cpu.get(1).map_or_else(|| "–".into(), |s| per(*s)),
            run.enroll_busy * 100.0,
            verdict(run.enroll_rate(devices) >= 20_000.0)
        )?;
    }

    // First check-ins.
    let r2_bound = |f: &Figures| f.rate() >= 20_000.0 && f.quantile_us(0.99) < 25_000;
    writeln!(r)?;
    writeln!(
        r,
        "first check-in of each of the {} devices (each a durable write, through the group \
         commit), {conns} keep-alive connections; R2's bound: >= 20,000/s with p99 < 25 ms",
        thousands(devices as f64)
    )?;
    writeln!(r)?;
    writeln!(r, "| store | time | check-ins/s | {COMMON_HEAD} target |")?;
    writeln!(r, "|---|---|---|{COMMON_RULE}---|")?;
    for run in runs {
        let f = &run.first;
        writeln!(
            r,
            "| {} | {:.2} s | {} | {} {} |",
            run.backend.name(),
            f.secs,
            thousands(f.rate()),
            f.common(),
            verdict(r2_bound(f))
        )?;
    }

    // Steady check-ins.
    writeln!(r)?;
    writeln!(
        r,
        "check-ins, steady state: {} devices in turn, {conns} keep-alive connections, {rounds} \
         rounds of {secs} s (after 1 s warm-up) for each server, each store's server alternating \
         with the bare hyper baseline; reply {}",
        thousands(devices as f64),
        runs.first().map(|run| run.steady.sample.as_str()).unwrap_or_default()
    )?;
    writeln!(r)?;
    writeln!(r, "| store | server | check-ins/s | {COMMON_HEAD}")?;
    writeln!(r, "|---|---|---|{COMMON_RULE}")?;
    for run in runs {
        for (name, f) in [("ota-server", &run.steady), ("bare hyper", &run.bare)] {
            writeln!(
                r,
                "| {} | {name} | {} | {}",
                run.backend.name(),
                thousands(f.rate()),
                f.common()
            )?;
        }
    }
    writeln!(r)?;
    for run in runs {
        writeln!(
            r,
            "{}: ota-server / bare hyper {:.2} (throughput; rounds {}), {:.2} (server CPU per \
             check-in, bare / ota); R2 target >= 20,000/s with p99 < 25 ms: {}",
            run.backend.name(),
            run.steady.rate() / run.bare.rate(),
            run.checkin_rounds,
            run.bare.cpu_us() / run.steady.cpu_us(),
            verdict(r2_bound(&run.steady))
        )?;
        let share = |s: &f64| format!("{:.0} %", s / run.idle_secs.max(1e-9) * 100.0);
        writeln!(
            r,
            "  while bare hyper ran, the idle ota-server took {} of a core{}; over the whole \
             phase (both kinds of rounds) the server spent {:.1} µs per check-in it answered{}",
            run.idle_cpu.first().map(share).unwrap_or_default(),
            run.idle_cpu
                .get(1)
                .map(|s| format!(" and PostgreSQL {}", share(s)))
                .unwrap_or_default(),
            run.steady_all_cpu.iter().sum::<f64>() * 1e6 / run.steady.requests.max(1) as f64,
            run.steady_all_cpu
                .get(1)
                .map(|s| format!(
                    " (of it PostgreSQL {:.1} µs)",
                    s * 1e6 / run.steady.requests.max(1) as f64
                ))
                .unwrap_or_default()
        )?;
    }

    // Downloads.
    writeln!(r)?;
    writeln!(
        r,
        "downloads: {} B image ({}), {} keep-alive connections, {rounds} rounds of {} s (after \
         0.5 s warm-up) for each server, each store's server alternating with nginx",
        thousands(bench.download.bytes.len() as f64),
        bench.download.id.to_string().get(..12).unwrap_or_default(),
        bench.dl_conns,
        bench.dl_secs
    )?;
    writeln!(r)?;
    writeln!(r, "| store | server | MB/s | files/s | {COMMON_HEAD}")?;
    writeln!(r, "|---|---|---|---|{COMMON_RULE}")?;
    for run in runs {
        let mut rows = vec![("ota-server", &run.dl)];
        if let (Some(version), Some(f)) = (nginx_version, &run.nginx_dl) {
            rows.push((version, f));
        }
        for (name, f) in rows {
            writeln!(
                r,
                "| {} | {name} | {} | {} | {}",
                run.backend.name(),
                thousands(f.mbps()),
                thousands(f.rate()),
                f.common()
            )?;
        }
    }
    writeln!(r)?;
    for run in runs {
        match &run.nginx_dl {
            Some(n) => writeln!(
                r,
                "{}: ota-server / nginx {:.2} (MB/s; rounds {}), {:.2} (server CPU per file, \
                 nginx / ota); target >= 0.8: {}",
                run.backend.name(),
                run.dl.mbps() / n.mbps(),
                run.dl_rounds,
                n.cpu_us() / run.dl.cpu_us(),
                verdict(run.dl.mbps() / n.mbps() >= 0.8)
            )?,
            None => writeln!(
                r,
                "{}: ota-server / nginx: not measured (nginx absent)",
                run.backend.name()
            )?,
        }
    }

    // PostgreSQL next to SQLite.
    let find = |b| runs.iter().find(|run| run.backend == b);
    if let (Some(s), Some(p)) = (find(Backend::Sqlite), find(Backend::Postgres)) {
        writeln!(r)?;
        writeln!(r, "PostgreSQL / SQLite, same run:")?;
        writeln!(r)?;
        writeln!(r, "| measure | SQLite | PostgreSQL | PostgreSQL / SQLite | target |")?;
        writeln!(r, "|---|---|---|---|---|")?;
        let mut row = |what: &str, a: f64, b: f64, show: &dyn Fn(f64) -> String, target: &str| {
            writeln!(r, "| {what} | {} | {} | {:.2} | {target} |", show(a), show(b), b / a)
        };
        let count = |v: f64| thousands(v);
        let millis = |v: f64| format!("{:.2} ms", v / 1000.0);
        let micros = |v: f64| format!("{v:.1} µs");
        let ratio = |v: f64| format!("{v:.2}");
        let steady = p.steady.rate() / s.steady.rate();
        row(
            "steady check-ins/s",
            s.steady.rate(),
            p.steady.rate(),
            &count,
            &format!(">= 0.7: {}", verdict(steady >= 0.7)),
        )?;
        row("steady check-ins, p99", s.steady.p99_us(), p.steady.p99_us(), &millis, "–")?;
        row(
            "steady check-ins/s over the same store's bare hyper",
            s.steady.rate() / s.bare.rate(),
            p.steady.rate() / p.bare.rate(),
            &ratio,
            "– (drift between the stores' turns cancels)",
        )?;
        row("steady: server CPU per check-in", s.steady.cpu_us(), p.steady.cpu_us(), &micros, "–")?;
        let whole = |run: &StoreRun| {
            run.steady_all_cpu.iter().sum::<f64>() * 1e6 / run.steady.requests.max(1) as f64
        };
        row(
            "steady: server CPU per check-in, whole phase (baseline rounds' leftovers included)",
            whole(s),
            whole(p),
            &micros,
            "–",
        )?;
        row("first check-ins/s", s.first.rate(), p.first.rate(), &count, "–")?;
        row("first check-ins, p99", s.first.p99_us(), p.first.p99_us(), &millis, "–")?;
        row("first: server CPU per check-in", s.first.cpu_us(), p.first.cpu_us(), &micros, "–")?;
        row("enrollment, devices/s", s.enroll_rate(devices), p.enroll_rate(devices), &count, "–")?;
        row("downloads, MB/s", s.dl.mbps(), p.dl.mbps(), &count, "–")?;
    }
    for run in runs.iter().filter(|run| !run.wal.is_empty()) {
        writeln!(r)?;
        let per = |phase: &str, bytes: f64| match phase {
            "enrollment" => format!(", {:.0} B per device", bytes / devices.max(1) as f64),
            "first check-ins" => format!(", {:.0} B per check-in", bytes / devices.max(1) as f64),
            "steady check-ins" => {
                format!(", {:.0} B per check-in", bytes / run.steady.requests.max(1) as f64)
            }
            _ => String::new(),
        };
        let wal: Vec<String> = run
            .wal
            .iter()
            .map(|(phase, bytes)| format!("{phase} {:.1} MB{}", bytes / 1e6, per(phase, *bytes)))
            .collect();
        writeln!(r, "{}: WAL written: {}", run.backend.name(), wal.join("; "))?;
        if let Some(activity) = &run.pg_activity {
            writeln!(r, "{}: {activity}", run.backend.name())?;
        }
    }
    writeln!(r)?;
    writeln!(
        r,
        "load average {load_start} at the start, {} at the end (the benchmark's own load \
         included)",
        loadavg()
    )?;
    Ok(report)
}

// ----- nginx -----

mod nginx {
    use super::*;

    pub struct Nginx {
        pub proc: Proc,
        pub addr: SocketAddr,
        pub version: String,
        bin: PathBuf,
        conf: PathBuf,
        prefix: PathBuf,
    }

    impl Drop for Nginx {
        fn drop(&mut self) {
            // Stop the master and its workers (a SIGKILL to the master would leave them).
            let _ = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.conf)
                .arg("-p")
                .arg(&self.prefix)
                .arg("-e")
                .arg(self.prefix.join("error.log"))
                .args(["-s", "stop"])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.proc.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `R2_NGINX` (a path, or `none`), else `nginx` on `PATH` or in `/usr/sbin`.
    pub fn find() -> Option<PathBuf> {
        if let Some(given) = std::env::var_os("R2_NGINX") {
            return (given != "none").then(|| PathBuf::from(given));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join("nginx"))
            .chain([PathBuf::from("/usr/sbin/nginx")])
            .find(|p| p.is_file())
    }

    /// Starts nginx serving `dir/www` on a free loopback port.
    pub fn start(bin: &Path, dir: &Path) -> Result<Nginx> {
        let prefix = dir.join("nginx");
        for sub in ["", "tmp"] {
            std::fs::create_dir_all(prefix.join(sub))?;
        }
        // Workers may run as `nobody`: let them read the files.
        use std::os::unix::fs::PermissionsExt;
        for d in [dir.to_path_buf(), dir.join("www")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let p = prefix.display();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;
worker_processes 2;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    default_type application/octet-stream;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location / {{ }}
    }}
}}
",
                www = dir.join("www").display()
            ),
        )?;
        let version = Command::new(bin)
            .arg("-v")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().replace("nginx version: ", ""))
            .unwrap_or_else(|| "nginx".into());
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut nginx = Nginx {
            proc: Proc { child },
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            version,
            bin: bin.to_owned(),
            conf,
            prefix,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = nginx.proc.child.try_wait()? {
                let log =
                    std::fs::read_to_string(nginx.prefix.join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited ({status}): {log}").into());
            }
            if std::net::TcpStream::connect(nginx.addr).is_ok() {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                return Err("nginx did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ----- the bare hyper baseline -----

mod bare {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::header::{CONTENT_TYPE, HeaderValue};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    use super::Result;

    async fn checkin(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let _body = req.into_body().collect().await?.to_bytes();
        let mut response = Response::new(Full::new(Bytes::from_static(b"{\"offer\":null}")));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
    }

    /// Serves on a loopback port until killed.
    pub fn main() -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("listening on http://{}", listener.local_addr()?);
            std::io::Write::flush(&mut std::io::stdout())?;
            loop {
                let (stream, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(checkin))
                        .await;
                });
            }
        })
    }
}

// ----- the load generator -----

mod load {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const WARMUP: u8 = 0;
    const MEASURE: u8 = 1;
    const DONE: u8 = 2;

    struct Shared {
        phase: AtomicU8,
        next: AtomicU64,
        count: Option<u64>,
        tokens: Vec<String>,
        addr: SocketAddr,
        head: String,
        body: Vec<u8>,
    }

    #[derive(Default)]
    struct ConnStats {
        latencies_us: Vec<u32>,
        errors: u64,
        bytes: u64,
        sample: Option<String>,
        first_error: Option<String>,
    }

    /// Total CPU time of `pid` and its child processes (nginx workers; PostgreSQL's backends and
    /// background processes, children of the postmaster), user + system, seconds. Each process
    /// counts with its children that have exited and been waited for (`cutime`, `cstime`), so a
    /// child that exits between two readings (an autovacuum worker, a backend) is not lost.
    pub(super) fn cpu_secs(pid: u32) -> f64 {
        fn ticks(pid: &str) -> u64 {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return 0;
            };
            // After the command name in parentheses: fields 3..; utime, stime, cutime and
            // cstime are 14 to 17.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            (11..15).map(|i| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)).sum()
        }
        let mut total = ticks(&pid.to_string());
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                total += children.split_whitespace().map(ticks).sum::<u64>();
            }
        }
        // USER_HZ is 100 on Linux.
        total as f64 / 100.0
    }

    /// Busy and total jiffies of all cores (`/proc/stat`).
    pub(super) fn machine_jiffies() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        (total - idle, total)
    }

    fn header_end(buf: &[u8]) -> Option<usize> {
        buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
    }

    /// Status, `Content-Length` and whether the server closes the connection.
    fn parse_head(head: &[u8]) -> Result<(u16, usize, bool)> {
        let text = std::str::from_utf8(head)?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let (mut length, mut close) = (None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("transfer-encoding {value} not supported").into());
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        Ok((status, length.ok_or("no content-length")?, close))
    }

    /// One request and its response. Returns status, body bytes and a prefix of the body.
    async fn exchange(
        stream: &mut TcpStream,
        request: &[u8],
        buf: &mut [u8],
    ) -> Result<(u16, usize, bool, String)> {
        stream.write_all(request).await?;
        let mut filled = 0;
        let end = loop {
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err("connection closed".into());
            }
            filled += n;
            if let Some(end) = header_end(&buf[..filled]) {
                break end;
            }
            if filled == buf.len() {
                return Err("response head too large".into());
            }
        };
        let (status, length, close) = parse_head(&buf[..end])?;
        let prefix = String::from_utf8_lossy(&buf[end..filled.min(end + 120).min(end + length)])
            .into_owned();
        let mut have = filled - end;
        while have < length {
            let n = stream.read(buf).await?;
            if n == 0 {
                return Err("connection closed in the body".into());
            }
            have += n;
        }
        if have > length {
            return Err("more bytes than the response".into());
        }
        Ok((status, length, close, prefix))
    }

    async fn connection(shared: Arc<Shared>) -> ConnStats {
        let mut stats = ConnStats::default();
        let mut request = Vec::with_capacity(512);
        let mut buf = vec![0u8; 256 << 10];
        let mut stream: Option<TcpStream> = None;
        loop {
            if shared.phase.load(Ordering::Relaxed) == DONE {
                break;
            }
            let i = shared.next.fetch_add(1, Ordering::Relaxed);
            if shared.count.is_some_and(|c| i >= c) {
                break;
            }
            let token = &shared.tokens[(i % shared.tokens.len() as u64) as usize];
            request.clear();
            request.extend_from_slice(shared.head.as_bytes());
            request.extend_from_slice(b"Authorization: Bearer ");
            request.extend_from_slice(token.as_bytes());
            request.extend_from_slice(b"\r\n\r\n");
            request.extend_from_slice(&shared.body);
            let start = Instant::now();
            let result = async {
                if stream.is_none() {
                    let s = TcpStream::connect(shared.addr).await?;
                    s.set_nodelay(true)?;
                    stream = Some(s);
                }
                exchange(stream.as_mut().unwrap(), &request, &mut buf).await
            }
            .await;
            let elapsed = start.elapsed();
            let measuring = shared.phase.load(Ordering::Relaxed) == MEASURE;
            let failure = match result {
                Ok((status, length, close, prefix)) => {
                    if close {
                        stream = None;
                    }
                    if stats.sample.is_none() {
                        stats.sample = Some(prefix.clone());
                    }
                    if measuring {
                        stats.latencies_us.push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                        stats.bytes += length as u64;
                    }
                    (status != 200).then(|| format!("status {status}: {prefix}"))
                }
                Err(e) => {
                    stream = None;
                    // Do not spin if the server is gone.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Some(e.to_string())
                }
            };
            if let Some(f) = failure {
                if measuring {
                    stats.errors += 1;
                }
                stats.first_error.get_or_insert(f);
            }
        }
        stats
    }

    pub fn main(args: &[String]) -> Result<()> {
        let mut opts = BTreeMap::new();
        for pair in args.chunks(2) {
            let [k, v] = pair else { return Err("--load takes --key value pairs".into()) };
            opts.insert(k.trim_start_matches("--").to_owned(), v.clone());
        }
        let get = |k: &str| opts.get(k).cloned().ok_or_else(|| format!("--load needs --{k}"));
        let addr: SocketAddr = get("addr")?.parse()?;
        let tokens: Vec<String> = std::fs::read_to_string(get("tokens")?)?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if tokens.is_empty() {
            return Err("no tokens".into());
        }
        let body = get("body")?.into_bytes();
        let mut head = format!("{} {} HTTP/1.1\r\nHost: {addr}\r\n", get("method")?, get("path")?);
        if !body.is_empty() {
            write!(head, "Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())?;
        }
        let conns: u64 = get("conns")?.parse()?;
        let threads: usize = get("threads")?.parse()?;
        let warmup: f64 = get("warmup")?.parse()?;
        let secs: f64 = get("secs")?.parse()?;
        let count: Option<u64> = opts.get("count").map(|c| c.parse()).transpose()?;
        // The server, then its database server if it has one: `PID[,PID]`.
        let watch: Vec<u32> = get("watch")?.split(',').map(str::parse).collect::<Result<_, _>>()?;
        let watched = || -> Vec<f64> { watch.iter().map(|p| cpu_secs(*p)).collect() };

        let runtime = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
        };
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(if count.is_some() { MEASURE } else { WARMUP }),
            next: AtomicU64::new(0),
            count,
            tokens,
            addr,
            head,
            body,
        });
        let (stats, secs, load_cpu, server_cpu, machine_busy) = runtime.block_on(async {
            let mut tasks: Vec<_> =
                (0..conns).map(|_| tokio::spawn(connection(shared.clone()))).collect();
            if count.is_none() {
                tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
            }
            let (t0, load0, server0, machine0) =
                (Instant::now(), cpu_secs(std::process::id()), watched(), machine_jiffies());
            let mut all = Vec::new();
            if count.is_some() {
                // Until every request is answered.
                for t in tasks.drain(..) {
                    all.push(t.await?);
                }
            } else {
                shared.phase.store(MEASURE, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                shared.phase.store(DONE, Ordering::Relaxed);
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let (load1, server1, machine1) =
                (cpu_secs(std::process::id()), watched(), machine_jiffies());
            for t in tasks {
                all.push(t.await?);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
                all,
                elapsed,
                load1 - load0,
                server1.iter().zip(&server0).map(|(b, a)| b - a).collect::<Vec<f64>>(),
                (machine1.0 - machine0.0) as f64 / (machine1.1 - machine0.1).max(1) as f64,
            ))
        })?;
        let mut histogram = BTreeMap::new();
        for us in stats.iter().flat_map(|s| &s.latencies_us) {
            *histogram.entry(u64::from(*us) / BUCKET_US).or_insert(0u64) += 1;
        }
        let figures = Figures {
            requests: histogram.values().sum(),
            errors: stats.iter().map(|s| s.errors).sum(),
            secs,
            bytes: stats.iter().map(|s| s.bytes).sum(),
            histogram: histogram.into_iter().collect(),
            load_cpu_s: load_cpu,
            server_cpu_s: server_cpu.iter().sum(),
            watched_cpu_s: server_cpu,
            machine_busy,
            sample: stats.iter().find_map(|s| s.sample.clone()).unwrap_or_default(),
            first_error: stats.iter().find_map(|s| s.first_error.clone()).unwrap_or_default(),
        };
        println!("{}", serde_json::to_string(&figures)?);
        Ok(())
    }
}
