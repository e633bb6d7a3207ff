//! Building and signing transport images (hosts only).

use alloc::string::String;
use alloc::vec::Vec;
use ed25519_dalek::{Signer, SigningKey};

use super::error::{ImageError, LayoutError, ManifestError};
use super::{
    Component, ComponentName, Compression, Header, HeatshrinkParams, ImageId, KeyId,
    MAX_SIGNATURES, Manifest, Role, SignatureRecord, SlotLayout, Version, compress,
};

/// One component to put into an image: its installed bytes and where they go.
#[derive(Clone, Debug)]
pub struct ComponentSource {
    /// What it is for.
    pub role: Role,
    /// `os`, `app`, or a data part's name.
    pub name: String,
    /// Address of its first byte in slot A.
    pub load_address: u32,
    /// Installed bytes.
    pub bytes: Vec<u8>,
}

/// Everything an image is made of.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Board name.
    pub board: String,
    /// Image version.
    pub version: Version,
    /// Anti-rollback counter.
    pub security_counter: u32,
    /// Heatshrink parameters, or `None` to carry every component raw.
    pub compression: Option<HeatshrinkParams>,
    /// The components, in any order.
    pub components: Vec<ComponentSource>,
    /// The board's slot A, checked when given.
    pub slot: Option<SlotLayout>,
}

/// A built transport image.
#[derive(Clone, Debug)]
pub struct EncodedImage {
    /// The `.fwi` file.
    pub bytes: Vec<u8>,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its id.
    pub id: ImageId,
    /// Length of its header.
    pub header_len: usize,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A component name longer than the format allows.
    #[error("component name {0:?} is longer than {max} bytes", max = super::MAX_NAME_LEN)]
    NameTooLong(String),
    /// A component of 4 GiB or more.
    #[error("component {0:?} is 4 GiB or larger")]
    TooLarge(String),
    /// No signing key, or more than the format allows.
    #[error("an image needs 1 to {MAX_SIGNATURES} signing keys, {0} given")]
    KeyCount(usize),
    /// Two signing keys are the same key.
    #[error("key {0} is given twice")]
    DuplicateKey(KeyId),
    /// The manifest would break a rule.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// The image does not fit the slot.
    #[error("{0}")]
    Layout(#[from] LayoutError),
    /// The header could not be written.
    #[error("{0}")]
    Header(#[from] ImageError),
}

/// Builds the transport image for `spec`, signed by every key in `keys`.
///
/// Deterministic: the same spec and keys give the same bytes (heatshrink and Ed25519 are).
/// Components are ordered by address. A component that heatshrink would not make smaller is
/// carried raw.
pub fn encode_image(spec: &ImageSpec, keys: &[SigningKey]) -> Result<EncodedImage, EncodeError> {
    if keys.is_empty() || keys.len() > MAX_SIGNATURES {
        return Err(EncodeError::KeyCount(keys.len()));
    }
    let key_ids: Vec<KeyId> =
        keys.iter().map(|k| KeyId::of_public_key(&k.verifying_key().to_bytes())).collect();
    if let Some((_, id)) = key_ids.iter().enumerate().find(|(i, id)| key_ids[..*i].contains(id)) {
        return Err(EncodeError::DuplicateKey(*id));
    }

    let mut sources: Vec<&ComponentSource> = spec.components.iter().collect();
    sources.sort_by_key(|s| s.load_address);
    let mut components = Vec::with_capacity(sources.len());
    let mut payloads = Vec::with_capacity(sources.len());
    for source in sources {
        let name = ComponentName::try_from(source.name.as_str())
            .map_err(|_| EncodeError::NameTooLong(source.name.clone()))?;
        if u32::try_from(source.bytes.len()).is_err() {
            return Err(EncodeError::TooLarge(source.name.clone()));
        }
        let packed = spec.compression.map(|params| (params, compress(params, &source.bytes)));
        let (compression, payload) = match packed {
            Some((params, packed)) if packed.len() < source.bytes.len() => {
                (Compression::Heatshrink(params), packed)
            }
            _ => (Compression::Raw, source.bytes.clone()),
        };
        components.push(Component::new(
            source.role,
            name,
            source.load_address,
            &source.bytes,
            compression,
            payload.len() as u32,
        ));
        payloads.push(payload);
    }

    let manifest =
        Manifest::new(&spec.board, spec.version.clone(), spec.security_counter, &components)?;
    let manifest_bytes = manifest.encode();
    let signatures: Vec<SignatureRecord> = keys
        .iter()
        .zip(&key_ids)
        .map(|(key, id)| SignatureRecord {
            key_id: *id,
            signature: key.sign(&manifest_bytes).to_bytes(),
        })
        .collect();
    let mut bytes = Header::encode(&manifest_bytes, &signatures)?;
    let header_len = bytes.len();
    if let Some(slot) = &spec.slot {
        manifest.check_layout(slot, header_len)?;
    }
    for payload in &payloads {
        bytes.extend_from_slice(payload);
    }
    Ok(EncodedImage { bytes, id: ImageId::of_manifest(&manifest_bytes), manifest, header_len })
}

/// The installed form of a transport image, as slot A holds it: the header at offset 0, each
/// component decoded at its load address (relative to `slot_start`), `erased` in between. The
/// result ends at the image's last byte.
pub fn installed_form(file: &[u8], slot_start: u32, erased: u8) -> Result<Vec<u8>, ImageError> {
    let image = super::TransportImage::parse(file)?;
    let header = image.header();
    let end = header
        .manifest()
        .components()
        .iter()
        .map(|c| c.end_address().saturating_sub(u64::from(slot_start)) as usize)
        .fold(header.len(), usize::max);
    let mut out = alloc::vec![erased; end];
    out[..header.len()].copy_from_slice(&file[..header.len()]);
    for (component, _, payload) in image.payloads() {
        let fail = |error| ImageError::Component { name: component.name().clone(), error };
        let start = component.load_address().checked_sub(slot_start).ok_or_else(|| {
            fail(super::UnpackError::TooShort { produced: 0, size: component.size() })
        })? as usize;
        let mut window = alloc::vec![0u8; super::MAX_WINDOW];
        let mut unpacker = super::Unpacker::new(component, &mut window).map_err(fail)?;
        let mut at = start;
        unpacker
            .feed(payload, &mut |bytes: &[u8]| {
                out[at..at + bytes.len()].copy_from_slice(bytes);
                at += bytes.len();
                Ok::<(), core::convert::Infallible>(())
            })
            .map_err(|e| match e {
                super::FeedError::Unpack(error) => fail(error),
                super::FeedError::Output(never) => match never {},
            })?;
        unpacker.finish().map_err(fail)?;
    }
    Ok(out)
}
