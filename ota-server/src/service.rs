//! The server's operations, over the in-memory [`Fleet`], the [`Store`] and the [`Blobs`].
//! The HTTP layer only turns requests into calls here and results into responses.
//!
//! Consistency: management operations run one at a time; each checks against the model,
//! commits its mutations (with its audit entry) and only then applies them to the model and
//! answers, so what is acknowledged is on disk and nothing half-done is ever visible. Device
//! reports (check-ins, events) are applied to the model first and answered after their
//! commit; rollout moves they cause are re-derived at start, so losing one in a crash loses
//! nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use boards::Catalog;
use bytes::Bytes;
use firmware::image::{ImageId, TrustedKey};

use crate::api::{self, ReleaseKind, Role, RolloutState};
use crate::auth;
use crate::blobs::Blobs;
use crate::fleet::{Device, Environment, Fleet, Image, Release};
use crate::images;
use crate::release::{self, Refusal, short};
use crate::rollout;
use crate::store::writer::Writer;
use crate::store::{
    AuditRow, BuildKeyRow, DeviceRow, EnvironmentRow, EventRow, ImageRow, Mutation, ReleaseRow,
    Store, TokenRow,
};

/// How a request failed, independent of HTTP (the HTTP layer maps kinds to statuses).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailureKind {
    /// 400.
    BadRequest,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 409.
    Conflict,
    /// 413.
    TooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 500.
    Internal,
}

/// A failed request: kind, stable code, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Kind.
    pub kind: FailureKind,
    /// Code.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl Failure {
    /// A failure.
    pub fn new(kind: FailureKind, code: &'static str, message: impl Into<String>) -> Self {
        Failure { kind, code, message: message.into() }
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(%message, "internal error");
        Failure::new(FailureKind::Internal, "internal", format!("internal error: {message}"))
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Failure::new(FailureKind::BadRequest, code, message)
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Failure::new(FailureKind::NotFound, code, message)
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::internal(e)
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        use FailureKind::*;
        match r {
            Refusal::Gate(m) => Failure::new(Conflict, "gate_closed", m),
            Refusal::BadStatement(m) => Failure::new(BadRequest, "bad_statement", m),
            Refusal::WrongKey(m) => Failure::new(Forbidden, "wrong_release_key", m),
            Refusal::SequenceTaken { got, expected } => Failure::new(
                Conflict,
                "sequence_taken",
                format!(
                    "the statement carries sequence {got}; the next release must carry {expected}"
                ),
            ),
            Refusal::StatementRequired(m) => Failure::new(BadRequest, "statement_required", m),
            Refusal::AlreadyCurrent(m) => Failure::new(Conflict, "already_current", m),
        }
    }
}

/// Result of an operation.
pub type Outcome<T> = Result<T, Failure>;

/// Who is asking (a management token).
#[derive(Clone, Debug)]
pub struct Actor {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Actor {
    /// The server's own command line.
    pub fn cli() -> Self {
        Actor { name: "cli".to_owned(), role: Role::Admin }
    }

    fn require(&self, allowed: &[Role], what: &str) -> Outcome<()> {
        if self.role == Role::Admin || allowed.contains(&self.role) {
            return Ok(());
        }
        Err(Failure::new(
            FailureKind::Forbidden,
            "forbidden",
            format!("role {} may not {what}", self.role.as_str()),
        ))
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Device check-ins answered.
    pub checkins: AtomicU64,
    /// Check-ins answered with an offer.
    pub offers: AtomicU64,
    /// Image downloads (device and management).
    pub downloads: AtomicU64,
    /// Bytes of image files served.
    pub download_bytes: AtomicU64,
    /// Images stored.
    pub uploads: AtomicU64,
    /// Uploads refused.
    pub uploads_refused: AtomicU64,
    /// Device events received.
    pub events: AtomicU64,
}

/// Settings the service runs with.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest image file accepted, bytes.
    pub max_image_size: usize,
}

/// The server.
#[derive(Debug)]
pub struct Service<S> {
    fleet: Mutex<Fleet>,
    store: Arc<S>,
    writer: Writer,
    blobs: Arc<Blobs>,
    catalog: Catalog,
    management: tokio::sync::Mutex<()>,
    /// Counters.
    pub metrics: Metrics,
    /// Limits.
    pub limits: Limits,
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn parse_image_id(text: &str) -> Outcome<ImageId> {
    ImageId::from_hex(text).ok_or_else(|| {
        Failure::bad("bad_image_id", format!("{text:?} is not an image id (64 hex digits)"))
    })
}

fn parse_key(text: &str) -> Outcome<TrustedKey> {
    let raw: [u8; 32] =
        hex::decode(text).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| {
            Failure::bad("bad_key", "a public key is 64 hex digits (32 bytes, Ed25519)")
        })?;
    TrustedKey::from_bytes(&raw).map_err(|e| Failure::bad("bad_key", format!("public key: {e}")))
}

fn audit(actor: &Actor, action: &str, target: &str, detail: serde_json::Value) -> Mutation {
    Mutation::Audit(AuditRow {
        at: now_ms(),
        actor: actor.name.clone(),
        role: actor.role.as_str().to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: detail.to_string(),
    })
}

/// Checks a device id: 1 to 64 bytes of `[A-Za-z0-9._:-]`.
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn check_ratio(name: &str, value: f64, allow_zero: bool) -> Outcome<f64> {
    let ok = value.is_finite() && value <= 1.0 && (value > 0.0 || (allow_zero && value == 0.0));
    if ok {
        Ok(value)
    } else {
        let range = if allow_zero { "[0, 1]" } else { "(0, 1]" };
        Err(Failure::bad("bad_setting", format!("{name} must be a ratio in {range}, got {value}")))
    }
}

impl<S: Store> Service<S> {
    /// Loads the model from `store` and starts the writer.
    pub async fn start(
        store: Arc<S>,
        blobs: Blobs,
        catalog: Catalog,
        limits: Limits,
    ) -> anyhow::Result<Arc<Self>> {
        let snapshot = store.load().await?;
        let (fleet, moves) = Fleet::load(snapshot)?;
        let writer = Writer::start(store.clone());
        writer.commit(moves).await?;
        Ok(Arc::new(Service {
            fleet: Mutex::new(fleet),
            store,
            writer,
            blobs: Arc::new(blobs),
            catalog,
            management: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            limits,
        }))
    }

