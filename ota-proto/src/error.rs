//! The body of every error answer, from either API.

use serde::{Deserialize, Serialize};

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`bad_signature`, `not_found`, `gate_closed`, ...): what
    /// a program branches on. docs/server-api.md lists them.
    pub code: String,
    /// What was wrong, where and why, for people.
    pub message: String,
}
