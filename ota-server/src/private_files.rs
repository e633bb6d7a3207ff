//! Files that hold secrets: the SQLite database keeps the `dev` and `test` release private keys
//! and every token's hash, so it is created readable by its owner only, and the server refuses
//! to open it once someone loosened that (as `ssh` refuses a private key others can read). The
//! data folder is made owner-only too; a looser folder is only warned about, since the folder
//! itself holds no secret and the database inside it is checked.

use std::io;
use std::path::{Path, PathBuf};

/// Permission bits for group and others: none may be set on a file holding secrets.
#[cfg(unix)]
const OTHERS: u32 = 0o077;

/// Creates `dir` (and its parents) and makes it owner-only (0700).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates the empty file `path`, owner-only (0600), unless it exists. SQLite then writes its
/// database into it, and gives the `-wal` and `-shm` files it makes beside it the same mode.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The SQLite database at `db` and the files SQLite keeps beside it: which of them group or
/// others may access, with their modes. Empty when all are owner-only (or absent).
pub fn loosened(db: &Path) -> io::Result<Vec<(PathBuf, u32)>> {
    let mut found = Vec::new();
    #[cfg(unix)]
    for path in database_files(db) {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&path) {
            Ok(meta) if meta.permissions().mode() & OTHERS != 0 => {
                found.push((path, meta.permissions().mode() & 0o777))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Whether group or others may enter or list `dir` (false where that cannot be asked).
pub fn dir_is_loose(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir) {
            return meta.permissions().mode() & OTHERS != 0;
        }
    }
    false
}

/// The error for database files others may read, naming each with its mode and the command that
/// fixes them.
pub fn refusal(db: &Path, loose: &[(PathBuf, u32)]) -> String {
    let listed: Vec<String> =
        loose.iter().map(|(path, mode)| format!("{} (mode {mode:04o})", path.display())).collect();
    let paths: Vec<String> = database_files(db)
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "{} can be read or written by group or others, and the database holds release private \
         keys and token hashes; the server does not open it so. Make it owner-only: chmod 600 {}",
        listed.join(", "),
        paths.join(" ")
    )
}

/// `ota.db`, `ota.db-wal`, `ota.db-shm`.
fn database_files(db: &Path) -> Vec<PathBuf> {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    vec![db.to_owned(), with("-wal"), with("-shm")]
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn made_owner_only_and_loosening_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        create_private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert!(!dir_is_loose(&data));
        let db = data.join("ota.db");
        create_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert!(loosened(&db).unwrap().is_empty());
        // An existing file is left as it is (its contents too).
        std::fs::write(&db, b"kept").unwrap();
        create_private_file(&db).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"kept");

        std::fs::write(data.join("ota.db-wal"), b"").unwrap();
        std::fs::set_permissions(data.join("ota.db-wal"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let loose = loosened(&db).unwrap();
        assert_eq!(loose, [(data.join("ota.db-wal"), 0o644)]);
        let message = refusal(&db, &loose);
        assert!(message.contains("ota.db-wal (mode 0644)"), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(dir_is_loose(&data));
    }
}
