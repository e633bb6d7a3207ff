//! The entropy coder of patch segments: a binary range coder with adaptive probabilities (the
//! one LZMA uses: 11-bit probabilities, 32-bit range, carry handled by the encoder), and the
//! coding of every field of the op stream, written once for both directions.
//!
//! Encoder and decoder share [`code_op`], [`code_diff`] and [`code_literal`] through the
//! [`BitCoder`] trait: the encoder passes the values it codes, the decoder gets them back. So
//! the two can never disagree about which probability codes which bit.
//!
//! The probabilities live in a byte buffer the caller lends ([`MODEL_BYTES`]): on a device it
//! is the RAM the agent borrows for heatshrink's window, which a patch does not need.

/// Bits of precision of a probability.
const PROB_BITS: u32 = 11;
/// A probability of one half.
const PROB_HALF: u16 = 1 << (PROB_BITS - 1);
/// Adaptation speed: each coded bit moves its probability by 1/16 of the distance to certainty
/// (segments are short: fast learning beats precision here, measured on the fixtures' pairs).
const MOVE_BITS: u32 = 4;
/// The range is renormalized (a byte shifted in or out) when it falls below this.
const TOP: u32 = 1 << 24;

/// The four ops of a segment's stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OpKind {
    /// Copy source bytes unchanged.
    Copy = 0,
    /// Copy source bytes, adding a coded difference to each.
    Add = 1,
    /// Insert coded bytes.
    Insert = 2,
    /// Repeat bytes of the target rebuilt earlier in the same component, `distance` back.
    Repeat = 3,
}

/// One op's header: what it does, from where, how many bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OpHeader {
    /// The op.
    pub kind: OpKind,
    /// Source cursor movement before a copy or add (0 otherwise).
    pub seek: i64,
    /// How far back a repeat reads (0 otherwise).
    pub distance: u32,
    /// Bytes the op produces, at least 1.
    pub len: u32,
}

/// What the op coder remembers within a segment: the previous op's kind and the last repeat's
/// distance (a repeat at the same distance costs one bit).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct OpContext {
    previous: Option<OpKind>,
    distance: u32,
}

// Where each part of the model starts, in probabilities. Sizes are in the comments.
const KIND: usize = 0; // 4 previous kinds (or none) x a 2-bit tree: 5 x 4
const SEEK_ZERO: usize = KIND + 20; // per kind (copy, add): 2
const SEEK_SIGN: usize = SEEK_ZERO + 2; // 1
const SEEK_BITS: usize = SEEK_SIGN + 1; // bit length of |seek| - 1, 5-bit tree: 32
const SAME_DISTANCE: usize = SEEK_BITS + 32; // 1
// A repeat's distance: its bit length less one in the seeks' tree (both say how far).
const DISTANCE_BITS: usize = SEEK_BITS;
// Bit length of len - 1, 5-bit trees: copies and adds share one, inserts, repeats: 3 x 32.
const LEN_BITS: usize = SAME_DISTANCE + 1;
const DIFF_ZERO: usize = LEN_BITS + 3 * 32; // previous diff zero? x offset mod 4: 8
const DIFF_REPEAT: usize = DIFF_ZERO + 8; // same as the last non-zero diff at this offset mod 4: 4
const DIFF_SIGN: usize = DIFF_REPEAT + 4; // 1
const DIFF_BITS: usize = DIFF_SIGN + 1; // bit length of |diff| - 1, 3-bit tree: 8
// High nibble, per offset parity and previous byte's top bit, 4-bit tree: 4 x 16.
const LIT_HIGH: usize = DIFF_BITS + 8;
const LIT_LOW: usize = LIT_HIGH + 4 * 16; // low nibble, per high nibble, 4-bit tree: 16 x 16
/// Probabilities in the model.
pub const MODEL_PROBS: usize = LIT_LOW + 16 * 16;
/// Bytes of RAM the model takes (two per probability).
pub const MODEL_BYTES: usize = 2 * MODEL_PROBS;

const _: () = assert!(MODEL_BYTES <= 1024, "the model must fit a 1 KiB heatshrink window");

/// The adaptive probabilities, in a lent byte buffer (little-endian `u16` each).
pub struct Model<'m> {
    bytes: &'m mut [u8],
}