    /// The model, locked (never held across an await).
    pub fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits then applies management mutations.
    async fn commit_apply(&self, batch: Vec<Mutation>) -> Outcome<()> {
        self.writer.commit(batch.clone()).await?;
        let mut fleet = self.fleet();
        for m in &batch {
            fleet.apply(m).map_err(Failure::internal)?;
        }
        Ok(())
    }

    // ----- authentication -----

    /// The actor behind a management token.
    pub async fn authenticate(&self, token: Option<&str>) -> Outcome<Actor> {
        let unauthorized = |m: &str| Failure::new(FailureKind::Unauthorized, "unauthorized", m);
        let token = token
            .ok_or_else(|| unauthorized("missing bearer token (Authorization: Bearer TOKEN)"))?;
        if token.starts_with(auth::DEVICE_PREFIX) {
            return Err(Failure::new(
                FailureKind::Forbidden,
                "device_token",
                "device tokens reach only the device API (/api/v1/device/...)",
            ));
        }
        let hash = auth::hash(token);
        let found = self.fleet().tokens.get(&hash).cloned();
        let row = match found {
            Some(row) => row,
            // Made by `ota-server token create` while we run: look it up once, then cache.
            None => match self.store.token(hash).await? {
                Some(row) => {
                    self.fleet().tokens.insert(hash, row.clone());
                    row
                }
                None => return Err(unauthorized("unknown token")),
            },
        };
        if row.revoked {
            return Err(unauthorized("this token was revoked"));
        }
        let role = Role::parse(&row.role).ok_or_else(|| Failure::internal("stored role"))?;
        Ok(Actor { name: row.name, role })
    }

    /// The device behind a device token.
    pub fn authenticate_device(&self, token: Option<&str>) -> Outcome<usize> {
        let token = token.ok_or_else(|| {
            Failure::new(FailureKind::Unauthorized, "unauthorized", "missing device token")
        })?;
        self.fleet().device_by_token.get(&auth::hash(token)).copied().ok_or_else(|| {
            Failure::new(FailureKind::Unauthorized, "unauthorized", "unknown device token")
        })
    }

    // ----- images -----

