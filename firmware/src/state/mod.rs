//! The durable state of the boot logic and the update agent, kept in the state partition as an
//! append-only log of small checksummed records ([`record`]), replayed at every start
//! ([`StateLog`]).

mod log;
pub mod record;

pub use log::{StateError, StateLog, marker_area};
pub use record::{
    Checkpoint, Download, FailReason, ImageTag, Outcome, OutcomeKind, Pending, Record,
    RevertReason, TransportForm,
};

/// What the device is in the middle of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// Running a confirmed image; nothing in progress.
    Idle,
    /// Downloading an image into slot B.
    Downloading {
        /// The download.
        download: Download,
        /// The last durable point reached, if any.
        checkpoint: Option<Checkpoint>,
    },
    /// A verified image waits in slot B, or the swap is under way.
    Swapping {
        /// The update.
        pending: Pending,
        /// Swap progress markers set.
        done: u16,
    },
    /// The new image is in slot A and boots on trial.
    Trial {
        /// The trial image.
        image: ImageTag,
        /// Boots allowed before it must have confirmed.
        boots_allowed: u8,
        /// Boots so far.
        boots: u8,
        /// Erase units a revert copies back.
        units: u16,
    },
    /// Slot B is being copied back into slot A.
    Reverting {
        /// Why.
        reason: RevertReason,
        /// Erase units to copy.
        units: u16,
        /// The image being taken out.
        image: ImageTag,
    },
}

/// The state a log replays to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct State {
    /// Images with a lower security counter are refused.
    pub min_security_counter: u32,
    /// Last release sequence applied.
    pub release_sequence: u64,
    /// What is in progress.
    pub phase: Phase,
    /// How the last update attempt ended.
    pub outcome: Option<Outcome>,
}

impl Default for State {
    fn default() -> Self {
        State { min_security_counter: 0, release_sequence: 0, phase: Phase::Idle, outcome: None }
    }
}

impl State {
    /// The state after `record`.
    pub fn apply(&mut self, record: &Record) {
        match *record {
            Record::UnitStart { .. } => {}
            Record::Base { min_security_counter, release_sequence } => {
                self.min_security_counter = min_security_counter;
                self.release_sequence = release_sequence;
            }
            Record::Outcome(outcome) => {
                self.outcome = Some(outcome);
                self.phase = Phase::Idle;
            }
            Record::Download(download) => {
                self.phase = Phase::Downloading { download, checkpoint: None };
            }
            Record::Checkpoint(c) => {
                if let Phase::Downloading { checkpoint, .. } = &mut self.phase {
                    *checkpoint = Some(c);
                }
            }
            Record::Pending(pending) => {
                self.release_sequence = self.release_sequence.max(pending.release_sequence);
                self.phase = Phase::Swapping { pending, done: pending.done };
            }
            Record::MoreMarkers { done: counted, .. } => {
                if let Phase::Swapping { done, .. } = &mut self.phase {
                    *done = counted;
                }
            }
            Record::TrialStart { image, boots_allowed, units } => {
                self.phase = Phase::Trial { image, boots_allowed, boots: 1, units };
            }
            Record::TrialBoot { boots: count } => {
                if let Phase::Trial { boots, .. } = &mut self.phase {
                    *boots = count;
                }
            }
            Record::Confirmed { image, security_counter } => {
                self.min_security_counter = self.min_security_counter.max(security_counter);
                self.outcome = Some(Outcome { kind: OutcomeKind::Updated, image });
                self.phase = Phase::Idle;
            }
            Record::RevertBegin { reason, units, image } => {
                self.phase = Phase::Reverting { reason, units, image };
            }
        }
    }

    /// `count` more progress markers were set.
    fn add_markers(&mut self, count: u16) {
        if let Phase::Swapping { done, .. } = &mut self.phase {
            *done = done.saturating_add(count);
        }
    }
}
