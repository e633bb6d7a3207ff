//! Making patches (docs/delta.md) from one stored image to another, on the server's CPU: the
//! same encoder as `imager delta create`, cut for the board the images are for. Plain
//! functions; the service runs them off the async runtime and stores what they make.

use boards::Catalog;
use firmware::delta::{PatchOptions, create_patch};

/// Makes the patch from image file `source` to image file `target`, both for `board`.
pub fn make(
    catalog: &Catalog,
    board: &str,
    source: &[u8],
    target: &[u8],
) -> Result<Vec<u8>, String> {
    let board = catalog.get(board).map_err(|e| e.to_string())?;
    let block_shift =
        board.patch_block_shift().map_err(|e| format!("board {}: {e}", board.name))?;
    let patch = create_patch(
        source,
        target,
        board.slot_a_address(),
        board.flash.erased_value,
        &PatchOptions { block_shift },
    )
    .map_err(|e| e.to_string())?;
    Ok(patch.bytes)
}

/// Whether a patch of `patch` bytes is worth offering instead of an image of `image` bytes:
/// at most `max_ratio` of it.
pub fn worth_it(patch: u64, image: u64, max_ratio: f64) -> bool {
    max_ratio > 0.0 && patch as f64 <= image as f64 * max_ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold() {
        assert!(worth_it(50, 100, 0.5));
        assert!(!worth_it(51, 100, 0.5));
        assert!(!worth_it(0, 100, 0.0));
        assert!(worth_it(100, 100, 1.0));
    }
}