    /// Stores an uploaded image after checking it. `Ok((true, _))` if it is new.
    pub async fn upload_image(
        &self,
        actor: &Actor,
        file: Bytes,
    ) -> Outcome<(bool, api::ImageInfo)> {
        actor.require(&[Role::Ci], "upload images")?;
        let keys = self.fleet().trusted_build_keys();
        let catalog = self.catalog.clone();
        let checked = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || images::check(&file, &keys, &catalog))
                .await
                .map_err(Failure::internal)?
        };
        let accepted = match checked {
            Ok(a) => a,
            Err(refused) => {
                self.metrics.uploads_refused.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::bad(refused.code, refused.message));
            }
        };
        let _guard = self.management.lock().await;
        let file_sha256 = crate::blobs::blob_name(&file);
        if let Some(existing) = self.fleet().images.get(&accepted.id) {
            if existing.row.file_sha256 != file_sha256 {
                return Err(Failure::new(
                    FailureKind::Conflict,
                    "image_conflict",
                    format!(
                        "image {} is already stored with other file bytes (a different encoding \
                         or signature set); images are immutable",
                        accepted.id
                    ),
                ));
            }
            return Ok((false, image_info(existing)));
        }
        // The blob is durable before the row that names it.
        let (blobs, bytes) = (self.blobs.clone(), file.clone());
        let blob = tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(Failure::internal)?
            .map_err(|e| Failure::internal(format!("writing the image file: {e}")))?;
        let summary = serde_json::to_string(&accepted.summary).map_err(Failure::internal)?;
        let row = ImageRow {
            id: accepted.id.to_string(),
            file_sha256: blob,
            board: accepted.summary.board.clone(),
            version: accepted.summary.version.clone(),
            security_counter: accepted.summary.security_counter,
            size: file.len() as u64,
            summary,
            uploaded_at: now_ms(),
            uploaded_by: actor.name.clone(),
        };
        let detail = serde_json::json!({
            "board": row.board, "version": row.version, "size": row.size,
        });
        let id = row.id.clone();
        self.commit_apply(vec![
            Mutation::InsertImage(row),
            audit(actor, "image.upload", &id, detail),
        ])
        .await?;
        self.metrics.uploads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(image = %id, actor = %actor.name, "image stored");
        let fleet = self.fleet();
        Ok((true, image_info(&fleet.images[&accepted.id])))
    }

    /// All images, newest first.
    pub fn images(&self) -> Vec<api::ImageInfo> {
        let fleet = self.fleet();
        let mut list: Vec<&Image> = fleet.images.values().collect();
        list.sort_by(|a, b| b.row.uploaded_at.cmp(&a.row.uploaded_at).then(a.id.cmp(&b.id)));
        list.into_iter().map(image_info).collect()
    }

    /// One image.
    pub fn image(&self, id: &str) -> Outcome<api::ImageInfo> {
        let id = parse_image_id(id)?;
        let fleet = self.fleet();
        fleet.images.get(&id).map(image_info).ok_or_else(|| unknown_image(id))
    }

    /// An image's file.
    pub fn image_file(&self, id: &str) -> Outcome<Bytes> {
        let id = parse_image_id(id)?;
        let blob = {
            let fleet = self.fleet();
            fleet.images.get(&id).ok_or_else(|| unknown_image(id))?.row.file_sha256.clone()
        };
        self.blobs.get(&blob).map_err(|e| Failure::internal(format!("reading image {id}: {e}")))
    }

    // ----- build keys -----

    /// Trusted build keys.
    pub fn build_keys(&self) -> Vec<api::BuildKey> {
        self.fleet()
            .build_keys
            .iter()
            .map(|(k, name)| api::BuildKey {
                key_id: k.id().to_string(),
                public_key: hex::encode(k.to_bytes()),
                name: name.clone(),
            })
            .collect()
    }

    /// Trusts another build key.
    pub async fn add_build_key(
        &self,
        actor: &Actor,
        new: api::NewBuildKey,
    ) -> Outcome<api::BuildKey> {
        actor.require(&[], "add build keys")?;
        let key = parse_key(&new.public_key)?;
        let _guard = self.management.lock().await;
        self.commit_apply(vec![
            Mutation::InsertBuildKey(BuildKeyRow {
                public_key: key.to_bytes(),
                name: new.name.clone(),
            }),
            audit(
                actor,
                "build_key.add",
                &key.id().to_string(),
                serde_json::json!({"name": new.name}),
            ),
        ])
        .await?;
        Ok(api::BuildKey {
            key_id: key.id().to_string(),
            public_key: hex::encode(key.to_bytes()),
            name: new.name,
        })
    }

    // ----- environments -----

    /// All environments.
    pub fn environments(&self) -> Vec<api::EnvironmentInfo> {
        let fleet = self.fleet();
        fleet.environments.iter().map(|e| environment_info(&fleet, e)).collect()
    }

    /// One environment.
    pub fn environment(&self, name: &str) -> Outcome<api::EnvironmentInfo> {
        let fleet = self.fleet();
        let env = fleet.environment(name).ok_or_else(|| unknown_environment(name))?;
        Ok(environment_info(&fleet, env))
    }

    /// Creates an environment.
    pub async fn create_environment(
        &self,
        actor: &Actor,
        new: api::NewEnvironment,
    ) -> Outcome<api::EnvironmentInfo> {
        actor.require(&[], "create environments")?;
        if firmware::image::ReleaseStatement::new(ImageId([0; 32]), &new.name, 0).is_none() {
            return Err(Failure::bad(
                "bad_name",
                format!("environment name {:?}: 1 to 32 bytes of a-z, 0-9, _ and -", new.name),
            ));
        }
        let _guard = self.management.lock().await;
        let row = {
            let fleet = self.fleet();
            if fleet.environment(&new.name).is_some() {
                return Err(Failure::new(
                    FailureKind::Conflict,
                    "exists",
                    format!("environment {} already exists", new.name),
                ));
            }
            if let Some(up) = &new.upstream
                && fleet.environment(up).is_none()
            {
                return Err(Failure::bad(
                    "unknown_environment",
                    format!("upstream environment {up} does not exist"),
                ));
            }
            let (public_key, private_key) = match &new.release_public_key {
                Some(hex) => (parse_key(hex)?.to_bytes(), None),
                None => {
                    let (seed, public) = new_key_pair().map_err(Failure::internal)?;
                    (public, Some(seed))
                }
            };
            let row = EnvironmentRow {
                name: new.name.clone(),
                upstream: new.upstream.clone(),
                promote_min_confirmed: new
                    .promote_min_confirmed
                    .unwrap_or(u32::from(new.upstream.is_some())),
                failure_threshold: check_ratio(
                    "failure_threshold",
                    new.failure_threshold.unwrap_or(0.2),
                    true,
                )?,
                stages: new.stages.clone().unwrap_or_else(|| vec![100]),
                advance_ratio: check_ratio(
                    "advance_ratio",
                    new.advance_ratio.unwrap_or(0.9),
                    false,
                )?,
                public_key,
                private_key,
                position: fleet.environments.iter().map(|e| e.row.position + 1).max().unwrap_or(0),
            };
            rollout::check_stages(&row.stages).map_err(|m| Failure::bad("bad_setting", m))?;
            row
        };
        let detail = serde_json::json!({
            "upstream": row.upstream, "stages": row.stages,
            "server_holds_key": row.private_key.is_some(),
        });
        let name = row.name.clone();
        self.commit_apply(vec![
            Mutation::PutEnvironment(row),
            audit(actor, "environment.create", &name, detail),
        ])
        .await?;
        self.environment(&name)
    }

    /// Changes an environment's rollout settings.
    pub async fn update_environment(
        &self,
        actor: &Actor,
        name: &str,
        update: api::EnvironmentUpdate,
    ) -> Outcome<api::EnvironmentInfo> {
        actor.require(&[], "change environments")?;
        let _guard = self.management.lock().await;
        let row = {
            let fleet = self.fleet();
            let mut row =
                fleet.environment(name).ok_or_else(|| unknown_environment(name))?.row.clone();
            if let Some(v) = update.promote_min_confirmed {
                row.promote_min_confirmed = v;
            }
            if let Some(v) = update.failure_threshold {
                row.failure_threshold = check_ratio("failure_threshold", v, true)?;
            }
            if let Some(v) = update.advance_ratio {
                row.advance_ratio = check_ratio("advance_ratio", v, false)?;
            }
            if let Some(v) = &update.stages {
                rollout::check_stages(v).map_err(|m| Failure::bad("bad_setting", m))?;
                row.stages = v.clone();
            }
            row
        };
        let detail = serde_json::to_value(&update).unwrap_or_default();
        self.commit_apply(vec![
            Mutation::PutEnvironment(row),
            audit(actor, "environment.update", name, detail),
        ])
        .await?;
        self.reevaluate_all().await;
        self.environment(name)
    }

    // ----- releases -----

    /// An environment's releases, newest first.
    pub fn releases(&self, env: &str) -> Outcome<Vec<api::ReleaseInfo>> {
        let fleet = self.fleet();
        fleet.environment(env).ok_or_else(|| unknown_environment(env))?;
        Ok(fleet.releases_of(env).iter().rev().map(|r| release_info(&fleet, r)).collect())
    }

    /// One release.
    pub fn release(&self, env: &str, sequence: u64) -> Outcome<api::ReleaseInfo> {
        let fleet = self.fleet();
        let r = find_release(&fleet, env, sequence)?;
        Ok(release_info(&fleet, r))
    }

    /// Releases an image to an environment (a promotion when it has an upstream).
    pub async fn create_release(
        &self,
        actor: &Actor,
        env: &str,
        new: api::NewRelease,
    ) -> Outcome<api::ReleaseInfo> {
        let image = parse_image_id(&new.image_id)?;
        let statement = decode_statement(new.statement.as_deref())?;
        self.release_image(actor, env, image, statement, ReleaseKind::Release).await
    }

    /// What a rollback of `env` would release.
    pub fn rollback_target(&self, env: &str, board: Option<&str>) -> Outcome<api::RollbackTarget> {
        let fleet = self.fleet();
        fleet.environment(env).ok_or_else(|| unknown_environment(env))?;
        let board = pick_board(&fleet, env, board)?;
        let image = release::rollback_target(&fleet, env, &board).ok_or_else(|| {
            Failure::new(
                FailureKind::Conflict,
                "nothing_to_roll_back",
                format!("{env} has no earlier release of another image for board {board}"),
            )
        })?;
        Ok(api::RollbackTarget {
            board,
            image_id: image.to_string(),
            sequence: fleet.next_sequence(env),
        })
    }

    /// Re-releases the previous image of `env` under a new sequence.
    pub async fn rollback(
        &self,
        actor: &Actor,
        env: &str,
        req: api::RollbackRequest,
    ) -> Outcome<api::ReleaseInfo> {
        let target = self.rollback_target(env, req.board.as_deref())?;
        let image = parse_image_id(&target.image_id)?;
        let statement = decode_statement(req.statement.as_deref())?;
        self.release_image(actor, env, image, statement, ReleaseKind::Rollback).await
    }

    async fn release_image(
        &self,
        actor: &Actor,
        env: &str,
        image: ImageId,
        statement: Option<Vec<u8>>,
        kind: ReleaseKind,
    ) -> Outcome<api::ReleaseInfo> {
        let _guard = self.management.lock().await;
        let row = {
            let fleet = self.fleet();
            let environment = fleet.environment(env).ok_or_else(|| unknown_environment(env))?;
            // CI releases only where the server holds the key; promotions are for `release`.
            if actor.role == Role::Ci && environment.signing.is_none() {
                return Err(Failure::new(
                    FailureKind::Forbidden,
                    "forbidden",
                    format!(
                        "role ci may release only to environments whose key the server holds; {env}'s is held offline"
                    ),
                ));
            }
            actor.require(&[Role::Release, Role::Ci], "release images")?;
            let img = fleet.images.get(&image).ok_or_else(|| unknown_image(image))?;
            if kind == ReleaseKind::Rollback {
                // The previous image already entered this environment: no gate.
                if let Some(current) = fleet.current(env, &img.row.board)
                    && current.image == image
                {
                    return Err(Refusal::AlreadyCurrent(format!(
                        "image {} is already current",
                        short(image)
                    ))
                    .into());
                }
            } else {
                release::check_not_current(&fleet, env, img)?;
                release::gate(&fleet, environment, img)?;
            }
            let sequence = fleet.next_sequence(env);
            let signed = release::statement(environment, image, sequence, statement.as_deref())?;
            ReleaseRow {
                environment: env.to_owned(),
                sequence,
                image_id: image.to_string(),
                board: img.row.board.clone(),
                kind: release::kind_name(kind).to_owned(),
                statement: signed,
                created_at: now_ms(),
                created_by: actor.name.clone(),
                state: RolloutState::Rolling.as_str().to_owned(),
                stage: 0,
                reason: None,
                halted: false,
            }
        };
        let target = format!("{env}/{}", row.sequence);
        let detail = serde_json::json!({
            "image_id": row.image_id, "board": row.board, "kind": row.kind,
            "signed_by": if statement.is_some() { "offline key" } else { "server" },
        });
        let action =
            if kind == ReleaseKind::Rollback { "release.rollback" } else { "release.create" };
        let (sequence, board) = (row.sequence, row.board.clone());
        self.commit_apply(vec![
            Mutation::InsertRelease(row),
            audit(actor, action, &target, detail),
        ])
        .await?;
        tracing::info!(release = %target, image = %image, actor = %actor.name, "released");
        self.reevaluate(env, &board).await;
        self.release(env, sequence)
    }

    /// Pauses (`pause == true`) or resumes a release's rollout. Resuming a halted rollout
    /// overrides the halt (it is re-checked at once, so it only sticks if failures are back
    /// under the threshold or the settings changed).
    pub async fn set_paused(
        &self,
        actor: &Actor,
        env: &str,
        sequence: u64,
        pause: bool,
    ) -> Outcome<api::ReleaseInfo> {
        actor.require(&[Role::Release], "pause or resume rollouts")?;
        let _guard = self.management.lock().await;
        let (board, m) = {
            let fleet = self.fleet();
            let r = find_release(&fleet, env, sequence)?;
            let allowed = if pause {
                matches!(r.state, RolloutState::Rolling | RolloutState::Completed)
            } else {
                matches!(r.state, RolloutState::Paused | RolloutState::Halted)
            };
            if !allowed {
                return Err(Failure::new(
                    FailureKind::Conflict,
                    "bad_state",
                    format!(
                        "release {env}/{sequence} is {}; cannot {}",
                        r.state.as_str(),
                        if pause { "pause it" } else { "resume it" }
                    ),
                ));
            }
            let (state, reason) = if pause {
                (RolloutState::Paused, Some(format!("paused by {}", actor.name)))
            } else {
                (RolloutState::Rolling, None)
            };
            let m = Mutation::UpdateRollout {
                environment: env.to_owned(),
                sequence,
                state: state.as_str().to_owned(),
                stage: r.row.stage,
                reason,
                automatic: false,
            };
            (r.row.board.clone(), m)
        };
        let action = if pause { "release.pause" } else { "release.resume" };
        self.commit_apply(vec![
            m,
            audit(actor, action, &format!("{env}/{sequence}"), serde_json::json!({})),
        ])
        .await?;
        if !pause {
            self.reevaluate(env, &board).await;
        }
        self.release(env, sequence)
    }

    async fn reevaluate(&self, env: &str, board: &str) {
        let moved = self.fleet().evaluate(env, board);
        if let Some(m) = moved {
            log_move(&m);
            if let Err(e) = self.writer.commit(vec![m]).await {
                tracing::error!(error = %e, "rollout move not written (re-derived at start)");
            }
        }
    }

    async fn reevaluate_all(&self) {
        let moves = self.fleet().evaluate_all();
        moves.iter().for_each(log_move);
        if let Err(e) = self.writer.commit(moves).await {
            tracing::error!(error = %e, "rollout moves not written (re-derived at start)");
        }
    }

    // ----- devices -----

    /// Enrolls a device; returns its token (once).
    pub async fn create_device(
        &self,
        actor: &Actor,
        new: api::NewDevice,
    ) -> Outcome<api::DeviceCreated> {
        actor.require(&[], "enroll devices")?;
        if !is_valid_device_id(&new.id) {
            return Err(Failure::bad(
                "bad_device_id",
                format!(
                    "device id {:?}: 1 to 64 bytes of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
                    new.id
                ),
            ));
        }
        if self.catalog.get(&new.board).is_err() {
            return Err(Failure::bad(
                "unknown_board",
                format!("board {:?} is not known to this server", new.board),
            ));
        }
        let _guard = self.management.lock().await;
        {
            let fleet = self.fleet();
            fleet.environment(&new.environment).ok_or_else(|| {
                Failure::bad(
                    "unknown_environment",
                    format!("environment {} does not exist", new.environment),
                )
            })?;
            if fleet.device_by_id.contains_key(&new.id) {
                return Err(Failure::new(
                    FailureKind::Conflict,
                    "exists",
                    format!("device {} is already enrolled", new.id),
                ));
            }
        }
        let (token, token_hash) = auth::generate(auth::DEVICE_PREFIX).map_err(Failure::internal)?;
        let row = DeviceRow::enrolled(&new.id, &new.board, &new.environment, token_hash, now_ms());
        let detail = serde_json::json!({"board": new.board, "environment": new.environment});
        self.commit_apply(vec![
            Mutation::PutDevice(row),
            audit(actor, "device.create", &new.id, detail),
        ])
        .await?;
        self.reevaluate(&new.environment, &new.board).await;
        let fleet = self.fleet();
        let d = &fleet.devices[fleet.device_by_id[&new.id]];
        Ok(api::DeviceCreated { device: device_info(&fleet, d), token })
    }

    /// Gives an enrolled device a new token (the old one stops working); returns it once.
    pub async fn rotate_device_token(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Outcome<api::DeviceCreated> {
        actor.require(&[], "issue device tokens")?;
        let _guard = self.management.lock().await;
        let mut row = {
            let fleet = self.fleet();
            let &i = fleet
                .device_by_id
                .get(id)
                .ok_or_else(|| Failure::not_found("unknown_device", format!("no device {id:?}")))?;
            fleet.devices[i].row.clone()
        };
        let (token, token_hash) = auth::generate(auth::DEVICE_PREFIX).map_err(Failure::internal)?;
        row.token_hash = token_hash;
        self.commit_apply(vec![
            Mutation::PutDevice(row),
            audit(actor, "device.token", id, serde_json::json!({})),
        ])
        .await?;
        let fleet = self.fleet();
        let i = fleet.device_by_id[id];
        Ok(api::DeviceCreated { device: device_info(&fleet, &fleet.devices[i]), token })
    }

    /// Devices matching the filters (each optional).
    pub fn devices(&self, filter: &DeviceFilter) -> Outcome<Vec<api::DeviceInfo>> {
        let state = match filter.state.as_deref() {
            Some(s) => Some(api::DeviceState::parse(s).ok_or_else(|| {
                Failure::bad(
                    "bad_filter",
                    format!("state {s:?}: one of unseen, current, updating, waiting, failed"),
                )
            })?),
            None => None,
        };
        let image = filter.image.as_deref().map(parse_image_id).transpose()?;
        let fleet = self.fleet();
        let limit = filter.limit.unwrap_or(usize::MAX);
        Ok(fleet
            .devices
            .iter()
            .filter(|d| filter.environment.as_deref().is_none_or(|e| d.row.environment == e))
            .filter(|d| filter.board.as_deref().is_none_or(|b| d.row.board == b))
            .filter(|d| image.is_none_or(|i| d.running == Some(i)))
            .filter(|d| state.is_none_or(|s| device_state(&fleet, d) == s))
            .take(limit)
            .map(|d| device_info(&fleet, d))
            .collect())
    }

    /// One device with its recent events.
    pub async fn device(&self, id: &str) -> Outcome<api::DeviceDetail> {
        let device = {
            let fleet = self.fleet();
            let &i = fleet
                .device_by_id
                .get(id)
                .ok_or_else(|| Failure::not_found("unknown_device", format!("no device {id:?}")))?;
            device_info(&fleet, &fleet.devices[i])
        };
        let events = self.store.events(id, 200).await?;
        Ok(api::DeviceDetail {
            device,
            events: events
                .into_iter()
                .map(|e| api::DeviceEvent {
                    at: api::rfc3339(e.at),
                    image_id: e.image_id,
                    kind: api::EventKind::parse(&e.kind).unwrap_or(api::EventKind::Failed),
                    detail: e.detail,
                })
                .collect(),
        })
    }

    // ----- tokens -----

    /// Makes a management token.
    pub async fn create_token(
        &self,
        actor: &Actor,
        new: api::NewToken,
    ) -> Outcome<api::TokenCreated> {
        actor.require(&[], "create tokens")?;
        if new.name.is_empty() || new.name.len() > 64 {
            return Err(Failure::bad("bad_name", "a token name is 1 to 64 bytes"));
        }
        let _guard = self.management.lock().await;
        let (token, row) = new_token_row(new.role, &new.name).map_err(Failure::internal)?;
        let info = token_info(&row);
        let detail = serde_json::json!({"role": new.role.as_str(), "name": new.name});
        self.commit_apply(vec![
            Mutation::InsertToken(row),
            audit(actor, "token.create", &info.id, detail),
        ])
        .await?;
        Ok(api::TokenCreated { info, token })
    }

    /// Management tokens (never their secrets), including those made offline.
    pub async fn tokens(&self) -> Outcome<Vec<api::TokenInfo>> {
        let mut list: Vec<api::TokenInfo> =
            self.store.tokens().await?.iter().map(token_info).collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, actor: &Actor, id: &str) -> Outcome<api::TokenInfo> {
        actor.require(&[], "revoke tokens")?;
        let _guard = self.management.lock().await;
        if !self.fleet().tokens.values().any(|t| t.id == id) {
            // Made offline and never used here yet: bring it in first.
            match self.store.tokens().await?.into_iter().find(|t| t.id == id) {
                Some(row) => {
                    self.fleet().tokens.insert(row.hash, row);
                }
                None => {
                    return Err(Failure::not_found("unknown_token", format!("no token {id:?}")));
                }
            }
        }
        self.commit_apply(vec![
            Mutation::RevokeToken(id.to_owned()),
            audit(actor, "token.revoke", id, serde_json::json!({})),
        ])
        .await?;
        let fleet = self.fleet();
        let row =
            fleet.tokens.values().find(|t| t.id == id).ok_or_else(|| Failure::internal("token"))?;
        Ok(token_info(row))
    }

    // ----- audit -----

    /// The audit log, newest first.
    pub async fn audit(&self, before: Option<i64>, limit: u32) -> Outcome<Vec<api::AuditEntry>> {
        let rows = self.store.audit(before, limit.clamp(1, 1000)).await?;
        Ok(rows
            .into_iter()
            .map(|r| api::AuditEntry {
                seq: r.seq,
                at: api::rfc3339(r.row.at),
                actor: r.row.actor,
                role: r.row.role,
                action: r.row.action,
                target: r.row.target,
                detail: serde_json::from_str(&r.row.detail).unwrap_or_default(),
            })
            .collect())
    }

    // ----- device API -----

    /// A device checks in: records what it runs and answers with an offer or nothing.
    pub async fn checkin(
        &self,
        device: usize,
        report: api::CheckIn,
    ) -> Outcome<api::CheckInResponse> {
        let running = report.image_id.as_deref().map(parse_image_id).transpose()?;
        if report.last_outcome.as_ref().is_some_and(|o| o.len() > 128) {
            return Err(Failure::bad("too_long", "last_outcome is at most 128 bytes"));
        }
        if let Some(slot_b) = &report.slot_b {
            if !SLOT_B_STATES.contains(&slot_b.state.as_str()) {
                return Err(Failure::bad(
                    "bad_slot_b",
                    format!("slot_b.state {:?}: one of {}", slot_b.state, SLOT_B_STATES.join(", ")),
                ));
            }
            slot_b.image_id.as_deref().map(parse_image_id).transpose()?;
        }
        // Stored in canonical (lowercase) form.
        let slot_b = report.slot_b.as_ref().map(|s| api::SlotBReport {
            state: s.state.clone(),
            image_id: s.image_id.as_deref().and_then(ImageId::from_hex).map(|i| i.to_string()),
        });
        let now = now_ms();
        let (offer, changed) = {
            let mut fleet = self.fleet();
            let d = &mut fleet.devices[device];
            d.row.last_seen = Some(now);
            d.seen_dirty = true;
            let slot_b = slot_b.as_ref().and_then(|s| serde_json::to_string(s).ok());
            let confirmed = running.is_some() && !report.trial;
            let changed = d.unsaved
                || d.running != running
                || d.row.confirmed != confirmed
                || d.row.slot_b != slot_b
                || d.row.last_outcome != report.last_outcome
                || d.row.release_sequence != report.release_sequence;
            let mut persist = None;
            if changed {
                let mut row = d.row.clone();
                row.running = running.map(|i| i.to_string());
                row.confirmed = confirmed;
                row.slot_b = slot_b;
                row.last_outcome = report.last_outcome.clone();
                row.release_sequence = report.release_sequence;
                let m = Mutation::PutDevice(row);
                fleet.apply(&m).map_err(Failure::internal)?;
                if confirmed && let Some(image) = running {
                    fleet.record_outcome(device, image, "confirmed");
                }
                persist = Some(m);
            }
            let d = &fleet.devices[device];
            let (env, board) = (d.row.environment.clone(), d.row.board.clone());
            let moved = if changed && fleet.in_rollout(device) {
                fleet.evaluate(&env, &board)
            } else {
                None
            };
            let offer = offer_for(&fleet, device);
            (offer, persist.into_iter().chain(moved).collect::<Vec<_>>())
        };
        self.commit_report(device, changed).await?;
        self.metrics.checkins.fetch_add(1, Ordering::Relaxed);
        if offer.is_some() {
            self.metrics.offers.fetch_add(1, Ordering::Relaxed);
        }
        Ok(api::CheckInResponse { offer })
    }

    /// An image file for a device: only its environment's current image for its board.
    pub fn device_image(&self, device: usize, id: &str) -> Outcome<Bytes> {
        let image = parse_image_id(id)?;
        {
            let fleet = self.fleet();
            let d = &fleet.devices[device];
            let allowed =
                fleet.current(&d.row.environment, &d.row.board).is_some_and(|r| r.image == image);
            if !allowed {
                return Err(Failure::not_found(
                    "not_offered",
                    format!(
                        "image {} is not released to this device's environment and board",
                        short(image)
                    ),
                ));
            }
        }
        self.image_file(id)
    }

    /// A device reports an update step.
    pub async fn device_event(&self, device: usize, event: api::NewEvent) -> Outcome<()> {
        let image = parse_image_id(&event.image_id)?;
        if event.detail.as_ref().is_some_and(|d| d.len() > 512) {
            return Err(Failure::bad("too_long", "detail is at most 512 bytes"));
        }
        // Reports are about images the server stored (and so could have offered): they feed
        // the promotion gate.
        if !self.fleet().images.contains_key(&image) {
            return Err(unknown_image(image));
        }
        let batch = {
            let mut fleet = self.fleet();
            let d = &fleet.devices[device];
            // The same step again (the device did not hear that it arrived): not logged twice,
            // but applied again, which is harmless and may now count (say, a confirmation of
            // an image released since).
            let repeat = d.last_event == Some((image, event.kind)) && !d.unsaved;
            let mut row = d.row.clone();
            let (env, board) = (row.environment.clone(), row.board.clone());
            let kind = event.kind.as_str();
            match event.kind {
                api::EventKind::Booted => {
                    row.running = Some(image.to_string());
                    row.confirmed = false;
                }
                api::EventKind::Confirmed => {
                    row.running = Some(image.to_string());
                    row.confirmed = true;
                }
                api::EventKind::Reverted | api::EventKind::Failed => {
                    row.failed_image = Some(image.to_string());
                    if d.running == Some(image) {
                        // Reverted away from it: slot A holds the previous image again, which
                        // the next check-in names.
                        row.running = None;
                    }
                }
                api::EventKind::Downloading | api::EventKind::Installed => {}
            }
            let mut batch = Vec::new();
            if !repeat {
                batch.push(Mutation::InsertEvent(EventRow {
                    device: row.id.clone(),
                    at: now_ms(),
                    image_id: image.to_string(),
                    kind: kind.to_owned(),
                    detail: event.detail.clone(),
                }));
            }
            if row != d.row {
                let m = Mutation::PutDevice(row);
                fleet.apply(&m).map_err(Failure::internal)?;
                batch.push(m);
            }
            fleet.record_outcome(device, image, kind);
            if fleet.in_rollout(device) {
                batch.extend(fleet.evaluate(&env, &board));
            }
            batch
        };
        batch.iter().for_each(log_move);
        if !batch.is_empty() {
            self.commit_report(device, batch).await?;
        }
        // Only once it is on disk: a report that failed to save must be taken again.
        self.fleet().devices[device].last_event = Some((image, event.kind));
        self.metrics.events.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Commits what a device report changed in the model; if that fails, marks the device so
    /// that its next report writes its row again (the model is already ahead of the disk).
    async fn commit_report(&self, device: usize, batch: Vec<Mutation>) -> Outcome<()> {
        let result = self.writer.commit(batch).await;
        if result.is_err() {
            self.fleet().devices[device].unsaved = true;
        }
        Ok(result?)
    }

    /// Writes last-seen times that changed (called periodically: a check-in that changes
    /// nothing else is not worth an fsync of its own).
    pub async fn flush_seen(&self) -> Outcome<usize> {
        let seen: Vec<(String, i64)> = {
            let mut fleet = self.fleet();
            fleet
                .devices
                .iter_mut()
                .filter(|d| d.seen_dirty)
                .filter_map(|d| {
                    d.seen_dirty = false;
                    Some((d.row.id.clone(), d.row.last_seen?))
                })
                .collect()
        };
        let n = seen.len();
        if n > 0 {
            self.writer.commit(vec![Mutation::Seen(seen)]).await?;
        }
        Ok(n)
    }

    /// The Prometheus text exposition of the counters and rollout states.
    pub fn render_metrics(&self) -> String {
        crate::metrics::render(&self.metrics, &self.fleet())
    }
}

/// What a device may say slot B holds.
pub const SLOT_B_STATES: [&str; 5] = ["empty", "unknown", "previous", "downloading", "pending"];

/// Filters for [`Service::devices`].
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    /// Environment.
    pub environment: Option<String>,
    /// Board.
    pub board: Option<String>,
    /// State name.
    pub state: Option<String>,
    /// Running image id.
    pub image: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// Makes a new management token row; returns the secret too.
pub fn new_token_row(role: Role, name: &str) -> std::io::Result<(String, TokenRow)> {
    let (token, hash) = auth::generate(auth::MANAGEMENT_PREFIX)?;
    let row = TokenRow {
        id: auth::token_id(&hash),
        hash,
        role: role.as_str().to_owned(),
        name: name.to_owned(),
        created_at: now_ms(),
        revoked: false,
    };
    Ok((token, row))
}

/// A fresh Ed25519 key pair: (seed, public key).
pub fn new_key_pair() -> std::io::Result<([u8; 32], [u8; 32])> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    Ok((seed, public))
}

