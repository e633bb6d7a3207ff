//! `imager verify`: is this file an intact image, signed by one of these keys, that fits its
//! board?

use anyhow::{Context, Result, anyhow};
use boards::Catalog;
use firmware::image::{TransportImage, TrustedKey, Verified};

use crate::fuse::slot_layout;

/// Checks `file`: structure, a signature by one of `keys`, every component's length and hash
/// (by decoding it), and that the image fits its board's slot A.
pub fn verify(catalog: &Catalog, file: &[u8], keys: &[TrustedKey]) -> Result<Verified> {
    let image = TransportImage::parse(file)?;
    let verified = image.verify(keys)?;
    let manifest = image.header().manifest();
    let board = catalog
        .get(manifest.board())
        .map_err(|err| anyhow!("{err}; pass its board file's folder with --boards"))?;
    manifest
        .check_layout(&slot_layout(board), image.header().len())
        .with_context(|| format!("image does not fit board {}", board.name))?;
    Ok(verified)
}
