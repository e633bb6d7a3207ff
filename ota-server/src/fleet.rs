//! The in-memory model every decision is made on: images, environments, releases, devices,
//! tokens and build keys, indexed for the hot paths (a check-in is a hash lookup and a few
//! comparisons).
//!
//! It is a materialized view of the store: [`Fleet::load`] builds it from a snapshot, and
//! every committed batch is applied with [`Fleet::apply`], in the store's commit order (see
//! [`crate::journal`]), so every replica's model goes through the same states. Nothing else
//! changes it, except a few caches of this process's own (last check-in times not yet written,
//! stage bounds).

use std::collections::{HashMap, HashSet};

use ed25519_dalek::SigningKey;
use firmware::image::TrustedKey;

use crate::store::{
    BoardName, BuildKeyRow, DeviceId, DeviceRow, EnvironmentName, EnvironmentRow, EventKind,
    ImageId, ImageRow, Mutation, PatchRow, ReleaseRow, RolloutAt, RolloutState, Snapshot, TokenRow,
};
use crate::{evidence, rollout};

/// An environment with its keys, ready to verify and sign.
#[derive(Clone, Debug)]
pub struct Environment {
    /// As stored.
    pub row: EnvironmentRow,
    /// Its release key.
    pub key: TrustedKey,
    /// The private half, where the server holds it.
    pub signing: Option<SigningKey>,
}

/// A release and its rollout.
#[derive(Clone, Debug)]
pub struct Release {
    /// As stored, except that an older release of the same board shows as superseded.
    pub row: ReleaseRow,
    /// Each stage's bucket bound for the current fleet (see [`rollout::cutoffs`]), refreshed
    /// whenever the release is evaluated.
    pub cutoffs: Vec<u16>,
}

impl Release {
    /// Where its rollout stands.
    pub fn at(&self) -> RolloutAt {
        RolloutAt { state: self.row.state, stage: self.row.stage }
    }
}

/// An enrolled device.
#[derive(Clone, Debug)]
pub struct Device {
    /// As stored (`last_seen` may be newer here than on disk; see `seen_dirty`).
    pub row: DeviceRow,
    /// Its stable rollout bucket.
    pub bucket: u16,
    /// `row.last_seen` changed here since it was last written.
    pub seen_dirty: bool,
    /// The last step it reported: devices repeat a report they are not sure arrived, and a
    /// repeat is recorded once.
    pub last_event: Option<(ImageId, EventKind)>,
    /// Images it failed a patch to: offered whole from then on.
    pub patch_failed: HashSet<ImageId>,
}

impl Device {
    /// The in-memory device for a row.
    pub fn from_row(row: DeviceRow) -> Self {
        Device {
            bucket: rollout::bucket(row.id.as_str()),
            seen_dirty: false,
            last_event: None,
            patch_failed: HashSet::new(),
            row,
        }
    }

    /// The image in slot A, as last reported.
    pub fn running(&self) -> Option<ImageId> {
        self.row.reported.running
    }

    /// Whether it runs `image`, confirmed.
    pub fn confirmed(&self, image: ImageId) -> bool {
        self.row.reported.running == Some(image) && self.row.reported.confirmed
    }

    /// Whether it reverted or refused `image` last.
    pub fn failed(&self, image: ImageId) -> bool {
        self.row.failed_image == Some(image)
    }
}

/// Which devices confirmed and which failed an image (distinct devices, any time).
#[derive(Clone, Debug, Default)]
pub struct Outcomes {
    /// Devices (indices) that confirmed it.
    pub confirmed: HashSet<usize>,
    /// Devices that reverted or refused it.
    pub failed: HashSet<usize>,
}

/// The whole model.
#[derive(Debug, Default)]
pub struct Fleet {
    /// The change log position the model reflects.
    pub position: u64,
    /// Images by id.
    pub images: HashMap<ImageId, ImageRow>,
    /// Environments in promotion order.
    pub environments: Vec<Environment>,
    /// Releases per environment, by increasing sequence.
    pub releases: HashMap<EnvironmentName, Vec<Release>>,
    /// Devices; indices are stable (devices are never removed).
    pub devices: Vec<Device>,
    /// Device index by id.
    pub device_by_id: HashMap<DeviceId, usize>,
    /// Device index by token hash.
    pub device_by_token: HashMap<[u8; 32], usize>,
    /// Management tokens by hash.
    pub tokens: HashMap<[u8; 32], TokenRow>,
    /// Trusted build keys.
    pub build_keys: Vec<(TrustedKey, String)>,
    /// Outcomes per image.
    pub outcomes: HashMap<ImageId, Outcomes>,
    /// Stored patches by (source, target).
    pub patches: HashMap<(ImageId, ImageId), PatchRow>,
}

