//! Environments and their rollout settings.

use ota_proto::{EnvironmentInfo, NewEnvironment, PublicKey, RolloutSettings};
use serde_json::json;

use super::{Service, audit, unknown_environment, views};
use crate::auth::Actor;
use crate::error::{Failure, Outcome};
use crate::journal::CommitError;
use crate::store::{AuditAction, EnvironmentName, EnvironmentRow, Mutation, Seed};

/// A fresh Ed25519 key pair: (seed, public key).
pub fn new_key_pair() -> std::io::Result<(Seed, PublicKey)> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    Ok((Seed(seed), PublicKey(public)))
}

impl Service {
    /// All environments, in promotion order.
    pub fn environments(&self) -> Vec<EnvironmentInfo> {
        let fleet = self.fleet();
        fleet.environments.iter().map(|e| views::environment_info(&fleet, e)).collect()
    }

    /// One environment.
    pub fn environment(&self, name: &str) -> Outcome<EnvironmentInfo> {
        let fleet = self.fleet();
        let env = fleet.environment(name).ok_or_else(|| unknown_environment(name))?;
        Ok(views::environment_info(&fleet, env))
    }

    /// Creates an environment.
    pub async fn create_environment(
        &self,
        actor: &Actor,
        new: NewEnvironment,
    ) -> Outcome<EnvironmentInfo> {
        actor.require(&[], "create environments")?;
        new.rollout.check().map_err(|m| Failure::bad("bad_setting", m))?;
        if new
            .release_public_key
            .is_some_and(|k| firmware::image::TrustedKey::from_bytes(&k.0).is_err())
        {
            return Err(Failure::bad(
                "bad_key",
                "release_public_key is not a usable Ed25519 public key",
            ));
        }
        let _guard = self.manage().await?;
        let row = {
            let fleet = self.fleet();
            if fleet.environment(new.name.as_str()).is_some() {
                return Err(Failure::conflict(
                    "exists",
                    format!("environment {} already exists", new.name),
                ));
            }
            if let Some(up) = &new.upstream
                && fleet.environment(up.as_str()).is_none()
            {
                return Err(Failure::bad(
                    "unknown_environment",
                    format!("upstream environment {up} does not exist"),
                ));
            }
            let (public_key, private_key) = match new.release_public_key {
                Some(key) => (key, None),
                None => {
                    let (seed, public) = new_key_pair().map_err(Failure::internal)?;
                    (public, Some(seed))
                }
            };
            EnvironmentRow {
                name: new.name.clone(),
                upstream: new.upstream.clone(),
                rollout: new.rollout.clone(),
                public_key,
                private_key,
                position: fleet.environments.iter().map(|e| e.row.position + 1).max().unwrap_or(0),
            }
        };
        let detail = json!({
            "upstream": row.upstream, "stages": row.rollout.stages,
            "server_holds_key": row.private_key.is_some(),
        });
        let name = row.name.clone();
        match self
            .journal
            .commit(vec![
                Mutation::CreateEnvironment(Box::new(row)),
                audit(actor, AuditAction::EnvironmentCreate, &name, detail),
            ])
            .await
        {
            Ok(()) => {}
            Err(CommitError::Conflict(_)) => {
                return Err(Failure::conflict(
                    "exists",
                    format!(
                        "environment {name} exists, or another environment was created meanwhile \
                         (through another replica); read the environments again and retry"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.environment(name.as_str())
    }

    /// Changes an environment's rollout settings: `changes` is a JSON object of the
    /// [`RolloutSettings`] fields to change (all of them, or a few).
    pub async fn update_environment(
        &self,
        actor: &Actor,
        name: &EnvironmentName,
        changes: serde_json::Map<String, serde_json::Value>,
    ) -> Outcome<EnvironmentInfo> {
        actor.require(&[], "change environments")?;
        let _guard = self.manage().await?;
        let current = {
            let fleet = self.fleet();
            fleet
                .environment(name.as_str())
                .ok_or_else(|| unknown_environment(name.as_str()))?
                .row
                .rollout
                .clone()
        };
        let mut merged = match serde_json::to_value(&current).map_err(Failure::internal)? {
            serde_json::Value::Object(map) => map,
            _ => return Err(Failure::internal("settings are not an object")),
        };
        merged.extend(changes.clone());
        let rollout: RolloutSettings = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| Failure::bad("bad_json", format!("request body: {e}")))?;
        rollout.check().map_err(|m| Failure::bad("bad_setting", m))?;
        self.journal
            .commit(vec![
                Mutation::UpdateEnvironment { name: name.clone(), from: current, rollout },
                audit(
                    actor,
                    AuditAction::EnvironmentUpdate,
                    name,
                    serde_json::Value::Object(changes),
                ),
            ])
            .await?;
        let moves = self.fleet().evaluate_all();
        self.commit_moves(moves).await;
        self.environment(name.as_str())
    }
}
