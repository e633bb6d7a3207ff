//! Making a patch (hosts): match every target component against the source's installed bytes
//! with a suffix array, extend the matches approximately (bsdiff's insight: code that moved
//! differs from its old copy only in a few address bytes, and those differences compress),
//! cut the ops at segment boundaries and range-code each segment.

use alloc::vec;
use alloc::vec::Vec;

use super::coder::{
    DiffContext, Model, OpContext, OpHeader, OpKind, RangeEncoder, code_diff, code_literal, code_op,
};
use super::format::{
    BodyLayout, CRC_START, MAX_BLOCK_SHIFT, MIN_BLOCK_SHIFT, PatchPrefix, crc_update, crc_value,
};
use super::{MODEL_BYTES, source_range};
use crate::image::{ImageError, TransportImage, installed_form};

/// How to cut a patch.
#[derive(Clone, Copy, Debug)]
pub struct PatchOptions {
    /// Segments restart every `2^block_shift` installed bytes: larger compresses better, a
    /// device resumes from segment starts only (and from erase unit boundaries only).
    pub block_shift: u8,
}

impl Default for PatchOptions {
    fn default() -> Self {
        PatchOptions { block_shift: 14 }
    }
}

/// Why a patch could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PatchBuildError {
    /// The source image does not parse.
    #[error("source image: {0}")]
    Source(ImageError),
    /// The target image does not parse (or a payload does not decode).
    #[error("target image: {0}")]
    Target(ImageError),
    /// The block shift is outside 10..=16.
    #[error("block shift {0} is outside {MIN_BLOCK_SHIFT}..={MAX_BLOCK_SHIFT}")]
    BlockShift(u8),
    /// The body would exceed 4 GiB.
    #[error("the patch body exceeds 4 GiB")]
    TooLarge,
}

/// A patch and what it is made of.
#[derive(Clone, Debug)]
pub struct EncodedPatch {
    /// The patch file.
    pub bytes: Vec<u8>,
    /// Its fixed start.
    pub prefix: PatchPrefix,
    /// Length of the target header it carries.
    pub header_len: usize,
}

/// Makes the patch that turns `source` (a `.fwi`, installed in slot A) into `target` (a
/// `.fwi`). `slot_start` is slot A's address and `erased` the flash's erased value, as the
/// board file gives them (the installed forms depend on them).
pub fn create_patch(
    source: &[u8],
    target: &[u8],
    slot_start: u32,
    erased: u8,
    options: &PatchOptions,
) -> Result<EncodedPatch, PatchBuildError> {
    let shift = options.block_shift;
    if !(MIN_BLOCK_SHIFT..=MAX_BLOCK_SHIFT).contains(&shift) {
        return Err(PatchBuildError::BlockShift(shift));
    }
    let old = TransportImage::parse(source).map_err(PatchBuildError::Source)?;
    let new = TransportImage::parse(target).map_err(PatchBuildError::Target)?;
    let old_installed =
        installed_form(source, slot_start, erased).map_err(PatchBuildError::Source)?;
    let new_installed =
        installed_form(target, slot_start, erased).map_err(PatchBuildError::Target)?;
    let (source_start, source_end) = source_range(old.header().manifest(), slot_start);
    let old_range =
        old_installed.get(source_start as usize..source_end as usize).unwrap_or_default();
    let matcher = Matcher::new(old_range, source_start);
    let mut layout =
        BodyLayout { body_len: 0, body_crc: 0, block_shift: shift, source_start, source_end };
    let mut body = Vec::new();
    for component in new.header().manifest().components() {
        let start = component.load_address().wrapping_sub(slot_start);
        let end = start + component.size();
        let bytes = new_installed.get(start as usize..end as usize).unwrap_or_default();
        let ops = matcher.ops(bytes, start);
        encode_component(&ops, bytes, start, &matcher, &layout, &mut body);
    }
    layout.body_len = u32::try_from(body.len()).map_err(|_| PatchBuildError::TooLarge)?;
    let prefix = PatchPrefix {
        source: old.header().id(),
        target: new.header().id(),
        block_shift: shift,
        body_len: layout.body_len,
        body_crc: crc_value(body.iter().fold(CRC_START, |crc, &b| crc_update(crc, b))),
    };
    let header = target.get(..new.header().len()).unwrap_or_default();
    let mut bytes = Vec::with_capacity(PatchPrefix::LEN + header.len() + body.len());
    bytes.extend_from_slice(&prefix.encode());
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&body);
    Ok(EncodedPatch { bytes, prefix, header_len: header.len() })
}

