//! The in-memory model every decision is made on: images, environments, releases, devices,
//! tokens and build keys, indexed for the hot paths (a check-in is a hash lookup and a few
//! comparisons).
//!
//! It is a materialized view of the store's [`Mutation`]s: [`Fleet::load`] applies the
//! snapshot's rows and the server applies each committed (or, for device reports, each
//! to-be-committed) mutation with [`Fleet::apply`], so there is one code path from a change to
//! its effect.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use firmware::image::{ImageId, ImageSummary, TrustedKey};

use crate::api::{ReleaseKind, RolloutState};
use crate::rollout;
use crate::store::{
    BuildKeyRow, DeviceRow, EnvironmentRow, ImageRow, Mutation, ReleaseRow, Snapshot, TokenRow,
};

/// A stored image.
#[derive(Clone, Debug)]
pub struct Image {
    /// The row.
    pub row: ImageRow,
    /// Its id.
    pub id: ImageId,
    /// The file, described.
    pub summary: Arc<ImageSummary>,
}

/// An environment with its keys.
#[derive(Clone, Debug)]
pub struct Environment {
    /// The row.
    pub row: EnvironmentRow,
    /// Its release key.
    pub key: TrustedKey,
    /// The private half, where the server holds it.
    pub signing: Option<SigningKey>,
}

/// A release and its rollout.
#[derive(Clone, Debug)]
pub struct Release {
    /// The row.
    pub row: ReleaseRow,
    /// Its image.
    pub image: ImageId,
    /// Its rollout state.
    pub state: RolloutState,
    /// Release or rollback.
    pub kind: ReleaseKind,
    /// The statement, hex (built once: every offer carries it).
    pub statement_hex: Arc<str>,
    /// Each stage's bucket bound for the current fleet (see [`rollout::cutoffs`]), refreshed
    /// whenever the release is evaluated.
    pub cutoffs: Vec<u16>,
}

/// An enrolled device.
#[derive(Clone, Debug)]
pub struct Device {
    /// The row (what is persisted).
    pub row: DeviceRow,
    /// Its stable rollout bucket.
    pub bucket: u16,
    /// The image in slot A.
    pub running: Option<ImageId>,
    /// The last image it reverted or refused.
    pub failed: Option<ImageId>,
    /// `row.last_seen` changed since it was last written.
    pub seen_dirty: bool,
    /// A change to `row` was applied here but its write failed: the next report rewrites it.
    pub unsaved: bool,
    /// The last step it reported: devices repeat a report they are not sure arrived, and a
    /// repeat is recorded once.
    pub last_event: Option<(ImageId, crate::api::EventKind)>,
}

impl Device {
    /// Builds the in-memory device from its row.
    pub fn from_row(row: DeviceRow) -> Self {
        Device {
            bucket: rollout::bucket(&row.id),
            running: row.running.as_deref().and_then(ImageId::from_hex),
            failed: row.failed_image.as_deref().and_then(ImageId::from_hex),
            seen_dirty: false,
            unsaved: false,
            last_event: None,
            row,
        }
    }

    /// Whether it runs `image`, confirmed.
    pub fn confirmed(&self, image: ImageId) -> bool {
        self.running == Some(image) && self.row.confirmed
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
    /// Images by id.
    pub images: HashMap<ImageId, Image>,
    /// Environments in creation order.
    pub environments: Vec<Environment>,
    /// Releases per environment, by increasing sequence.
    pub releases: HashMap<String, Vec<Release>>,
    /// Devices; indices are stable (devices are never removed).
    pub devices: Vec<Device>,
    /// Device index by id.
    pub device_by_id: HashMap<String, usize>,
    /// Device index by token hash.
    pub device_by_token: HashMap<[u8; 32], usize>,
    /// Management tokens by hash.
    pub tokens: HashMap<[u8; 32], TokenRow>,
    /// Trusted build keys.
    pub build_keys: Vec<(TrustedKey, String)>,
    /// Outcomes per image.
    pub outcomes: HashMap<ImageId, Outcomes>,
}

/// A row in the store that the model cannot use (a corrupted or hand-edited database).
#[derive(Debug, thiserror::Error)]
#[error("database row not usable: {0}")]
pub struct BadRow(pub String);

impl Fleet {
    /// Builds the model from a snapshot, then lets every rollout catch up with the devices'
    /// state (rollout moves are re-derived rather than trusted to have been written).
    pub fn load(snapshot: Snapshot) -> Result<(Fleet, Vec<Mutation>), BadRow> {
        let mut fleet = Fleet::default();
        let Snapshot { images, environments, releases, devices, tokens, build_keys, outcomes } =
            snapshot;
        let rows = images
            .into_iter()
            .map(Mutation::InsertImage)
            .chain(environments.into_iter().map(Mutation::PutEnvironment))
            .chain(releases.into_iter().map(Mutation::InsertRelease))
            .chain(devices.into_iter().map(Mutation::PutDevice))
            .chain(tokens.into_iter().map(Mutation::InsertToken))
            .chain(build_keys.into_iter().map(Mutation::InsertBuildKey));
        for m in rows {
            fleet.apply(&m)?;
        }
        for (device, image, kind) in outcomes {
            if let (Some(&d), Some(image)) =
                (fleet.device_by_id.get(&device), ImageId::from_hex(&image))
            {
                fleet.record_outcome(d, image, &kind);
            }
        }
        // A check-in that reports an image confirmed counts like a `confirmed` event (as it
        // did while the server ran).
        let running: Vec<(usize, ImageId)> = fleet
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.row.confirmed)
            .filter_map(|(i, d)| Some((i, d.running?)))
            .collect();
        for (d, image) in running {
            fleet.record_outcome(d, image, "confirmed");
        }
        let moves = fleet.evaluate_all();
        Ok((fleet, moves))
    }

