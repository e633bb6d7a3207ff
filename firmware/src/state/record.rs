//! State log records: what each means, and its 32-byte encoding.
//!
//! ```text
//! byte 0       tag
//! bytes 1..28  payload (fields little-endian, unused bytes zero)
//! bytes 28..32 CRC-32 (ISO-HDLC) of bytes 0..28
//! ```

use crc::{CRC_32_ISO_HDLC, Crc, NoTable};

use crate::image::ImageId;

/// Bytes per record slot.
pub const SLOT: usize = 32;
const PAYLOAD: usize = 27;
const CRC: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISO_HDLC);

/// The first 8 bytes of an image id: enough to tell images apart in the log.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageTag(pub [u8; 8]);

impl ImageTag {
    /// The tag of `id`.
    pub fn of(id: &ImageId) -> Self {
        let mut tag = [0; 8];
        tag.copy_from_slice(&id.0[..8]);
        ImageTag(tag)
    }
}

impl core::fmt::Display for ImageTag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// How the last update attempt ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum OutcomeKind {
    /// The new image was confirmed and is now permanent.
    Updated,
    /// The new image was taken back out; the previous one runs again.
    Reverted(RevertReason),
    /// A download or pending update was abandoned after flash was written.
    Failed(FailReason),
}

/// Why the boot logic reverted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum RevertReason {
    /// The trial image did not confirm itself within its trial boots.
    NotConfirmed,
    /// The image in slot A failed its check before booting.
    ImageInvalid,
}

/// Why an update was abandoned after writing began.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum FailReason {
    /// The downloaded image did not verify (hash or length).
    Corrupt,
    /// A newer release replaced this download.
    Superseded,
    /// The image waiting in slot B no longer verified at reset.
    PendingCorrupt,
}

/// The outcome of the last update attempt, for `status()` and reporting.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// What happened.
    pub kind: OutcomeKind,
    /// To which image.
    pub image: ImageTag,
}

/// A download in progress.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Download {
    /// Release being applied.
    pub release_sequence: u64,
    /// Image being downloaded.
    pub image: ImageTag,
    /// Length of its transport file.
    pub transport_len: u32,
    /// Slot B erase units between the start of slot B and the image.
    pub shift: u8,
    /// Erase units per swap group.
    pub group: u8,
    /// What is being downloaded: the image itself or a patch.
    pub form: TransportForm,
}

/// The transport form of a download: a resumed download goes on only in the same form (the
/// transport offsets of the two differ).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum TransportForm {
    /// The `.fwi` itself.
    #[default]
    Image,
    /// A patch against slot A, with its segments every `2^block_shift` installed bytes.
    Patch {
        /// The patch's block shift.
        block_shift: u8,
    },
}

impl TransportForm {
    fn code(self) -> u8 {
        match self {
            TransportForm::Image => 0,
            TransportForm::Patch { block_shift } => block_shift,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(TransportForm::Image),
            shift
                if (crate::delta::MIN_BLOCK_SHIFT..=crate::delta::MAX_BLOCK_SHIFT)
                    .contains(&shift) =>
            {
                Some(TransportForm::Patch { block_shift: shift })
            }
            _ => None,
        }
    }
}

/// A durable point in a download, from which it can continue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Checkpoint {
    /// Transport bytes consumed.
    pub transport_offset: u32,
    /// Installed bytes written, counted from the start of the image (an erase unit boundary).
    pub installed_offset: u32,
    /// Index of the component being decoded.
    pub component: u8,
    /// Payload bytes of that component consumed (for a patch: body bytes consumed).
    pub payload_offset: u32,
    /// Decoder state (`image::heatshrink::DecoderState` bytes; zero for a patch, whose
    /// decoder holds nothing at a segment start).
    pub decoder: [u8; 8],
}

/// A verified image in slot B, to be swapped in at the next reset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Pending {
    /// Release it applies.
    pub release_sequence: u64,
    /// The new image.
    pub image: ImageTag,
    /// Erase units the new image occupies.
    pub new_units: u16,
    /// Erase units the old image occupies (0 if slot A held none).
    pub old_units: u16,
    /// Slot B erase units before the new image.
    pub shift: u8,
    /// Erase units per swap group.
    pub group: u8,
    /// Progress markers counted before this record's marker area.
    pub done: u16,
    /// Size of the marker area after this record, in write units.
    pub markers: u16,
}

