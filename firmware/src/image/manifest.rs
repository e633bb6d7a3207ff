//! The manifest: what an image holds and where it goes. Signed; its hash is the image id.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Version;
use super::error::{LayoutError, ManifestError};
use super::{Compression, FORMAT_VERSION, MAX_BOARD_LEN, MAX_COMPONENTS, MAX_NAME_LEN};

/// A component name: `os`, `app`, or a data part's own name.
pub type ComponentName = heapless::String<MAX_NAME_LEN>;
/// A board name, as in the board files.
pub type BoardName = heapless::String<MAX_BOARD_LEN>;

/// What a component is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Role {
    /// The operating system: started by the bootloader.
    Os,
    /// The application: called by the OS.
    App,
    /// Any other part (fonts, models, configuration), under its own name.
    Data,
}

impl Role {
    /// `os`, `app` or `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Os => "os",
            Role::App => "app",
            Role::Data => "data",
        }
    }
}

/// One component: its place in slot A, its content hash, and how it travels.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Component {
    role: Role,
    name: ComponentName,
    load_address: u32,
    size: u32,
    sha256: [u8; 32],
    compression: Compression,
    stored_size: u32,
}

impl Component {
    /// A component entry. Its rules are checked when it becomes part of a [`Manifest`].
    pub fn new(
        role: Role,
        name: ComponentName,
        load_address: u32,
        installed: &[u8],
        compression: Compression,
        stored_size: u32,
    ) -> Self {
        Component {
            role,
            name,
            load_address,
            size: u32::try_from(installed.len()).unwrap_or(u32::MAX),
            sha256: Sha256::digest(installed).into(),
            compression,
            stored_size,
        }
    }

    /// What the component is for.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Its name (`os`, `app`, or the data part's name).
    pub fn name(&self) -> &ComponentName {
        &self.name
    }
    /// The address of its first byte when installed (inside slot A).
    pub fn load_address(&self) -> u32 {
        self.load_address
    }
    /// Installed length in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }
    /// End address (exclusive) when installed. Fits 33 bits, hence `u64`.
    pub fn end_address(&self) -> u64 {
        u64::from(self.load_address) + u64::from(self.size)
    }
    /// SHA-256 of the installed bytes.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
    /// How the payload is carried in the transport file.
    pub fn compression(&self) -> Compression {
        self.compression
    }
    /// Length of the payload in the transport file.
    pub fn stored_size(&self) -> u32 {
        self.stored_size
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let name_ok = match self.role {
            Role::Os => self.name == "os",
            Role::App => self.name == "app",
            Role::Data => is_valid_data_name(&self.name),
        };
        if !name_ok {
            return Err(ManifestError::ComponentName(self.name.clone()));
        }
        if self.size == 0 {
            return Err(ManifestError::EmptyComponent(self.name.clone()));
        }
        if self.end_address() > 1 << 32 {
            return Err(ManifestError::AddressOverflow(self.name.clone()));
        }
        let stored_ok = match self.compression {
            Compression::Raw => self.stored_size == self.size,
            // Worst case, heatshrink spends 9 bits per byte, plus one byte of padding.
            Compression::Heatshrink(_) => {
                self.stored_size > 0
                    && u64::from(self.stored_size) <= u64::from(self.size) * 9 / 8 + 1
            }
        };
        if !stored_ok {
            return Err(ManifestError::StoredSize {
                name: self.name.clone(),
                size: self.size,
                stored: self.stored_size,
            });
        }
        Ok(())
    }
}

/// Where a board lets an image live: slot A's address and size, and the header space reserved
/// at its start. Components must lie in `[start + header_size, start + size)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SlotLayout {
    /// Absolute address of slot A.
    pub start: u32,
    /// Size of slot A in bytes.
    pub size: u32,
    /// Bytes reserved at the start of slot A for the image header.
    pub header_size: u32,
}

