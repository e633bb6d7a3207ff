//! The wire types of the HTTP API (`/api/v1`), shared by the server and the `imager` client so
//! both sides agree by construction. JSON via serde; ids, keys and signed statements are hex.
//!
//! `docs/server-api.md` describes every route that carries these.

use firmware::image::ImageSummary;
use serde::{Deserialize, Serialize};

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`bad_signature`, `not_found`, `gate_closed`, ...).
    pub code: String,
    /// What was wrong, where and why, for people.
    pub message: String,
}

/// Who may do what. Device tokens are separate: they reach only the device API.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages devices, environments, keys and tokens; may do everything.
    Admin,
    /// Uploads images; releases (and rolls back) where the server holds the environment's key;
    /// reads everything but tokens.
    Ci,
    /// Reads everything but tokens.
    Qa,
    /// Releases, promotes (with a signed statement), rolls back, pauses and resumes; reads
    /// everything but tokens.
    Release,
}

impl Role {
    /// The lowercase name used on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Ci => "ci",
            Role::Qa => "qa",
            Role::Release => "release",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "admin" => Role::Admin,
            "ci" => Role::Ci,
            "qa" => Role::Qa,
            "release" => Role::Release,
            _ => return None,
        })
    }
}

/// A stored image: the file's description plus where it came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The file, described (id, board, version, components, signatures).
    #[serde(flatten)]
    pub summary: ImageSummary,
    /// SHA-256 of the whole `.fwi` file, hex (the blob's name in the store).
    pub file_sha256: String,
    /// When it was uploaded (RFC 3339, UTC).
    pub uploaded_at: String,
    /// The token name that uploaded it.
    pub uploaded_by: String,
}

/// A new environment (`POST /environments`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    /// Name: 1 to 32 bytes of `[a-z0-9_-]`.
    pub name: String,
    /// Where an image must be confirmed before it may enter this environment.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Confirmations needed upstream before promotion (default 1 with an upstream).
    #[serde(default)]
    pub promote_min_confirmed: Option<u32>,
    /// Failure ratio in [0, 1] above which a rollout halts (default 0.2).
    #[serde(default)]
    pub failure_threshold: Option<f64>,
    /// Cumulative percentages of the environment's devices per stage (default `[100]`).
    #[serde(default)]
    pub stages: Option<Vec<u8>>,
    /// Share (0..1] of a stage's devices, failures aside, that must confirm before the next
    /// stage starts (default 0.9).
    #[serde(default)]
    pub advance_ratio: Option<f64>,
    /// The release public key, hex (32 bytes). Absent: the server makes a key pair and holds it.
    #[serde(default)]
    pub release_public_key: Option<String>,
}

/// Changes to an environment's rollout settings (`PATCH /environments/{env}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentUpdate {
    /// New minimum of upstream confirmations.
    #[serde(default)]
    pub promote_min_confirmed: Option<u32>,
    /// New failure threshold.
    #[serde(default)]
    pub failure_threshold: Option<f64>,
    /// New stages.
    #[serde(default)]
    pub stages: Option<Vec<u8>>,
    /// New advance ratio.
    #[serde(default)]
    pub advance_ratio: Option<f64>,
}

/// An environment and what it currently runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    /// Name.
    pub name: String,
    /// Upstream environment, if any.
    pub upstream: Option<String>,
    /// Confirmations needed upstream before promotion.
    pub promote_min_confirmed: u32,
    /// Failure ratio above which a rollout halts.
    pub failure_threshold: f64,
    /// Cumulative stage percentages.
    pub stages: Vec<u8>,
    /// Share of a stage's devices that must confirm before the next stage.
    pub advance_ratio: f64,
    /// The release public key, hex.
    pub release_public_key: String,
    /// Its key id, hex (as in signed statements).
    pub release_key_id: String,
    /// Whether the server holds the private key (releases need no statement then).
    pub server_holds_key: bool,
    /// The sequence number the next release statement must carry.
    pub next_sequence: u64,
    /// Devices enrolled.
    pub devices: u64,
    /// The current release per board, with rollout progress.
    pub current: Vec<ReleaseInfo>,
}

/// A release request (`POST /environments/{env}/releases`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    /// The image, hex id.
    pub image_id: String,
    /// The signed statement, hex; absent where the server holds the environment's key.
    #[serde(default)]
    pub statement: Option<String>,
}

