//! The fleet simulator: many [`device::SimulatedDevice`]s against a real ota-server.
//!
//! A [`Fleet`] enrolls its devices (or takes their enrollment over with a fresh token),
//! provisions each with a factory image, then [`Fleet::run`]s rounds: in each round every
//! device checks in once, and those offered an image update (download, reset, confirm or
//! revert), many at a time on tokio tasks. It stops when a round had no offer and no rollout
//! for its environment and board is still rolling — or after `max_idle_rounds` rounds without
//! an offer, if one is (a stage waiting on devices that are not there).

pub mod client;
pub mod device;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use firmware::image::{ImageId, TrustedKey};
use firmware::sim::device::Identity;
use firmware::sim::device::SimDevice;
use ota_server::api::{self, RolloutState};
use serde::Serialize;
use tokio::task::JoinSet;

use client::Client;
use device::{Behaviour, SimulatedDevice, Spans, Step, Tally};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Server URL.
    pub server: String,
    /// An admin token (enrolls devices, reads keys and rollouts).
    pub token: String,
    /// Number of devices.
    pub devices: usize,
    /// Their board.
    pub board: String,
    /// Their environment.
    pub environment: String,
    /// Device ids are `PREFIX-00000` ...
    pub prefix: String,
    /// How devices behave.
    pub behaviour: Behaviour,
    /// Pause between rounds that had no offer.
    pub checkin_interval: Duration,
    /// Rounds without any offer after which the run stops although a rollout is rolling.
    pub max_idle_rounds: u32,
    /// Devices updating at the same time at most.
    pub concurrency: usize,
    /// Seed for power cuts and chunking.
    pub seed: u64,
    /// Print a line per round to stderr (what the devices did, where the rollout stands).
    pub verbose: bool,
}

/// The outcome of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Devices.
    pub devices: usize,
    /// Devices per running image id (`none` if slot A holds no readable image).
    pub running: BTreeMap<String, usize>,
    /// Updates confirmed.
    pub confirmed: u64,
    /// Updates reverted by the boot logic.
    pub reverted: u64,
    /// Offers refused or failed.
    pub failed: u64,
    /// Devices that can no longer boot.
    pub bricked: u64,
    /// Power cuts survived, all phases.
    pub power_cuts: u64,
    /// Power cuts survived while downloading, swapping and reverting.
    pub power_cuts_by_phase: BTreeMap<String, u64>,
    /// Things the firmware must never do (the run exits non-zero if there are any).
    pub anomalies: Vec<String>,
    /// Errors talking to the server (the first 20), and how many there were.
    pub errors: Vec<String>,
    /// Number of errors.
    pub error_count: usize,
    /// Check-ins made.
    pub checkins: u64,
    /// Offers received.
    pub offers: u64,
    /// Image bytes downloaded.
    pub downloaded_bytes: u64,
    /// Rounds run.
    pub rounds: u32,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Why the run stopped.
    pub stopped: String,
}

impl Summary {
    /// A readable account.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} devices, {} rounds in {:.1} s ({})\n",
            self.devices, self.rounds, self.seconds, self.stopped
        );
        for (image, n) in &self.running {
            let short = if image.len() > 12 { &image[..12] } else { image };
            out.push_str(&format!("  running {short}: {n} devices\n"));
        }
        for a in &self.anomalies {
            out.push_str(&format!("  ANOMALY: {a}\n"));
        }
        for e in &self.errors {
            out.push_str(&format!("  error: {e}\n"));
        }
        out.push_str(&format!(
            "  confirmed {}, reverted {}, failed {}, bricked {}\n  {} check-ins, {} offers, {} bytes downloaded, {} power cuts survived\n",
            self.confirmed,
            self.reverted,
            self.failed,
            self.bricked,
            self.checkins,
            self.offers,
            self.downloaded_bytes,
            self.power_cuts
        ));
        if self.power_cuts > 0 {
            let phases: Vec<String> =
                self.power_cuts_by_phase.iter().map(|(p, n)| format!("{n} in {p}")).collect();
            out.push_str(&format!("  power cuts: {}\n", phases.join(", ")));
        }
        out
    }
}

/// A simulated fleet.
pub struct Fleet {
    client: Client,
    options: Options,
    devices: Vec<SimulatedDevice>,
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("devices", &self.devices.len()).finish()
    }
}

fn trusted(hex_key: &str) -> Result<TrustedKey> {
    let raw: [u8; 32] = hex::decode(hex_key)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| anyhow!("server sent a malformed key {hex_key:?}"))?;
    TrustedKey::from_bytes(&raw).map_err(|e| anyhow!("server sent an unusable key: {e}"))
}