impl SlotLayout {
    /// First address a component may occupy.
    pub fn image_area_start(&self) -> u32 {
        self.start.saturating_add(self.header_size)
    }
    /// End of slot A (exclusive).
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.size)
    }
}

/// The signed description of an image.
///
/// Every `Manifest` value satisfies the format's rules: it is only made by [`Manifest::new`]
/// or [`Manifest::decode`], which both check them.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Manifest {
    format: u16,
    board: BoardName,
    version: Version,
    security_counter: u32,
    components: heapless::Vec<Component, MAX_COMPONENTS>,
}

impl Manifest {
    /// A manifest for `board`, checked. `components` must be in ascending address order.
    pub fn new(
        board: &str,
        version: Version,
        security_counter: u32,
        components: &[Component],
    ) -> Result<Self, ManifestError> {
        let board =
            BoardName::try_from(board).map_err(|_| ManifestError::BoardName(truncated(board)))?;
        let components =
            heapless::Vec::from_slice(components).map_err(|_| ManifestError::TooManyComponents)?;
        let manifest =
            Manifest { format: FORMAT_VERSION, board, version, security_counter, components };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Reads a manifest from exactly `bytes`, which must be its canonical postcard encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut manifest = Manifest::EMPTY;
        manifest.decode_in_place(bytes)?;
        Ok(manifest)
    }

    /// An empty value to decode into (not a valid manifest).
    pub(crate) const EMPTY: Manifest = Manifest {
        format: 0,
        board: BoardName::new(),
        version: Version::new(0, 0, 0),
        security_counter: 0,
        components: heapless::Vec::new(),
    };

    /// [`Manifest::decode`] into `self` (which is overwritten), so no manifest-sized value is
    /// ever moved: this is what keeps parsing within a small device's stack.
    pub fn decode_in_place(&mut self, bytes: &[u8]) -> Result<(), ManifestError> {
        use super::wire::Reader;
        use postcard::Error as E;
        let mut r = Reader::new(bytes);
        self.format = r.u16()?;
        r.string(&mut self.board)?;
        self.version.major = r.u32()?;
        self.version.minor = r.u32()?;
        self.version.patch = r.u32()?;
        r.string(&mut self.version.pre)?;
        r.string(&mut self.version.build)?;
        self.security_counter = r.u32()?;
        let count = r.len()?;
        if count > MAX_COMPONENTS {
            return Err(ManifestError::Malformed(E::DeserializeBadEncoding));
        }
        self.components.clear();
        for _ in 0..count {
            let role = match r.variant()? {
                0 => Role::Os,
                1 => Role::App,
                2 => Role::Data,
                _ => return Err(ManifestError::Malformed(E::DeserializeBadEnum)),
            };
            let mut name = ComponentName::new();
            r.string(&mut name)?;
            let load_address = r.u32()?;
            let size = r.u32()?;
            let sha256 = r.take::<32>()?;
            let compression = match r.variant()? {
                0 => Compression::Raw,
                1 => {
                    let [window, lookahead] = r.take::<2>()?;
                    let params = super::HeatshrinkParams::new(window, lookahead)
                        .map_err(|_| ManifestError::Malformed(E::DeserializeBadEncoding))?;
                    Compression::Heatshrink(params)
                }
                _ => return Err(ManifestError::Malformed(E::DeserializeBadEnum)),
            };
            let stored_size = r.u32()?;
            let component =
                Component { role, name, load_address, size, sha256, compression, stored_size };
            // `count` <= MAX_COMPONENTS, the capacity.
            let _ = self.components.push(component);
        }
        if !r.is_done() {
            return Err(ManifestError::NotCanonical);
        }
        self.validate()
    }

