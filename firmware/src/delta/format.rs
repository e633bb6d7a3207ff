//! The fixed start of a patch: what it turns into what, and how its body is cut.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "FWDP"
//! 4       2     patch format version, u16 little-endian (1)
//! 6       1     block shift B: segments restart every 2^B installed bytes (10..=16)
//! 7       1     reserved, zero
//! 8       4     body length L, u32 little-endian
//! 12      4     CRC-32 (ISO-HDLC) of the body
//! 16      32    source image id
//! 48      32    target image id
//! 80      4     CRC-32 (ISO-HDLC) of bytes 0..80
//! 84      H     the target image's header, unchanged (prefix, manifest, signatures)
//! 84+H    L     body: every segment of every target component, in order
//! ```
//!
//! The body's CRC is not there for security (the signature and the component hashes are):
//! a range-coded stream may decode to the same bytes with a low bit of it flipped, and a device
//! should still refuse a patch that was damaged on its way.

use crc::{CRC_32_ISO_HDLC, Crc, NoTable};

use crate::image::ImageId;

/// The four bytes a patch starts with.
pub const PATCH_MAGIC: [u8; 4] = *b"FWDP";
/// The patch format version this code reads and writes.
pub const PATCH_VERSION: u16 = 1;
/// Smallest block shift: segments of 1 KiB.
pub const MIN_BLOCK_SHIFT: u8 = 10;
/// Largest block shift: segments of 64 KiB.
pub const MAX_BLOCK_SHIFT: u8 = 16;

const CRC: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISO_HDLC);

/// Why a patch's fixed start was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum PatchError {
    /// It does not start with the patch magic.
    #[error("not a patch (it does not start with \"FWDP\")")]
    NotAPatch,
    /// Fewer bytes than the fixed start.
    #[error("patch truncated: its fixed start needs {needed} bytes, {have} given")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        have: usize,
    },
    /// A version this reader does not know.
    #[error("patch format version {0} is not supported (this reader knows version 1)")]
    UnsupportedVersion(u16),
    /// The fixed start's checksum does not match: a damaged byte.
    #[error("patch header checksum is {stored:#010x}, its bytes give {actual:#010x}")]
    Checksum {
        /// Checksum in the patch.
        stored: u32,
        /// Checksum of the bytes.
        actual: u32,
    },
    /// The block shift is outside 10..=16.
    #[error("patch block shift {0} is outside 10..=16")]
    BlockShift(u8),
    /// The reserved byte is not zero.
    #[error("patch reserved byte is {0:#04x}, must be zero")]
    Reserved(u8),
    /// The patch's target id is not the id of the header it carries.
    #[error("patch names target {named}, the header it carries is image {carried}")]
    TargetMismatch {
        /// Target id in the fixed start.
        named: ImageId,
        /// Id of the carried header.
        carried: ImageId,
    },
}

/// The fixed start of a patch, checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PatchPrefix {
    /// The image the patch applies to (what slot A must hold).
    pub source: ImageId,
    /// The image it rebuilds.
    pub target: ImageId,
    /// Segments restart every `2^block_shift` installed bytes.
    pub block_shift: u8,
    /// Length of the body.
    pub body_len: u32,
    /// CRC-32 of the body.
    pub body_crc: u32,
}

impl PatchPrefix {
    /// Length of the fixed start.
    pub const LEN: usize = 84;

