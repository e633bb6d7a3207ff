//! End-to-end tests across crates, and the fleet simulator.
//!
//! - [`fleet`]: `fleet-sim`'s library: simulated devices that run the real `firmware` boot
//!   logic and update agent on a simulated flash against a real ota-server.
//! - `fixtures/`: the real firmware inputs (ELF files built by `arm-none-eabi-gcc` for every
//!   shipped board) and the script that builds them.
//! - `tests/`: end-to-end tests of `imager`, `ota-server` and `fleet-sim` together.

pub mod fleet;
