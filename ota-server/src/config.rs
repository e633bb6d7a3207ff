//! Server settings, defined once: the same fields are `serve`'s flags (each also an `OTA_*`
//! variable, through clap) and the keys of the `--config` TOML file. Flags and variables win
//! over the file, the file over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::blobs::Location;
use crate::store::Database;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// How devices download image files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Downloads {
    /// Through this server, from its cache or the store (with `Range`).
    #[default]
    Stream,
    /// A redirect to a presigned URL of the object store (with `Range`), where it can sign
    /// one: the bytes then never pass through the replicas.
    Redirect,
}

/// Every setting, each optional (flags, variables and file keys alike).
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "OTA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data folder (made by `ota-server init`): the SQLite database by default, and the image
    /// files.
    #[arg(long, env = "OTA_DATA")]
    pub data: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE
    /// [default: sqlite file DATA/ota.db].
    #[arg(long, env = "OTA_DATABASE")]
    pub database: Option<String>,
    /// Where image files are kept: s3://BUCKET (an S3-compatible bucket; credentials and region
    /// from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) or a folder [default:
    /// DATA/blobs].
    #[arg(long, env = "OTA_BLOBS")]
    pub blobs: Option<String>,
    /// The S3 endpoint for s3:// blobs, e.g. http://127.0.0.1:3900 (path-style addressing)
    /// [default: AWS].
    #[arg(long, env = "OTA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// How devices download image files: stream (through the server) or redirect (to a
    /// presigned URL of the bucket) [default: stream].
    #[arg(long, env = "OTA_DOWNLOADS", value_enum)]
    pub downloads: Option<Downloads>,
    /// Largest image file accepted, in bytes [default: 16 MiB].
    #[arg(long, env = "OTA_MAX_IMAGE_SIZE")]
    pub max_image_size: Option<usize>,
    /// Folder of extra board files (`NAME.toml`) besides the shipped boards.
    #[arg(long, env = "OTA_BOARDS")]
    pub boards: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "OTA_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds between writes of devices' last check-in times (and re-evaluations of every
    /// rollout) [default: 2].
    #[arg(long, env = "OTA_HOUSEKEEPING_SECS")]
    #[serde(alias = "seen_flush_secs")]
    pub housekeeping_secs: Option<u64>,
    /// Offer a device that announces delta support a patch only when it is at most this share
    /// of the full image's size, 0 to 1 (0: never offer patches) [default: 0.5].
    #[arg(long, env = "OTA_PATCH_MAX_RATIO")]
    pub patch_max_ratio: Option<f64>,
}

impl Settings {
    /// Reads a settings file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Each setting of `self`, else of `other`.
    pub fn or(self, other: Settings) -> Settings {
        Settings {
            listen: self.listen.or(other.listen),
            data: self.data.or(other.data),
            database: self.database.or(other.database),
            blobs: self.blobs.or(other.blobs),
            s3_endpoint: self.s3_endpoint.or(other.s3_endpoint),
            downloads: self.downloads.or(other.downloads),
            max_image_size: self.max_image_size.or(other.max_image_size),
            boards: self.boards.or(other.boards),
            log_format: self.log_format.or(other.log_format),
            housekeeping_secs: self.housekeeping_secs.or(other.housekeeping_secs),
            patch_max_ratio: self.patch_max_ratio.or(other.patch_max_ratio),
        }
    }

    /// The settings with defaults filled in.
    pub fn resolve(self) -> Result<Config> {
        let data = self.data.context("no data folder: pass --data DIR (or OTA_DATA)")?;
        let database =
            Database::from_url(self.database.as_deref(), &data).map_err(anyhow::Error::msg)?;
        let blobs =
            Location::from_setting(self.blobs.as_deref(), self.s3_endpoint.as_deref(), &data)
                .map_err(anyhow::Error::msg)?;
        let patch_max_ratio = self.patch_max_ratio.unwrap_or(DEFAULT_PATCH_MAX_RATIO);
        if !(0.0..=1.0).contains(&patch_max_ratio) {
            anyhow::bail!(
                "patch_max_ratio {patch_max_ratio}: must be between 0 (never offer patches) and 1"
            );
        }
        Ok(Config {
            patch_max_ratio,
            blobs,
            downloads: self.downloads.unwrap_or_default(),
            listen: self.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data,
            database,
            max_image_size: self.max_image_size.unwrap_or(DEFAULT_MAX_IMAGE_SIZE),
            boards: self.boards,
            json_logs: self.log_format == Some(LogFormat::Json),
            housekeeping: Duration::from_secs(self.housekeeping_secs.unwrap_or(2).max(1)),
        })
    }
}

