//! The embedded default: one SQLite database file (WAL, `synchronous=FULL`), through sqlx.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{
    AuditRecord, AuditRow, BuildKeyRow, DeviceRow, EnvironmentRow, EventRow, ImageRow, Mutation,
    ReleaseRow, Snapshot, Store, StoreError, TokenRow,
};

/// The schema. Every statement is idempotent so opening an existing database is harmless.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, file_sha256 TEXT NOT NULL, board TEXT NOT NULL, version TEXT NOT NULL,
    security_counter INTEGER NOT NULL, size INTEGER NOT NULL, summary TEXT NOT NULL,
    uploaded_at INTEGER NOT NULL, uploaded_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS environments (
    name TEXT PRIMARY KEY, upstream TEXT, promote_min_confirmed INTEGER NOT NULL,
    failure_threshold REAL NOT NULL, stages TEXT NOT NULL, advance_ratio REAL NOT NULL,
    public_key BLOB NOT NULL, private_key BLOB, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    environment TEXT NOT NULL, sequence INTEGER NOT NULL, image_id TEXT NOT NULL,
    board TEXT NOT NULL, kind TEXT NOT NULL, statement BLOB NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL, state TEXT NOT NULL,
    stage INTEGER NOT NULL, reason TEXT, halted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (environment, sequence));
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, board TEXT NOT NULL, environment TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE, enrolled_at INTEGER NOT NULL, last_seen INTEGER,
    running TEXT, confirmed INTEGER NOT NULL, failed_image TEXT, slot_b TEXT,
    last_outcome TEXT, release_sequence INTEGER);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, at INTEGER NOT NULL,
    image_id TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device, seq);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, role TEXT NOT NULL, name TEXT NOT NULL,
    created_at INTEGER NOT NULL, revoked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS build_keys (public_key BLOB PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
    role TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL);
";

/// A SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn err(e: sqlx::Error) -> StoreError {
    StoreError(e.to_string())
}

fn key32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| StoreError(format!("{what} in the database is not 32 bytes")))
}

impl SqliteStore {
    /// Opens (creating if `create`) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path, create: bool) -> Result<Self, StoreError> {
        if !create && !path.exists() {
            return Err(StoreError(format!(
                "no database at {} (run `ota-server init --data DIR` first)",
                path.display()
            )));
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(err)?
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged (kill -9 and power loss).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(false);
        let pool =
            SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(err)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(err)?;
        // Columns added after a table was first made.
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('releases')")
                .fetch_all(&pool)
                .await
                .map_err(err)?;
        if !columns.iter().any(|c| c == "halted") {
            sqlx::raw_sql("ALTER TABLE releases ADD COLUMN halted INTEGER NOT NULL DEFAULT 0")
                .execute(&pool)
                .await
                .map_err(err)?;
        }
        Ok(SqliteStore { pool })
    }

    /// Closes the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn stages_text(stages: &[u8]) -> String {
    stages.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
}

fn parse_stages(text: &str) -> Result<Vec<u8>, StoreError> {
    text.split(',')
        .map(|s| s.parse().map_err(|_| StoreError(format!("bad stages {text:?} in the database"))))
        .collect()
}

