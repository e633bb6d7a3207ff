//! Installing statements on a device: what it holds now, and moving it forward.

use embedded_storage::nor_flash::NorFlash;

use super::chain::{self, Anchor};
use super::error::TrustError;
use super::statement::{MAX_SIGNED_LEN, RootKeys, SignedTrust};
use super::store::TrustStore;
use crate::image::KeyId;

/// The anchor of a device: its stored statement's, or, before any, the provisioned root at
/// version 0. A stored copy that no longer parses (it passed its CRC, so only a flash writer
/// could make one) counts as none: the device falls back to its provisioned root, the one
/// thing an attacker cannot rewrite, and needs the chain again.
pub fn anchor<F: NorFlash>(
    store: &TrustStore,
    flash: &mut F,
    provisioned: &RootKeys,
) -> Result<Anchor, TrustError> {
    let mut buf = [0u8; MAX_SIGNED_LEN];
    match store.read(flash, &mut buf)?.map(SignedTrust::parse) {
        Some(Ok(stored)) => Ok(Anchor::of(&stored)),
        _ => Ok(Anchor { version: 0, root: provisioned.clone() }),
    }
}

/// Walks `links` (oldest first) from the device's anchor and stores the newest. Refuses, storing
/// nothing, any bad link and a newest statement under which the running image, signed by
/// `running_signers`, would no longer boot. Returns the version now held.
pub fn install<F: NorFlash>(
    store: &TrustStore,
    flash: &mut F,
    provisioned: &RootKeys,
    links: &[&[u8]],
    running_signers: &[KeyId],
) -> Result<u32, TrustError> {
    let anchor = anchor(store, flash, provisioned)?;
    let Some(newest) = chain::walk(&anchor, links.iter().copied())? else {
        return Ok(anchor.version);
    };
    if !newest.statement().keeps_booting(running_signers) {
        return Err(TrustError::StrandsRunningImage);
    }
    let bytes = links.last().copied().unwrap_or_default();
    store.install(flash, newest.version(), bytes)?;
    Ok(newest.version())
}
