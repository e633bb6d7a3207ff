//! Turning one component's payload back into its installed bytes, as the payload streams in,
//! and checking them against the manifest (length and SHA-256).

use sha2::{Digest, Sha256};

use super::compression::Decoder;
use super::id::Sha256Digest;
use super::{Component, Compression};

/// What is wrong with a component's payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum UnpackError {
    /// The heatshrink stream cannot be decoded.
    #[error("payload is not a valid heatshrink stream")]
    Corrupt,
    /// The payload decodes to more bytes than the manifest says.
    #[error("payload decodes to more than the {size} bytes the manifest gives")]
    TooLong {
        /// Size in the manifest.
        size: u32,
    },
    /// The payload decodes to fewer bytes than the manifest says.
    #[error("payload decodes to {produced} bytes, the manifest gives {size}")]
    TooShort {
        /// Bytes decoded.
        produced: u32,
        /// Size in the manifest.
        size: u32,
    },
    /// More or fewer payload bytes than the manifest's stored size.
    #[error("payload is {given} bytes, the manifest gives {stored}")]
    StoredSize {
        /// Bytes fed.
        given: u64,
        /// Stored size in the manifest.
        stored: u32,
    },
    /// The decoded bytes do not hash to the manifest's SHA-256.
    #[error("hash mismatch: sha256 is {actual}, the manifest gives {expected}")]
    HashMismatch {
        /// Hash in the manifest.
        expected: Sha256Digest,
        /// Hash of the decoded bytes.
        actual: Sha256Digest,
    },
}

/// Why [`Unpacker::feed`] stopped: the payload is bad, or the output refused the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FeedError<E> {
    /// The payload is bad.
    Unpack(UnpackError),
    /// The output callback failed.
    Output(E),
}

// Sized for a decoder even when raw: one fixed RAM budget, no heap.
#[allow(clippy::large_enum_variant)]
enum Codec {
    Raw,
    Heatshrink(Decoder),
}

/// Decodes one component's payload chunk by chunk, hashing what it produces.
///
/// Feed it exactly the component's `stored_size` bytes, in chunks of any size, then call
/// [`Unpacker::finish`]. It never produces more than the manifest's size, so a corrupt or
/// hostile stream cannot make it write past the component.
pub struct Unpacker {
    codec: Codec,
    hasher: Sha256,
    size: u32,
    stored: u32,
    expected: [u8; 32],
    consumed: u64,
    produced: u32,
}

impl Unpacker {
    /// An unpacker for `component`.
    pub fn new(component: &Component) -> Self {
        let codec = match component.compression() {
            Compression::Raw => Codec::Raw,
            Compression::Heatshrink(params) => Codec::Heatshrink(Decoder::new(params)),
        };
        Unpacker {
            codec,
            hasher: Sha256::new(),
            size: component.size(),
            stored: component.stored_size(),
            expected: *component.sha256(),
            consumed: 0,
            produced: 0,
        }
    }

    /// Payload bytes still expected.
    pub fn remaining_input(&self) -> u64 {
        u64::from(self.stored).saturating_sub(self.consumed)
    }

    /// Installed bytes produced so far.
    pub fn produced(&self) -> u32 {
        self.produced
    }

    /// Feeds payload bytes; every installed byte they decode to is hashed and handed to
    /// `output`, in order.
    pub fn feed<E>(
        &mut self,
        input: &[u8],
        output: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        self.consumed += input.len() as u64;
        if self.consumed > u64::from(self.stored) {
            return Err(FeedError::Unpack(UnpackError::StoredSize {
                given: self.consumed,
                stored: self.stored,
            }));
        }
        let size = self.size;
        let hasher = &mut self.hasher;
        let produced = &mut self.produced;
        let mut emit = |bytes: &[u8]| -> Result<(), FeedError<E>> {
            let room = size - *produced;
            if bytes.len() as u64 > u64::from(room) {
                return Err(FeedError::Unpack(UnpackError::TooLong { size }));
            }
            *produced += bytes.len() as u32;
            hasher.update(bytes);
            output(bytes).map_err(FeedError::Output)
        };
        match &mut self.codec {
            Codec::Raw => emit(input),
            Codec::Heatshrink(decoder) => decoder
                .feed(input, &mut emit)
                .map_err(|err| err.unwrap_or(FeedError::Unpack(UnpackError::Corrupt))),
        }
    }

    /// Checks that the whole payload arrived and decoded to the manifest's length and hash.
    pub fn finish(self) -> Result<Sha256Digest, UnpackError> {
        if self.consumed != u64::from(self.stored) {
            return Err(UnpackError::StoredSize { given: self.consumed, stored: self.stored });
        }
        if self.produced != self.size {
            return Err(UnpackError::TooShort { produced: self.produced, size: self.size });
        }
        let actual: [u8; 32] = self.hasher.finalize().into();
        if actual != self.expected {
            return Err(UnpackError::HashMismatch {
                expected: Sha256Digest(self.expected),
                actual: Sha256Digest(actual),
            });
        }
        Ok(Sha256Digest(actual))
    }
}
