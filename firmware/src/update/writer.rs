//! Writing an installed image into a slot as it is decoded: in order of installed offset, each
//! erase unit erased just before its first byte is written (and only if it is not erased
//! already), bytes gathered into aligned blocks so every write unit is programmed once.

use embedded_storage::nor_flash::NorFlash;

use crate::flash::io::{self, CHUNK};
use crate::flash::{FlashLayout, Region};
use crate::slot::{Place, SlotError, flash_offset, read_installed};

pub(crate) struct SlotWriter {
    place: Place,
    block: [u8; CHUNK],
    /// Installed offset of the block being filled (CHUNK-aligned), if any.
    block_base: Option<u32>,
    /// Installed offset below which every erase unit is ready (erased in this session, or
    /// complete from before a checkpoint).
    ready_until: u32,
}

impl SlotWriter {
    /// A writer for the image in `place`; units below installed offset `ready_until` are kept.
    pub(crate) fn new(place: Place, ready_until: u32) -> Self {
        SlotWriter { place, block: [0; CHUNK], block_base: None, ready_until }
    }

    /// Writes `bytes` at installed offset `at`, which must not be below anything written before.
    pub(crate) fn write<F: NorFlash>(
        &mut self,
        flash: &mut F,
        layout: &FlashLayout,
        mut at: u32,
        mut bytes: &[u8],
    ) -> Result<(), SlotError> {
        while !bytes.is_empty() {
            let base = at - at % CHUNK as u32;
            if self.block_base != Some(base) {
                self.flush(flash, layout)?;
                self.prepare(flash, layout, base + CHUNK as u32)?;
                self.block.fill(layout.erased());
                self.block_base = Some(base);
            }
            let within = (at - base) as usize;
            let n = bytes.len().min(CHUNK - within);
            self.block[within..within + n].copy_from_slice(&bytes[..n]);
            at += n as u32;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Reads installed bytes `[at, at + buf.len())` as written so far: from flash, and from the
    /// block being filled where they are still there.
    pub(crate) fn read<F: NorFlash>(
        &self,
        flash: &mut F,
        layout: &FlashLayout,
        at: u32,
        buf: &mut [u8],
    ) -> Result<(), SlotError> {
        read_installed(flash, layout, self.place, at, buf)?;
        if let Some(base) = self.block_base {
            for (i, byte) in buf.iter_mut().enumerate() {
                let position = at as usize + i;
                if let Some(&pending) =
                    position.checked_sub(base as usize).and_then(|j| self.block.get(j))
                {
                    *byte = pending;
                }
            }
        }
        Ok(())
    }

    /// Programs the block being filled.
    pub(crate) fn flush<F: NorFlash>(
        &mut self,
        flash: &mut F,
        layout: &FlashLayout,
    ) -> Result<(), SlotError> {
        if let Some(base) = self.block_base.take() {
            let offset = flash_offset(layout, self.place, base).ok_or(SlotError::DoesNotFit)?;
            io::program(flash, offset, &self.block, layout.write_unit() as usize, layout.erased())?;
        }
        Ok(())
    }

    /// Erases (where not erased already) every unit up to the one holding installed offset
    /// `end - 1`.
    pub(crate) fn prepare<F: NorFlash>(
        &mut self,
        flash: &mut F,
        layout: &FlashLayout,
        end: u32,
    ) -> Result<(), SlotError> {
        while self.ready_until < end {
            let offset =
                flash_offset(layout, self.place, self.ready_until).ok_or(SlotError::DoesNotFit)?;
            let unit: Region = layout.unit_containing(offset).ok_or(SlotError::DoesNotFit)?;
            if !io::is_erased(flash, unit, layout.erased())? {
                io::erase(flash, unit)?;
            }
            self.ready_until += unit.end() - offset;
        }
        Ok(())
    }
}
