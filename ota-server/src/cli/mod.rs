//! The `ota-server` command line: `init`, `serve`, `migrate`, `copy-store`, `token create`.
//! Each command is a file; this one parses and dispatches.

mod gc;
mod init;
mod serve;
mod store;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ota_proto::{Role, TokenName};

pub use init::{init, read_public_key};
pub use serve::serve;

use crate::config::Settings;

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
    /// Create a data folder and a database: environments dev → test → prod, and an admin token
    /// (printed once).
    Init {
        /// Data folder to create (the image files go here; the SQLite database too, by default).
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
        /// Database URL: sqlite://PATH or postgres://... (an empty database) [default: sqlite
        /// file DATA/ota.db].
        #[arg(long, env = "OTA_DATABASE")]
        database: Option<String>,
    },
    /// Run the server.
    Serve(ServeArgs),
    /// Bring a database's schema up to this release's (`serve` does it too, at start).
    Migrate {
        /// Data folder (for the default SQLite database).
        #[arg(long, env = "OTA_DATA")]
        data: PathBuf,
        /// Database URL [default: sqlite file DATA/ota.db].
        #[arg(long, env = "OTA_DATABASE")]
        database: Option<String>,
    },
    /// Copy a fleet's whole state from one database to another, empty one (SQLite to
    /// PostgreSQL, say), then check the copy row by row. Stop the server first. The image
    /// files are not moved: they stay in the data folder.
    CopyStore {
        /// The database to copy: sqlite://PATH or postgres://...
        #[arg(long)]
        from: String,
        /// The database to copy into: it must be empty (its schema is made if missing).
        #[arg(long)]
        to: String,
    },
    /// Remove image files that no image names (left behind by a crash between storing a file
    /// and committing its row). Takes the same settings as `serve`.
    Gc {
        /// Keep unreferenced files younger than this many seconds (an upload in progress).
        #[arg(long, default_value_t = 3600)]
        min_age: u64,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Settings, as for `serve`.
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Manage tokens offline (works while the server runs).
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// `serve` options: the settings (each also an `OTA_*` variable or a key of the `--config`
/// file).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML settings file; its keys are the options' names (listen, data, database,
    /// max_image_size, boards, log_format, housekeeping_secs).
    #[arg(long, env = "OTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// The settings.
    #[command(flatten)]
    pub settings: Settings,
}

impl ServeArgs {
    /// The settings: flags and variables over the `--config` file over the defaults.
    pub fn resolve(self) -> Result<crate::config::Config> {
        let file = match &self.config {
            Some(path) => Settings::read(path)?,
            None => Settings::default(),
        };
        self.settings.or(file).resolve()
    }
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
        /// A name for the audit log (1 to 64 bytes, no control characters) [default: the role].
        #[arg(long)]
        name: Option<TokenName>,
        /// Database URL [default: sqlite file DATA/ota.db].
        #[arg(long, env = "OTA_DATABASE")]
        database: Option<String>,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    use strum::VariantArray;
    text.parse().map_err(|_| {
        let names: Vec<String> = Role::VARIANTS.iter().map(Role::to_string).collect();
        format!("unknown role {text:?}: {}", names.join(", "))
    })
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
            let config = args.resolve()?;
            serve::init_logs(config.json_logs);
            serve(config).await
        }
        Command::Migrate { data, database } => store::migrate(&data, database.as_deref()).await,
        Command::Gc { min_age, dry_run, args } => {
            gc::gc(args.resolve()?, std::time::Duration::from_secs(min_age), dry_run).await
        }
        Command::CopyStore { from, to } => store::copy(&from, &to).await,
        Command::Token { command: TokenCommand::Create { data, role, name, database } } => {
            token::create(&data, role, name, database.as_deref()).await
        }
    }
}
