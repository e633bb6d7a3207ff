//! The `imager` command line, as a library: each command is a plain function over typed
//! arguments, so tests and other tools can call it without a process.
//!
//! - [`keys`]: Ed25519 key files (PKCS#8 / SPKI PEM).
//! - [`input`]: reading firmware inputs (ELF, Intel HEX, raw binary at an address).
//! - [`fuse`]: turning inputs into one signed image for a board.
//! - [`verify`]: checking an image file against public keys and its board.
//! - [`delta`]: patches from one image to the next: made, and applied by the device's code.
//! - [`plan`], [`factory`]: what a board's flash must hold to start an image, and that as one
//!   programming file (Intel HEX, binary, ELF).
//! - [`client`]: the ota-server commands (`push`, `release`, `promote`, `status`, `device add
//!   --from-csv`, ...) over the API's one typed client, `ota_proto::client`.
//! - [`console`], [`run`], [`gateway`]: a device's UART (console text and link frames), QEMU, and
//!   the bridge from the serial link to the server.
//! - [`probe`]: `imager flash`, the plan carried out through a debug probe (probe-rs).
//! - [`chip`]: board files checked against probe-rs's chip database.
//! - [`trust`]: trust statements signed offline with the root key(s) (`imager trust`).
//! - [`cli`]: argument parsing and output.

mod board_list;
pub mod chip;
pub mod cli;
pub mod client;
pub mod console;
pub mod delta;
pub mod factory;
pub mod fuse;
pub mod gateway;
pub mod input;
pub mod keys;
pub mod plan;
pub mod probe;
pub mod run;
pub mod trust;
pub mod verify;
mod write;