fn log_move(m: &Mutation) {
    if let Mutation::UpdateRollout { environment, sequence, state, stage, reason, .. } = m {
        tracing::info!(release = %format!("{environment}/{sequence}"), %state, stage, reason = reason.as_deref().unwrap_or(""), "rollout moved");
    }
}

fn decode_statement(hex_text: Option<&str>) -> Outcome<Option<Vec<u8>>> {
    hex_text
        .map(|h| {
            hex::decode(h)
                .map_err(|e| Failure::bad("bad_statement", format!("statement is not hex: {e}")))
        })
        .transpose()
}

fn unknown_image(id: ImageId) -> Failure {
    Failure::not_found("unknown_image", format!("no image {id}"))
}

fn unknown_environment(name: &str) -> Failure {
    Failure::not_found("unknown_environment", format!("no environment {name:?}"))
}

fn find_release<'a>(fleet: &'a Fleet, env: &str, sequence: u64) -> Outcome<&'a Release> {
    fleet.environment(env).ok_or_else(|| unknown_environment(env))?;
    fleet.releases_of(env).iter().find(|r| r.row.sequence == sequence).ok_or_else(|| {
        Failure::not_found("unknown_release", format!("no release {env}/{sequence}"))
    })
}

fn pick_board(fleet: &Fleet, env: &str, board: Option<&str>) -> Outcome<String> {
    let boards = fleet.released_boards(env);
    match board {
        Some(b) if boards.contains(&b) => Ok(b.to_owned()),
        Some(b) => Err(Failure::new(
            FailureKind::Conflict,
            "nothing_to_roll_back",
            format!("{env} has no release for board {b}"),
        )),
        None => match boards.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(Failure::new(
                FailureKind::Conflict,
                "nothing_to_roll_back",
                format!("{env} has no releases"),
            )),
            several => Err(Failure::bad(
                "board_required",
                format!("{env} has releases for boards {}; say which", several.join(", ")),
            )),
        },
    }
}

