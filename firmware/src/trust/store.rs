//! The newest accepted statement on flash, kept power-fail safely in an area of its own: two
//! copies, each a run of whole erase units, written alternately.
//!
//! Why not the state log: a statement is up to [`MAX_SIGNED_LEN`] bytes, the log's records
//! are 32, and the log restates its whole state in every unit it moves into (a 1 KiB unit on the
//! micro:bit could not hold a statement next to a restated swap). A statement changes a few
//! times in a device's life, so its area is erased a few times too, apart from the log's wear.
//!
//! ```text
//! copy: header (rounded up to the write unit)         statement bytes
//!       "FWIT" version:u32 LE len:u16 LE 0:u16 crc:u32 LE    [len]
//! crc: CRC-32 (ISO-HDLC) of version, len, 0 and the statement bytes
//! ```
//!
//! An install erases the copy that does not hold the newest statement, programs the statement
//! bytes, and programs the header last. A cut before the header is complete leaves that copy
//! without a valid header, so the other copy (the old statement) is read: the device ends on
//! the old or the new statement, never neither.

use embedded_storage::nor_flash::NorFlash;

use super::error::TrustError;
use super::statement::MAX_SIGNED_LEN;
use crate::flash::io;
use crate::flash::{FlashLayout, Region};

const MAGIC: [u8; 4] = *b"FWIT";
const HEADER: usize = 16;
const CRC: crc::Crc<u32, crc::NoTable> = crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

/// The trust area: two copies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TrustStore {
    copies: [Region; 2],
    header: u32,
    write_unit: u32,
    erased: u8,
}

/// What a copy holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Held {
    version: u32,
    len: usize,
}

impl TrustStore {
    /// The store in `area` of `layout`'s flash: the first copy is the fewest erase units from
    /// the area's start that hold a header and the longest statement, the second the fewest
    /// after it.
    pub fn new(layout: &FlashLayout, area: Region) -> Result<Self, TrustError> {
        let header = HEADER.div_ceil(layout.write_unit() as usize) * layout.write_unit() as usize;
        let need = (header + MAX_SIGNED_LEN) as u32;
        if layout.unit_containing(area.offset).is_none_or(|u| u.offset != area.offset)
            || area.end() > layout.size()
        {
            return Err(TrustError::Area);
        }
        let mut copies = [Region { offset: area.offset, size: 0 }; 2];
        let mut at = area.offset;
        for copy in &mut copies {
            *copy = Region { offset: at, size: 0 };
            while copy.size < need {
                let unit = layout.unit_containing(at).ok_or(TrustError::Area)?;
                if unit.end() > area.end() {
                    return Err(TrustError::Area);
                }
                copy.size += unit.size;
                at = unit.end();
            }
        }
        Ok(TrustStore {
            copies,
            header: header as u32,
            write_unit: layout.write_unit(),
            erased: layout.erased(),
        })
    }

    /// The two copies' regions.
    pub fn copies(&self) -> [Region; 2] {
        self.copies
    }

    /// Reads the newest valid copy into `buf`: its bytes, or `None` if neither copy holds a
    /// statement (a device still on its provisioned root). The bytes were verified when they
    /// were installed; the caller parses them.
    pub fn read<'b, F: NorFlash>(
        &self,
        flash: &mut F,
        buf: &'b mut [u8; MAX_SIGNED_LEN],
    ) -> Result<Option<&'b [u8]>, TrustError> {
        let Some((index, held)) = self.newest(flash, buf)? else { return Ok(None) };
        let bytes = &mut buf[..held.len];
        io::read(flash, self.copies[index].offset + self.header, bytes)?;
        Ok(Some(bytes))
    }

    /// The version the store holds (0: none).
    pub fn version<F: NorFlash>(&self, flash: &mut F) -> Result<u32, TrustError> {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        Ok(self.newest(flash, &mut buf)?.map_or(0, |(_, held)| held.version))
    }

    /// Stores `bytes`, an accepted statement of version `version`, in the copy that does not
    /// hold the newest one.
    pub fn install<F: NorFlash>(
        &self,
        flash: &mut F,
        version: u32,
        bytes: &[u8],
    ) -> Result<(), TrustError> {
        if bytes.len() > MAX_SIGNED_LEN {
            return Err(TrustError::Malformed);
        }
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let target = match self.newest(flash, &mut buf)? {
            Some((index, _)) => 1 - index,
            None => 0,
        };
        let copy = self.copies[target];
        if !io::is_erased(flash, copy, self.erased)? {
            io::erase(flash, copy)?;
        }
        let wu = self.write_unit as usize;
        // The body, padded to whole write units, through a stack chunk.
        let mut chunk = [self.erased; io::CHUNK];
        let mut at = 0;
        while at < bytes.len() {
            let n = (bytes.len() - at).min(io::CHUNK);
            let padded = n.div_ceil(wu) * wu;
            chunk[..padded].fill(self.erased);
            chunk[..n].copy_from_slice(&bytes[at..at + n]);
            io::program(
                flash,
                copy.offset + self.header + at as u32,
                &chunk[..padded],
                wu,
                self.erased,
            )?;
            at += n;
        }
        let mut header = [self.erased; io::CHUNK];
        header[..HEADER].copy_from_slice(&encode_header(version, bytes));
        io::program(flash, copy.offset, &header[..self.header as usize], wu, self.erased)?;
        Ok(())
    }

    /// The copy holding the highest valid version, checked against its CRC (`buf` is scratch).
    fn newest<F: NorFlash>(
        &self,
        flash: &mut F,
        buf: &mut [u8; MAX_SIGNED_LEN],
    ) -> Result<Option<(usize, Held)>, TrustError> {
        let mut best: Option<(usize, Held)> = None;
        for (index, copy) in self.copies.iter().enumerate() {
            let mut header = [0u8; HEADER];
            io::read(flash, copy.offset, &mut header)?;
            let Some((held, crc)) = decode_header(&header) else { continue };
            let bytes = &mut buf[..held.len];
            io::read(flash, copy.offset + self.header, bytes)?;
            if checksum(held.version, bytes) != crc {
                continue;
            }
            if best.is_none_or(|(_, b)| held.version > b.version) {
                best = Some((index, held));
            }
        }
        Ok(best)
    }
}

fn checksum(version: u32, bytes: &[u8]) -> u32 {
    let mut digest = CRC.digest();
    digest.update(&version.to_le_bytes());
    digest.update(&(bytes.len() as u16).to_le_bytes());
    digest.update(&[0, 0]);
    digest.update(bytes);
    digest.finalize()
}

fn encode_header(version: u32, bytes: &[u8]) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&version.to_le_bytes());
    out[8..10].copy_from_slice(&(bytes.len() as u16).to_le_bytes());
    out[12..].copy_from_slice(&checksum(version, bytes).to_le_bytes());
    out
}

fn decode_header(header: &[u8; HEADER]) -> Option<(Held, u32)> {
    if header[..4] != MAGIC || header[10..12] != [0, 0] {
        return None;
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = usize::from(u16::from_le_bytes([header[8], header[9]]));
    let crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    (len <= MAX_SIGNED_LEN && len > 0).then_some((Held { version, len }, crc))
}
