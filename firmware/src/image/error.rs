//! Why an image, a manifest or a layout was refused. Every message says what and where.

use super::unpack::UnpackError;
use super::{ComponentName, FORMAT_VERSION, KeyId, MAX_COMPONENTS, VersionError};

/// A manifest whose content breaks a rule of the format.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not a postcard manifest (or a field is longer than its bound).
    #[error("manifest is malformed: {0}")]
    Malformed(postcard::Error),
    /// Not the one canonical encoding: a number in more bytes than it needs, or bytes after
    /// the end.
    #[error("manifest encoding is not canonical (over-long number or bytes after its end)")]
    NotCanonical,
    /// The manifest says a format version other than this one.
    #[error("manifest format version is {0}, this reader knows version {FORMAT_VERSION}")]
    FormatVersion(u16),
    /// A board name that is empty or has characters outside `[a-z0-9_-]`.
    #[error("board name {0:?} must be 1 to 32 characters of [a-z0-9_-]")]
    BoardName(heapless::String<{ super::MAX_BOARD_LEN }>),
    /// The version's labels are not valid.
    #[error("version: {0}")]
    Version(VersionError),
    /// No components, or no `os` and no `app`.
    #[error("an image needs an `os` or an `app` component (or both)")]
    NoOsOrApp,
    /// More components than the format allows.
    #[error("at most {MAX_COMPONENTS} components are allowed")]
    TooManyComponents,
    /// A component name breaks the naming rule.
    #[error(
        "component {0:?}: name must be `os` for the os, `app` for the app, and 1 to 16 \
         characters of [a-z0-9_-] other than those for data"
    )]
    ComponentName(ComponentName),
    /// Two components with the same name (or two `os`, two `app`).
    #[error("component {0:?} appears twice")]
    DuplicateComponent(ComponentName),
    /// A component with no bytes.
    #[error("component {0:?} is empty")]
    EmptyComponent(ComponentName),
    /// A component that would run past the end of the 32-bit address space.
    #[error("component {0:?} runs past the end of the 32-bit address space")]
    AddressOverflow(ComponentName),
    /// Components are not listed in ascending address order, or overlap.
    #[error(
        "components {first:?} (ends at {first_end:#010x}) and {second:?} (starts at \
         {second_start:#010x}) overlap or are out of address order"
    )]
    Overlap {
        /// The component listed first.
        first: ComponentName,
        /// Where it ends (exclusive).
        first_end: u32,
        /// The component listed next.
        second: ComponentName,
        /// Where that one starts.
        second_start: u32,
    },
    /// A stored size impossible for the carriage (raw must be exact; heatshrink is bounded).
    #[error("component {name:?}: stored size {stored} is impossible for its size {size}")]
    StoredSize {
        /// The component.
        name: ComponentName,
        /// Its installed size.
        size: u32,
        /// Its payload size in the transport file.
        stored: u32,
    },
}

/// A component that does not fit where the board's slot A lets images live.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LayoutError {
    /// The header does not fit the space the board reserves for it.
    #[error("the image header is {len} bytes, the board reserves {reserved} bytes for it")]
    HeaderTooLarge {
        /// Header length.
        len: usize,
        /// The board's reserved header size.
        reserved: u32,
    },
    /// A component outside `[slot A + header, slot A end)`.
    #[error(
        "component {name:?} occupies {start:#010x}..{end:#010x}, outside slot A's image area \
         {area_start:#010x}..{area_end:#010x}"
    )]
    OutsideSlot {
        /// The component.
        name: ComponentName,
        /// Its first address.
        start: u32,
        /// Its end address (exclusive).
        end: u64,
        /// First address a component may use (slot A + header).
        area_start: u32,
        /// End of slot A (exclusive).
        area_end: u64,
    },
}

/// Why bytes are not an intact image (or not one this device may accept).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ImageError {
    /// The first bytes are not the image magic.
    #[error("not an image (no FWIM magic at the start)")]
    NotAnImage,
    /// The header says a format version other than this one.
    #[error("image format version {0} is not supported (this reader knows {FORMAT_VERSION})")]
    UnsupportedFormat(u16),
    /// Reserved header bytes are not zero.
    #[error("header byte {offset} is reserved and must be zero")]
    ReservedByte {
        /// Offset of the byte in the file.
        offset: usize,
    },
    /// The header's manifest length is out of bounds.
    #[error("header gives a manifest length of {len} bytes, the format allows 1 to {max}")]
    ManifestLength {
        /// Length given.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The header's signature count is out of bounds.
    #[error("header gives {0} signatures, the format allows 1 to {max}", max = super::MAX_SIGNATURES)]
    SignatureCount(u8),
    /// The same key id signs twice.
    #[error("key {0} signs the image twice")]
    DuplicateSignature(KeyId),
    /// The data ends inside the header.
    #[error("truncated: the header needs {needed} bytes, only {have} are there")]
    TruncatedHeader {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// The data ends inside a component's payload.
    #[error(
        "truncated: the payload of component {name:?} ends at byte {needed}, the data at {have}"
    )]
    TruncatedPayload {
        /// The first component cut off.
        name: ComponentName,
        /// Offset where its payload ends.
        needed: u64,
        /// Bytes present.
        have: usize,
    },
    /// Bytes follow the last payload.
    #[error("{extra} unexpected bytes after the last component's payload")]
    TrailingData {
        /// How many.
        extra: u64,
    },
    /// The manifest breaks a rule.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// No signature by a key the reader trusts.
    #[error("unknown key: signed by {signers}, none of which is trusted")]
    UnknownKey {
        /// The key ids that signed, for the message.
        signers: KeyIds,
    },
    /// A signature by a trusted key does not verify.
    #[error("bad signature by key {0}")]
    BadSignature(KeyId),
    /// A component's payload does not decode to its manifest entry.
    #[error("component {name:?}: {error}")]
    Component {
        /// The component.
        name: ComponentName,
        /// What is wrong with it.
        error: UnpackError,
    },
    /// The image does not fit the slot.
    #[error("{0}")]
    Layout(#[from] LayoutError),
}

/// Up to [`super::MAX_SIGNATURES`] key ids, displayed comma-separated.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct KeyIds(pub heapless::Vec<KeyId, { super::MAX_SIGNATURES }>);

impl core::fmt::Display for KeyIds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}