/// The offer for device `d`, if any.
fn offer_for(fleet: &Fleet, d: usize) -> Option<api::Offer> {
    let device = &fleet.devices[d];
    let release = fleet.current(&device.row.environment, &device.row.board)?;
    if device.running == Some(release.image) || device.failed == Some(release.image) {
        return None;
    }
    if !rollout::offered(&position(release), &release.cutoffs, device.bucket) {
        return None;
    }
    let image = fleet.images.get(&release.image)?;
    Some(api::Offer {
        image_id: image.row.id.clone(),
        size: image.row.size,
        release: release.statement_hex.to_string(),
        environment: release.row.environment.clone(),
        sequence: release.row.sequence,
        url: format!("/api/v1/device/images/{}", image.row.id),
    })
}

fn position(r: &Release) -> rollout::Position {
    rollout::Position { state: r.state, stage: r.row.stage as usize, reason: None }
}

/// Where a device stands.
pub fn device_state(fleet: &Fleet, d: &Device) -> api::DeviceState {
    use api::DeviceState::*;
    if d.row.last_seen.is_none() {
        return Unseen;
    }
    let Some(release) = fleet.current(&d.row.environment, &d.row.board) else { return Current };
    if d.confirmed(release.image) {
        return Current;
    }
    if d.failed == Some(release.image) {
        return Failed;
    }
    if rollout::offered(&position(release), &release.cutoffs, d.bucket) {
        Updating
    } else {
        Waiting
    }
}

