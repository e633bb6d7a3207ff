//! An image file described for people and tools: what `imager inspect` prints and what the
//! ota-server returns for a stored image. One model, shown as text or JSON.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use serde::{Deserialize, Serialize};

use super::{Compression, ImageId, KeyId, TransportImage};

/// An image file, described.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Image id (the SHA-256 of the manifest; hex in JSON).
    pub id: ImageId,
    /// Board name.
    pub board: String,
    /// Image version.
    pub version: String,
    /// Anti-rollback counter.
    pub security_counter: u32,
    /// Image format version.
    pub format_version: u16,
    /// Header length in bytes (prefix, manifest, signatures).
    pub header_size: usize,
    /// Manifest length in bytes.
    pub manifest_size: usize,
    /// Length of the file.
    pub file_size: usize,
    /// Sum of the components' installed sizes.
    pub installed_size: u64,
    /// Components, in address order.
    pub components: Vec<ComponentSummary>,
    /// Signatures, in header order.
    pub signatures: Vec<SignatureSummary>,
}

/// One component.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ComponentSummary {
    /// `os`, `app` or `data`.
    pub role: String,
    /// Component name.
    pub name: String,
    /// Address of its first installed byte.
    pub load_address: u32,
    /// Installed size in bytes.
    pub size: u32,
    /// SHA-256 of the installed bytes, hex.
    pub sha256: String,
    /// How the payload is carried.
    pub compression: CompressionSummary,
    /// Offset of the payload from the start of the file.
    pub payload_offset: usize,
    /// Payload length in the file.
    pub payload_size: u32,
}

/// How a payload is carried.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct CompressionSummary {
    /// `heatshrink` or `none`.
    pub kind: String,
    /// Window size as a power of two (heatshrink only).
    pub window: Option<u8>,
    /// Lookahead as a power of two (heatshrink only).
    pub lookahead: Option<u8>,
}

/// One signature.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct SignatureSummary {
    /// The signing key's id (hex in JSON).
    pub key_id: KeyId,
}

impl ImageSummary {
    /// Describes a parsed image (nothing is verified here).
    pub fn of(image: &TransportImage<'_>, file_size: usize) -> Self {
        let header = image.header();
        let manifest = header.manifest();
        let components = image
            .payloads()
            .map(|(c, offset, payload)| ComponentSummary {
                role: c.role().as_str().to_owned(),
                name: c.name().to_string(),
                load_address: c.load_address(),
                size: c.size(),
                sha256: hex::encode(c.sha256()),
                compression: match c.compression() {
                    Compression::Raw => CompressionSummary {
                        kind: "none".to_owned(),
                        window: None,
                        lookahead: None,
                    },
                    Compression::Heatshrink(p) => CompressionSummary {
                        kind: "heatshrink".to_owned(),
                        window: Some(p.window()),
                        lookahead: Some(p.lookahead()),
                    },
                },
                payload_offset: offset,
                payload_size: payload.len() as u32,
            })
            .collect();
        ImageSummary {
            id: header.id(),
            board: manifest.board().to_owned(),
            version: manifest.version().to_string(),
            security_counter: manifest.security_counter(),
            format_version: manifest.format(),
            header_size: header.len(),
            manifest_size: header.manifest_bytes().len(),
            file_size,
            installed_size: manifest.components().iter().map(|c| u64::from(c.size())).sum(),
            components,
            signatures: header
                .signatures()
                .map(|s| SignatureSummary { key_id: s.key_id })
                .collect(),
        }
    }

    /// A readable multi-line description.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let percent = |part: u64, whole: u64| {
            if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
        };
        let _ = writeln!(out, "image            {}", self.id);
        let _ = writeln!(out, "board            {}", self.board);
        let _ = writeln!(out, "version          {}", self.version);
        let _ = writeln!(out, "security counter {}", self.security_counter);
        let _ = writeln!(
            out,
            "file             {} bytes ({:.1}% of the {} bytes installed), format v{}",
            self.file_size,
            percent(self.file_size as u64, self.installed_size),
            self.installed_size,
            self.format_version
        );
        let _ = writeln!(
            out,
            "header           {} bytes (manifest {} bytes, {} signature{})",
            self.header_size,
            self.manifest_size,
            self.signatures.len(),
            if self.signatures.len() == 1 { "" } else { "s" }
        );
        let _ = writeln!(out, "components");
        for c in &self.components {
            let carried = match (c.compression.window, c.compression.lookahead) {
                (Some(w), Some(l)) => format!(
                    "heatshrink w{w}/l{l}, {} bytes ({:.1}%)",
                    c.payload_size,
                    percent(c.payload_size.into(), c.size.into())
                ),
                _ => "raw".to_owned(),
            };
            let end = u64::from(c.load_address) + u64::from(c.size);
            let _ = writeln!(
                out,
                "  {:<16} {:<4} {:#010x}..{end:#010x} {:>8} bytes  {carried}, at file offset {}",
                c.name, c.role, c.load_address, c.size, c.payload_offset
            );
            let _ = writeln!(out, "  {:<16} sha256 {}", "", c.sha256);
        }
        let _ = writeln!(out, "signatures");
        for s in &self.signatures {
            let _ = writeln!(out, "  key {}", s.key_id);
        }
        out
    }
}
