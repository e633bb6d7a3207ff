//! One simulated device: the real `firmware` boot logic and update agent on a simulated flash,
//! talking to the ota-server device API like a device's OS would.
//!
//! One [`SimulatedDevice::step`] is: settle an image left on trial (self-test: confirm, or let
//! the boot logic revert it), report the status read from flash and check in; if offered an
//! image, stream it (HTTP `Range`, resuming from the agent's checkpoint after a power cut, with
//! a check-in after each reset as a real OS would) into the agent, reset into the boot logic
//! (which swaps and boots the new image on trial), then confirm it — or, for an unhealthy
//! image, reset until the boot logic reverts it. Every step is reported through the device API.
//!
//! Devices that take patches (a stable share of the fleet, [`Behaviour::delta_ratio`]) say so in
//! their check-in (`capabilities: [delta]`); an offer that comes as a patch goes through the
//! agent's `begin_patch` (slot B rebuilt from slot A plus the patch, the same checks as an
//! image, resumed the same way). A patch that fails (refused against slot A, damaged) is
//! reported as `failed` with transport `patch`: the server then offers the image whole.
//!
//! Like a device in the field, it rides out a server outage: each request that fails
//! transiently is retried with backoff ([`super::retry`]); a download resumes from the agent's
//! checkpoint with `Range`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, anyhow};
use firmware::boot::{BootError, Booted};
use firmware::image::{ImageId, MAX_WINDOW};
use firmware::sim::device::SimDevice;
use firmware::sim::{Cut, CutKind, Rng};
use firmware::state::{FailReason, ImageTag, OutcomeKind, RevertReason};
use firmware::update::{Agent, AgentConfig, UpdateError};
use ota_proto::client::MAX_RESPONSE;
use ota_proto::{Capability, CheckIn, DeviceId, EventKind, NewEvent, Offer, Transport};
use sha2::{Digest, Sha256};

use super::retry::{Outage, Retrying};

/// Trial boots the simulated OS gets: two, so that a power cut during the first trial boot
/// (which counts) does not revert a healthy image.
pub const TRIAL_BOOTS: u8 = 2;

/// How devices behave.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Share of devices that find a new image unhealthy and never confirm it.
    pub fail_ratio: f64,
    /// Probability that power is cut at a random flash operation of each download, swap and
    /// revert.
    pub power_cut_ratio: f64,
    /// Share of devices (a stable choice) that announce delta support and so may be offered
    /// patches: 1 (the default) for every device, 0 for none.
    pub delta_ratio: f64,
}

impl Default for Behaviour {
    /// Healthy devices, no power cuts, every device takes patches.
    fn default() -> Self {
        Behaviour { fail_ratio: 0.0, power_cut_ratio: 0.0, delta_ratio: 1.0 }
    }
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
    /// Offers that came as patches.
    pub patches: u64,
    /// Patches refused or failed (reported with transport `patch`: the image comes whole next).
    pub patches_failed: u64,
    /// Power cuts survived, per phase (download, swap, revert).
    pub power_cuts: [u64; 3],
    /// Bytes downloaded, whatever the transport.
    pub downloaded: u64,
    /// Of them, bytes of patches.
    pub downloaded_patch: u64,
    /// Downloads continued after a reset from where the agent's checkpoint says (a `Range`
    /// request from a non-zero offset), images and patches.
    pub resumed: [u64; 2],
    /// Whether the device can no longer boot (must never happen).
    pub bricked: bool,
    /// Things the firmware must never do (a healthy image reverted, a flash rule broken, an
    /// image that fails its check at boot), with what happened.
    pub anomalies: Vec<String>,
    /// Errors talking to the server (the device carries on at the next round).
    pub errors: Vec<String>,
    /// Requests tried again after a transient failure (the server down or restarting).
    pub retries: u64,
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
    /// The server stayed unreachable for longer than the outage limit (the error is in the
    /// tally).
    GaveUp,
}

