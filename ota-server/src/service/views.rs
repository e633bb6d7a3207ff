//! How the model is shown: the API's answer types built from the model's rows.

use ota_proto::{
    BuildKey, DeviceInfo, DeviceState, EnvironmentInfo, ImageInfo, KeyId, PublicKey, ReleaseInfo,
    TokenInfo,
};

use crate::fleet::{Device, Environment, Fleet, Release};
use crate::rollout;
use crate::store::{ImageRow, TokenRow};

/// An image.
pub fn image_info(image: &ImageRow) -> ImageInfo {
    ImageInfo {
        summary: image.summary.clone(),
        file_sha256: image.file_sha256,
        uploaded_at: image.uploaded_at,
        uploaded_by: image.uploaded_by.clone(),
    }
}

/// A trusted build key.
pub fn build_key(key: &firmware::image::TrustedKey, name: &str) -> BuildKey {
    BuildKey { key_id: key.id(), public_key: PublicKey(key.to_bytes()), name: name.to_owned() }
}

/// An environment with its current releases.
pub fn environment_info(fleet: &Fleet, env: &Environment) -> EnvironmentInfo {
    let name = &env.row.name;
    EnvironmentInfo {
        name: name.clone(),
        upstream: env.row.upstream.clone(),
        rollout: env.row.rollout.clone(),
        release_public_key: env.row.public_key,
        release_key_id: KeyId::of_public_key(&env.row.public_key.0),
        server_holds_key: env.signing.is_some(),
        next_sequence: fleet.next_sequence(name.as_str()),
        devices: fleet.devices.iter().filter(|d| &d.row.environment == name).count() as u64,
        current: fleet
            .released_boards(name.as_str())
            .into_iter()
            .filter_map(|b| fleet.current(name.as_str(), b.as_str()))
            .map(|r| release_info(fleet, r))
            .collect(),
    }
}

/// A release and its rollout.
pub fn release_info(fleet: &Fleet, r: &Release) -> ReleaseInfo {
    let row = &r.row;
    ReleaseInfo {
        environment: row.environment.clone(),
        sequence: row.sequence,
        image_id: row.image_id,
        board: row.board.clone(),
        version: fleet.images.get(&row.image_id).map(|i| i.version.clone()).unwrap_or_default(),
        kind: row.kind,
        statement: ota_proto::HexBytes(row.statement.clone()),
        created_at: row.created_at,
        created_by: row.created_by.clone(),
        state: row.state,
        reason: row.reason.clone(),
        stage: row.stage as usize,
        stages: fleet
            .environment(row.environment.as_str())
            .map(|e| e.row.rollout.stages.clone())
            .unwrap_or_default(),
        progress: fleet.progress(r),
    }
}

/// Where a device stands relative to its environment's current release.
pub fn device_state(fleet: &Fleet, d: &Device) -> DeviceState {
    if d.row.last_seen.is_none() {
        return DeviceState::Unseen;
    }
    let Some(release) = fleet.current(d.row.environment.as_str(), d.row.board.as_str()) else {
        return DeviceState::Current;
    };
    let image = release.row.image_id;
    if d.confirmed(image) {
        DeviceState::Current
    } else if d.failed(image) {
        DeviceState::Failed
    } else if rollout::offered(release.at(), &release.cutoffs, d.bucket) {
        DeviceState::Updating
    } else {
        DeviceState::Waiting
    }
}

/// A device.
pub fn device_info(fleet: &Fleet, d: &Device) -> DeviceInfo {
    let row = &d.row;
    DeviceInfo {
        id: row.id.clone(),
        board: row.board.clone(),
        environment: row.environment.clone(),
        state: device_state(fleet, d),
        running: row.reported.running,
        confirmed: row.reported.confirmed,
        failed_image: row.failed_image,
        slot_b: row.reported.slot_b.clone(),
        last_outcome: row.reported.last_outcome.clone(),
        release_sequence: row.reported.release_sequence,
        bucket: d.bucket,
        enrolled_at: row.enrolled_at,
        last_seen: row.last_seen,
    }
}

/// A management token (never its secret).
pub fn token_info(row: &TokenRow) -> TokenInfo {
    TokenInfo {
        id: row.id.clone(),
        role: row.role,
        name: row.name.clone(),
        created_at: row.created_at,
        revoked: row.revoked,
    }
}
