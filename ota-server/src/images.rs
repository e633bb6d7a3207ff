//! Accepting an uploaded image: everything is checked before a byte is stored.

use boards::Catalog;
use firmware::image::{ImageError, ImageId, ImageSummary, SlotLayout, TransportImage, TrustedKey};

/// Why an upload was refused: a stable code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Machine-readable code (`bad_signature`, `unknown_board`, ...).
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

/// An image that passed every check.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// Its id.
    pub id: ImageId,
    /// The file, described.
    pub summary: ImageSummary,
}

/// The code for an image error.
fn code(err: &ImageError) -> &'static str {
    match err {
        ImageError::SignatureCount(0) => "unsigned_image",
        ImageError::TruncatedHeader { .. } | ImageError::TruncatedPayload { .. } => {
            "truncated_image"
        }
        ImageError::UnknownKey { .. } => "unknown_key",
        ImageError::BadSignature(_) => "bad_signature",
        ImageError::Component { .. } => "bad_component",
        ImageError::Layout(_) => "does_not_fit",
        _ => "malformed_image",
    }
}

/// Checks `file`: format, a signature by one of `keys`, every component's length and hash
/// (by decoding), a board the server knows, and that it fits that board's slot A.
pub fn check(file: &[u8], keys: &[TrustedKey], catalog: &Catalog) -> Result<Accepted, Refused> {
    let refuse = |e: ImageError| Refused { code: code(&e), message: format!("image refused: {e}") };
    let image = TransportImage::parse(file).map_err(refuse)?;
    image.verify(keys).map_err(refuse)?;
    let header = image.header();
    let manifest = header.manifest();
    let board = catalog.get(manifest.board()).map_err(|e| Refused {
        code: "unknown_board",
        message: format!(
            "image refused: it is for board {:?}, which this server does not know ({e})",
            manifest.board()
        ),
    })?;
    let slot = SlotLayout {
        start: board.slot_a_address(),
        size: board.partitions.slot_a.size,
        header_size: board.image.header_size,
    };
    manifest.check_layout(&slot, header.len()).map_err(|e| Refused {
        code: "does_not_fit",
        message: format!("image refused: it does not fit board {}: {e}", board.name),
    })?;
    Ok(Accepted { id: header.id(), summary: ImageSummary::of(&image, file.len()) })
}
