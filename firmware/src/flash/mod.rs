//! Flash as the boot logic and the update agent see it: which erase units form which partition
//! ([`FlashLayout`]), and the few operations they need over `embedded_storage`'s `NorFlash`
//! ([`io`]).
//!
//! Geometry comes from the board file, not from the driver's `ERASE_SIZE`, because some chips
//! (STM32F4) have sectors of several sizes. Offsets here are from the start of the flash device;
//! [`FlashLayout::base`] is its absolute address.

pub mod io;
mod layout;

pub use layout::{
    FlashLayout, LayoutProblem, LayoutSpec, MAX_SECTOR_RUNS, Region, SectorRun, Slot,
};