/// A row the model cannot use (a corrupted or hand-edited database).
#[derive(Debug, thiserror::Error)]
#[error("database row not usable: {0}")]
pub struct BadRow(pub String);

impl Fleet {
    /// Builds the model from a snapshot; also returns the rollout moves the devices' state
    /// calls for (moves are re-derived at start rather than trusted to have been written).
    pub fn load(snapshot: Snapshot) -> Result<(Fleet, Vec<Mutation>), BadRow> {
        let mut fleet = Fleet { position: snapshot.position, ..Fleet::default() };
        let Snapshot {
            position: _,
            images,
            environments,
            releases,
            devices,
            tokens,
            build_keys,
            outcomes,
            patches,
            patch_failures,
            last_events,
        } = snapshot;
        let rows = images
            .into_iter()
            .map(|i| Mutation::InsertImage(Box::new(i)))
            .chain(environments.into_iter().map(|e| Mutation::CreateEnvironment(Box::new(e))))
            .chain(releases.into_iter().map(|r| Mutation::InsertRelease(Box::new(r))))
            .chain(std::iter::once(Mutation::EnrollDevices(devices)))
            .chain(tokens.into_iter().map(Mutation::InsertToken))
            .chain(build_keys.into_iter().map(Mutation::InsertBuildKey))
            .chain(patches.into_iter().map(Mutation::InsertPatch))
            .chain(patch_failures.into_iter().map(Mutation::PatchFailed));
        for m in rows {
            fleet.apply(&m)?;
        }
        for (device, image, kind) in last_events {
            if let Some(&d) = fleet.device_by_id.get(&device) {
                fleet.devices[d].last_event = Some((image, kind));
            }
        }
        for (device, image, kind) in outcomes {
            if let Some(&d) = fleet.device_by_id.get(&device) {
                fleet.record_outcome(d, image, kind);
            }
        }
        // A check-in that reported an image confirmed (after the device booted it) counted
        // like a confirmation while the server ran; it still does.
        let running: Vec<(usize, ImageId)> = fleet
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.row.reported.confirmed)
            .filter_map(|(i, d)| Some((i, d.running()?)))
            .filter(|&(i, image)| evidence::claim_confirms(fleet.devices[i].last_event, image))
            .collect();
        for (d, image) in running {
            fleet.record_outcome(d, image, EventKind::Confirmed);
        }
        let moves = fleet.evaluate_all();
        Ok((fleet, moves))
    }

    /// Applies one committed mutation.
    pub fn apply(&mut self, m: &Mutation) -> Result<(), BadRow> {
        match m {
            Mutation::InsertImage(row) => {
                self.images.insert(row.id, (**row).clone());
            }
            Mutation::CreateEnvironment(row) => {
                let key = TrustedKey::from_bytes(&row.public_key.0)
                    .map_err(|e| BadRow(format!("key of environment {}: {e}", row.name)))?;
                let env = Environment {
                    row: (**row).clone(),
                    key,
                    signing: row.private_key.map(|seed| SigningKey::from_bytes(&seed.0)),
                };
                match self.environments.iter_mut().find(|e| e.row.name == row.name) {
                    Some(existing) => *existing = env,
                    None => self.environments.push(env),
                }
                self.environments.sort_by_key(|e| e.row.position);
            }
            Mutation::UpdateEnvironment { name, rollout, .. } => {
                if let Some(env) = self.environments.iter_mut().find(|e| &e.row.name == name) {
                    env.row.rollout = rollout.clone();
                }
                let boards: Vec<BoardName> =
                    self.released_boards(name).into_iter().cloned().collect();
                for board in boards {
                    self.refresh_cutoffs(name, &board);
                }
            }
            Mutation::InsertRelease(row) => {
                let list = self.releases.entry(row.environment.clone()).or_default();
                // A new release supersedes the previous one for the same board.
                if let Some(prev) = list
                    .iter_mut()
                    .rev()
                    .find(|r| r.row.board == row.board && r.row.state != RolloutState::Superseded)
                {
                    prev.row.state = RolloutState::Superseded;
                }
                list.push(Release { row: (**row).clone(), cutoffs: Vec::new() });
                list.sort_by_key(|r| r.row.sequence);
                self.refresh_cutoffs(&row.environment, &row.board);
            }
            Mutation::MoveRollout { environment, sequence, from, to, reason } => {
                if let Some(r) = self
                    .releases
                    .get_mut(environment)
                    .and_then(|l| l.iter_mut().find(|r| r.row.sequence == *sequence))
                    // The database applied it only from `from`; so does the model.
                    .filter(|r| r.at() == *from)
                {
                    r.row.halted = match to.state {
                        RolloutState::Halted => true,
                        RolloutState::Completed => false,
                        _ => r.row.halted,
                    };
                    r.row.state = to.state;
                    r.row.stage = to.stage;
                    r.row.reason = reason.clone();
                }
            }
            Mutation::EnrollDevices(rows) => {
                for row in rows {
                    self.enroll(row.clone());
                }
                // Stage membership is by rank among the environment's devices of a board.
                let mut pairs: Vec<(&EnvironmentName, &BoardName)> =
                    rows.iter().map(|r| (&r.environment, &r.board)).collect();
                pairs.sort_unstable();
                pairs.dedup();
                for (env, board) in pairs {
                    self.refresh_cutoffs(env, board);
                }
            }
            Mutation::SetDeviceToken { id, token_hash } => {
                if let Some(&i) = self.device_by_id.get(id) {
                    // The old token stops working at once.
                    self.device_by_token.remove(&self.devices[i].row.token_hash);
                    self.device_by_token.insert(*token_hash, i);
                    self.devices[i].row.token_hash = *token_hash;
                }
            }
            Mutation::Report { id, reported } => {
                if let Some(&i) = self.device_by_id.get(id) {
                    self.devices[i].row.reported = reported.clone();
                    // A check-in that says an image is confirmed counts like a confirmation, once
                    // the device's own history brought it there.
                    if reported.confirmed
                        && let Some(image) = reported.running
                        && evidence::claim_confirms(self.devices[i].last_event, image)
                    {
                        self.record_outcome(i, image, EventKind::Confirmed);
                    }
                }
            }
            Mutation::Event { event, .. } => {
                if let Some(&i) = self.device_by_id.get(&event.device) {
                    self.devices[i].row.apply_event(event.image_id, event.kind);
                    self.devices[i].last_event = Some((event.image_id, event.kind));
                    self.record_outcome(i, event.image_id, event.kind);
                }
            }
            Mutation::Seen(list) => {
                for (id, at) in list {
                    if let Some(&i) = self.device_by_id.get(id) {
                        let d = &mut self.devices[i];
                        d.row.last_seen = d.row.last_seen.max(Some(*at));
                    }
                }
            }
            Mutation::InsertToken(row) => {
                self.tokens.insert(row.hash, row.clone());
            }
            Mutation::RevokeToken(id) => {
                if let Some(t) = self.tokens.values_mut().find(|t| &t.id == id) {
                    t.revoked = true;
                }
            }
            Mutation::InsertBuildKey(BuildKeyRow { public_key, name }) => {
                let key = TrustedKey::from_bytes(&public_key.0)
                    .map_err(|e| BadRow(format!("build key {name}: {e}")))?;
                match self.build_keys.iter_mut().find(|(k, _)| *k == key) {
                    Some(existing) => existing.1 = name.clone(),
                    None => self.build_keys.push((key, name.clone())),
                }
            }
            Mutation::Audit(_) => {}
            Mutation::InsertPatch(row) => {
                self.patches.entry((row.source, row.target)).or_insert_with(|| row.clone());
            }
            Mutation::PatchFailed(row) => {
                if let Some(&i) = self.device_by_id.get(&row.device) {
                    self.devices[i].patch_failed.insert(row.image_id);
                }
            }
        }
        Ok(())
    }

    fn enroll(&mut self, row: DeviceRow) {
        match self.device_by_id.get(&row.id) {
            Some(&i) => {
                self.device_by_token.remove(&self.devices[i].row.token_hash);
                self.device_by_token.insert(row.token_hash, i);
                self.devices[i] = Device::from_row(row);
            }
            None => {
                let i = self.devices.len();
                self.device_by_id.insert(row.id.clone(), i);
                self.device_by_token.insert(row.token_hash, i);
                self.devices.push(Device::from_row(row));
            }
        }
    }

    /// Notes that device `d` confirmed, reverted or refused `image`. Only images released to
    /// the device's environment count: the promotion gate must not open on what a device
    /// merely claims to run.
    pub fn record_outcome(&mut self, d: usize, image: ImageId, kind: EventKind) {
        let env = &self.devices[d].row.environment;
        if !self.releases_of(env).iter().any(|r| r.row.image_id == image) {
            return;
        }
        let o = self.outcomes.entry(image).or_default();
        match kind {
            EventKind::Confirmed => {
                o.confirmed.insert(d);
            }
            EventKind::Reverted | EventKind::Failed => {
                o.failed.insert(d);
            }
            EventKind::Downloading | EventKind::Installed | EventKind::Booted => {}
        }
    }

    /// An environment by name.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.row.name == name)
    }

    /// An environment's releases (oldest first).
    pub fn releases_of(&self, env: &str) -> &[Release] {
        self.releases.get(env).map_or(&[], Vec::as_slice)
    }

    /// The current release of `env` for `board`: its latest.
    pub fn current(&self, env: &str, board: &str) -> Option<&Release> {
        self.releases_of(env).iter().rev().find(|r| r.row.board == board)
    }

    /// Boards that have releases in `env`, in order of their latest release.
    pub fn released_boards(&self, env: &str) -> Vec<&BoardName> {
        let mut boards: Vec<&BoardName> = Vec::new();
        for r in self.releases_of(env).iter().rev() {
            if !boards.contains(&&r.row.board) {
                boards.push(&r.row.board);
            }
        }
        boards
    }

    /// The sequence the next release of `env` must carry.
    pub fn next_sequence(&self, env: &str) -> u64 {
        self.releases_of(env).last().map_or(1, |r| r.row.sequence + 1)
    }

    /// Devices of `env` on `board`.
    pub fn devices_on<'a>(
        &'a self,
        env: &'a str,
        board: &'a str,
    ) -> impl Iterator<Item = &'a Device> + Clone + 'a {
        self.devices.iter().filter(move |d| d.row.environment == env && d.row.board == board)
    }

    /// Rollout counts for the current stage of `release`.
    pub fn progress(&self, release: &Release) -> ota_proto::RolloutProgress {
        let stage = (release.row.stage as usize).min(release.cutoffs.len().saturating_sub(1));
        rollout::count(
            self.devices_on(&release.row.environment, &release.row.board),
            release.row.image_id,
            release.cutoffs.get(stage).copied().unwrap_or(0),
        )
    }

    /// Whether device `d` is offered its environment's current release now (in a stage that
    /// has started, of a rollout that offers): only then can its reports move the rollout.
    pub fn in_rollout(&self, d: usize) -> bool {
        let device = &self.devices[d];
        let Some(release) = self.current(&device.row.environment, &device.row.board) else {
            return false;
        };
        rollout::offered(release.at(), &release.cutoffs, device.bucket)
    }

    /// Recomputes the stage bounds of the current release of (`env`, `board`): whenever the
    /// release, the environment's stages or its devices change, on every replica alike.
    fn refresh_cutoffs(&mut self, env: &str, board: &str) -> Option<()> {
        let stages = self.environment(env)?.row.rollout.stages.clone();
        let bounds = rollout::cutoffs(self.devices_on(env, board).map(|d| d.bucket), &stages);
        let current =
            self.releases.get_mut(env)?.iter_mut().rev().find(|r| r.row.board == board)?;
        current.cutoffs = bounds;
        Some(())
    }

    /// Re-evaluates the current release of (`env`, `board`): returns the move its devices call
    /// for, if any (to be committed; the model moves when it is).
    pub fn evaluate(&mut self, env: &str, board: &str) -> Option<Mutation> {
        let settings = self.environment(env)?.row.rollout.clone();
        self.refresh_cutoffs(env, board)?;
        let release = self.current(env, board)?;
        let bounds = release.cutoffs.clone();
        let devices = self.devices_on(env, board);
        let next =
            rollout::evaluate(&settings, release.at(), release.row.image_id, devices, &bounds)?;
        Some(Mutation::MoveRollout {
            environment: release.row.environment.clone(),
            sequence: release.row.sequence,
            from: release.at(),
            to: next.at,
            reason: next.reason,
        })
    }

    /// Re-evaluates every current release.
    pub fn evaluate_all(&mut self) -> Vec<Mutation> {
        let mut pairs = Vec::new();
        for env in &self.environments {
            for board in self.released_boards(&env.row.name) {
                pairs.push((env.row.name.clone(), board.clone()));
            }
        }
        pairs.into_iter().filter_map(|(env, board)| self.evaluate(&env, &board)).collect()
    }

    /// Trusted build keys, as the image verifier takes them.
    pub fn trusted_build_keys(&self) -> Vec<TrustedKey> {
        self.build_keys.iter().map(|(k, _)| *k).collect()
    }
}