    /// Applies one mutation to the model.
    pub fn apply(&mut self, m: &Mutation) -> Result<(), BadRow> {
        match m {
            Mutation::InsertImage(row) => {
                let id = ImageId::from_hex(&row.id)
                    .ok_or_else(|| BadRow(format!("image id {:?}", row.id)))?;
                let summary: ImageSummary = serde_json::from_str(&row.summary)
                    .map_err(|e| BadRow(format!("summary of image {}: {e}", row.id)))?;
                self.images.insert(id, Image { row: row.clone(), id, summary: Arc::new(summary) });
            }
            Mutation::PutEnvironment(row) => {
                let key = TrustedKey::from_bytes(&row.public_key)
                    .map_err(|e| BadRow(format!("key of environment {}: {e}", row.name)))?;
                let env = Environment {
                    row: row.clone(),
                    key,
                    signing: row.private_key.map(|seed| SigningKey::from_bytes(&seed)),
                };
                match self.environments.iter_mut().find(|e| e.row.name == row.name) {
                    Some(existing) => *existing = env,
                    None => self.environments.push(env),
                }
            }
            Mutation::InsertRelease(row) => {
                let image = ImageId::from_hex(&row.image_id)
                    .ok_or_else(|| BadRow(format!("release image id {:?}", row.image_id)))?;
                let state = RolloutState::parse(&row.state)
                    .ok_or_else(|| BadRow(format!("rollout state {:?}", row.state)))?;
                let kind = match row.kind.as_str() {
                    "rollback" => ReleaseKind::Rollback,
                    _ => ReleaseKind::Release,
                };
                let list = self.releases.entry(row.environment.clone()).or_default();
                // A new release supersedes the previous one for the same board.
                if let Some(prev) = list
                    .iter_mut()
                    .rev()
                    .find(|r| r.row.board == row.board && r.state != RolloutState::Superseded)
                {
                    prev.state = RolloutState::Superseded;
                    prev.row.state = RolloutState::Superseded.as_str().to_owned();
                }
                list.push(Release {
                    row: row.clone(),
                    image,
                    state,
                    kind,
                    statement_hex: hex::encode(&row.statement).into(),
                    cutoffs: Vec::new(),
                });
                list.sort_by_key(|r| r.row.sequence);
            }
            Mutation::UpdateRollout { environment, sequence, state, stage, reason, automatic } => {
                let new_state = RolloutState::parse(state)
                    .ok_or_else(|| BadRow(format!("rollout state {state:?}")))?;
                if let Some(r) = self
                    .releases
                    .get_mut(environment)
                    .and_then(|l| l.iter_mut().find(|r| r.row.sequence == *sequence))
                    .filter(|r| {
                        !automatic
                            || matches!(r.state, RolloutState::Rolling | RolloutState::Completed)
                    })
                {
                    // A halt is remembered until the rollout completes after a resume.
                    r.row.halted = match new_state {
                        RolloutState::Halted => true,
                        RolloutState::Completed => false,
                        _ => r.row.halted,
                    };
                    r.state = new_state;
                    r.row.state = state.clone();
                    // Stages only move forward, whatever order concurrent moves land in.
                    r.row.stage = r.row.stage.max(*stage);
                    r.row.reason = reason.clone();
                }
            }
            Mutation::PutDevice(row) => match self.device_by_id.get(&row.id) {
                Some(&i) => {
                    let old = self.devices[i].row.token_hash;
                    if old != row.token_hash {
                        // A new token: the old one stops working at once.
                        self.device_by_token.remove(&old);
                        self.device_by_token.insert(row.token_hash, i);
                    }
                    let (dirty, last_event) =
                        (self.devices[i].seen_dirty, self.devices[i].last_event);
                    self.devices[i] =
                        Device { seen_dirty: dirty, last_event, ..Device::from_row(row.clone()) };
                }
                None => {
                    let i = self.devices.len();
                    self.device_by_id.insert(row.id.clone(), i);
                    self.device_by_token.insert(row.token_hash, i);
                    self.devices.push(Device::from_row(row.clone()));
                }
            },
            Mutation::Seen(_) | Mutation::InsertEvent(_) | Mutation::Audit(_) => {}
            Mutation::InsertToken(row) => {
                self.tokens.insert(row.hash, row.clone());
            }
            Mutation::RevokeToken(id) => {
                if let Some(t) = self.tokens.values_mut().find(|t| &t.id == id) {
                    t.revoked = true;
                }
            }
            Mutation::InsertBuildKey(BuildKeyRow { public_key, name }) => {
                let key = TrustedKey::from_bytes(public_key)
                    .map_err(|e| BadRow(format!("build key {name}: {e}")))?;
                match self.build_keys.iter_mut().find(|(k, _)| *k == key) {
                    Some(existing) => existing.1 = name.clone(),
                    None => self.build_keys.push((key, name.clone())),
                }
            }
        }
        Ok(())
    }

