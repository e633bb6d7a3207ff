//! Persistence: what the server keeps across restarts, behind the [`Store`] trait, chosen at run
//! time by its URL (`sqlite://PATH`, the embedded default, or `postgres://...`).
//!
//! The server decides on its in-memory model ([`crate::fleet::Fleet`]). Every change is a list
//! of typed [`Mutation`]s, a *batch*, committed all-or-nothing before it is acknowledged and
//! applied to the model; only this module's SQL encodes them. Batches from concurrent requests
//! are committed together, one transaction for many (see [`crate::journal`]).
//!
//! Some mutations carry a *precondition* that the database checks as it writes (a release
//! sequence must be the next one, a rollout must still be where the deciding replica saw it,
//! an id must be new). A batch whose precondition fails is left out of the transaction alone
//! and reported as a [`Conflict`]: the decisions that must happen once happen once, whichever
//! of several replicas races for them.
//!
//! On a store shared by several replicas (PostgreSQL), each transaction also appends its
//! batches to a change log, numbered without gaps in commit order, so every replica applies the
//! same changes in the same order to its model (see [`Store::changes`]).

pub mod copy;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

use std::sync::Arc;

pub use rows::*;

/// A storage failure (the database, not the request, is at fault).
#[derive(Clone, Debug, thiserror::Error)]
#[error("storage: {message}")]
pub struct StoreError {
    message: String,
    unreachable: bool,
}

impl StoreError {
    /// A failure of the store's contents or of its use (a fault: requests answer 500).
    pub fn new(message: impl Into<String>) -> Self {
        StoreError { message: message.into(), unreachable: false }
    }

    /// The database could not be reached (down, restarting, unreachable): requests answer
    /// 503 and may be tried again; nothing was changed.
    pub fn unreachable(&self) -> bool {
        self.unreachable
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unreachable = is_unreachable(&e);
        StoreError { message: e.to_string(), unreachable }
    }
}

/// Whether `e` says the database is out of reach (rather than that a statement failed):
/// connection and pool failures, and PostgreSQL's "admin shutdown" and "connection exception"
/// classes (57P, 08).
fn is_unreachable(e: &sqlx::Error) -> bool {
    use sqlx::Error::*;
    match e {
        Io(_) | Tls(_) | PoolTimedOut | PoolClosed | WorkerCrashed => true,
        Database(d) => d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        let unreachable = matches!(&e, sqlx::migrate::MigrateError::Execute(inner) if StoreError::from(clone_kind(inner)).unreachable);
        StoreError { message: format!("migrating the schema: {e}"), unreachable }
    }
}

/// Enough of an sqlx error to classify it (sqlx errors are not `Clone`).
fn clone_kind(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// Why the database refused a batch's precondition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The thing to create exists already (an id, a name, a token hash).
    #[error("{0} exists already")]
    Exists(String),
    /// Another release took the sequence number.
    #[error("release sequence {sequence} of {environment} is no longer the next one")]
    SequenceTaken {
        /// The environment.
        environment: String,
        /// The sequence the batch wanted.
        sequence: u64,
    },
    /// The row changed since the decision was made (an environment's settings, say).
    #[error("{0} changed meanwhile")]
    Changed(String),
    /// The rollout moved since the decision was made.
    #[error("release {environment}/{sequence} changed meanwhile")]
    Moved {
        /// The environment.
        environment: String,
        /// The release.
        sequence: u64,
    },
}

/// What a commit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The change log position of this transaction (0 if nothing was written).
    pub position: u64,
    /// Per batch, in order: committed, or left out because of a conflict.
    pub results: Vec<Result<(), Conflict>>,
}

/// One transaction's batches as the change log holds them.
#[derive(Clone, Debug)]
pub struct Change {
    /// Its position.
    pub position: u64,
    /// The batches it committed.
    pub batches: Vec<Vec<Mutation>>,
}

