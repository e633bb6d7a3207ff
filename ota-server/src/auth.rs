//! Bearer tokens. Management tokens (`fwm_...`) carry a role; device tokens (`fwd_...`) reach
//! only the device API, for their device. Only the SHA-256 of a token is stored: tokens are
//! 256 random bits, so a plain hash is as good as a password hash and costs a microsecond.

use ota_proto::{Role, TokenId};
use sha2::{Digest, Sha256};

use crate::error::{Failure, Outcome};

pub use ota_proto::{
    DEVICE_TOKEN_PREFIX as DEVICE_PREFIX, MANAGEMENT_TOKEN_PREFIX as MANAGEMENT_PREFIX,
};

/// Who is asking: a management token's name and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The token's name (`cli` for the server's own command line).
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Actor {
    /// The server's own command line.
    pub fn cli() -> Self {
        Actor { name: "cli".to_owned(), role: Role::Admin }
    }

    /// Admins may do everything; other roles what `allowed` lists.
    pub fn require(&self, allowed: &[Role], what: &str) -> Outcome<()> {
        if self.role == Role::Admin || allowed.contains(&self.role) {
            return Ok(());
        }
        Err(Failure::forbidden(format!("role {} may not {what}", self.role)))
    }
}

/// A fresh token with `prefix`, and its hash.
pub fn generate(prefix: &str) -> std::io::Result<(String, [u8; 32])> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = format!("{prefix}{}", hex::encode(secret));
    let hash = hash(&token);
    Ok((token, hash))
}

/// The stored form of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token's public id: derived from its hash, safe to show and log.
pub fn token_id(hash: &[u8; 32]) -> TokenId {
    TokenId::of_hash(hash)
}

/// The token in an `Authorization: Bearer ...` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hash_stably() {
        let (a, ha) = generate(DEVICE_PREFIX).unwrap();
        let (b, _) = generate(DEVICE_PREFIX).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("fwd_") && a.len() == 68);
        assert_eq!(hash(&a), ha);
        assert!(token_id(&ha).as_str().starts_with("tok_"));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
