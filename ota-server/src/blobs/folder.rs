//! The blob folder: `DATA/blobs/<hex sha256>`. A file is written to `tmp/`, fsynced, renamed into
//! place and the folder fsynced, so after a crash a file is either whole under its name or
//! absent; leftovers in `tmp/` older than an hour are removed at start (not younger ones: a
//! replica on the same machine may be writing them).

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ota_proto::Sha256;

use super::{BlobError, BlobErrorKind, BlobStore, Stored};

/// Age past which a file in `tmp/` is a crash's leftover, not a write in progress.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A folder of image files.
#[derive(Clone, Debug)]
pub struct Folder {
    dir: PathBuf,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> BlobError {
    move |e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            BlobErrorKind::NotFound
        } else {
            BlobErrorKind::Other
        };
        BlobError::new(kind, format!("{what}: {e}"))
    }
}

impl Folder {
    /// Opens (creating) the folder and removes unfinished writes left by a crash.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let stale = std::time::SystemTime::now() - LEFTOVER_AGE;
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            let old = entry.metadata()?.modified().is_ok_and(|m| m < stale);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Folder { dir: dir.to_owned() })
    }

    fn path(&self, digest: &Sha256) -> PathBuf {
        self.dir.join(digest.to_string())
    }

    fn put_blocking(&self, digest: &Sha256, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(digest);
        if path.exists() {
            return Ok(());
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = self.dir.join("tmp").join(format!("{}.part", hex::encode(random)));
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
        result
    }
}

#[async_trait::async_trait]
impl BlobStore for Folder {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    async fn put(&self, digest: &Sha256, bytes: Bytes) -> Result<(), BlobError> {
        let (this, name) = (self.clone(), *digest);
        tokio::task::spawn_blocking(move || this.put_blocking(&name, &bytes))
            .await
            .map_err(|e| BlobError::new(BlobErrorKind::Other, e.to_string()))?
            .map_err(io(format!("writing {digest}")))
    }

    async fn get(&self, digest: &Sha256) -> Result<Bytes, BlobError> {
        let path = self.path(digest);
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(io(format!("reading {}", path.display())))
    }

    async fn list(&self) -> Result<Vec<Stored>, BlobError> {
        let mut out = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(io(format!("listing {}", self.dir.display())))?;
        while let Some(entry) = entries.next_entry().await.map_err(io("listing".into()))? {
            let Ok(digest) = entry.file_name().to_string_lossy().parse::<Sha256>() else {
                continue;
            };
            let meta = entry.metadata().await.map_err(io("listing".into()))?;
            if meta.is_file() {
                out.push(Stored {
                    digest,
                    modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                });
            }
        }
        Ok(out)
    }

    async fn delete(&self, digest: &Sha256) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(digest)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("removing {digest}"))(e))
            }
            _ => Ok(()),
        }
    }

    async fn ping(&self) -> Result<(), BlobError> {
        tokio::fs::metadata(&self.dir)
            .await
            .map(|_| ())
            .map_err(io(format!("{}", self.dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Blobs, digest};
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/abandoned.part"), b"half").unwrap();
        std::fs::write(dir.path().join("tmp/in-progress.part"), b"half").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("tmp/abandoned.part"))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("in-progress.part")]);
        let blobs = Blobs::new(std::sync::Arc::new(folder));
        let name = blobs.put(Bytes::from_static(b"image bytes")).await.unwrap();
        assert_eq!(name, digest(b"image bytes"));
        assert_eq!(blobs.put(Bytes::from_static(b"image bytes")).await.unwrap(), name);
        assert_eq!(&blobs.get(&name).await.unwrap()[..], b"image bytes");
        let missing = blobs.get(&digest(b"other")).await.unwrap_err();
        assert_eq!(missing.kind(), BlobErrorKind::NotFound);
        let listed = blobs.store().list().await.unwrap();
        assert_eq!(listed.iter().map(|s| s.digest).collect::<Vec<_>>(), vec![name]);
        blobs.store().delete(&name).await.unwrap();
        blobs.store().delete(&name).await.unwrap();
        assert!(blobs.store().list().await.unwrap().is_empty());
    }
}
