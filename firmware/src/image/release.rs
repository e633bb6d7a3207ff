//! The release statement: "environment E runs image I", numbered, signed by E's key.
//!
//! The server (or, for production, whoever holds the environment's key, offline) signs one per
//! release; a device applies an image only with a statement for its own environment, signed by
//! that environment's key, numbered above the last one it applied. Wire form:
//!
//! ```text
//! statement (postcard: image id [u8; 32], environment string, sequence u64 varint)
//! key id (8 bytes), Ed25519 signature (64 bytes) over RELEASE_CONTEXT || statement
//! ```

use serde::{Deserialize, Serialize};

use super::{ImageId, KeyId, TrustedKey};

/// Longest environment name, in bytes.
pub const MAX_ENVIRONMENT_LEN: usize = 32;

/// Signed before the statement bytes, so a release signature can never be taken for a
/// signature over anything else (an image manifest, say).
pub const RELEASE_CONTEXT: &[u8] = b"fwi release statement v1\0";

/// An environment name (`dev`, `test`, `prod`): 1 to 32 bytes of `[a-z0-9_-]`.
pub type EnvironmentName = heapless::String<MAX_ENVIRONMENT_LEN>;

/// "Environment `environment` runs image `image_id`; this is release number `sequence`."
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReleaseStatement {
    image_id: [u8; 32],
    environment: EnvironmentName,
    sequence: u64,
}

/// Why a release statement was refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Not a statement followed by one signature record.
    #[error("release statement is malformed")]
    Malformed,
    /// The environment name breaks the naming rule.
    #[error("release names an invalid environment")]
    BadEnvironment,
    /// Signed by a key that is not this environment's.
    #[error("release is signed by key {0}, not by the environment's key")]
    UnknownKey(KeyId),
    /// The signature does not verify.
    #[error("release signature by key {0} does not verify")]
    BadSignature(KeyId),
    /// A release for another environment.
    #[error("release is for environment {got:?}, this device is in {expected:?}")]
    WrongEnvironment {
        /// The statement's environment.
        got: EnvironmentName,
        /// The device's.
        expected: EnvironmentName,
    },
    /// A release not newer than the last one applied (a replay, or out of order).
    #[error("release sequence {got} is not above {last}, the last one applied")]
    Replayed {
        /// The statement's sequence.
        got: u64,
        /// The last applied sequence.
        last: u64,
    },
}

impl ReleaseStatement {
    /// A statement; `None` if the environment name breaks the naming rule.
    pub fn new(image_id: ImageId, environment: &str, sequence: u64) -> Option<Self> {
        if !super::is_valid_board_name(environment) || environment.len() > MAX_ENVIRONMENT_LEN {
            return None;
        }
        Some(ReleaseStatement {
            image_id: image_id.0,
            environment: EnvironmentName::try_from(environment).ok()?,
            sequence,
        })
    }

    /// The image released.
    pub fn image_id(&self) -> ImageId {
        ImageId(self.image_id)
    }

    /// The environment it is released to.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The release number, increasing per environment.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

/// A parsed, signed release statement (signature not yet checked: see [`SignedRelease::verify`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedRelease<'a> {
    statement: ReleaseStatement,
    statement_bytes: &'a [u8],
    key_id: KeyId,
    signature: [u8; 64],
}

impl<'a> SignedRelease<'a> {
    /// Longest encoding: statement (32 + 1 + 32 + 10) and the signature record (72).
    pub const MAX_LEN: usize = 32 + 1 + MAX_ENVIRONMENT_LEN + 10 + 72;

    /// Reads exactly one signed statement from `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ReleaseError> {
        let (statement, rest): (ReleaseStatement, _) =
            postcard::take_from_bytes(bytes).map_err(|_| ReleaseError::Malformed)?;
        if rest.len() != 72 {
            return Err(ReleaseError::Malformed);
        }
        let statement_bytes = &bytes[..bytes.len() - 72];
        // One statement, one encoding: re-encoding must give the same bytes.
        let mut check = [0u8; Self::MAX_LEN];
        match postcard::to_slice(&statement, &mut check) {
            Ok(encoded) if encoded == statement_bytes => {}
            _ => return Err(ReleaseError::Malformed),
        }
        if !super::is_valid_board_name(&statement.environment) {
            return Err(ReleaseError::BadEnvironment);
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&rest[..8]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&rest[8..]);
        Ok(SignedRelease { statement, statement_bytes, key_id: KeyId(key_id), signature })
    }

    /// The statement.
    pub fn statement(&self) -> &ReleaseStatement {
        &self.statement
    }

    /// The signing key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Checks the signature against the environment's keys.
    pub fn verify(&self, environment_keys: &[TrustedKey]) -> Result<KeyId, ReleaseError> {
        let key = environment_keys
            .iter()
            .find(|k| k.id() == self.key_id)
            .ok_or(ReleaseError::UnknownKey(self.key_id))?;
        let mut message = [0u8; RELEASE_CONTEXT.len() + Self::MAX_LEN];
        let len = RELEASE_CONTEXT.len() + self.statement_bytes.len();
        message[..RELEASE_CONTEXT.len()].copy_from_slice(RELEASE_CONTEXT);
        message[RELEASE_CONTEXT.len()..len].copy_from_slice(self.statement_bytes);
        if !key.verifies(&message[..len], &self.signature) {
            return Err(ReleaseError::BadSignature(self.key_id));
        }
        Ok(self.key_id)
    }

    /// Signs `statement` with `key`, giving the wire form.
    #[cfg(feature = "std")]
    pub fn sign(
        statement: &ReleaseStatement,
        key: &ed25519_dalek::SigningKey,
    ) -> alloc::vec::Vec<u8> {
        use ed25519_dalek::Signer;
        let mut bytes = postcard::to_allocvec(statement).unwrap_or_default();
        let mut message = RELEASE_CONTEXT.to_vec();
        message.extend_from_slice(&bytes);
        let key_id = KeyId::of_public_key(&key.verifying_key().to_bytes());
        bytes.extend_from_slice(&key_id.0);
        bytes.extend_from_slice(&key.sign(&message).to_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> (SigningKey, TrustedKey) {
        let k = SigningKey::from_bytes(&[seed; 32]);
        let t = TrustedKey::from_bytes(&k.verifying_key().to_bytes()).unwrap();
        (k, t)
    }

    #[test]
    fn signed_statements_round_trip_and_verify() {
        let (k, t) = key(3);
        let statement = ReleaseStatement::new(ImageId([7; 32]), "prod", 42).unwrap();
        let bytes = SignedRelease::sign(&statement, &k);
        assert!(bytes.len() <= SignedRelease::MAX_LEN);
        let parsed = SignedRelease::parse(&bytes).unwrap();
        assert_eq!(parsed.statement(), &statement);
        assert_eq!(parsed.verify(&[t]), Ok(t.id()));
        let (_, other) = key(4);
        assert_eq!(parsed.verify(&[other]), Err(ReleaseError::UnknownKey(t.id())));
    }

    #[test]
    fn every_byte_is_covered() {
        let (k, t) = key(3);
        let statement = ReleaseStatement::new(ImageId([7; 32]), "test", 5).unwrap();
        let bytes = SignedRelease::sign(&statement, &k);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let ok = SignedRelease::parse(&bad).and_then(|r| r.verify(&[t]).map(|_| r));
            assert!(ok.is_err(), "byte {i}");
        }
        for len in 0..bytes.len() {
            assert!(SignedRelease::parse(&bytes[..len]).is_err());
        }
        assert!(ReleaseStatement::new(ImageId([0; 32]), "Prod", 1).is_none());
    }
}