/// A rollback request (`POST /environments/{env}/rollback`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Which board's release to roll back (needed only if several boards have releases).
    #[serde(default)]
    pub board: Option<String>,
    /// The signed statement for the previous image, hex; absent where the server holds the key.
    #[serde(default)]
    pub statement: Option<String>,
}

/// What a rollback would release (`GET /environments/{env}/rollback`): sign this.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RollbackTarget {
    /// The board.
    pub board: String,
    /// The image to go back to.
    pub image_id: String,
    /// The sequence its statement must carry.
    pub sequence: u64,
}

/// Whether a release was made by promotion/release or by rollback.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseKind {
    /// A release or promotion.
    Release,
    /// A rollback to an earlier image.
    Rollback,
}

/// Where a release's rollout stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Rolling => "rolling",
            RolloutState::Completed => "completed",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Superseded => "superseded",
        }
    }

    /// Parses a state name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "rolling" => RolloutState::Rolling,
            "completed" => RolloutState::Completed,
            "paused" => RolloutState::Paused,
            "halted" => RolloutState::Halted,
            "superseded" => RolloutState::Superseded,
            _ => return None,
        })
    }
}

/// One release and its rollout.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleaseInfo {
    /// Environment.
    pub environment: String,
    /// Sequence number (per environment, increasing).
    pub sequence: u64,
    /// The image, hex id.
    pub image_id: String,
    /// Its board.
    pub board: String,
    /// Its version.
    pub version: String,
    /// Release or rollback.
    pub kind: ReleaseKind,
    /// The signed statement devices receive, hex.
    pub statement: String,
    /// When (RFC 3339, UTC).
    pub created_at: String,
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

/// Enrolling a device (`POST /devices`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// Device id: 1 to 64 bytes of `[A-Za-z0-9._:-]`.
    pub id: String,
    /// Its board.
    pub board: String,
    /// Its environment.
    pub environment: String,
}

/// A device just enrolled, with its token (shown only this once).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceCreated {
    /// The device.
    pub device: DeviceInfo,
    /// Its bearer token for the device API.
    pub token: String,
}

/// Where a device stands relative to its environment's current release.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl DeviceState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Unseen => "unseen",
            DeviceState::Current => "current",
            DeviceState::Updating => "updating",
            DeviceState::Waiting => "waiting",
            DeviceState::Failed => "failed",
        }
    }

    /// Parses a state name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "unseen" => DeviceState::Unseen,
            "current" => DeviceState::Current,
            "updating" => DeviceState::Updating,
            "waiting" => DeviceState::Waiting,
            "failed" => DeviceState::Failed,
            _ => return None,
        })
    }
}

/// A device as the management API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device id.
    pub id: String,
    /// Board.
    pub board: String,
    /// Environment.
    pub environment: String,
    /// Where it stands.
    pub state: DeviceState,
    /// The image it last reported running, hex.
    pub running: Option<String>,
    /// Whether that image is confirmed (false: on trial).
    pub confirmed: bool,
    /// The last image it reverted or refused, hex.
    pub failed_image: Option<String>,
    /// What it last reported about slot B.
    pub slot_b: Option<SlotBReport>,
    /// The last outcome it reported.
    pub last_outcome: Option<String>,
    /// The last release sequence it applied.
    pub release_sequence: Option<u64>,
    /// Its stable rollout bucket, 0..10000 (in stage `k` when below `stages[k] * 100`).
    pub bucket: u16,
    /// When it enrolled.
    pub enrolled_at: String,
    /// When it last checked in.
    pub last_seen: Option<String>,
}

/// One device with its history (`GET /devices/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceDetail {
    /// The device.
    pub device: DeviceInfo,
    /// Its events, newest first.
    pub events: Vec<DeviceEvent>,
}

/// What a device reports about one update step (defined with the serial link's messages).
pub use firmware::link::EventKind;

/// A device event as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceEvent {
    /// When the server received it.
    pub at: String,
    /// The image it is about, hex.
    pub image_id: String,
    /// What happened.
    pub kind: EventKind,
    /// Free text from the device (a refusal's reason, say).
    pub detail: Option<String>,
}

/// A device's report of one step (`POST /device/events`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// The image it is about, hex.
    pub image_id: String,
    /// What happened.
    pub kind: EventKind,
    /// Free text, at most 512 bytes.
    #[serde(default)]
    pub detail: Option<String>,
}

