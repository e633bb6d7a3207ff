//! A heatshrink decoder whose state can be saved and restored.
//!
//! The stream format is heatshrink's (atomicobject/heatshrink): bits are read most significant
//! first; a `1` tag bit is followed by an 8-bit literal; a `0` tag bit by a back-reference of
//! `window` bits (distance - 1) and `lookahead` bits (length - 1), copied from the last
//! `2^window` bytes of output, which start out as zeros.
//!
//! Why not `heatshrink-lib`'s decoder (which `compress` pairs with): a device that loses power
//! in the middle of a download must continue from where it was, and that needs the decoder's
//! state at a known output position. Here that state is a small [`DecoderState`] value, and the
//! window is a buffer the caller lends (the device's RAM budget, refilled from flash on resume)
//! rather than a const-generic array per window size. Tests check this decoder against
//! `heatshrink-lib` and the reference C code.

use super::HeatshrinkParams;

/// Where the decoder is in the bit stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Phase {
    Tag = 0,
    Literal = 1,
    Index = 2,
    Count = 3,
    Copy = 4,
}

impl Phase {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Phase::Tag,
            1 => Phase::Literal,
            2 => Phase::Index,
            3 => Phase::Count,
            4 => Phase::Copy,
            _ => return None,
        })
    }
}

/// Everything a decoder holds besides its window: 8 bytes, saved in a download checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DecoderState {
    phase: Phase,
    /// Input bits read but not used yet, right-aligned.
    bits: u32,
    /// How many of `bits` are valid.
    bit_count: u8,
    /// Back-reference distance (1..=2^window).
    distance: u16,
    /// Bytes of the current back-reference still to copy.
    remaining: u16,
}

impl DecoderState {
    /// The state of a decoder that has read nothing.
    pub const START: DecoderState =
        DecoderState { phase: Phase::Tag, bits: 0, bit_count: 0, distance: 0, remaining: 0 };

    /// Encoded length.
    pub const LEN: usize = 8;

    /// The state as bytes, for a checkpoint.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[0] = self.phase as u8;
        out[1] = self.bit_count;
        out[2..4].copy_from_slice(&(self.bits as u16).to_le_bytes());
        out[4..6].copy_from_slice(&self.distance.to_le_bytes());
        out[6..8].copy_from_slice(&self.remaining.to_le_bytes());
        out
    }

    /// Reads a saved state; `None` if it cannot be one (a checkpoint is only taken with fewer
    /// than 16 pending bits).
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Option<Self> {
        let state = DecoderState {
            phase: Phase::from_u8(bytes[0])?,
            bit_count: bytes[1],
            bits: u32::from(u16::from_le_bytes([bytes[2], bytes[3]])),
            distance: u16::from_le_bytes([bytes[4], bytes[5]]),
            remaining: u16::from_le_bytes([bytes[6], bytes[7]]),
        };
        (state.bit_count < 16 && state.bits >> state.bit_count == 0).then_some(state)
    }
}

/// A heatshrink decoder over a borrowed window.
pub struct Decoder<'w> {
    window_bits: u8,
    lookahead_bits: u8,
    window: &'w mut [u8],
    state: DecoderState,
    /// Bytes produced so far (wrapping); the window position of the next byte is `head & mask`.
    head: u32,
}

/// The window buffer lent to a decoder is smaller than its parameters need.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WindowTooSmall {
    /// Bytes needed.
    pub needed: usize,
}

impl<'w> Decoder<'w> {
    /// A decoder at the start of a stream. `window` must hold at least `2^window` bytes; it is
    /// cleared.
    pub fn new(params: HeatshrinkParams, window: &'w mut [u8]) -> Result<Self, WindowTooSmall> {
        let decoder = Self::resume(params, window, DecoderState::START, 0)?;
        decoder.window.fill(0);
        Ok(decoder)
    }

