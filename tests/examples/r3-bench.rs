//! Reference scenario R3: 10,000 simulated devices (1,000 in test, 9,000 in prod), one release
//! to test, then the promotion to prod with its staged rollout, until every device confirmed.
//! Prints wall time, check-ins, bytes served and the server's peak RSS, for each deployment in
//! `R3_DEPLOYMENTS` (default `sqlite,replicas`): one server on the embedded SQLite default, and
//! three replicas on PostgreSQL and a Garage bucket (started here, durable settings) with
//! fleet-sim spreading every device's requests over them.
//!
//! Run: `scripts/bench.sh r3`, or, with the release binaries built (`cargo build --release -p
//! imager -p ota-server`), `cargo run --release -p tests --example r3-bench [-- TEST_DEVICES
//! PROD_DEVICES]`. Its figures (`r3.<deployment>.*`) are recorded through `benchkit`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benchkit::Figure;
use tests::fleet::device::Behaviour;
use tests::fleet::{Fleet, Options, Summary};

fn imager(args: &[&str], server: Option<(&str, &str)>) -> Result<String> {
    let mut c = Command::new(benchkit::sibling_binary("imager")?);
    c.args(args);
    if let Some((url, token)) = server {
        c.env("IMAGER_SERVER", url).env("IMAGER_TOKEN", token);
    }
    let out = c.output()?;
    if !out.status.success() {
        bail!("imager {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Peak resident set of a process, in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Stops the server however the benchmark ends.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn options(url: &str, token: &str, env: &str, devices: usize, prefix: &str) -> Options {
    Options {
        server: url.into(),
        token: token.into(),
        devices,
        board: "microbit".parse().expect("a board name"),
        environment: env.parse().expect("an environment name"),
        prefix: prefix.into(),
        // Full images: R3 measures the server's check-ins and downloads as recorded before
        // patches existed (R4 measures patches).
        behaviour: Behaviour { delta_ratio: 0.0, ..Behaviour::default() },
        checkin_interval: Duration::from_millis(100),
        max_idle_rounds: 100,
        concurrency: 512,
        seed: 3,
        verbose: true,
        outage_limit: Duration::from_secs(120),
    }
}

fn line(what: &str, s: &Summary) {
    println!(
        "  {what:<5} {:>6} devices  {:>5.1} s  {:>3} rounds  {:>7} check-ins  {:>6} confirmed  {:>11} bytes",
        s.devices, s.seconds, s.rounds, s.checkins, s.confirmed, s.downloaded_bytes
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n_test, n_prod) =
        (args.first().copied().unwrap_or(1_000), args.get(1).copied().unwrap_or(9_000));
    let dir = tempfile::tempdir()?;
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/microbit");
    let (os, app) = (fixtures.join("os.elf"), fixtures.join("app.elf"));
    imager(&["keygen", "--out", &p("build")], None)?;
    imager(&["keygen", "--out", &p("prod")], None)?;
    for v in ["1.0.0", "2.0.0"] {
        imager(
            &[
                "fuse",
                "--board",
                "microbit",
                "--os",
                &os.to_string_lossy(),
                "--app",
                &app.to_string_lossy(),
                "--version",
                v,
                "--key",
                &p("build.pem"),
                "--out",
                &p(&format!("{v}.fwi")),
            ],
            None,
        )?;
    }
    let id = |v: &str| -> Result<String> {
        let json: serde_json::Value =
            serde_json::from_str(&imager(&["inspect", "--json", &p(&format!("{v}.fwi"))], None)?)?;
        Ok(json["id"].as_str().context("id")?.to_owned())
    };
    let v2 = id("2.0.0")?;

    let deployments = std::env::var("R3_DEPLOYMENTS").unwrap_or_else(|_| "sqlite,replicas".into());
    let cpu = benchkit::cpu_model();
    println!("R3 on {} cores ({cpu})", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let mut walls = Vec::new();
    for deployment in deployments.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let wall = run(deployment, &p, &v2, n_test, n_prod).await?;
        walls.push((deployment.to_owned(), wall));
    }
    if walls.len() > 1 {
        let shown: Vec<String> = walls.iter().map(|(d, w)| format!("{d} {w:.1} s")).collect();
        println!("R3 wall times, same run: {} (target: under 60 s each)", shown.join(", "));
    }
    Ok(())
}

/// The servers of one deployment, stopped however the benchmark ends.
struct Deployment {
    urls: Vec<String>,
    token: String,
    children: Vec<Stop>,
    // Kept alive while the servers run.
    _pg: Option<testkit::pg::Postgres>,
    _garage: Option<testkit::garage::Garage>,
}

/// Starts `deployment`: `sqlite` (one server) or `replicas` (three, on PostgreSQL and Garage).
fn deploy(deployment: &str, p: &dyn Fn(&str) -> String) -> Result<Deployment> {
    let server_bin = benchkit::sibling_binary("ota-server")?;
    /// What a deployment is made of, before its servers start.
    struct Shape {
        replicas: usize,
        database: Option<String>,
        pg: Option<testkit::pg::Postgres>,
        garage: Option<testkit::garage::Garage>,
        extra: Vec<String>,
        env: Vec<(String, String)>,
    }
    let shape = match deployment {
        "sqlite" => Shape {
            replicas: 1,
            database: None,
            pg: None,
            garage: None,
            extra: vec![],
            env: vec![],
        },
        "replicas" => {
            let pg = testkit::pg::Postgres::start(testkit::pg::Options { fast: false });
            let garage = testkit::garage::Garage::start();
            let bucket = garage.create_bucket();
            let extra = vec![
                "--blobs".into(),
                format!("s3://{bucket}"),
                "--s3-endpoint".into(),
                garage.endpoint(),
            ];
            let env = garage.aws_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            Shape {
                replicas: 3,
                database: Some(pg.create_database()),
                pg: Some(pg),
                garage: Some(garage),
                extra,
                env,
            }
        }
        other => bail!("R3_DEPLOYMENTS: unknown deployment {other:?} (sqlite or replicas)"),
    };
    let Shape { replicas: n, database, pg, garage, extra, env } = shape;
    let data = p(&format!("data-{deployment}"));
    let init = Command::new(&server_bin)
        .args([
            "init",
            "--data",
            &data,
            "--build-key",
            &p("build.pub.pem"),
            "--prod-key",
            &p("prod.pub.pem"),
        ])
        .args(database.iter().flat_map(|d| ["--database", d.as_str()]))
        .output()?;
    if !init.status.success() {
        bail!("init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let init = String::from_utf8_lossy(&init.stdout).into_owned();
    let token = init
        .lines()
        .find_map(|l| l.strip_prefix("admin token: "))
        .context("admin token")?
        .to_owned();
    let (mut urls, mut children) = (Vec::new(), Vec::new());
    for i in 0..n {
        let own = format!("{data}-{i}");
        std::fs::create_dir_all(&own)?;
        let mut child = Command::new(&server_bin)
            .args(["serve", "--data", if i == 0 { &data } else { &own }, "--listen", "127.0.0.1:0"])
            .args(database.iter().flat_map(|d| ["--database", d.as_str()]))
            .args(&extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("OTA_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        children.push(Stop(child));
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        urls.push(
            first.trim().strip_prefix("listening on ").context("server did not start")?.to_owned(),
        );
    }
    Ok(Deployment { urls, token, children, _pg: pg, _garage: garage })
}

/// One R3 run on `deployment`; returns its wall time.
async fn run(
    deployment: &str,
    p: &dyn Fn(&str) -> String,
    v2: &str,
    n_test: usize,
    n_prod: usize,
) -> Result<f64> {
    let d = deploy(deployment, p)?;
    let url = d.urls.join(",");
    let token = d.token.clone();
    let server = Some((url.as_str(), token.as_str()));
    imager(&["push", &p("1.0.0.fwi")], server)?;
    imager(&["push", &p("2.0.0.fwi")], server)?;
    let factory = std::fs::read(p("1.0.0.fwi"))?;

    println!(
        "R3 on {deployment}: {n_test} test + {n_prod} prod simulated micro:bits, {} server process(es)",
        d.urls.len()
    );
    let setup = Instant::now();
    let mut test = Fleet::enroll(options(&url, &token, "test", n_test, "qa"), &factory).await?;
    let mut prod = Fleet::enroll(options(&url, &token, "prod", n_prod, "field"), &factory).await?;
    println!(
        "  enrolled and provisioned {} devices in {:.1} s (not timed below)",
        n_test + n_prod,
        setup.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    imager(&["release", "test", v2], server)?;
    let t = test.run().await?;
    imager(&["promote", v2, "--to", "prod", "--key", &p("prod.pem")], server)?;
    let s = prod.run().await?;
    let wall = started.elapsed().as_secs_f64();
    let d_rss: Vec<f64> = d.children.iter().map(|c| peak_rss_mib(c.0.id())).collect();
    let rss: Vec<String> = d_rss.iter().map(|r| format!("{r:.0}")).collect();
    let own = peak_rss_mib(std::process::id());
    // Per replica counters, summed.
    let mut totals = [0u64; 3];
    for replica in &d.urls {
        let metrics = ota_proto::client::Client::new(replica, &token)?.metrics().await?;
        for (total, name) in totals.iter_mut().zip([
            "ota_checkins_total ",
            "ota_downloads_total ",
            "ota_download_bytes_total ",
        ]) {
            *total += metrics
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    drop(d);

    line("test", &t);
    line("prod", &s);
    let confirmed = t.confirmed + s.confirmed;
    println!(
        "  wall {wall:.1} s (release to test .. every device confirmed), {} of {} devices confirmed, {} bricked",
        confirmed,
        n_test + n_prod,
        t.bricked + s.bricked
    );
    let anomalies = t.anomalies.len() + s.anomalies.len();
    let errors = t.error_count + s.error_count;
    println!("  anomalies {anomalies}, device errors {errors}");
    println!(
        "  servers: {} check-ins, {} downloads, {} bytes served, peak RSS {} MiB",
        totals[0],
        totals[1],
        totals[2],
        rss.join(" + ")
    );
    println!("  simulator: peak RSS {own:.0} MiB for {} devices", n_test + n_prod);
    if confirmed as usize != n_test + n_prod {
        bail!("not every device confirmed");
    }
    let figure = |what: &str| format!("r3.{deployment}.{what}");
    Figure::new(figure("wall"), wall, "s").record()?;
    Figure::new(figure("devices"), (n_test + n_prod) as f64, "devices").record()?;
    Figure::new(figure("bricked"), (t.bricked + s.bricked) as f64, "devices").record()?;
    Figure::new(figure("checkins"), totals[0] as f64, "check-ins").record()?;
    Figure::new(figure("download-bytes"), totals[2] as f64, "B").record()?;
    let server_rss: f64 = d_rss.iter().sum();
    Figure::new(figure("server-peak-rss"), server_rss, "MiB").record()?;
    Figure::new(figure("simulator-peak-rss"), own, "MiB").record()?;
    Ok(wall)
}
