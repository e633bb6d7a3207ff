//! What is stored, typed: one struct per table, and the mutations that change them. Ids,
//! states and kinds are the protocol's types; only the SQL layer turns them into columns.

use firmware::image::ImageSummary;
pub use ota_proto::{
    AuditAction, BoardName, DeviceId, EnvironmentName, EventKind, ImageId, PublicKey, ReleaseKind,
    Role, RolloutSettings, RolloutState, Sha256, SlotBReport, Timestamp, TokenId, TokenName,
};
use serde::{Deserialize, Serialize};

/// A stored image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRow {
    /// Its id.
    pub id: ImageId,
    /// SHA-256 of the file (its blob's name).
    pub file_sha256: Sha256,
    /// Its board.
    pub board: BoardName,
    /// Its version.
    pub version: String,
    /// Its security counter.
    pub security_counter: u32,
    /// File size, bytes.
    pub size: u64,
    /// The file, described.
    pub summary: ImageSummary,
    /// When it was uploaded.
    pub uploaded_at: Timestamp,
    /// The uploading token's name.
    pub uploaded_by: String,
}

/// An environment's release private key (an Ed25519 seed), where the server holds it. Never
/// shown by `Debug`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed(pub [u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

/// An environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentRow {
    /// Its name.
    pub name: EnvironmentName,
    /// Where images must be confirmed before they enter.
    pub upstream: Option<EnvironmentName>,
    /// How it rolls releases out.
    pub rollout: RolloutSettings,
    /// Its release public key.
    pub public_key: PublicKey,
    /// The private half, where the server holds it.
    pub private_key: Option<Seed>,
    /// Creation order (environments list in this order: promotion order).
    pub position: i64,
}

/// A release of an image to an environment, and where its rollout stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRow {
    /// The environment.
    pub environment: EnvironmentName,
    /// Its sequence (per environment, contiguous from 1).
    pub sequence: u64,
    /// The image.
    pub image_id: ImageId,
    /// The image's board.
    pub board: BoardName,
    /// Release or rollback.
    pub kind: ReleaseKind,
    /// The signed statement devices receive.
    pub statement: Vec<u8>,
    /// When.
    pub created_at: Timestamp,
    /// The creating token's name.
    pub created_by: String,
    /// Rollout state as stored (the model shows older releases of a board as superseded).
    pub state: RolloutState,
    /// Current stage index.
    pub stage: u32,
    /// Why it halted or paused.
    pub reason: Option<String>,
    /// Whether it ever halted by itself (the promotion gate remembers it after a rollback).
    pub halted: bool,
}

/// What a device says about itself in a check-in: the fields a check-in sets, whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    /// The image in slot A.
    pub running: Option<ImageId>,
    /// Whether it is confirmed.
    pub confirmed: bool,
    /// Slot B as reported.
    pub slot_b: Option<SlotBReport>,
    /// The last outcome as reported.
    pub last_outcome: Option<String>,
    /// The last release sequence applied, as reported.
    pub release_sequence: Option<u64>,
}

/// An enrolled device and what it last reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRow {
    /// Its id.
    pub id: DeviceId,
    /// Its board.
    pub board: BoardName,
    /// Its environment.
    pub environment: EnvironmentName,
    /// SHA-256 of its token.
    pub token_hash: [u8; 32],
    /// When it enrolled.
    pub enrolled_at: Timestamp,
    /// Its last check-in.
    pub last_seen: Option<Timestamp>,
    /// What it reported.
    pub reported: Reported,
    /// The last image it reverted or refused.
    pub failed_image: Option<ImageId>,
}

impl DeviceRow {
    /// A device just enrolled: nothing reported yet.
    pub fn enrolled(
        id: DeviceId,
        board: BoardName,
        environment: EnvironmentName,
        token_hash: [u8; 32],
        enrolled_at: Timestamp,
    ) -> Self {
        DeviceRow {
            id,
            board,
            environment,
            token_hash,
            enrolled_at,
            last_seen: None,
            reported: Reported::default(),
            failed_image: None,
        }
    }

