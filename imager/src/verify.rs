//! `imager verify`: is this file an intact image, signed by one of these keys, that fits its
//! board?

use std::path::Path;

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

/// Largest image file `inspect`, `verify` and `push` read: no board has more flash than this.
const MAX_IMAGE_FILE: u64 = 64 << 20;

/// Reads an image file, refusing one larger than any board could hold.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_IMAGE_FILE {
        return Err(anyhow!(
            "{}: {} bytes is larger than any image ({MAX_IMAGE_FILE} bytes)",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