impl Fleet {
    /// Enrolls `options.devices` devices (taking over existing enrollments with a new token)
    /// and provisions each with `factory` (a `.fwi` file) in slot A.
    pub async fn enroll(options: Options, factory: &[u8]) -> Result<Fleet> {
        let client = Client::new(&options.server)?;
        let token = options.token.clone();
        let env: api::EnvironmentInfo = client
            .get(&format!("/api/v1/environments/{}", options.environment), &token)
            .await?
            .json()
            .context("reading the environment")?;
        let keys: Vec<api::BuildKey> = client.get("/api/v1/build-keys", &token).await?.json()?;
        let identity = Identity {
            board: options.board.clone(),
            build_keys: keys.iter().map(|k| trusted(&k.public_key)).collect::<Result<_>>()?,
            environment: options.environment.clone(),
            environment_keys: vec![trusted(&env.release_public_key)?],
        };
        let catalog = boards::Catalog::builtin()?;
        let layout = catalog
            .get(&options.board)?
            .flash_layout()
            .map_err(|e| anyhow!("board {}: {e:?}", options.board))?;
        let mut template = SimDevice::new(layout, identity);
        template.provision(factory).map_err(|e| anyhow!("factory image: {e}"))?;
        template.boot().map_err(|e| anyhow!("the factory image does not boot: {e}"))?;

        let mut set = JoinSet::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        for i in 0..options.devices {
            let id = format!("{}-{i:05}", options.prefix);
            let (client, token, board, environment, limit) = (
                client.clone(),
                token.clone(),
                options.board.clone(),
                options.environment.clone(),
                limit.clone(),
            );
            set.spawn(async move {
                let _permit = limit.acquire().await;
                let new = api::NewDevice { id: id.clone(), board, environment };
                let r = client.post("/api/v1/devices", &token, &new).await?;
                let created: api::DeviceCreated = if r.code().as_deref() == Some("exists") {
                    // Take the enrollment over, but only if it is the same kind of device.
                    let known: api::DeviceDetail =
                        client.get(&format!("/api/v1/devices/{id}"), &token).await?.json()?;
                    if known.device.environment != new.environment
                        || known.device.board != new.board
                    {
                        bail!(
                            "device {id} is enrolled in {} on {}, not {} on {}",
                            known.device.environment,
                            known.device.board,
                            new.environment,
                            new.board
                        );
                    }
                    client
                        .post(
                            &format!("/api/v1/devices/{id}/token"),
                            &token,
                            &serde_json::json!({}),
                        )
                        .await?
                        .json()
                        .with_context(|| format!("taking over device {id}"))?
                } else {
                    r.json().with_context(|| format!("enrolling device {id}"))?
                };
                if created.device.environment != new.environment
                    || created.device.board != new.board
                {
                    bail!(
                        "device {id} is enrolled in {} on {}, not {} on {}",
                        created.device.environment,
                        created.device.board,
                        new.environment,
                        new.board
                    );
                }
                anyhow::Ok((i, created.token))
            });
        }
        let mut tokens = vec![String::new(); options.devices];
        while let Some(joined) = set.join_next().await {
            let (i, token) = joined??;
            tokens[i] = token;
        }
        let spans = Arc::new(Spans::default());
        let devices = tokens
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                let id = format!("{}-{i:05}", options.prefix);
                SimulatedDevice::new(
                    id,
                    token,
                    template.clone(),
                    options.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    spans.clone(),
                )
            })
            .collect();
        Ok(Fleet { client, options, devices })
    }

    /// Changes how devices behave from now on.
    pub fn set_behaviour(&mut self, behaviour: Behaviour) {
        self.options.behaviour = behaviour;
    }

    /// The devices.
    pub fn devices(&mut self) -> &mut [SimulatedDevice] {
        &mut self.devices
    }

    /// Whether some device may still get work: the environment's current release for the
    /// board is rolling (so a later stage may include more devices) and some device of this
    /// fleet neither runs its image nor failed it.
    async fn work_left(&mut self) -> Result<bool> {
        let env: api::EnvironmentInfo = self
            .client
            .get(&format!("/api/v1/environments/{}", self.options.environment), &self.options.token)
            .await?
            .json()?;
        let Some(release) = env
            .current
            .iter()
            .find(|r| r.board == self.options.board && r.state == RolloutState::Rolling)
        else {
            return Ok(false);
        };
        let image = ImageId::from_hex(&release.image_id)
            .ok_or_else(|| anyhow!("server sent a bad image id"))?;
        Ok(self.devices.iter_mut().any(|d| {
            !d.tally.bricked && d.last_failed != Some(image) && d.running() != Some(image)
        }))
    }

    /// Runs rounds until no device has work left; returns what happened. Every device is
    /// booted once more at the end (on a copy), so that a device that could not boot is counted
    /// bricked even if the run never reset it again.
    pub async fn run(&mut self) -> Result<Summary> {
        let started = Instant::now();
        let before: Vec<Tally> = self.devices.iter().map(|d| d.tally.clone()).collect();
        let mut rounds = 0;
        let mut idle = 0;
        let stopped = loop {
            rounds += 1;
            let tally_before: Vec<Tally> = self.devices.iter().map(|d| d.tally.clone()).collect();
            let (updated, bricked) = self.round().await?;
            if self.options.verbose && updated > 0 {
                self.print_round(rounds, &tally_before).await?;
            }
            if bricked > 0 && updated == 0 {
                break "devices bricked".to_owned();
            }
            if updated > 0 {
                idle = 0;
                continue;
            }
            if !self.work_left().await? {
                break "no device has work left".to_owned();
            }
            idle += 1;
            if idle >= self.options.max_idle_rounds {
                break format!("{idle} rounds without an offer while the rollout is rolling");
            }
            tokio::time::sleep(self.options.checkin_interval).await;
        };
        let mut summary =
            Summary { devices: self.devices.len(), rounds, stopped, ..Summary::default() };
        let phases = ["download", "swap", "revert"];
        for (d, before) in self.devices.iter_mut().zip(before) {
            let booted = d.would_boot();
            if booted.is_none() {
                d.tally.bricked = true;
            }
            let t = &d.tally;
            summary.confirmed += t.confirmed - before.confirmed;
            summary.reverted += t.reverted - before.reverted;
            summary.failed += t.failed - before.failed;
            for (i, phase) in phases.iter().enumerate() {
                let n = t.power_cuts[i] - before.power_cuts[i];
                summary.power_cuts += n;
                *summary.power_cuts_by_phase.entry((*phase).to_owned()).or_default() += n;
            }
            summary.checkins += t.checkins - before.checkins;
            summary.offers += t.offers - before.offers;
            summary.downloaded_bytes += t.downloaded - before.downloaded;
            summary.bricked += u64::from(t.bricked);
            summary.anomalies.extend(t.anomalies[before.anomalies.len()..].iter().cloned());
            for e in &t.errors[before.errors.len()..] {
                summary.error_count += 1;
                if summary.errors.len() < 20 {
                    summary.errors.push(e.clone());
                }
            }
            let key = booted.map_or_else(|| "none".to_owned(), |id: ImageId| id.to_string());
            *summary.running.entry(key).or_default() += 1;
        }
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Prints what a round did and where the rollout stands.
    async fn print_round(&self, round: u32, before: &[Tally]) -> Result<()> {
        let (mut offers, mut confirmed, mut reverted, mut failed, mut cuts) = (0, 0, 0, 0, 0);
        for (dev, b) in self.devices.iter().zip(before) {
            offers += dev.tally.offers - b.offers;
            confirmed += dev.tally.confirmed - b.confirmed;
            reverted += dev.tally.reverted - b.reverted;
            failed += dev.tally.failed - b.failed;
            cuts += dev.tally.power_cuts.iter().sum::<u64>() - b.power_cuts.iter().sum::<u64>();
        }
        let env: api::EnvironmentInfo = self
            .client
            .get(&format!("/api/v1/environments/{}", self.options.environment), &self.options.token)
            .await?
            .json()?;
        let rollout = env.current.iter().find(|r| r.board == self.options.board).map_or_else(
            || "no release".to_owned(),
            |r| {
                format!(
                    "release {}/{} ({}) {}, stage {}/{} ({}%): {} of {} confirmed",
                    r.environment,
                    r.sequence,
                    short(&r.image_id),
                    r.state.as_str(),
                    r.stage + 1,
                    r.stages.len(),
                    r.stages.get(r.stage).copied().unwrap_or(100),
                    r.progress.confirmed,
                    r.progress.in_stage
                )
            },
        );
        eprintln!(
            "round {round}: {offers} offered, {confirmed} confirmed, {reverted} reverted, {failed} \
             failed, {cuts} power cuts; {rollout}"
        );
        Ok(())
    }

    /// One round: every device checks in once. Returns (devices that updated, bricked).
    async fn round(&mut self) -> Result<(usize, usize)> {
        let devices = std::mem::take(&mut self.devices);
        let n = devices.len();
        let limit = Arc::new(tokio::sync::Semaphore::new(self.options.concurrency.max(1)));
        let mut set = JoinSet::new();
        for (i, mut d) in devices.into_iter().enumerate() {
            let (client, behaviour, limit) =
                (self.client.clone(), self.options.behaviour, limit.clone());
            set.spawn(async move {
                let _permit = limit.acquire().await;
                let step = d.step(&client, behaviour).await;
                (i, d, step)
            });
        }
        let mut back: Vec<Option<SimulatedDevice>> = (0..n).map(|_| None).collect();
        let (mut updated, mut bricked, mut lost) = (0, 0, 0);
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, d, step)) => {
                    match step {
                        Step::Updated => updated += 1,
                        Step::Bricked => bricked += 1,
                        Step::Idle => {}
                    }
                    back[i] = Some(d);
                }
                Err(_) => lost += 1,
            }
        }
        self.devices = back.into_iter().flatten().collect();
        if lost > 0 {
            bail!("{lost} simulated devices were lost: their task panicked");
        }
        Ok((updated, bricked))
    }
}
