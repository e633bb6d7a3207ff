//! The device's patch body decoder: turns the segment streams back into installed bytes, as
//! the body arrives in pieces of any size, reading the source image by random access.
//!
//! Its state between two calls is small and fixed (see [`BodyDecoder`]); the model is lent.
//! Between segments it holds nothing but where it is, which is what a checkpoint records: a
//! decoder started at a segment boundary with [`BodyDecoder::new`] continues exactly where one
//! that got there stopped.

use super::coder::{
    ByteSource, DiffContext, MAX_BYTE_BYTES, MAX_OP_BYTES, Model, OpContext, OpHeader, OpKind,
    RangeDecoder, START_BYTES, code_diff, code_literal, code_op,
};
use super::format::{BodyLayout, crc_update, crc_value};

/// Bytes of body the decoder holds ahead: at least what the longest op header can need.
const QUEUE: usize = 128;
const _: () = assert!(QUEUE >= MAX_OP_BYTES && QUEUE.is_power_of_two());

/// What is wrong with a patch body, and where (installed offsets of the target image).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum BodyError {
    /// The body ended inside the segment being decoded.
    #[error("the patch body ends inside the segment producing installed offset {at:#x}")]
    Truncated {
        /// Installed offset of the next byte the segment had to produce.
        at: u32,
    },
    /// An op produces more bytes than its segment has left.
    #[error("an op at installed offset {at:#x} produces {len} bytes, its segment has {room} left")]
    OpTooLong {
        /// Where the op starts.
        at: u32,
        /// Bytes it says it produces.
        len: u32,
        /// Bytes left in the segment.
        room: u32,
    },
    /// A copy reads outside the source image's components.
    #[error(
        "an op at installed offset {at:#x} reads source bytes {from:#x}+{len}, outside the \
         source's components {start:#x}..{end:#x}"
    )]
    SourceOutside {
        /// Where the op starts.
        at: u32,
        /// First source byte it reads (installed offset; may be negative or past 2^32).
        from: i64,
        /// Bytes it reads.
        len: u32,
        /// Start of the source range.
        start: u32,
        /// End of the source range.
        end: u32,
    },
    /// A segment's coded stream did not end where its bytes did: a damaged stream.
    #[error("the segment ending at installed offset {at:#x} does not end cleanly")]
    UncleanEnd {
        /// Where the segment ends.
        at: u32,
    },
    /// A repeat reaches back before the component's start (or not back at all).
    #[error(
        "an op at installed offset {at:#x} repeats bytes {distance} back, before its component \
         (which starts at {start:#x})"
    )]
    RepeatOutside {
        /// Where the op starts.
        at: u32,
        /// How far back it reads.
        distance: u32,
        /// Where the component starts.
        start: u32,
    },
    /// Body bytes remain after the last segment of the last component.
    #[error("{extra} patch body bytes after the last segment")]
    TrailingBytes {
        /// How many.
        extra: u32,
    },
    /// The body's bytes do not have the CRC the patch gives: damaged on the way.
    #[error("patch body CRC-32 is {actual:#010x}, the patch gives {stored:#010x}")]
    BodyChecksum {
        /// CRC in the patch.
        stored: u32,
        /// CRC of the body.
        actual: u32,
    },
}

/// Which image a decoder reads from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Image {
    /// The source: slot A.
    Source,
    /// The target rebuilt so far: slot B (what the caller has written of it).
    Target,
}

/// Why [`BodyDecoder::step`] stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StepError<E> {
    /// The patch is bad.
    Body(BodyError),
    /// Reading the source failed.
    Source(E),
}

impl<E> From<BodyError> for StepError<E> {
    fn from(e: BodyError) -> Self {
        StepError::Body(e)
    }
}

/// A ring of body bytes taken but not decoded yet, and the CRC register of those decoded.
#[derive(Clone)]
struct Queue {
    buf: [u8; QUEUE],
    head: usize,
    len: usize,
    crc: u32,
}

impl ByteSource for &mut Queue {
    fn next(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.buf.get(self.head).copied()?;
        self.head = (self.head + 1) % QUEUE;
        self.len -= 1;
        self.crc = crc_update(self.crc, byte);
        Some(byte)
    }
}

impl Queue {
    /// Takes as much of `input` as fits; returns how much.
    fn fill(&mut self, input: &[u8]) -> usize {
        let n = input.len().min(QUEUE - self.len);
        for &byte in input.iter().take(n) {
            if let Some(slot) = self.buf.get_mut((self.head + self.len) % QUEUE) {
                *slot = byte;
            }
            self.len += 1;
        }
        n
    }
}

/// The op being carried out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Running {
    kind: OpKind,
    remaining: u32,
    /// How far back a repeat reads.
    distance: u32,
}

/// A segment being decoded: its range decoder's state, the op under way, the source cursor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Segment {
    end: u32,
    rc: (u32, u32),
    op: Option<Running>,
    ops: OpContext,
    cursor: u32,
    /// The segment's last byte produced (0 before its first): inserted bytes' context.
    last: u8,
    diff: DiffContext,
}

