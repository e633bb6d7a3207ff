//! Which keys a reader trusts, and checking a header's signatures against them.

use ed25519_dalek::{Signature, VerifyingKey};

use super::error::{ImageError, KeyIds};
use super::{Header, KeyId, Prefix, SignatureRecord};

/// An Ed25519 public key a reader trusts, with its key id.
///
/// Holds the key's 32 bytes, checked once when made, and decompresses the point only while it
/// verifies: a device keeps several keys for the length of a download, and the decompressed
/// point would cost 160 bytes of RAM each.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TrustedKey {
    id: KeyId,
    raw: [u8; 32],
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
        Ok(TrustedKey { id: KeyId::of_public_key(raw), raw: key.to_bytes() })
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The 32-byte public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.raw
    }

    /// Whether `signature` is this key's strict Ed25519 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        // Checked in `from_bytes`, so this decompression succeeds.
        let Ok(key) = VerifyingKey::from_bytes(&self.raw) else { return false };
        key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }
}

/// Checks the header's signatures: at least one must be by a trusted key, and every signature
/// by a trusted key must verify. Signatures by other keys are ignored (another party may
/// co-sign). Returns the id of the first trusted key that signed.
pub fn verify_signatures(header: &Header<'_>, trusted: &[TrustedKey]) -> Result<KeyId, ImageError> {
    verify_records(header.manifest_bytes(), header.signatures(), trusted)
}

/// [`verify_signatures`] on the raw bytes of a header, without decoding its manifest: for a
/// small device, which must verify from a stack frame that does not also hold the parsed
/// header (660 bytes under Ed25519's 8 KB). The manifest's own rules are [`Header::parse`]'s.
#[inline(never)]
pub fn verify_header_bytes(header: &[u8], trusted: &[TrustedKey]) -> Result<KeyId, ImageError> {
    let prefix = Prefix::parse(header)?;
    let len = prefix.header_len();
    if header.len() < len {
        return Err(ImageError::TruncatedHeader { needed: len, have: header.len() });
    }
    let manifest_end = Prefix::LEN + prefix.manifest_len();
    let records = header[manifest_end..len]
        .chunks_exact(SignatureRecord::LEN)
        .map(SignatureRecord::from_bytes);
    verify_records(&header[Prefix::LEN..manifest_end], records, trusted)
}

fn verify_records(
    manifest_bytes: &[u8],
    records: impl Iterator<Item = SignatureRecord>,
    trusted: &[TrustedKey],
) -> Result<KeyId, ImageError> {
    let mut verified = None;
    let mut signers = KeyIds::default();
    for record in records {
        // A header holds at most MAX_SIGNATURES records, the capacity of `signers`.
        let _ = signers.0.push(record.key_id);
        let Some(key) = trusted.iter().find(|k| k.id == record.key_id) else {
            continue;
        };
        if !key.verifies(manifest_bytes, &record.signature) {
            return Err(ImageError::BadSignature(record.key_id));
        }
        verified.get_or_insert(record.key_id);
    }
    verified.ok_or(ImageError::UnknownKey { signers })
}
