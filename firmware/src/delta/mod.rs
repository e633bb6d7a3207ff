//! Patches: another transport form of a signed image, for a device that runs a known image.
//!
//! A patch names the image it applies to (the *source*, which slot A must hold) and the image
//! it rebuilds (the *target*), carries the target's header unchanged (manifest and
//! signatures), and then, for each target component, how to rebuild its installed bytes from
//! the source's installed bytes: copies (with or without small differences) and inserted
//! bytes, range-coded. The device checks the very same signature and hashes as for a full
//! image, so the image id, and what was tested, never change. See `docs/delta.md`.
//!
//! The body is cut into *segments*: one per block of `2^block_shift` installed bytes of a
//! component. Each segment's coder starts afresh (model, range coder, source cursor), so a
//! device that checkpointed at a segment start needs nothing else to continue: its decoder
//! state there is empty.
//!
//! - [`PatchPrefix`]: the fixed start; [`BodyDecoder`]: the device's streaming decoder.
//! - With `std`: [`create_patch`] makes a patch, [`apply_installed`] applies one in memory.

mod coder;
mod decode;
#[cfg(feature = "std")]
mod encode;
mod format;
#[cfg(feature = "std")]
mod summary;

pub use coder::{MODEL_BYTES, Model};
pub use decode::{BodyDecoder, BodyError, Image, StepError};
#[cfg(feature = "std")]
pub use encode::{EncodedPatch, PatchBuildError, PatchOptions, create_patch};
pub use format::{
    BodyLayout, CRC_START, MAX_BLOCK_SHIFT, MIN_BLOCK_SHIFT, PATCH_MAGIC, PATCH_VERSION,
    PatchError, PatchPrefix, crc_update, crc_value,
};
#[cfg(feature = "std")]
pub use summary::{PatchComponent, PatchSummary, SummaryError};

use crate::image::Manifest;

/// The source bytes a patch may copy from, as installed offsets `[start, end)`: from the
/// source's first component to the end of its last. Its header is left out: two files of one
/// image may carry different signatures, but their components (and the erased gaps between
/// them) are the same bytes.
pub fn source_range(manifest: &Manifest, slot_start: u32) -> (u32, u32) {
    let components = manifest.components();
    let offset = |address: u64| {
        u32::try_from(address.saturating_sub(u64::from(slot_start))).unwrap_or(u32::MAX)
    };
    let start = components.first().map_or(0, |c| offset(u64::from(c.load_address())));
    let end = components.last().map_or(0, |c| offset(c.end_address()));
    (start, end.max(start))
}

/// Why [`apply_installed`] failed.
#[cfg(feature = "std")]
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The fixed start is bad.
    #[error("{0}")]
    Patch(#[from] PatchError),
    /// The carried header is bad.
    #[error("target header: {0}")]
    Header(crate::image::ImageError),
    /// The patch is not for this source.
    #[error("the patch is for source {patch}, the source given is {given}")]
    WrongSource {
        /// Source the patch names.
        patch: crate::image::ImageId,
        /// Source given.
        given: crate::image::ImageId,
    },
    /// The body is bad.
    #[error("{0}")]
    Body(#[from] BodyError),
    /// The patch's length is not its fixed start, header and body.
    #[error("the patch is {have} bytes, its header says {expected}")]
    Length {
        /// Bytes given.
        have: usize,
        /// Bytes its header gives.
        expected: u64,
    },
}

/// Applies `patch` to the installed form of its source (`source`, from the start of slot A),
/// in memory, and returns the target's installed form, its gaps `erased`. Checks what the
/// patch itself can be checked for (fixed start, source id, target header's form, body);
/// not the signatures or the component hashes: that is the caller's part, as on a device.
#[cfg(feature = "std")]
pub fn apply_installed(
    source: &[u8],
    patch: &[u8],
    slot_start: u32,
    erased: u8,
) -> Result<alloc::vec::Vec<u8>, ApplyError> {
    use crate::image::Header;
    let prefix = PatchPrefix::parse(patch)?;
    let old = Header::parse(source).map_err(ApplyError::Header)?;
    if old.id() != prefix.source {
        return Err(ApplyError::WrongSource { patch: prefix.source, given: old.id() });
    }
    let rest = patch.get(PatchPrefix::LEN..).unwrap_or_default();
    let new = Header::parse(rest).map_err(ApplyError::Header)?;
    if new.id() != prefix.target {
        return Err(PatchError::TargetMismatch { named: prefix.target, carried: new.id() }.into());
    }
    let expected = (PatchPrefix::LEN + new.len()) as u64 + u64::from(prefix.body_len);
    if patch.len() as u64 != expected {
        return Err(ApplyError::Length { have: patch.len(), expected });
    }
    let body = &rest[new.len()..];
    let (source_start, source_end) = source_range(old.manifest(), slot_start);
    let layout = prefix.body_layout(source_start, source_end);
    let len = new
        .manifest()
        .components()
        .iter()
        .map(|c| c.end_address().saturating_sub(u64::from(slot_start)) as usize)
        .fold(new.len(), usize::max);
    let mut out = alloc::vec![erased; len];
    out[..new.len()].copy_from_slice(&rest[..new.len()]);
    let mut model_bytes = [0u8; MODEL_BYTES];
    let mut model = Model::new(&mut model_bytes).ok_or(BodyError::Truncated { at: 0 })?;
    let mut decoder = BodyDecoder::new(layout, 0, CRC_START);
    let mut fed = 0;
    for component in new.manifest().components() {
        let start = component.load_address() - slot_start;
        decoder.start_component(start, start, start + component.size());
        let mut buf = [0u8; 256];
        while !decoder.component_done() {
            let at = decoder.position() as usize;
            // Copies stay inside `source_range`, which the source's own header gave; repeats
            // inside what was rebuilt.
            let mut read = |image, from: u32, buf: &mut [u8]| {
                let range = from as usize..from as usize + buf.len();
                let bytes = match image {
                    Image::Source => source.get(range),
                    Image::Target => out.get(range),
                };
                let outside = BodyError::SourceOutside {
                    at: at as u32,
                    from: from.into(),
                    len: buf.len() as u32,
                    start: source_start,
                    end: source_end,
                };
                buf.copy_from_slice(bytes.ok_or(outside)?);
                Ok(())
            };
            let (taken, produced) = decoder
                .step(&mut model, &body[fed..], &mut buf, &mut read)
                .map_err(|e| match e {
                    StepError::Body(e) | StepError::Source(e) => e,
                })?;
            fed += taken;
            out[at..at + produced].copy_from_slice(&buf[..produced]);
            if taken == 0 && produced == 0 && !decoder.component_done() {
                return Err(BodyError::Truncated { at: decoder.position() }.into());
            }
        }
    }
    decoder.finish()?;
    Ok(out)
}
