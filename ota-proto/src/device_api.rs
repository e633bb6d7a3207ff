//! The device API (`/api/v1/device/...`): what a device reports and what it is offered.

use serde::{Deserialize, Serialize};

use crate::{EnvironmentName, HexBytes, ImageId, Sha256};

/// What a device reports about one update step (defined with the serial link's messages, so a
/// device on the link and one on HTTP say the same things).
pub use firmware::link::EventKind;

/// What slot B holds, as a device reports it.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Debug,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SlotBState {
    /// Erased.
    Empty,
    /// Nothing the device can name.
    Unknown,
    /// The image that ran before the last update (kept until the new one is confirmed).
    Previous,
    /// A download in progress.
    Downloading,
    /// A verified image waiting for the next reset to be swapped in.
    Pending,
}

/// What slot B holds and, where it names one, which image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotBReport {
    /// What it holds.
    pub state: SlotBState,
    /// The image concerned.
    #[serde(default)]
    pub image_id: Option<ImageId>,
}

/// Something a device can do beyond the baseline, announced in its check-in: the server offers
/// only what a device announced (a device that announces nothing gets full images).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Debug,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Capability {
    /// It installs patches (docs/delta.md) against the image in its slot A.
    Delta,
}

/// The form an offered image is downloaded in.
#[derive(
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Debug,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Transport {
    /// The `.fwi` file.
    #[default]
    Image,
    /// A patch from the image the device runs (its slot A) to the offered one.
    Patch,
}

/// A device's check-in (`POST /device/checkin`): what it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// The image in slot A.
    #[serde(default)]
    pub image_id: Option<ImageId>,
    /// Whether that image is on trial (not confirmed yet).
    #[serde(default)]
    pub trial: bool,
    /// What slot B holds.
    #[serde(default)]
    pub slot_b: Option<SlotBReport>,
    /// The last update outcome, free text (at most [`CheckIn::MAX_OUTCOME`] bytes).
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// The last release sequence applied.
    #[serde(default)]
    pub release_sequence: Option<u64>,
    /// What it can do beyond full images (absent: nothing; devices made before capabilities
    /// existed keep getting full images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
}

impl CheckIn {
    /// Longest `last_outcome`, bytes.
    pub const MAX_OUTCOME: usize = 128;

    /// The check-in of a device whose update status (read from its flash) is `status`: how
    /// the serial gateway and the fleet simulator turn a device's status into a report.
    pub fn from_status(status: &firmware::update::Status) -> Self {
        use firmware::update::SlotB;
        let (state, image) = match status.slot_b {
            SlotB::Unknown => (SlotBState::Unknown, None),
            SlotB::Previous(id) => (SlotBState::Previous, Some(id)),
            SlotB::Downloading(..) => (SlotBState::Downloading, None),
            SlotB::Pending(_) => (SlotBState::Pending, None),
        };
        CheckIn {
            image_id: status.running.as_ref().map(|(id, _)| *id),
            trial: status.trial,
            slot_b: Some(SlotBReport { state, image_id: image }),
            last_outcome: status.outcome.map(outcome_text),
            release_sequence: Some(status.release_sequence),
            capabilities: Vec::new(),
        }
    }
}

/// A device's last outcome in words (at most [`CheckIn::MAX_OUTCOME`] bytes).
pub fn outcome_text(outcome: firmware::state::Outcome) -> String {
    use firmware::state::OutcomeKind;
    let tag = outcome.image;
    let mut text = match outcome.kind {
        OutcomeKind::Updated => format!("updated to {tag}"),
        OutcomeKind::Reverted(r) => format!("reverted {tag}: {r:?}"),
        OutcomeKind::Failed(r) => format!("failed {tag}: {r:?}"),
    };
    text.truncate(CheckIn::MAX_OUTCOME);
    text
}

/// The answer to a check-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInResponse {
    /// An image to install, or nothing.
    pub offer: Option<Offer>,
}

/// An image offered to a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The image.
    pub image_id: ImageId,
    /// What `url` serves: the image file, or a patch to it from the image the device runs.
    #[serde(default)]
    pub transport: Transport,
    /// For a patch: the image it applies to (the device's slot A, as it last reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ImageId>,
    /// Size in bytes of what `url` serves.
    pub size: u64,
    /// SHA-256 of what `url` serves.
    pub sha256: Sha256,
    /// The signed release statement (the device checks it with its environment's key).
    pub release: HexBytes,
    /// The environment.
    pub environment: EnvironmentName,
    /// The release sequence.
    pub sequence: u64,
    /// Where to download it (supports `Range`), relative to the server.
    pub url: String,
}

/// A device's report of one step (`POST /device/events`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// The image it is about.
    pub image_id: ImageId,
    /// What happened.
    pub kind: EventKind,
    /// Free text, at most [`NewEvent::MAX_DETAIL`] bytes.
    #[serde(default)]
    pub detail: Option<String>,
    /// The form of the download it is about, where it matters: a `failed` step with `patch`
    /// says the patch failed (refused against slot A, say), not the image, and the device is
    /// offered the full image next time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

impl NewEvent {
    /// Longest `detail`, bytes.
    pub const MAX_DETAIL: usize = 512;
}
