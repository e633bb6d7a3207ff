//! The `ota-server` command line: `init`, `serve`, `token create`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use boards::Catalog;
use clap::{Parser, Subcommand};

use crate::api::Role;
use crate::blobs::Blobs;
use crate::config::{self, Config, Database, FileConfig};
use crate::service::{self, Limits, Service, now_ms};
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditRow, BuildKeyRow, EnvironmentRow, Mutation, Store};

/// The artifact repository and fleet server for firmware images.
#[derive(Debug, Parser)]
#[command(name = "ota-server", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data folder: database, blob folder, environments dev → test → prod, and an
    /// admin token (printed once).
    Init {
        /// Data folder to create (must not hold a database yet).
        #[arg(long, env = "OTA_DATA")]
        data: PathBuf,
        /// A public key (PEM, from `imager keygen`) whose signatures on images the server
        /// trusts. Repeat for several; more can be added through the API.
        #[arg(long = "build-key", value_name = "PUB_PEM")]
        build_keys: Vec<PathBuf>,
        /// The prod release public key (PEM; make the pair with `imager keygen --out prod`).
        /// Its private half stays offline: releases to prod are signed with `imager promote
        /// --key`, so the server alone cannot put anything into production. (dev and test get
        /// key pairs the server holds, so CI can release there.)
        #[arg(long, value_name = "PUB_PEM")]
        prod_key: PathBuf,
        /// Database URL (default: sqlite file DATA/ota.db).
        #[arg(long, env = "OTA_DATABASE")]
        database: Option<String>,
    },
    /// Run the server.
    Serve(ServeArgs),
    /// Manage tokens offline (works while the server runs).
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// `serve` options. Each also comes from an `OTA_*` variable or the `--config` file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML settings file (keys: listen, data, database, max_image_size, boards, log_format,
    /// seen_flush_secs).
    #[arg(long, env = "OTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "OTA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data folder (made by `ota-server init`).
    #[arg(long, env = "OTA_DATA")]
    pub data: Option<PathBuf>,
    /// Database URL [default: sqlite file DATA/ota.db].
    #[arg(long, env = "OTA_DATABASE")]
    pub database: Option<String>,
    /// Largest image file accepted, in bytes [default: 16 MiB].
    #[arg(long, env = "OTA_MAX_IMAGE_SIZE")]
    pub max_image_size: Option<usize>,
    /// Folder of extra board files (`NAME.toml`) besides the shipped boards.
    #[arg(long, env = "OTA_BOARDS")]
    pub boards: Option<PathBuf>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "OTA_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// `token` commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a management token and print it (once).
    Create {
        /// Data folder.
        #[arg(long, env = "OTA_DATA")]
        data: PathBuf,
        /// Role: admin, ci, qa or release.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A name for the audit log [default: the role].
        #[arg(long)]
        name: Option<String>,
        /// Database URL [default: sqlite file DATA/ota.db].
        #[arg(long, env = "OTA_DATABASE")]
        database: Option<String>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}: admin, ci, qa or release"))
}

/// Runs the command line; exit 0 on success, 1 on failure (one `error:` line), 2 on usage.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { data, build_keys, prod_key, database } => {
            let token = init(&data, &build_keys, &prod_key, database.as_deref()).await?;
            println!("initialized {}: environments dev -> test -> prod", data.display());
            println!("admin token: {token}");
            println!("(shown only this once; `ota-server token create` makes more)");
            Ok(())
        }
        Command::Serve(args) => {
            let file = match &args.config {
                Some(path) => FileConfig::read(path)?,
                None => FileConfig::default(),
            };
            let config = config::resolve(
                file,
                args.listen,
                args.data,
                args.database,
                args.max_image_size,
                args.boards,
                args.log_format,
            )?;
            init_logs(config.json_logs);
            serve(config).await
        }
        Command::Token { command: TokenCommand::Create { data, role, name, database } } => {
            let store = open_store(&data, database.as_deref(), false).await?;
            let name = name.unwrap_or_else(|| role.as_str().to_owned());
            if name.is_empty() || name.len() > 64 {
                bail!("a token name is 1 to 64 bytes");
            }
            let (token, row) = service::new_token_row(role, &name)?;
            let audit = Mutation::Audit(AuditRow {
                at: now_ms(),
                actor: "cli".into(),
                role: "admin".into(),
                action: "token.create".into(),
                target: row.id.clone(),
                detail: serde_json::json!({"role": role.as_str(), "name": name}).to_string(),
            });
            store.commit(&[Mutation::InsertToken(row), audit]).await?;
            store.close().await;
            println!("{} token {name:?}: {token}", role.as_str());
            Ok(())
        }
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn open_store(data: &Path, url: Option<&str>, create: bool) -> Result<SqliteStore> {
    let Database::Sqlite(path) = config::database(url, data)?;
    Ok(SqliteStore::open(&path, create).await?)
}

