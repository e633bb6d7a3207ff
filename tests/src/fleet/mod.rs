//! The fleet simulator: many [`device::SimulatedDevice`]s against a real ota-server.
//!
//! A [`Fleet`] enrolls its devices (or takes their enrollment over with a fresh token),
//! provisions each with a factory image, then [`Fleet::run`]s rounds: in each round every
//! device checks in once, and those offered an image update (download, reset, confirm or
//! revert), many at a time on tokio tasks. Devices that announce delta support take images
//! offered as patches ([`device`]). It stops when a round had no offer and no rollout
//! for its environment and board is still rolling — or after `max_idle_rounds` rounds without
//! an offer, if one is (a stage waiting on devices that are not there).
//!
//! Every device talks to the server through the typed client of `ota_proto` (one client per
//! device, its own token, one shared connection pool) and rides out outages ([`retry`]): a
//! server killed and restarted during a run costs retries, not the run. Setting the fleet up
//! ([`Fleet::enroll`]) does not wait: a server that cannot be reached then is a mistake to
//! report at once.

pub mod device;
pub mod retry;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use firmware::image::{ImageId, TrustedKey};
use firmware::sim::device::Identity;
use firmware::sim::device::SimDevice;
use ota_proto::client::Client;
use ota_proto::{
    BoardName, DeviceFilter, DeviceId, EnvironmentInfo, EnvironmentName, NewDevice, NewDevices,
    PublicKey, RolloutState,
};
use serde::Serialize;
use tokio::task::JoinSet;

use device::{Behaviour, SimulatedDevice, Spans, Step, Tally};
use retry::{Backoff, Retrying};

/// Devices enrolled per batch request.
const ENROLL_BATCH: usize = 20_000;
/// Enrollments taken over (a new token each) at once.
const TAKE_OVER_AT_ONCE: usize = 64;
/// Longest time one exchange may take before it counts as failed (and, a device's, is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Server URL, or several replicas' URLs separated by commas.
    pub server: String,
    /// An admin token (enrolls devices, reads keys and rollouts).
    pub token: String,
    /// Number of devices.
    pub devices: usize,
    /// Their board.
    pub board: BoardName,
    /// Their environment.
    pub environment: EnvironmentName,
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
    /// The longest server outage ridden out: a request that kept failing (server unreachable,
    /// restarting, overloaded) for longer ends the run with an error.
    pub outage_limit: Duration,
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
    /// Offers that came as patches.
    pub patches: u64,
    /// Patches refused or failed (reported; the image came whole next).
    pub patches_failed: u64,
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
    /// Requests tried again after a transient failure (the server down or restarting), by the
    /// devices and by the fleet itself.
    pub retries: u64,
    /// Check-ins made.
    pub checkins: u64,
    /// Offers received.
    pub offers: u64,
    /// Bytes downloaded, both transports.
    pub downloaded_bytes: u64,
    /// Of them, bytes of image files.
    pub downloaded_image_bytes: u64,
    /// Of them, bytes of patches.
    pub downloaded_patch_bytes: u64,
    /// Image downloads continued after a reset from the agent's checkpoint (not from 0).
    pub resumed_images: u64,
    /// Patch downloads continued after a reset from the agent's checkpoint (not from 0).
    pub resumed_patches: u64,
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
            "  confirmed {}, reverted {}, failed {}, bricked {}\n  {} check-ins, {} offers ({} as patches, {} patches failed), {} power cuts survived, {} requests retried\n",
            self.confirmed,
            self.reverted,
            self.failed,
            self.bricked,
            self.checkins,
            self.offers,
            self.patches,
            self.patches_failed,
            self.power_cuts,
            self.retries
        ));
        out.push_str(&format!(
            "  {} bytes downloaded: {} of images, {} of patches; resumed after a reset: {} image and {} patch downloads\n",
            self.downloaded_bytes,
            self.downloaded_image_bytes,
            self.downloaded_patch_bytes,
            self.resumed_images,
            self.resumed_patches,
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
    /// The fleet's own calls (rollout state), with the admin token.
    server: Retrying,
    /// Retries of the fleet's own calls since the run began.
    retries: u64,
    options: Options,
    devices: Vec<SimulatedDevice>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("devices", &self.devices.len()).finish()
    }
}

fn trusted(key: &PublicKey) -> Result<TrustedKey> {
    TrustedKey::from_bytes(&key.0)
        .map_err(|e| anyhow!("the server sent an unusable key {key}: {e}"))
}

/// The id of device `i` of a fleet whose ids start with `prefix`.
fn device_id(prefix: &str, i: usize) -> Result<DeviceId> {
    Ok(DeviceId::new(format!("{prefix}-{i:05}"))?)
}

