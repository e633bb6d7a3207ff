//! The provisioning record: what makes a device this device rather than another of its board —
//! its environment and the keys it trusts. The image cannot say it: the same image, byte for
//! byte, runs in test and in production. So the record lives outside the slots, written once at
//! the factory (on the micro:bit: the last erase unit of the bootloader partition, which the OS
//! cannot write), and both the bootloader (build keys) and the OS's update agent (build keys,
//! environment, environment keys) read it.
//!
//! ```text
//! "FWIP"  len:u16 LE  postcard(Provision) [postcard(RootKeys)]  crc32:u32 LE (ISO-HDLC, of all before it)
//! ```
//!
//! The root of trust (`RootKeys`, root public keys and a threshold) follows the record's first
//! part when the device is provisioned for trust statements (`docs/trust.md`); a record
//! without it, as written before, still reads, and such a device keeps its fixed keys.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::image::{BadPublicKey, TrustedKey};
use crate::trust::{Anchor, MAX_ROOT_KEYS, RootKeys};

/// The record's first four bytes.
pub const MAGIC: [u8; 4] = *b"FWIP";

/// Keys of each kind a record holds at most.
pub const MAX_KEYS: usize = 2;

/// Bytes a record takes at most (its postcard part with the longest environment name, 64
/// bytes, every key, and the root of trust).
pub const MAX_LEN: usize = 4 + 2 + 1 + 64 + 2 * (1 + MAX_KEYS * 32) + (2 + MAX_ROOT_KEYS * 32) + 4;

const CRC: crc::Crc<u32, crc::NoTable> = crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

/// A device's provisioning.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Provision<'a> {
    /// The environment the device belongs to (`test`, `prod`, ...).
    pub environment: &'a str,
    /// Ed25519 public keys images must be signed by.
    pub build_keys: Vec<[u8; 32], MAX_KEYS>,
    /// Ed25519 public keys the environment's release statements are signed by.
    pub environment_keys: Vec<[u8; 32], MAX_KEYS>,
    /// The root of trust, if the device takes its keys from trust statements; encoded after
    /// the fields above, so that records written before it existed still read.
    #[serde(skip)]
    pub root: Option<RootKeys>,
}

/// Why a provisioning record is unusable.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ProvisionError {
    /// No record (erased flash, or something else).
    #[error("no provisioning record (no FWIP magic)")]
    Missing,
    /// The length field points past the area.
    #[error("provisioning record truncated")]
    Truncated,
    /// The CRC does not match.
    #[error("provisioning record damaged (CRC mismatch)")]
    Crc,
    /// The CRC matched but the contents do not parse.
    #[error("provisioning record malformed")]
    Malformed,
    /// Names no build key, or a key is not a usable Ed25519 public key.
    #[error("provisioning record holds no usable build key")]
    NoBuildKey,
    /// The root of trust has an unusable key or threshold.
    #[error("provisioning record: root of trust has an unusable key or threshold")]
    BadRoot,
    /// A key is not a usable Ed25519 public key.
    #[error("provisioning record: {0}")]
    BadKey(#[from] BadPublicKey),
}

