//! Semantic versions (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`), parsed and checked without allocation.

use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

use super::MAX_LABEL_LEN;

/// A pre-release or build label: dot-separated identifiers of `[0-9A-Za-z-]`.
pub type Label = heapless::String<MAX_LABEL_LEN>;

/// An image version, following Semantic Versioning 2.0.0.
///
/// Informational: rollback protection uses the manifest's security counter, not this.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
    /// Fixes.
    pub patch: u32,
    /// Pre-release label (`rc.1`), empty for a release.
    pub pre: Label,
    /// Build metadata (`git.abc123`), empty if none.
    pub build: Label,
}

/// Why a version string or label was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum VersionError {
    /// Not of the form `MAJOR.MINOR.PATCH`.
    #[error("expected MAJOR.MINOR.PATCH[-PRE][+BUILD]")]
    Shape,
    /// A numeric part is empty, has a leading zero or does not fit 32 bits.
    #[error("{0} must be a number from 0 to 4294967295 without leading zeros")]
    Number(&'static str),
    /// A label is longer than the format allows.
    #[error("{0} label is longer than {MAX_LABEL_LEN} bytes")]
    LabelTooLong(&'static str),
    /// A label has an empty identifier, a character outside `[0-9A-Za-z-]`, or (pre-release
    /// only) a numeric identifier with a leading zero.
    #[error("{0} label must be dot-separated identifiers of [0-9A-Za-z-]")]
    Label(&'static str),
}

impl Version {
    /// A release version without labels.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version { major, minor, patch, pre: Label::new(), build: Label::new() }
    }

    /// Checks the labels; called on every version read from a manifest.
    pub fn validate(&self) -> Result<(), VersionError> {
        check_label(&self.pre, "pre-release", true)?;
        check_label(&self.build, "build", false)
    }
}

fn check_label(label: &str, what: &'static str, numeric_rule: bool) -> Result<(), VersionError> {
    if label.is_empty() {
        return Ok(());
    }
    for ident in label.split('.') {
        let valid_chars = ident.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let numeric = ident.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = numeric_rule && numeric && ident.len() > 1 && ident.starts_with('0');
        if ident.is_empty() || !valid_chars || leading_zero {
            return Err(VersionError::Label(what));
        }
    }
    Ok(())
}

fn parse_number(text: &str, what: &'static str) -> Result<u32, VersionError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(VersionError::Number(what));
    }
    text.parse().map_err(|_| VersionError::Number(what))
}

/// Splits `text` at the first `sep` into what comes before and the label after it.
fn split_label<'a>(
    text: &'a str,
    sep: char,
    what: &'static str,
) -> Result<(&'a str, Label), VersionError> {
    match text.split_once(sep) {
        None => Ok((text, Label::new())),
        Some((_, "")) => Err(VersionError::Shape),
        Some((rest, label)) => {
            Ok((rest, Label::try_from(label).map_err(|_| VersionError::LabelTooLong(what))?))
        }
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (rest, build) = split_label(text, '+', "build")?;
        let (core, pre) = split_label(rest, '-', "pre-release")?;
        let mut parts = core.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VersionError::Shape);
        };
        let version = Version {
            major: parse_number(major, "major")?,
            minor: parse_number(minor, "minor")?,
            patch: parse_number(patch, "patch")?,
            pre,
            build,
        };
        version.validate()?;
        Ok(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.build.is_empty() {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn parses_and_prints_semver() {
        for text in ["0.0.0", "1.2.3", "1.2.3-rc.1", "1.2.3+git.abc", "10.20.30-alpha-1.0+b.7"] {
            let v: Version = text.parse().unwrap();
            assert_eq!(v.to_string(), text);
        }
        let v: Version = "4294967295.0.1-x".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.pre.as_str()), (u32::MAX, 0, 1, "x"));
    }

    #[test]
    fn refuses_what_semver_refuses() {
        let cases = [
            ("1.2", VersionError::Shape),
            ("1.2.3.4", VersionError::Shape),
            ("", VersionError::Shape),
            ("01.2.3", VersionError::Number("major")),
            ("1.x.3", VersionError::Number("minor")),
            ("1.2.4294967296", VersionError::Number("patch")),
            ("1.2.3-", VersionError::Shape),
            ("1.2.3+", VersionError::Shape),
            ("1.2.3-01", VersionError::Label("pre-release")),
            ("1.2.3-a..b", VersionError::Label("pre-release")),
            ("1.2.3+a_b", VersionError::Label("build")),
            ("1.2.3+a+b", VersionError::Label("build")),
            ("1.2.3-aaaaaaaaaaaaaaaaaaaaaaaaa", VersionError::LabelTooLong("pre-release")),
        ];
        for (text, err) in cases {
            assert_eq!(text.parse::<Version>(), Err(err), "{text}");
        }
        // Build metadata may have leading zeros.
        assert!("1.2.3+007".parse::<Version>().is_ok());
    }
}
