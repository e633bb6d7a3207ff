//! The boot logic, run at every reset.
//!
//! ```text
//!            ┌──────────────────────────── confirm() ─────────────────────────────┐
//!            v                                                                    │
//!  Idle ── agent verified an image in B ──> Swapping ── swap done ──> Trial (boot it) ──┤
//!   ^                                          │                       │ not confirmed  │
//!   │          B no longer verifies: Failed ───┘                       │ by the next    │
//!   │                                                                  v reset          │
//!   └────────────── revert done: Reverted <──────────────────────── Reverting           │
//!   └──────────────────────────────────────────────────────────────── Updated <─────────┘
//! ```
//!
//! Every step is recorded in the state log before or after the flash work it stands for, and
//! every flash step can be redone, so a reset at any point resumes the same step. The image in
//! slot A is checked (component hashes always, signatures when configured) before every jump;
//! the boot logic never returns an image that failed. See `docs/bootloader.md`.

mod swap;

use embedded_storage::nor_flash::NorFlash;

use crate::flash::io::FlashError;
use crate::flash::{FlashLayout, Slot};
use crate::image::{MAX_HEADER_LEN, TrustedKey};
use crate::slot::{self, Checks, Place, SlotError, SlotImage};
use crate::state::{
    FailReason, ImageTag, Outcome, OutcomeKind, Phase, Record, RevertReason, StateError, StateLog,
};

/// How the boot logic checks and trials images.
#[derive(Clone, Copy, Debug)]
pub struct BootConfig<'a> {
    /// This device's board: images for another are not booted (`None`: not checked).
    pub board: Option<&'a str>,
    /// Build keys images must be signed by.
    pub keys: &'a [TrustedKey],
    /// Whether to check signatures before booting (hashes are always checked).
    pub verify_signatures: bool,
    /// Boots a new image gets to confirm itself before it is reverted.
    pub trial_boots: u8,
}

impl<'a> BootConfig<'a> {
    /// Signatures checked, one trial boot.
    pub fn new(keys: &'a [TrustedKey]) -> Self {
        BootConfig { board: None, keys, verify_signatures: true, trial_boots: 1 }
    }

    fn checks(&self, min_security_counter: u32) -> Checks<'a> {
        Checks {
            keys: self.verify_signatures.then_some(self.keys),
            min_security_counter,
            board: self.board,
        }
    }
}

/// The image to jump to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Booted {
    /// The image in slot A, checked.
    pub image: SlotImage,
    /// Whether it runs on trial (it must call `confirm` or be reverted at the next reset).
    pub trial: bool,
}

impl From<SlotError> for BootError {
    fn from(e: SlotError) -> Self {
        match e {
            SlotError::Flash(f) => BootError::Flash(f),
            slot_a => BootError::NoBootableImage { slot_a },
        }
    }
}

