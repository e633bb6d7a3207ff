//! Releases (signed statements that an environment runs an image) and their rollouts.

use serde::{Deserialize, Serialize};

use crate::{BoardName, EnvironmentName, HexBytes, ImageId, Timestamp};

/// Whether a release was made by a release (or promotion) or by a rollback.
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
pub enum ReleaseKind {
    /// A release or promotion.
    Release,
    /// A rollback to an earlier image.
    Rollback,
}

/// Where a release's rollout stands.
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
pub enum RolloutState {
    /// Offered to the current stage; advancing as devices confirm.
    Rolling,
    /// The last stage is done (still offered to devices that have not taken it).
    Completed,
    /// Stopped by an operator; no offers until resumed.
    Paused,
    /// Stopped by itself: failures passed the threshold. No offers; resume to override.
    Halted,
    /// A later release for the same board replaced it.
    Superseded,
}

impl RolloutState {
    /// Whether devices are offered the release in this state.
    pub fn offers(self) -> bool {
        matches!(self, RolloutState::Rolling | RolloutState::Completed)
    }
}

/// A release request (`POST /environments/{env}/releases`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    /// The image.
    pub image_id: ImageId,
    /// The signed statement; absent where the server holds the environment's key.
    #[serde(default)]
    pub statement: Option<HexBytes>,
}

/// A rollback request (`POST /environments/{env}/rollback`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Which board's release to roll back (needed only if several boards have releases).
    #[serde(default)]
    pub board: Option<BoardName>,
    /// The signed statement for the previous image; absent where the server holds the key.
    #[serde(default)]
    pub statement: Option<HexBytes>,
}

/// What a rollback would release (`GET /environments/{env}/rollback`): sign this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackTarget {
    /// The board.
    pub board: BoardName,
    /// The image to go back to.
    pub image_id: ImageId,
    /// The sequence its statement must carry.
    pub sequence: u64,
}

/// One release and its rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    /// Environment.
    pub environment: EnvironmentName,
    /// Sequence number (per environment, increasing, contiguous).
    pub sequence: u64,
    /// The image.
    pub image_id: ImageId,
    /// Its board.
    pub board: BoardName,
    /// Its version.
    pub version: String,
    /// Release or rollback.
    pub kind: ReleaseKind,
    /// The signed statement devices receive.
    pub statement: HexBytes,
    /// When.
    pub created_at: Timestamp,
    /// The token name that made it.
    pub created_by: String,
    /// Rollout state.
    pub state: RolloutState,
    /// Why it halted or was paused, if it did.
    pub reason: Option<String>,
    /// Index of the current stage in `stages`.
    pub stage: usize,
    /// The environment's stages (cumulative percentages).
    pub stages: Vec<u8>,
    /// Counts behind the rollout decisions.
    pub progress: RolloutProgress,
}

/// Counts behind a rollout's decisions.
#[derive(Clone, Copy, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// Devices of the environment on this board.
    pub devices: u64,
    /// Of those, devices in the current stage (cumulative).
    pub in_stage: u64,
    /// Devices in the stage running the image, confirmed.
    pub confirmed: u64,
    /// Devices in the stage that reverted or refused the image.
    pub failed: u64,
    /// `failed / in_stage`.
    pub failure_ratio: f64,
}