    /// What an update step does to the device row: a boot or a confirmation says what runs; a
    /// revert or a refusal marks the image failed (and, after a revert, slot A holds the
    /// previous image again, which the next check-in names). The SQL of both backends does
    /// the same.
    pub fn apply_event(&mut self, image: ImageId, kind: EventKind) {
        match kind {
            EventKind::Booted => {
                self.reported.running = Some(image);
                self.reported.confirmed = false;
            }
            EventKind::Confirmed => {
                self.reported.running = Some(image);
                self.reported.confirmed = true;
            }
            EventKind::Reverted | EventKind::Failed => {
                self.failed_image = Some(image);
                if self.reported.running == Some(image) {
                    self.reported.running = None;
                }
            }
            EventKind::Downloading | EventKind::Installed => {}
        }
    }
}

/// A patch kept in the blob store: content-addressed by the pair of images it joins (made
/// from them alone, so every replica that makes it makes the same bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchRow {
    /// The image it applies to.
    pub source: ImageId,
    /// The image it rebuilds.
    pub target: ImageId,
    /// SHA-256 of the patch file (its blob's name).
    pub sha256: Sha256,
    /// Its size, bytes (kept even where it is too large to offer, so it is not made again).
    pub size: u64,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A device that failed a patch to an image: it gets that image whole from then on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchFailureRow {
    /// The device.
    pub device: DeviceId,
    /// The image the patch was to rebuild.
    pub image_id: ImageId,
    /// When it reported it.
    pub at: Timestamp,
    /// Its words (the refusal).
    pub detail: Option<String>,
}

/// A management token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    /// Its public id.
    pub id: TokenId,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// Its role.
    pub role: Role,
    /// Its name.
    pub name: TokenName,
    /// When it was made.
    pub created_at: Timestamp,
    /// Revoked tokens stay listed but authenticate nothing.
    pub revoked: bool,
}

/// A trusted build key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildKeyRow {
    /// The public key.
    pub public_key: PublicKey,
    /// A name for people.
    pub name: String,
}

/// A device event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    /// The device.
    pub device: DeviceId,
    /// When it was received.
    pub at: Timestamp,
    /// The image it is about.
    pub image_id: ImageId,
    /// What happened.
    pub kind: EventKind,
    /// The device's words.
    pub detail: Option<String>,
}

/// An audit log entry (before it has a position).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// When.
    pub at: Timestamp,
    /// The token's name (`cli` for the server's command line).
    pub actor: String,
    /// Its role.
    pub role: Role,
    /// What.
    pub action: AuditAction,
    /// On what.
    pub target: String,
    /// Details.
    pub detail: serde_json::Value,
}

/// An audit log entry as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Position in the log.
    pub seq: i64,
    /// The entry.
    pub row: AuditRow,
}

/// A rollout's place: what a move expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutAt {
    /// State.
    pub state: RolloutState,
    /// Stage index.
    pub stage: u32,
}

/// One change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Mutation {
    /// A new image (its blob is already durable). Precondition: the id is new.
    InsertImage(Box<ImageRow>),
    /// A new environment. Precondition: the name and the position are new.
    CreateEnvironment(Box<EnvironmentRow>),
    /// New rollout settings for an environment. Precondition: its settings are still `from`
    /// (two operators changing different settings at once through two replicas must not undo
    /// each other's change).
    UpdateEnvironment {
        /// The environment.
        name: EnvironmentName,
        /// The settings the change was made from.
        from: RolloutSettings,
        /// The new settings.
        rollout: RolloutSettings,
    },
    /// A new release. Precondition: its sequence is the environment's next one.
    InsertRelease(Box<ReleaseRow>),
    /// A rollout moves. Precondition: it is still `from`.
    MoveRollout {
        /// The environment.
        environment: EnvironmentName,
        /// The release.
        sequence: u64,
        /// Where the decision saw it.
        from: RolloutAt,
        /// Where it goes.
        to: RolloutAt,
        /// Why (a halt's or a pause's reason).
        reason: Option<String>,
    },
    /// New devices. Precondition: their ids and token hashes are new.
    EnrollDevices(Vec<DeviceRow>),
    /// A device gets a new token (the old one stops working at once).
    SetDeviceToken {
        /// The device.
        id: DeviceId,
        /// SHA-256 of its new token.
        token_hash: [u8; 32],
    },
    /// A device's check-in changed what it reports.
    Report {
        /// The device.
        id: DeviceId,
        /// What it reports.
        reported: Reported,
    },
    /// A device's update step: recorded in its history (unless `record` is false: a step it
    /// repeated because it was not sure the first report arrived) and applied to its row (see
    /// [`DeviceRow::apply_event`]).
    Event {
        /// The event.
        event: EventRow,
        /// Whether to add it to the history.
        record: bool,
    },
    /// Last check-in times (written in batches: a check-in that changes nothing else is not
    /// worth a commit of its own).
    Seen(Vec<(DeviceId, Timestamp)>),
    /// A new management token.
    InsertToken(TokenRow),
    /// A token revoked.
    RevokeToken(TokenId),
    /// A trusted build key (or a new name for one).
    InsertBuildKey(BuildKeyRow),
    /// An audit entry.
    Audit(AuditRow),
    /// A patch made and stored (its blob is already durable). Making it twice (two replicas
    /// at once) gives the same row: the second is ignored.
    InsertPatch(PatchRow),
    /// A device failed a patch (the last report per device and image is kept).
    PatchFailed(PatchFailureRow),
}

