//! The parts of the nRF51822 (BBC micro:bit v1) the bootloader and the demo OS use, and the
//! board's layout. `firmware/device/NOTES.md` records how QEMU's model of them behaves.
#![no_std]

pub mod nvmc;
pub mod timer;
pub mod uart;

/// The board's layout, generated from `boards/defs/microbit.toml`.
pub mod board {
    use firmware::flash::{LayoutSpec, Region, SectorRun};
    include!(concat!(env!("OUT_DIR"), "/board.rs"));

    /// The NVMC over this board's flash, refusing writes to the bootloader's partition.
    pub fn flash() -> crate::nvmc::Nvmc {
        crate::nvmc::Nvmc { size: FLASH_SIZE, lowest: BOOTLOADER_END, page: PAGE }
    }

    /// The erase unit holding the provisioning record ([`firmware::provision`]): the last one
    /// of the bootloader's partition, written at the factory, never by the OS.
    pub fn provision_area() -> &'static [u8] {
        // SAFETY: flash is memory-mapped and readable from address 0 to FLASH_SIZE; this unit
        // lies inside it and is never written while anything runs.
        unsafe { core::slice::from_raw_parts(PROVISION as *const u8, PAGE as usize) }
    }
}