/// One op in installed coordinates, before it is cut into segments.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Piece {
    /// Target bytes `[at, at + len)` come from source installed offset `from` on, with
    /// differences where they differ.
    Match { at: u32, len: u32, from: u32 },
    /// Target bytes `[at, at + len)` are inserted.
    Insert { at: u32, len: u32 },
    /// Target bytes `[at, at + len)` repeat those `distance` bytes before them.
    Repeat { at: u32, len: u32, distance: u32 },
}

/// Shortest exact match worth a seek.
const MIN_MATCH: usize = 8;
/// Shortest exact continuation (no seek) worth taking over literals.
const MIN_CONTINUATION: usize = 4;
/// Longest comparison while searching (matches are then extended directly).
const MAX_COMPARE: usize = 4096;
/// Shortest repeat of the target's own bytes worth an op.
const MIN_REPEAT: usize = 4;
/// Candidates a repeat search looks at, newest first.
const REPEAT_DEPTH: usize = 64;
/// Zero differences in a row that make a copy of their own inside a match.
const COPY_RUN: usize = 24;

/// The source's bytes and their suffix array.
struct Matcher<'a> {
    old: &'a [u8],
    /// Installed offset of `old[0]`.
    base: u32,
    sa: Vec<i32>,
    /// A bit per hash of the source's `MIN_MATCH`-byte strings: where its bit is clear, a
    /// target position starts no source match worth a seek, and the suffix array (about 20
    /// cache misses a search) is not asked. Keeps data that matches nothing fast to encode.
    seen: Vec<u64>,
}

/// Bits of the hash of `MIN_MATCH` bytes (a 512 KiB table).
const SEEN_BITS: u32 = 22;

fn seen_hash(bytes: &[u8]) -> Option<usize> {
    let window: [u8; MIN_MATCH] = bytes.get(..MIN_MATCH)?.try_into().ok()?;
    let word = u64::from_le_bytes(window);
    Some((word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SEEN_BITS)) as usize)
}

impl<'a> Matcher<'a> {
    fn new(old: &'a [u8], base: u32) -> Self {
        let mut sa = vec![0i32; old.len()];
        divsufsort::sort_in_place(old, &mut sa);
        let mut seen = vec![0u64; 1 << (SEEN_BITS - 6)];
        for at in 0..old.len() {
            if let Some(h) = seen_hash(&old[at..]) {
                seen[h / 64] |= 1 << (h % 64);
            }
        }
        Matcher { old, base, sa, seen }
    }

    /// Whether the source may hold the first `MIN_MATCH` bytes of `new` (false: it does not).
    fn may_match(&self, new: &[u8]) -> bool {
        seen_hash(new).is_some_and(|h| self.seen[h / 64] & (1 << (h % 64)) != 0)
    }

    /// Length of the common prefix of `old[from..]` and `new`, up to `limit`.
    fn common(&self, from: usize, new: &[u8], limit: usize) -> usize {
        let old = self.old.get(from..).unwrap_or_default();
        old.iter().zip(new).take(limit).take_while(|(a, b)| a == b).count()
    }

    /// The longest match of a prefix of `new` in the source: (index in `old`, length).
    fn longest(&self, new: &[u8]) -> (usize, usize) {
        let (mut lo, mut hi) = (0usize, self.sa.len());
        let key = &new[..new.len().min(MAX_COMPARE)];
        while lo < hi {
            let mid = (lo + hi) / 2;
            let from = self.sa[mid] as usize;
            let suffix = &self.old[from..self.old.len().min(from + key.len())];
            if suffix < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut best = (0, 0);
        for index in [lo.wrapping_sub(1), lo] {
            if let Some(&from) = self.sa.get(index) {
                let len = self.common(from as usize, key, key.len());
                if len > best.1 {
                    best = (from as usize, len);
                }
            }
        }
        best
    }

    /// The pieces of target component `new`, installed at `start`.
    fn ops(&self, new: &[u8], start: u32) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut repeats = Repeats::new(new);
        // Source index minus target index of the last match: code that did not move keeps it.
        let mut delta = i64::from(start) - i64::from(self.base);
        let mut literal_start = 0usize;
        let mut i = 0usize;
        let source_at = |i: usize, delta: i64| usize::try_from(i as i64 + delta).ok();
        while i < new.len() {
            let rest = &new[i..];
            let continuation =
                source_at(i, delta).map_or(0, |from| self.common(from, rest, MAX_COMPARE));
            let (found, len) = if continuation >= MAX_COMPARE || !self.may_match(rest) {
                (0, 0)
            } else {
                self.longest(rest)
            };
            let source_len = if len >= MIN_MATCH && len > continuation + 8 {
                len
            } else if continuation >= MIN_CONTINUATION {
                continuation
            } else {
                0
            };
            let (distance, repeat_len) = repeats.longest(i);
            if repeat_len >= MIN_REPEAT && source_len == 0 {
                // Lazily: a longer repeat one byte on is worth a literal here.
                repeats.add_until(i + 1);
                if repeats.longest(i + 1).1 > repeat_len + 1 {
                    i += 1;
                    continue;
                }
            }
            if repeat_len >= MIN_REPEAT && repeat_len + 2 > source_len {
                if i > literal_start {
                    pieces.push(Piece::Insert {
                        at: start + literal_start as u32,
                        len: (i - literal_start) as u32,
                    });
                }
                pieces.push(Piece::Repeat {
                    at: start + i as u32,
                    len: repeat_len as u32,
                    distance: distance as u32,
                });
                repeats.add_until(i + repeat_len);
                i += repeat_len;
                literal_start = i;
                continue;
            }
            if source_len == 0 {
                repeats.add_until(i + 1);
                i += 1;
                continue;
            }
            if source_len != continuation {
                delta = found as i64 - i as i64;
            }
            // Grow the match backwards over the literals before it.
            while i > literal_start
                && source_at(i - 1, delta)
                    .and_then(|from| self.old.get(from))
                    .is_some_and(|&b| b == new[i - 1])
            {
                i -= 1;
            }
            if i > literal_start {
                pieces.push(Piece::Insert {
                    at: start + literal_start as u32,
                    len: (i - literal_start) as u32,
                });
            }
            let len = self.extend(new, i, delta);
            let from = (i as i64 + delta) as u32 + self.base;
            pieces.push(Piece::Match { at: start + i as u32, len: len as u32, from });
            i += len;
            repeats.add_until(i);
            literal_start = i;
        }
        if literal_start < new.len() {
            pieces.push(Piece::Insert {
                at: start + literal_start as u32,
                len: (new.len() - literal_start) as u32,
            });
        }
        pieces
    }

