//! The parts of the nRF51822 (BBC micro:bit v1) the bootloader and the demo OS use, and the
//! board's layout. `firmware/device/NOTES.md` records how QEMU's model of them behaves.
#![no_std]

pub mod nvmc;
pub mod uart;

/// The board's layout, generated from `boards/defs/microbit.toml`.
pub mod board {
    use firmware::flash::{LayoutSpec, Region, SectorRun};
    include!(concat!(env!("OUT_DIR"), "/board.rs"));

    /// The NVMC over this board's flash, refusing writes to the bootloader's partition.
    pub fn flash() -> crate::nvmc::Nvmc {
        crate::nvmc::Nvmc { size: FLASH_SIZE, lowest: BOOTLOADER_END, page: PAGE }
    }
}
