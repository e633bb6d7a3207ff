//! What a slot holds: an installed image, read and checked in place.
//!
//! An installed image is laid out as in slot A: the header at offset 0, each component at its
//! load address. In slot B it sits `shift` erase units further on (the update agent leaves
//! room for the swap to work, see `boot`), each unit of it in the unit of the same size.

use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

use crate::flash::io::{self, FlashError};
use crate::flash::{FlashLayout, Region, Slot};
use crate::image::{
    Header, ImageError, ImageId, MAX_HEADER_LEN, Prefix, TrustedKey, UnpackError, Version,
    verify_signatures,
};

/// Where an installed image lies: in a slot, `shift` erase units from its start.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Place {
    /// The slot.
    pub slot: Slot,
    /// Erase units between the slot's start and the image.
    pub shift: u32,
}

impl Place {
    /// Slot A, where images run.
    pub const A: Place = Place { slot: Slot::A, shift: 0 };
}

/// Why a slot does not hold a bootable image.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SlotError {
    /// Flash could not be read.
    #[error("{0}")]
    Flash(#[from] FlashError),
    /// The bytes are not a valid image (or not one of ours).
    #[error("{0}")]
    Image(#[from] ImageError),
    /// The image's security counter is below the device's minimum.
    #[error("security counter {counter} is below the minimum {min}")]
    Rollback {
        /// The image's counter.
        counter: u32,
        /// The device's minimum.
        min: u32,
    },
    /// The image does not fit where it would have to go.
    #[error("the image does not fit the slots")]
    DoesNotFit,
    /// The image is for another board.
    #[error("the image is for another board")]
    WrongBoard,
    /// Bytes between the header and the components, or between components, are not erased.
    #[error("bytes between the image's parts are not erased (at installed offset {0:#x})")]
    Gap(u32),
    /// The slot does not hold the bytes that were written to it.
    #[error("the slot does not hold the bytes written (they differ at installed offset {0:#x})")]
    NotAsWritten(u32),
}

/// What [`check`] requires of an image besides being intact.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checks<'a> {
    /// Trusted build keys (`None`: signatures not checked).
    pub keys: Option<&'a [TrustedKey]>,
    /// Images below this security counter fail.
    pub min_security_counter: u32,
    /// The board images must be for (`None`: not checked).
    pub board: Option<&'a str>,
}

/// An image checked in place.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SlotImage {
    /// Its id.
    pub id: ImageId,
    /// Its version.
    pub version: Version,
    /// Its anti-rollback counter.
    pub security_counter: u32,
    /// Installed bytes from the start of the slot to the end of its last byte.
    pub len: u32,
    /// Erase units it occupies.
    pub units: u32,
    /// Where the OS component starts, if it has one.
    pub os_address: Option<u32>,
    /// Where the app component starts, if it has one.
    pub app_address: Option<u32>,
}

/// Maps offsets of an installed image (from the start of slot A) to flash offsets in `place`.
pub fn flash_offset(layout: &FlashLayout, place: Place, installed: u32) -> Option<u32> {
    let a = layout.slot(Slot::A);
    let unit = layout.unit_containing(a.offset.checked_add(installed)?)?;
    if unit.end() > a.end() {
        return None;
    }
    let index = layout.unit_count(Region { offset: a.offset, size: unit.offset - a.offset });
    let within = a.offset + installed - unit.offset;
    match place.slot {
        Slot::A => Some(unit.offset + within),
        Slot::B => {
            let target = layout.unit(layout.slot(Slot::B), index + place.shift)?;
            (target.size == unit.size).then_some(target.offset + within)
        }
    }
}

/// Reads installed bytes `[installed, installed + buf.len())` of the image in `place`, which may
/// span erase units.
pub fn read_installed<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    place: Place,
    mut installed: u32,
    buf: &mut [u8],
) -> Result<(), SlotError> {
    let mut done = 0;
    while done < buf.len() {
        let at = flash_offset(layout, place, installed).ok_or(SlotError::DoesNotFit)?;
        let unit = layout.unit_containing(at).ok_or(SlotError::DoesNotFit)?;
        let n = (buf.len() - done).min((unit.end() - at) as usize);
        io::read(flash, at, &mut buf[done..done + n])?;
        done += n;
        installed += n as u32;
    }
    Ok(())
}

/// Reads and parses the header of the image in `place` into `buf`.
pub fn read_header<'b, F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    place: Place,
    buf: &'b mut [u8; MAX_HEADER_LEN],
) -> Result<Header<'b>, SlotError> {
    read_installed(flash, layout, place, 0, &mut buf[..Prefix::LEN])?;
    let len = Prefix::parse(&buf[..Prefix::LEN])?.header_len();
    read_installed(flash, layout, place, 0, &mut buf[..len])?;
    Ok(Header::parse(&buf[..len])?)
}