/// Why the boot logic did not return an image.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum BootError {
    /// Flash failed (on the simulator: power was cut).
    #[error("{0}")]
    Flash(#[from] FlashError),
    /// The state log failed.
    #[error("state log: {0}")]
    State(#[from] StateError),
    /// Neither slot holds an image that passes its checks.
    #[error("no bootable image: slot A: {slot_a}")]
    NoBootableImage {
        /// What is wrong with slot A.
        slot_a: SlotError,
    },
}

/// Runs the boot logic: finishes whatever a reset interrupted, swaps in a pending update or
/// reverts a failed one, and returns the checked image to start.
pub fn boot<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    config: &BootConfig<'_>,
) -> Result<Booted, BootError> {
    let mut log = StateLog::open(flash, layout)?;
    if log.formatted() {
        // A new device, or a log destroyed: the image in slot A was accepted once, so its
        // security counter is a floor nothing older may go below.
        let checks = config.checks(0);
        match slot::check(flash, layout, Place::A, &checks) {
            Ok(image) => log.append(
                flash,
                Record::Base { min_security_counter: image.security_counter, release_sequence: 0 },
            )?,
            Err(SlotError::Flash(e)) => return Err(e.into()),
            Err(_) => {}
        }
    }
    // At most one revert or restore per boot: if slot A still fails after one, flash is not
    // doing what it is told, and going round again would only wear it.
    let mut reverted = false;
    loop {
        let state = *log.state();
        let checks = config.checks(state.min_security_counter);
        match state.phase {
            Phase::Reverting { reason, units, image } => {
                swap::copy_back(flash, layout, units)?;
                let outcome = Outcome { kind: OutcomeKind::Reverted(reason), image };
                log.append(flash, Record::Outcome(outcome))?;
                reverted = true;
            }
            Phase::Swapping { pending, done } => {
                if done == 0 {
                    // Nothing moved yet: make sure what waits in B still is the image that was
                    // verified, before the swap destroys anything.
                    let place = Place { slot: Slot::B, shift: pending.shift.into() };
                    let still_there = match slot::check(flash, layout, place, &checks) {
                        Ok(image) => ImageTag::of(&image.id) == pending.image,
                        Err(SlotError::Flash(e)) => return Err(e.into()),
                        Err(_) => false,
                    };
                    if !still_there {
                        let kind = OutcomeKind::Failed(FailReason::PendingCorrupt);
                        log.append(flash, Record::Outcome(Outcome { kind, image: pending.image }))?;
                        continue;
                    }
                }
                swap::swap(flash, layout, &mut log, pending, done)?;
                let units = pending.new_units.min(pending.old_units);
                let boots_allowed = config.trial_boots.max(1);
                log.append(
                    flash,
                    Record::TrialStart { image: pending.image, boots_allowed, units },
                )?;
                match slot::check(flash, layout, Place::A, &checks) {
                    Ok(image) if ImageTag::of(&image.id) == pending.image => {
                        return Ok(Booted { image, trial: true });
                    }
                    Err(SlotError::Flash(e)) => return Err(e.into()),
                    Ok(_) | Err(_) => {
                        let reason = RevertReason::ImageInvalid;
                        begin_revert(flash, &mut log, reason, units, pending.image)?;
                    }
                }
            }
            Phase::Trial { image, boots, boots_allowed, units } => {
                if boots >= boots_allowed && units > 0 {
                    begin_revert(flash, &mut log, RevertReason::NotConfirmed, units, image)?;
                    continue;
                }
                // (With nothing to revert to, because slot A held no image before, the new image
                // keeps running on trial until it confirms.)
                if boots < boots_allowed {
                    log.append(flash, Record::TrialBoot { boots: boots.saturating_add(1) })?;
                }
                match slot::check(flash, layout, Place::A, &checks) {
                    Ok(checked) if ImageTag::of(&checked.id) == image => {
                        return Ok(Booted { image: checked, trial: true });
                    }
                    Err(SlotError::Flash(e)) => return Err(e.into()),
                    Ok(_) | Err(_) if units > 0 => {
                        begin_revert(flash, &mut log, RevertReason::ImageInvalid, units, image)?;
                    }
                    Ok(_) => {
                        let slot_a = SlotError::Image(crate::image::ImageError::NotAnImage);
                        return Err(BootError::NoBootableImage { slot_a });
                    }
                    Err(slot_a) => return Err(BootError::NoBootableImage { slot_a }),
                }
            }
            Phase::Idle | Phase::Downloading { .. } => {
                let slot_a = match slot::check(flash, layout, Place::A, &checks) {
                    Ok(image) => return Ok(Booted { image, trial: false }),
                    Err(SlotError::Flash(e)) => return Err(BootError::Flash(e)),
                    Err(problem) => problem,
                };
                // Slot A is damaged: restore the previous image from slot B if it can be (not
                // while a download overwrites slot B, and not twice in one boot).
                if reverted || matches!(state.phase, Phase::Downloading { .. }) {
                    return Err(BootError::NoBootableImage { slot_a });
                }
                match restorable(flash, layout, &checks)? {
                    Some((units, image)) => {
                        let reason = RevertReason::ImageInvalid;
                        log.append(flash, Record::RevertBegin { reason, units, image })?;
                    }
                    None => return Err(BootError::NoBootableImage { slot_a }),
                }
            }
        }
    }
}

/// Whether the previous image is whole at the start of slot B (after a swap, when it was not
/// larger than its successor) and passes every check, the security counter included: then the
/// units to copy back, and the tag of what slot A holds now.
// Not inlined: its header buffers would otherwise sit in every boot's stack frame.
#[inline(never)]
fn restorable<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    checks: &Checks<'_>,
) -> Result<Option<(u16, ImageTag)>, BootError> {
    let previous = Place { slot: Slot::B, shift: 0 };
    let image = match slot::check(flash, layout, previous, checks) {
        Ok(image) => image,
        Err(SlotError::Flash(e)) => return Err(e.into()),
        Err(_) => return Ok(None),
    };
    if image.units > layout.unit_count(layout.slot(Slot::A)) {
        return Ok(None);
    }
    let mut header = [0u8; MAX_HEADER_LEN];
    let current = slot::read_header(flash, layout, Place::A, &mut header)
        .map(|h| ImageTag::of(&h.id()))
        .unwrap_or_default();
    Ok(Some((image.units as u16, current)))
}

/// Records that a revert of `image` begins; the copy itself runs on the next turn of the boot
/// loop.
fn begin_revert<F: NorFlash>(
    flash: &mut F,
    log: &mut StateLog<'_>,
    reason: RevertReason,
    units: u16,
    image: ImageTag,
) -> Result<(), BootError> {
    log.append(flash, Record::RevertBegin { reason, units, image })?;
    Ok(())
}
