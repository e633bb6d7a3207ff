//! The header that starts both forms of an image: a fixed prefix, the manifest, signatures.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "FWIM"
//! 4       2     format version, u16 little-endian (1)
//! 6       2     manifest length M, u16 little-endian (1..=MAX_MANIFEST_LEN)
//! 8       1     signature count S (1..=MAX_SIGNATURES)
//! 9       7     reserved, zero
//! 16      M     manifest (postcard)
//! 16+M    72*S  signature records: key id (8), Ed25519 signature over the manifest (64)
//! ```

use super::error::ImageError;
use super::{FORMAT_VERSION, ImageId, KeyId, MAGIC, MAX_MANIFEST_LEN, MAX_SIGNATURES, Manifest};

/// The fixed 16 bytes at the start of a header: they give the header's length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Prefix {
    manifest_len: u16,
    signature_count: u8,
}

impl Prefix {
    /// Length of the prefix in bytes.
    pub const LEN: usize = 16;

    /// A prefix for a manifest of `manifest_len` bytes and `signature_count` signatures.
    pub fn new(manifest_len: usize, signature_count: usize) -> Result<Self, ImageError> {
        let manifest_len = u16::try_from(manifest_len)
            .ok()
            .filter(|&len| len > 0 && usize::from(len) <= MAX_MANIFEST_LEN)
            .ok_or(ImageError::ManifestLength { len: manifest_len, max: MAX_MANIFEST_LEN })?;
        let signature_count = u8::try_from(signature_count)
            .ok()
            .filter(|&n| n > 0 && usize::from(n) <= MAX_SIGNATURES)
            .ok_or(ImageError::SignatureCount(signature_count.min(255) as u8))?;
        Ok(Prefix { manifest_len, signature_count })
    }

    /// Reads the prefix at the start of `bytes` (which may hold more than the prefix).
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        let magic_seen = bytes.len().min(MAGIC.len());
        if bytes[..magic_seen] != MAGIC[..magic_seen] {
            return Err(ImageError::NotAnImage);
        }
        let Some(prefix) = bytes.get(..Self::LEN) else {
            return Err(ImageError::TruncatedHeader { needed: Self::LEN, have: bytes.len() });
        };
        let version = u16::from_le_bytes([prefix[4], prefix[5]]);
        if version != FORMAT_VERSION {
            return Err(ImageError::UnsupportedFormat(version));
        }
        if let Some(offset) = (9..Self::LEN).find(|&i| prefix[i] != 0) {
            return Err(ImageError::ReservedByte { offset });
        }
        let manifest_len = usize::from(u16::from_le_bytes([prefix[6], prefix[7]]));
        Self::new(manifest_len, usize::from(prefix[8])).map_err(|err| match err {
            ImageError::SignatureCount(_) => ImageError::SignatureCount(prefix[8]),
            other => other,
        })
    }

    /// The prefix's bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&self.manifest_len.to_le_bytes());
        out[8] = self.signature_count;
        out
    }

    /// Length of the manifest that follows.
    pub fn manifest_len(&self) -> usize {
        usize::from(self.manifest_len)
    }

    /// Number of signature records after the manifest.
    pub fn signature_count(&self) -> usize {
        usize::from(self.signature_count)
    }

    /// Length of the whole header: prefix, manifest, signatures.
    pub fn header_len(&self) -> usize {
        Self::LEN + self.manifest_len() + self.signature_count() * SignatureRecord::LEN
    }
}

/// One signature: who signed (key id) and the Ed25519 signature over the manifest bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SignatureRecord {
    /// The signing key's id.
    pub key_id: KeyId,
    /// Ed25519 signature of the manifest bytes.
    pub signature: [u8; 64],
}

impl SignatureRecord {
    /// Length of a record in bytes.
    pub const LEN: usize = 72;

    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        let mut key_id = [0; 8];
        let mut signature = [0; 64];
        key_id.copy_from_slice(&bytes[..8]);
        signature.copy_from_slice(&bytes[8..Self::LEN]);
        SignatureRecord { key_id: KeyId(key_id), signature }
    }

    /// The record's bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.key_id.0);
        out[8..].copy_from_slice(&self.signature);
        out
    }
}

/// A parsed header. Its manifest satisfies every rule of the format; its signatures are not
/// checked yet (see [`super::verify_signatures`]).
#[derive(Clone, Debug)]
pub struct Header<'a> {
    prefix: Prefix,
    manifest: Manifest,
    manifest_bytes: &'a [u8],
    signature_bytes: &'a [u8],
}

impl<'a> Header<'a> {
    /// Reads the header at the start of `bytes` (which may hold more than the header).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let prefix = Prefix::parse(bytes)?;
        let len = prefix.header_len();
        if bytes.len() < len {
            return Err(ImageError::TruncatedHeader { needed: len, have: bytes.len() });
        }
        let manifest_end = Prefix::LEN + prefix.manifest_len();
        let manifest_bytes = &bytes[Prefix::LEN..manifest_end];
        let signature_bytes = &bytes[manifest_end..len];
        // Decoded where it will stay: a manifest is 660 bytes, too much to copy around on a
        // small device's stack.
        let mut header =
            Header { prefix, manifest: Manifest::EMPTY, manifest_bytes, signature_bytes };
        header.manifest.decode_in_place(manifest_bytes)?;
        let mut seen = heapless::Vec::<KeyId, MAX_SIGNATURES>::new();
        for record in header.signatures() {
            if seen.contains(&record.key_id) || seen.push(record.key_id).is_err() {
                return Err(ImageError::DuplicateSignature(record.key_id));
            }
        }
        Ok(header)
    }

    /// Header length in bytes.
    pub fn len(&self) -> usize {
        self.prefix.header_len()
    }

    /// Always false: a header holds at least a prefix.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The image id: SHA-256 of the manifest bytes.
    pub fn id(&self) -> ImageId {
        ImageId::of_manifest(self.manifest_bytes)
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest bytes exactly as signed.
    pub fn manifest_bytes(&self) -> &'a [u8] {
        self.manifest_bytes
    }

    /// The signature records, in order.
    pub fn signatures(&self) -> impl Iterator<Item = SignatureRecord> + 'a {
        self.signature_bytes.chunks_exact(SignatureRecord::LEN).map(SignatureRecord::from_bytes)
    }

    /// Writes a header from the manifest bytes and its signatures.
    #[cfg(feature = "std")]
    pub fn encode(
        manifest_bytes: &[u8],
        signatures: &[SignatureRecord],
    ) -> Result<alloc::vec::Vec<u8>, ImageError> {
        let prefix = Prefix::new(manifest_bytes.len(), signatures.len())?;
        let mut out = alloc::vec::Vec::with_capacity(prefix.header_len());
        out.extend_from_slice(&prefix.encode());
        out.extend_from_slice(manifest_bytes);
        for record in signatures {
            out.extend_from_slice(&record.encode());
        }
        Ok(out)
    }
}
