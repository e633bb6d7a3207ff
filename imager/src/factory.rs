//! Factory programming files: the flash of a new device as one file a production line
//! programs, with exactly the bytes `imager run` lays into QEMU's flash (`run::flash_image`):
//! the bootloader in its partition, the installed image in slot A, the rest erased. A device
//! programmed so boots the image, confirmed: an erased state partition is a fresh state log.

use anyhow::{Result, bail};
use boards::Board;

use crate::input::Input;

/// A programming file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Intel HEX: data records with extended linear addresses; erased bytes left out.
    Hex,
    /// Raw binary from the flash's base address to the last programmed byte, gaps filled with
    /// the board's erased value.
    Bin,
}

/// The programming file for `image` (a `.fwi`) with `bootloader` on `board`.
pub fn factory(board: &Board, image: &[u8], bootloader: &Input, format: Format) -> Result<Vec<u8>> {
    let flash = crate::run::flash_image(board, image, Some(bootloader))?;
    let erased = board.flash.erased_value;
    // Slot A always holds the image's header, so something is programmed.
    let end = flash.iter().rposition(|&b| b != erased).map_or(0, |i| i + 1);
    Ok(match format {
        Format::Bin => flash[..end].to_vec(),
        Format::Hex => hex(board.flash.base, &flash[..end], erased)?,
    })
}

/// Bytes per data record: what most tools write.
const RECORD: usize = 16;

/// Intel HEX of `bytes` at `base`: a data record per 16-byte line holding anything but the
/// erased value, an extended linear address record whenever the upper 16 address bits change.
fn hex(base: u32, bytes: &[u8], erased: u8) -> Result<Vec<u8>> {
    if !base.is_multiple_of(RECORD as u32) {
        bail!("the flash base {base:#x} is not aligned to {RECORD} bytes");
    }
    let mut records = Vec::new();
    let mut upper = None;
    for (i, line) in bytes.chunks(RECORD).enumerate() {
        if line.iter().all(|&b| b == erased) {
            continue;
        }
        let Some(address) = u32::try_from(i * RECORD).ok().and_then(|o| base.checked_add(o)) else {
            bail!("the flash reaches past the 32-bit address space");
        };
        let high = (address >> 16) as u16;
        if upper != Some(high) {
            records.push(ihex::Record::ExtendedLinearAddress(high));
            upper = Some(high);
        }
        // A line never crosses a 64 KiB boundary: lines start at multiples of 16 (`base` is
        // one), and 16 divides 65536.
        records.push(ihex::Record::Data { offset: address as u16, value: line.to_vec() });
    }
    records.push(ihex::Record::EndOfFile);
    let text = ihex::create_object_file_representation(&records)
        .map_err(|e| anyhow::anyhow!("writing Intel HEX: {e}"))?;
    Ok((text + "\n").into_bytes())
}