/// How a download ended.
enum Downloaded {
    /// Verified in slot B, waiting for a reset.
    Pending,
    /// A power cut reset the device after the last write: it swapped and runs it on trial.
    Booted(Booted),
    /// The agent refused the offer or the image failed its checks; `patch` if it was a patch
    /// that failed (not the release or the image), so the image may come whole.
    Refused {
        /// What the agent said.
        reason: String,
        /// Whether the patch failed rather than the image.
        patch: bool,
    },
    /// The device cannot boot.
    Bricked,
}

/// A simulated device.
#[derive(Debug)]
pub struct SimulatedDevice {
    /// Its id.
    pub id: DeviceId,
    /// Its connection to the server, with its device token.
    pub server: Retrying,
    /// The firmware on its flash.
    pub device: SimDevice,
    /// Its random source (power cuts, chunk sizes).
    pub rng: Rng,
    /// What happened so far.
    pub tally: Tally,
    /// The last image this device reverted or refused.
    pub last_failed: Option<ImageId>,
    /// For its next check-in only, the image it says slot A holds instead of the truth: how a
    /// test makes the server believe slot A holds what it does not (as after a revert the
    /// server has not heard of), so that the patch offered does not fit.
    pub stale_running: Option<ImageId>,
    spans: Arc<Spans>,
}

/// Whether `device` is among a stable `ratio` of the devices, the choice drawn by `salt`.
fn chosen(device: &DeviceId, salt: &[u8], ratio: f64) -> bool {
    let mut h = Sha256::new();
    h.update(device.as_bytes());
    h.update(salt);
    let d: [u8; 32] = h.finalize().into();
    let x = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
    (x as f64 / u64::MAX as f64) < ratio
}

/// Whether `device` finds `image` unhealthy: a stable choice of `ratio` of the devices.
pub fn unhealthy(device: &DeviceId, image: ImageId, ratio: f64) -> bool {
    chosen(device, &image.0, ratio)
}

/// Whether `device` takes patches: a stable choice of `ratio` of the devices (1: all).
pub fn takes_patches(device: &DeviceId, ratio: f64) -> bool {
    ratio >= 1.0 || chosen(device, b"delta", ratio)
}

/// Whether `error`, met installing a patch, is the patch's fault (refused against slot A,
/// damaged, a header or body that does not check) rather than the release's or this device's
/// (which the image whole would meet just the same).
fn patch_at_fault(error: &UpdateError) -> bool {
    use firmware::update::Refusal;
    !matches!(
        error,
        UpdateError::Refused(
            Refusal::Release(_)
                | Refusal::Busy
                | Refusal::Rollback { .. }
                | Refusal::WrongBoard { .. }
                | Refusal::TooLarge(_)
                | Refusal::NoRoomInSlotB { .. }
        ) | UpdateError::Flash(_)
            | UpdateError::State(_)
    )
}

fn short(id: &ImageId) -> String {
    let mut hex = id.to_string();
    hex.truncate(12);
    hex
}

