//! Which keys a reader trusts, and checking a header's signatures against them.

use ed25519_dalek::{Signature, VerifyingKey};

use super::error::{ImageError, KeyIds};
use super::{Header, KeyId};

/// An Ed25519 public key a reader trusts, with its key id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TrustedKey {
    id: KeyId,
    key: VerifyingKey,
}

/// A 32-byte value that is not a usable Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("not a usable Ed25519 public key (invalid or weak point)")]
pub struct BadPublicKey;

impl TrustedKey {
    /// Trusts the Ed25519 public key `raw`. Refuses invalid and small-order (weak) points.
    pub fn from_bytes(raw: &[u8; 32]) -> Result<Self, BadPublicKey> {
        let key = VerifyingKey::from_bytes(raw).map_err(|_| BadPublicKey)?;
        if key.is_weak() {
            return Err(BadPublicKey);
        }
        Ok(TrustedKey { id: KeyId::of_public_key(raw), key })
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The 32-byte public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `signature` is this key's strict Ed25519 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = Signature::from_bytes(signature);
        self.key.verify_strict(message, &signature).is_ok()
    }
}

/// Checks the header's signatures: at least one must be by a trusted key, and every signature
/// by a trusted key must verify. Signatures by other keys are ignored (another party may
/// co-sign). Returns the id of the first trusted key that signed.
pub fn verify_signatures(header: &Header<'_>, trusted: &[TrustedKey]) -> Result<KeyId, ImageError> {
    let mut verified = None;
    let mut signers = KeyIds::default();
    for record in header.signatures() {
        // A header holds at most MAX_SIGNATURES records, the capacity of `signers`.
        let _ = signers.0.push(record.key_id);
        let Some(key) = trusted.iter().find(|k| k.id == record.key_id) else {
            continue;
        };
        if !key.verifies(header.manifest_bytes(), &record.signature) {
            return Err(ImageError::BadSignature(record.key_id));
        }
        verified.get_or_insert(record.key_id);
    }
    verified.ok_or(ImageError::UnknownKey { signers })
}
