//! Persistence: what the server keeps across restarts, behind the [`Store`] trait.
//!
//! The server decides everything on its in-memory [`crate::fleet::Fleet`], loaded from the
//! store at start; every change is a list of [`Mutation`]s committed in one transaction before
//! it is acknowledged (see [`writer`], which groups concurrent commits into one). The trait is
//! deliberately small — load, commit, and the two histories that are too long to keep in
//! memory — so that a PostgreSQL implementation (several replicas) is a second file, not a
//! redesign. [`sqlite::SqliteStore`] is the embedded default.

pub mod sqlite;
pub mod writer;

use std::future::Future;

/// A stored image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRow {
    /// Image id, hex.
    pub id: String,
    /// SHA-256 of the file, hex (its blob's name).
    pub file_sha256: String,
    /// Board.
    pub board: String,
    /// Version.
    pub version: String,
    /// Security counter.
    pub security_counter: u32,
    /// File size.
    pub size: u64,
    /// The file's [`firmware::image::ImageSummary`] as JSON.
    pub summary: String,
    /// Upload time, Unix ms.
    pub uploaded_at: i64,
    /// Uploading token's name.
    pub uploaded_by: String,
}

/// An environment.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvironmentRow {
    /// Name.
    pub name: String,
    /// Upstream environment.
    pub upstream: Option<String>,
    /// Confirmations needed upstream.
    pub promote_min_confirmed: u32,
    /// Failure ratio above which rollouts halt.
    pub failure_threshold: f64,
    /// Cumulative stage percentages.
    pub stages: Vec<u8>,
    /// Share of a stage that must confirm.
    pub advance_ratio: f64,
    /// Release public key.
    pub public_key: [u8; 32],
    /// Release private key seed, where the server holds it.
    pub private_key: Option<[u8; 32]>,
    /// Creation order (environments list in this order).
    pub position: i64,
}

/// A release of an image to an environment.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseRow {
    /// Environment.
    pub environment: String,
    /// Sequence (per environment).
    pub sequence: u64,
    /// Image id, hex.
    pub image_id: String,
    /// The image's board.
    pub board: String,
    /// `release` or `rollback`.
    pub kind: String,
    /// The signed statement.
    pub statement: Vec<u8>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Creating token's name.
    pub created_by: String,
    /// Rollout state name.
    pub state: String,
    /// Current stage index.
    pub stage: u32,
    /// Why it halted or paused.
    pub reason: Option<String>,
    /// Whether it ever halted by itself (the promotion gate remembers it after a rollback).
    pub halted: bool,
}

/// An enrolled device and what it last reported.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRow {
    /// Device id.
    pub id: String,
    /// Board.
    pub board: String,
    /// Environment.
    pub environment: String,
    /// SHA-256 of its token.
    pub token_hash: [u8; 32],
    /// Enrollment time, Unix ms.
    pub enrolled_at: i64,
    /// Last check-in, Unix ms.
    pub last_seen: Option<i64>,
    /// Image in slot A, hex.
    pub running: Option<String>,
    /// Whether it is confirmed.
    pub confirmed: bool,
    /// Last image it reverted or refused, hex.
    pub failed_image: Option<String>,
    /// Slot B as reported, JSON of [`crate::api::SlotBReport`].
    pub slot_b: Option<String>,
    /// Last outcome as reported.
    pub last_outcome: Option<String>,
    /// Last release sequence applied, as reported.
    pub release_sequence: Option<u64>,
}

impl DeviceRow {
    /// A device just enrolled: nothing reported yet.
    pub fn enrolled(
        id: &str,
        board: &str,
        environment: &str,
        token_hash: [u8; 32],
        enrolled_at: i64,
    ) -> Self {
        DeviceRow {
            id: id.to_owned(),
            board: board.to_owned(),
            environment: environment.to_owned(),
            token_hash,
            enrolled_at,
            last_seen: None,
            running: None,
            confirmed: false,
            failed_image: None,
            slot_b: None,
            last_outcome: None,
            release_sequence: None,
        }
    }
}

/// A management token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRow {
    /// Id (public, for listing and revoking).
    pub id: String,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// Role name.
    pub role: String,
    /// Name.
    pub name: String,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Revoked tokens stay listed but authenticate nothing.
    pub revoked: bool,
}

/// A trusted build key.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildKeyRow {
    /// The public key.
    pub public_key: [u8; 32],
    /// A name.
    pub name: String,
}

/// A device event.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// Device id.
    pub device: String,
    /// Receive time, Unix ms.
    pub at: i64,
    /// Image id, hex.
    pub image_id: String,
    /// Kind name.
    pub kind: String,
    /// Device's detail text.
    pub detail: Option<String>,
}

/// An audit log entry (before it has a position).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRow {
    /// Time, Unix ms.
    pub at: i64,
    /// Token name.
    pub actor: String,
    /// Role name.
    pub role: String,
    /// Action name.
    pub action: String,
    /// Target.
    pub target: String,
    /// JSON detail.
    pub detail: String,
}

/// An audit log entry as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Position in the log.
    pub seq: i64,
    /// The entry.
    pub row: AuditRow,
}

/// One change. A commit applies a list of them atomically.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    /// A new image (its blob is already durable).
    InsertImage(ImageRow),
    /// A new environment, or new settings for one.
    PutEnvironment(EnvironmentRow),
    /// A new release.
    InsertRelease(ReleaseRow),
    /// A release's rollout moved.
    UpdateRollout {
        /// Environment.
        environment: String,
        /// Sequence.
        sequence: u64,
        /// New state name.
        state: String,
        /// New stage.
        stage: u32,
        /// Reason.
        reason: Option<String>,
        /// A move the rollout engine made (`true`) rather than an operator: it applies only
        /// while the rollout is still rolling or completed, so it never undoes a pause that
        /// was committed in between.
        automatic: bool,
    },
    /// A new device, or its new report.
    PutDevice(DeviceRow),
    /// Last check-in times (written in batches; see [`crate::service`]).
    Seen(Vec<(String, i64)>),
    /// A device event.
    InsertEvent(EventRow),
    /// A new management token.
    InsertToken(TokenRow),
    /// A token revoked.
    RevokeToken(String),
    /// A trusted build key.
    InsertBuildKey(BuildKeyRow),
    /// An audit entry.
    Audit(AuditRow),
}

/// Everything the in-memory model is built from.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
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
    /// Distinct (device, image id, kind) of the `confirmed`, `reverted` and `failed` events:
    /// what the promotion gate counts.
    pub outcomes: Vec<(String, String, String)>,
}

/// A storage failure (the database, not the request, is at fault).
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

/// Persistence for the server. Implementations commit a batch all-or-nothing and durably
/// (acknowledged writes survive a `kill -9`).
pub trait Store: Send + Sync + 'static {
    /// Everything but the histories.
    fn load(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;
    /// Applies `batch` in one transaction.
    fn commit(&self, batch: &[Mutation]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Audit entries older than `before` (all if `None`), newest first, at most `limit`.
    fn audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;
    /// A device's events, newest first, at most `limit`.
    fn events(
        &self,
        device: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<EventRow>, StoreError>> + Send;
    /// Every management token (listing sees tokens made offline too).
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenRow>, StoreError>> + Send;
    /// A token by the hash of its secret: tokens made by `ota-server token create` while
    /// the server runs are found here.
    fn token(
        &self,
        hash: [u8; 32],
    ) -> impl Future<Output = Result<Option<TokenRow>, StoreError>> + Send;
}