    /// How far a match at target index `i` (source index `i + delta`) goes, allowing
    /// differences while at least half the bytes agree (its exact start included).
    fn extend(&self, new: &[u8], i: usize, delta: i64) -> usize {
        let mut score = 0i64;
        let mut best = (0i64, 0usize);
        let mut k = 0usize;
        while let (Some(&b), Some(&a)) = (
            new.get(i + k),
            usize::try_from((i + k) as i64 + delta).ok().and_then(|j| self.old.get(j)),
        ) {
            score += if a == b { 1 } else { -1 };
            k += 1;
            if score > best.0 {
                best = (score, k);
            } else if score < best.0 - 16 {
                break;
            }
        }
        best.1.max(1)
    }
}

/// Earlier positions of the target component, by the 4 bytes starting there: where a repeat
/// can come from.
struct Repeats<'a> {
    new: &'a [u8],
    /// Newest position per hash, plus one (0: none).
    head: Vec<u32>,
    /// The previous position with the same hash, plus one, per position.
    chain: Vec<u32>,
    /// Positions below this are in the chains.
    added: usize,
}

impl<'a> Repeats<'a> {
    /// 4 MiB of heads for 1 MiB of target: chains hold real repeats, hardly any collisions.
    const HASH_BITS: u32 = 20;

    fn new(new: &'a [u8]) -> Self {
        Repeats { new, head: vec![0; 1 << Self::HASH_BITS], chain: vec![0; new.len()], added: 0 }
    }

    fn hash(&self, at: usize) -> Option<usize> {
        let b = self.new.get(at..at + MIN_REPEAT)?;
        let word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        Some((word.wrapping_mul(0x9E37_79B1) >> (32 - Self::HASH_BITS)) as usize)
    }

    /// Adds the positions below `end`.
    fn add_until(&mut self, end: usize) {
        while self.added < end.min(self.new.len()) {
            if let Some(h) = self.hash(self.added) {
                self.chain[self.added] = self.head[h];
                self.head[h] = self.added as u32 + 1;
            }
            self.added += 1;
        }
    }

    /// The longest repeat for position `at` from the positions added: (distance, length).
    fn longest(&self, at: usize) -> (usize, usize) {
        let Some(h) = self.hash(at) else { return (0, 0) };
        let rest = &self.new[at..];
        let mut best = (0, 0);
        let mut candidate = self.head[h];
        for _ in 0..REPEAT_DEPTH {
            let Some(from) = (candidate as usize).checked_sub(1) else { break };
            let len = self.new[from..].iter().zip(rest).take_while(|(a, b)| a == b).count();
            if len > best.1 {
                best = (at - from, len);
            }
            candidate = self.chain[from];
        }
        best
    }
}

