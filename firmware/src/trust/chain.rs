//! Accepting statements: TUF's rules for a root of trust that changes.
//!
//! A device holds an [`Anchor`]: the version of the newest statement it accepted (0 before
//! any: the provisioning record's root) and that statement's root keys. The next statement is
//! accepted only if its version is exactly one above, a threshold of the anchor's root keys
//! signed it (the old root vouches for it), and a threshold of its own root keys signed it
//! (the new root holds its keys). A device several versions behind walks the chain one link at
//! a time; a missing link (a gap), a replayed or older statement, and a forged link are each
//! refused by name.

use super::error::TrustError;
use super::statement::{RootKeys, SignedTrust};

/// What the next statement is checked against.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Anchor {
    /// The newest accepted version (0: none, the provisioned root).
    pub version: u32,
    /// Its root keys.
    pub root: RootKeys,
}

impl Anchor {
    /// The anchor after `statement` (already accepted).
    pub fn of(statement: &SignedTrust<'_>) -> Self {
        Anchor { version: statement.version(), root: statement.statement().root.clone() }
    }
}

/// Checks that `next` extends `anchor` by one link.
pub fn accept(anchor: &Anchor, next: &SignedTrust<'_>) -> Result<(), TrustError> {
    let (got, have) = (next.version(), anchor.version);
    if got <= have {
        return Err(TrustError::Replayed { got, have });
    }
    if got != have + 1 {
        return Err(TrustError::Gap { got, have });
    }
    next.signed_by(&anchor.root)?;
    next.signed_by(&next.statement().root)
}

/// Walks `links` (each a signed statement, oldest first) from `anchor`, and returns the newest
/// one, parsed (`None` for no links); the caller stores its bytes. All or nothing: any bad
/// link, including one the device already holds, refuses the whole walk.
pub fn walk<'b>(
    anchor: &Anchor,
    links: impl IntoIterator<Item = &'b [u8]>,
) -> Result<Option<SignedTrust<'b>>, TrustError> {
    let mut current = anchor.clone();
    let mut newest = None;
    for bytes in links {
        let link = SignedTrust::parse(bytes)?;
        accept(&current, &link)?;
        current = Anchor::of(&link);
        newest = Some(link);
    }
    Ok(newest)
}