    /// A decoder continuing from `state` after `produced` bytes of output. The caller must have
    /// put the last `min(produced, 2^window)` output bytes at their ring positions
    /// ([`Decoder::window_slot`]) and zeros elsewhere: exactly what a decoder that produced them
    /// would hold.
    pub fn resume(
        params: HeatshrinkParams,
        window: &'w mut [u8],
        state: DecoderState,
        produced: u32,
    ) -> Result<Self, WindowTooSmall> {
        let size = 1usize << params.window();
        let window = match window.get_mut(..size) {
            Some(window) => window,
            None => return Err(WindowTooSmall { needed: size }),
        };
        Ok(Decoder {
            window_bits: params.window(),
            lookahead_bits: params.lookahead(),
            window,
            state,
            head: produced,
        })
    }

    /// Where output byte number `position` lives in a window of `2^window_bits` bytes.
    pub fn window_slot(params: HeatshrinkParams, position: u32) -> usize {
        (position & ((1u32 << params.window()) - 1)) as usize
    }

    /// The state to save, valid at the current output position.
    pub fn state(&self) -> DecoderState {
        self.state
    }

    /// Whether the input read so far ends the way an encoder ends a stream: after the last
    /// token, only the zero bits that pad the final byte (of which the decoder may have taken a
    /// `0` tag bit as the start of a token that never came).
    pub fn at_clean_end(&self) -> bool {
        let s = &self.state;
        s.bits == 0
            && match s.phase {
                Phase::Tag => s.bit_count < 8,
                Phase::Index => s.bit_count < 7,
                _ => false,
            }
    }

    /// Reads `n` bits (n <= 16), pulling bytes from `input` at `*used`; `None` when the input
    /// ends first (the bits read so far are kept).
    fn bits(&mut self, n: u8, input: &[u8], used: &mut usize) -> Option<u16> {
        while self.state.bit_count < n {
            let byte = *input.get(*used)?;
            *used += 1;
            self.state.bits = (self.state.bits << 8) | u32::from(byte);
            self.state.bit_count += 8;
        }
        self.state.bit_count -= n;
        let value = (self.state.bits >> self.state.bit_count) & ((1 << n) - 1);
        self.state.bits &= (1 << self.state.bit_count) - 1;
        Some(value as u16)
    }

    fn emit(&mut self, byte: u8, out: &mut [u8], produced: &mut usize) {
        let mask = self.window.len() - 1;
        self.window[self.head as usize & mask] = byte;
        self.head = self.head.wrapping_add(1);
        out[*produced] = byte;
        *produced += 1;
    }

    /// Decodes from `input` into `out` until `out` is full or `input` is used up. Returns how
    /// many input bytes were used and how many output bytes were produced. Never fails: any
    /// bit string is a heatshrink stream; what it decodes to is checked by the caller.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        let (mut used, mut produced) = (0, 0);
        loop {
            match self.state.phase {
                Phase::Tag => match self.bits(1, input, &mut used) {
                    Some(1) => self.state.phase = Phase::Literal,
                    Some(_) => self.state.phase = Phase::Index,
                    None => break,
                },
                Phase::Literal => {
                    if produced == out.len() {
                        break;
                    }
                    let Some(byte) = self.bits(8, input, &mut used) else { break };
                    self.emit(byte as u8, out, &mut produced);
                    self.state.phase = Phase::Tag;
                }
                Phase::Index => {
                    let Some(index) = self.bits(self.window_bits, input, &mut used) else { break };
                    self.state.distance = index + 1;
                    self.state.phase = Phase::Count;
                }
                Phase::Count => {
                    let Some(count) = self.bits(self.lookahead_bits, input, &mut used) else {
                        break;
                    };
                    self.state.remaining = count + 1;
                    self.state.phase = Phase::Copy;
                }
                Phase::Copy => {
                    let mask = self.window.len() - 1;
                    while self.state.remaining > 0 && produced < out.len() {
                        let from = self.head.wrapping_sub(u32::from(self.state.distance));
                        let byte = self.window[from as usize & mask];
                        self.emit(byte, out, &mut produced);
                        self.state.remaining -= 1;
                    }
                    if self.state.remaining > 0 {
                        break;
                    }
                    self.state.phase = Phase::Tag;
                }
            }
        }
        (used, produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn decode_all(
        params: HeatshrinkParams,
        stream: &[u8],
        chunk: usize,
        out_chunk: usize,
    ) -> Vec<u8> {
        let mut window = std::vec![0u8; 1 << params.window()];
        let mut decoder = Decoder::new(params, &mut window).unwrap();
        let mut out = Vec::new();
        let mut buf = std::vec![0u8; out_chunk];
        for piece in stream.chunks(chunk) {
            let mut rest = piece;
            loop {
                let (used, produced) = decoder.decode(rest, &mut buf);
                out.extend_from_slice(&buf[..produced]);
                rest = &rest[used..];
                if used == 0 && produced == 0 {
                    break;
                }
            }
        }
        out
    }

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..6000u32 {
            v.push(((i * 7) % 13) as u8 ^ (i / 500) as u8);
            if i % 97 == 0 {
                v.extend_from_slice(&i.to_le_bytes());
            }
        }
        v
    }

