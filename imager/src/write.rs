//! Writing output files so that a crash or an error never leaves half a file behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and renamed
/// into place: `path` holds either its old content or all of the new.
pub(crate) fn atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Refuses an output file that is one of the command's inputs: writing it would replace a file
/// the user still needs (the source ELF, a key, the old image) with the result.
pub(crate) fn refuse_input_as_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    // An output that does not exist yet is no input.
    let Ok(target) = std::fs::canonicalize(out) else { return Ok(()) };
    for input in inputs {
        if std::fs::canonicalize(input).is_ok_and(|i| i == target) {
            bail!(
                "--out {} is also an input ({}): it would be overwritten; choose another output file",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Creates `path` with `bytes`, refusing if it exists; `private` files are readable by the
/// owner only.
pub(crate) fn create_new(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file =
        options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A new file readable by its owner only (mode 0600), prepared before the work that fills it:
/// it is written to a temporary file in the target's folder and renamed into place, never over
/// an existing file. Made before a request whose answer must not be lost (device tokens), so
/// that an unusable `--out` is refused before anything is sent.
pub(crate) struct NewPrivateFile {
    path: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl NewPrivateFile {
    /// Refuses if `path` exists; creates the temporary file next to it.
    pub(crate) fn begin(path: &Path) -> Result<NewPrivateFile> {
        if path.symlink_metadata().is_ok() {
            bail!("{} exists; it is never overwritten: choose another file", path.display());
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // tempfile creates its files with mode 0600 on Unix.
        let temp = tempfile::Builder::new()
            .prefix(".imager-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        Ok(NewPrivateFile { path: path.to_owned(), temp })
    }

    /// Writes `bytes` and renames the file into place. If that fails, the temporary file is
    /// kept and named in the error, so its content is not lost.
    pub(crate) fn finish(mut self, bytes: &[u8]) -> Result<()> {
        let path = self.path;
        let written = self.temp.write_all(bytes).and_then(|()| self.temp.as_file().sync_all());
        let failed = match written {
            Ok(()) => match self.temp.persist_noclobber(&path) {
                Ok(_) => return Ok(()),
                Err(e) => (e.error, e.file),
            },
            Err(e) => (e, self.temp),
        };
        let (error, temp) = failed;
        match temp.keep() {
            Ok((_, kept)) => Err(anyhow!(
                "cannot write {}: {error}; what was to go there is in {}",
                path.display(),
                kept.display()
            )),
            Err(e) => {
                Err(anyhow!("cannot write {}: {error} (and cannot keep {e})", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_is_never_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("os.elf");
        std::fs::write(&input, b"elf").unwrap();
        let other = dir.path().join("other.bin");
        std::fs::write(&other, b"x").unwrap();
        // The same file by another spelling is found.
        let same = dir.path().join(".").join("os.elf");
        let err = refuse_input_as_output(&same, &[&other, &input]).unwrap_err().to_string();
        assert!(err.contains("is also an input"), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), b"elf");
        refuse_input_as_output(&dir.path().join("new.fwi"), &[&input]).unwrap();
        refuse_input_as_output(&other, &[&input]).unwrap();
    }
}
