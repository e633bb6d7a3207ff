//! Image format v1.
//!
//! An image is one board's firmware: named components (`os`, `app`, `data` parts), each placed
//! at the address where it runs inside slot A, described by a postcard [`Manifest`] and signed
//! with Ed25519 over the manifest bytes. See `docs/image-format.md` for the byte layout.
//!
//! The same header (prefix, manifest, signatures) starts both forms of an image:
//! - the *transport* form (`.fwi` file): header, then each component's payload (raw or
//!   heatshrink-compressed) in manifest order;
//! - the *installed* form (what slot A holds): header at the start of the slot, then each
//!   component's plain bytes at its load address.
//!
//! Entry points: [`Header::parse`] for a header, [`TransportImage::parse`] for a whole `.fwi`
//! held in memory, [`TransportImage::verify`] to check signatures and every component hash,
//! [`Unpacker`] to decode one component as its payload streams in.

mod compression;
#[cfg(feature = "std")]
mod encode;
mod error;
mod header;
pub mod heatshrink;
mod id;
mod manifest;
mod release;
#[cfg(feature = "std")]
mod summary;
mod transport;
mod trust;
mod unpack;
mod version;
mod wire;

#[cfg(feature = "std")]
pub use compression::compress;
pub use compression::{Compression, HeatshrinkParams, MAX_WINDOW};
#[cfg(feature = "std")]
pub use encode::{
    ComponentSource, EncodeError, EncodedImage, ImageSpec, encode_image, installed_form,
};
pub use error::{ImageError, KeyIds, LayoutError, ManifestError};
pub use header::{Header, Prefix, SignatureRecord};
pub use id::{ImageId, KeyId, Sha256Digest};
pub use manifest::{
    BoardName, Component, ComponentName, Manifest, Role, SlotLayout, is_valid_board_name,
    is_valid_data_name,
};
pub use release::{
    EnvironmentName, MAX_ENVIRONMENT_LEN, RELEASE_CONTEXT, ReleaseError, ReleaseStatement,
    SignedRelease,
};
#[cfg(feature = "std")]
pub use summary::{ComponentSummary, CompressionSummary, ImageSummary, SignatureSummary};
pub use transport::{TransportImage, Verified};
pub use trust::{BadPublicKey, TrustedKey, verify_header_bytes, verify_signatures};
pub use unpack::{FeedError, Progress, UnpackError, Unpacker};
pub use version::{Version, VersionError};

/// The four bytes every image header starts with.
pub const MAGIC: [u8; 4] = *b"FWIM";
/// The format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;

/// Most components an image may hold.
pub const MAX_COMPONENTS: usize = 8;
/// Longest component name, in bytes.
pub const MAX_NAME_LEN: usize = 16;
/// Longest board name, in bytes.
pub const MAX_BOARD_LEN: usize = 32;
/// Longest pre-release or build label of a version, in bytes.
pub const MAX_LABEL_LEN: usize = 24;
/// Most signatures a header may carry.
pub const MAX_SIGNATURES: usize = 4;

/// Longest possible postcard encoding of a [`Manifest`] within the bounds above.
///
/// Postcard writes a `u16` in at most 3 bytes, a `u32` in at most 5, a string as a length
/// byte plus its bytes, and an enum as a one-byte tag for the few variants used here.
pub const MAX_MANIFEST_LEN: usize = {
    let version = 3 * 5 + 2 * (1 + MAX_LABEL_LEN);
    let component = 1 + (1 + MAX_NAME_LEN) + 5 + 5 + 32 + 3 + 5;
    3 + (1 + MAX_BOARD_LEN) + version + 5 + 1 + MAX_COMPONENTS * component
};

/// Longest possible header: prefix, manifest and signature records.
pub const MAX_HEADER_LEN: usize =
    Prefix::LEN + MAX_MANIFEST_LEN + MAX_SIGNATURES * SignatureRecord::LEN;