/// Persistence for the server, chosen at run time. Implementations commit each batch
/// all-or-nothing and durably (acknowledged writes survive a `kill -9`).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Whether other processes may commit to this store while we run (then the model follows
    /// the change log).
    fn shared(&self) -> bool;

    /// Everything the in-memory model is built from, and the change log position it reflects.
    async fn load(&self) -> Result<Snapshot, StoreError>;

    /// Commits `batches` in one transaction (see [`Committed`]).
    async fn commit(&self, batches: &[Vec<Mutation>]) -> Result<Committed, StoreError>;

    /// What other processes committed after `position`, oldest first, at most `limit`
    /// transactions; `None` if the log no longer holds all of them (reload the model).
    async fn changes(&self, position: u64, limit: u32) -> Result<Option<Vec<Change>>, StoreError>;

    /// The newest change log position.
    async fn position(&self) -> Result<u64, StoreError>;

    /// A channel that ticks when another process may have committed (PostgreSQL's
    /// `LISTEN/NOTIFY`); `None` where no other process can.
    fn notifications(&self) -> Option<tokio::sync::watch::Receiver<u64>>;

    /// Audit entries older than `before` (all if `None`), newest first, at most `limit`.
    async fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;

    /// A device's events, newest first, at most `limit`.
    async fn events(&self, device: &DeviceId, limit: u32) -> Result<Vec<EventRow>, StoreError>;

    /// Every management token (listing sees tokens made offline too).
    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;

    /// A token by the hash of its secret: tokens made by `ota-server token create` while the
    /// server runs are found here.
    async fn token(&self, hash: [u8; 32]) -> Result<Option<TokenRow>, StoreError>;

    /// Opens a dashboard session.
    async fn create_session(&self, session: &SessionRow) -> Result<(), StoreError>;

    /// A dashboard session by the hash of its secret, unless it expired before `now`.
    async fn session(
        &self,
        hash: [u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionRow>, StoreError>;

    /// Ends a dashboard session.
    async fn end_session(&self, hash: [u8; 32]) -> Result<(), StoreError>;

    /// Answers when the database is reachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Every row, histories included (for `ota-server copy-store`).
    async fn dump(&self) -> Result<Dump, StoreError>;

    /// Writes `dump` into this store, which must be empty, in one transaction.
    async fn restore(&self, dump: &Dump) -> Result<(), StoreError>;

    /// Closes the connections (SQLite checkpoints its write-ahead log).
    async fn close(&self);
}

/// Where the database is, from its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL server (the URL as given, password included).
    Postgres(String),
}

impl Database {
    /// Parses a database URL; `None` means the data folder's `ota.db`.
    pub fn from_url(url: Option<&str>, data: &std::path::Path) -> Result<Database, String> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Database::Sqlite(data.join("ota.db")));
        };
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(format!("database URL {url:?} names no file"));
            }
            return Ok(Database::Sqlite(path.into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        Err(format!(
            "database URL {:?}: expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
            redact(url)
        ))
    }

    /// The URL without its password, for messages and logs.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite://{}", path.display()),
            Database::Postgres(url) => redact(url),
        }
    }

    /// Opens the store: the schema is migrated to this release's (creating the database
    /// first if `create`).
    pub async fn open(&self, create: bool) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Database::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(path, create).await?),
            Database::Postgres(url) => Arc::new(postgres::PgStore::open(url).await?),
        })
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // The last `@` ends the credentials (a password may hold one).
    match rest.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let data = std::path::Path::new("/var/lib/ota");
        assert_eq!(Database::from_url(None, data), Ok(Database::Sqlite(data.join("ota.db"))));
        assert_eq!(
            Database::from_url(Some("sqlite:///tmp/x.db"), data),
            Ok(Database::Sqlite("/tmp/x.db".into()))
        );
        let pg = Database::from_url(Some("postgres://ota:pw@db:5432/ota"), data).unwrap();
        assert_eq!(pg.describe(), "postgres://ota:***@db:5432/ota");
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        let err = Database::from_url(Some("mysql://root:pw@h/x"), data).unwrap_err();
        assert!(err.contains("expected sqlite://PATH or postgres://") && !err.contains("pw"));
    }
}
