//! Device side of the fleet pipeline.
//!
//! Everything here runs on the device as well as on hosts: it is `no_std`, never allocates,
//! and never panics on any input. The `std` feature adds what only hosts need (building and
//! signing images).
//!
//! - [`image`]: image format v1 — the signed manifest, the header that carries it, parsing,
//!   signature checks and streaming decompression with hashing.
#![no_std]

#[cfg(feature = "std")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod boot;
pub mod delta;
pub mod flash;
pub mod image;
pub mod link;
pub mod provision;
#[cfg(feature = "sim")]
pub mod sim;
pub mod slot;
pub mod state;
pub mod trust;
pub mod update;
