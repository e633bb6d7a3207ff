//! Management tokens and their roles.

use serde::{Deserialize, Serialize};

use crate::{Timestamp, TokenId, TokenName};

/// Who may do what. Device tokens are separate: they reach only the device API.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Debug,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Manages devices, environments, keys and tokens; may do everything.
    Admin,
    /// Uploads images; releases (and rolls back) where the server holds the environment's key;
    /// reads everything but tokens.
    Ci,
    /// Reads everything but tokens.
    Qa,
    /// Releases, promotes (with a signed statement), rolls back, pauses and resumes; reads
    /// everything but tokens.
    Release,
}

/// A new management token (`POST /tokens`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Its role.
    pub role: Role,
    /// A name for people and the audit log.
    pub name: TokenName,
}

/// A management token (never the secret, except once at creation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Token id.
    pub id: TokenId,
    /// Its role.
    pub role: Role,
    /// Its name.
    pub name: TokenName,
    /// When it was made.
    pub created_at: Timestamp,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A token just made, with its secret (shown only this once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token.
    pub info: TokenInfo,
    /// The bearer secret.
    pub token: String,
}