impl<'m> Model<'m> {
    /// The model held in `bytes` (as the last user left it: the decoder resets it at each
    /// segment start); `None` if `bytes` is shorter than [`MODEL_BYTES`].
    pub fn new(bytes: &'m mut [u8]) -> Option<Self> {
        Some(Model { bytes: bytes.get_mut(..MODEL_BYTES)? })
    }

    /// Every probability back to one half (at each segment start).
    pub fn reset(&mut self) {
        for pair in self.bytes.chunks_exact_mut(2) {
            pair.copy_from_slice(&PROB_HALF.to_le_bytes());
        }
    }

    fn get(&self, index: usize) -> u16 {
        match self.bytes.get(2 * index..2 * index + 2) {
            // Adapting by 1/16 keeps a probability in 15..=2033, which keeps the range at or
            // above 2^16 after any bit (so one input byte renormalizes it, see MAX_OP_BYTES);
            // clamped so even if the RAM was written by someone else.
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]).clamp(15, 2033),
            _ => PROB_HALF,
        }
    }

    fn set(&mut self, index: usize, p: u16) {
        if let Some(pair) = self.bytes.get_mut(2 * index..2 * index + 2) {
            pair.copy_from_slice(&p.to_le_bytes());
        }
    }

    /// Moves probability `index` towards the bit just coded.
    fn update(&mut self, index: usize, bit: bool) {
        let p = self.get(index);
        let p = if bit { p - (p >> MOVE_BITS) } else { p + (((1 << PROB_BITS) - p) >> MOVE_BITS) };
        self.set(index, p);
    }
}

/// One direction of the range coder. The encoder codes the bit it is given and returns it; the
/// decoder ignores it and returns the bit it decoded.
pub trait BitCoder {
    /// Why coding stopped (the decoder ran out of input).
    type Error;
    /// Codes `bit` with probability `model[index]` (of a zero), adapting it.
    fn bit(&mut self, model: &mut Model<'_>, index: usize, bit: bool) -> Result<bool, Self::Error>;
    /// Codes `bit` with even odds, unmodelled.
    fn direct(&mut self, bit: bool) -> Result<bool, Self::Error>;
}

/// Codes the low `bits` bits of `value` (most significant first) with a bit tree of
/// `2^bits` probabilities at `base`.
fn tree<C: BitCoder>(
    c: &mut C,
    m: &mut Model<'_>,
    base: usize,
    bits: u32,
    value: u32,
) -> Result<u32, C::Error> {
    let mut node = 1usize;
    for i in (0..bits).rev() {
        let bit = c.bit(m, base + node, (value >> i) & 1 == 1)?;
        node = (node << 1) | usize::from(bit);
    }
    Ok((node - (1 << bits)) as u32)
}

/// Codes `bits` low bits of `value` with even odds.
fn direct<C: BitCoder>(c: &mut C, bits: u32, value: u64) -> Result<u64, C::Error> {
    let mut out = 0u64;
    for i in (0..bits).rev() {
        out = (out << 1) | u64::from(c.direct((value >> i) & 1 == 1)?);
    }
    Ok(out)
}

/// Codes `value` (1..=2^32-1): its bit length less one through a 5-bit tree at `base`, then the
/// bits below its leading one, unmodelled (Elias-gamma shaped, with adaptive lengths).
fn number<C: BitCoder>(
    c: &mut C,
    m: &mut Model<'_>,
    base: usize,
    value: u64,
) -> Result<u64, C::Error> {
    let len = 64 - value.max(1).leading_zeros();
    let bits = tree(c, m, base, 5, len.saturating_sub(1))?;
    let low = direct(c, bits, value)?;
    Ok((1u64 << bits) | (low & ((1u64 << bits) - 1)))
}

/// Codes one op header in the segment's context `ctx` (updated). The decoder gets any `len` in
/// 1..2^32, any seek of magnitude below 2^32 and any distance in 1..2^32 back: checking them
/// against the segment, the source and what was rebuilt is the caller's job.
pub fn code_op<C: BitCoder>(
    c: &mut C,
    m: &mut Model<'_>,
    ctx: &mut OpContext,
    op: OpHeader,
) -> Result<OpHeader, C::Error> {
    let base = KIND + 4 * ctx.previous.map_or(4, |k| k as usize);
    let kind = match tree(c, m, base, 2, op.kind as u32)? {
        0 => OpKind::Copy,
        1 => OpKind::Add,
        2 => OpKind::Insert,
        _ => OpKind::Repeat,
    };
    ctx.previous = Some(kind);
    let mut seek = 0i64;
    let mut distance = 0;
    match kind {
        OpKind::Copy | OpKind::Add => {
            if c.bit(m, SEEK_ZERO + kind as usize, op.seek != 0)? {
                let negative = c.bit(m, SEEK_SIGN, op.seek < 0)?;
                let magnitude = number(c, m, SEEK_BITS, op.seek.unsigned_abs())? as i64;
                seek = if negative { -magnitude } else { magnitude };
            }
        }
        OpKind::Repeat => {
            distance = if c.bit(m, SAME_DISTANCE, op.distance != ctx.distance)? {
                number(c, m, DISTANCE_BITS, u64::from(op.distance))? as u32
            } else {
                ctx.distance
            };
            ctx.distance = distance;
        }
        OpKind::Insert => {}
    }
    let tree = match kind {
        OpKind::Copy | OpKind::Add => 0,
        OpKind::Insert => 1,
        OpKind::Repeat => 2,
    };
    let len = number(c, m, LEN_BITS + 32 * tree, u64::from(op.len))? as u32;
    Ok(OpHeader { kind, seek, distance, len })
}

/// Per-segment context of the diff coder: the last non-zero difference at each offset mod 4
/// (Thumb code changes addresses, which repeat their difference at the same place in a word),
/// and whether the previous difference was zero.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct DiffContext {
    last: [u8; 4],
    previous_zero: bool,
}

