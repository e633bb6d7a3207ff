//! A whole transport image (`.fwi`) held in memory: header, then payloads in manifest order.

use core::convert::Infallible;

use super::error::ImageError;
use super::trust::verify_signatures;
use super::unpack::FeedError;
use super::{Component, Header, ImageId, KeyId, MAX_WINDOW, TrustedKey, Unpacker};

/// A transport image whose header parses and whose length matches its manifest exactly.
/// Nothing is verified yet: see [`TransportImage::verify`].
#[derive(Clone, Debug)]
pub struct TransportImage<'a> {
    header: Header<'a>,
    file: &'a [u8],
}

/// What [`TransportImage::verify`] established.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Verified {
    /// The image id.
    pub id: ImageId,
    /// The trusted key whose signature verified.
    pub key: KeyId,
}

impl<'a> TransportImage<'a> {
    /// Parses the header and checks that the payloads fill the rest of `file` exactly.
    pub fn parse(file: &'a [u8]) -> Result<Self, ImageError> {
        let header = Header::parse(file)?;
        let image = TransportImage { header, file };
        let mut end = image.header.len() as u64;
        for component in image.header.manifest().components() {
            end += u64::from(component.stored_size());
            if end > file.len() as u64 {
                return Err(ImageError::TruncatedPayload {
                    name: component.name().clone(),
                    needed: end,
                    have: file.len(),
                });
            }
        }
        if end < file.len() as u64 {
            return Err(ImageError::TrailingData { extra: file.len() as u64 - end });
        }
        Ok(image)
    }

    /// The header.
    pub fn header(&self) -> &Header<'a> {
        &self.header
    }

    /// Each component with the offset of its payload in the file and the payload itself.
    pub fn payloads(&self) -> impl Iterator<Item = (&Component, usize, &'a [u8])> + '_ {
        let file = self.file;
        let mut offset = self.header.len();
        self.header.manifest().components().iter().map(move |component| {
            let start = offset;
            // `parse` checked that every payload lies inside the file.
            offset += component.stored_size() as usize;
            (component, start, &file[start..offset])
        })
    }

    /// Decodes every payload and checks its length and SHA-256 against the manifest.
    pub fn check_components(&self) -> Result<(), ImageError> {
        for (component, _, payload) in self.payloads() {
            let fail = |error| ImageError::Component { name: component.name().clone(), error };
            let mut window = [0u8; MAX_WINDOW];
            let mut unpacker = Unpacker::new(component, &mut window).map_err(fail)?;
            unpacker.feed(payload, &mut |_: &[u8]| Ok::<(), Infallible>(())).map_err(|err| {
                match err {
                    FeedError::Unpack(error) => fail(error),
                    FeedError::Output(never) => match never {},
                }
            })?;
            unpacker.finish().map_err(fail)?;
        }
        Ok(())
    }

    /// Checks the signatures against `trusted`, then every component.
    pub fn verify(&self, trusted: &[TrustedKey]) -> Result<Verified, ImageError> {
        let key = verify_signatures(&self.header, trusted)?;
        self.check_components()?;
        Ok(Verified { id: self.header.id(), key })
    }
}
