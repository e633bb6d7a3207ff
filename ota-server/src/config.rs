//! Server settings: command-line flags, then `OTA_*` environment variables (both through
//! clap), then a TOML file (`--config`), then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The settings file (every key optional).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Data folder.
    pub data: Option<PathBuf>,
    /// Database URL (`sqlite://PATH`; default `DATA/ota.db`).
    pub database: Option<String>,
    /// Largest image accepted, bytes.
    pub max_image_size: Option<usize>,
    /// Folder of extra board files.
    pub boards: Option<PathBuf>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Seconds between writes of devices' last check-in times.
    pub seen_flush_secs: Option<u64>,
}

impl FileConfig {
    /// Reads a settings file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// Where the database is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file.
    Sqlite(PathBuf),
}

/// Settings, resolved.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data folder (database and blobs).
    pub data: PathBuf,
    /// Database.
    pub database: Database,
    /// Largest image accepted, bytes.
    pub max_image_size: usize,
    /// Folder of extra board files.
    pub boards: Option<PathBuf>,
    /// JSON logs.
    pub json_logs: bool,
    /// Seconds between writes of last check-in times.
    pub seen_flush_secs: u64,
}

/// Default largest image: 16 MiB.
pub const DEFAULT_MAX_IMAGE_SIZE: usize = 16 << 20;

/// Resolves a database URL against the data folder.
pub fn database(url: Option<&str>, data: &Path) -> Result<Database> {
    match url {
        None => Ok(Database::Sqlite(data.join("ota.db"))),
        Some(u) => {
            if let Some(path) = u.strip_prefix("sqlite://").or_else(|| u.strip_prefix("sqlite:")) {
                Ok(Database::Sqlite(PathBuf::from(path)))
            } else if u.starts_with("postgres://") || u.starts_with("postgresql://") {
                bail!(
                    "PostgreSQL is not supported by this build yet: the server's storage sits \
                     behind the `Store` trait (ota-server/src/store) and SQLite is its only \
                     implementation so far; use the embedded default (no --database)"
                )
            } else {
                bail!("database URL {u:?}: expected sqlite://PATH")
            }
        }
    }
}

/// Merges flags/environment over the file over defaults.
#[allow(clippy::too_many_arguments)]
pub fn resolve(
    file: FileConfig,
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    database_url: Option<String>,
    max_image_size: Option<usize>,
    boards: Option<PathBuf>,
    log_format: Option<String>,
) -> Result<Config> {
    let data = data.or(file.data).context("no data folder: pass --data DIR (or OTA_DATA)")?;
    let database = database(database_url.or(file.database).as_deref(), &data)?;
    let json_logs = match log_format.or(file.log_format).as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => bail!("log format {other:?}: expected text or json"),
    };
    Ok(Config {
        listen: listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        data,
        database,
        max_image_size: max_image_size.or(file.max_image_size).unwrap_or(DEFAULT_MAX_IMAGE_SIZE),
        boards: boards.or(file.boards),
        json_logs,
        seen_flush_secs: file.seen_flush_secs.unwrap_or(5).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let file: FileConfig =
            toml::from_str("listen = \"0.0.0.0:9000\"\ndata = \"/srv/ota\"\nmax_image_size = 5")
                .unwrap();
        let c = resolve(file.clone(), None, None, None, Some(7), None, None).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_image_size, 7);
        assert_eq!(c.database, Database::Sqlite(PathBuf::from("/srv/ota/ota.db")));
        let c = resolve(file, None, Some("/d".into()), None, None, None, None).unwrap();
        assert_eq!(c.data, PathBuf::from("/d"));
        assert_eq!(c.max_image_size, 5);
        assert!(toml::from_str::<FileConfig>("lisen = 1").is_err());
    }

    #[test]
    fn database_urls() {
        assert!(
            database(Some("postgres://x/y"), Path::new("/d"))
                .unwrap_err()
                .to_string()
                .contains("PostgreSQL")
        );
        assert_eq!(
            database(Some("sqlite:///tmp/a.db"), Path::new("/d")).unwrap(),
            Database::Sqlite("/tmp/a.db".into())
        );
        assert!(database(Some("mysql://"), Path::new("/d")).is_err());
    }
}