/// One entry of the state log.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Record {
    /// First slot of a log unit; the unit with the highest sequence is current.
    UnitStart {
        /// Increases by one per new unit.
        sequence: u32,
    },
    /// Durable counters (written first in every unit).
    Base {
        /// Images with a lower security counter are refused.
        min_security_counter: u32,
        /// Last release sequence applied.
        release_sequence: u64,
    },
    /// The last update attempt's outcome; ends any operation in progress.
    Outcome(Outcome),
    /// A download began.
    Download(Download),
    /// A download reached a durable point.
    Checkpoint(Checkpoint),
    /// A verified image waits in slot B; a marker area follows.
    Pending(Pending),
    /// The swap finished: the new image is in slot A, booting on trial.
    TrialStart {
        /// The trial image.
        image: ImageTag,
        /// Boots allowed before it must have confirmed.
        boots_allowed: u8,
        /// Erase units a revert copies back from slot B.
        units: u16,
    },
    /// Another trial boot; `boots` is the count so far (so one record restates it).
    TrialBoot {
        /// Trial boots so far.
        boots: u8,
    },
    /// The running image confirmed itself.
    Confirmed {
        /// The image.
        image: ImageTag,
        /// Its security counter, now the minimum.
        security_counter: u32,
    },
    /// A revert (slot B back to slot A) began.
    RevertBegin {
        /// Why.
        reason: RevertReason,
        /// Erase units to copy back.
        units: u16,
        /// The image being taken out.
        image: ImageTag,
    },
    /// The marker area ran out; a new one follows.
    MoreMarkers {
        /// Markers counted before this record's area.
        done: u16,
        /// Size of the new area, in write units.
        markers: u16,
    },
}

struct Writer {
    buf: [u8; SLOT],
    at: usize,
}

