//! Identifiers: the image id (what an image installs) and the key id (who signed it).

use core::fmt;
use sha2::{Digest, Sha256};

/// The id of an image: the SHA-256 of its manifest bytes.
///
/// The manifest lists every component's address, length and hash, so the id names the exact
/// installed content; the same id in test and in production means the same bytes.
///
/// Serialized as its 32 bytes where the format is binary (postcard: manifests, release
/// statements, the serial link) and as 64 lowercase hex digits where it is meant to be read
/// (JSON), so the HTTP APIs carry typed ids without a string in between.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(pub [u8; 32]);

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

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

/// Text that is not the hex form of an id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NotHex;

impl core::fmt::Display for NotHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an id: expected lowercase or uppercase hex digits of the right length")
    }
}

impl core::str::FromStr for ImageId {
    type Err = NotHex;
    fn from_str(text: &str) -> Result<Self, NotHex> {
        ImageId::from_hex(text).ok_or(NotHex)
    }
}

impl core::str::FromStr for KeyId {
    type Err = NotHex;
    fn from_str(text: &str) -> Result<Self, NotHex> {
        KeyId::from_hex(text).ok_or(NotHex)
    }
}

/// Names a signing key: the first 8 bytes of the SHA-256 of its 32-byte Ed25519 public key.
/// Serialized like [`ImageId`]: bytes in binary formats, hex in JSON.
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

/// Serde for an id of `N` bytes: the bytes where the format is binary, hex where it is read by
/// people (`is_human_readable`).
macro_rules! hex_serde {
    ($($t:ident: $n:literal),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    let mut text = [0u8; 2 * $n];
                    for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
                        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
                        pair[1] = HEX_DIGITS[usize::from(byte & 0xf)];
                    }
                    // Hex digits are ASCII.
                    serializer.serialize_str(core::str::from_utf8(&text).unwrap_or_default())
                } else {
                    self.0.serialize(serializer)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Hex;
                impl serde::de::Visitor<'_> for Hex {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{}: {} hex digits", stringify!($t), 2 * $n)
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$t, E> {
                        parse_hex(text)
                            .map($t)
                            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(text), &self))
                    }
                }
                if deserializer.is_human_readable() {
                    deserializer.deserialize_str(Hex)
                } else {
                    <[u8; $n]>::deserialize(deserializer).map($t)
                }
            }
        }
    )*};
}
hex_serde!(ImageId: 32, KeyId: 8);

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;
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

    #[test]
    fn serialized_as_bytes_in_postcard_and_hex_in_json() {
        let id = ImageId::of_manifest(b"abc");
        let mut buf = [0u8; 40];
        let bytes = postcard::to_slice(&id, &mut buf).unwrap();
        assert_eq!(bytes, &id.0[..], "postcard: the 32 bytes, as before");
        assert_eq!(postcard::from_bytes::<ImageId>(bytes).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<ImageId>(&json).unwrap(), id);
        let err = serde_json::from_str::<ImageId>("\"abc\"").unwrap_err().to_string();
        assert!(err.contains("ImageId: 64 hex digits"), "{err}");
        let key: KeyId = serde_json::from_str("\"0011223344556677\"").unwrap();
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"0011223344556677\"");
    }
}
