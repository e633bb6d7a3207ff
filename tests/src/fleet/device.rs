//! One simulated device: the real `firmware` boot logic and update agent on a simulated flash,
//! talking to the ota-server device API like a device's OS would.
//!
//! One [`SimulatedDevice::step`] is: settle an image left on trial (self-test: confirm, or let
//! the boot logic revert it), report the status read from flash and check in; if offered an
//! image, stream it (HTTP `Range`, resuming from the agent's checkpoint after a power cut, with
//! a check-in after each reset as a real OS would) into the agent, reset into the boot logic
//! (which swaps and boots the new image on trial), then confirm it — or, for an unhealthy
//! image, reset until the boot logic reverts it. Every step is reported through the device API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use firmware::boot::{BootError, Booted};
use firmware::image::{ImageId, MAX_WINDOW};
use firmware::sim::device::SimDevice;
use firmware::sim::{Cut, CutKind, Rng};
use firmware::state::{FailReason, ImageTag, OutcomeKind, RevertReason};
use firmware::update::{Agent, AgentConfig, UpdateError};
use hyper::{Method, StatusCode};
use ota_server::api::{self, CheckIn, EventKind, NewEvent};
use sha2::{Digest, Sha256};

use super::client::Client;

/// Trial boots the simulated OS gets: two, so that a power cut during the first trial boot
/// (which counts) does not revert a healthy image.
pub const TRIAL_BOOTS: u8 = 2;

/// Longest time a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How devices behave.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Share of devices that find a new image unhealthy and never confirm it.
    pub fail_ratio: f64,
    /// Probability that power is cut at a random flash operation of each download, swap and
    /// revert.
    pub power_cut_ratio: f64,
}

/// The phases power may be cut in.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    /// Streaming into slot B.
    Download = 0,
    /// The reset that swaps the new image in.
    Swap = 1,
    /// The reset that takes an unconfirmed image back out.
    Revert = 2,
}

/// Flash operations each phase took when it last ran uncut, learnt across the fleet: a cut is
/// placed uniformly among them, so it lands inside the phase.
#[derive(Debug)]
pub struct Spans([AtomicU64; 3]);

impl Default for Spans {
    fn default() -> Self {
        Spans([AtomicU64::new(8), AtomicU64::new(8), AtomicU64::new(8)])
    }
}

/// What one device went through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Check-ins.
    pub checkins: u64,
    /// Offers received.
    pub offers: u64,
    /// Images confirmed.
    pub confirmed: u64,
    /// Images reverted by the boot logic after a failed self-test.
    pub reverted: u64,
    /// Offers refused or failed (the agent's refusal, a bad download).
    pub failed: u64,
    /// Power cuts survived, per phase (download, swap, revert).
    pub power_cuts: [u64; 3],
    /// Bytes of image downloaded.
    pub downloaded: u64,
    /// Whether the device can no longer boot (must never happen).
    pub bricked: bool,
    /// Things the firmware must never do (a healthy image reverted, a flash rule broken, an
    /// image that fails its check at boot), with what happened.
    pub anomalies: Vec<String>,
    /// Errors talking to the server (the device carries on at the next round).
    pub errors: Vec<String>,
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No offer.
    Idle,
    /// An offer was handled (whatever the outcome).
    Updated,
    /// The device cannot boot.
    Bricked,
}

/// How a download ended.
enum Downloaded {
    /// Verified in slot B, waiting for a reset.
    Pending,
    /// A power cut reset the device after the last write: it swapped and runs it on trial.
    Booted(Booted),
    /// The agent refused the offer or the image failed its checks.
    Refused(String),
    /// The device cannot boot.
    Bricked,
}

/// A simulated device.
#[derive(Debug)]
pub struct SimulatedDevice {
    /// Its id.
    pub id: String,
    /// Its device token.
    pub token: String,
    /// The firmware on its flash.
    pub device: SimDevice,
    /// Its random source (power cuts, chunk sizes).
    pub rng: Rng,
    /// What happened so far.
    pub tally: Tally,
    /// The last image this device reverted or refused.
    pub last_failed: Option<ImageId>,
    spans: Arc<Spans>,
}