impl SimulatedDevice {
    /// A device over `device` (already provisioned), talking to the server through `server`
    /// (with its device token).
    pub fn new(
        id: DeviceId,
        server: Retrying,
        mut device: SimDevice,
        seed: u64,
        spans: Arc<Spans>,
    ) -> Self {
        device.trial_boots = TRIAL_BOOTS;
        SimulatedDevice {
            id,
            server,
            device,
            rng: Rng::new(seed),
            tally: Tally::default(),
            last_failed: None,
            stale_running: None,
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

    /// What the device reports at check-in, all read from flash (unless a test made it report
    /// a stale image: [`Self::stale_running`]), and whether it takes patches.
    fn report(&mut self, delta: bool) -> CheckIn {
        let mut report = match self.device.status() {
            Ok(status) => CheckIn::from_status(&status),
            Err(_) => {
                CheckIn { last_outcome: Some("state log unreadable".into()), ..CheckIn::default() }
            }
        };
        if let Some(stale) = self.stale_running.take() {
            report.image_id = Some(stale);
        }
        if delta {
            report.capabilities = vec![Capability::Delta];
        }
        report
    }

    async fn event(
        &mut self,
        image: ImageId,
        kind: EventKind,
        detail: Option<String>,
    ) -> Result<()> {
        self.event_about(image, kind, detail, None).await
    }

    /// Reports a step about a download in form `transport`.
    async fn event_about(
        &mut self,
        image: ImageId,
        kind: EventKind,
        detail: Option<String>,
        transport: Option<Transport>,
    ) -> Result<()> {
        let body = &NewEvent { image_id: image, kind, detail, transport };
        let what = format!("event {}", kind.as_str());
        self.server
            .call(&mut self.tally.retries, &what, |c| async move { c.event(body).await })
            .await
    }

    async fn checkin(&mut self, behaviour: Behaviour) -> Result<Option<Offer>> {
        let report = &self.report(takes_patches(&self.id, behaviour.delta_ratio));
        self.tally.checkins += 1;
        let answer = self
            .server
            .call(&mut self.tally.retries, "check-in", |c| async move { c.checkin(report).await })
            .await?;
        Ok(answer.offer)
    }

    /// One check-in, and the update it offers if any. Errors talking to the server are
    /// recorded in the tally, not returned: the device tries again next round (an outage
    /// longer than the limit ends in [`Step::GaveUp`]).
    pub async fn step(&mut self, behaviour: Behaviour) -> Step {
        match self.step_inner(behaviour).await {
            Ok(step) => step,
            Err(e) => {
                self.tally.errors.push(format!("device {}: {e:#}", self.id));
                if self.tally.bricked {
                    Step::Bricked
                } else if e.is::<Outage>() {
                    Step::GaveUp
                } else {
                    Step::Idle
                }
            }
        }
    }

    async fn step_inner(&mut self, behaviour: Behaviour) -> Result<Step> {
        if self.tally.bricked {
            return Ok(Step::Bricked);
        }
        // An image on trial (a reset landed the update before the OS could finish it): the
        // OS runs its self-test first, as after any update.
        if let Ok(status) = self.device.status()
            && status.trial
            && let Some((image, _)) = status.running
        {
            return self.settle_trial(image, behaviour).await;
        }
        let Some(offer) = self.checkin(behaviour).await? else { return Ok(Step::Idle) };
        self.tally.offers += 1;
        let image = offer.image_id;
        let detail = match (offer.transport, offer.source) {
            (Transport::Patch, Some(source)) => {
                self.tally.patches += 1;
                format!("patch from {}, {} bytes", short(&source), offer.size)
            }
            (transport, _) => format!("{transport}, {} bytes", offer.size),
        };
        self.event_about(image, EventKind::Downloading, Some(detail), Some(offer.transport))
            .await?;

        // Download into slot B, resuming from the agent's checkpoint after each power cut.
        let booted = match self.download(&offer, behaviour).await? {
            // The patch failed, not the image: reported as such, the image comes whole next.
            Downloaded::Refused { reason, patch: true } => {
                self.tally.patches_failed += 1;
                let detail = Some(format!("patch: {reason}"));
                self.event_about(image, EventKind::Failed, detail, Some(Transport::Patch)).await?;
                return Ok(Step::Updated);
            }
            Downloaded::Refused { reason: refusal, patch: false } => {
                self.tally.failed += 1;
                self.last_failed = Some(image);
                self.event(image, EventKind::Failed, Some(refusal)).await?;
                return Ok(Step::Updated);
            }
            Downloaded::Bricked => return Ok(Step::Bricked),
            Downloaded::Booted(booted) => {
                // Power was cut right after the download was complete: the reset swapped.
                self.event(image, EventKind::Installed, None).await?;
                booted
            }
            Downloaded::Pending => {
                self.event(image, EventKind::Installed, None).await?;
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
            self.event(image, EventKind::Failed, Some(detail)).await?;
            return Ok(Step::Updated);
        }
        self.settle_trial(image, behaviour).await
    }

    /// The OS's self-test of an image on trial: confirm it, or (unhealthy) reset until the
    /// boot logic reverts it.
    async fn settle_trial(&mut self, image: ImageId, behaviour: Behaviour) -> Result<Step> {
        self.event(image, EventKind::Booted, None).await?;
        if !unhealthy(&self.id, image, behaviour.fail_ratio) {
            self.device.confirm().map_err(|e| anyhow!("confirm: {e}"))?;
            self.tally.confirmed += 1;
            self.event(image, EventKind::Confirmed, None).await?;
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
                        .push(format!("device {}: revert of {image}: {reason:?}", self.id));
                }
                self.tally.reverted += 1;
                self.last_failed = Some(image);
                let detail =
                    format!("self-test failed; the boot logic went back to {}", booted.image.id);
                self.event(image, EventKind::Reverted, Some(detail)).await?;
                return Ok(Step::Updated);
            }
        }
        self.tally.anomalies.push(format!("device {}: {image} never reverted", self.id));
        Ok(Step::Updated)
    }

    /// Streams the offered image (or patch) into the agent, resuming after power cuts.
    async fn download(&mut self, offer: &Offer, behaviour: Behaviour) -> Result<Downloaded> {
        let mut offer = offer.clone();
        let mut cut = false;
        for _attempt in 0..64 {
            // One cut per download at most: the attempts after it resume.
            let ratio = if cut { 0.0 } else { behaviour.power_cut_ratio };
            let started = self.maybe_cut(ratio, Phase::Download);
            let once = self.download_once(&offer).await;
            // Talking to the server failed for good: no power cut stays scheduled.
            let once = once.inspect_err(|_| self.device.flash.cut(None))?;
            match once {
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
                    // The same image again, in the form the server now offers it (the agent
                    // resumes a download only in the form it started in).
                    match self.checkin(behaviour).await? {
                        Some(again) if again.image_id == offer.image_id => offer = again,
                        other => {
                            let now = other.map_or("nothing".to_owned(), |o| short(&o.image_id));
                            let reason = format!(
                                "after a reset the server offers {now}, not {}",
                                short(&offer.image_id)
                            );
                            return Ok(Downloaded::Refused { reason, patch: false });
                        }
                    }
                }
                Err(e) => {
                    let patch = offer.transport == Transport::Patch && patch_at_fault(&e);
                    return Ok(Downloaded::Refused { reason: e.to_string(), patch });
                }
            }
        }
        Err(anyhow!("download did not finish after 64 power cuts"))
    }

    /// One attempt at `offer`: the agent takes it up (from its checkpoint, if a reset cut the
    /// same download short), the rest is fetched with `Range` and fed in chunks.
    async fn download_once(&mut self, offer: &Offer) -> Result<Result<(), UpdateError>> {
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
        let release = &offer.release.0;
        let begun = match offer.transport {
            Transport::Image => agent.begin(flash, release),
            Transport::Patch => agent.begin_patch(flash, release),
        };
        let started = match begun {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        // From the agent's checkpoint (a `Range` request when not 0); retried from there if
        // the server goes away.
        let from = u64::from(started.resume_from);
        if from > 0 {
            self.tally.resumed[usize::from(offer.transport == Transport::Patch)] += 1;
        }
        let (url, what) = (&offer.url, format!("download from byte {from}"));
        let body = self
            .server
            .call(&mut self.tally.retries, &what, |c| async move {
                c.download(url, from, MAX_RESPONSE).await
            })
            .await?;
        self.tally.downloaded += body.len() as u64;
        if offer.transport == Transport::Patch {
            self.tally.downloaded_patch += body.len() as u64;
        }
        let mut rest = &body[..];
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
