//! The one path from a decision to its effect on the model.
//!
//! A request decides on the model, then hands its batch of mutations here. One task owns the
//! writing: batches that arrive while a transaction is on its way to disk are committed
//! together in the next one (group commit: a thousand devices reporting at once cost a few
//! fsyncs, not a thousand), and each caller still waits until its own batch is durable. The
//! task then applies what was committed to the model, in the store's commit order, and only
//! then answers: what a client was told is both on disk and visible.
//!
//! Where other replicas share the store, the same task follows the store's change log (woken
//! by `LISTEN/NOTIFY`, and every [`POLL`] in case a notification was lost), so every replica
//! applies every replica's changes in one order. [`Journal::sync`] catches up with everything
//! committed anywhere so far: management requests call it before they decide, so they decide
//! on what every replica acknowledged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::fleet::Fleet;
use crate::store::{Conflict, Mutation, Store, StoreError};

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 512;

/// How often a replica looks at the change log when no notification came.
pub const POLL: Duration = Duration::from_millis(250);

/// Change log entries fetched at a time.
const FETCH: u32 = 1_000;

/// Why a batch was not committed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CommitError {
    /// Its precondition failed (another request or replica got there first).
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Job {
    Commit(Vec<Mutation>, oneshot::Sender<Result<(), CommitError>>),
    Sync(oneshot::Sender<Result<(), StoreError>>),
}

/// A handle to the journal task.
#[derive(Clone, Debug)]
pub struct Journal {
    jobs: mpsc::Sender<Job>,
    /// Whether other processes write the store (else there is nothing to catch up with).
    shared: bool,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Commit(..) => "Commit",
            Job::Sync(_) => "Sync",
        })
    }
}

impl Journal {
    /// Starts the task that commits to `store` and keeps `fleet` current.
    pub fn start(store: Arc<dyn Store>, fleet: Arc<Mutex<Fleet>>) -> Journal {
        let (jobs, rx) = mpsc::channel(4096);
        let shared = store.shared();
        tokio::spawn(Task { store, fleet }.run(rx));
        Journal { jobs, shared }
    }

    /// Commits `batch` (together with whatever else is waiting); returns once it is durable
    /// and applied to the model.
    pub async fn commit(&self, batch: Vec<Mutation>) -> Result<(), CommitError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Commit(batch, tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Applies everything committed to the store, by any replica, before this call.
    pub async fn sync(&self) -> Result<(), StoreError> {
        if !self.shared {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Sync(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::new("the journal has stopped")
}

struct Task {
    store: Arc<dyn Store>,
    fleet: Arc<Mutex<Fleet>>,
}

impl Task {
    fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let shared = self.store.shared();
        let mut notified = self.store.notifications();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = rx.recv() => {
                    let Some(first) = job else { break };
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    self.process(group).await;
                }
                alive = changed(&mut notified) => {
                    if !alive {
                        notified = None;
                    }
                    self.follow().await;
                }
                _ = poll.tick(), if shared => self.follow().await,
            }
        }
    }

    /// Follows the change log; a failure is logged (the next poll tries again).
    async fn follow(&self) {
        if let Err(e) = self.catch_up().await {
            tracing::warn!(error = %e, "cannot follow the change log");
        }
    }

    async fn process(&self, group: Vec<Job>) {
        let mut commits = Vec::new();
        let mut syncs = Vec::new();
        for job in group {
            match job {
                Job::Commit(batch, reply) => commits.push((batch, reply)),
                Job::Sync(reply) => syncs.push(reply),
            }
        }
        if !commits.is_empty() {
            let batches: Vec<Vec<Mutation>> = commits.iter().map(|(b, _)| b.clone()).collect();
            match self.commit(&batches).await {
                Ok(results) => {
                    for ((_, reply), result) in commits.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) if commits.len() > 1 && !e.unreachable() => {
                    // One bad batch must not fail its neighbours: commit each on its own.
                    tracing::warn!(error = %e, batches = commits.len(), "group commit failed");
                    for (batch, reply) in commits {
                        let result = match self.commit(std::slice::from_ref(&batch)).await {
                            Ok(mut r) => r.pop().unwrap_or(Ok(())),
                            Err(e) => Err(e.into()),
                        };
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    for (_, reply) in commits {
                        let _ = reply.send(Err(e.clone().into()));
                    }
                }
            }
        }
        if !syncs.is_empty() {
            let result = self.catch_up().await;
            for reply in syncs {
                let _ = reply.send(result.clone());
            }
        }
    }

    /// Commits `batches` in one transaction and applies what was committed.
    async fn commit(
        &self,
        batches: &[Vec<Mutation>],
    ) -> Result<Vec<Result<(), CommitError>>, StoreError> {
        let committed = self.store.commit(batches).await?;
        if committed.position != 0 {
            let next = self.fleet().position + 1;
            if committed.position == next {
                let mut fleet = self.fleet();
                for (batch, result) in batches.iter().zip(&committed.results) {
                    if result.is_ok() {
                        apply(&mut fleet, batch);
                    }
                }
                fleet.position = committed.position;
            } else {
                // Other replicas committed in between: take everything in log order, ours
                // included.
                self.catch_up().await?;
            }
        }
        Ok(committed.results.into_iter().map(|r| r.map_err(CommitError::from)).collect())
    }

    /// Applies what other processes committed; reloads the model if the log no longer holds
    /// all of it.
    async fn catch_up(&self) -> Result<(), StoreError> {
        if !self.store.shared() {
            return Ok(());
        }
        loop {
            let position = self.fleet().position;
            match self.store.changes(position, FETCH).await? {
                Some(changes) if changes.is_empty() => return Ok(()),
                Some(changes) => {
                    let mut fleet = self.fleet();
                    for change in changes {
                        if change.position != fleet.position + 1 {
                            break;
                        }
                        for batch in &change.batches {
                            apply(&mut fleet, batch);
                        }
                        fleet.position = change.position;
                    }
                }
                None => {
                    self.reload().await?;
                    return Ok(());
                }
            }
        }
    }

    /// Rebuilds the model from a snapshot, keeping this process's unwritten check-in times.
    async fn reload(&self) -> Result<(), StoreError> {
        tracing::warn!("the change log moved past this replica: reloading the model");
        let snapshot = self.store.load().await?;
        let (mut fresh, _moves) =
            Fleet::load(snapshot).map_err(|e| StoreError::new(e.to_string()))?;
        let mut fleet = self.fleet();
        for old in fleet.devices.iter().filter(|d| d.seen_dirty) {
            if let Some(&i) = fresh.device_by_id.get(&old.row.id) {
                let d = &mut fresh.devices[i];
                d.row.last_seen = d.row.last_seen.max(old.row.last_seen);
                d.seen_dirty = true;
            }
        }
        *fleet = fresh;
        Ok(())
    }
}

/// Waits for a notification; `false` once the sender is gone. Never resolves without a channel.
async fn changed(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn apply(fleet: &mut Fleet, batch: &[Mutation]) {
    for m in batch {
        if let Err(e) = fleet.apply(m) {
            // The store took it, so it is in every replica's future: log, and go on with the
            // rest (the row stays as the database holds it).
            tracing::error!(error = %e, "a committed change does not apply to the model");
        }
    }
}
