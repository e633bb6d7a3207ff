//! Identifiers: the image id (what an image installs) and the key id (who signed it).

use core::fmt;
use sha2::{Digest, Sha256};

/// The id of an image: the SHA-256 of its manifest bytes.
///
/// The manifest lists every component's address, length and hash, so the id names the exact
/// installed content; the same id in test and in production means the same bytes.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ImageId(pub [u8; 32]);

impl ImageId {
    /// The id of the image whose manifest is `manifest_bytes`.
    pub fn of_manifest(manifest_bytes: &[u8]) -> Self {
        ImageId(Sha256::digest(manifest_bytes).into())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        parse_hex(text).map(ImageId)
    }
}

/// Names a signing key: the first 8 bytes of the SHA-256 of its 32-byte Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of the Ed25519 public key `public_key`.
    pub fn of_public_key(public_key: &[u8; 32]) -> Self {
        let digest: [u8; 32] = Sha256::digest(public_key).into();
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    /// Parses 16 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        parse_hex(text).map(KeyId)
    }
}

/// A SHA-256 digest, displayed as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

macro_rules! hex_formatting {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($t))
            }
        }
    )*};
}
hex_formatting!(ImageId, KeyId, Sha256Digest);

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn hex_round_trip() {
        let id = ImageId::of_manifest(b"abc");
        assert_eq!(
            id.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ImageId::from_hex(&id.to_string()), Some(id));
        assert_eq!(ImageId::from_hex("ba78"), None);
        assert_eq!(KeyId::from_hex("00112233445566zz"), None);
        assert_eq!(KeyId::from_hex("0011223344556677").unwrap().0[7], 0x77);
    }
}
