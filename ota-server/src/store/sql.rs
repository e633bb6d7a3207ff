//! The SQL both backends share: the same tables (their column types differ only where the
//! engines do: `BOOLEAN`/`BYTEA` in PostgreSQL, `INTEGER`/`BLOB` in SQLite), the same
//! statements (`$1`-style parameters, which sqlx's SQLite driver also takes), and the one place
//! where typed rows become columns and columns become typed rows.
//!
//! The statements are written once in [`queries!`], which stamps them out for each engine's
//! connection type (sqlx's executors are concrete per engine).

use std::str::FromStr;

use super::*;

/// A column that holds something the model cannot use (a hand-edited or corrupted database).
fn bad(table: &str, column: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("{table}.{column} holds {value}, which is not usable"))
}

fn parse<T: FromStr>(table: &str, column: &str, text: String) -> Result<T, StoreError> {
    text.parse().map_err(|_| bad(table, column, format!("{text:?}")))
}

fn opt<T: FromStr>(
    table: &str,
    column: &str,
    text: Option<String>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| parse(table, column, t)).transpose()
}

fn key32(table: &str, column: &str, bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    let len = bytes.len();
    bytes.try_into().map_err(|_| bad(table, column, format!("{len} bytes (not 32)")))
}

fn uint<T: TryFrom<i64>>(table: &str, column: &str, value: i64) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| bad(table, column, value))
}

/// Stage percentages as stored: `5,25,100`.
pub fn stages_text(stages: &[u8]) -> String {
    stages.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
}

fn parse_stages(text: &str) -> Result<Vec<u8>, StoreError> {
    text.split(',')
        .map(|s| s.trim().parse().map_err(|_| bad("environments", "stages", format!("{text:?}"))))
        .collect()
}

/// The name an enum is stored under (its wire name).
pub fn name<T: Into<&'static str>>(value: T) -> &'static str {
    value.into()
}