    /// Reads the fixed start at the beginning of `bytes` (which may hold more).
    pub fn parse(bytes: &[u8]) -> Result<Self, PatchError> {
        let seen = bytes.len().min(PATCH_MAGIC.len());
        if bytes.get(..seen) != PATCH_MAGIC.get(..seen) {
            return Err(PatchError::NotAPatch);
        }
        let Some(prefix) = bytes.get(..Self::LEN) else {
            return Err(PatchError::Truncated { needed: Self::LEN, have: bytes.len() });
        };
        let field = |at: usize| -> [u8; 4] {
            let mut out = [0; 4];
            out.copy_from_slice(prefix.get(at..at + 4).unwrap_or(&[0; 4]));
            out
        };
        let version = u16::from_le_bytes([field(4)[0], field(4)[1]]);
        if version != PATCH_VERSION {
            return Err(PatchError::UnsupportedVersion(version));
        }
        let stored = u32::from_le_bytes(field(80));
        let actual = CRC.checksum(prefix.get(..80).unwrap_or_default());
        if stored != actual {
            return Err(PatchError::Checksum { stored, actual });
        }
        let [_, _, block_shift, reserved] = field(4);
        if !(MIN_BLOCK_SHIFT..=MAX_BLOCK_SHIFT).contains(&block_shift) {
            return Err(PatchError::BlockShift(block_shift));
        }
        if reserved != 0 {
            return Err(PatchError::Reserved(reserved));
        }
        let id = |at: usize| {
            let mut out = [0; 32];
            out.copy_from_slice(prefix.get(at..at + 32).unwrap_or(&[0; 32]));
            ImageId(out)
        };
        Ok(PatchPrefix {
            source: id(16),
            target: id(48),
            block_shift,
            body_len: u32::from_le_bytes(field(8)),
            body_crc: u32::from_le_bytes(field(12)),
        })
    }

    /// What the body decoder needs, with the source's range (from its header, see
    /// [`super::source_range`]).
    pub fn body_layout(&self, source_start: u32, source_end: u32) -> BodyLayout {
        BodyLayout {
            body_len: self.body_len,
            body_crc: self.body_crc,
            block_shift: self.block_shift,
            source_start,
            source_end,
        }
    }

    /// The fixed start's bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..4].copy_from_slice(&PATCH_MAGIC);
        out[4..6].copy_from_slice(&PATCH_VERSION.to_le_bytes());
        out[6] = self.block_shift;
        out[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.body_crc.to_le_bytes());
        out[16..48].copy_from_slice(&self.source.0);
        out[48..80].copy_from_slice(&self.target.0);
        let crc = CRC.checksum(&out[..80]);
        out[80..].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// What the body decoder needs to know about a patch and its source.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BodyLayout {
    /// Length of the body.
    pub body_len: u32,
    /// CRC-32 of the body.
    pub body_crc: u32,
    /// Segments restart every `2^block_shift` installed bytes.
    pub block_shift: u8,
    /// Installed offset of the source's first component: copies read at or after it.
    pub source_start: u32,
    /// Installed offset just past the source's last component: copies read before it.
    pub source_end: u32,
}

impl BodyLayout {
    /// The first block boundary after installed offset `at` (`u32::MAX` past the last).
    pub fn next_block(&self, at: u32) -> u32 {
        let shift = u32::from(self.block_shift.min(31));
        let next = ((u64::from(at) >> shift) + 1) << shift;
        u32::try_from(next).unwrap_or(u32::MAX)
    }

    /// Whether a segment starts at installed offset `at` (inside a component).
    pub fn is_block_boundary(&self, at: u32) -> bool {
        let mask = (1u32 << self.block_shift.min(31)) - 1;
        at & mask == 0
    }
}

/// The CRC-32 (ISO-HDLC) register before any byte.
pub const CRC_START: u32 = 0xFFFF_FFFF;

/// The CRC-32 (ISO-HDLC) register after `byte`, bit by bit: no table, and a register a
/// checkpoint can save (the checksum is the register inverted, see [`crc_value`]).
pub fn crc_update(mut register: u32, byte: u8) -> u32 {
    register ^= u32::from(byte);
    for _ in 0..8 {
        register = (register >> 1) ^ (0xEDB8_8320 & 0u32.wrapping_sub(register & 1));
    }
    register
}

/// The CRC-32 a register stands for.
pub fn crc_value(register: u32) -> u32 {
    !register
}