/// Settings, resolved.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data folder.
    pub data: PathBuf,
    /// Database.
    pub database: Database,
    /// Where image files are kept.
    pub blobs: Location,
    /// How devices download them.
    pub downloads: Downloads,
    /// Largest image accepted, bytes.
    pub max_image_size: usize,
    /// Folder of extra board files.
    pub boards: Option<PathBuf>,
    /// JSON logs.
    pub json_logs: bool,
    /// Between writes of last check-in times and rollout re-evaluations.
    pub housekeeping: Duration,
    /// Largest patch offered, as a share of the full image.
    pub patch_max_ratio: f64,
}

/// Default [`Config::patch_max_ratio`]: a patch must halve the download to be worth the
/// device's extra work (reading slot A, decoding) over a plain copy.
pub const DEFAULT_PATCH_MAX_RATIO: f64 = 0.5;

/// Default largest image: 16 MiB.
pub const DEFAULT_MAX_IMAGE_SIZE: usize = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let file: Settings =
            toml::from_str("listen = \"0.0.0.0:9000\"\ndata = \"/srv/ota\"\nmax_image_size = 5")
                .unwrap();
        let flags = Settings { max_image_size: Some(7), ..Settings::default() };
        let c = flags.or(file.clone()).resolve().unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_image_size, 7);
        assert_eq!(c.database, Database::Sqlite(PathBuf::from("/srv/ota/ota.db")));
        let c =
            Settings { data: Some("/d".into()), ..Settings::default() }.or(file).resolve().unwrap();
        assert_eq!(c.data, PathBuf::from("/d"));
        assert_eq!(c.max_image_size, 5);
        assert!(toml::from_str::<Settings>("lisen = 1").is_err());
        let old: Settings = toml::from_str("seen_flush_secs = 5\nlog_format = \"json\"").unwrap();
        assert_eq!(old.housekeeping_secs, Some(5));
        assert_eq!(old.log_format, Some(LogFormat::Json));
        let pg = Settings {
            data: Some("/d".into()),
            database: Some("postgres://u@h/db".into()),
            ..Settings::default()
        };
        assert_eq!(pg.resolve().unwrap().database, Database::Postgres("postgres://u@h/db".into()));
        let bad = Settings {
            data: Some("/d".into()),
            database: Some("mysql://x".into()),
            ..Settings::default()
        };
        assert!(bad.resolve().is_err());
        let s3 = Settings {
            data: Some("/d".into()),
            blobs: Some("s3://fleet".into()),
            s3_endpoint: Some("http://127.0.0.1:3900".into()),
            ..Settings::default()
        };
        assert_eq!(
            s3.resolve().unwrap().blobs,
            Location::Bucket {
                name: "fleet".into(),
                endpoint: Some("http://127.0.0.1:3900".into())
            }
        );
        let folder = Settings { data: Some("/d".into()), ..Settings::default() }.resolve().unwrap();
        assert_eq!(folder.patch_max_ratio, DEFAULT_PATCH_MAX_RATIO);
        let ratio: Settings = toml::from_str("data = \"/d\"\npatch_max_ratio = 0.2").unwrap();
        assert_eq!(ratio.resolve().unwrap().patch_max_ratio, 0.2);
        let err =
            Settings { data: Some("/d".into()), patch_max_ratio: Some(1.5), ..Settings::default() }
                .resolve()
                .unwrap_err();
        assert!(err.to_string().contains("patch_max_ratio 1.5"), "{err}");
        assert_eq!(folder.blobs, Location::Folder("/d/blobs".into()));
        let bad = Settings {
            data: Some("/d".into()),
            blobs: Some("gs://x".into()),
            ..Settings::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("s3://BUCKET"));
    }
}