/// Decodes a patch body. RAM: this struct (about 180 bytes: the 128-byte queue, positions,
/// the segment's coder state) plus the lent model ([`super::MODEL_BYTES`]).
#[derive(Clone)]
pub struct BodyDecoder {
    layout: BodyLayout,
    queue: Queue,
    /// Body bytes taken into the queue so far.
    fed: u32,
    /// Installed offset of the next byte to produce.
    position: u32,
    /// Start of the component being decoded: repeats read no further back.
    start: u32,
    /// End of the component being decoded.
    end: u32,
    segment: Option<Segment>,
}

impl BodyDecoder {
    /// A decoder at body offset `consumed` with the body's CRC register `crc` there
    /// ([`super::CRC_START`] at the start; a checkpoint's after a reset), which must be where
    /// a segment starts, producing no component until one is given.
    pub fn new(layout: BodyLayout, consumed: u32, crc: u32) -> Self {
        BodyDecoder {
            layout,
            queue: Queue { buf: [0; QUEUE], head: 0, len: 0, crc },
            fed: consumed,
            position: 0,
            start: 0,
            end: 0,
            segment: None,
        }
    }

    /// Starts (or, after a reset, continues) the component at installed offsets
    /// `[start, end)` at installed offset `at`, which must start a segment: the component's
    /// start or a block boundary inside it.
    pub fn start_component(&mut self, start: u32, at: u32, end: u32) {
        self.start = start;
        self.position = at;
        self.end = end;
        self.segment = None;
    }

    /// Whether the component is complete (its last segment closed).
    pub fn component_done(&self) -> bool {
        self.position >= self.end && self.segment.is_none()
    }

    /// Whether the decoder is between segments: a checkpoint may be taken here.
    pub fn between_segments(&self) -> bool {
        self.segment.is_none()
    }

    /// Installed offset of the next byte.
    pub fn position(&self) -> u32 {
        self.position
    }

    /// Body bytes consumed by the segments decoded so far (taken, less those still queued).
    pub fn consumed(&self) -> u32 {
        self.fed - self.queue.len as u32
    }

    /// The body's CRC register over the bytes consumed, to save with a checkpoint.
    pub fn crc(&self) -> u32 {
        self.queue.crc
    }

    /// Checks that the whole body was used, and its CRC, once the last component is done.
    pub fn finish(&self) -> Result<(), BodyError> {
        let extra = self.layout.body_len.saturating_sub(self.consumed());
        if extra > 0 {
            return Err(BodyError::TrailingBytes { extra });
        }
        let actual = crc_value(self.queue.crc);
        if actual != self.layout.body_crc {
            return Err(BodyError::BodyChecksum { stored: self.layout.body_crc, actual });
        }
        Ok(())
    }