impl Store for SqliteStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::default();
        for r in sqlx::query("SELECT * FROM images").fetch_all(&self.pool).await.map_err(err)? {
            snap.images.push(ImageRow {
                id: r.get("id"),
                file_sha256: r.get("file_sha256"),
                board: r.get("board"),
                version: r.get("version"),
                security_counter: r.get::<i64, _>("security_counter") as u32,
                size: r.get::<i64, _>("size") as u64,
                summary: r.get("summary"),
                uploaded_at: r.get("uploaded_at"),
                uploaded_by: r.get("uploaded_by"),
            });
        }
        for r in sqlx::query("SELECT * FROM environments ORDER BY position")
            .fetch_all(&self.pool)
            .await
            .map_err(err)?
        {
            let private: Option<Vec<u8>> = r.get("private_key");
            snap.environments.push(EnvironmentRow {
                name: r.get("name"),
                upstream: r.get("upstream"),
                promote_min_confirmed: r.get::<i64, _>("promote_min_confirmed") as u32,
                failure_threshold: r.get("failure_threshold"),
                stages: parse_stages(r.get("stages"))?,
                advance_ratio: r.get("advance_ratio"),
                public_key: key32(r.get("public_key"), "an environment key")?,
                private_key: private.map(|k| key32(k, "an environment key")).transpose()?,
                position: r.get("position"),
            });
        }
        for r in sqlx::query("SELECT * FROM releases ORDER BY environment, sequence")
            .fetch_all(&self.pool)
            .await
            .map_err(err)?
        {
            snap.releases.push(ReleaseRow {
                environment: r.get("environment"),
                sequence: r.get::<i64, _>("sequence") as u64,
                image_id: r.get("image_id"),
                board: r.get("board"),
                kind: r.get("kind"),
                statement: r.get("statement"),
                created_at: r.get("created_at"),
                created_by: r.get("created_by"),
                state: r.get("state"),
                stage: r.get::<i64, _>("stage") as u32,
                reason: r.get("reason"),
                halted: r.get::<i64, _>("halted") != 0,
            });
        }
        for r in sqlx::query("SELECT * FROM devices").fetch_all(&self.pool).await.map_err(err)? {
            snap.devices.push(DeviceRow {
                id: r.get("id"),
                board: r.get("board"),
                environment: r.get("environment"),
                token_hash: key32(r.get("token_hash"), "a token hash")?,
                enrolled_at: r.get("enrolled_at"),
                last_seen: r.get("last_seen"),
                running: r.get("running"),
                confirmed: r.get::<i64, _>("confirmed") != 0,
                failed_image: r.get("failed_image"),
                slot_b: r.get("slot_b"),
                last_outcome: r.get("last_outcome"),
                release_sequence: r.get::<Option<i64>, _>("release_sequence").map(|s| s as u64),
            });
        }
        for r in sqlx::query("SELECT * FROM tokens").fetch_all(&self.pool).await.map_err(err)? {
            snap.tokens.push(token_row(&r)?);
        }
        for r in sqlx::query("SELECT * FROM build_keys").fetch_all(&self.pool).await.map_err(err)? {
            snap.build_keys.push(BuildKeyRow {
                public_key: key32(r.get("public_key"), "a build key")?,
                name: r.get("name"),
            });
        }
        for r in sqlx::query(
            "SELECT DISTINCT device, image_id, kind FROM events \
             WHERE kind IN ('confirmed', 'reverted', 'failed')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?
        {
            snap.outcomes.push((r.get("device"), r.get("image_id"), r.get("kind")));
        }
        Ok(snap)
    }

    async fn commit(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        for m in batch {
            apply(&mut tx, m).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    async fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?")
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| AuditRecord {
                seq: r.get("seq"),
                row: AuditRow {
                    at: r.get("at"),
                    actor: r.get("actor"),
                    role: r.get("role"),
                    action: r.get("action"),
                    target: r.get("target"),
                    detail: r.get("detail"),
                },
            })
            .collect())
    }

    async fn events(&self, device: &str, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM events WHERE device = ? ORDER BY seq DESC LIMIT ?")
            .bind(device)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                device: r.get("device"),
                at: r.get("at"),
                image_id: r.get("image_id"),
                kind: r.get("kind"),
                detail: r.get("detail"),
            })
            .collect())
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tokens").fetch_all(&self.pool).await.map_err(err)?;
        rows.iter().map(token_row).collect()
    }

    async fn token(&self, hash: [u8; 32]) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = ?")
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.as_ref().map(token_row).transpose()
    }
}

fn token_row(r: &sqlx::sqlite::SqliteRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: r.get("id"),
        hash: key32(r.get("hash"), "a token hash")?,
        role: r.get("role"),
        name: r.get("name"),
        created_at: r.get("created_at"),
        revoked: r.get::<i64, _>("revoked") != 0,
    })
}

