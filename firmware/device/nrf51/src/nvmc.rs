//! The nRF51's flash controller (NVMC) as an `embedded-storage` `NorFlash`.
//!
//! Flash is memory-mapped from address 0, so offsets are addresses. Reads are plain loads;
//! erases and writes go through the NVMC registers, whole 32-bit words only (byte and halfword
//! stores fault), waiting for READY after each. The boot logic never writes below slot A; this
//! driver refuses to, so a bug cannot erase the bootloader itself.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

const READY: *const u32 = 0x4001_E400 as _;
const CONFIG: *mut u32 = 0x4001_E504 as _;
const ERASEPAGE: *mut u32 = 0x4001_E508 as _;
const CONFIG_READ: u32 = 0;
const CONFIG_WRITE: u32 = 1;
const CONFIG_ERASE: u32 = 2;

/// The NVMC over `[lowest, size)` for writes and erases, `[0, size)` for reads.
pub struct Nvmc {
    /// Flash size.
    pub size: u32,
    /// Nothing below this address is erased or written (the bootloader's own partition).
    pub lowest: u32,
    /// Erase page size.
    pub page: u32,
}

fn wait() {
    // SAFETY: READY is the NVMC's read-only status register.
    while unsafe { READY.read_volatile() } & 1 == 0 {}
}

fn set_config(value: u32) {
    // SAFETY: CONFIG is the NVMC's mode register; every mode leaves flash readable.
    unsafe { CONFIG.write_volatile(value) };
    wait();
}

impl Nvmc {
    fn check(&self, from: u32, to: u32, align: u32) -> Result<(), NorFlashErrorKind> {
        if from > to || to > self.size || from < self.lowest {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        if !from.is_multiple_of(align) || !to.is_multiple_of(align) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        Ok(())
    }
}

impl ErrorType for Nvmc {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Nvmc {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let end = offset.checked_add(bytes.len() as u32).ok_or(NorFlashErrorKind::OutOfBounds)?;
        if end > self.size {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: flash is mapped at [0, size) and the range was checked.
            *b = unsafe { ((offset as usize + i) as *const u8).read_volatile() };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.size as usize
    }
}

impl NorFlash for Nvmc {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 1024;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.check(from, to, self.page)?;
        set_config(CONFIG_ERASE);
        for page in (from..to).step_by(self.page as usize) {
            // SAFETY: ERASEPAGE takes the address of a page inside the checked range.
            unsafe { ERASEPAGE.write_volatile(page) };
            wait();
        }
        set_config(CONFIG_READ);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let end = offset.checked_add(bytes.len() as u32).ok_or(NorFlashErrorKind::OutOfBounds)?;
        self.check(offset, end, 4)?;
        set_config(CONFIG_WRITE);
        for (i, word) in bytes.chunks_exact(4).enumerate() {
            let value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            // SAFETY: a word-aligned flash address inside the checked range, written while the
            // NVMC is in write mode.
            unsafe { ((offset as usize + 4 * i) as *mut u32).write_volatile(value) };
            wait();
        }
        set_config(CONFIG_READ);
        Ok(())
    }
}
