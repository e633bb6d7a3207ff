//! `ota-server token create`: a management token made offline, straight into the database.

use std::path::Path;

use anyhow::Result;
use ota_proto::{Role, TokenName};
use serde_json::json;

use crate::service::new_token_row;
use crate::store::{AuditAction, AuditRow, Database, Mutation, Timestamp};

/// Makes a token with `role` (named `name`, or after the role) and prints it.
pub async fn create(
    data: &Path,
    role: Role,
    name: Option<TokenName>,
    database: Option<&str>,
) -> Result<()> {
    let store = Database::from_url(database, data).map_err(anyhow::Error::msg)?.open(false).await?;
    let name = match name {
        Some(n) => n,
        None => TokenName::new(role.to_string())?,
    };
    let (token, row) = new_token_row(role, name.clone())?;
    let audit = Mutation::Audit(AuditRow {
        at: Timestamp::now(),
        actor: "cli".into(),
        role: Role::Admin,
        action: AuditAction::TokenCreate,
        target: row.id.to_string(),
        detail: json!({"role": role, "name": name}),
    });
    let done = store.commit(&[vec![Mutation::InsertToken(row), audit]]).await?;
    store.close().await;
    if let Some(Err(conflict)) = done.results.first() {
        anyhow::bail!("the token was not stored: {conflict}");
    }
    println!("{role} token {:?}: {token}", name.as_str());
    Ok(())
}