    /// Writes the postcard encoding into `buf`, returning the used part.
    pub fn encode_into<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
        postcard::to_slice(self, buf)
    }

    /// The postcard encoding.
    #[cfg(feature = "std")]
    pub fn encode(&self) -> alloc::vec::Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT_VERSION {
            return Err(ManifestError::FormatVersion(self.format));
        }
        if !is_valid_board_name(&self.board) {
            return Err(ManifestError::BoardName(self.board.clone()));
        }
        self.version.validate().map_err(ManifestError::Version)?;
        if !self.components.iter().any(|c| matches!(c.role, Role::Os | Role::App)) {
            return Err(ManifestError::NoOsOrApp);
        }
        for (i, c) in self.components.iter().enumerate() {
            c.validate()?;
            if self.components[..i].iter().any(|earlier| earlier.name == c.name) {
                return Err(ManifestError::DuplicateComponent(c.name.clone()));
            }
        }
        for pair in self.components.windows(2) {
            if pair[0].end_address() > u64::from(pair[1].load_address) {
                return Err(ManifestError::Overlap {
                    first: pair[0].name.clone(),
                    first_end: pair[0].end_address() as u32,
                    second: pair[1].name.clone(),
                    second_start: pair[1].load_address,
                });
            }
        }
        Ok(())
    }

    /// Checks that the header and every component fit the board's slot A.
    pub fn check_layout(&self, slot: &SlotLayout, header_len: usize) -> Result<(), LayoutError> {
        if header_len > slot.header_size as usize {
            return Err(LayoutError::HeaderTooLarge {
                len: header_len,
                reserved: slot.header_size,
            });
        }
        let area_start = slot.image_area_start();
        for c in &self.components {
            if c.load_address < area_start || c.end_address() > slot.end() {
                return Err(LayoutError::OutsideSlot {
                    name: c.name.clone(),
                    start: c.load_address,
                    end: c.end_address(),
                    area_start,
                    area_end: slot.end(),
                });
            }
        }
        Ok(())
    }

    /// The format version (always [`FORMAT_VERSION`]).
    pub fn format(&self) -> u16 {
        self.format
    }
    /// The board this image is for.
    pub fn board(&self) -> &str {
        &self.board
    }
    /// The image version.
    pub fn version(&self) -> &Version {
        &self.version
    }
    /// Anti-rollback counter: a device refuses images below the counter it stored.
    pub fn security_counter(&self) -> u32 {
        self.security_counter
    }
    /// The components, in ascending address order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }
    /// Total payload bytes that follow the header in the transport file.
    pub fn payload_len(&self) -> u64 {
        self.components.iter().map(|c| u64::from(c.stored_size)).sum()
    }
}

/// `[a-z0-9_-]{1,}`: the alphabet of board names and data component names.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `name` may name a board: 1 to [`MAX_BOARD_LEN`] bytes of `[a-z0-9_-]`.
pub fn is_valid_board_name(name: &str) -> bool {
    name.len() <= MAX_BOARD_LEN && is_identifier(name)
}

/// Whether `name` may name a data component: 1 to [`MAX_NAME_LEN`] bytes of `[a-z0-9_-]`, and
/// neither `os` nor `app`.
pub fn is_valid_data_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && is_identifier(name) && name != "os" && name != "app"
}

