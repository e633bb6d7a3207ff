//! The server's operations, one file per area, over the in-memory [`Fleet`], the [`Store`]
//! (through the [`Journal`]) and the [`Blobs`]. Plain async functions that take typed requests
//! and return typed answers or a [`Failure`]: the HTTP layer only maps requests to calls and
//! results to responses, and tests call these without HTTP.
//!
//! Consistency: an operation decides on the model, commits its mutations (with its audit entry)
//! through the journal, which applies them to the model before the operation answers; so what
//! is acknowledged is durable and visible, and nothing half-done is ever seen. Management
//! operations first catch up with every replica's commits ([`Journal::sync`]) and run one at a
//! time in this process; races between replicas are settled by the store's preconditions.

mod anomalies;
mod device_api;
mod device_pages;
mod devices;
mod environments;
mod images;
mod patches;
mod releases;
mod sessions;
mod tokens;
pub mod views;

pub use device_api::{Download, PRESIGNED_FOR};
pub use environments::new_key_pair;
pub use sessions::{SESSION_LIFETIME, SignedIn};
pub use tokens::new_token_row;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use boards::Catalog;

use crate::auth::Actor;
use crate::blobs::Blobs;
use crate::error::{Failure, Outcome};
use crate::fleet::Fleet;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::store::{AuditAction, AuditRow, Mutation, Store, Timestamp};

/// Settings the service runs with.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest image file accepted, bytes.
    pub max_image_size: usize,
    /// How devices download image files.
    pub downloads: crate::config::Downloads,
    /// Largest patch offered, as a share of the full image (0: none).
    pub patch_max_ratio: f64,
}

/// The server.
pub struct Service {
    fleet: Arc<Mutex<Fleet>>,
    store: Arc<dyn Store>,
    journal: Journal,
    blobs: Arc<Blobs>,
    catalog: Catalog,
    /// One management operation at a time in this process.
    management: tokio::sync::Mutex<()>,
    /// One patch made at a time in this process: a check-in that needs one another is making
    /// waits for it instead of making it again, and patch making takes at most one core.
    patching: tokio::sync::Mutex<()>,
    /// Counters.
    pub metrics: Metrics,
    /// Limits.
    pub limits: Limits,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("store", &self.store.kind()).finish_non_exhaustive()
    }
}

impl Service {
    /// Loads the model from `store`, starts the journal, and commits the rollout moves the
    /// devices' state calls for.
    pub async fn start(
        store: Arc<dyn Store>,
        blobs: Blobs,
        catalog: Catalog,
        limits: Limits,
    ) -> anyhow::Result<Arc<Self>> {
        let snapshot = store.load().await?;
        let (fleet, moves) = Fleet::load(snapshot)?;
        let fleet = Arc::new(Mutex::new(fleet));
        let journal = Journal::start(store.clone(), fleet.clone());
        let service = Arc::new(Service {
            fleet,
            store,
            journal,
            blobs: Arc::new(blobs),
            catalog,
            management: tokio::sync::Mutex::new(()),
            patching: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            limits,
        });
        service.commit_moves(moves).await;
        Ok(service)
    }

    /// The model, locked (never held across an await).
    pub fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The image files.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Catches up with everything any replica acknowledged: a management request sees every
    /// acknowledged write, whichever replica took it.
    pub async fn sync(&self) -> Outcome<()> {
        Ok(self.journal.sync().await?)
    }

