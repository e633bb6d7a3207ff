//! Simulation for hosts (feature `sim`): a NOR flash that enforces the rules real parts impose,
//! counts wear, and loses power on command ([`SimFlash`]); and a simulated device that runs the
//! real boot logic and update agent on it ([`device`]).

pub mod build;
pub mod campaign;
pub mod device;
mod flash;
mod rng;

pub use flash::{Cut, CutKind, SimError, SimFlash, Stats};
pub use rng::Rng;