    /// Decodes from `input` (at most the body bytes still expected are taken) into `out`,
    /// reading with `read(image, installed_offset, buf)`: the source at any offset the source
    /// range allows, the target only below the position of the call's first output byte (what
    /// the caller wrote before). Returns (taken, produced): the produced bytes belong at
    /// [`Self::position`] as it was before the call. Stops at the end of a segment (so the
    /// caller may checkpoint) and when `out` is full; (0, 0) means it needs more input or the
    /// component is complete.
    pub fn step<E>(
        &mut self,
        model: &mut Model<'_>,
        input: &[u8],
        out: &mut [u8],
        read: &mut impl FnMut(Image, u32, &mut [u8]) -> Result<(), E>,
    ) -> Result<(usize, usize), StepError<E>> {
        let mut taken = 0;
        let mut produced = 0;
        let first = self.position;
        loop {
            let want = self.layout.body_len.saturating_sub(self.fed) as usize;
            let rest = input.get(taken..).unwrap_or_default();
            let n = self.queue.fill(rest.get(..rest.len().min(want)).unwrap_or_default());
            taken += n;
            self.fed += n as u32;
            let all_in = self.fed >= self.layout.body_len;
            let queued = self.queue.len;
            let have = |need: usize| all_in || queued >= need;
            let truncated = BodyError::Truncated { at: self.position };
            let Some(mut segment) = self.segment else {
                if self.position >= self.end || produced > 0 || !have(START_BYTES) {
                    return Ok((taken, produced));
                }
                let rc = RangeDecoder::start(&mut &mut self.queue).map_err(|_| truncated)?;
                model.reset();
                self.segment = Some(Segment {
                    end: self.layout.next_block(self.position).min(self.end),
                    rc,
                    op: None,
                    ops: OpContext::default(),
                    cursor: self.position,
                    last: 0,
                    diff: DiffContext::default(),
                });
                continue;
            };
            let room = out.len() - produced;
            let n = match segment.op {
                None if !have(MAX_OP_BYTES) => return Ok((taken, produced)),
                None => {
                    self.next_op(model, &mut segment)?;
                    0
                }
                Some(_) if room == 0 => return Ok((taken, produced)),
                Some(Running { kind: OpKind::Copy, remaining, .. }) => {
                    let n = remaining.min(room as u32) as usize;
                    let buf = out.get_mut(produced..produced + n).unwrap_or_default();
                    read(Image::Source, segment.cursor, buf).map_err(StepError::Source)?;
                    n
                }
                Some(Running { kind: OpKind::Repeat, remaining, distance }) => {
                    // At most `distance` at a time: every byte read is rebuilt already.
                    let n = remaining.min(room as u32).min(distance) as usize;
                    let from = self.position - distance;
                    let (done, rest) = out.split_at_mut(produced);
                    let buf = rest.get_mut(..n).unwrap_or_default();
                    repeat(first, from, done, buf, read).map_err(StepError::Source)?;
                    n
                }
                Some(Running { kind, remaining, .. }) => {
                    let per_byte = if kind == OpKind::Add { MAX_BYTE_BYTES } else { 8 };
                    let ready = if all_in { room } else { queued / per_byte };
                    // In small batches: the source is read once per batch.
                    let n = (remaining as usize).min(room).min(ready).min(64);
                    if n == 0 {
                        return Ok((taken, produced));
                    }
                    let buf = out.get_mut(produced..produced + n).unwrap_or_default();
                    if kind == OpKind::Add {
                        read(Image::Source, segment.cursor, buf).map_err(StepError::Source)?;
                    }
                    let mut rc = RangeDecoder::resume(segment.rc, &mut self.queue);
                    let mut previous = segment.last;
                    for (i, byte) in buf.iter_mut().enumerate() {
                        let at = self.position + i as u32;
                        *byte = match kind {
                            OpKind::Add => byte.wrapping_add(
                                code_diff(&mut rc, model, &mut segment.diff, at, 0)
                                    .map_err(|_| BodyError::Truncated { at })?,
                            ),
                            _ => code_literal(&mut rc, model, at, previous, 0)
                                .map_err(|_| BodyError::Truncated { at })?,
                        };
                        previous = *byte;
                    }
                    segment.rc = rc.state();
                    n
                }
            };
            if let Some(op) = &mut segment.op {
                op.remaining -= n as u32;
                if matches!(op.kind, OpKind::Copy | OpKind::Add) {
                    segment.cursor += n as u32;
                }
                if op.remaining == 0 {
                    segment.op = None;
                }
            }
            if let Some(&last) = out.get((produced + n).wrapping_sub(1)).filter(|_| n > 0) {
                segment.last = last;
            }
            self.position += n as u32;
            produced += n;
            if self.position == segment.end {
                // The segment's last byte: its stream must end here, exactly.
                if !RangeDecoder::<&mut Queue>::at_clean_end(segment.rc) {
                    return Err(BodyError::UncleanEnd { at: segment.end }.into());
                }
                self.segment = None;
                return Ok((taken, produced));
            }
            self.segment = Some(segment);
        }
    }

    /// Decodes the next op header of `segment` and checks it against the segment and the
    /// source.
    fn next_op(&mut self, model: &mut Model<'_>, segment: &mut Segment) -> Result<(), BodyError> {
        let at = self.position;
        let mut rc = RangeDecoder::resume(segment.rc, &mut self.queue);
        let blank = OpHeader { kind: OpKind::Copy, seek: 0, distance: 0, len: 1 };
        let op = code_op(&mut rc, model, &mut segment.ops, blank)
            .map_err(|_| BodyError::Truncated { at })?;
        segment.rc = rc.state();
        let room = segment.end - at;
        if op.len > room {
            return Err(BodyError::OpTooLong { at, len: op.len, room });
        }
        if op.kind == OpKind::Repeat && (op.distance == 0 || op.distance > at - self.start) {
            return Err(BodyError::RepeatOutside { at, distance: op.distance, start: self.start });
        }
        if matches!(op.kind, OpKind::Copy | OpKind::Add) {
            let from = i64::from(segment.cursor) + op.seek;
            let (start, end) = (self.layout.source_start, self.layout.source_end);
            if from < i64::from(start) || from + i64::from(op.len) > i64::from(end) {
                return Err(BodyError::SourceOutside { at, from, len: op.len, start, end });
            }
            segment.cursor = from as u32;
        }
        segment.op = Some(Running { kind: op.kind, remaining: op.len, distance: op.distance });
        Ok(())
    }
}

/// Fills `buf` with the target's bytes from installed offset `from` on (all before the byte
/// `buf` is for): those the call produced already (`done`, which starts at `first`) from there,
/// the rest through `read`.
fn repeat<E>(
    first: u32,
    from: u32,
    done: &[u8],
    buf: &mut [u8],
    read: &mut impl FnMut(Image, u32, &mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    let before = (first.saturating_sub(from) as usize).min(buf.len());
    let (earlier, recent) = buf.split_at_mut(before);
    if !earlier.is_empty() {
        read(Image::Target, from, earlier)?;
    }
    let at = from.saturating_sub(first) as usize;
    let recent_len = recent.len();
    if let Some(bytes) = done.get(at..at + recent_len) {
        recent.copy_from_slice(bytes);
    }
    Ok(())
}
