//! PostgreSQL: the store several replicas share.
//!
//! Every writing transaction first takes the next change log position by updating the single
//! `log_head` row, which also orders it after every other writer (the row stays locked until
//! it commits); it then writes its batches and appends them, as JSON, to `changes` under that
//! position, and `NOTIFY`s the other replicas. Positions are therefore gapless and in commit
//! order, and a replica that applies the log in order ends with the same model as everyone
//! else. Preconditions are checked by the statements themselves (see `sql.rs`), inside that
//! order, so the decisions that must happen once happen once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;

use super::*;

mod queries {
    crate::store::sql::queries!(sqlx::Postgres);
}

/// The versioned schema (`migrations/postgres`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel commits are announced on.
const CHANNEL: &str = "ota_changes";

/// Log entries kept: at least this many, and all of the last [`KEEP_LOG_MS`]. A replica further
/// behind than that reloads its model.
const KEEP_LOG_ENTRIES: i64 = 10_000;
const KEEP_LOG_MS: i64 = 10 * 60 * 1000;

/// A PostgreSQL database.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    notified: watch::Receiver<u64>,
    listener: tokio::task::JoinHandle<()>,
    commits: AtomicU64,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects to `url` and migrates the schema to this release's (several replicas starting
    /// at once take turns: sqlx holds an advisory lock while it migrates).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::new(format!("database URL {}: {e}", redact(url))))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::new(format!("cannot connect to {}: {e}", redact(url))))?;
        MIGRATOR.run(&pool).await?;
        let (tx, notified) = watch::channel(0);
        let listener = tokio::spawn(listen(pool.clone(), tx));
        Ok(PgStore { pool, notified, listener, commits: AtomicU64::new(0) })
    }

    /// The connection pool (tests and benchmarks inspect the database through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Forwards `NOTIFY`s of new commits; reconnects after the database comes back.
async fn listen(pool: PgPool, tx: watch::Sender<u64>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if listener.listen(CHANNEL).await.is_err() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let seq = n.payload().parse().unwrap_or(0);
                    tx.send_modify(|v| *v = (*v).max(seq));
                }
                // The connection was lost (and will be re-made by the next call): whatever was
                // announced meanwhile is unknown, so wake the replica to catch up.
                Ok(None) => tx.send_modify(|_| {}),
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One consistent view of every table and the log position it matches.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let position: i64 =
            sqlx::query_scalar("SELECT seq FROM log_head WHERE id = 1").fetch_one(&mut *tx).await?;
        let mut snapshot = queries::load(&mut tx).await?;
        tx.commit().await?;
        snapshot.position = position as u64;
        Ok(snapshot)
    }

    async fn commit(&self, batches: &[Vec<Mutation>]) -> Result<Committed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let position: i64 =
            sqlx::query_scalar("UPDATE log_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
                .fetch_one(&mut *tx)
                .await?;
        let results = queries::apply_batches(&mut tx, batches).await?;
        let effective: Vec<&Vec<Mutation>> =
            batches.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(b, _)| b).collect();
        if effective.is_empty() {
            // Nothing written: give the position back.
            tx.rollback().await?;
            return Ok(Committed { position: 0, results });
        }
        let body = serde_json::to_string(&effective)
            .map_err(|e| StoreError::new(format!("encoding the change log: {e}")))?;
        sqlx::query("INSERT INTO changes (seq, at, body) VALUES ($1, $2, $3)")
            .bind(position)
            .bind(Timestamp::now().0)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(position.to_string())
            .execute(&mut *tx)
            .await?;
        if self.commits.fetch_add(1, Ordering::Relaxed) % 512 == 511 {
            sqlx::query("DELETE FROM changes WHERE seq < $1 AND at < $2")
                .bind(position - KEEP_LOG_ENTRIES)
                .bind(Timestamp::now().0 - KEEP_LOG_MS)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Committed { position: position as u64, results })
    }

    async fn changes(&self, position: u64, limit: u32) -> Result<Option<Vec<Change>>, StoreError> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, body FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(position as i64)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        let mut changes = Vec::with_capacity(rows.len());
        for (expected, (seq, body)) in (position + 1..).zip(rows) {
            if seq as u64 != expected {
                // Pruned (or never kept): the caller reloads.
                return Ok(None);
            }
            let batches = serde_json::from_str(&body).map_err(|e| {
                StoreError::new(format!("change log entry {seq} does not decode: {e}"))
            })?;
            changes.push(Change { position: seq as u64, batches });
        }
        // No row after `position`: nothing was committed since (the newest entries are never
        // pruned).
        Ok(Some(changes))
    }

    async fn position(&self) -> Result<u64, StoreError> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq as u64)
    }

    fn notifications(&self) -> Option<watch::Receiver<u64>> {
        Some(self.notified.clone())
    }

    async fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        queries::audit(&mut *self.pool.acquire().await?, before, limit).await
    }

    async fn events(&self, device: &DeviceId, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        queries::events(&mut *self.pool.acquire().await?, device, limit).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        queries::tokens(&mut *self.pool.acquire().await?).await
    }

    async fn token(&self, hash: [u8; 32]) -> Result<Option<TokenRow>, StoreError> {
        queries::token(&mut *self.pool.acquire().await?, hash).await
    }

    async fn create_session(&self, session: &SessionRow) -> Result<(), StoreError> {
        queries::create_session(&mut *self.pool.acquire().await?, session).await
    }

    async fn session(
        &self,
        hash: [u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionRow>, StoreError> {
        queries::session(&mut *self.pool.acquire().await?, hash, now).await
    }

    async fn end_session(&self, hash: [u8; 32]) -> Result<(), StoreError> {
        queries::end_session(&mut *self.pool.acquire().await?, hash).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn dump(&self) -> Result<Dump, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let dump = queries::dump(&mut tx).await?;
        tx.commit().await?;
        Ok(dump)
    }

    async fn restore(&self, dump: &Dump) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE log_head").execute(&mut *tx).await?;
        if !queries::is_empty(&mut tx).await? {
            return Err(StoreError::new("the target database is not empty"));
        }
        queries::restore(&mut tx, dump).await?;
        // Audit entries kept their positions: new ones continue after them.
        sqlx::query("SELECT setval(pg_get_serial_sequence('audit', 'seq'), GREATEST((SELECT MAX(seq) FROM audit), 1))")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close(&self) {
        self.listener.abort();
        self.pool.close().await;
    }
}