/// Range-codes component `new` (installed at `start`) from its pieces, a segment per block.
fn encode_component(
    pieces: &[Piece],
    new: &[u8],
    start: u32,
    matcher: &Matcher<'_>,
    layout: &BodyLayout,
    body: &mut Vec<u8>,
) {
    let end = start + new.len() as u32;
    let mut segment_start = start;
    let mut pieces = pieces.iter().copied().peekable();
    let mut carried: Option<Piece> = None;
    while segment_start < end {
        let segment_end = layout.next_block(segment_start).min(end);
        let mut model_bytes = [0u8; MODEL_BYTES];
        let Some(mut model) = Model::new(&mut model_bytes) else { return };
        model.reset();
        let mut rc = RangeEncoder::default();
        let mut segment = SegmentEncoder {
            rc: &mut rc,
            model: &mut model,
            ops: OpContext::default(),
            cursor: segment_start,
            diff: DiffContext::default(),
        };
        while let Some(piece) = carried.take().or_else(|| pieces.next()) {
            let (at, len) = match piece {
                Piece::Match { at, len, .. }
                | Piece::Insert { at, len }
                | Piece::Repeat { at, len, .. } => (at, len),
            };
            // The part inside this segment; the rest carries over to the next one.
            let here = len.min(segment_end - at);
            if here < len {
                carried = Some(match piece {
                    Piece::Match { from, .. } => {
                        Piece::Match { at: at + here, len: len - here, from: from + here }
                    }
                    Piece::Insert { .. } => Piece::Insert { at: at + here, len: len - here },
                    Piece::Repeat { distance, .. } => {
                        Piece::Repeat { at: at + here, len: len - here, distance }
                    }
                });
            }
            let bytes = &new[(at - start) as usize..(at - start + here) as usize];
            match piece {
                Piece::Insert { .. } => {
                    let previous = match at.checked_sub(1) {
                        Some(p) if at > segment_start => new[(p - start) as usize],
                        _ => 0,
                    };
                    segment.insert(at, previous, bytes)
                }
                Piece::Repeat { distance, .. } => segment.op(OpKind::Repeat, distance, here),
                Piece::Match { from, .. } => {
                    let old = &matcher.old[(from - matcher.base) as usize..][..bytes.len()];
                    segment.matched(at, from, old, bytes);
                }
            }
            if carried.is_some() || at + here == segment_end {
                break;
            }
        }
        body.extend_from_slice(&rc.finish());
        segment_start = segment_end;
    }
}

/// Codes the ops of one segment.
struct SegmentEncoder<'e, 'm> {
    rc: &'e mut RangeEncoder,
    model: &'e mut Model<'m>,
    ops: OpContext,
    cursor: u32,
    diff: DiffContext,
}

impl SegmentEncoder<'_, '_> {
    /// Codes an op: `from` is the source offset of a copy or add, the distance of a repeat.
    fn op(&mut self, kind: OpKind, from: u32, len: u32) {
        let source = matches!(kind, OpKind::Copy | OpKind::Add);
        let seek = if source { i64::from(from) - i64::from(self.cursor) } else { 0 };
        let distance = if kind == OpKind::Repeat { from } else { 0 };
        let op = OpHeader { kind, seek, distance, len };
        let Ok(_) = code_op(self.rc, self.model, &mut self.ops, op);
        if source {
            self.cursor = from + len;
        }
    }

    /// Inserts `bytes` at `at`, after the byte `previous` (0 at the segment's start).
    fn insert(&mut self, at: u32, previous: u8, bytes: &[u8]) {
        self.op(OpKind::Insert, 0, bytes.len() as u32);
        let mut previous = previous;
        for (i, &byte) in bytes.iter().enumerate() {
            let Ok(_) = code_literal(self.rc, self.model, at + i as u32, previous, byte);
            previous = byte;
        }
    }

    /// Target bytes `new` at `at` from source bytes `old` at `from`: copies for long runs of
    /// equal bytes, adds for the rest.
    fn matched(&mut self, at: u32, from: u32, old: &[u8], new: &[u8]) {
        let mut i = 0;
        while i < new.len() {
            let equal = old[i..].iter().zip(&new[i..]).take_while(|(a, b)| a == b).count();
            if equal >= COPY_RUN || (equal > 0 && i + equal == new.len()) {
                self.op(OpKind::Copy, from + i as u32, equal as u32);
                i += equal;
                continue;
            }
            // An add up to the next run of equal bytes long enough for a copy (or the end).
            let mut j = i;
            let mut run = 0;
            while j < new.len() {
                run = if old[j] == new[j] { run + 1 } else { 0 };
                j += 1;
                if run >= COPY_RUN {
                    j -= run;
                    break;
                }
            }
            self.op(OpKind::Add, from + i as u32, (j - i) as u32);
            for k in i..j {
                let diff = new[k].wrapping_sub(old[k]);
                let Ok(_) = code_diff(self.rc, self.model, &mut self.diff, at + k as u32, diff);
            }
            i = j;
        }
    }
}