async fn apply(tx: &mut sqlx::SqliteConnection, m: &Mutation) -> Result<(), sqlx::Error> {
    match m {
        Mutation::InsertImage(i) => {
            sqlx::query("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&i.id)
                .bind(&i.file_sha256)
                .bind(&i.board)
                .bind(&i.version)
                .bind(i64::from(i.security_counter))
                .bind(i.size as i64)
                .bind(&i.summary)
                .bind(i.uploaded_at)
                .bind(&i.uploaded_by)
                .execute(&mut *tx)
                .await?;
        }
        Mutation::PutEnvironment(e) => {
            sqlx::query("INSERT OR REPLACE INTO environments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&e.name)
                .bind(&e.upstream)
                .bind(i64::from(e.promote_min_confirmed))
                .bind(e.failure_threshold)
                .bind(stages_text(&e.stages))
                .bind(e.advance_ratio)
                .bind(&e.public_key[..])
                .bind(e.private_key.as_ref().map(|k| k.to_vec()))
                .bind(e.position)
                .execute(&mut *tx)
                .await?;
        }
        Mutation::InsertRelease(r) => {
            sqlx::query("INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&r.environment)
                .bind(r.sequence as i64)
                .bind(&r.image_id)
                .bind(&r.board)
                .bind(&r.kind)
                .bind(&r.statement)
                .bind(r.created_at)
                .bind(&r.created_by)
                .bind(&r.state)
                .bind(i64::from(r.stage))
                .bind(&r.reason)
                .bind(i64::from(r.halted))
                .execute(&mut *tx)
                .await?;
        }
        Mutation::UpdateRollout { environment, sequence, state, stage, reason, automatic } => {
            sqlx::query(
                "UPDATE releases SET state = ?, stage = MAX(stage, ?), reason = ?, \
                 halted = CASE ? WHEN 'halted' THEN 1 WHEN 'completed' THEN 0 ELSE halted END \
                 WHERE environment = ? AND sequence = ? \
                 AND (? = 0 OR state IN ('rolling', 'completed'))",
            )
            .bind(state)
            .bind(i64::from(*stage))
            .bind(reason)
            .bind(state)
            .bind(environment)
            .bind(*sequence as i64)
            .bind(i64::from(*automatic))
            .execute(&mut *tx)
            .await?;
        }
        Mutation::PutDevice(d) => {
            sqlx::query(
                "INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&d.id)
            .bind(&d.board)
            .bind(&d.environment)
            .bind(&d.token_hash[..])
            .bind(d.enrolled_at)
            .bind(d.last_seen)
            .bind(&d.running)
            .bind(i64::from(d.confirmed))
            .bind(&d.failed_image)
            .bind(&d.slot_b)
            .bind(&d.last_outcome)
            .bind(d.release_sequence.map(|s| s as i64))
            .execute(&mut *tx)
            .await?;
        }
        Mutation::Seen(list) => {
            // Hundreds of rows per statement: a statement per row costs a round trip to the
            // database thread each, which at 100,000 devices was a tenth of the server's CPU.
            for chunk in list.chunks(500) {
                let values = vec!["(?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "UPDATE devices SET last_seen = seen.column2 FROM (VALUES {values}) AS seen \
                     WHERE devices.id = seen.column1"
                );
                let mut query = sqlx::query(&sql);
                for (id, at) in chunk {
                    query = query.bind(id).bind(at);
                }
                query.execute(&mut *tx).await?;
            }
        }
        Mutation::InsertEvent(e) => {
            sqlx::query(
                "INSERT INTO events (device, at, image_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&e.device)
            .bind(e.at)
            .bind(&e.image_id)
            .bind(&e.kind)
            .bind(&e.detail)
            .execute(&mut *tx)
            .await?;
        }
        Mutation::InsertToken(t) => {
            sqlx::query("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?)")
                .bind(&t.id)
                .bind(&t.hash[..])
                .bind(&t.role)
                .bind(&t.name)
                .bind(t.created_at)
                .bind(i64::from(t.revoked))
                .execute(&mut *tx)
                .await?;
        }
        Mutation::RevokeToken(id) => {
            sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Mutation::InsertBuildKey(k) => {
            sqlx::query("INSERT OR REPLACE INTO build_keys VALUES (?, ?)")
                .bind(&k.public_key[..])
                .bind(&k.name)
                .execute(&mut *tx)
                .await?;
        }
        Mutation::Audit(a) => {
            sqlx::query(
                "INSERT INTO audit (at, actor, role, action, target, detail) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(a.at)
            .bind(&a.actor)
            .bind(&a.role)
            .bind(&a.action)
            .bind(&a.target)
            .bind(&a.detail)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: usize) -> DeviceRow {
        let mut token_hash = [0u8; 32];
        token_hash[..8].copy_from_slice(&(n as u64).to_le_bytes());
        DeviceRow::enrolled(&format!("d-{n}"), "microbit", "test", token_hash, 1)
    }

    #[tokio::test]
    async fn last_seen_in_batches_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ota.db"), true).await.unwrap();
        let devices: Vec<Mutation> = (0..1_234).map(|n| Mutation::PutDevice(device(n))).collect();
        store.commit(&devices).await.unwrap();
        // Every other device was seen, at a time that names it.
        let seen: Vec<(String, i64)> =
            (0..1_234).step_by(2).map(|n| (format!("d-{n}"), 1_000 + n as i64)).collect();
        store.commit(&[Mutation::Seen(seen)]).await.unwrap();
        store.close().await;
        let store = SqliteStore::open(&dir.path().join("ota.db"), false).await.unwrap();
        let snap = store.load().await.unwrap();
        assert_eq!(snap.devices.len(), 1_234);
        for d in &snap.devices {
            let n: i64 = d.id[2..].parse().unwrap();
            let expected = (n % 2 == 0).then_some(1_000 + n);
            assert_eq!(d.last_seen, expected, "{}", d.id);
        }
    }
}
