//! Why a trust statement, or a chain of them, was refused.

use crate::flash::io::FlashError;
use crate::image::KeyId;

/// A trust statement refused; nothing was stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TrustError {
    /// Not one postcard statement followed by its signature records.
    #[error("trust statement is malformed")]
    Malformed,
    /// A statement format this code does not read.
    #[error("trust statement format {0} is not supported (this device reads format 1)")]
    Format(u8),
    /// A root threshold of 0 or above the number of root keys.
    #[error("trust statement root threshold is 0 or above its number of root keys")]
    BadThreshold,
    /// A key is not a usable Ed25519 public key.
    #[error("trust statement names a key that is not a usable Ed25519 public key")]
    BadKey,
    /// A key named twice in one role, or both as build key and retired.
    #[error("trust statement names a key twice")]
    DuplicateKey,
    /// No key may sign images.
    #[error("trust statement names no build key")]
    NoBuildKey,
    /// An environment name breaks the naming rule, or is named twice.
    #[error("trust statement names an invalid or repeated environment")]
    BadEnvironment,
    /// A root key's signature does not verify.
    #[error("trust statement signature by key {0} does not verify")]
    BadSignature(KeyId),
    /// Too few root keys signed.
    #[error("trust statement signed by {have} root key(s) of the {need} needed")]
    Threshold {
        /// Distinct root keys whose signature verified.
        have: u8,
        /// The threshold.
        need: u8,
    },
    /// Not newer than the statement the device holds (a replay, or out of order).
    #[error("trust statement version {got} is not above {have}, the version this device holds")]
    Replayed {
        /// The statement's version.
        got: u32,
        /// The device's.
        have: u32,
    },
    /// Skips versions: the statements between are missing from the chain.
    #[error(
        "trust statement version {got} does not follow {have}: the versions between are missing"
    )]
    Gap {
        /// The statement's version.
        got: u32,
        /// The device's.
        have: u32,
    },
    /// The running image is signed by no key the statement lets boot (a hard revocation
    /// before its replacement was installed).
    #[error(
        "trust statement would stop the running image from booting: install its replacement first"
    )]
    StrandsRunningImage,
    /// The trust area is off the erase grid or too small for two copies.
    #[error("trust area must be on the erase grid and hold two copies of a statement")]
    Area,
    /// A flash operation failed.
    #[error("{0}")]
    Flash(#[from] FlashError),
}