impl<'a> Provision<'a> {
    /// Reads a record from the start of `area`.
    pub fn parse(area: &'a [u8]) -> Result<Self, ProvisionError> {
        if area.get(..4) != Some(&MAGIC[..]) {
            return Err(ProvisionError::Missing);
        }
        let len = area.get(4..6).ok_or(ProvisionError::Truncated)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let end = 6 + len;
        let crc = area.get(end..end + 4).ok_or(ProvisionError::Truncated)?;
        if CRC.checksum(&area[..end]).to_le_bytes() != crc {
            return Err(ProvisionError::Crc);
        }
        let record: Provision<'a> = match postcard::take_from_bytes(&area[6..end]) {
            Ok((record, [])) => record,
            Ok((mut record, rest)) => {
                let root: RootKeys = match postcard::take_from_bytes(rest) {
                    Ok((root, [])) => root,
                    _ => return Err(ProvisionError::Malformed),
                };
                root.check().map_err(|_| ProvisionError::BadRoot)?;
                record.root = Some(root);
                record
            }
            _ => return Err(ProvisionError::Malformed),
        };
        if record.build_keys.is_empty() {
            return Err(ProvisionError::NoBuildKey);
        }
        Ok(record)
    }

    /// The build keys, ready to verify with.
    pub fn build_keys(&self) -> Result<Vec<TrustedKey, MAX_KEYS>, ProvisionError> {
        trusted(&self.build_keys)
    }

    /// The environment's keys, ready to verify with.
    pub fn environment_keys(&self) -> Result<Vec<TrustedKey, MAX_KEYS>, ProvisionError> {
        trusted(&self.environment_keys)
    }

    /// The trust anchor before any statement: the provisioned root at version 0.
    pub fn anchor(&self) -> Option<Anchor> {
        self.root.clone().map(|root| Anchor { version: 0, root })
    }

    /// The record's bytes.
    #[cfg(feature = "std")]
    pub fn encode(&self) -> std::vec::Vec<u8> {
        let mut body = postcard::to_stdvec(self).expect("a provisioning record always serializes");
        if let Some(root) = &self.root {
            body.extend(postcard::to_stdvec(root).expect("root keys always serialize"));
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(body.len() as u16).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = CRC.checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

fn trusted(keys: &[[u8; 32]]) -> Result<Vec<TrustedKey, MAX_KEYS>, ProvisionError> {
    let mut out = Vec::new();
    for raw in keys {
        // At most MAX_KEYS, as the source.
        let _ = out.push(TrustedKey::from_bytes(raw)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes()
    }

    fn record() -> Provision<'static> {
        Provision {
            environment: "prod",
            build_keys: Vec::from_slice(&[key(1)]).unwrap(),
            environment_keys: Vec::from_slice(&[key(2), key(3)]).unwrap(),
            root: None,
        }
    }

    #[test]
    fn a_root_of_trust_round_trips_and_old_records_still_read() {
        let root = RootKeys { threshold: 1, keys: Vec::from_slice(&[key(9)]).unwrap() };
        let with_root = Provision { root: Some(root.clone()), ..record() };
        let bytes = with_root.encode();
        assert!(bytes.len() <= MAX_LEN);
        let parsed = Provision::parse(&bytes).unwrap();
        assert_eq!(parsed.root, Some(root.clone()));
        assert_eq!(parsed.anchor().unwrap().version, 0);
        assert_eq!(Provision::parse(&record().encode()).unwrap().root, None);
        let bad = Provision { root: Some(RootKeys { threshold: 2, ..root }), ..record() };
        assert_eq!(Provision::parse(&bad.encode()), Err(ProvisionError::BadRoot));
    }

    #[test]
    fn round_trip_and_keys() {
        let mut area = record().encode();
        assert!(area.len() <= MAX_LEN);
        area.resize(1024, 0xFF); // the rest of the erase unit, erased
        let parsed = Provision::parse(&area).unwrap();
        assert_eq!(parsed, record());
        assert_eq!(parsed.build_keys().unwrap().len(), 1);
        assert_eq!(parsed.environment_keys().unwrap().len(), 2);
    }

    #[test]
    fn damaged_records_are_refused() {
        let good = record().encode();
        assert_eq!(Provision::parse(&[0xFF; 64]), Err(ProvisionError::Missing));
        assert_eq!(Provision::parse(&[]), Err(ProvisionError::Missing));
        for n in 4..good.len() {
            assert_eq!(Provision::parse(&good[..n]), Err(ProvisionError::Truncated), "cut at {n}");
        }
        for i in 4..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(Provision::parse(&bad).is_err(), "byte {i} changed");
        }
        let no_keys = Provision { build_keys: Vec::new(), ..record() }.encode();
        assert_eq!(Provision::parse(&no_keys), Err(ProvisionError::NoBuildKey));
        let mut weak = record();
        weak.environment_keys[0] = [0; 32];
        let weak = weak.encode();
        let parsed = Provision::parse(&weak).unwrap();
        assert!(matches!(parsed.environment_keys(), Err(ProvisionError::BadKey(_))));
    }
}