/// Whether `device` finds `image` unhealthy: a stable choice of `ratio` of the devices.
pub fn unhealthy(device: &str, image: ImageId, ratio: f64) -> bool {
    let mut h = Sha256::new();
    h.update(device.as_bytes());
    h.update(image.0);
    let d: [u8; 32] = h.finalize().into();
    let x = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
    (x as f64 / u64::MAX as f64) < ratio
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl SimulatedDevice {
    /// A device over `device` (already provisioned).
    pub fn new(
        id: String,
        token: String,
        mut device: SimDevice,
        seed: u64,
        spans: Arc<Spans>,
    ) -> Self {
        device.trial_boots = TRIAL_BOOTS;
        SimulatedDevice {
            id,
            token,
            device,
            rng: Rng::new(seed),
            tally: Tally::default(),
            last_failed: None,
            spans,
        }
    }

    /// The image in slot A, if readable.
    pub fn running(&mut self) -> Option<ImageId> {
        self.device.status().ok().and_then(|s| s.running.map(|(id, _)| id))
    }

    /// What a reset would boot, without changing this device: `None` if it cannot boot.
    pub fn would_boot(&self) -> Option<ImageId> {
        let mut probe = self.device.clone();
        probe.flash.cut(None);
        probe.flash.power_on();
        probe.boot().ok().map(|b| b.image.id)
    }

    /// With probability `p`, schedules a power cut at one of the flash operations `phase` is
    /// about to make; returns the operation count it starts at.
    fn maybe_cut(&mut self, p: f64, phase: Phase) -> u64 {
        let now = self.device.flash.stats().operations;
        if p <= 0.0 || (self.rng.below(1_000_000) as f64) >= p * 1_000_000.0 {
            return now;
        }
        let span = self.spans.0[phase as usize].load(Ordering::Relaxed);
        let at = now + self.rng.below(span.max(1));
        let kind = match self.rng.below(3) {
            0 => CutKind::Before,
            1 => CutKind::After,
            _ => CutKind::Torn(self.rng.next_u64()),
        };
        self.device.flash.cut(Some(Cut { at, kind }));
        now
    }

    /// Notes how many operations an uncut `phase` took.
    fn measured(&mut self, phase: Phase, started: u64) {
        let ops = self.device.flash.stats().operations.saturating_sub(started);
        self.spans.0[phase as usize].store(ops.max(1), Ordering::Relaxed);
    }

    /// Power comes back: count the cut, clear any pending one.
    fn power_back(&mut self, phase: Phase) {
        self.device.flash.cut(None);
        if self.device.flash.is_off() {
            self.tally.power_cuts[phase as usize] += 1;
        } else {
            self.tally.anomalies.push(format!("a flash error with power on in {phase:?}"));
        }
        self.device.flash.power_on();
    }

    /// A reset: the boot logic runs until it hands over (power may be cut while it swaps or
    /// reverts; it then runs again). `None` if the device cannot boot.
    fn reset(&mut self, cut_ratio: f64, phase: Phase) -> Option<Booted> {
        let mut started = self.maybe_cut(cut_ratio, phase);
        let mut cut = false;
        for _ in 0..64 {
            match self.device.boot() {
                Ok(b) => {
                    self.device.flash.cut(None);
                    if !cut {
                        self.measured(phase, started);
                    }
                    return Some(b);
                }
                Err(BootError::NoBootableImage { .. }) if !self.device.flash.is_off() => {
                    self.tally.bricked = true;
                    return None;
                }
                Err(_) => {
                    self.power_back(phase);
                    cut = true;
                    started = self.device.flash.stats().operations;
                }
            }
        }
        self.tally.bricked = true;
        None
    }

    /// What the device reports at check-in, all read from flash.
    fn report(&mut self) -> CheckIn {
        match self.device.status() {
            Ok(status) => CheckIn::from_status(&status),
            Err(_) => {
                CheckIn { last_outcome: Some("state log unreadable".into()), ..CheckIn::default() }
            }
        }
    }

    async fn event(
        &self,
        client: &Client,
        image: &str,
        kind: EventKind,
        detail: Option<String>,
    ) -> Result<()> {
        let body = NewEvent { image_id: image.to_owned(), kind, detail };
        let r = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.post("/api/v1/device/events", &self.token, &body),
        )
        .await
        .map_err(|_| anyhow!("event {}: no answer within 30 s", kind.as_str()))??;
        if !r.status.is_success() {
            return Err(anyhow!("event {}: {}", kind.as_str(), r.error()));
        }
        Ok(())
    }

    async fn checkin(&mut self, client: &Client) -> Result<Option<api::Offer>> {
        let report = self.report();
        self.tally.checkins += 1;
        let r = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.post("/api/v1/device/checkin", &self.token, &report),
        )
        .await
        .map_err(|_| anyhow!("check-in: no answer within 30 s"))??;
        Ok(r.json::<api::CheckInResponse>()?.offer)
    }

    /// One check-in, and the update it offers if any. Errors talking to the server are
    /// recorded in the tally, not returned: the device tries again next round.
    pub async fn step(&mut self, client: &Client, behaviour: Behaviour) -> Step {
        match self.step_inner(client, behaviour).await {
            Ok(step) => step,
            Err(e) => {
                self.tally.errors.push(format!("device {}: {e:#}", self.id));
                if self.tally.bricked { Step::Bricked } else { Step::Idle }
            }
        }
    }

    async fn step_inner(&mut self, client: &Client, behaviour: Behaviour) -> Result<Step> {
        if self.tally.bricked {
            return Ok(Step::Bricked);
        }
        // An image on trial (a reset landed the update before the OS could finish it): the
        // OS runs its self-test first, as after any update.
        if let Ok(status) = self.device.status()
            && status.trial
            && let Some((image, _)) = status.running
        {
            return self.settle_trial(client, image, behaviour).await;
        }
        let Some(offer) = self.checkin(client).await? else { return Ok(Step::Idle) };
        self.tally.offers += 1;
        let image = ImageId::from_hex(&offer.image_id)
            .ok_or_else(|| anyhow!("offer names a bad image id {:?}", offer.image_id))?;
        let release = hex::decode(&offer.release).map_err(|e| anyhow!("offer's release: {e}"))?;
        self.event(client, &offer.image_id, EventKind::Downloading, None).await?;

        // Download into slot B, resuming from the agent's checkpoint after each power cut.
        let booted = match self.download(client, &offer, &release, behaviour).await? {
            Downloaded::Refused(refusal) => {
                self.tally.failed += 1;
                self.last_failed = Some(image);
                self.event(client, &offer.image_id, EventKind::Failed, Some(refusal)).await?;
                return Ok(Step::Updated);
            }
            Downloaded::Bricked => return Ok(Step::Bricked),
            Downloaded::Booted(booted) => {
                // Power was cut right after the download was complete: the reset swapped.
                self.event(client, &offer.image_id, EventKind::Installed, None).await?;
                booted
            }
            Downloaded::Pending => {
                self.event(client, &offer.image_id, EventKind::Installed, None).await?;
                // Reset: the boot logic swaps and boots the new image on trial.
                let Some(booted) = self.reset(behaviour.power_cut_ratio, Phase::Swap) else {
                    return Ok(Step::Bricked);
                };
                booted
            }
        };
        if booted.image.id != image || !booted.trial {
            // The boot logic did not hand the new image over on trial.
            let outcome = self.device.status().ok().and_then(|s| s.outcome);
            let outcome = outcome.filter(|o| o.image == ImageTag::of(&image));
            let detail = format!(
                "after the reset slot A runs {} ({}), not the new image on trial: {:?}",
                booted.image.id,
                if booted.trial { "on trial" } else { "confirmed" },
                outcome.map(|o| o.kind)
            );
            self.tally.failed += 1;
            self.last_failed = Some(image);
            if !matches!(outcome.map(|o| o.kind), Some(OutcomeKind::Failed(FailReason::Superseded)))
            {
                self.tally.anomalies.push(format!("device {}: {detail}", self.id));
            }
            self.event(client, &offer.image_id, EventKind::Failed, Some(detail)).await?;
            return Ok(Step::Updated);
        }
        self.settle_trial(client, image, behaviour).await
    }

    /// The OS's self-test of an image on trial: confirm it, or (unhealthy) reset until the
    /// boot logic reverts it.
    async fn settle_trial(
        &mut self,
        client: &Client,
        image: ImageId,
        behaviour: Behaviour,
    ) -> Result<Step> {
        let id = image.to_string();
        self.event(client, &id, EventKind::Booted, None).await?;
        if !unhealthy(&self.id, image, behaviour.fail_ratio) {
            self.device.confirm().map_err(|e| anyhow!("confirm: {e}"))?;
            self.tally.confirmed += 1;
            self.event(client, &id, EventKind::Confirmed, None).await?;
            return Ok(Step::Updated);
        }
        // No confirm: each reset uses a trial boot, then the boot logic reverts.
        for _ in 0..=TRIAL_BOOTS {
            let Some(booted) = self.reset(behaviour.power_cut_ratio, Phase::Revert) else {
                return Ok(Step::Bricked);
            };
            if booted.image.id != image {
                let reason = self.device.status().ok().and_then(|s| s.outcome).map(|o| o.kind);
                if reason != Some(OutcomeKind::Reverted(RevertReason::NotConfirmed)) {
                    self.tally
                        .anomalies
                        .push(format!("device {}: revert of {id}: {reason:?}", self.id));
                }
                self.tally.reverted += 1;
                self.last_failed = Some(image);
                let detail =
                    format!("self-test failed; the boot logic went back to {}", booted.image.id);
                self.event(client, &id, EventKind::Reverted, Some(detail)).await?;
                return Ok(Step::Updated);
            }
        }
        self.tally.anomalies.push(format!("device {}: {id} never reverted", self.id));
        Ok(Step::Updated)
    }

    /// Streams the offered image into the agent, resuming after power cuts.
    async fn download(
        &mut self,
        client: &Client,
        offer: &api::Offer,
        release: &[u8],
        behaviour: Behaviour,
    ) -> Result<Downloaded> {
        let mut cut = false;
        for _attempt in 0..64 {
            // One cut per download at most: the attempts after it resume.
            let ratio = if cut { 0.0 } else { behaviour.power_cut_ratio };
            let started = self.maybe_cut(ratio, Phase::Download);
            match self.download_once(client, &offer.url, release).await? {
                Ok(()) => {
                    self.device.flash.cut(None);
                    if !cut {
                        self.measured(Phase::Download, started);
                    }
                    return Ok(Downloaded::Pending);
                }
                Err(UpdateError::Flash(_) | UpdateError::State(_)) => {
                    // The device resets mid-download: the boot logic runs, and the OS checks
                    // in (saying slot B holds a download) before it resumes where the agent's
                    // checkpoint says — unless the cut came after the download's last write,
                    // and the reset installed it.
                    self.power_back(Phase::Download);
                    cut = true;
                    match self.reset(0.0, Phase::Swap) {
                        None => return Ok(Downloaded::Bricked),
                        Some(booted) if booted.trial => return Ok(Downloaded::Booted(booted)),
                        Some(_) => {}
                    }
                    match self.checkin(client).await? {
                        Some(again) if again.image_id == offer.image_id => {}
                        other => {
                            let now = other
                                .map_or("nothing".to_owned(), |o| short(&o.image_id).to_owned());
                            return Ok(Downloaded::Refused(format!(
                                "after a reset the server offers {now}, not {}",
                                short(&offer.image_id)
                            )));
                        }
                    }
                }
                Err(e) => return Ok(Downloaded::Refused(e.to_string())),
            }
        }
        Err(anyhow!("download did not finish after 64 power cuts"))
    }

    async fn download_once(
        &mut self,
        client: &Client,
        url: &str,
        release: &[u8],
    ) -> Result<Result<(), UpdateError>> {
        let config = AgentConfig {
            board: &self.device.identity.board,
            build_keys: &self.device.identity.build_keys,
            environment: &self.device.identity.environment,
            environment_keys: &self.device.identity.environment_keys,
            checkpoint_every: self.device.checkpoint_every,
        };
        let mut window = vec![0u8; self.device.window.min(MAX_WINDOW)];
        let flash = &mut self.device.flash;
        let mut agent = match Agent::new(flash, &self.device.layout, config, &mut window) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let started = match agent.begin(flash, release) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let from = u64::from(started.resume_from);
        let reply = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.send(Method::GET, url, &self.token, None, (from > 0).then_some(from)),
        )
        .await
        .map_err(|_| anyhow!("download: no answer within 30 s"))??;
        let expected = if from > 0 { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
        if reply.status != expected {
            return Err(anyhow!(
                "download from byte {from}: expected {expected}, got {}",
                reply.error()
            ));
        }
        self.tally.downloaded += reply.body.len() as u64;
        let mut rest = &reply.body[..];
        while !rest.is_empty() {
            let n = (1 + self.rng.below(4096) as usize).min(rest.len());
            if let Err(e) = agent.feed(flash, &rest[..n]) {
                return Ok(Err(e));
            }
            rest = &rest[n..];
        }
        Ok(agent.finish(flash).map(|_| ()))
    }
}
