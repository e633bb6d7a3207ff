//! A simulated device: the real boot logic, agent, `confirm` and `status` over a [`SimFlash`],
//! driven by a small model of the OS. Used by the power-cut campaign, the wear benchmark and
//! tests.

use std::string::String;
use std::vec::Vec;

use super::{Cut, CutKind, Rng, SimFlash};
use crate::boot::{BootConfig, BootError, Booted, boot};
use crate::flash::{FlashLayout, Slot};
use crate::image::{ImageId, MAX_WINDOW, TrustedKey, installed_form};
use crate::state::{OutcomeKind, Phase, RevertReason, StateLog};
use crate::update::{self, Agent, AgentConfig, ConfirmError, Confirmation, Status, UpdateError};

/// Who the device trusts and what it is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Board name.
    pub board: String,
    /// Build keys.
    pub build_keys: Vec<TrustedKey>,
    /// Environment name.
    pub environment: String,
    /// Environment release keys.
    pub environment_keys: Vec<TrustedKey>,
}

impl Identity {
    /// What the update agent of a device with this identity accepts.
    pub fn agent_config(&self, checkpoint_every: u32) -> AgentConfig<'_> {
        AgentConfig {
            board: &self.board,
            build_keys: &self.build_keys,
            environment: &self.environment,
            environment_keys: &self.environment_keys,
            checkpoint_every,
        }
    }
}

/// A simulated device.
#[derive(Clone, Debug)]
pub struct SimDevice {
    /// Its flash.
    pub flash: SimFlash,
    /// Its layout.
    pub layout: FlashLayout,
    /// Who it trusts.
    pub identity: Identity,
    /// Trial boots before a revert.
    pub trial_boots: u8,
    /// Installed bytes between download checkpoints.
    pub checkpoint_every: u32,
    /// Bytes of heatshrink window the agent gets.
    pub window: usize,
}

impl SimDevice {
    /// A device with erased flash.
    pub fn new(layout: FlashLayout, identity: Identity) -> Self {
        SimDevice {
            flash: SimFlash::new(&layout),
            layout,
            identity,
            trial_boots: 1,
            checkpoint_every: 16 * 1024,
            window: MAX_WINDOW,
        }
    }

    /// Factory programming: the installed form of `image` into slot A (confirmed: the state log
    /// is left empty, which means so).
    pub fn provision(&mut self, image: &[u8]) -> Result<(), crate::image::ImageError> {
        let slot_start = self.layout.base() + self.layout.slot(Slot::A).offset;
        let installed = installed_form(image, slot_start, self.layout.erased())?;
        self.flash.load(self.layout.slot(Slot::A).offset, &installed);
        Ok(())
    }

    /// Runs the boot logic.
    pub fn boot(&mut self) -> Result<Booted, BootError> {
        let config = BootConfig {
            board: Some(&self.identity.board),
            keys: &self.identity.build_keys,
            verify_signatures: true,
            trial_boots: self.trial_boots,
        };
        boot(&mut self.flash, &self.layout, &config)
    }

    /// Downloads `image` under `release` with the real agent, in chunks of random sizes up to
    /// `max_chunk`; continues an interrupted download from where the agent says.
    pub fn download(
        &mut self,
        release: &[u8],
        image: &[u8],
        max_chunk: usize,
        rng: &mut Rng,
    ) -> Result<ImageId, UpdateError> {
        self.transfer(release, image, false, max_chunk, rng)
    }

    /// Like [`Self::download`], for a patch against the image in slot A
    /// ([`Agent::begin_patch`]).
    pub fn download_patch(
        &mut self,
        release: &[u8],
        patch: &[u8],
        max_chunk: usize,
        rng: &mut Rng,
    ) -> Result<ImageId, UpdateError> {
        self.transfer(release, patch, true, max_chunk, rng)
    }

