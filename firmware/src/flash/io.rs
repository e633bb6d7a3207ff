//! The flash operations the boot logic and the agent are built from. All of them move data in
//! chunks of [`CHUNK`] bytes through stack buffers, so their RAM use is fixed and small.

use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

use super::Region;

/// Bytes moved per read or write (a multiple of every shipped board's write unit).
pub const CHUNK: usize = 256;

/// A flash operation failed (on the simulated flash, this is also how a power cut shows).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("flash operation failed: {0:?}")]
pub struct FlashError(pub NorFlashErrorKind);

fn kind<E: NorFlashError>(e: E) -> FlashError {
    FlashError(e.kind())
}

/// Reads `buf.len()` bytes at `offset`.
pub fn read<F: ReadNorFlash>(flash: &mut F, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
    flash.read(offset, buf).map_err(kind)
}

/// Erases `region` (which lies on the erase grid).
pub fn erase<F: NorFlash>(flash: &mut F, region: Region) -> Result<(), FlashError> {
    flash.erase(region.offset, region.end()).map_err(kind)
}

/// Programs `bytes` at `offset` (both aligned to the write unit), skipping write-unit-aligned
/// chunks that are all `erased`: programming the erased value changes nothing, and skipping it
/// saves wear and time.
pub fn program<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    bytes: &[u8],
    write_unit: usize,
    erased: u8,
) -> Result<(), FlashError> {
    let mut at = 0;
    while at < bytes.len() {
        // Skip a run of erased write units, then program the next run of non-erased ones.
        let unit_end = |i: usize| (i + write_unit).min(bytes.len());
        while at < bytes.len() && bytes[at..unit_end(at)].iter().all(|&b| b == erased) {
            at = unit_end(at);
        }
        let start = at;
        while at < bytes.len() && !bytes[at..unit_end(at)].iter().all(|&b| b == erased) {
            at = unit_end(at);
        }
        if at > start {
            flash.write(offset + start as u32, &bytes[start..at]).map_err(kind)?;
        }
    }
    Ok(())
}

/// Whether every byte of `region` reads as `erased`.
pub fn is_erased<F: ReadNorFlash>(
    flash: &mut F,
    region: Region,
    erased: u8,
) -> Result<bool, FlashError> {
    let mut buf = [0u8; CHUNK];
    let mut at = region.offset;
    while at < region.end() {
        let n = CHUNK.min((region.end() - at) as usize);
        read(flash, at, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != erased) {
            return Ok(false);
        }
        at += n as u32;
    }
    Ok(true)
}

/// Whether two regions of the same size hold the same bytes.
pub fn same<F: ReadNorFlash>(flash: &mut F, a: Region, b: Region) -> Result<bool, FlashError> {
    if a.size != b.size {
        return Ok(false);
    }
    let (mut x, mut y) = ([0u8; CHUNK], [0u8; CHUNK]);
    let mut done = 0;
    while done < a.size {
        let n = CHUNK.min((a.size - done) as usize);
        read(flash, a.offset + done, &mut x[..n])?;
        read(flash, b.offset + done, &mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        done += n as u32;
    }
    Ok(true)
}

/// Makes erase unit `to` hold what erase unit `from` holds (same size): nothing if it already
/// does, else erase (unless already erased) and program. Returns whether it changed flash.
///
/// Idempotent, so a copy cut by power loss is redone by calling it again, provided `from` was
/// not touched in between.
pub fn copy_unit<F: NorFlash>(
    flash: &mut F,
    from: Region,
    to: Region,
    write_unit: usize,
    erased: u8,
) -> Result<bool, FlashError> {
    if same(flash, from, to)? {
        return Ok(false);
    }
    if !is_erased(flash, to, erased)? {
        erase(flash, to)?;
    }
    let mut buf = [0u8; CHUNK];
    let mut done = 0;
    while done < from.size {
        let n = CHUNK.min((from.size - done) as usize);
        read(flash, from.offset + done, &mut buf[..n])?;
        program(flash, to.offset + done, &buf[..n], write_unit, erased)?;
        done += n as u32;
    }
    Ok(true)
}
