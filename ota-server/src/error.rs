//! How a request fails, independent of HTTP: a kind (the HTTP layer maps kinds to statuses), a
//! stable code for programs and a sentence for people.

use crate::blobs::{BlobError, BlobErrorKind};
use crate::journal::CommitError;
use crate::release::Refusal;
use crate::store::{Conflict, StoreError};

/// What kind of failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailureKind {
    /// 400: the request is wrong.
    BadRequest,
    /// 401: no token, or an unknown one.
    Unauthorized,
    /// 403: the token may not do this.
    Forbidden,
    /// 404.
    NotFound,
    /// 409: the state does not allow it (or someone else got there first).
    Conflict,
    /// 413.
    TooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 503: the database or the object store is unreachable; try again.
    Unavailable,
    /// 500: a fault of the server's.
    Internal,
}

/// A failed request: kind, stable code, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Kind.
    pub kind: FailureKind,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What was wrong, where and why.
    pub message: String,
}

/// Result of an operation.
pub type Outcome<T> = Result<T, Failure>;

impl Failure {
    /// A failure.
    pub fn new(kind: FailureKind, code: &'static str, message: impl Into<String>) -> Self {
        Failure { kind, code, message: message.into() }
    }

    /// A fault of the server's (logged).
    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(%message, "internal error");
        Failure::new(FailureKind::Internal, "internal", format!("internal error: {message}"))
    }

    /// 400.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Failure::new(FailureKind::BadRequest, code, message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Failure::new(FailureKind::NotFound, code, message)
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Failure::new(FailureKind::Conflict, code, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Failure::new(FailureKind::Forbidden, "forbidden", message)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        if !e.unreachable() {
            return Failure::internal(e);
        }
        tracing::warn!(error = %e, "store unavailable");
        Failure::new(
            FailureKind::Unavailable,
            "store_unavailable",
            format!("the server cannot reach its database; nothing was changed; try again ({e})"),
        )
    }
}

impl From<BlobError> for Failure {
    fn from(e: BlobError) -> Self {
        match e.kind() {
            BlobErrorKind::Unreachable => {
                tracing::warn!(error = %e, "image store unavailable");
                Failure::new(
                    FailureKind::Unavailable,
                    "blobs_unavailable",
                    format!(
                        "the server cannot reach its image store; nothing was changed; try again ({e})"
                    ),
                )
            }
            BlobErrorKind::NotFound | BlobErrorKind::Other => Failure::internal(e),
        }
    }
}

impl From<Conflict> for Failure {
    fn from(c: Conflict) -> Self {
        let code = match &c {
            Conflict::Exists(_) => "exists",
            Conflict::SequenceTaken { .. } => "sequence_taken",
            Conflict::Moved { .. } | Conflict::Changed(_) => "changed_meanwhile",
        };
        Failure::new(FailureKind::Conflict, code, format!("{c}; read it again and retry"))
    }
}

impl From<CommitError> for Failure {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Conflict(c) => c.into(),
            CommitError::Store(s) => s.into(),
        }
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