    fn transfer(
        &mut self,
        release: &[u8],
        image: &[u8],
        patch: bool,
        max_chunk: usize,
        rng: &mut Rng,
    ) -> Result<ImageId, UpdateError> {
        self.with_agent(|agent, flash| {
            let started = if patch {
                agent.begin_patch(flash, release)?
            } else {
                agent.begin(flash, release)?
            };
            let mut rest = image.get(started.resume_from as usize..).unwrap_or_default();
            while !rest.is_empty() {
                let n = (1 + rng.below(max_chunk as u64) as usize).min(rest.len());
                agent.feed(flash, &rest[..n])?;
                rest = &rest[n..];
            }
            agent.finish(flash)
        })?
    }

    /// Runs `f` with a new update agent over this device's flash: its identity, checkpoint
    /// interval and window, as the OS would make it after a reset.
    pub fn with_agent<R>(
        &mut self,
        f: impl FnOnce(&mut Agent<'_, '_>, &mut SimFlash) -> R,
    ) -> Result<R, UpdateError> {
        let config = self.identity.agent_config(self.checkpoint_every);
        let mut window = [0u8; MAX_WINDOW];
        let window = &mut window[..self.window.min(MAX_WINDOW)];
        let mut agent = Agent::new(&mut self.flash, &self.layout, config, window)?;
        Ok(f(&mut agent, &mut self.flash))
    }

    /// Confirms the running image.
    pub fn confirm(&mut self) -> Result<Confirmation, ConfirmError> {
        update::confirm(&mut self.flash, &self.layout)
    }

    /// The update status.
    pub fn status(&mut self) -> Result<Status, crate::state::StateError> {
        update::status(&mut self.flash, &self.layout)
    }

    /// Sets the durable counters, as a device in service has them.
    pub fn set_counters(
        &mut self,
        min_security_counter: u32,
        release_sequence: u64,
    ) -> Result<(), crate::state::StateError> {
        let mut log = StateLog::open(&mut self.flash, &self.layout)?;
        log.append(
            &mut self.flash,
            crate::state::Record::Base { min_security_counter, release_sequence },
        )
    }

    /// Fills the current state log unit with filler records until at most `leave` bytes are
    /// free, so the next records of an update make the log move to its next unit.
    pub fn fill_log(&mut self, leave: u32) -> Result<(), crate::state::StateError> {
        let mut log = StateLog::open(&mut self.flash, &self.layout)?;
        let filler = crate::state::Record::Outcome(crate::state::Outcome {
            kind: OutcomeKind::Updated,
            image: crate::state::ImageTag([0xEE; 8]),
        });
        while log.free() > leave {
            log.append(&mut self.flash, filler)?;
        }
        Ok(())
    }

    /// The durable state (replayed from the log).
    pub fn state(&mut self) -> Result<crate::state::State, crate::state::StateError> {
        Ok(*StateLog::open(&mut self.flash, &self.layout)?.state())
    }
}

/// How the update under test ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ending {
    /// The new image passes its self-test and confirms.
    Confirm,
    /// The new image is unhealthy and never confirms: the boot logic must revert it.
    Revert,
}

/// An update to run: a provisioned device, the new image and its release.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The device, provisioned with the old image.
    pub device: SimDevice,
    /// The old image's id.
    pub old: ImageId,
    /// The new image (`.fwi`).
    pub new_image: Vec<u8>,
    /// A patch from the old image to the new one: when given, the device downloads it instead
    /// of the image.
    pub patch: Option<Vec<u8>>,
    /// The new image's id.
    pub new: ImageId,
    /// Its signed release statement.
    pub release: Vec<u8>,
    /// How it ends.
    pub ending: Ending,
    /// Largest chunk the "network" delivers.
    pub max_chunk: usize,
}

/// What a run ended in.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RunReport {
    /// Power cuts that actually hit.
    pub cuts: u32,
    /// The image running at the end.
    pub running: Option<ImageId>,
    /// Why the device counts as bricked (or ended in the wrong state), if it does.
    pub failure: Option<String>,
    /// Flash operations the run took.
    pub operations: u64,
}

/// Second cut: after the first cut hits, cut again `after` operations into the recovery.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SecondCut {
    /// Operations after the first cut.
    pub after: u64,
    /// How.
    pub kind: CutKind,
}

