//! `ota-server migrate` and `ota-server copy-store`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::store::{Database, copy};

/// Brings the database's schema up to this release's.
pub async fn migrate(data: &Path, url: Option<&str>) -> Result<()> {
    let database = Database::from_url(url, data).map_err(anyhow::Error::msg)?;
    let store = database.open(false).await?;
    store.close().await;
    println!("{}: schema up to date", database.describe());
    Ok(())
}

/// Copies `from` into the empty `to`.
pub async fn copy(from: &str, to: &str) -> Result<()> {
    let parse = |url: &str| -> Result<Database> {
        let database = Database::from_url(Some(url), Path::new(".")).map_err(anyhow::Error::msg)?;
        Ok(database)
    };
    let (source_db, target_db) = (parse(from)?, parse(to)?);
    if source_db == target_db {
        anyhow::bail!("--from and --to name the same database");
    }
    let source =
        source_db.open(false).await.with_context(|| format!("opening {}", source_db.describe()))?;
    let target =
        target_db.open(true).await.with_context(|| format!("opening {}", target_db.describe()))?;
    let result = copy::copy(source.as_ref(), target.as_ref()).await;
    source.close().await;
    target.close().await;
    let counts = result
        .with_context(|| format!("copying {} to {}", source_db.describe(), target_db.describe()))?;
    println!("copied {} to {} and checked the copy:", source_db.describe(), target_db.describe());
    for (table, n) in counts {
        println!("  {table:<13} {n}");
    }
    Ok(())
}
