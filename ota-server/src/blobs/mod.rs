//! Image files, named by the SHA-256 of their bytes, behind [`BlobStore`]: a folder in the data
//! folder (the embedded default, [`folder::Folder`]) or an S3-compatible bucket that several
//! replicas share ([`s3::Bucket`]). Files are immutable, so reads go through a bounded
//! in-memory cache ([`Blobs`]) and are served zero-copy from it.
//!
//! A file is durable in the store before the database row that names it is committed (the
//! service calls [`Blobs::put`] first); a crash in between leaves an unreferenced file, which
//! `ota-server gc` removes.

pub mod folder;
#[cfg(feature = "s3")]
pub mod s3;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ota_proto::Sha256;
use sha2::Digest;

/// Bytes of files kept in memory at most.
const CACHE_BYTES: usize = 256 << 20;

/// A failed blob operation.
#[derive(Clone, Debug, thiserror::Error)]
#[error("image files: {message}")]
pub struct BlobError {
    message: String,
    kind: BlobErrorKind,
}

/// What kind of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobErrorKind {
    /// No such file.
    NotFound,
    /// The store could not be reached (requests answer 503).
    Unreachable,
    /// Anything else (a fault).
    Other,
}

impl BlobError {
    /// A failure of `kind`.
    pub fn new(kind: BlobErrorKind, message: impl Into<String>) -> Self {
        BlobError { message: message.into(), kind }
    }

    /// Its kind.
    pub fn kind(&self) -> BlobErrorKind {
        self.kind
    }
}

/// A stored file, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its name.
    pub digest: Sha256,
    /// When it was written.
    pub modified: SystemTime,
}

/// Where image files are kept.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Where, for logs and messages (no secrets).
    fn describe(&self) -> String;

    /// Stores `bytes` under `digest` (their SHA-256), durably; storing it again is harmless.
    async fn put(&self, digest: &Sha256, bytes: Bytes) -> Result<(), BlobError>;

    /// The whole file.
    async fn get(&self, digest: &Sha256) -> Result<Bytes, BlobError>;

    /// Every file.
    async fn list(&self) -> Result<Vec<Stored>, BlobError>;

    /// Removes a file (gone already is fine).
    async fn delete(&self, digest: &Sha256) -> Result<(), BlobError>;

    /// A URL a device can fetch the file from directly (with `Range`) for `expires`, where the
    /// store can sign one.
    async fn presign(
        &self,
        digest: &Sha256,
        expires: Duration,
    ) -> Result<Option<String>, BlobError> {
        let _ = (digest, expires);
        Ok(None)
    }

    /// Answers when the store is reachable.
    async fn ping(&self) -> Result<(), BlobError>;
}

/// Where image files are kept, from the `blobs` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A folder (default: `DATA/blobs`).
    Folder(std::path::PathBuf),
    /// An S3-compatible bucket.
    Bucket {
        /// The bucket.
        name: String,
        /// The S3 endpoint (`None`: AWS's).
        endpoint: Option<String>,
    },
}

impl Location {
    /// `blobs` is `s3://BUCKET` or a folder; `None` means the data folder's `blobs/`.
    pub fn from_setting(
        blobs: Option<&str>,
        endpoint: Option<&str>,
        data: &std::path::Path,
    ) -> Result<Self, String> {
        match blobs.map(str::trim).filter(|b| !b.is_empty()) {
            None => Ok(Location::Folder(data.join("blobs"))),
            Some(b) => match b.strip_prefix("s3://") {
                Some(name) if !name.is_empty() && !name.contains('/') => Ok(Location::Bucket {
                    name: name.to_owned(),
                    endpoint: endpoint.map(str::to_owned),
                }),
                Some(_) => {
                    Err(format!("blobs {b:?}: expected s3://BUCKET (a bucket name, no path)"))
                }
                None if b.contains("://") => {
                    Err(format!("blobs {b:?}: expected s3://BUCKET or a folder"))
                }
                None => Ok(Location::Folder(b.into())),
            },
        }
    }

    /// Opens the store (a folder is created if missing).
    pub fn open(&self) -> Result<Arc<dyn BlobStore>, BlobError> {
        match self {
            Location::Folder(dir) => {
                folder::Folder::open(dir).map(|f| Arc::new(f) as Arc<dyn BlobStore>).map_err(|e| {
                    BlobError::new(BlobErrorKind::Other, format!("{}: {e}", dir.display()))
                })
            }
            #[cfg(feature = "s3")]
            Location::Bucket { name, endpoint } => s3::Bucket::open(name, endpoint.as_deref())
                .map(|b| Arc::new(b) as Arc<dyn BlobStore>),
            #[cfg(not(feature = "s3"))]
            Location::Bucket { .. } => Err(BlobError::new(
                BlobErrorKind::Other,
                "this ota-server was built without the `s3` feature; build it with it for --blobs s3://",
            )),
        }
    }
}

/// The SHA-256 of `bytes`: a file's name.
pub fn digest(bytes: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(bytes).into())
}

/// A store with its read cache: what the service uses.
pub struct Blobs {
    store: Arc<dyn BlobStore>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").field("store", &self.store.describe()).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Cache {
    files: HashMap<Sha256, Bytes>,
    bytes: usize,
}

impl Blobs {
    /// `store`, cached.
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        Blobs { store, cache: Mutex::new(Cache::default()) }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `bytes` durably; returns their name.
    pub async fn put(&self, bytes: Bytes) -> Result<Sha256, BlobError> {
        let digest = digest(&bytes);
        self.store.put(&digest, bytes).await?;
        Ok(digest)
    }

    /// The file `digest`, from the cache or the store.
    pub async fn get(&self, digest: &Sha256) -> Result<Bytes, BlobError> {
        if let Some(b) = self.lock().files.get(digest) {
            return Ok(b.clone());
        }
        let bytes = self.store.get(digest).await?;
        if self::digest(&bytes) != *digest {
            return Err(BlobError::new(
                BlobErrorKind::Other,
                format!("file {digest} does not hash to its name"),
            ));
        }
        let mut cache = self.lock();
        if cache.bytes + bytes.len() > CACHE_BYTES {
            cache.files.clear();
            cache.bytes = 0;
        }
        if bytes.len() <= CACHE_BYTES {
            cache.bytes += bytes.len();
            cache.files.insert(*digest, bytes.clone());
        }
        Ok(bytes)
    }
}