    #[test]
    fn decodes_what_heatshrink_lib_encodes_in_any_chunking() {
        let data = sample();
        for &params in HeatshrinkParams::SUPPORTED {
            let stream = crate::image::compress(params, &data);
            for (chunk, out_chunk) in [(1, 1), (1, 300), (7, 3), (64, 64), (5000, 4096)] {
                assert_eq!(decode_all(params, &stream, chunk, out_chunk), data, "{params:?}");
            }
        }
    }

    #[test]
    fn saved_state_resumes_exactly() {
        let data = sample();
        for &params in HeatshrinkParams::SUPPORTED {
            let stream = crate::image::compress(params, &data);
            for stop in [1usize, 100, 1023, 2048, 4097, 5999] {
                // Decode until `stop` bytes are out, save, then resume in a fresh decoder whose
                // window is rebuilt from the output, as a device rebuilds it from flash.
                let mut window = std::vec![0u8; 1 << params.window()];
                let mut decoder = Decoder::new(params, &mut window).unwrap();
                let mut out = std::vec![0u8; stop];
                let (mut used, mut produced) = (0, 0);
                while produced < stop {
                    let (u, p) = decoder.decode(&stream[used..], &mut out[produced..]);
                    used += u;
                    produced += p;
                }
                let saved = DecoderState::from_bytes(decoder.state().to_bytes()).unwrap();
                let mut window2 = std::vec![0u8; 1 << params.window()];
                let keep = stop.min(window2.len());
                for pos in stop - keep..stop {
                    window2[Decoder::window_slot(params, pos as u32)] = out[pos];
                }
                let mut resumed =
                    Decoder::resume(params, &mut window2, saved, stop as u32).unwrap();
                let mut rest = std::vec![0u8; data.len() - stop + 10];
                let mut total = 0;
                loop {
                    let (u, p) = resumed.decode(&stream[used..], &mut rest[total..]);
                    used += u;
                    total += p;
                    if u == 0 && p == 0 {
                        break;
                    }
                }
                out.extend_from_slice(&rest[..total]);
                assert_eq!(out, data, "{params:?} stopped at {stop}");
            }
        }
    }

    #[test]
    fn state_bytes_are_checked() {
        assert!(DecoderState::from_bytes([9, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(DecoderState::from_bytes([0, 3, 0xFF, 0, 0, 0, 0, 0]).is_none());
        assert!(DecoderState::from_bytes([0, 16, 0, 0, 0, 0, 0, 0]).is_none());
        let s =
            DecoderState { phase: Phase::Copy, bits: 5, bit_count: 3, distance: 7, remaining: 2 };
        assert_eq!(DecoderState::from_bytes(s.to_bytes()), Some(s));
    }

    #[test]
    fn small_window_is_refused() {
        let mut small = [0u8; 100];
        assert_eq!(
            Decoder::new(HeatshrinkParams::DEFAULT, &mut small).err(),
            Some(WindowTooSmall { needed: 2048 })
        );
    }
}