    /// Notes that device `d` confirmed (`kind == "confirmed"`) or failed (`reverted`,
    /// `failed`) `image`.
    /// Only images released to the device's environment count: the promotion gate must not
    /// open on what a device merely claims to run.
    pub fn record_outcome(&mut self, d: usize, image: ImageId, kind: &str) {
        let env = &self.devices[d].row.environment;
        if !self.releases_of(env).iter().any(|r| r.image == image) {
            return;
        }
        let o = self.outcomes.entry(image).or_default();
        match kind {
            "confirmed" => {
                o.confirmed.insert(d);
            }
            "reverted" | "failed" => {
                o.failed.insert(d);
            }
            _ => {}
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
    pub fn released_boards(&self, env: &str) -> Vec<&str> {
        let mut boards: Vec<&str> = Vec::new();
        for r in self.releases_of(env).iter().rev() {
            if !boards.contains(&r.row.board.as_str()) {
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
    pub fn progress(&self, release: &Release) -> crate::api::RolloutProgress {
        rollout::count(
            self.devices_on(&release.row.environment, &release.row.board),
            release.image,
            release
                .cutoffs
                .get((release.row.stage as usize).min(release.cutoffs.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0),
        )
    }

    /// Whether device `d` counts in the current stage of a running rollout: only then can its
    /// reports move the rollout (so other reports skip the evaluation, a scan of the fleet).
    pub fn in_rollout(&self, d: usize) -> bool {
        let device = &self.devices[d];
        let (env, board) = (&device.row.environment, &device.row.board);
        let Some(release) = self.current(env, board) else { return false };
        let position = rollout::Position {
            state: release.state,
            stage: release.row.stage as usize,
            reason: None,
        };
        rollout::offered(&position, &release.cutoffs, device.bucket)
    }

    /// Re-evaluates the current release of (`env`, `board`); applies and returns the move, if
    /// any.
    pub fn evaluate(&mut self, env: &str, board: &str) -> Option<Mutation> {
        let stages = self.environment(env)?.row.stages.clone();
        let bounds = rollout::cutoffs(self.devices_on(env, board).map(|d| d.bucket), &stages);
        let current =
            self.releases.get_mut(env)?.iter_mut().rev().find(|r| r.row.board == board)?;
        current.cutoffs = bounds.clone();
        let environment = self.environment(env)?;
        let release = self.current(env, board)?;
        let settings = rollout::Settings {
            stages: &environment.row.stages,
            failure_threshold: environment.row.failure_threshold,
            advance_ratio: environment.row.advance_ratio,
        };
        let devices = self.devices_on(env, board);
        let now = rollout::Position {
            state: release.state,
            stage: release.row.stage as usize,
            reason: release.row.reason.clone(),
        };
        let next = rollout::evaluate(&settings, &now, release.image, devices, &bounds)?;
        let m = Mutation::UpdateRollout {
            environment: env.to_owned(),
            sequence: release.row.sequence,
            state: next.state.as_str().to_owned(),
            stage: next.stage as u32,
            reason: next.reason,
            automatic: true,
        };
        self.apply(&m).ok()?;
        Some(m)
    }

    /// Re-evaluates every current release.
    pub fn evaluate_all(&mut self) -> Vec<Mutation> {
        let mut pairs = Vec::new();
        for env in &self.environments {
            for board in self.released_boards(&env.row.name) {
                pairs.push((env.row.name.clone(), board.to_owned()));
            }
        }
        pairs.into_iter().filter_map(|(env, board)| self.evaluate(&env, &board)).collect()
    }

    /// Trusted build keys, as the image verifier takes them.
    pub fn trusted_build_keys(&self) -> Vec<TrustedKey> {
        self.build_keys.iter().map(|(k, _)| *k).collect()
    }
}
