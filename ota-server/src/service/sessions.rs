//! Dashboard sessions: a management token is exchanged once for a random session secret that
//! the browser keeps in an `HttpOnly` cookie, so the token itself never sits in the page's
//! storage. A session acts exactly as its token (same role, same checks: it authenticates as
//! the token's hash), ends when the token is revoked, and lives in the database, so every
//! replica honours it. Requests that change something also carry the session's CSRF token,
//! derived from the secret (nothing more to store): another site can make the browser send the
//! cookie (not with `SameSite=Strict`, but a defence should not rest on one browser rule), yet
//! it cannot read the CSRF token.

use std::time::Duration;

use ota_proto::{SessionInfo, Timestamp};
use sha2::{Digest, Sha256};

use super::Service;
use crate::auth::{self, Actor};
use crate::error::{Failure, FailureKind, Outcome};
use crate::store::SessionRow;

/// How long a session lasts after signing in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Prefix of session secrets.
const SESSION_PREFIX: &str = "fws_";

/// A new session: the secret for the cookie, and what the page is told.
#[derive(Debug)]
pub struct SignedIn {
    /// The cookie's value (never shown to the page's scripts).
    pub secret: String,
    /// Who it acts as, and its CSRF token.
    pub info: SessionInfo,
}

/// The CSRF token of the session whose secret is `secret`.
fn csrf_token(secret: &str) -> String {
    let digest: [u8; 32] =
        Sha256::new().chain_update(b"fwi csrf\0").chain_update(secret).finalize().into();
    hex::encode(digest)
}

fn unauthorized(message: &str) -> Failure {
    Failure::new(FailureKind::Unauthorized, "unauthorized", message)
}

impl Service {
    /// Opens a session for a management token (a device token or an unknown one is refused as
    /// the API refuses it).
    pub async fn sign_in(&self, token: &str) -> Outcome<SignedIn> {
        let token = token.trim();
        let actor = self.authenticate(Some(token)).await?;
        let (secret, hash) = auth::generate(SESSION_PREFIX).map_err(Failure::internal)?;
        let now = Timestamp::now();
        let row = SessionRow {
            hash,
            token_hash: auth::hash(token),
            created_at: now,
            expires_at: Timestamp(now.0 + SESSION_LIFETIME.as_millis() as i64),
        };
        self.store.create_session(&row).await?;
        tracing::info!(actor = %actor.name, "dashboard session opened");
        let info = SessionInfo {
            name: actor.name,
            role: actor.role,
            csrf: csrf_token(&secret),
            expires_at: row.expires_at,
        };
        Ok(SignedIn { secret, info })
    }

    /// The session whose secret is `secret`, and who it acts as. `csrf` is the request's CSRF
    /// token, checked when `changes` (the request is not a read).
    pub async fn session(
        &self,
        secret: &str,
        csrf: Option<&str>,
        changes: bool,
    ) -> Outcome<(Actor, SessionInfo)> {
        let row = self
            .store
            .session(auth::hash(secret), Timestamp::now())
            .await?
            .ok_or_else(|| unauthorized("no such session, or it expired: sign in again"))?;
        let expected = csrf_token(secret);
        if changes {
            match csrf {
                None => {
                    return Err(Failure::new(
                        FailureKind::Forbidden,
                        "csrf",
                        "a request that changes something needs the session's X-CSRF-Token header",
                    ));
                }
                // Compared as hashes: the time taken says nothing about the expected value.
                Some(given) if auth::hash(given) != auth::hash(&expected) => {
                    return Err(Failure::new(
                        FailureKind::Forbidden,
                        "csrf",
                        "the X-CSRF-Token header does not belong to this session",
                    ));
                }
                Some(_) => {}
            }
        }
        let actor = self.authenticate_hash(row.token_hash).await?;
        let info = SessionInfo {
            name: actor.name.clone(),
            role: actor.role,
            csrf: expected,
            expires_at: row.expires_at,
        };
        Ok((actor, info))
    }

    /// Ends the session whose secret is `secret`.
    pub async fn sign_out(&self, secret: &str) -> Outcome<()> {
        Ok(self.store.end_session(auth::hash(secret)).await?)
    }
}
