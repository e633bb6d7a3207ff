//! `ota-server init`: a new data folder and database with environments dev → test → prod.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ota_proto::{EnvironmentName, PublicKey, Role, RolloutSettings, TokenName};
use serde_json::json;

use crate::service::{new_key_pair, new_token_row};
use crate::store::{
    AuditAction, AuditRow, BuildKeyRow, Database, EnvironmentRow, Mutation, Timestamp,
};

/// Reads an Ed25519 public key from a PEM file (SPKI, as `imager keygen` writes).
pub fn read_public_key(path: &Path) -> Result<PublicKey> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    if text.contains("PRIVATE KEY") {
        bail!(
            "{} is a private key; pass the public key (the .pub.pem file from `imager keygen`)",
            path.display()
        );
    }
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&text)
        .map_err(|e| anyhow!("{}: not an Ed25519 public key PEM: {e}", path.display()))?;
    Ok(PublicKey(key.to_bytes()))
}

/// Creates the data folder and the database; returns the admin token.
pub async fn init(
    data: &Path,
    build_keys: &[PathBuf],
    prod_key: &Path,
    database: Option<&str>,
) -> Result<String> {
    let database = Database::from_url(database, data).map_err(anyhow::Error::msg)?;
    if let Database::Sqlite(path) = &database
        && path.exists()
    {
        bail!("{} already holds a database; init never overwrites one", path.display());
    }
    // Read every input before creating anything.
    let mut keys = Vec::new();
    for path in build_keys {
        let name =
            path.file_name().map_or("build key".into(), |n| n.to_string_lossy().into_owned());
        keys.push(BuildKeyRow { public_key: read_public_key(path)?, name });
    }
    let prod_public = read_public_key(prod_key)?;
    // A database server is checked before anything is created here.
    let early = match &database {
        Database::Postgres(_) => Some(database.open(true).await?),
        Database::Sqlite(_) => None,
    };
    if let Some(store) = &early
        && !store.load().await?.environments.is_empty()
    {
        store.close().await;
        bail!("{} already holds a fleet; init never overwrites one", database.describe());
    }
    crate::private_files::create_private_dir(data)
        .with_context(|| format!("cannot create {}", data.display()))?;
    crate::blobs::folder::Folder::open(&data.join("blobs"))?;
    let store = match early {
        Some(store) => store,
        None => database.open(true).await?,
    };
    let env =
        |name: &str, upstream: Option<&str>, stages: Vec<u8>, position, key: Option<PublicKey>| {
            let (public_key, private_key) = match key {
                Some(public) => (public, None),
                None => {
                    let (seed, public) = new_key_pair()?;
                    (public, Some(seed))
                }
            };
            anyhow::Ok(Mutation::CreateEnvironment(Box::new(EnvironmentRow {
                name: EnvironmentName::new(name)?,
                upstream: upstream.map(EnvironmentName::new).transpose()?,
                // Only prod waits for confirmations upstream: test takes what dev has.
                rollout: RolloutSettings {
                    stages,
                    promote_min_confirmed: u32::from(name == "prod"),
                    ..RolloutSettings::default()
                },
                public_key,
                private_key,
                position,
            })))
        };
    let (token, token_row) = new_token_row(Role::Admin, TokenName::new("admin")?)?;
    let mut batch = vec![
        env("dev", None, vec![100], 0, None)?,
        env("test", Some("dev"), vec![100], 1, None)?,
        env("prod", Some("test"), vec![5, 25, 100], 2, Some(prod_public))?,
        Mutation::InsertToken(token_row),
    ];
    batch.extend(keys.into_iter().map(Mutation::InsertBuildKey));
    batch.push(Mutation::Audit(AuditRow {
        at: Timestamp::now(),
        actor: "cli".into(),
        role: Role::Admin,
        action: AuditAction::ServerInit,
        target: data.display().to_string(),
        detail: json!({"prod_key_id": firmware::image::KeyId::of_public_key(&prod_public.0)}),
    }));
    let done = store.commit(&[batch]).await;
    store.close().await;
    if let Some(Err(conflict)) = done?.results.first() {
        bail!("{} was initialized meanwhile: {conflict}", database.describe());
    }
    Ok(token)
}