/// Checks the image in `place`: header, placement in slot A, board, signatures (when keys are
/// given), the hash of every component read back from flash, that the bytes between the
/// components are erased, and the security counter.
///
/// Never inlined: its buffers (header, chunk, hash state) then sit in one stack frame, however
/// many places call it.
#[inline(never)]
pub fn check<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    place: Place,
    checks: &Checks<'_>,
) -> Result<SlotImage, SlotError> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let header = read_header(flash, layout, place, &mut buf)?;
    let manifest = header.manifest();
    let slot_a = layout.slot_layout();
    manifest.check_layout(&slot_a, header.len()).map_err(ImageError::from)?;
    if let Some(board) = checks.board
        && manifest.board() != board
    {
        return Err(SlotError::WrongBoard);
    }
    if let Some(keys) = checks.keys {
        verify_signatures(&header, keys)?;
    }
    let id = header.id();
    let header_len = header.len() as u32;
    let mut end = header_len;
    for component in manifest.components() {
        let start = component.load_address() - slot_a.start;
        // No stray bytes in executable flash: what no hash covers must be erased.
        check_erased(flash, layout, place, end, start)?;
        let mut hasher = Sha256::new();
        let mut chunk = [0u8; io::CHUNK];
        let mut done = 0;
        while done < component.size() {
            let n = (component.size() - done).min(io::CHUNK as u32) as usize;
            read_installed(flash, layout, place, start + done, &mut chunk[..n])?;
            hasher.update(&chunk[..n]);
            done += n as u32;
        }
        let actual: [u8; 32] = hasher.finalize().into();
        if actual != *component.sha256() {
            return Err(ImageError::Component {
                name: component.name().clone(),
                error: UnpackError::HashMismatch {
                    expected: crate::image::Sha256Digest(*component.sha256()),
                    actual: crate::image::Sha256Digest(actual),
                },
            }
            .into());
        }
        end = end.max(start + component.size());
    }
    if manifest.security_counter() < checks.min_security_counter {
        return Err(SlotError::Rollback {
            counter: manifest.security_counter(),
            min: checks.min_security_counter,
        });
    }
    let address =
        |role| manifest.components().iter().find(|c| c.role() == role).map(|c| c.load_address());
    Ok(SlotImage {
        id,
        version: manifest.version().clone(),
        security_counter: manifest.security_counter(),
        len: end,
        units: layout.units_for(end),
        os_address: address(crate::image::Role::Os),
        app_address: address(crate::image::Role::App),
    })
}

/// How many erase units the image in `place` occupies, from its header alone (no hashing).
/// Never inlined, for the same reason as [`check`].
#[inline(never)]
pub fn extent<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    place: Place,
) -> Result<u32, SlotError> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let header = read_header(flash, layout, place, &mut buf)?;
    Ok(layout.units_for(installed_len(layout, &header)))
}

/// Installed bytes from the start of the slot to the end of the image's last byte.
pub fn installed_len(layout: &FlashLayout, header: &Header<'_>) -> u32 {
    let start = layout.slot_layout().start;
    header
        .manifest()
        .components()
        .iter()
        .map(|c| c.end_address().saturating_sub(u64::from(start)).min(u64::from(u32::MAX)) as u32)
        .fold(header.len() as u32, u32::max)
}

/// Fails unless the image in `place` holds `expected` from installed offset `installed` on.
pub fn expect<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    place: Place,
    installed: u32,
    expected: &[u8],
) -> Result<(), SlotError> {
    let mut chunk = [0u8; io::CHUNK];
    for (i, part) in expected.chunks(io::CHUNK).enumerate() {
        let at = installed + (i * io::CHUNK) as u32;
        read_installed(flash, layout, place, at, &mut chunk[..part.len()])?;
        if let Some(j) = chunk.iter().zip(part).position(|(a, b)| a != b) {
            return Err(SlotError::NotAsWritten(at + j as u32));
        }
    }
    Ok(())
}

/// Fails unless installed bytes `[from, to)` of the image in `place` read erased.
fn check_erased<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    place: Place,
    from: u32,
    to: u32,
) -> Result<(), SlotError> {
    let mut chunk = [0u8; io::CHUNK];
    let mut at = from;
    while at < to {
        let n = (to - at).min(io::CHUNK as u32) as usize;
        read_installed(flash, layout, place, at, &mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().position(|&b| b != layout.erased()) {
            return Err(SlotError::Gap(at + i as u32));
        }
        at += n as u32;
    }
    Ok(())
}