impl Writer {
    fn new(tag: u8) -> Self {
        let mut buf = [0; SLOT];
        buf[0] = tag;
        Writer { buf, at: 1 }
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn finish(&mut self) -> [u8; SLOT] {
        let crc = CRC.checksum(&self.buf[..SLOT - 4]);
        self.buf[SLOT - 4..].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn tag(&mut self) -> ImageTag {
        ImageTag(self.take())
    }
}

fn outcome_code(kind: OutcomeKind) -> (u8, u8) {
    match kind {
        OutcomeKind::Updated => (0, 0),
        OutcomeKind::Reverted(r) => (1, revert_code(r)),
        OutcomeKind::Failed(FailReason::Corrupt) => (2, 0),
        OutcomeKind::Failed(FailReason::Superseded) => (2, 1),
        OutcomeKind::Failed(FailReason::PendingCorrupt) => (2, 2),
    }
}

fn outcome_kind(kind: u8, reason: u8) -> Option<OutcomeKind> {
    Some(match (kind, reason) {
        (0, 0) => OutcomeKind::Updated,
        (1, r) => OutcomeKind::Reverted(revert_reason(r)?),
        (2, 0) => OutcomeKind::Failed(FailReason::Corrupt),
        (2, 1) => OutcomeKind::Failed(FailReason::Superseded),
        (2, 2) => OutcomeKind::Failed(FailReason::PendingCorrupt),
        _ => return None,
    })
}

fn revert_code(r: RevertReason) -> u8 {
    match r {
        RevertReason::NotConfirmed => 0,
        RevertReason::ImageInvalid => 1,
    }
}

fn revert_reason(code: u8) -> Option<RevertReason> {
    match code {
        0 => Some(RevertReason::NotConfirmed),
        1 => Some(RevertReason::ImageInvalid),
        _ => None,
    }
}

impl Record {
    /// The record's 32 bytes.
    pub fn encode(&self) -> [u8; SLOT] {
        match *self {
            Record::UnitStart { sequence } => Writer::new(1).u32(sequence).finish(),
            Record::Base { min_security_counter, release_sequence } => {
                Writer::new(2).u32(min_security_counter).u64(release_sequence).finish()
            }
            Record::Outcome(o) => {
                let (kind, reason) = outcome_code(o.kind);
                Writer::new(3).u8(kind).u8(reason).bytes(&o.image.0).finish()
            }
            Record::Download(d) => Writer::new(4)
                .u64(d.release_sequence)
                .bytes(&d.image.0)
                .u32(d.transport_len)
                .u8(d.shift)
                .u8(d.group)
                .u8(d.form.code())
                .finish(),
            Record::Checkpoint(c) => Writer::new(5)
                .u32(c.transport_offset)
                .u32(c.installed_offset)
                .u8(c.component)
                .u32(c.payload_offset)
                .bytes(&c.decoder)
                .finish(),
            Record::Pending(p) => Writer::new(6)
                .u64(p.release_sequence)
                .bytes(&p.image.0)
                .u16(p.new_units)
                .u16(p.old_units)
                .u8(p.shift)
                .u8(p.group)
                .u16(p.done)
                .u16(p.markers)
                .finish(),
            Record::TrialStart { image, boots_allowed, units } => {
                Writer::new(7).bytes(&image.0).u8(boots_allowed).u16(units).finish()
            }
            Record::TrialBoot { boots } => Writer::new(8).u8(boots).finish(),
            Record::Confirmed { image, security_counter } => {
                Writer::new(9).bytes(&image.0).u32(security_counter).finish()
            }
            Record::RevertBegin { reason, units, image } => {
                Writer::new(10).u8(revert_code(reason)).u16(units).bytes(&image.0).finish()
            }
            Record::MoreMarkers { done, markers } => {
                Writer::new(11).u16(done).u16(markers).finish()
            }
        }
    }

    /// Reads a slot: `None` if its checksum fails (a torn write) or it is not a record.
    pub fn decode(slot: &[u8; SLOT]) -> Option<Record> {
        let stored = u32::from_le_bytes([slot[28], slot[29], slot[30], slot[31]]);
        if CRC.checksum(&slot[..SLOT - 4]) != stored {
            return None;
        }
        let mut r = Reader { buf: &slot[..1 + PAYLOAD], at: 1 };
        Some(match slot[0] {
            1 => Record::UnitStart { sequence: r.u32() },
            2 => Record::Base { min_security_counter: r.u32(), release_sequence: r.u64() },
            3 => {
                let (kind, reason) = (r.u8(), r.u8());
                Record::Outcome(Outcome { kind: outcome_kind(kind, reason)?, image: r.tag() })
            }
            4 => Record::Download(Download {
                release_sequence: r.u64(),
                image: r.tag(),
                transport_len: r.u32(),
                shift: r.u8(),
                group: r.u8(),
                form: TransportForm::from_code(r.u8())?,
            }),
            5 => Record::Checkpoint(Checkpoint {
                transport_offset: r.u32(),
                installed_offset: r.u32(),
                component: r.u8(),
                payload_offset: r.u32(),
                decoder: r.take(),
            }),
            6 => Record::Pending(Pending {
                release_sequence: r.u64(),
                image: r.tag(),
                new_units: r.u16(),
                old_units: r.u16(),
                shift: r.u8(),
                group: r.u8(),
                done: r.u16(),
                markers: r.u16(),
            }),
            7 => Record::TrialStart { image: r.tag(), boots_allowed: r.u8(), units: r.u16() },
            8 => Record::TrialBoot { boots: r.u8() },
            9 => Record::Confirmed { image: r.tag(), security_counter: r.u32() },
            10 => {
                let reason = revert_reason(r.u8())?;
                Record::RevertBegin { reason, units: r.u16(), image: r.tag() }
            }
            11 => Record::MoreMarkers { done: r.u16(), markers: r.u16() },
            _ => return None,
        })
    }

    /// Write units of marker area that follow this record.
    pub fn marker_units(&self) -> u16 {
        match self {
            Record::Pending(p) => p.markers,
            Record::MoreMarkers { markers, .. } => *markers,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips_and_any_damage_is_seen() {
        let tag = ImageTag([1, 2, 3, 4, 5, 6, 7, 8]);
        let records = [
            Record::UnitStart { sequence: 7 },
            Record::Base { min_security_counter: 3, release_sequence: u64::MAX },
            Record::Outcome(Outcome { kind: OutcomeKind::Updated, image: tag }),
            Record::Outcome(Outcome {
                kind: OutcomeKind::Reverted(RevertReason::ImageInvalid),
                image: tag,
            }),
            Record::Outcome(Outcome {
                kind: OutcomeKind::Failed(FailReason::PendingCorrupt),
                image: tag,
            }),
            Record::Download(Download {
                release_sequence: 9,
                image: tag,
                transport_len: 123_456,
                shift: 32,
                group: 16,
                form: TransportForm::Image,
            }),
            Record::Download(Download {
                release_sequence: 10,
                image: tag,
                transport_len: 4_567,
                shift: 2,
                group: 1,
                form: TransportForm::Patch { block_shift: 12 },
            }),
            Record::Checkpoint(Checkpoint {
                transport_offset: 1,
                installed_offset: 2,
                component: 3,
                payload_offset: 4,
                decoder: [5; 8],
            }),
            Record::Pending(Pending {
                release_sequence: 1,
                image: tag,
                new_units: 80,
                old_units: 79,
                shift: 32,
                group: 16,
                done: 2,
                markers: 9,
            }),
            Record::TrialStart { image: tag, boots_allowed: 3, units: 80 },
            Record::TrialBoot { boots: 2 },
            Record::Confirmed { image: tag, security_counter: 12 },
            Record::RevertBegin { reason: RevertReason::NotConfirmed, units: 80, image: tag },
            Record::MoreMarkers { done: 4, markers: 8 },
        ];
        for record in records {
            let slot = record.encode();
            assert_eq!(Record::decode(&slot), Some(record));
            for i in 0..SLOT {
                let mut bad = slot;
                bad[i] ^= 0x04;
                assert_eq!(Record::decode(&bad), None, "{record:?} byte {i}");
            }
        }
        assert_eq!(Record::decode(&[0xFF; SLOT]), None);
        assert_eq!(Record::decode(&[0; SLOT]), None);
    }
}
