//! One simulated device: the real `firmware` boot logic and update agent on a simulated flash,
//! talking to the ota-server device API like a device's OS would.
//!
//! One [`SimulatedDevice::step`] is: report status and check in; if offered an image, stream
//! it (HTTP `Range`, resuming from the agent's checkpoint after a power cut) into the agent,
//! reset into the boot logic (which swaps and boots the new image on trial), then confirm it —
//! or, for an unhealthy image, reset again so that the boot logic reverts it. Every step is
//! reported through the device API.

use anyhow::{Result, anyhow};
use firmware::boot::BootError;
use firmware::image::{ImageId, MAX_WINDOW};
use firmware::sim::device::SimDevice;
use firmware::sim::{Cut, CutKind, Rng};
use firmware::state::{OutcomeKind, RevertReason};
use firmware::update::{Agent, AgentConfig, SlotB, UpdateError};
use hyper::Method;
use ota_server::api::{self, CheckIn, EventKind, NewEvent, SlotBReport};
use sha2::{Digest, Sha256};

use super::client::Client;

/// How devices behave.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Share of devices that find a new image unhealthy and never confirm it.
    pub fail_ratio: f64,
    /// Probability that power is cut at a random flash operation of each download, swap and
    /// revert.
    pub power_cut_ratio: f64,
}

/// What one device went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Check-ins.
    pub checkins: u64,
    /// Offers received.
    pub offers: u64,
    /// Images confirmed.
    pub confirmed: u64,
    /// Images reverted by the boot logic.
    pub reverted: u64,
    /// Offers refused or failed (the agent's refusal, a bad download).
    pub failed: u64,
    /// Power cuts survived.
    pub power_cuts: u64,
    /// Bytes of image downloaded.
    pub downloaded: u64,
    /// Whether the device can no longer boot (must never happen).
    pub bricked: bool,
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
    Booted(firmware::boot::Booted),
    /// The agent refused the offer or the image failed its checks.
    Refused(String),
    /// The device cannot boot.
    Bricked,
}

/// The phases power may be cut in.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Download = 0,
    Swap = 1,
    Revert = 2,
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
    /// Last outcome, for the next check-in.
    last_outcome: Option<String>,
    /// The last image this device reverted or refused.
    pub last_failed: Option<ImageId>,
    /// Flash operations each phase took the last time it ran uncut: a cut is placed
    /// uniformly among them, so it lands inside the phase.
    spans: [u64; 3],
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

/// A flash error that is the simulated power cut (not a bug).
fn is_power_loss(err: &UpdateError) -> bool {
    matches!(err, UpdateError::Flash(_) | UpdateError::State(_))
}

impl SimulatedDevice {
    /// A device over `device` (already provisioned).
    pub fn new(id: String, token: String, device: SimDevice, seed: u64) -> Self {
        SimulatedDevice {
            id,
            token,
            device,
            rng: Rng::new(seed),
            tally: Tally::default(),
            last_outcome: None,
            last_failed: None,
            spans: [64; 3],
        }
    }

    /// The image in slot A, if readable.
    pub fn running(&mut self) -> Option<ImageId> {
        self.device.status().ok().and_then(|s| s.running.map(|(id, _)| id))
    }

    /// With probability `p`, schedules a power cut at one of the flash operations `phase` is
    /// about to make; returns the operation count it starts at.
    fn maybe_cut(&mut self, p: f64, phase: Phase) -> u64 {
        let now = self.device.flash.stats().operations;
        if p <= 0.0 || (self.rng.below(1_000_000) as f64) >= p * 1_000_000.0 {
            return now;
        }
        let at = now + self.rng.below(self.spans[phase as usize].max(1));
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
        self.spans[phase as usize] = ops.max(1);
    }

    /// Power comes back: count the cut, clear any pending one.
    fn power_back(&mut self) {
        self.device.flash.cut(None);
        if self.device.flash.is_off() {
            self.tally.power_cuts += 1;
        }
        self.device.flash.power_on();
    }

