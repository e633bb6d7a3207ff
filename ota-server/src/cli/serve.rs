//! `ota-server serve`.

use std::io::Write;

use anyhow::{Context, Result};
use boards::Catalog;

use crate::blobs::Blobs;
use crate::config::Config;
use crate::service::{Limits, Service};
use crate::store::Database;

/// Sets up logging: `OTA_LOG` filters (default `info`), to stderr.
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Refuses a second `serve` on one SQLite file: two processes would each decide on a model of
/// their own. (Several replicas share a PostgreSQL database instead.) The lock goes with the
/// process, however it ends.
fn lock_sqlite(database: &Database) -> Result<Option<std::fs::File>> {
    let Database::Sqlite(path) = database else { return Ok(None) };
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", std::path::Path::new(&lock_path).display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another ota-server serves {} already; SQLite takes one server process (run several \
             replicas on PostgreSQL: --database postgres://...)",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("locking the database"),
    }
}

/// Runs the server until SIGINT/SIGTERM. Prints `listening on http://ADDR` once it accepts.
pub async fn serve(config: Config) -> Result<()> {
    let store = config
        .database
        .open(false)
        .await
        .with_context(|| format!("opening {}", config.database.describe()))?;
    let _lock = lock_sqlite(&config.database)?;
    if crate::private_files::dir_is_loose(&config.data) {
        tracing::warn!(
            data = %config.data.display(),
            "the data folder can be entered by group or others; make it owner-only (chmod 700)"
        );
    }
    let catalog = match &config.boards {
        Some(dir) => Catalog::with_dir(dir)?,
        None => Catalog::builtin()?,
    };
    let blobs =
        Blobs::new(config.blobs.open().with_context(|| "opening the image store".to_owned())?);
    let limits = Limits {
        max_image_size: config.max_image_size,
        downloads: config.downloads,
        patch_max_ratio: config.patch_max_ratio,
    };
    let app = Service::start(store.clone(), blobs, catalog, limits).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        data = %config.data.display(),
        database = %config.database.describe(),
        blobs = %app.blobs().store().describe(),
        "serving"
    );
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;

    let housekeeping = app.housekeeping(config.housekeeping);
    axum::serve(listener, crate::http::router(app.clone()))
        .with_graceful_shutdown(shutdown())
        .await?;
    housekeeping.abort();
    let _ = app.flush_seen().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
