//! Management tokens: who may call the management API, and the audit log of what they did.

use ota_proto::{AuditEntry, NewToken, Role, TokenCreated, TokenId, TokenInfo, TokenName};
use serde_json::json;

use super::{Service, audit, views};
use crate::auth::{self, Actor};
use crate::error::{Failure, FailureKind, Outcome};
use crate::store::{AuditAction, Mutation, Timestamp, TokenRow};

/// Makes a new management token row; returns the secret too.
pub fn new_token_row(role: Role, name: TokenName) -> std::io::Result<(String, TokenRow)> {
    let (token, hash) = auth::generate(auth::MANAGEMENT_PREFIX)?;
    let row = TokenRow {
        id: auth::token_id(&hash),
        hash,
        role,
        name,
        created_at: Timestamp::now(),
        revoked: false,
    };
    Ok((token, row))
}

impl Service {
    /// The actor behind a management token.
    pub async fn authenticate(&self, token: Option<&str>) -> Outcome<Actor> {
        let unauthorized = |m: &str| Failure::new(FailureKind::Unauthorized, "unauthorized", m);
        let token = token
            .ok_or_else(|| unauthorized("missing bearer token (Authorization: Bearer TOKEN)"))?;
        self.authenticate_hash(auth::hash(token)).await
    }

    /// The actor behind a management token, by the token's hash (a dashboard session keeps
    /// only that).
    pub async fn authenticate_hash(&self, hash: [u8; 32]) -> Outcome<Actor> {
        let unauthorized = |m: &str| Failure::new(FailureKind::Unauthorized, "unauthorized", m);
        let found = self.fleet().tokens.get(&hash).cloned();
        let row = match found {
            Some(row) => row,
            // Made by `ota-server token create` while we run: look it up once, then keep it.
            None => match self.store.token(hash).await? {
                Some(row) => {
                    self.fleet().tokens.insert(hash, row.clone());
                    row
                }
                None if self.fleet().device_by_token.contains_key(&hash) => {
                    return Err(Failure::new(
                        FailureKind::Forbidden,
                        "device_token",
                        "device tokens reach only the device API (/api/v1/device/...)",
                    ));
                }
                None => return Err(unauthorized("unknown token")),
            },
        };
        if row.revoked {
            return Err(unauthorized("this token was revoked"));
        }
        Ok(Actor { name: row.name.to_string(), role: row.role })
    }

    /// Makes a management token.
    pub async fn create_token(&self, actor: &Actor, new: NewToken) -> Outcome<TokenCreated> {
        actor.require(&[], "create tokens")?;
        let _guard = self.manage().await?;
        let (token, row) = new_token_row(new.role, new.name.clone()).map_err(Failure::internal)?;
        let info = views::token_info(&row);
        let detail = json!({"role": new.role, "name": new.name});
        self.journal
            .commit(vec![
                Mutation::InsertToken(row),
                audit(actor, AuditAction::TokenCreate, &info.id, detail),
            ])
            .await?;
        Ok(TokenCreated { info, token })
    }

    /// Management tokens (never their secrets), including those made offline, oldest first.
    pub async fn tokens(&self, actor: &Actor) -> Outcome<Vec<TokenInfo>> {
        if actor.role != Role::Admin {
            return Err(Failure::forbidden("only admin tokens list tokens"));
        }
        let mut list: Vec<TokenInfo> =
            self.store.tokens().await?.iter().map(views::token_info).collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, actor: &Actor, id: &TokenId) -> Outcome<TokenInfo> {
        actor.require(&[], "revoke tokens")?;
        let _guard = self.manage().await?;
        if !self.fleet().tokens.values().any(|t| &t.id == id) {
            // Made offline and never used here yet: bring it in first.
            match self.store.tokens().await?.into_iter().find(|t| &t.id == id) {
                Some(row) => {
                    self.fleet().tokens.insert(row.hash, row);
                }
                None => return Err(Failure::not_found("unknown_token", format!("no token {id}"))),
            }
        }
        self.journal
            .commit(vec![
                Mutation::RevokeToken(id.clone()),
                audit(actor, AuditAction::TokenRevoke, id, json!({})),
            ])
            .await?;
        let fleet = self.fleet();
        let row = fleet
            .tokens
            .values()
            .find(|t| &t.id == id)
            .ok_or_else(|| Failure::internal("token"))?;
        Ok(views::token_info(row))
    }

    /// The audit log, newest first.
    pub async fn audit(&self, before: Option<i64>, limit: u32) -> Outcome<Vec<AuditEntry>> {
        let rows = self.store.audit(before, limit.clamp(1, 1000)).await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                seq: r.seq,
                at: r.row.at,
                actor: r.row.actor,
                role: r.row.role,
                action: r.row.action,
                target: r.row.target,
                detail: r.row.detail,
            })
            .collect())
    }
}
