//! `ota-server gc`: removes image files that no image row names. An upload stores the file
//! before it commits the row, so a crash (or a refused commit) in between leaves a file
//! behind; only files older than `--min-age` are removed, so an upload in progress keeps its
//! file.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::config::Config;

/// Removes unreferenced files older than `min_age` (or only lists them: `dry_run`).
pub async fn gc(config: Config, min_age: Duration, dry_run: bool) -> Result<()> {
    let store = config
        .database
        .open(false)
        .await
        .with_context(|| format!("opening {}", config.database.describe()))?;
    let blobs = config.blobs.open().context("opening the image store")?;
    let snapshot = store.load().await;
    store.close().await;
    let snapshot = snapshot?;
    // Image files and patches alike.
    let images = snapshot.images.into_iter().map(|i| i.file_sha256);
    let named: HashSet<_> = images.chain(snapshot.patches.into_iter().map(|p| p.sha256)).collect();
    let cutoff = SystemTime::now().checked_sub(min_age).unwrap_or(SystemTime::UNIX_EPOCH);
    let (mut kept, mut removed, mut young) = (0, 0, 0);
    for file in blobs.list().await? {
        if named.contains(&file.digest) {
            kept += 1;
        } else if file.modified > cutoff {
            young += 1;
        } else {
            if !dry_run {
                blobs.delete(&file.digest).await?;
            }
            println!("{} {}", if dry_run { "would remove" } else { "removed" }, file.digest);
            removed += 1;
        }
    }
    println!(
        "{}: {kept} files in use, {removed} unreferenced {}, {young} unreferenced but younger than {} s (kept)",
        blobs.describe(),
        if dry_run { "would be removed" } else { "removed" },
        min_age.as_secs()
    );
    Ok(())
}