fn image_info(image: &Image) -> api::ImageInfo {
    api::ImageInfo {
        summary: (*image.summary).clone(),
        file_sha256: image.row.file_sha256.clone(),
        uploaded_at: api::rfc3339(image.row.uploaded_at),
        uploaded_by: image.row.uploaded_by.clone(),
    }
}

fn environment_info(fleet: &Fleet, env: &Environment) -> api::EnvironmentInfo {
    let name = &env.row.name;
    api::EnvironmentInfo {
        name: name.clone(),
        upstream: env.row.upstream.clone(),
        promote_min_confirmed: env.row.promote_min_confirmed,
        failure_threshold: env.row.failure_threshold,
        stages: env.row.stages.clone(),
        advance_ratio: env.row.advance_ratio,
        release_public_key: hex::encode(env.key.to_bytes()),
        release_key_id: env.key.id().to_string(),
        server_holds_key: env.signing.is_some(),
        next_sequence: fleet.next_sequence(name),
        devices: fleet.devices.iter().filter(|d| &d.row.environment == name).count() as u64,
        current: fleet
            .released_boards(name)
            .into_iter()
            .filter_map(|b| fleet.current(name, b))
            .map(|r| release_info(fleet, r))
            .collect(),
    }
}

fn release_info(fleet: &Fleet, r: &Release) -> api::ReleaseInfo {
    let version = fleet.images.get(&r.image).map(|i| i.row.version.clone()).unwrap_or_default();
    api::ReleaseInfo {
        environment: r.row.environment.clone(),
        sequence: r.row.sequence,
        image_id: r.row.image_id.clone(),
        board: r.row.board.clone(),
        version,
        kind: r.kind,
        statement: r.statement_hex.to_string(),
        created_at: api::rfc3339(r.row.created_at),
        created_by: r.row.created_by.clone(),
        state: r.state,
        reason: r.row.reason.clone(),
        stage: r.row.stage as usize,
        stages: fleet
            .environment(&r.row.environment)
            .map(|e| e.row.stages.clone())
            .unwrap_or_default(),
        progress: fleet.progress(r),
    }
}

fn device_info(fleet: &Fleet, d: &Device) -> api::DeviceInfo {
    api::DeviceInfo {
        id: d.row.id.clone(),
        board: d.row.board.clone(),
        environment: d.row.environment.clone(),
        state: device_state(fleet, d),
        running: d.row.running.clone(),
        confirmed: d.row.confirmed,
        failed_image: d.row.failed_image.clone(),
        slot_b: d.row.slot_b.as_deref().and_then(|s| serde_json::from_str(s).ok()),
        last_outcome: d.row.last_outcome.clone(),
        release_sequence: d.row.release_sequence,
        bucket: d.bucket,
        enrolled_at: api::rfc3339(d.row.enrolled_at),
        last_seen: d.row.last_seen.map(api::rfc3339),
    }
}

fn token_info(row: &TokenRow) -> api::TokenInfo {
    api::TokenInfo {
        id: row.id.clone(),
        role: Role::parse(&row.role).unwrap_or(Role::Qa),
        name: row.name.clone(),
        created_at: api::rfc3339(row.created_at),
        revoked: row.revoked,
    }
}