/// A `ui_sessions` row.
#[derive(sqlx::FromRow)]
pub struct SessionSql {
    hash: Vec<u8>,
    token_hash: Vec<u8>,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<SessionSql> for SessionRow {
    type Error = StoreError;
    fn try_from(r: SessionSql) -> Result<Self, StoreError> {
        const T: &str = "ui_sessions";
        Ok(SessionRow {
            hash: key32(T, "hash", r.hash)?,
            token_hash: key32(T, "token_hash", r.token_hash)?,
            created_at: Timestamp(r.created_at),
            expires_at: Timestamp(r.expires_at),
        })
    }
}

/// An `images` row.
#[derive(sqlx::FromRow)]
pub struct ImageSql {
    id: String,
    file_sha256: String,
    board: String,
    version: String,
    security_counter: i64,
    size: i64,
    summary: String,
    uploaded_at: i64,
    uploaded_by: String,
}

impl TryFrom<ImageSql> for ImageRow {
    type Error = StoreError;
    fn try_from(r: ImageSql) -> Result<Self, StoreError> {
        const T: &str = "images";
        let summary = serde_json::from_str(&r.summary).map_err(|e| bad(T, "summary", e))?;
        Ok(ImageRow {
            id: parse(T, "id", r.id)?,
            file_sha256: parse(T, "file_sha256", r.file_sha256)?,
            board: parse(T, "board", r.board)?,
            version: r.version,
            security_counter: uint(T, "security_counter", r.security_counter)?,
            size: uint(T, "size", r.size)?,
            summary,
            uploaded_at: Timestamp(r.uploaded_at),
            uploaded_by: r.uploaded_by,
        })
    }
}

/// An `environments` row.
#[derive(sqlx::FromRow)]
pub struct EnvironmentSql {
    name: String,
    upstream: Option<String>,
    promote_min_confirmed: i64,
    failure_threshold: f64,
    stages: String,
    advance_ratio: f64,
    public_key: Vec<u8>,
    private_key: Option<Vec<u8>>,
    position: i64,
}

impl TryFrom<EnvironmentSql> for EnvironmentRow {
    type Error = StoreError;
    fn try_from(r: EnvironmentSql) -> Result<Self, StoreError> {
        const T: &str = "environments";
        Ok(EnvironmentRow {
            name: parse(T, "name", r.name)?,
            upstream: opt(T, "upstream", r.upstream)?,
            rollout: RolloutSettings {
                stages: parse_stages(&r.stages)?,
                failure_threshold: r.failure_threshold,
                advance_ratio: r.advance_ratio,
                promote_min_confirmed: uint(T, "promote_min_confirmed", r.promote_min_confirmed)?,
            },
            public_key: PublicKey(key32(T, "public_key", r.public_key)?),
            private_key: r.private_key.map(|k| key32(T, "private_key", k).map(Seed)).transpose()?,
            position: r.position,
        })
    }
}

/// A `releases` row.
#[derive(sqlx::FromRow)]
pub struct ReleaseSql {
    environment: String,
    sequence: i64,
    image_id: String,
    board: String,
    kind: String,
    statement: Vec<u8>,
    created_at: i64,
    created_by: String,
    state: String,
    stage: i64,
    reason: Option<String>,
    halted: bool,
}

impl TryFrom<ReleaseSql> for ReleaseRow {
    type Error = StoreError;
    fn try_from(r: ReleaseSql) -> Result<Self, StoreError> {
        const T: &str = "releases";
        Ok(ReleaseRow {
            environment: parse(T, "environment", r.environment)?,
            sequence: uint(T, "sequence", r.sequence)?,
            image_id: parse(T, "image_id", r.image_id)?,
            board: parse(T, "board", r.board)?,
            kind: parse(T, "kind", r.kind)?,
            statement: r.statement,
            created_at: Timestamp(r.created_at),
            created_by: r.created_by,
            state: parse(T, "state", r.state)?,
            stage: uint(T, "stage", r.stage)?,
            reason: r.reason,
            halted: r.halted,
        })
    }
}

/// A `devices` row.
#[derive(sqlx::FromRow)]
pub struct DeviceSql {
    id: String,
    board: String,
    environment: String,
    token_hash: Vec<u8>,
    enrolled_at: i64,
    last_seen: Option<i64>,
    running: Option<String>,
    confirmed: bool,
    failed_image: Option<String>,
    slot_b: Option<String>,
    last_outcome: Option<String>,
    release_sequence: Option<i64>,
}

impl TryFrom<DeviceSql> for DeviceRow {
    type Error = StoreError;
    fn try_from(r: DeviceSql) -> Result<Self, StoreError> {
        const T: &str = "devices";
        let slot_b = r
            .slot_b
            .map(|s| serde_json::from_str(&s).map_err(|e| bad(T, "slot_b", e)))
            .transpose()?;
        Ok(DeviceRow {
            id: parse(T, "id", r.id)?,
            board: parse(T, "board", r.board)?,
            environment: parse(T, "environment", r.environment)?,
            token_hash: key32(T, "token_hash", r.token_hash)?,
            enrolled_at: Timestamp(r.enrolled_at),
            last_seen: r.last_seen.map(Timestamp),
            reported: Reported {
                running: opt(T, "running", r.running)?,
                confirmed: r.confirmed,
                slot_b,
                last_outcome: r.last_outcome,
                release_sequence: r
                    .release_sequence
                    .map(|s| uint(T, "release_sequence", s))
                    .transpose()?,
            },
            failed_image: opt(T, "failed_image", r.failed_image)?,
        })
    }
}

/// A `tokens` row.
#[derive(sqlx::FromRow)]
pub struct TokenSql {
    id: String,
    hash: Vec<u8>,
    role: String,
    name: String,
    created_at: i64,
    revoked: bool,
}

impl TryFrom<TokenSql> for TokenRow {
    type Error = StoreError;
    fn try_from(r: TokenSql) -> Result<Self, StoreError> {
        const T: &str = "tokens";
        Ok(TokenRow {
            id: parse(T, "id", r.id)?,
            hash: key32(T, "hash", r.hash)?,
            role: parse(T, "role", r.role)?,
            // Names made before names were checked may hold anything: shown, never refused.
            name: TokenName::new(r.name.clone())
                .or_else(|_| {
                    TokenName::new(
                        r.name.chars().filter(|c| !c.is_control()).take(64).collect::<String>(),
                    )
                })
                .or_else(|_| TokenName::new("unnamed"))
                .map_err(|e| bad(T, "name", e))?,
            created_at: Timestamp(r.created_at),
            revoked: r.revoked,
        })
    }
}

/// A `build_keys` row.
#[derive(sqlx::FromRow)]
pub struct BuildKeySql {
    public_key: Vec<u8>,
    name: String,
}

impl TryFrom<BuildKeySql> for BuildKeyRow {
    type Error = StoreError;
    fn try_from(r: BuildKeySql) -> Result<Self, StoreError> {
        Ok(BuildKeyRow {
            public_key: PublicKey(key32("build_keys", "public_key", r.public_key)?),
            name: r.name,
        })
    }
}

/// An `events` row.
#[derive(sqlx::FromRow)]
pub struct EventSql {
    device: String,
    at: i64,
    image_id: String,
    kind: String,
    detail: Option<String>,
}

impl TryFrom<EventSql> for EventRow {
    type Error = StoreError;
    fn try_from(r: EventSql) -> Result<Self, StoreError> {
        const T: &str = "events";
        Ok(EventRow {
            device: parse(T, "device", r.device)?,
            at: Timestamp(r.at),
            image_id: parse(T, "image_id", r.image_id)?,
            kind: EventKind::parse(&r.kind)
                .ok_or_else(|| bad(T, "kind", format!("{:?}", r.kind)))?,
            detail: r.detail,
        })
    }
}

/// An `audit` row.
#[derive(sqlx::FromRow)]
pub struct AuditSql {
    seq: i64,
    at: i64,
    actor: String,
    role: String,
    action: String,
    target: String,
    detail: String,
}

impl TryFrom<AuditSql> for AuditRecord {
    type Error = StoreError;
    fn try_from(r: AuditSql) -> Result<Self, StoreError> {
        const T: &str = "audit";
        Ok(AuditRecord {
            seq: r.seq,
            row: AuditRow {
                at: Timestamp(r.at),
                actor: r.actor,
                role: parse(T, "role", r.role)?,
                action: parse(T, "action", r.action)?,
                target: r.target,
                detail: serde_json::from_str(&r.detail).map_err(|e| bad(T, "detail", e))?,
            },
        })
    }
}

/// A `patches` row.
#[derive(sqlx::FromRow)]
pub struct PatchSql {
    source: String,
    target: String,
    sha256: String,
    size: i64,
    created_at: i64,
}

impl TryFrom<PatchSql> for PatchRow {
    type Error = StoreError;
    fn try_from(r: PatchSql) -> Result<Self, StoreError> {
        const T: &str = "patches";
        Ok(PatchRow {
            source: parse(T, "source", r.source)?,
            target: parse(T, "target", r.target)?,
            sha256: parse(T, "sha256", r.sha256)?,
            size: uint(T, "size", r.size)?,
            created_at: Timestamp(r.created_at),
        })
    }
}

/// A `patch_failures` row.
#[derive(sqlx::FromRow)]
pub struct PatchFailureSql {
    device: String,
    image_id: String,
    at: i64,
    detail: Option<String>,
}

impl TryFrom<PatchFailureSql> for PatchFailureRow {
    type Error = StoreError;
    fn try_from(r: PatchFailureSql) -> Result<Self, StoreError> {
        const T: &str = "patch_failures";
        Ok(PatchFailureRow {
            device: parse(T, "device", r.device)?,
            image_id: parse(T, "image_id", r.image_id)?,
            at: Timestamp(r.at),
            detail: r.detail,
        })
    }
}

/// An `(device, image_id, kind)` outcome.
#[derive(sqlx::FromRow)]
pub struct OutcomeSql {
    device: String,
    image_id: String,
    kind: String,
}

impl TryFrom<OutcomeSql> for (DeviceId, ImageId, EventKind) {
    type Error = StoreError;
    fn try_from(r: OutcomeSql) -> Result<Self, StoreError> {
        const T: &str = "events";
        Ok((
            parse(T, "device", r.device)?,
            parse(T, "image_id", r.image_id)?,
            EventKind::parse(&r.kind).ok_or_else(|| bad(T, "kind", format!("{:?}", r.kind)))?,
        ))
    }
}

pub const SELECT_IMAGES: &str = "SELECT id, file_sha256, board, version, security_counter, size, \
    summary, uploaded_at, uploaded_by FROM images";
pub const SELECT_ENVIRONMENTS: &str = "SELECT name, upstream, promote_min_confirmed, \
    failure_threshold, stages, advance_ratio, public_key, private_key, position FROM environments \
    ORDER BY position";
pub const SELECT_RELEASES: &str = "SELECT environment, sequence, image_id, board, kind, statement, \
    created_at, created_by, state, stage, reason, halted FROM releases ORDER BY environment, sequence";
pub const SELECT_DEVICES: &str = "SELECT id, board, environment, token_hash, enrolled_at, last_seen, \
    running, confirmed, failed_image, slot_b, last_outcome, release_sequence FROM devices";
pub const SELECT_TOKENS: &str = "SELECT id, hash, role, name, created_at, revoked FROM tokens";
pub const SELECT_BUILD_KEYS: &str = "SELECT public_key, name FROM build_keys";
pub const SELECT_OUTCOMES: &str = "SELECT DISTINCT device, image_id, kind FROM events \
    WHERE kind IN ('confirmed', 'reverted', 'failed')";
pub const SELECT_LAST_EVENTS: &str = "SELECT device, image_id, kind FROM events \
    WHERE seq IN (SELECT MAX(seq) FROM events GROUP BY device)";
pub const SELECT_AUDIT: &str = "SELECT seq, at, actor, role, action, target, detail FROM audit";
pub const SELECT_PATCHES: &str = "SELECT source, target, sha256, size, created_at FROM patches";
pub const SELECT_PATCH_FAILURES: &str = "SELECT device, image_id, at, detail FROM patch_failures";
pub const SELECT_EVENTS: &str = "SELECT device, at, image_id, kind, detail FROM events";

/// Rows per multi-row `INSERT` (PostgreSQL takes at most 65,535 parameters a statement).
pub const ROWS_PER_INSERT: usize = 1_000;

/// Stamps out the shared statements for one engine's connection type `$db`.
macro_rules! queries {
    ($db:ty) => {
        use sqlx::{Connection as _, QueryBuilder};

        use crate::store::sql::*;
        use crate::store::*;

        type Conn = <$db as sqlx::Database>::Connection;

        fn unique(e: &sqlx::Error) -> bool {
            matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
        }

        async fn all<R, T>(conn: &mut Conn, sql: &str) -> Result<Vec<T>, StoreError>
        where
            R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            T: TryFrom<R, Error = StoreError>,
        {
            sqlx::query_as::<_, R>(sql).fetch_all(&mut *conn).await?.into_iter().map(T::try_from).collect()
        }

        /// Everything the model is built from (its `position` is the caller's to set).
        pub async fn load(conn: &mut Conn) -> Result<Snapshot, StoreError> {
            Ok(Snapshot {
                position: 0,
                images: all::<ImageSql, _>(conn, SELECT_IMAGES).await?,
                environments: all::<EnvironmentSql, _>(conn, SELECT_ENVIRONMENTS).await?,
                releases: all::<ReleaseSql, _>(conn, SELECT_RELEASES).await?,
                devices: all::<DeviceSql, _>(conn, SELECT_DEVICES).await?,
                tokens: all::<TokenSql, _>(conn, SELECT_TOKENS).await?,
                build_keys: all::<BuildKeySql, _>(conn, SELECT_BUILD_KEYS).await?,
                outcomes: all::<OutcomeSql, _>(conn, SELECT_OUTCOMES).await?,
                patches: all::<PatchSql, _>(conn, SELECT_PATCHES).await?,
                patch_failures: all::<PatchFailureSql, _>(conn, SELECT_PATCH_FAILURES).await?,
                last_events: all::<OutcomeSql, _>(conn, SELECT_LAST_EVENTS).await?,
            })
        }

        /// Every row, histories included.
        pub async fn dump(conn: &mut Conn) -> Result<Dump, StoreError> {
            let snapshot = load(conn).await?;
            let events = all::<EventSql, _>(conn, &format!("{SELECT_EVENTS} ORDER BY seq")).await?;
            let audit = all::<AuditSql, _>(conn, &format!("{SELECT_AUDIT} ORDER BY seq")).await?;
            Ok(Dump { snapshot, events, audit })
        }

        /// Audit entries before `before`, newest first.
        pub async fn audit(conn: &mut Conn, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
            let sql = format!("{SELECT_AUDIT} WHERE seq < $1 ORDER BY seq DESC LIMIT $2");
            sqlx::query_as::<_, AuditSql>(&sql)
                .bind(before.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(AuditRecord::try_from)
                .collect()
        }

        /// A device's events, newest first.
        pub async fn events(conn: &mut Conn, device: &DeviceId, limit: u32) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!("{SELECT_EVENTS} WHERE device = $1 ORDER BY seq DESC LIMIT $2");
            sqlx::query_as::<_, EventSql>(&sql)
                .bind(device.as_str())
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(EventRow::try_from)
                .collect()
        }

        /// Every token.
        pub async fn tokens(conn: &mut Conn) -> Result<Vec<TokenRow>, StoreError> {
            all::<TokenSql, _>(conn, SELECT_TOKENS).await
        }

        /// A token by its hash.
        pub async fn token(conn: &mut Conn, hash: [u8; 32]) -> Result<Option<TokenRow>, StoreError> {
            let sql = format!("{SELECT_TOKENS} WHERE hash = $1");
            let row = sqlx::query_as::<_, TokenSql>(&sql).bind(&hash[..]).fetch_optional(&mut *conn).await?;
            row.map(TokenRow::try_from).transpose()
        }

        /// Commits each batch of `batches` in `tx`: a batch with a precondition within a
        /// savepoint of its own, rolled back alone when the precondition fails.
        pub async fn apply_batches(
            tx: &mut Conn,
            batches: &[Vec<Mutation>],
        ) -> Result<Vec<Result<(), Conflict>>, sqlx::Error> {
            let mut results = Vec::with_capacity(batches.len());
            // Consecutive check-in reports are written together (see `write_reports`).
            let mut reports: Vec<(&DeviceId, &Reported)> = Vec::new();
            for batch in batches {
                let only_reports = batch.iter().all(|m| matches!(m, Mutation::Report { .. }));
                if only_reports {
                    reports.extend(batch.iter().filter_map(|m| match m {
                        Mutation::Report { id, reported } => Some((id, reported)),
                        _ => None,
                    }));
                    results.push(Ok(()));
                    continue;
                }
                write_reports(&mut *tx, &mut reports).await?;
                if !batch.iter().any(Mutation::is_conditional) {
                    for m in batch {
                        // Unconditional: a conflict here is a fault, not a race.
                        if let Err(c) = apply(&mut *tx, m).await? {
                            return Err(sqlx::Error::Protocol(format!("unexpected conflict: {c}")));
                        }
                    }
                    results.push(Ok(()));
                    continue;
                }
                let mut savepoint = tx.begin().await?;
                let mut outcome = Ok(());
                for m in batch {
                    match apply(&mut savepoint, m).await {
                        Ok(Ok(())) => {}
                        Ok(Err(conflict)) => {
                            outcome = Err(conflict);
                            break;
                        }
                        Err(e) if unique(&e) => {
                            outcome = Err(Conflict::Exists("a row with that key".into()));
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if outcome.is_ok() {
                    savepoint.commit().await?;
                } else {
                    savepoint.rollback().await?;
                }
                results.push(outcome);
            }
            write_reports(&mut *tx, &mut reports).await?;
            Ok(results)
        }

        /// Writes what devices reported in their check-ins, hundreds of rows a statement, and
        /// empties `reports`. A group commit of first check-ins is mostly these; one statement
        /// per row costs a round trip each, which on PostgreSQL bounded first check-ins to a
        /// few thousand a second. A device reported twice keeps its later report, as it would
        /// row by row.
        async fn write_reports(
            conn: &mut Conn,
            reports: &mut Vec<(&DeviceId, &Reported)>,
        ) -> Result<(), sqlx::Error> {
            if reports.is_empty() {
                return Ok(());
            }
            let mut latest: std::collections::HashMap<&DeviceId, usize> =
                std::collections::HashMap::with_capacity(reports.len());
            for (i, (id, _)) in reports.iter().enumerate() {
                latest.insert(*id, i);
            }
            let rows: Vec<(&DeviceId, &Reported, Option<String>)> = reports
                .iter()
                .enumerate()
                .filter(|(i, (id, _))| latest[id] == *i)
                .map(|(_, (id, reported))| {
                    let slot_b = reported.slot_b.as_ref().map(serde_json::to_string).transpose()?;
                    Ok((*id, *reported, slot_b))
                })
                .collect::<Result<_, serde_json::Error>>()
                .map_err(|e| sqlx::Error::Encode(e.into()))?;
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let mut update = QueryBuilder::<$db>::new(
                    "UPDATE devices SET running = r.column2, confirmed = r.column3, \
                     slot_b = r.column4, last_outcome = r.column5, release_sequence = r.column6 FROM (",
                );
                update.push_values(chunk, |mut row, (id, reported, slot_b)| {
                    row.push_bind(id.as_str())
                        .push_bind(reported.running.map(|i| i.to_string()))
                        .push_bind(reported.confirmed)
                        .push_bind(slot_b.clone())
                        .push_bind(reported.last_outcome.clone())
                        .push_bind(reported.release_sequence.map(|s| s as i64));
                });
                update.push(") AS r WHERE devices.id = r.column1");
                update.build().execute(&mut *conn).await?;
            }
            reports.clear();
            Ok(())
        }

        /// Writes one mutation.
        pub async fn apply(conn: &mut Conn, m: &Mutation) -> Result<Result<(), Conflict>, sqlx::Error> {
            let _rows: u64 = match m {
                Mutation::InsertImage(i) => {
                    let summary = serde_json::to_string(&i.summary).map_err(|e| sqlx::Error::Encode(e.into()))?;
                    let n = sqlx::query(
                        "INSERT INTO images (id, file_sha256, board, version, security_counter, size, \
                         summary, uploaded_at, uploaded_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(i.id.to_string())
                    .bind(i.file_sha256.to_string())
                    .bind(i.board.as_str())
                    .bind(&i.version)
                    .bind(i64::from(i.security_counter))
                    .bind(i.size as i64)
                    .bind(summary)
                    .bind(i.uploaded_at.0)
                    .bind(&i.uploaded_by)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if n == 0 {
                        return Ok(Err(Conflict::Exists(format!("image {}", i.id))));
                    }
                    n
                }
                Mutation::CreateEnvironment(e) => {
                    let n = sqlx::query(
                        "INSERT INTO environments (name, upstream, promote_min_confirmed, \
                         failure_threshold, stages, advance_ratio, public_key, private_key, position) \
                         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE NOT EXISTS \
                         (SELECT 1 FROM environments WHERE name = $1 OR position = $9) \
                         ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(e.name.as_str())
                    .bind(e.upstream.as_ref().map(|u| u.to_string()))
                    .bind(i64::from(e.rollout.promote_min_confirmed))
                    .bind(e.rollout.failure_threshold)
                    .bind(stages_text(&e.rollout.stages))
                    .bind(e.rollout.advance_ratio)
                    .bind(&e.public_key.0[..])
                    .bind(e.private_key.map(|k| k.0.to_vec()))
                    .bind(e.position)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if n == 0 {
                        return Ok(Err(Conflict::Exists(format!("environment {}", e.name))));
                    }
                    n
                }
                Mutation::UpdateEnvironment { name, from, rollout } => {
                    let n = sqlx::query(
                        "UPDATE environments SET promote_min_confirmed = $2, failure_threshold = $3, \
                         stages = $4, advance_ratio = $5 WHERE name = $1 AND promote_min_confirmed = $6 \
                         AND failure_threshold = $7 AND stages = $8 AND advance_ratio = $9",
                    )
                    .bind(name.as_str())
                    .bind(i64::from(rollout.promote_min_confirmed))
                    .bind(rollout.failure_threshold)
                    .bind(stages_text(&rollout.stages))
                    .bind(rollout.advance_ratio)
                    .bind(i64::from(from.promote_min_confirmed))
                    .bind(from.failure_threshold)
                    .bind(stages_text(&from.stages))
                    .bind(from.advance_ratio)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if n == 0 {
                        return Ok(Err(Conflict::Changed(format!("the settings of environment {name}"))));
                    }
                    n
                }
                Mutation::InsertRelease(r) => {
                    // Sequences are contiguous per environment: the new one must follow the
                    // newest. Writers are ordered (PostgreSQL: the log_head row each writing
                    // transaction takes first; SQLite: one writer), so the check holds.
                    let n = sqlx::query(
                        "INSERT INTO releases (environment, sequence, image_id, board, kind, \
                         statement, created_at, created_by, state, stage, reason, halted) \
                         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
                         WHERE (SELECT COALESCE(MAX(sequence), 0) FROM releases WHERE environment = $1) = $2 - 1 \
                         ON CONFLICT (environment, sequence) DO NOTHING",
                    )
                    .bind(r.environment.as_str())
                    .bind(r.sequence as i64)
                    .bind(r.image_id.to_string())
                    .bind(r.board.as_str())
                    .bind(name(r.kind))
                    .bind(&r.statement)
                    .bind(r.created_at.0)
                    .bind(&r.created_by)
                    .bind(name(r.state))
                    .bind(i64::from(r.stage))
                    .bind(&r.reason)
                    .bind(r.halted)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if n == 0 {
                        return Ok(Err(Conflict::SequenceTaken {
                            environment: r.environment.to_string(),
                            sequence: r.sequence,
                        }));
                    }
                    n
                }
                Mutation::MoveRollout { environment, sequence, from, to, reason } => {
                    // A halt is remembered until the rollout completes after a resume.
                    let halted = match to.state {
                        RolloutState::Halted => Some(true),
                        RolloutState::Completed => Some(false),
                        _ => None,
                    };
                    let n = sqlx::query(
                        "UPDATE releases SET state = $5, stage = $6, reason = $7, \
                         halted = COALESCE($8, halted) \
                         WHERE environment = $1 AND sequence = $2 AND state = $3 AND stage = $4",
                    )
                    .bind(environment.as_str())
                    .bind(*sequence as i64)
                    .bind(name(from.state))
                    .bind(i64::from(from.stage))
                    .bind(name(to.state))
                    .bind(i64::from(to.stage))
                    .bind(reason)
                    .bind(halted)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if n == 0 {
                        return Ok(Err(Conflict::Moved { environment: environment.to_string(), sequence: *sequence }));
                    }
                    n
                }
                Mutation::EnrollDevices(devices) => {
                    for chunk in devices.chunks(ROWS_PER_INSERT) {
                        let mut insert = QueryBuilder::<$db>::new(
                            "INSERT INTO devices (id, board, environment, token_hash, enrolled_at, \
                             confirmed) ",
                        );
                        insert.push_values(chunk, |mut row, d| {
                            row.push_bind(d.id.as_str())
                                .push_bind(d.board.as_str())
                                .push_bind(d.environment.as_str())
                                .push_bind(&d.token_hash[..])
                                .push_bind(d.enrolled_at.0)
                                .push_bind(false);
                        });
                        insert.push(" ON CONFLICT DO NOTHING");
                        let n = insert.build().execute(&mut *conn).await?.rows_affected();
                        if n != chunk.len() as u64 {
                            return Ok(Err(Conflict::Exists(format!(
                                "one of devices {} to {} (by id or token)",
                                chunk[0].id,
                                chunk[chunk.len() - 1].id
                            ))));
                        }
                    }
                    1
                }
                Mutation::SetDeviceToken { id, token_hash } => {
                    sqlx::query("UPDATE devices SET token_hash = $2 WHERE id = $1")
                        .bind(id.as_str())
                        .bind(&token_hash[..])
                        .execute(&mut *conn)
                        .await?
                        .rows_affected()
                }
                Mutation::Report { id, reported } => {
                    let slot_b = reported
                        .slot_b
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(|e| sqlx::Error::Encode(e.into()))?;
                    sqlx::query(
                        "UPDATE devices SET running = $2, confirmed = $3, slot_b = $4, \
                         last_outcome = $5, release_sequence = $6 WHERE id = $1",
                    )
                    .bind(id.as_str())
                    .bind(reported.running.map(|i| i.to_string()))
                    .bind(reported.confirmed)
                    .bind(slot_b)
                    .bind(&reported.last_outcome)
                    .bind(reported.release_sequence.map(|s| s as i64))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                }
                Mutation::Event { event, record } => {
                    if *record {
                        sqlx::query(
                            "INSERT INTO events (device, at, image_id, kind, detail) \
                             VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(event.device.as_str())
                        .bind(event.at.0)
                        .bind(event.image_id.to_string())
                        .bind(event.kind.as_str())
                        .bind(&event.detail)
                        .execute(&mut *conn)
                        .await?;
                    }
                    // The same effect as DeviceRow::apply_event.
                    let (id, image) = (event.device.as_str(), event.image_id.to_string());
                    match event.kind {
                        EventKind::Booted | EventKind::Confirmed => {
                            sqlx::query("UPDATE devices SET running = $2, confirmed = $3 WHERE id = $1")
                                .bind(id)
                                .bind(image)
                                .bind(event.kind == EventKind::Confirmed)
                                .execute(&mut *conn)
                                .await?
                                .rows_affected()
                        }
                        EventKind::Reverted | EventKind::Failed => {
                            sqlx::query(
                                "UPDATE devices SET failed_image = $2, \
                                 running = CASE WHEN running = $2 THEN NULL ELSE running END WHERE id = $1",
                            )
                            .bind(id)
                            .bind(image)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected()
                        }
                        EventKind::Downloading | EventKind::Installed => 0,
                    }
                }
                Mutation::Seen(list) => {
                    // Hundreds of rows a statement: one statement per row costs a round trip
                    // each, a tenth of the server's CPU at 100,000 devices.
                    for chunk in list.chunks(ROWS_PER_INSERT) {
                        // Only forward: replicas flush the times they saw in any order.
                        let mut update = QueryBuilder::<$db>::new(
                            "UPDATE devices SET last_seen = CASE WHEN last_seen IS NULL OR last_seen < seen.column2 \
                             THEN seen.column2 ELSE last_seen END FROM (",
                        );
                        update.push_values(chunk, |mut row, (id, at)| {
                            row.push_bind(id.as_str()).push_bind(at.0);
                        });
                        update.push(") AS seen WHERE devices.id = seen.column1");
                        update.build().execute(&mut *conn).await?;
                    }
                    1
                }
                Mutation::InsertToken(t) => {
                    sqlx::query(
                        "INSERT INTO tokens (id, hash, role, name, created_at, revoked) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(t.id.as_str())
                    .bind(&t.hash[..])
                    .bind(name(t.role))
                    .bind(t.name.as_str())
                    .bind(t.created_at.0)
                    .bind(t.revoked)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                }
                Mutation::RevokeToken(id) => {
                    sqlx::query("UPDATE tokens SET revoked = $2 WHERE id = $1")
                        .bind(id.as_str())
                        .bind(true)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected()
                }
                Mutation::InsertBuildKey(k) => {
                    sqlx::query(
                        "INSERT INTO build_keys (public_key, name) VALUES ($1, $2) \
                         ON CONFLICT (public_key) DO UPDATE SET name = excluded.name",
                    )
                    .bind(&k.public_key.0[..])
                    .bind(&k.name)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                }
                Mutation::Audit(a) => {
                    sqlx::query(
                        "INSERT INTO audit (at, actor, role, action, target, detail) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(a.at.0)
                    .bind(&a.actor)
                    .bind(name(a.role))
                    .bind(name(a.action))
                    .bind(&a.target)
                    .bind(a.detail.to_string())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                }
                Mutation::InsertPatch(p) => {
                    sqlx::query(
                        "INSERT INTO patches (source, target, sha256, size, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, target) DO NOTHING",
                    )
                    .bind(p.source.to_string())
                    .bind(p.target.to_string())
                    .bind(p.sha256.to_string())
                    .bind(p.size as i64)
                    .bind(p.created_at.0)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                }
                Mutation::PatchFailed(f) => {
                    sqlx::query(
                        "INSERT INTO patch_failures (device, image_id, at, detail) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (device, image_id) \
                         DO UPDATE SET at = excluded.at, detail = excluded.detail",
                    )
                    .bind(f.device.as_str())
                    .bind(f.image_id.to_string())
                    .bind(f.at.0)
                    .bind(&f.detail)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                }
            };
            Ok(Ok(()))
        }

        /// Writes `dump` into empty tables.
        pub async fn restore(tx: &mut Conn, dump: &Dump) -> Result<(), StoreError> {
            let s = &dump.snapshot;
            let mut batch: Vec<Mutation> = Vec::new();
            batch.extend(s.environments.iter().cloned().map(|e| Mutation::CreateEnvironment(Box::new(e))));
            batch.extend(s.images.iter().cloned().map(|i| Mutation::InsertImage(Box::new(i))));
            batch.extend(s.build_keys.iter().cloned().map(Mutation::InsertBuildKey));
            batch.extend(s.tokens.iter().cloned().map(Mutation::InsertToken));
            for m in &batch {
                if let Err(c) = apply(&mut *tx, m).await? {
                    return Err(StoreError::new(format!("copying: {c}")));
                }
            }
            // Releases as they are (states and stages included), not through the precondition.
            for r in &s.releases {
                sqlx::query(
                    "INSERT INTO releases (environment, sequence, image_id, board, kind, statement, \
                     created_at, created_by, state, stage, reason, halted) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(r.environment.as_str())
                .bind(r.sequence as i64)
                .bind(r.image_id.to_string())
                .bind(r.board.as_str())
                .bind(name(r.kind))
                .bind(&r.statement)
                .bind(r.created_at.0)
                .bind(&r.created_by)
                .bind(name(r.state))
                .bind(i64::from(r.stage))
                .bind(&r.reason)
                .bind(r.halted)
                .execute(&mut *tx)
                .await?;
            }
            for chunk in s.devices.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::<$db>::new(
                    "INSERT INTO devices (id, board, environment, token_hash, enrolled_at, last_seen, \
                     running, confirmed, failed_image, slot_b, last_outcome, release_sequence) ",
                );
                let mut failed = None;
                insert.push_values(chunk, |mut row, d| {
                    let slot_b = d.reported.slot_b.as_ref().map(|s| serde_json::to_string(s).unwrap_or_else(|e| {
                        failed = Some(e.to_string());
                        String::new()
                    }));
                    row.push_bind(d.id.as_str())
                        .push_bind(d.board.as_str())
                        .push_bind(d.environment.as_str())
                        .push_bind(&d.token_hash[..])
                        .push_bind(d.enrolled_at.0)
                        .push_bind(d.last_seen.map(|t| t.0))
                        .push_bind(d.reported.running.map(|i| i.to_string()))
                        .push_bind(d.reported.confirmed)
                        .push_bind(d.failed_image.map(|i| i.to_string()))
                        .push_bind(slot_b)
                        .push_bind(d.reported.last_outcome.clone())
                        .push_bind(d.reported.release_sequence.map(|s| s as i64));
                });
                if let Some(e) = failed {
                    return Err(StoreError::new(format!("copying devices: {e}")));
                }
                insert.build().execute(&mut *tx).await?;
            }
            for chunk in dump.events.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::<$db>::new("INSERT INTO events (device, at, image_id, kind, detail) ");
                insert.push_values(chunk, |mut row, e| {
                    row.push_bind(e.device.as_str())
                        .push_bind(e.at.0)
                        .push_bind(e.image_id.to_string())
                        .push_bind(e.kind.as_str())
                        .push_bind(e.detail.clone());
                });
                insert.build().execute(&mut *tx).await?;
            }
            // Audit entries keep their positions (they are how people cite them).
            for chunk in dump.audit.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::<$db>::new("INSERT INTO audit (seq, at, actor, role, action, target, detail) ");
                insert.push_values(chunk, |mut row, a| {
                    row.push_bind(a.seq)
                        .push_bind(a.row.at.0)
                        .push_bind(a.row.actor.clone())
                        .push_bind(name(a.row.role))
                        .push_bind(name(a.row.action))
                        .push_bind(a.row.target.clone())
                        .push_bind(a.row.detail.to_string());
                });
                insert.build().execute(&mut *tx).await?;
            }
            let patches = s.patches.iter().cloned().map(Mutation::InsertPatch);
            let failures = s.patch_failures.iter().cloned().map(Mutation::PatchFailed);
            for m in patches.chain(failures) {
                if let Err(c) = apply(&mut *tx, &m).await? {
                    return Err(StoreError::new(format!("copying: {c}")));
                }
            }
            Ok(())
        }

        /// Opens a dashboard session (see [`SessionRow`]); drops expired ones on the way, so
        /// the table holds only live sessions without a sweeper of its own.
        pub async fn create_session(conn: &mut Conn, s: &SessionRow) -> Result<(), StoreError> {
            sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1").bind(s.created_at.0).execute(&mut *conn).await?;
            sqlx::query("INSERT INTO ui_sessions (hash, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(&s.hash[..])
                .bind(&s.token_hash[..])
                .bind(s.created_at.0)
                .bind(s.expires_at.0)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// A session by the hash of its secret, if it has not expired at `now`.
        pub async fn session(conn: &mut Conn, hash: [u8; 32], now: Timestamp) -> Result<Option<SessionRow>, StoreError> {
            let row = sqlx::query_as::<_, SessionSql>(
                "SELECT hash, token_hash, created_at, expires_at FROM ui_sessions WHERE hash = $1 AND expires_at > $2",
            )
            .bind(&hash[..])
            .bind(now.0)
            .fetch_optional(&mut *conn)
            .await?;
            row.map(SessionRow::try_from).transpose()
        }

        /// Ends a session (signing out); ending one that is gone is not an error.
        pub async fn end_session(conn: &mut Conn, hash: [u8; 32]) -> Result<(), StoreError> {
            sqlx::query("DELETE FROM ui_sessions WHERE hash = $1").bind(&hash[..]).execute(&mut *conn).await?;
            Ok(())
        }

        /// Whether every table is empty.
        pub async fn is_empty(conn: &mut Conn) -> Result<bool, StoreError> {
            for table in ["images", "environments", "releases", "devices", "tokens", "build_keys", "events", "audit", "patches", "patch_failures"] {
                let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut *conn).await?;
                if n > 0 {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    };
}

pub(crate) use queries;