/// Codes the difference `diff` (new byte minus source byte, wrapping) of the byte at installed
/// offset `at`.
pub fn code_diff<C: BitCoder>(
    c: &mut C,
    m: &mut Model<'_>,
    ctx: &mut DiffContext,
    at: u32,
    diff: u8,
) -> Result<u8, C::Error> {
    let lane = (at & 3) as usize;
    let zero_ctx = DIFF_ZERO + lane + 4 * usize::from(ctx.previous_zero);
    let out = if !c.bit(m, zero_ctx, diff != 0)? {
        0
    } else if c.bit(m, DIFF_REPEAT + lane, diff == ctx.last[lane] && diff != 0)? {
        ctx.last[lane]
    } else {
        let signed = diff as i8;
        let negative = c.bit(m, DIFF_SIGN, signed < 0)?;
        let magnitude = number3(c, m, u32::from(signed.unsigned_abs()))?;
        let value = if negative { (magnitude as u8).wrapping_neg() } else { magnitude as u8 };
        ctx.last[lane] = value;
        value
    };
    ctx.previous_zero = out == 0;
    Ok(out)
}

/// Codes 1..=128: bit length less one in a 3-bit tree, then the bits below the leading one.
fn number3<C: BitCoder>(c: &mut C, m: &mut Model<'_>, value: u32) -> Result<u32, C::Error> {
    let len = 32 - value.max(1).leading_zeros();
    let bits = tree(c, m, DIFF_BITS, 3, len.saturating_sub(1))?;
    let low = direct(c, bits, u64::from(value))? as u32;
    Ok((1 << bits) | (low & ((1 << bits) - 1)))
}

/// Codes the inserted byte `byte` at installed offset `at`, after the byte `previous` (0 at a
/// segment's start): its high nibble in a tree chosen by the offset's parity (a Thumb
/// halfword's high byte holds the opcode) and the previous byte's top bit, its low nibble in a
/// tree chosen by the high nibble.
pub fn code_literal<C: BitCoder>(
    c: &mut C,
    m: &mut Model<'_>,
    at: u32,
    previous: u8,
    byte: u8,
) -> Result<u8, C::Error> {
    let ctx = (at & 1) as usize | usize::from(previous >> 7) << 1;
    let high = tree(c, m, LIT_HIGH + 16 * ctx, 4, u32::from(byte >> 4))?;
    let low = tree(c, m, LIT_LOW + 16 * high as usize, 4, u32::from(byte & 15))?;
    Ok(((high << 4) | low) as u8)
}

