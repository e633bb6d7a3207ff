//! The blob folder: image files named by the SHA-256 of their bytes.
//!
//! A blob is written to `tmp/`, fsynced, renamed into place and the folder fsynced, so after a
//! crash a blob is either whole under its name or absent; leftovers in `tmp/` are removed at
//! start. Blobs are immutable, so reads are cached in memory (bounded) and served zero-copy.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Bytes of blobs kept in memory at most.
const CACHE_BYTES: usize = 256 << 20;

/// The blob folder.
#[derive(Debug)]
pub struct Blobs {
    dir: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    blobs: HashMap<String, Bytes>,
    bytes: usize,
}

/// The hex SHA-256 of `bytes`: a blob's name.
pub fn blob_name(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Blobs {
    /// Opens (creating) the folder and removes unfinished writes.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(Blobs { dir: dir.to_owned(), cache: Mutex::new(Cache::default()) })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Stores `bytes` durably under their hash; returns the name. Storing an existing blob
    /// again is a no-op.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let name = blob_name(bytes);
        let path = self.path(&name);
        if path.exists() {
            return Ok(name);
        }
        let tmp = tempfile_in(&self.dir.join("tmp"))?;
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| name)
    }

    /// The blob `name`, from the cache or the disk.
    pub fn get(&self, name: &str) -> std::io::Result<Bytes> {
        if let Some(b) = self.lock().blobs.get(name) {
            return Ok(b.clone());
        }
        let bytes = Bytes::from(std::fs::read(self.path(name))?);
        let mut cache = self.lock();
        if cache.bytes + bytes.len() > CACHE_BYTES {
            cache.blobs.clear();
            cache.bytes = 0;
        }
        if bytes.len() <= CACHE_BYTES {
            cache.bytes += bytes.len();
            cache.blobs.insert(name.to_owned(), bytes.clone());
        }
        Ok(bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fresh, unused path in `dir`.
fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(dir.join(format!("{}.part", hex::encode(random))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/abandoned.part"), b"half").unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let name = blobs.put(b"image bytes").unwrap();
        assert_eq!(name, blob_name(b"image bytes"));
        assert_eq!(blobs.put(b"image bytes").unwrap(), name);
        assert_eq!(&blobs.get(&name).unwrap()[..], b"image bytes");
        assert!(blobs.get(&blob_name(b"other")).is_err());
    }
}