    /// A reset: the boot logic runs until it hands over (power may be cut while it swaps or
    /// reverts; it then runs again). `None` if the device cannot boot.
    fn reset(&mut self, cut_ratio: f64, phase: Phase) -> Option<firmware::boot::Booted> {
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
                    return None;
                }
                Err(_) => {
                    self.power_back();
                    cut = true;
                    started = self.device.flash.stats().operations;
                }
            }
        }
        None
    }

    /// What the device reports at check-in.
    fn report(&mut self) -> CheckIn {
        let Ok(status) = self.device.status() else {
            return CheckIn {
                last_outcome: Some("state log unreadable".into()),
                ..CheckIn::default()
            };
        };
        let slot_b = match status.slot_b {
            SlotB::Unknown => SlotBReport { state: "unknown".into(), image_id: None },
            SlotB::Previous(id) => {
                SlotBReport { state: "previous".into(), image_id: Some(id.to_string()) }
            }
            SlotB::Downloading(..) => SlotBReport { state: "downloading".into(), image_id: None },
            SlotB::Pending(_) => SlotBReport { state: "pending".into(), image_id: None },
        };
        CheckIn {
            image_id: status.running.map(|(id, _)| id.to_string()),
            trial: status.trial,
            slot_b: Some(slot_b),
            last_outcome: self.last_outcome.clone(),
            release_sequence: Some(status.release_sequence),
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
        let r = client.post("/api/v1/device/events", &self.token, &body).await?;
        if !r.status.is_success() {
            return Err(anyhow!("device {}: event {}: {}", self.id, kind.as_str(), r.error()));
        }
        Ok(())
    }

    /// One check-in, and the update it offers if any.
    pub async fn step(&mut self, client: &Client, behaviour: Behaviour) -> Result<Step> {
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
        let report = self.report();
        self.tally.checkins += 1;
        let answer: api::CheckInResponse =
            client.post("/api/v1/device/checkin", &self.token, &report).await?.json()?;
        let Some(offer) = answer.offer else { return Ok(Step::Idle) };
        self.tally.offers += 1;
        let image = ImageId::from_hex(&offer.image_id)
            .ok_or_else(|| anyhow!("offer names a bad image id"))?;
        let release = hex::decode(&offer.release).map_err(|e| anyhow!("offer's release: {e}"))?;
        self.event(client, &offer.image_id, EventKind::Downloading, None).await?;

        // Download into slot B, resuming from the agent's checkpoint after each power cut.
        let booted = match self.download(client, &offer.url, &release, behaviour).await? {
            Downloaded::Refused(refusal) => {
                self.tally.failed += 1;
                self.last_failed = Some(image);
                self.last_outcome = Some(format!("refused {}: {refusal}", &offer.image_id[..12]));
                self.event(client, &offer.image_id, EventKind::Failed, Some(refusal)).await?;
                return Ok(Step::Updated);
            }
            Downloaded::Bricked => {
                self.tally.bricked = true;
                return Ok(Step::Bricked);
            }
            Downloaded::Booted(booted) => {
                // Power was cut right after the download was complete: the reset swapped.
                self.event(client, &offer.image_id, EventKind::Installed, None).await?;
                booted
            }
            Downloaded::Pending => {
                self.event(client, &offer.image_id, EventKind::Installed, None).await?;
                // Reset: the boot logic swaps and boots the new image on trial.
                let Some(booted) = self.reset(behaviour.power_cut_ratio, Phase::Swap) else {
                    self.tally.bricked = true;
                    return Ok(Step::Bricked);
                };
                booted
            }
        };
        if booted.image.id != image || !booted.trial {
            // The boot logic took the new image back out before the OS ran it: power was lost
            // during its trial boot (which counts), or it no longer verified.
            let outcome = self.device.status().ok().and_then(|s| s.outcome);
            let (kind, detail) = match outcome.map(|o| o.kind) {
                Some(OutcomeKind::Reverted(reason)) => {
                    self.tally.reverted += 1;
                    let why = match reason {
                        RevertReason::NotConfirmed => "its trial boot ended without a confirm",
                        RevertReason::ImageInvalid => "it failed its check at boot",
                    };
                    (EventKind::Reverted, format!("the boot logic reverted it: {why}"))
                }
                other => {
                    self.tally.failed += 1;
                    let detail = format!(
                        "after the reset slot A runs {}, not the new image on trial ({other:?})",
                        booted.image.id
                    );
                    (EventKind::Failed, detail)
                }
            };
            self.last_failed = Some(image);
            self.last_outcome = Some(format!("{} {}", kind.as_str(), &offer.image_id[..12]));
            self.event(client, &offer.image_id, kind, Some(detail)).await?;
            return Ok(Step::Updated);
        }
        self.settle_trial(client, image, behaviour).await
    }

    /// The OS's self-test of an image on trial: confirm it, or (unhealthy) leave it to the
    /// boot logic to revert at the next reset.
    async fn settle_trial(
        &mut self,
        client: &Client,
        image: ImageId,
        behaviour: Behaviour,
    ) -> Result<Step> {
        let id = image.to_string();
        self.event(client, &id, EventKind::Booted, None).await?;
        if unhealthy(&self.id, image, behaviour.fail_ratio) {
            let Some(back) = self.reset(behaviour.power_cut_ratio, Phase::Revert) else {
                self.tally.bricked = true;
                return Ok(Step::Bricked);
            };
            self.tally.reverted += 1;
            self.last_failed = Some(image);
            self.last_outcome = Some(format!("reverted {}", &id[..12]));
            let detail = format!("self-test failed; the boot logic went back to {}", back.image.id);
            self.event(client, &id, EventKind::Reverted, Some(detail)).await?;
        } else {
            self.device.confirm().map_err(|e| anyhow!("device {}: confirm: {e}", self.id))?;
            self.tally.confirmed += 1;
            self.last_outcome = Some(format!("updated to {}", &id[..12]));
            self.event(client, &id, EventKind::Confirmed, None).await?;
        }
        Ok(Step::Updated)
    }

    /// Streams the offered image into the agent, resuming after power cuts.
    async fn download(
        &mut self,
        client: &Client,
        url: &str,
        release: &[u8],
        behaviour: Behaviour,
    ) -> Result<Downloaded> {
        let mut cut = false;
        for _attempt in 0..32 {
            let started = self.maybe_cut(behaviour.power_cut_ratio, Phase::Download);
            match self.download_once(client, url, release).await? {
                Ok(()) => {
                    self.device.flash.cut(None);
                    if !cut {
                        self.measured(Phase::Download, started);
                    }
                    return Ok(Downloaded::Pending);
                }
                Err(e) if is_power_loss(&e) && self.device.flash.is_off() => {
                    // The device resets mid-download: the boot logic runs and the OS checks in
                    // again, resuming where the agent's checkpoint says — unless the cut came
                    // after the download's last write, and the reset installed it.
                    self.power_back();
                    cut = true;
                    match self.reset(0.0, Phase::Swap) {
                        None => return Ok(Downloaded::Bricked),
                        Some(booted) if booted.trial => return Ok(Downloaded::Booted(booted)),
                        Some(_) => {}
                    }
                }
                Err(e) => return Ok(Downloaded::Refused(e.to_string())),
            }
        }
        Err(anyhow!("device {}: download did not finish after 32 power cuts", self.id))
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
        let reply = client.send(Method::GET, url, &self.token, None, Some(from)).await?;
        if !reply.status.is_success() {
            return Err(anyhow!("device {}: download: {}", self.id, reply.error()));
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