/// Reads an Ed25519 public key from a PEM file (SPKI, as `imager keygen` writes).
pub fn read_public_key(path: &Path) -> Result<[u8; 32]> {
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
    Ok(key.to_bytes())
}

/// Creates the data folder; returns the admin token.
pub async fn init(
    data: &Path,
    build_keys: &[PathBuf],
    prod_key: &Path,
    database: Option<&str>,
) -> Result<String> {
    let Database::Sqlite(db_path) = config::database(database, data)?;
    if db_path.exists() {
        bail!("{} already holds a database; init never overwrites one", db_path.display());
    }
    // Read every input before creating anything.
    let mut keys = Vec::new();
    for path in build_keys {
        let name =
            path.file_name().map_or("build key".into(), |n| n.to_string_lossy().into_owned());
        keys.push(BuildKeyRow { public_key: read_public_key(path)?, name });
    }
    let prod_public = read_public_key(prod_key)?;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    Blobs::open(&data.join("blobs"))?;
    let store = SqliteStore::open(&db_path, true).await?;
    let env =
        |name: &str, upstream: Option<&str>, stages: Vec<u8>, position, key: Option<[u8; 32]>| {
            let (public_key, private_key) = match key {
                Some(public) => (public, None),
                None => {
                    let (seed, public) = service::new_key_pair()?;
                    (public, Some(seed))
                }
            };
            anyhow::Ok(EnvironmentRow {
                name: name.into(),
                upstream: upstream.map(str::to_owned),
                promote_min_confirmed: u32::from(name == "prod"),
                failure_threshold: 0.2,
                stages,
                advance_ratio: 0.9,
                public_key,
                private_key,
                position,
            })
        };
    let (token, token_row) = service::new_token_row(Role::Admin, "admin")?;
    let mut batch = vec![
        Mutation::PutEnvironment(env("dev", None, vec![100], 0, None)?),
        Mutation::PutEnvironment(env("test", Some("dev"), vec![100], 1, None)?),
        Mutation::PutEnvironment(env(
            "prod",
            Some("test"),
            vec![5, 25, 100],
            2,
            Some(prod_public),
        )?),
        Mutation::InsertToken(token_row),
    ];
    batch.extend(keys.into_iter().map(Mutation::InsertBuildKey));
    batch.push(Mutation::Audit(AuditRow {
        at: now_ms(),
        actor: "cli".into(),
        role: "admin".into(),
        action: "server.init".into(),
        target: data.display().to_string(),
        detail: serde_json::json!({"prod_key_id": firmware::image::KeyId::of_public_key(&prod_public).to_string()}).to_string(),
    }));
    store.commit(&batch).await?;
    store.close().await;
    Ok(token)
}

/// Runs the server until SIGINT/SIGTERM. Prints `listening on http://ADDR` once it accepts.
pub async fn serve(config: Config) -> Result<()> {
    let Database::Sqlite(db_path) = &config.database;
    let store = Arc::new(SqliteStore::open(db_path, false).await?);
    let catalog = match &config.boards {
        Some(dir) => Catalog::with_dir(dir)?,
        None => Catalog::builtin()?,
    };
    let blobs = Blobs::open(&config.data.join("blobs"))?;
    let limits = Limits { max_image_size: config.max_image_size };
    let app = Service::start(store.clone(), blobs, catalog, limits).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data = %config.data.display(), "serving");
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;

    let flusher = {
        let app = app.clone();
        let every = Duration::from_secs(config.seen_flush_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = app.flush_seen().await {
                    tracing::warn!(error = %e.message, "last-seen times not written");
                }
            }
        })
    };
    axum::serve(listener, crate::http::router(app.clone()))
        .with_graceful_shutdown(shutdown())
        .await?;
    flusher.abort();
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