impl Fleet {
    /// Enrolls `options.devices` devices (taking over existing enrollments with a new token)
    /// and provisions each with `factory` (a `.fwi` file) in slot A. New devices are enrolled in
    /// batches; a device enrolled already must be of the same board and environment.
    pub async fn enroll(options: Options, factory: &[u8]) -> Result<Fleet> {
        let client = Client::new(&options.server, &options.token)?.with_timeout(REQUEST_TIMEOUT);
        let env =
            client.environment(&options.environment).await.context("reading the environment")?;
        let keys = client.build_keys().await.context("reading the build keys")?;
        let identity = Identity {
            board: options.board.to_string(),
            build_keys: keys.iter().map(|k| trusted(&k.public_key)).collect::<Result<_>>()?,
            environment: options.environment.to_string(),
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

        let ids = (0..options.devices)
            .map(|i| device_id(&options.prefix, i))
            .collect::<Result<Vec<_>>>()?;
        let tokens = enroll_or_take_over(&client, &options, &ids).await?;
        let spans = Arc::new(Spans::default());
        let backoff = Backoff::new(options.outage_limit);
        let mut devices = Vec::with_capacity(ids.len());
        for (i, id) in ids.into_iter().enumerate() {
            let token = &tokens[&id];
            let seed = options.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let server = Retrying::new(client.with_token(token)?, backoff, !seed);
            devices.push(SimulatedDevice::new(id, server, template.clone(), seed, spans.clone()));
        }
        let server = Retrying::new(client, backoff, options.seed);
        Ok(Fleet { server, retries: 0, options, devices })
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
        let env = self.environment().await?;
        let Some(release) = env
            .current
            .iter()
            .find(|r| r.board == self.options.board && r.state == RolloutState::Rolling)
        else {
            return Ok(false);
        };
        let image = release.image_id;
        Ok(self.devices.iter_mut().any(|d| {
            !d.tally.bricked && d.last_failed != Some(image) && d.running() != Some(image)
        }))
    }

    /// The fleet's environment as the server shows it now (riding out an outage).
    async fn environment(&mut self) -> Result<EnvironmentInfo> {
        let env = &self.options.environment;
        let what = format!("reading environment {env}");
        self.server
            .call(&mut self.retries, &what, |c| async move { c.environment(env).await })
            .await
    }

    /// Runs rounds until no device has work left; returns what happened. Every device is
    /// booted once more at the end (on a copy), so that a device that could not boot is counted
    /// bricked even if the run never reset it again.
    pub async fn run(&mut self) -> Result<Summary> {
        let started = Instant::now();
        let before: Vec<Tally> = self.devices.iter().map(|d| d.tally.clone()).collect();
        self.retries = 0;
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
        let mut summary = Summary {
            devices: self.devices.len(),
            rounds,
            stopped,
            retries: self.retries,
            ..Summary::default()
        };
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
            summary.patches += t.patches - before.patches;
            summary.patches_failed += t.patches_failed - before.patches_failed;
            for (i, phase) in phases.iter().enumerate() {
                let n = t.power_cuts[i] - before.power_cuts[i];
                summary.power_cuts += n;
                *summary.power_cuts_by_phase.entry((*phase).to_owned()).or_default() += n;
            }
            summary.checkins += t.checkins - before.checkins;
            summary.offers += t.offers - before.offers;
            summary.downloaded_bytes += t.downloaded - before.downloaded;
            let patch = t.downloaded_patch - before.downloaded_patch;
            summary.downloaded_patch_bytes += patch;
            summary.downloaded_image_bytes += t.downloaded - before.downloaded - patch;
            summary.resumed_images += t.resumed[0] - before.resumed[0];
            summary.resumed_patches += t.resumed[1] - before.resumed[1];
            summary.retries += t.retries - before.retries;
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
    async fn print_round(&mut self, round: u32, before: &[Tally]) -> Result<()> {
        let (mut offers, mut patches, mut confirmed, mut reverted, mut failed, mut cuts) =
            (0, 0, 0, 0, 0, 0);
        for (dev, b) in self.devices.iter().zip(before) {
            offers += dev.tally.offers - b.offers;
            patches += dev.tally.patches - b.patches;
            confirmed += dev.tally.confirmed - b.confirmed;
            reverted += dev.tally.reverted - b.reverted;
            failed += dev.tally.failed - b.failed;
            cuts += dev.tally.power_cuts.iter().sum::<u64>() - b.power_cuts.iter().sum::<u64>();
        }
        let env = self.environment().await?;
        let rollout = env.current.iter().find(|r| r.board == self.options.board).map_or_else(
            || "no release".to_owned(),
            |r| {
                format!(
                    "release {}/{} ({}) {}, stage {}/{} ({}%): {} of {} confirmed",
                    r.environment,
                    r.sequence,
                    &r.image_id.to_string()[..12],
                    r.state,
                    r.stage + 1,
                    r.stages.len(),
                    r.stages.get(r.stage).copied().unwrap_or(100),
                    r.progress.confirmed,
                    r.progress.in_stage
                )
            },
        );
        eprintln!(
            "round {round}: {offers} offered ({patches} as patches), {confirmed} confirmed, \
             {reverted} reverted, {failed} failed, {cuts} power cuts; {rollout}"
        );
        Ok(())
    }

    /// One round: every device checks in once. Returns (devices that updated, bricked). A
    /// device that gave up on the server (an outage longer than the limit) ends the round for
    /// the devices that have not started theirs, and the run with its error.
    async fn round(&mut self) -> Result<(usize, usize)> {
        let devices = std::mem::take(&mut self.devices);
        let n = devices.len();
        let limit = Arc::new(tokio::sync::Semaphore::new(self.options.concurrency.max(1)));
        let gave_up = Arc::new(AtomicBool::new(false));
        let mut set = JoinSet::new();
        for (i, mut d) in devices.into_iter().enumerate() {
            let (behaviour, limit, gave_up) =
                (self.options.behaviour, limit.clone(), gave_up.clone());
            set.spawn(async move {
                let _permit = limit.acquire().await;
                if gave_up.load(Ordering::Relaxed) {
                    return (i, d, None);
                }
                let step = d.step(behaviour).await;
                if step == Step::GaveUp {
                    gave_up.store(true, Ordering::Relaxed);
                }
                (i, d, Some(step))
            });
        }
        let mut back: Vec<Option<SimulatedDevice>> = (0..n).map(|_| None).collect();
        let (mut updated, mut bricked, mut lost) = (0, 0, 0);
        let mut outage = None;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, d, step)) => {
                    match step {
                        Some(Step::Updated) => updated += 1,
                        Some(Step::Bricked) => bricked += 1,
                        Some(Step::GaveUp) if outage.is_none() => {
                            outage = d.tally.errors.last().cloned();
                        }
                        Some(Step::Idle | Step::GaveUp) | None => {}
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
        if let Some(error) = outage {
            bail!("{error}");
        }
        Ok((updated, bricked))
    }
}

/// The tokens of the devices `ids`: new devices enrolled in batches, devices enrolled already
/// (by an earlier run) given a new token, after checking they are of this fleet's board and
/// environment.
async fn enroll_or_take_over(
    client: &Client,
    options: &Options,
    ids: &[DeviceId],
) -> Result<HashMap<DeviceId, String>> {
    let filter =
        DeviceFilter { environment: Some(options.environment.clone()), ..DeviceFilter::default() };
    let known: HashMap<DeviceId, BoardName> = client
        .devices(&filter)
        .await
        .context("listing the enrolled devices")?
        .into_iter()
        .map(|d| (d.id, d.board))
        .collect();
    let mut tokens = HashMap::with_capacity(ids.len());
    let (old, new): (Vec<&DeviceId>, Vec<&DeviceId>) =
        ids.iter().partition(|id| known.contains_key(*id));
    for chunk in new.chunks(ENROLL_BATCH) {
        let devices = chunk
            .iter()
            .map(|&id| NewDevice {
                id: id.clone(),
                board: options.board.clone(),
                environment: options.environment.clone(),
            })
            .collect();
        let enrolled = client
            .create_devices(&NewDevices { devices })
            .await
            .with_context(|| format!("enrolling {} devices", chunk.len()))?;
        tokens.extend(enrolled.tokens.into_iter().map(|t| (t.id, t.token)));
    }
    if let Some(other) = old.iter().find(|id| known[**id] != options.board) {
        bail!(
            "device {other} is enrolled in {} on board {}, not {}",
            options.environment,
            known[*other],
            options.board
        );
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(TAKE_OVER_AT_ONCE));
    let mut set = JoinSet::new();
    for id in old {
        let (client, id, limit) = (client.clone(), id.clone(), limit.clone());
        set.spawn(async move {
            let _permit = limit.acquire().await;
            let created = client.rotate_device_token(&id).await;
            created
                .map(|c| (id.clone(), c.token))
                .with_context(|| format!("taking over device {id}"))
        });
    }
    while let Some(joined) = set.join_next().await {
        let (id, token) = joined??;
        tokens.insert(id, token);
    }
    if let Some(missing) = ids.iter().find(|id| !tokens.contains_key(*id)) {
        bail!("the server enrolled the fleet but sent no token for device {missing}");
    }
    Ok(tokens)
}