/// The first [`MAX_BOARD_LEN`] bytes of `name` (on a character boundary), for messages.
fn truncated(name: &str) -> BoardName {
    let mut out = BoardName::new();
    for ch in name.chars() {
        if out.push(ch).is_err() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{HeatshrinkParams, MAX_LABEL_LEN, MAX_MANIFEST_LEN};
    extern crate std;
    use std::vec::Vec;

    fn name(s: &str) -> ComponentName {
        ComponentName::try_from(s).unwrap()
    }

    fn comp(role: Role, n: &str, addr: u32, len: usize) -> Component {
        Component::new(role, name(n), addr, &std::vec![0xA5; len], Compression::Raw, len as u32)
    }

    fn manifest(components: &[Component]) -> Result<Manifest, ManifestError> {
        Manifest::new("microbit", Version::new(1, 0, 0), 0, components)
    }

    #[test]
    fn round_trips_through_postcard() {
        let m = manifest(&[comp(Role::Os, "os", 0x1000, 10), comp(Role::App, "app", 0x2000, 5)])
            .unwrap();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn refuses_broken_rules() {
        use ManifestError as E;
        let os = comp(Role::Os, "os", 0x1000, 0x100);
        type Case = (Vec<Component>, fn(&E) -> bool);
        let cases: Vec<Case> = std::vec![
            (std::vec![], |e| matches!(e, E::NoOsOrApp)),
            (std::vec![comp(Role::Data, "fonts", 0x1000, 1)], |e| matches!(e, E::NoOsOrApp)),
            (std::vec![comp(Role::Os, "kernel", 0x1000, 1)], |e| matches!(e, E::ComponentName(_))),
            (std::vec![os.clone(), comp(Role::Data, "Fonts", 0x2000, 1)], |e| {
                matches!(e, E::ComponentName(_))
            }),
            (std::vec![os.clone(), comp(Role::Data, "app", 0x2000, 1)], |e| {
                matches!(e, E::ComponentName(_))
            }),
            (std::vec![os.clone(), comp(Role::Os, "os", 0x2000, 1)], |e| {
                matches!(e, E::DuplicateComponent(_))
            }),
            (std::vec![comp(Role::Os, "os", 0x1000, 0)], |e| matches!(e, E::EmptyComponent(_))),
            (std::vec![comp(Role::Os, "os", 0xFFFF_FFF0, 0x20)], |e| {
                matches!(e, E::AddressOverflow(_))
            }),
            (std::vec![os.clone(), comp(Role::App, "app", 0x10FF, 4)], |e| {
                matches!(e, E::Overlap { first_end: 0x1100, second_start: 0x10FF, .. })
            }),
            (std::vec![comp(Role::App, "app", 0x2000, 4), os.clone()], |e| {
                matches!(e, E::Overlap { .. })
            }),
        ];
        for (components, expected) in cases {
            let err = manifest(&components).unwrap_err();
            assert!(expected(&err), "{components:?}: got {err:?}");
        }
        let mut raw = comp(Role::Os, "os", 0x1000, 16);
        raw.stored_size = 15;
        assert!(matches!(manifest(&[raw]), Err(E::StoredSize { .. })));
        let mut packed = comp(Role::Os, "os", 0x1000, 16);
        packed.compression = Compression::Heatshrink(HeatshrinkParams::DEFAULT);
        packed.stored_size = 16 * 9 / 8 + 2;
        assert!(matches!(manifest(&[packed]), Err(E::StoredSize { .. })));
        assert!(matches!(
            Manifest::new("Micro:bit", Version::new(1, 0, 0), 0, core::slice::from_ref(&os)),
            Err(E::BoardName(_))
        ));
    }

    #[test]
    fn decode_refuses_non_canonical_and_trailing_bytes() {
        let m = manifest(&[comp(Role::Os, "os", 0x1000, 10)]).unwrap();
        let mut bytes = m.encode();
        bytes.push(0);
        assert_eq!(Manifest::decode(&bytes), Err(ManifestError::NotCanonical));
        // The format field (1) written as an over-long varint: 0x81 0x00.
        let canonical = m.encode();
        let mut long = std::vec![0x81, 0x00];
        long.extend_from_slice(&canonical[1..]);
        assert_eq!(Manifest::decode(&long), Err(ManifestError::NotCanonical));
    }

    #[test]
    fn largest_manifest_fits_the_stated_bound() {
        let label = "a".repeat(MAX_LABEL_LEN);
        let version: Version =
            std::format!("{}.{}.{}-{label}+{label}", u32::MAX, u32::MAX, u32::MAX).parse().unwrap();
        let mut components = std::vec![
            comp(Role::Os, "os", 0x1000_0000, 1),
            comp(Role::App, "app", 0x2000_0000, 1),
        ];
        for i in 0..MAX_COMPONENTS - 2 {
            let n = std::format!("{:x>16}", i);
            components.push(comp(Role::Data, &n, 0x3000_0000 + i as u32 * 0x1000_0000, 1));
        }
        for c in &mut components {
            c.size = 0x0FFF_FFFF;
            c.compression = Compression::Heatshrink(HeatshrinkParams::DEFAULT);
            c.stored_size = 0x0FFF_FFFF;
        }
        let m = Manifest::new(&"b".repeat(MAX_BOARD_LEN), version, u32::MAX, &components).unwrap();
        // Every field at its widest except: the format (1) takes 1 byte of its 3, sizes and
        // stored sizes 4 of 5 (they must leave room for eight components), and the names
        // `os` and `app` 2 and 3 of 16.
        let shortfall = 2 + 2 * MAX_COMPONENTS + (MAX_NAME_LEN - 2) + (MAX_NAME_LEN - 3);
        assert_eq!(m.encode().len() + shortfall, MAX_MANIFEST_LEN);
    }

    /// The in-place reader (devices) and serde/postcard (which writes manifests) agree: on
    /// valid manifests, and on every byte of them mutated.
    #[test]
    fn in_place_reader_agrees_with_postcard() {
        let mut seed = 0x1234_5678_9ABC_DEF0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let n = 1 + (next() % 8) as usize;
            let mut components = Vec::new();
            let mut addr = (next() % 0x1000_0000) as u32;
            for i in 0..n {
                let len = 1 + (next() % 70_000) as usize;
                let (role, name) = match i {
                    0 => (Role::Os, std::string::String::from("os")),
                    1 => (Role::App, "app".into()),
                    _ => (Role::Data, std::format!("d{i}-{}", next() % 1000)),
                };
                let compression = if next() % 2 == 0 {
                    Compression::Raw
                } else {
                    let all = HeatshrinkParams::SUPPORTED;
                    Compression::Heatshrink(all[(next() % all.len() as u64) as usize])
                };
                let stored = match compression {
                    Compression::Raw => len as u32,
                    Compression::Heatshrink(_) => 1 + (next() % len as u64) as u32,
                };
                components.push(Component::new(
                    role,
                    name.as_str().try_into().unwrap(),
                    addr,
                    &std::vec![i as u8; len],
                    compression,
                    stored,
                ));
                addr += len as u32 + (next() % 4096) as u32;
            }
            let version = Version::new(next() as u32 % 300, next() as u32, 7);
            let m = Manifest::new("board-x", version, next() as u32, &components).unwrap();
            let bytes = m.encode();
            assert_eq!(Manifest::decode(&bytes).unwrap(), m);
            for _ in 0..20 {
                let mut bad = bytes.clone();
                let at = (next() % bad.len() as u64) as usize;
                bad[at] = next() as u8;
                if round % 3 == 0 {
                    bad.truncate((next() % bad.len() as u64) as usize);
                }
                let mine = Manifest::decode(&bad);
                let theirs = postcard::take_from_bytes::<Manifest>(&bad);
                match mine {
                    Ok(m) => {
                        let (t, rest) = theirs.expect("postcard reads what the reader accepts");
                        assert!(rest.is_empty());
                        assert_eq!(m, t);
                        assert_eq!(m.encode(), bad, "only canonical encodings are accepted");
                    }
                    Err(_) => {
                        if let Ok((t, rest)) = theirs {
                            // Postcard reads it: then it breaks a rule, is not canonical, or
                            // has bytes left over.
                            let valid = t.format() == FORMAT_VERSION
                                && Manifest::new(
                                    t.board(),
                                    t.version().clone(),
                                    t.security_counter(),
                                    t.components(),
                                )
                                .is_ok();
                            assert!(!rest.is_empty() || t.encode() != bad || !valid, "{bad:02x?}");
                        }
                    }
                }
            }
        }
    }
}
