//! The audit log: every management action, who did it, when, to what.

use serde::{Deserialize, Serialize};

use crate::{Role, Timestamp};

/// What was done.
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
pub enum AuditAction {
    /// `ota-server init` made the data folder.
    #[serde(rename = "server.init")]
    #[strum(serialize = "server.init")]
    ServerInit,
    /// An image was stored.
    #[serde(rename = "image.upload")]
    #[strum(serialize = "image.upload")]
    ImageUpload,
    /// A build key was trusted.
    #[serde(rename = "build_key.add")]
    #[strum(serialize = "build_key.add")]
    BuildKeyAdd,
    /// An environment was made.
    #[serde(rename = "environment.create")]
    #[strum(serialize = "environment.create")]
    EnvironmentCreate,
    /// An environment's rollout settings changed.
    #[serde(rename = "environment.update")]
    #[strum(serialize = "environment.update")]
    EnvironmentUpdate,
    /// An image was released (or promoted) to an environment.
    #[serde(rename = "release.create")]
    #[strum(serialize = "release.create")]
    ReleaseCreate,
    /// An environment went back to its previous image.
    #[serde(rename = "release.rollback")]
    #[strum(serialize = "release.rollback")]
    ReleaseRollback,
    /// A rollout was paused.
    #[serde(rename = "release.pause")]
    #[strum(serialize = "release.pause")]
    ReleasePause,
    /// A rollout was resumed.
    #[serde(rename = "release.resume")]
    #[strum(serialize = "release.resume")]
    ReleaseResume,
    /// A device was enrolled.
    #[serde(rename = "device.create")]
    #[strum(serialize = "device.create")]
    DeviceCreate,
    /// Devices were enrolled in one batch.
    #[serde(rename = "device.create_batch")]
    #[strum(serialize = "device.create_batch")]
    DeviceCreateBatch,
    /// A device got a new token.
    #[serde(rename = "device.token")]
    #[strum(serialize = "device.token")]
    DeviceToken,
    /// A management token was made.
    #[serde(rename = "token.create")]
    #[strum(serialize = "token.create")]
    TokenCreate,
    /// A management token was revoked.
    #[serde(rename = "token.revoke")]
    #[strum(serialize = "token.revoke")]
    TokenRevoke,
    /// A rollout's next stage started (by itself: enough devices confirmed).
    #[serde(rename = "rollout.advance")]
    #[strum(serialize = "rollout.advance")]
    RolloutAdvance,
    /// A rollout's last stage is done.
    #[serde(rename = "rollout.complete")]
    #[strum(serialize = "rollout.complete")]
    RolloutComplete,
    /// A rollout halted by itself: failures passed the threshold.
    #[serde(rename = "rollout.halt")]
    #[strum(serialize = "rollout.halt")]
    RolloutHalt,
    /// A device report that does not count: inconsistent with what the server knows of the
    /// device (actor `server`; see docs/server-api.md, "Evidence").
    #[serde(rename = "device.anomaly")]
    #[strum(serialize = "device.anomaly")]
    DeviceAnomaly,
}

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log (increasing).
    pub seq: i64,
    /// When.
    pub at: Timestamp,
    /// Who: the token's name (`cli` for the server's own command line, `server` for what the
    /// rollout engine does by itself).
    pub actor: String,
    /// The token's role.
    pub role: Role,
    /// What.
    pub action: AuditAction,
    /// On what (an image id, `env/sequence`, a device id, ...).
    pub target: String,
    /// Details.
    pub detail: serde_json::Value,
}
