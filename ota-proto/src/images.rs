//! Images and the build keys that sign them.

use firmware::image::ImageSummary;
use serde::{Deserialize, Serialize};

use crate::{KeyId, PublicKey, Sha256, Timestamp};

/// A stored image: the file's description plus where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The file, described (id, board, version, components, signatures).
    #[serde(flatten)]
    pub summary: ImageSummary,
    /// SHA-256 of the whole `.fwi` file (the blob's name in the store).
    pub file_sha256: Sha256,
    /// When it was uploaded.
    pub uploaded_at: Timestamp,
    /// The token name that uploaded it.
    pub uploaded_by: String,
}

/// A trusted build key (`GET /build-keys`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildKey {
    /// Key id (as in image headers).
    pub key_id: KeyId,
    /// The public key.
    pub public_key: PublicKey,
    /// A name for people.
    pub name: String,
}

/// Trusting another build key (`POST /build-keys`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBuildKey {
    /// The public key.
    pub public_key: PublicKey,
    /// A name for people.
    pub name: String,
}
