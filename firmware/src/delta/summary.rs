//! A patch file described for people and tools: what `imager inspect` prints for a patch (and
//! what a server can return for one). One model, shown as text or JSON.

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use serde::{Deserialize, Serialize};

use super::PatchPrefix;
use crate::image::{Header, ImageError};

/// A patch file, described. Nothing is verified: the signatures and hashes are checked by
/// applying it (`imager delta apply`, or a device).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct PatchSummary {
    /// Always `patch`: tells a patch's JSON from an image's.
    pub kind: String,
    /// Patch format version.
    pub patch_format: u16,
    /// The image the patch applies to (hex id).
    pub source: String,
    /// The image it rebuilds (hex id).
    pub target: String,
    /// The target's board.
    pub board: String,
    /// The target's version.
    pub version: String,
    /// The target's security counter.
    pub security_counter: u32,
    /// Segments restart every `2^block_shift` installed bytes.
    pub block_shift: u8,
    /// Length of the carried target header.
    pub header_size: usize,
    /// Length of the body.
    pub body_size: u32,
    /// Length of the file.
    pub file_size: usize,
    /// Sum of the target's components' installed sizes.
    pub installed_size: u64,
    /// The target's components: name, address, size, SHA-256.
    pub components: Vec<PatchComponent>,
    /// Key ids of the target header's signatures.
    pub signatures: Vec<String>,
}

/// One target component.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct PatchComponent {
    /// Component name.
    pub name: String,
    /// Address of its first installed byte.
    pub load_address: u32,
    /// Installed size.
    pub size: u32,
    /// SHA-256 of the installed bytes, hex.
    pub sha256: String,
}

/// Why a file is not a patch that can be described.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SummaryError {
    /// The fixed start is bad.
    #[error("{0}")]
    Patch(#[from] super::PatchError),
    /// The carried header is bad.
    #[error("target header: {0}")]
    Header(ImageError),
    /// The file is not its fixed start, header and body.
    #[error("patch is {have} bytes, its header says {expected}")]
    Length {
        /// Bytes in the file.
        have: usize,
        /// Bytes its fixed start and header give.
        expected: u64,
    },
}

impl PatchSummary {
    /// Describes the patch `file`: its fixed start and carried header parse, and its length is
    /// theirs plus the body's.
    pub fn of(file: &[u8]) -> Result<Self, SummaryError> {
        let prefix = PatchPrefix::parse(file)?;
        let rest = file.get(PatchPrefix::LEN..).unwrap_or_default();
        let header = Header::parse(rest).map_err(SummaryError::Header)?;
        let expected = (PatchPrefix::LEN + header.len()) as u64 + u64::from(prefix.body_len);
        if file.len() as u64 != expected {
            return Err(SummaryError::Length { have: file.len(), expected });
        }
        let manifest = header.manifest();
        Ok(PatchSummary {
            kind: "patch".to_owned(),
            patch_format: super::PATCH_VERSION,
            source: prefix.source.to_string(),
            target: prefix.target.to_string(),
            board: manifest.board().to_owned(),
            version: manifest.version().to_string(),
            security_counter: manifest.security_counter(),
            block_shift: prefix.block_shift,
            header_size: header.len(),
            body_size: prefix.body_len,
            file_size: file.len(),
            installed_size: manifest.components().iter().map(|c| u64::from(c.size())).sum(),
            components: manifest
                .components()
                .iter()
                .map(|c| PatchComponent {
                    name: c.name().to_string(),
                    load_address: c.load_address(),
                    size: c.size(),
                    sha256: hex::encode(c.sha256()),
                })
                .collect(),
            signatures: header.signatures().map(|s| s.key_id.to_string()).collect(),
        })
    }

    /// A readable multi-line description.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "patch            format v{}", self.patch_format);
        let _ = writeln!(out, "from image       {}", self.source);
        let _ = writeln!(out, "to image         {}", self.target);
        let _ = writeln!(out, "board            {}", self.board);
        let _ = writeln!(out, "version          {}", self.version);
        let _ = writeln!(out, "security counter {}", self.security_counter);
        let _ = writeln!(
            out,
            "file             {} bytes: {} fixed, header {}, body {} (segments of {} bytes)",
            self.file_size,
            PatchPrefix::LEN,
            self.header_size,
            self.body_size,
            1u32 << self.block_shift
        );
        let _ = writeln!(out, "rebuilds         {} bytes installed", self.installed_size);
        for c in &self.components {
            let end = u64::from(c.load_address) + u64::from(c.size);
            let _ = writeln!(
                out,
                "  {:<16} {:#010x}..{end:#010x} {:>8} bytes  sha256 {}",
                c.name, c.load_address, c.size, c.sha256
            );
        }
        let _ = writeln!(out, "signatures       {}", self.signatures.join(", "));
        out
    }
}
