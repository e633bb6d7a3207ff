//! The embedded default: one SQLite database file (WAL, `synchronous=FULL`), through sqlx.
//! One server process owns it, so there is no change log: the model follows this process's own
//! commits, numbered by a counter.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::*;

mod queries {
    crate::store::sql::queries!(sqlx::Sqlite);
}

/// The versioned schema (`migrations/sqlite`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// This process's commits so far: the "change log position" of a store nobody else
    /// writes while we run.
    commits: AtomicU64,
}

impl SqliteStore {
    /// Opens (creating if `create`) the database at `path` and migrates its schema to this
    /// release's.
    pub async fn open(path: &Path, create: bool) -> Result<Self, StoreError> {
        if !create && !path.exists() {
            return Err(StoreError::new(format!(
                "no database at {} (run `ota-server init --data DIR` first)",
                path.display()
            )));
        }
        if create {
            crate::private_files::create_private_file(path)
                .map_err(|e| StoreError::new(format!("cannot create {}: {e}", path.display())))?;
        }
        let loose = crate::private_files::loosened(path)
            .map_err(|e| StoreError::new(format!("cannot read {}: {e}", path.display())))?;
        if !loose.is_empty() {
            return Err(StoreError::new(crate::private_files::refusal(path, &loose)));
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged (kill -9 and power loss).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(false);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        adopt_unversioned(&pool).await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore { pool, commits: AtomicU64::new(0) })
    }
}

/// A database made before the schema was versioned (ota-server 0.1) has its tables but no
/// migration history: the first migration is written to adopt it as it is, once a column that
/// 0.1's own upgrade added is there too.
async fn adopt_unversioned(pool: &SqlitePool) -> Result<(), StoreError> {
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(pool)
            .await?;
    let has = |t: &str| tables.iter().any(|n| n == t);
    if !has("releases") || has("_sqlx_migrations") {
        return Ok(());
    }
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('releases')")
        .fetch_all(pool)
        .await?;
    if !columns.iter().any(|c| c == "halted") {
        sqlx::raw_sql("ALTER TABLE releases ADD COLUMN halted INTEGER NOT NULL DEFAULT 0")
            .execute(pool)
            .await?;
    }
    tracing::info!("adopting a database made before versioned migrations");
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn shared(&self) -> bool {
        false
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut snapshot = queries::load(&mut tx).await?;
        tx.commit().await?;
        snapshot.position = self.commits.load(Ordering::SeqCst);
        Ok(snapshot)
    }

    async fn commit(&self, batches: &[Vec<Mutation>]) -> Result<Committed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let results = queries::apply_batches(&mut tx, batches).await?;
        tx.commit().await?;
        let position = if results.iter().any(Result::is_ok) {
            self.commits.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.commits.load(Ordering::SeqCst)
        };
        Ok(Committed { position, results })
    }

    async fn changes(&self, _: u64, _: u32) -> Result<Option<Vec<Change>>, StoreError> {
        Ok(Some(Vec::new()))
    }

    async fn position(&self) -> Result<u64, StoreError> {
        Ok(self.commits.load(Ordering::SeqCst))
    }

    fn notifications(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
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
        let dump = queries::dump(&mut tx).await?;
        tx.commit().await?;
        Ok(dump)
    }

    async fn restore(&self, dump: &Dump) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if !queries::is_empty(&mut tx).await? {
            return Err(StoreError::new("the target database is not empty"));
        }
        queries::restore(&mut tx, dump).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: usize) -> DeviceRow {
        let mut token_hash = [0u8; 32];
        token_hash[..8].copy_from_slice(&(n as u64).to_le_bytes());
        DeviceRow::enrolled(
            DeviceId::new(format!("d-{n}")).unwrap(),
            BoardName::new("microbit").unwrap(),
            EnvironmentName::new("test").unwrap(),
            token_hash,
            Timestamp(1),
        )
    }

    #[tokio::test]
    async fn enrollment_and_last_seen_in_batches_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ota.db"), true).await.unwrap();
        let devices: Vec<DeviceRow> = (0..2_345).map(device).collect();
        let done = store.commit(&[vec![Mutation::EnrollDevices(devices.clone())]]).await.unwrap();
        assert_eq!(done.results, vec![Ok(())]);
        // The same ids again conflict, and leave nothing behind.
        let again =
            store.commit(&[vec![Mutation::EnrollDevices(devices[..10].to_vec())]]).await.unwrap();
        assert!(matches!(again.results[0], Err(Conflict::Exists(_))));
        // Every other device was seen, at a time that names it.
        let seen: Vec<(DeviceId, Timestamp)> = (0..2_345)
            .step_by(2)
            .map(|n| (devices[n].id.clone(), Timestamp(1_000 + n as i64)))
            .collect();
        store.commit(&[vec![Mutation::Seen(seen)]]).await.unwrap();
        store.close().await;
        let store = SqliteStore::open(&dir.path().join("ota.db"), false).await.unwrap();
        let snap = store.load().await.unwrap();
        assert_eq!(snap.devices.len(), 2_345);
        for d in &snap.devices {
            let n: i64 = d.id.as_str()[2..].parse().unwrap();
            assert_eq!(d.last_seen, (n % 2 == 0).then_some(Timestamp(1_000 + n)), "{}", d.id);
        }
    }
}
