//! The device side of an update, as the running OS uses it: the [`Agent`] that streams a new
//! image into slot B, [`confirm`] for an image on trial, and [`status`] to report.

mod agent;
mod writer;

pub use agent::{Agent, AgentConfig, Refusal, Started, UpdateError};

use embedded_storage::nor_flash::NorFlash;

use crate::flash::{FlashLayout, Slot};
use crate::image::{ImageId, MAX_HEADER_LEN, Version};
use crate::slot::{self, Place};
use crate::state::{ImageTag, Outcome, Phase, Record, StateError, StateLog};

/// What [`confirm`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Confirmation {
    /// The trial image is now permanent.
    Confirmed(ImageId),
    /// The running image was already confirmed.
    AlreadyConfirmed(ImageId),
}

/// Why [`confirm`] could not confirm.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ConfirmError {
    /// The state log failed.
    #[error("{0}")]
    State(#[from] StateError),
    /// Slot A does not hold a readable image.
    #[error("slot A: {0}")]
    Slot(#[from] slot::SlotError),
    /// The log's trial image is not the one in slot A (should not happen).
    #[error("the trial image is not the image in slot A")]
    Mismatch,
}

/// Confirms the running image (call once its self-test passed): a trial image becomes
/// permanent, and the device's minimum security counter rises to its counter. Durable when it
/// returns.
pub fn confirm<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
) -> Result<Confirmation, ConfirmError> {
    let mut log = StateLog::open(flash, layout)?;
    let mut buf = [0u8; MAX_HEADER_LEN];
    let header = slot::read_header(flash, layout, Place::A, &mut buf)?;
    let (id, counter) = (header.id(), header.manifest().security_counter());
    match log.state().phase {
        Phase::Trial { image, .. } if image == ImageTag::of(&id) => {
            log.append(flash, Record::Confirmed { image, security_counter: counter })?;
            Ok(Confirmation::Confirmed(id))
        }
        Phase::Trial { .. } => Err(ConfirmError::Mismatch),
        _ => Ok(Confirmation::AlreadyConfirmed(id)),
    }
}

/// The running image, both slots and the last outcome, for the OS to report. (An offer refused
/// before anything was written leaves no trace in flash: the agent that refused it says why,
/// [`Agent::last_refusal`].)
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// The image in slot A (from its header), if readable.
    pub running: Option<(ImageId, Version)>,
    /// Whether it is on trial (not confirmed yet).
    pub trial: bool,
    /// What slot B holds.
    pub slot_b: SlotB,
    /// The last update attempt's outcome.
    pub outcome: Option<Outcome>,
    /// Images below this security counter are refused.
    pub min_security_counter: u32,
    /// Last release sequence applied.
    pub release_sequence: u64,
}

/// What slot B holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum SlotB {
    /// Nothing known.
    Unknown,
    /// The previous image, kept from the last swap (possibly partly, if it was larger).
    Previous(ImageId),
    /// A download in progress, and the installed bytes durable so far.
    Downloading(ImageTag, u32),
    /// A verified image waiting for the next reset.
    Pending(ImageTag),
}

/// Reads the device's update status.
pub fn status<F: NorFlash>(flash: &mut F, layout: &FlashLayout) -> Result<Status, StateError> {
    let log = StateLog::open(flash, layout)?;
    let state = *log.state();
    let mut buf = [0u8; MAX_HEADER_LEN];
    let running = slot::read_header(flash, layout, Place::A, &mut buf)
        .ok()
        .map(|h| (h.id(), h.manifest().version().clone()));
    let slot_b = match state.phase {
        Phase::Downloading { download, checkpoint } => {
            SlotB::Downloading(download.image, checkpoint.map_or(0, |c| c.installed_offset))
        }
        Phase::Swapping { pending, .. } => SlotB::Pending(pending.image),
        _ => {
            let mut buf = [0u8; MAX_HEADER_LEN];
            match slot::read_header(flash, layout, Place { slot: Slot::B, shift: 0 }, &mut buf) {
                Ok(h) => SlotB::Previous(h.id()),
                Err(_) => SlotB::Unknown,
            }
        }
    };
    Ok(Status {
        running,
        trial: matches!(state.phase, Phase::Trial { .. }),
        slot_b,
        outcome: state.outcome,
        min_security_counter: state.min_security_counter,
        release_sequence: state.release_sequence,
    })
}