/// What slot B holds, as a device reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotBReport {
    /// `empty`, `unknown`, `previous`, `downloading` or `pending`.
    pub state: String,
    /// The image concerned, hex.
    #[serde(default)]
    pub image_id: Option<String>,
}

/// A device's check-in (`POST /device/checkin`): what it runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// The image in slot A, hex.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Whether that image is on trial (not confirmed yet).
    #[serde(default)]
    pub trial: bool,
    /// What slot B holds.
    #[serde(default)]
    pub slot_b: Option<SlotBReport>,
    /// The last update outcome, free text (at most 128 bytes).
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// The last release sequence applied.
    #[serde(default)]
    pub release_sequence: Option<u64>,
}

impl CheckIn {
    /// The check-in of a device whose update status (read from its flash) is `status`: how
    /// the serial gateway and the fleet simulator turn a device's status into a report.
    pub fn from_status(status: &firmware::update::Status) -> Self {
        use firmware::update::SlotB;
        let (state, image) = match status.slot_b {
            SlotB::Unknown => ("unknown", None),
            SlotB::Previous(id) => ("previous", Some(id.to_string())),
            SlotB::Downloading(..) => ("downloading", None),
            SlotB::Pending(_) => ("pending", None),
        };
        CheckIn {
            image_id: status.running.as_ref().map(|(id, _)| id.to_string()),
            trial: status.trial,
            slot_b: Some(SlotBReport { state: state.into(), image_id: image }),
            last_outcome: status.outcome.map(outcome_text),
            release_sequence: Some(status.release_sequence),
        }
    }
}

/// A device's last outcome in words (at most 128 bytes, as a check-in allows).
pub fn outcome_text(outcome: firmware::state::Outcome) -> String {
    use firmware::state::OutcomeKind;
    let tag = outcome.image;
    let mut text = match outcome.kind {
        OutcomeKind::Updated => format!("updated to {tag}"),
        OutcomeKind::Reverted(r) => format!("reverted {tag}: {r:?}"),
        OutcomeKind::Failed(r) => format!("failed {tag}: {r:?}"),
    };
    text.truncate(128);
    text
}

/// The answer to a check-in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckInResponse {
    /// An image to install, or nothing.
    pub offer: Option<Offer>,
}

/// An image offered to a device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Offer {
    /// The image, hex id.
    pub image_id: String,
    /// Size of the `.fwi` file in bytes.
    pub size: u64,
    /// The signed release statement, hex (the device checks it with its environment's key).
    pub release: String,
    /// The environment.
    pub environment: String,
    /// The release sequence.
    pub sequence: u64,
    /// Where to download the file (supports `Range`), relative to the server.
    pub url: String,
}

/// A new management token (`POST /tokens`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Its role.
    pub role: Role,
    /// A name for people and the audit log.
    pub name: String,
}

/// A management token (never the secret, except once at creation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Token id.
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_at: String,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A token just made, with its secret (shown only this once).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token.
    pub info: TokenInfo,
    /// The bearer secret.
    pub token: String,
}

/// A trusted build key (`GET/POST /build-keys`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildKey {
    /// Key id, hex (as in image headers).
    pub key_id: String,
    /// The public key, hex (32 bytes).
    pub public_key: String,
    /// A name for people.
    pub name: String,
}

/// Adding a trusted build key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBuildKey {
    /// The public key, hex (32 bytes).
    pub public_key: String,
    /// A name for people.
    pub name: String,
}

/// One audit log entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log (increasing).
    pub seq: i64,
    /// When.
    pub at: String,
    /// Who: the token's name (`cli` for the server's own command line).
    pub actor: String,
    /// The token's role.
    pub role: String,
    /// What (`image.upload`, `release.create`, `device.create`, ...).
    pub action: String,
    /// On what (an image id, `env/sequence`, a device id, ...).
    pub target: String,
    /// Details.
    pub detail: serde_json::Value,
}

/// Formats a Unix time in milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_651_199_999), "2026-11-25T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn names_round_trip() {
        for r in [Role::Admin, Role::Ci, Role::Qa, Role::Release] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        // The JSON names are the names `EventKind::parse` takes (firmware::link tests those).
        for name in ["downloading", "installed", "booted", "confirmed", "reverted", "failed"] {
            let kind: EventKind = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(Some(kind), EventKind::parse(name));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
