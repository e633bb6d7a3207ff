//! Board files: one TOML file per board, describing its flash geometry, partitions and the
//! facts tools need (probe-rs chip name, Rust target, QEMU machine).
//!
//! [`Board::from_toml`] parses and validates one file; [`Catalog`] holds the boards shipped in
//! `boards/defs/` (compiled in) plus any from a folder the user names. Every validation error
//! names the field at fault.
//!
//! Offsets in a board file are relative to the start of flash; [`Board::address`] turns them
//! into absolute addresses.

mod board;
mod catalog;
mod error;
mod validate;

pub use board::{
    Board, EraseLayout, Flash, ImageSettings, Partition, PartitionName, Partitions, Ram, SectorRun,
};
pub use catalog::Catalog;
pub use error::BoardError;