/// Most input bytes one op header can take: one per coded bit at most (the range never falls
/// below 2^16 after a bit, so one byte renormalizes it), and a header codes at most 2 kind
/// bits, 2 seek flags (or a distance flag), 5 + 31 seek (or distance) bits and 5 + 31 length
/// bits.
pub const MAX_OP_BYTES: usize = 76;
/// Most input bytes one difference or literal can take (1 + 1 + 1 + 3 + 7 bits).
pub const MAX_BYTE_BYTES: usize = 13;
/// Input bytes a segment's range decoder starts with.
pub const START_BYTES: usize = 4;

/// Where the decoder takes its bytes from.
pub trait ByteSource {
    /// The next byte, if there is one.
    fn next(&mut self) -> Option<u8>;
}

/// The range decoder of one segment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RangeDecoder<S> {
    range: u32,
    code: u32,
    input: S,
}

/// The decoder needed a byte the input does not have.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OutOfInput;

impl<S: ByteSource> RangeDecoder<S> {
    /// Starts a segment: reads its first [`START_BYTES`] bytes.
    pub fn start(input: &mut S) -> Result<(u32, u32), OutOfInput> {
        let mut code = 0u32;
        for _ in 0..START_BYTES {
            code = (code << 8) | u32::from(input.next().ok_or(OutOfInput)?);
        }
        Ok((u32::MAX, code))
    }

    /// A decoder in state `(range, code)` reading `input`.
    pub fn resume(state: (u32, u32), input: S) -> Self {
        RangeDecoder { range: state.0, code: state.1, input }
    }

    /// Its state, to continue later.
    pub fn state(&self) -> (u32, u32) {
        (self.range, self.code)
    }

    /// Whether the segment ended cleanly: a correct stream leaves the code at zero.
    pub fn at_clean_end(state: (u32, u32)) -> bool {
        state.1 == 0
    }

    fn normalize(&mut self) -> Result<(), OutOfInput> {
        // At most once for a valid state; bounded anyway.
        for _ in 0..4 {
            if self.range >= TOP {
                break;
            }
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.input.next().ok_or(OutOfInput)?);
        }
        Ok(())
    }
}

impl<S: ByteSource> BitCoder for RangeDecoder<S> {
    type Error = OutOfInput;

    fn bit(&mut self, m: &mut Model<'_>, index: usize, _: bool) -> Result<bool, OutOfInput> {
        let bound = (self.range >> PROB_BITS) * u32::from(m.get(index));
        let bit = if self.code < bound {
            self.range = bound;
            false
        } else {
            self.code -= bound;
            self.range -= bound;
            true
        };
        m.update(index, bit);
        self.normalize()?;
        Ok(bit)
    }

    fn direct(&mut self, _: bool) -> Result<bool, OutOfInput> {
        self.range >>= 1;
        let bit = self.code >= self.range;
        if bit {
            self.code -= self.range;
        }
        self.normalize()?;
        Ok(bit)
    }
}

/// The range encoder (hosts).
#[cfg(feature = "std")]
pub struct RangeEncoder {
    low: u64,
    range: u32,
    cache: u8,
    pending: u64,
    first: bool,
    out: alloc::vec::Vec<u8>,
}

#[cfg(feature = "std")]
impl Default for RangeEncoder {
    fn default() -> Self {
        RangeEncoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            pending: 1,
            first: true,
            out: alloc::vec::Vec::new(),
        }
    }
}

