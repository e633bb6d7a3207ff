//! Enrolled devices as the management API shows them, and enrolling them.

use serde::{Deserialize, Serialize};

use crate::{BoardName, DeviceId, EnvironmentName, EventKind, ImageId, SlotBReport, Timestamp};

/// Enrolling a device (`POST /devices`), or one row of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// Device id.
    pub id: DeviceId,
    /// Its board.
    pub board: BoardName,
    /// Its environment.
    pub environment: EnvironmentName,
}

/// A device just enrolled, with its token (shown only this once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceCreated {
    /// The device.
    pub device: DeviceInfo,
    /// Its bearer token for the device API.
    pub token: String,
}

/// Enrolling many devices at once (`POST /devices/batch`): all of them or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevices {
    /// The devices, in the order their tokens come back.
    pub devices: Vec<NewDevice>,
}

/// A batch enrolled: each device's token, in the order asked (shown only this once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesEnrolled {
    /// One entry per device.
    pub tokens: Vec<DeviceToken>,
}

/// A device id and its new token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceToken {
    /// The device.
    pub id: DeviceId,
    /// Its bearer token for the device API.
    pub token: String,
}

/// Where a device stands relative to its environment's current release.
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
pub enum DeviceState {
    /// Never checked in.
    Unseen,
    /// Runs its environment's current image for its board, confirmed (or there is none).
    Current,
    /// Has been offered the current image and not confirmed it yet.
    Updating,
    /// Not in the current rollout stage yet, or the rollout is stopped.
    Waiting,
    /// Reverted or refused the current image.
    Failed,
}

/// A device as the management API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device id.
    pub id: DeviceId,
    /// Board.
    pub board: BoardName,
    /// Environment.
    pub environment: EnvironmentName,
    /// Where it stands.
    pub state: DeviceState,
    /// The image it last reported running.
    pub running: Option<ImageId>,
    /// Whether that image is confirmed (false: on trial).
    pub confirmed: bool,
    /// The last image it reverted or refused.
    pub failed_image: Option<ImageId>,
    /// What it last reported about slot B.
    pub slot_b: Option<SlotBReport>,
    /// The last outcome it reported.
    pub last_outcome: Option<String>,
    /// The last release sequence it applied.
    pub release_sequence: Option<u64>,
    /// Its stable rollout bucket, 0..10000 (in stage `k` when below `stages[k] * 100`).
    pub bucket: u16,
    /// When it enrolled.
    pub enrolled_at: Timestamp,
    /// When it last checked in.
    pub last_seen: Option<Timestamp>,
}

/// One device with its history (`GET /devices/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceDetail {
    /// The device.
    pub device: DeviceInfo,
    /// Its events, newest first.
    pub events: Vec<DeviceEvent>,
}

/// A device event as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvent {
    /// When the server received it.
    pub at: Timestamp,
    /// The image it is about.
    pub image_id: ImageId,
    /// What happened.
    pub kind: EventKind,
    /// Free text from the device (a refusal's reason, say).
    pub detail: Option<String>,
}

/// Which devices `GET /devices` lists (each filter optional; the query string).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    /// Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentName>,
    /// Board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<BoardName>,
    /// Where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeviceState>,
    /// Running image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageId>,
    /// At most this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}
