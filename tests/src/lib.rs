//! End-to-end tests across crates, and the fleet simulator once the server exists.
//!
//! For now this crate holds the real firmware fixtures (`fixtures/`) that the `imager` tests
//! fuse: ELF files built by `arm-none-eabi-gcc` for every shipped board, and the script that
//! builds them.
