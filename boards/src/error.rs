//! Why a board file or a board name was refused.

use std::path::PathBuf;

/// A board file that cannot be used, or a board that does not exist.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The file could not be read.
    #[error("cannot read board file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML of the board schema.
    #[error("board file {file}: {message}")]
    Parse {
        /// The file's name.
        file: String,
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// A field's value breaks a rule.
    #[error("board file {file}: {field}: {message}")]
    Invalid {
        /// The file's name.
        file: String,
        /// The field at fault, as a TOML path (`partitions.slot_b.offset`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No board of that name.
    #[error("unknown board {name:?} (known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
}
