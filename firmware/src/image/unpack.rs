//! Turning one component's payload back into its installed bytes, as the payload streams in,
//! and checking them against the manifest (length and SHA-256).

use sha2::{Digest, Sha256};

use super::heatshrink::{Decoder, DecoderState};
use super::id::Sha256Digest;
use super::{Component, Compression};

/// What is wrong with a component's payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum UnpackError {
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
    /// Bits after the end of the content are not the zero padding of the final byte.
    #[error("payload has bits after the end of its content")]
    TrailingBits,
    /// The window buffer lent to the unpacker is too small for the component's compression.
    #[error("the decoder needs a {needed}-byte window")]
    WindowTooSmall {
        /// Bytes needed.
        needed: usize,
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

/// Where an unpacker is: enough, with its window, to continue in a new [`Unpacker`].
#[derive(Clone)]
pub struct Progress {
    /// Decoder state (`START` for raw components).
    pub decoder: DecoderState,
    /// Payload bytes used.
    pub consumed: u32,
    /// Installed bytes produced.
    pub produced: u32,
    /// Hash of the installed bytes produced.
    pub hasher: Sha256,
}

impl Progress {
    /// The start of a component.
    pub fn start() -> Self {
        Progress { decoder: DecoderState::START, consumed: 0, produced: 0, hasher: Sha256::new() }
    }
}

enum Codec<'w> {
    Raw,
    Heatshrink(Decoder<'w>),
}

/// Decodes one component's payload piece by piece, hashing what it produces.
///
/// Feed it the component's `stored_size` payload bytes, in pieces of any size, with
/// [`Unpacker::step`] (or [`Unpacker::feed`]), then call [`Unpacker::finish`]. It never produces
/// more than the manifest's size, so a corrupt or hostile stream cannot make it write past the
/// component. The heatshrink window is borrowed: the caller decides where that RAM comes from.
pub struct Unpacker<'w> {
    codec: Codec<'w>,
    hasher: Sha256,
    size: u32,
    stored: u32,
    expected: [u8; 32],
    consumed: u32,
    produced: u32,
}

impl<'w> Unpacker<'w> {
    /// An unpacker at the start of `component`'s payload.
    pub fn new(component: &Component, window: &'w mut [u8]) -> Result<Self, UnpackError> {
        let codec = match component.compression() {
            Compression::Raw => Codec::Raw,
            Compression::Heatshrink(params) => Codec::Heatshrink(
                Decoder::new(params, window)
                    .map_err(|e| UnpackError::WindowTooSmall { needed: e.needed })?,
            ),
        };
        Ok(Self::with(component, codec, Sha256::new(), 0, 0))
    }

    /// An unpacker continuing `component` from `progress`. For heatshrink, `window` must hold
    /// the last output bytes at their ring positions (see [`Decoder::resume`]), as it does when
    /// it is the window the previous unpacker used.
    pub fn resume(
        component: &Component,
        window: &'w mut [u8],
        progress: Progress,
    ) -> Result<Self, UnpackError> {
        let codec = match component.compression() {
            Compression::Raw => Codec::Raw,
            Compression::Heatshrink(params) => Codec::Heatshrink(
                Decoder::resume(params, window, progress.decoder, progress.produced)
                    .map_err(|e| UnpackError::WindowTooSmall { needed: e.needed })?,
            ),
        };
        Ok(Self::with(component, codec, progress.hasher, progress.consumed, progress.produced))
    }

    /// Where this unpacker is, to continue later with [`Unpacker::resume`].
    pub fn progress(&self) -> Progress {
        Progress {
            decoder: self.decoder_state(),
            consumed: self.consumed,
            produced: self.produced,
            hasher: self.hasher.clone(),
        }
    }

    fn with(c: &Component, codec: Codec<'w>, hasher: Sha256, consumed: u32, produced: u32) -> Self {
        Unpacker {
            codec,
            hasher,
            size: c.size(),
            stored: c.stored_size(),
            expected: *c.sha256(),
            consumed,
            produced,
        }
    }

    /// Payload bytes still expected.
    pub fn remaining_input(&self) -> u32 {
        self.stored.saturating_sub(self.consumed)
    }

    /// Payload bytes used so far.
    pub fn consumed(&self) -> u32 {
        self.consumed
    }

    /// Installed bytes produced so far.
    pub fn produced(&self) -> u32 {
        self.produced
    }

    /// The decoder state to save with a checkpoint (`START` for a raw component).
    pub fn decoder_state(&self) -> DecoderState {
        match &self.codec {
            Codec::Raw => DecoderState::START,
            Codec::Heatshrink(decoder) => decoder.state(),
        }
    }

    /// Decodes from `input` (at most the payload bytes still expected are used) into `out`
    /// (at most the installed bytes still expected are produced). Returns (used, produced);
    /// (0, 0) means it needs more input, or is done.
    pub fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), UnpackError> {
        let input = &input[..input.len().min(self.remaining_input() as usize)];
        let room = (self.size - self.produced) as usize;
        let (used, produced) = match &mut self.codec {
            Codec::Raw => {
                let n = input.len().min(out.len()).min(room);
                out[..n].copy_from_slice(&input[..n]);
                (n, n)
            }
            Codec::Heatshrink(decoder) if room == 0 => {
                // Padding bits may follow the last byte; anything they decode to is too much.
                let mut probe = [0u8; 1];
                let (used, extra) = decoder.decode(input, &mut probe);
                if extra > 0 {
                    return Err(UnpackError::TooLong { size: self.size });
                }
                (used, 0)
            }
            Codec::Heatshrink(decoder) => {
                let limit = out.len().min(room);
                decoder.decode(input, &mut out[..limit])
            }
        };
        self.consumed += used as u32;
        self.produced += produced as u32;
        self.hasher.update(&out[..produced]);
        Ok((used, produced))
    }

    /// Feeds payload bytes; every installed byte they decode to is handed to `output`, in order.
    /// Feeding more than the stored size is an error.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        output: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        if input.len() > self.remaining_input() as usize {
            return Err(FeedError::Unpack(UnpackError::StoredSize {
                given: u64::from(self.consumed) + input.len() as u64,
                stored: self.stored,
            }));
        }
        let mut buf = [0u8; 128];
        loop {
            let (used, produced) = self.step(input, &mut buf).map_err(FeedError::Unpack)?;
            if produced > 0 {
                output(&buf[..produced]).map_err(FeedError::Output)?;
            }
            input = &input[used..];
            if used == 0 && produced == 0 {
                return Ok(());
            }
        }
    }

    /// Checks that the whole payload arrived and decoded to the manifest's length and hash.
    pub fn finish(self) -> Result<Sha256Digest, UnpackError> {
        if self.consumed != self.stored {
            return Err(UnpackError::StoredSize {
                given: u64::from(self.consumed),
                stored: self.stored,
            });
        }
        if self.produced != self.size {
            return Err(UnpackError::TooShort { produced: self.produced, size: self.size });
        }
        if let Codec::Heatshrink(decoder) = &self.codec
            && !decoder.at_clean_end()
        {
            return Err(UnpackError::TrailingBits);
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
