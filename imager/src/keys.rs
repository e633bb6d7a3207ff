//! Ed25519 key files: private keys as PKCS#8 PEM, public keys as SPKI PEM — the forms
//! `openssl pkey` reads and writes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use firmware::image::{KeyId, TrustedKey};
use pkcs8::der::pem;
use pkcs8::spki::{EncodePublicKey, SubjectPublicKeyInfoRef};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding, PrivateKeyInfoRef};

use crate::write;

/// The files `keygen` wrote.
#[derive(Debug)]
pub struct KeyPairFiles {
    /// `PREFIX.pem`: the private key.
    pub private: PathBuf,
    /// `PREFIX.pub.pem`: the public key.
    pub public: PathBuf,
    /// The key's id, as it appears in image headers.
    pub key_id: KeyId,
}

/// The id of a public key.
pub fn key_id(key: &VerifyingKey) -> KeyId {
    KeyId::of_public_key(&key.to_bytes())
}

/// The prefix `keygen` extends: `--out build.pem` means the pair `build.pem` and
/// `build.pub.pem` (not `build.pem.pem`), as `--out build` does. A `.pub.pem` name is refused:
/// it names the public half, and the private key would land beside it under another name.
fn key_prefix(out: &Path) -> Result<PathBuf> {
    let Some(name) = out.file_name().and_then(|n| n.to_str()) else {
        return Ok(out.to_owned());
    };
    if name.ends_with(".pub.pem") {
        bail!(
            "{}: names a public key file; give the prefix (PREFIX writes PREFIX.pem and PREFIX.pub.pem)",
            out.display()
        );
    }
    match name.strip_suffix(".pem") {
        Some(stem) if !stem.is_empty() => Ok(out.with_file_name(stem)),
        _ => Ok(out.to_owned()),
    }
}

/// Generates a key pair from the operating system's random source and writes `PREFIX.pem`
/// (private, mode 0600) and `PREFIX.pub.pem`. Never overwrites: if either file exists,
/// nothing is written.
pub fn keygen(prefix: &Path) -> Result<KeyPairFiles> {
    let prefix = &key_prefix(prefix)?;
    let with_suffix = |suffix: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let (private, public) = (with_suffix(".pem"), with_suffix(".pub.pem"));
    for path in [&private, &public] {
        if path.exists() {
            bail!("{} already exists; keygen never overwrites a key", path.display());
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|err| anyhow!("no random source: {err}"))?;
    let key = SigningKey::from_bytes(&seed);
    // PKCS#8 v1 (seed only), the form `openssl genpkey -algorithm ed25519` writes; OpenSSL 3.0
    // does not read the v2 form that also embeds the public key.
    let keypair = ed25519_dalek::pkcs8::KeypairBytes { secret_key: seed, public_key: None };
    let private_pem =
        keypair.to_pkcs8_pem(LineEnding::LF).context("cannot encode the private key")?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .context("cannot encode the public key")?;
    write::create_new(&private, private_pem.as_bytes(), true)?;
    if let Err(err) = write::create_new(&public, public_pem.as_bytes(), false) {
        // Leave no half pair behind.
        let _ = std::fs::remove_file(&private);
        return Err(err);
    }
    Ok(KeyPairFiles { private, public, key_id: key_id(&key.verifying_key()) })
}

/// Reads an Ed25519 private key (PKCS#8 PEM). Any other kind of key is refused, named.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let (label, der) = read_pem(path)?;
    let what = || format!("{}", path.display());
    match label.as_str() {
        "PRIVATE KEY" => {
            let info = PrivateKeyInfoRef::try_from(der.as_slice())
                .map_err(|err| anyhow!("{}: not a PKCS#8 private key: {err}", what()))?;
            let oid = info.algorithm.oid.to_string();
            if oid != ED25519_OID {
                bail!(
                    "{}: is {}; images are signed with Ed25519 keys only (make one with `imager keygen`)",
                    what(),
                    algorithm_name(&oid)
                );
            }
            SigningKey::from_pkcs8_der(&der)
                .map_err(|err| anyhow!("{}: bad Ed25519 private key: {err}", what()))
        }
        "ENCRYPTED PRIVATE KEY" => {
            bail!("{}: is encrypted; decrypt it first (`openssl pkey -in KEY -out PLAIN`)", what())
        }
        "EC PRIVATE KEY" => {
            bail!("{}: is an ECDSA key; images are signed with Ed25519 keys only", what())
        }
        "RSA PRIVATE KEY" => {
            bail!("{}: is an RSA key; images are signed with Ed25519 keys only", what())
        }
        "PUBLIC KEY" => {
            bail!("{}: is a public key; signing needs the private key (PREFIX.pem)", what())
        }
        other => bail!("{}: holds a PEM {other:?}, not a private key", what()),
    }
}

/// Reads an Ed25519 public key (SPKI PEM), or the public half of a private key file.
pub fn read_public_key(path: &Path) -> Result<TrustedKey> {
    let (label, der) = read_pem(path)?;
    let what = || format!("{}", path.display());
    let key = match label.as_str() {
        "PUBLIC KEY" => {
            let info = SubjectPublicKeyInfoRef::try_from(der.as_slice())
                .map_err(|err| anyhow!("{}: not an SPKI public key: {err}", what()))?;
            let oid = info.algorithm.oid.to_string();
            if oid != ED25519_OID {
                bail!(
                    "{}: is {}; images are verified with Ed25519 keys only",
                    what(),
                    algorithm_name(&oid)
                );
            }
            let raw: [u8; 32] = info
                .subject_public_key
                .as_bytes()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("{}: an Ed25519 public key is 32 bytes", what()))?;
            raw
        }
        _ => read_signing_key(path)?.verifying_key().to_bytes(),
    };
    TrustedKey::from_bytes(&key).map_err(|err| anyhow!("{}: {err}", what()))
}

const ED25519_OID: &str = "1.3.101.112";

fn algorithm_name(oid: &str) -> String {
    let name = match oid {
        "1.3.101.113" => "an Ed448 key",
        "1.3.101.110" => "an X25519 key",
        "1.3.101.111" => "an X448 key",
        "1.2.840.10045.2.1" => "an ECDSA key",
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => "an RSA key",
        _ => return format!("a key of algorithm {oid}"),
    };
    name.into()
}

fn read_pem(path: &Path) -> Result<(String, Vec<u8>)> {
    let text =
        std::fs::read(path).with_context(|| format!("cannot read key {}", path.display()))?;
    let (label, der) = pem::decode_vec(&text)
        .map_err(|err| anyhow!("{}: not a PEM key file ({err})", path.display()))?;
    Ok((label.to_owned(), der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_name_is_the_private_key_file_not_a_prefix_to_extend() {
        let dir = tempfile::tempdir().unwrap();
        let files = keygen(&dir.path().join("build.pem")).unwrap();
        assert_eq!(files.private, dir.path().join("build.pem"));
        assert_eq!(files.public, dir.path().join("build.pub.pem"));
        // The same pair again, by either spelling, is refused and nothing is overwritten.
        let private = std::fs::read(&files.private).unwrap();
        assert!(keygen(&dir.path().join("build")).is_err());
        assert_eq!(std::fs::read(&files.private).unwrap(), private);
        let err = keygen(&dir.path().join("other.pub.pem")).unwrap_err().to_string();
        assert!(err.contains("names a public key file"), "{err}");
        assert!(!dir.path().join("other.pub.pem").exists());
        assert!(!dir.path().join("other.pub.pem.pem").exists());
    }
}