impl Scenario {
    /// Runs the update to its end: the device model downloads, resets, confirms (or not) and
    /// resets, surviving the scheduled power cuts, then checks where it ended up.
    pub fn run(&self, first: Option<Cut>, second: Option<SecondCut>, seed: u64) -> RunReport {
        let mut device = self.device.clone();
        let mut rng = Rng::new(seed);
        let start_ops = device.flash.stats().operations;
        device.flash.cut(first.map(|c| Cut { at: start_ops + c.at, ..c }));
        let mut second = second;
        let mut cuts = 0;
        let mut confirmed = false;
        // Durable counters never go backwards, whatever a cut hits.
        let mut floor =
            device.state().map(|s| (s.min_security_counter, s.release_sequence)).unwrap_or((0, 0));
        let report = |device: &SimDevice, running, failure: Option<String>, cuts| RunReport {
            cuts,
            running,
            failure,
            operations: device.flash.stats().operations - start_ops,
        };
        for _ in 0..64 {
            if device.flash.is_off() {
                cuts += 1;
                device.flash.power_on();
                let next = second
                    .take()
                    .map(|s| Cut { at: device.flash.stats().operations + s.after, kind: s.kind });
                device.flash.cut(next);
            }
            if device.flash.stats().violations > 0 {
                return report(&device, None, Some("a NOR flash rule was broken".into()), cuts);
            }
            let booted = match device.boot() {
                Ok(booted) => booted,
                Err(_) if device.flash.is_off() => continue,
                Err(e) => {
                    return report(&device, None, Some(std::format!("boot failed: {e}")), cuts);
                }
            };
            let running = booted.image.id;
            let Ok(state) = device.state() else { continue };
            if state.min_security_counter < floor.0 || state.release_sequence < floor.1 {
                let failure = std::format!(
                    "durable counters went backwards: minimum security counter {} -> {}, release {} -> {}",
                    floor.0,
                    state.min_security_counter,
                    floor.1,
                    state.release_sequence
                );
                return report(&device, Some(running), Some(failure), cuts);
            }
            floor = (state.min_security_counter, state.release_sequence);
            if running == self.new {
                if !booted.trial {
                    // Confirmed and permanent: the end of a confirm run.
                    let failure = (self.ending == Ending::Revert)
                        .then(|| "an image that never confirmed became permanent".into());
                    return report(&device, Some(running), failure, cuts);
                }
                if self.ending == Ending::Confirm
                    && matches!(device.confirm(), Ok(Confirmation::Confirmed(_)))
                {
                    confirmed = true;
                }
                // Reset (the unhealthy image just stops; a healthy one reboots after confirming).
                continue;
            }
            if running != self.old {
                return report(&device, Some(running), Some("an unknown image runs".into()), cuts);
            }
            let reverted = matches!(
                state.outcome,
                Some(o) if o.kind == OutcomeKind::Reverted(RevertReason::NotConfirmed)
                    && o.image == crate::state::ImageTag::of(&self.new)
            );
            if reverted {
                let failure = confirmed.then(|| "a confirmation was lost".into());
                return report(&device, Some(running), failure, cuts);
            }
            let applied = state.release_sequence >= self.release_sequence()
                && !matches!(state.phase, Phase::Downloading { .. });
            if applied {
                // Pending: the next reset swaps. (Reaching here means the boot returned the old
                // image with an update pending, which only happens if it no longer verified.)
                return report(
                    &device,
                    Some(running),
                    Some("the pending update was dropped".into()),
                    cuts,
                );
            }
            let downloaded = match &self.patch {
                Some(patch) => {
                    device.download_patch(&self.release, patch, self.max_chunk, &mut rng)
                }
                None => device.download(&self.release, &self.new_image, self.max_chunk, &mut rng),
            };
            match downloaded {
                Ok(_) => {}
                Err(_) if device.flash.is_off() => {}
                Err(e) => {
                    return report(
                        &device,
                        Some(running),
                        Some(std::format!("download failed: {e}")),
                        cuts,
                    );
                }
            }
        }
        report(&device, None, Some("no end after 64 resets".into()), cuts)
    }

    fn release_sequence(&self) -> u64 {
        crate::image::SignedRelease::parse(&self.release)
            .map(|r| r.statement().sequence())
            .unwrap_or(0)
    }
}
