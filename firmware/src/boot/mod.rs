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
use crate::slot::{self, Place, SlotError, SlotImage};
use crate::state::{
    FailReason, ImageTag, Outcome, OutcomeKind, Phase, Record, RevertReason, StateError, StateLog,
};

/// How the boot logic checks and trials images.
#[derive(Clone, Copy, Debug)]
pub struct BootConfig<'a> {
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
        BootConfig { keys, verify_signatures: true, trial_boots: 1 }
    }

    fn keys(&self) -> Option<&'a [TrustedKey]> {
        self.verify_signatures.then_some(self.keys)
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
    loop {
        let state = *log.state();
        match state.phase {
            Phase::Reverting { reason, units, image } => {
                swap::copy_back(flash, layout, units)?;
                let outcome = Outcome { kind: OutcomeKind::Reverted(reason), image };
                log.append(flash, Record::Outcome(outcome))?;
            }
            Phase::Swapping { pending, done } => {
                if done == 0 {
                    // Nothing moved yet: make sure what waits in B still is the image that was
                    // verified, before the swap destroys anything.
                    let place = Place { slot: Slot::B, shift: pending.shift.into() };
                    let ok = slot::check(
                        flash,
                        layout,
                        place,
                        config.keys(),
                        state.min_security_counter,
                    )
                    .is_ok_and(|img| crate::state::ImageTag::of(&img.id) == pending.image);
                    if !ok {
                        let kind = OutcomeKind::Failed(FailReason::PendingCorrupt);
                        log.append(flash, Record::Outcome(Outcome { kind, image: pending.image }))?;
                        continue;
                    }
                }
                swap::swap(flash, layout, &mut log, pending, done)?;
                let units = pending.new_units.min(pending.old_units);
                let record = Record::TrialStart {
                    image: pending.image,
                    boots_allowed: config.trial_boots.max(1),
                    units,
                };
                log.append(flash, record)?;
                match check_a(flash, layout, config, state.min_security_counter) {
                    Ok(image) => return Ok(Booted { image, trial: true }),
                    Err(_) => begin_revert(flash, &mut log, RevertReason::ImageInvalid)?,
                }
            }
            Phase::Trial { boots, boots_allowed, .. } => {
                if boots >= boots_allowed {
                    begin_revert(flash, &mut log, RevertReason::NotConfirmed)?;
                    continue;
                }
                log.append(flash, Record::TrialBoot)?;
                match check_a(flash, layout, config, state.min_security_counter) {
                    Ok(image) => return Ok(Booted { image, trial: true }),
                    Err(_) => begin_revert(flash, &mut log, RevertReason::ImageInvalid)?,
                }
            }
            Phase::Idle | Phase::Downloading { .. } => {
                let slot_a = match check_a(flash, layout, config, state.min_security_counter) {
                    Ok(image) => return Ok(Booted { image, trial: false }),
                    Err(SlotError::Flash(e)) => return Err(BootError::Flash(e)),
                    Err(problem) => problem,
                };
                // Slot A is damaged: restore the previous image from slot B if it can be.
                if matches!(state.phase, Phase::Downloading { .. }) {
                    return Err(BootError::NoBootableImage { slot_a });
                }
                match restorable(flash, layout, config, state.min_security_counter)? {
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
    config: &BootConfig<'_>,
    min_security_counter: u32,
) -> Result<Option<(u16, ImageTag)>, BootError> {
    let previous = Place { slot: Slot::B, shift: 0 };
    let image = match slot::check(flash, layout, previous, config.keys(), min_security_counter) {
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

fn check_a<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    config: &BootConfig<'_>,
    min_security_counter: u32,
) -> Result<SlotImage, SlotError> {
    slot::check(flash, layout, Place::A, config.keys(), min_security_counter)
}

/// Records that a revert begins; the copy itself runs on the next turn of the boot loop.
fn begin_revert<F: NorFlash>(
    flash: &mut F,
    log: &mut StateLog<'_>,
    reason: RevertReason,
) -> Result<(), BootError> {
    let Phase::Trial { image, units, .. } = log.state().phase else {
        return Ok(());
    };
    log.append(flash, Record::RevertBegin { reason, units, image })?;
    Ok(())
}