    /// Catches up with every replica, then holds the management lock.
    async fn manage(&self) -> Outcome<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.management.lock().await;
        self.journal.sync().await?;
        Ok(guard)
    }

    /// Commits rollout moves, each on its own with its audit entry: a move another replica made
    /// first is dropped (with its entry), so each move is made, and audited, once.
    async fn commit_moves(&self, moves: Vec<crate::store::Mutation>) {
        for m in moves {
            self.commit_move(m).await;
        }
    }

    /// Commits one rollout move; false if another move from the same place won the race.
    async fn commit_move(&self, m: crate::store::Mutation) -> bool {
        let Some(entry) = move_audit(&m) else { return true };
        match self.journal.commit(vec![m.clone(), entry]).await {
            Ok(()) => log_move(&m),
            Err(crate::journal::CommitError::Conflict(_)) => return false,
            Err(e) => tracing::warn!(error = %e, "rollout move not written (re-derived later)"),
        }
        true
    }

    /// Re-evaluates the current release of (`env`, `board`) and commits its move, if any.
    ///
    /// Two reports at once may each compute a move from the same place; one commits, the other
    /// conflicts. The loser's report may call for more than the winner's move (it saw one more
    /// confirmation), so it evaluates again from where the winner left the rollout, rather
    /// than leaving the rest to the next housekeeping tick or the next report.
    async fn reevaluate(&self, env: &str, board: &str) {
        const RACES: usize = 8;
        for _ in 0..RACES {
            let Some(moved) = self.fleet().evaluate(env, board) else { return };
            if self.commit_move(moved).await {
                return;
            }
        }
    }

    /// Runs what keeps the server current in the background, every `every`: writes last
    /// check-in times, and re-evaluates rollouts (in case a move was lost: a replica that
    /// crashed between a report and its move).
    pub fn housekeeping(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = service.flush_seen().await {
                    tracing::warn!(error = %e.message, "last check-in times not written");
                }
                let moves = service.fleet().evaluate_all();
                service.commit_moves(moves).await;
            }
        })
    }

    /// Whether the server can serve: its database and its image store answer, and its model
    /// is current.
    pub async fn ready(&self) -> Outcome<()> {
        self.store.ping().await.map_err(Failure::from)?;
        self.blobs.store().ping().await.map_err(Failure::from)?;
        self.journal.sync().await.map_err(Failure::from)
    }

    /// The Prometheus text of the counters and rollout states.
    pub fn render_metrics(&self) -> String {
        crate::metrics::render(&self.metrics, &self.fleet())
    }
}

/// An audit entry for what `actor` did.
fn audit(
    actor: &Actor,
    action: AuditAction,
    target: impl ToString,
    detail: serde_json::Value,
) -> Mutation {
    Mutation::Audit(AuditRow {
        at: Timestamp::now(),
        actor: actor.name.clone(),
        role: actor.role,
        action,
        target: target.to_string(),
        detail,
    })
}

/// The server itself, as the actor of what it does on its own (rollout moves, anomalies).
fn server_actor() -> Actor {
    Actor { name: "server".to_owned(), role: ota_proto::Role::Admin }
}

/// The audit entry of a move the rollout engine makes: actor `server`.
fn move_audit(m: &Mutation) -> Option<Mutation> {
    let Mutation::MoveRollout { environment, sequence, from, to, reason } = m else { return None };
    let action = match to.state {
        crate::store::RolloutState::Completed => AuditAction::RolloutComplete,
        crate::store::RolloutState::Halted => AuditAction::RolloutHalt,
        _ => AuditAction::RolloutAdvance,
    };
    let server = server_actor();
    let detail = serde_json::json!({
        "from": {"state": from.state, "stage": from.stage},
        "to": {"state": to.state, "stage": to.stage},
        "reason": reason,
    });
    Some(audit(&server, action, format!("{environment}/{sequence}"), detail))
}

fn log_move(m: &Mutation) {
    if let Mutation::MoveRollout { environment, sequence, to, reason, .. } = m {
        tracing::info!(
            release = %format!("{environment}/{sequence}"),
            state = %to.state,
            stage = to.stage,
            reason = reason.as_deref().unwrap_or(""),
            "rollout moves"
        );
    }
}

fn unknown_environment(name: &str) -> Failure {
    Failure::not_found("unknown_environment", format!("no environment {name:?}"))
}

fn unknown_image(id: crate::store::ImageId) -> Failure {
    Failure::not_found("unknown_image", format!("no image {id}"))
}