impl Mutation {
    /// Whether the database checks a precondition for it (batches holding one are committed
    /// within a savepoint of their own).
    pub fn is_conditional(&self) -> bool {
        matches!(
            self,
            Mutation::InsertImage(_)
                | Mutation::CreateEnvironment(_)
                | Mutation::UpdateEnvironment { .. }
                | Mutation::InsertRelease(_)
                | Mutation::MoveRollout { .. }
                | Mutation::EnrollDevices(_)
        )
    }
}

/// Everything the in-memory model is built from.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The change log position this snapshot reflects.
    pub position: u64,
    /// Images.
    pub images: Vec<ImageRow>,
    /// Environments, in creation order.
    pub environments: Vec<EnvironmentRow>,
    /// Releases, by environment and sequence.
    pub releases: Vec<ReleaseRow>,
    /// Devices.
    pub devices: Vec<DeviceRow>,
    /// Tokens.
    pub tokens: Vec<TokenRow>,
    /// Build keys.
    pub build_keys: Vec<BuildKeyRow>,
    /// Distinct (device, image, kind) of the `confirmed`, `reverted` and `failed` events: what
    /// the promotion gate counts.
    pub outcomes: Vec<(DeviceId, ImageId, EventKind)>,
    /// Patches stored.
    pub patches: Vec<PatchRow>,
    /// Patches devices failed.
    pub patch_failures: Vec<PatchFailureRow>,
    /// Each device's last recorded event: the step its next report must follow (see
    /// [`crate::evidence`]).
    pub last_events: Vec<(DeviceId, ImageId, EventKind)>,
}

/// Every row of a store, histories included: what `ota-server copy-store` moves.
#[derive(Clone, Debug, Default)]
pub struct Dump {
    /// The model's rows.
    pub snapshot: Snapshot,
    /// Every device event, oldest first.
    pub events: Vec<EventRow>,
    /// Every audit entry, oldest first.
    pub audit: Vec<AuditRecord>,
}

impl Dump {
    /// Rows per table, for checking a copy.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let s = &self.snapshot;
        vec![
            ("images", s.images.len()),
            ("environments", s.environments.len()),
            ("releases", s.releases.len()),
            ("devices", s.devices.len()),
            ("tokens", s.tokens.len()),
            ("build_keys", s.build_keys.len()),
            ("patches", s.patches.len()),
            ("patch_failures", s.patch_failures.len()),
            ("events", self.events.len()),
            ("audit", self.audit.len()),
        ]
    }
}

/// A dashboard sign-in session. Not part of the fleet model (no replica needs it in memory, and
/// it is not audited): it is written and read straight through the store, so a session opened
/// on one replica is valid on all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the session's secret (the cookie's value).
    pub hash: [u8; 32],
    /// SHA-256 of the management token it was opened with: its role applies, and revoking the
    /// token ends the session.
    pub token_hash: [u8; 32],
    /// When it was opened.
    pub created_at: Timestamp,
    /// When it stops being valid.
    pub expires_at: Timestamp,
}
