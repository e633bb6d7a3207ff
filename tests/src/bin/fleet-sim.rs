//! `fleet-sim`: many simulated devices, each running the real `firmware` boot logic and update
//! agent on a simulated flash, against a real ota-server. See `fleet-sim --help`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use firmware::image::ImageId;
use ota_proto::client::Client;
use ota_proto::{BoardName, EnvironmentName};
use tests::fleet::device::Behaviour;
use tests::fleet::{Fleet, Options};

/// Simulate a fleet of devices against an ota-server: each enrolls (or takes its enrollment
/// over), starts on the factory image, then checks in, downloads offers with Range, installs
/// them with the real update agent, resets into the real boot logic and confirms — or, for the
/// unhealthy share, lets the boot logic revert. Devices announce delta support (see
/// --delta-ratio) and install an image offered as a patch with the agent's own patch code,
/// resumed with Range after a power cut like an image; a patch that fails is reported and the
/// image then comes whole. Devices ride out a server outage (backing off and retrying) up to
/// --outage-limit. Stops when no device has work left and prints a summary (bytes downloaded
/// per transport, image and patch). Exit status 1 if any device is bricked, the firmware did something it must never
/// do, or a device could not talk to the server.
#[derive(Debug, Parser)]
#[command(name = "fleet-sim", version)]
struct Cli {
    /// Server URL (http://HOST:PORT), or the URLs of several replicas separated by commas:
    /// each request of each device goes to one of them at random, and to another when it
    /// cannot be delivered.
    #[arg(long, env = "IMAGER_SERVER")]
    server: String,
    /// An admin token (enrolls the devices).
    #[arg(long, env = "IMAGER_TOKEN")]
    token: String,
    /// Number of devices.
    #[arg(long)]
    devices: usize,
    /// Their board (see `imager boards`).
    #[arg(long)]
    board: BoardName,
    /// Their environment.
    #[arg(long)]
    environment: EnvironmentName,
    /// What every device runs at the start: a `.fwi` file, or the id of an image on the server.
    #[arg(long)]
    factory: String,
    /// Device ids are PREFIX-00000, PREFIX-00001, ...
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Share of devices (0..1) that find a new image unhealthy: they never confirm it, so the
    /// boot logic reverts it, and they report that.
    #[arg(long, default_value_t = 0.0)]
    fail_ratio: f64,
    /// Probability (0..1) that power is cut at a random flash operation of each download, swap
    /// and revert.
    #[arg(long, default_value_t = 0.0)]
    power_cut_ratio: f64,
    /// Share of devices (0..1, a stable choice) that announce delta support in their check-in,
    /// so the server may offer them patches (docs/delta.md); 0: every device takes full images.
    #[arg(long, default_value_t = 1.0)]
    delta_ratio: f64,
    /// Pause between rounds in which no device got an offer, in milliseconds.
    #[arg(long, default_value_t = 200)]
    checkin_interval: u64,
    /// Stop after this many rounds without an offer even though a rollout is still rolling.
    #[arg(long, default_value_t = 50)]
    max_idle_rounds: u32,
    /// Devices updating at once at most.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seed for power cuts and chunk sizes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds a device keeps retrying a request while the server is unreachable (or
    /// restarting, or overloaded) before the run stops with an error. Setting the fleet up
    /// does not wait.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    outage_limit: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    for (name, v) in [
        ("--fail-ratio", cli.fail_ratio),
        ("--power-cut-ratio", cli.power_cut_ratio),
        ("--delta-ratio", cli.delta_ratio),
    ] {
        if !(0.0..=1.0).contains(&v) {
            eprintln!("error: {name} must be between 0 and 1, got {v}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(summary) => {
            if cli.json {
                println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            } else {
                print!("{}", summary.to_text());
            }
            let bad =
                summary.bricked > 0 || !summary.anomalies.is_empty() || summary.error_count > 0;
            if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<tests::fleet::Summary> {
    let factory = match (std::fs::read(&cli.factory), ImageId::from_hex(&cli.factory)) {
        (Ok(bytes), _) => bytes,
        (Err(_), Some(id)) => {
            let client = Client::new(&cli.server, &cli.token)?;
            let file = client.image_file(id).await;
            file.with_context(|| format!("factory image {id}"))?.to_vec()
        }
        (Err(e), None) => {
            return Err(e).with_context(|| format!("cannot read factory image {}", cli.factory));
        }
    };
    let options = Options {
        server: cli.server.clone(),
        token: cli.token.clone(),
        devices: cli.devices,
        board: cli.board.clone(),
        environment: cli.environment.clone(),
        prefix: cli.prefix.clone(),
        behaviour: Behaviour {
            fail_ratio: cli.fail_ratio,
            power_cut_ratio: cli.power_cut_ratio,
            delta_ratio: cli.delta_ratio,
        },
        checkin_interval: Duration::from_millis(cli.checkin_interval),
        max_idle_rounds: cli.max_idle_rounds,
        concurrency: cli.concurrency,
        seed: cli.seed,
        verbose: !cli.json,
        outage_limit: Duration::from_secs(cli.outage_limit),
    };
    let mut fleet = Fleet::enroll(options, &factory).await?;
    fleet.run().await
}