#[cfg(feature = "std")]
impl RangeEncoder {
    fn shift_low(&mut self) {
        if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            while self.pending > 0 {
                // The very first byte is always zero (the code lies in [0, 1)): not written.
                if !core::mem::take(&mut self.first) {
                    self.out.push(byte.wrapping_add(carry));
                }
                byte = 0xFF;
                self.pending -= 1;
            }
            self.cache = (self.low >> 24) as u8;
        }
        self.pending += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn normalize(&mut self) {
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    /// Ends the segment: the bytes its decoder reads, no more, no less.
    pub fn finish(mut self) -> alloc::vec::Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

#[cfg(feature = "std")]
impl BitCoder for RangeEncoder {
    type Error = core::convert::Infallible;

    fn bit(&mut self, m: &mut Model<'_>, index: usize, bit: bool) -> Result<bool, Self::Error> {
        let bound = (self.range >> PROB_BITS) * u32::from(m.get(index));
        if bit {
            self.low += u64::from(bound);
            self.range -= bound;
        } else {
            self.range = bound;
        }
        m.update(index, bit);
        self.normalize();
        Ok(bit)
    }

    fn direct(&mut self, bit: bool) -> Result<bool, Self::Error> {
        self.range >>= 1;
        if bit {
            self.low += u64::from(self.range);
        }
        self.normalize();
        Ok(bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    struct Bytes<'a>(&'a [u8], usize);
    impl ByteSource for &mut Bytes<'_> {
        fn next(&mut self) -> Option<u8> {
            let b = self.0.get(self.1).copied();
            self.1 += usize::from(b.is_some());
            b
        }
    }

    #[test]
    fn every_field_round_trips_and_the_decoder_reads_exactly_what_was_written() {
        let mut rng = crate::sim::Rng::new(5);
        for round in 0..40 {
            let mut enc_model = [0u8; MODEL_BYTES];
            let mut m = Model::new(&mut enc_model).unwrap();
            m.reset();
            let mut enc = RangeEncoder::default();
            let mut ops = Vec::new();
            let mut op_ctx = OpContext::default();
            let mut ctx = DiffContext::default();
            let mut last_distance = 0;
            for i in 0..(round * 7 + 1) {
                let r = rng.next_u64();
                let kind =
                    [OpKind::Copy, OpKind::Add, OpKind::Insert, OpKind::Repeat][(r % 4) as usize];
                let source = matches!(kind, OpKind::Copy | OpKind::Add);
                let seek = if !source || r & 8 == 0 {
                    0
                } else {
                    ((r >> 8) as i64 % (1 << (r % 33))) * if r & 16 == 0 { 1 } else { -1 }
                };
                let distance = match kind {
                    OpKind::Repeat if r & 64 == 0 => last_distance,
                    OpKind::Repeat => ((r >> 24) as u32 >> (r % 31)).max(1),
                    _ => 0,
                };
                if kind == OpKind::Repeat {
                    last_distance = distance;
                }
                let len = ((r >> 20) as u32 >> (r % 32)).max(1);
                let op = OpHeader { kind, seek, distance, len };
                code_op(&mut enc, &mut m, &mut op_ctx, op).unwrap();
                let diff = (r >> 40) as u8 & if r & 32 == 0 { 0 } else { 0xFF };
                code_diff(&mut enc, &mut m, &mut ctx, i, diff).unwrap();
                let byte = (r >> 48) as u8;
                code_literal(&mut enc, &mut m, i, i as u8, byte).unwrap();
                ops.push((op, diff, byte));
            }
            let bytes = enc.finish();
            let mut dec_model = [0u8; MODEL_BYTES];
            let mut m = Model::new(&mut dec_model).unwrap();
            m.reset();
            let mut input = Bytes(&bytes, 0);
            let state = RangeDecoder::start(&mut &mut input).unwrap();
            let mut dec = RangeDecoder::resume(state, &mut input);
            let mut op_ctx = OpContext::default();
            let mut ctx = DiffContext::default();
            let blank = OpHeader { kind: OpKind::Copy, seek: 0, distance: 0, len: 1 };
            for (i, (op, diff, byte)) in ops.iter().enumerate() {
                assert_eq!(code_op(&mut dec, &mut m, &mut op_ctx, blank).unwrap(), *op);
                assert_eq!(code_diff(&mut dec, &mut m, &mut ctx, i as u32, 0).unwrap(), *diff);
                assert_eq!(code_literal(&mut dec, &mut m, i as u32, i as u8, 0).unwrap(), *byte);
            }
            let state = dec.state();
            assert!(RangeDecoder::<&mut Bytes>::at_clean_end(state), "round {round}");
            assert_eq!(input.1, bytes.len(), "round {round}: every byte read, none left");
        }
    }
}
