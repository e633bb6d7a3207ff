//! The trust statement: which keys the device trusts for each role, versioned and signed by
//! the root keys. Wire form (see `docs/trust.md`):
//!
//! ```text
//! statement (postcard TrustStatement)
//! count:u8, then count × (key id 8 bytes, Ed25519 signature 64 bytes over TRUST_CONTEXT || statement)
//! ```

use heapless::Vec;
use serde::{Deserialize, Serialize};

use super::error::TrustError;
use crate::image::{EnvironmentName, KeyId, MAX_ENVIRONMENT_LEN, TrustedKey, is_valid_board_name};

/// Signed before the statement bytes, so a root signature over a statement can never be taken
/// for a signature over an image manifest or a release.
pub const TRUST_CONTEXT: &[u8] = b"fwi trust statement v1\0";
/// The statement format this code reads and writes.
pub const TRUST_FORMAT: u8 = 1;
/// Most root keys a statement (or a provisioning record) names.
pub const MAX_ROOT_KEYS: usize = 2;
/// Most build keys that may sign new images.
pub const MAX_BUILD_KEYS: usize = 3;
/// Most retired build keys (images they signed keep booting, none of theirs installs).
pub const MAX_RETIRED_KEYS: usize = 2;
/// Most environments a statement names.
pub const MAX_ENVIRONMENTS: usize = 4;
/// Most release keys per environment.
pub const MAX_ENVIRONMENT_KEYS: usize = 2;
/// Most signatures a signed statement carries: the old roots' and the new roots'.
pub const MAX_TRUST_SIGNATURES: usize = 2 * MAX_ROOT_KEYS;
/// Bytes of one signature record.
pub const SIGNATURE_RECORD_LEN: usize = 8 + 64;

/// Longest postcard encoding of a [`TrustStatement`] within the bounds above (a `u32` takes at
/// most 5 bytes, a length prefix 1, a key 32).
pub const MAX_STATEMENT_LEN: usize = 1
    + 5
    + (1 + 1 + MAX_ROOT_KEYS * 32)
    + (1 + MAX_BUILD_KEYS * 32)
    + (1 + MAX_RETIRED_KEYS * 32)
    + 1
    + MAX_ENVIRONMENTS * (1 + MAX_ENVIRONMENT_LEN + 1 + MAX_ENVIRONMENT_KEYS * 32);
/// Longest signed statement.
pub const MAX_SIGNED_LEN: usize =
    MAX_STATEMENT_LEN + 1 + MAX_TRUST_SIGNATURES * SIGNATURE_RECORD_LEN;

/// The root of trust at one point of the chain: `threshold` of `keys` must sign the next
/// statement.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RootKeys {
    /// Signatures needed (1 ..= keys).
    pub threshold: u8,
    /// Ed25519 public keys.
    pub keys: Vec<[u8; 32], MAX_ROOT_KEYS>,
}

/// One environment's release keys.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EnvironmentKeys {
    /// The environment (`test`, `prod`, ...).
    pub name: EnvironmentName,
    /// Ed25519 public keys its release statements are signed by.
    pub keys: Vec<[u8; 32], MAX_ENVIRONMENT_KEYS>,
}

/// "From version `version` on, these keys are trusted for these roles."
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TrustStatement {
    /// [`TRUST_FORMAT`].
    pub format: u8,
    /// Starts at 1 (0 is the provisioning record's root), rises by exactly one per statement.
    pub version: u32,
    /// The root keys from this version on; they (with the previous root) sign the next one.
    pub root: RootKeys,
    /// Keys whose images install and boot.
    pub build_keys: Vec<[u8; 32], MAX_BUILD_KEYS>,
    /// Keys whose images no longer install, but whose image already confirmed on a device
    /// keeps booting until it is replaced (a soft revocation; see `docs/trust.md`).
    pub retired_build_keys: Vec<[u8; 32], MAX_RETIRED_KEYS>,
    /// Each environment's release keys.
    pub environments: Vec<EnvironmentKeys, MAX_ENVIRONMENTS>,
}

/// A parsed signed statement; [`super::chain`] decides whether it is accepted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedTrust<'a> {
    statement: TrustStatement,
    statement_bytes: &'a [u8],
    signatures: Vec<(KeyId, [u8; 64]), MAX_TRUST_SIGNATURES>,
}

impl RootKeys {
    /// Checks the threshold and every key.
    pub fn check(&self) -> Result<(), TrustError> {
        if self.threshold == 0 || usize::from(self.threshold) > self.keys.len() {
            return Err(TrustError::BadThreshold);
        }
        keys_usable(&self.keys)
    }

    /// Whether `threshold` distinct root keys signed `message`. A signature by a root key that
    /// does not verify is an error, not merely uncounted: a statement with a damaged signature
    /// is damaged.
    pub fn signed(
        &self,
        message_tail: &[u8],
        signatures: &[(KeyId, [u8; 64])],
    ) -> Result<(), TrustError> {
        let mut counted: Vec<KeyId, MAX_ROOT_KEYS> = Vec::new();
        for raw in &self.keys {
            let key = TrustedKey::from_bytes(raw).map_err(|_| TrustError::BadKey)?;
            let Some((id, signature)) = signatures.iter().find(|(id, _)| *id == key.id()) else {
                continue;
            };
            if !verifies(&key, message_tail, signature) {
                return Err(TrustError::BadSignature(*id));
            }
            if !counted.contains(id) {
                // At most MAX_ROOT_KEYS distinct ids, the capacity.
                let _ = counted.push(*id);
            }
        }
        if counted.len() < usize::from(self.threshold) {
            return Err(TrustError::Threshold { have: counted.len() as u8, need: self.threshold });
        }
        Ok(())
    }
}

/// Ed25519 over `TRUST_CONTEXT || tail`, the message put together in a stack buffer (no
/// allocator on the device).
fn verifies(key: &TrustedKey, tail: &[u8], signature: &[u8; 64]) -> bool {
    let mut message = [0u8; TRUST_CONTEXT.len() + MAX_STATEMENT_LEN];
    let len = TRUST_CONTEXT.len() + tail.len();
    let Some(buf) = message.get_mut(..len) else { return false };
    buf[..TRUST_CONTEXT.len()].copy_from_slice(TRUST_CONTEXT);
    buf[TRUST_CONTEXT.len()..].copy_from_slice(tail);
    key.verifies(buf, signature)
}

fn keys_usable(keys: &[[u8; 32]]) -> Result<(), TrustError> {
    for (i, key) in keys.iter().enumerate() {
        TrustedKey::from_bytes(key).map_err(|_| TrustError::BadKey)?;
        if keys[..i].contains(key) {
            return Err(TrustError::DuplicateKey);
        }
    }
    Ok(())
}

fn trusted<const N: usize>(keys: &[[u8; 32]]) -> Vec<TrustedKey, N> {
    // Checked when the statement was parsed; at most N, as the source.
    keys.iter().filter_map(|k| TrustedKey::from_bytes(k).ok()).take(N).collect()
}

impl TrustStatement {
    /// Checks the statement's own rules: format, version, root, usable distinct keys, valid
    /// distinct environment names, a build key.
    pub fn check(&self) -> Result<(), TrustError> {
        if self.format != TRUST_FORMAT {
            return Err(TrustError::Format(self.format));
        }
        if self.version == 0 {
            return Err(TrustError::Malformed);
        }
        self.root.check()?;
        if self.build_keys.is_empty() {
            return Err(TrustError::NoBuildKey);
        }
        keys_usable(&self.build_keys)?;
        keys_usable(&self.retired_build_keys)?;
        if self.retired_build_keys.iter().any(|k| self.build_keys.contains(k)) {
            return Err(TrustError::DuplicateKey);
        }
        for (i, env) in self.environments.iter().enumerate() {
            if !is_valid_board_name(&env.name) {
                return Err(TrustError::BadEnvironment);
            }
            if self.environments[..i].iter().any(|e| e.name == env.name) {
                return Err(TrustError::BadEnvironment);
            }
            keys_usable(&env.keys)?;
        }
        Ok(())
    }

    /// Keys whose images install (the agent's, and the bootloader's for a swap or trial).
    pub fn build_keys(&self) -> Vec<TrustedKey, MAX_BUILD_KEYS> {
        trusted(&self.build_keys)
    }

    /// Keys under which an image already confirmed on the device keeps booting: the build keys
    /// and the retired ones.
    pub fn boot_keys(&self) -> Vec<TrustedKey, { MAX_BUILD_KEYS + MAX_RETIRED_KEYS }> {
        let mut keys: Vec<TrustedKey, { MAX_BUILD_KEYS + MAX_RETIRED_KEYS }> =
            trusted::<MAX_BUILD_KEYS>(&self.build_keys).into_iter().collect();
        for key in trusted::<MAX_RETIRED_KEYS>(&self.retired_build_keys) {
            // Capacity is the sum of both.
            let _ = keys.push(key);
        }
        keys
    }

    /// `environment`'s release keys (none if the statement does not name it: no release for
    /// it is accepted).
    pub fn environment_keys(&self, environment: &str) -> Vec<TrustedKey, MAX_ENVIRONMENT_KEYS> {
        self.environments
            .iter()
            .find(|e| e.name == environment)
            .map(|e| trusted(&e.keys))
            .unwrap_or_default()
    }

    /// Whether an installed image signed by the keys `signers` may keep booting under this
    /// statement. The device refuses a statement under which its running image would not boot
    /// (a "hard" revocation of its key): that statement may come only after the replacement.
    pub fn keeps_booting(&self, signers: &[KeyId]) -> bool {
        self.boot_keys().iter().any(|k| signers.contains(&k.id()))
    }
}

impl<'a> SignedTrust<'a> {
    /// Reads exactly one signed statement from `bytes` and checks its own rules (not yet its
    /// signatures: see [`super::chain::accept`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TrustError> {
        if bytes.len() > MAX_SIGNED_LEN {
            return Err(TrustError::Malformed);
        }
        let (statement, rest): (TrustStatement, _) =
            postcard::take_from_bytes(bytes).map_err(|_| TrustError::Malformed)?;
        let statement_bytes = &bytes[..bytes.len() - rest.len()];
        // One statement, one encoding: re-encoding must give the same bytes.
        let mut check = [0u8; MAX_STATEMENT_LEN];
        match postcard::to_slice(&statement, &mut check) {
            Ok(encoded) if encoded == statement_bytes => {}
            _ => return Err(TrustError::Malformed),
        }
        let (&count, records) = rest.split_first().ok_or(TrustError::Malformed)?;
        if usize::from(count) > MAX_TRUST_SIGNATURES
            || records.len() != usize::from(count) * SIGNATURE_RECORD_LEN
        {
            return Err(TrustError::Malformed);
        }
        let mut signatures = Vec::new();
        for record in records.chunks_exact(SIGNATURE_RECORD_LEN) {
            let mut id = [0u8; 8];
            id.copy_from_slice(&record[..8]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&record[8..]);
            if signatures.iter().any(|(k, _)| *k == KeyId(id)) {
                return Err(TrustError::Malformed);
            }
            // `count` is at most the capacity.
            let _ = signatures.push((KeyId(id), signature));
        }
        statement.check()?;
        Ok(SignedTrust { statement, statement_bytes, signatures })
    }

    /// The statement.
    pub fn statement(&self) -> &TrustStatement {
        &self.statement
    }

    /// Its version.
    pub fn version(&self) -> u32 {
        self.statement.version
    }

    /// The signers' key ids.
    pub fn signers(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.signatures.iter().map(|(id, _)| *id)
    }

    /// Whether `threshold` of `root` signed it.
    pub fn signed_by(&self, root: &RootKeys) -> Result<(), TrustError> {
        root.signed(self.statement_bytes, &self.signatures)
    }

    /// Signs `statement` with each of `keys` (old roots and new roots, say), giving the wire
    /// form. Refuses a statement that breaks its own rules.
    #[cfg(feature = "std")]
    pub fn sign(
        statement: &TrustStatement,
        keys: &[&ed25519_dalek::SigningKey],
    ) -> Result<alloc::vec::Vec<u8>, TrustError> {
        use ed25519_dalek::Signer;
        statement.check()?;
        if keys.is_empty() || keys.len() > MAX_TRUST_SIGNATURES {
            return Err(TrustError::Malformed);
        }
        let mut bytes = postcard::to_allocvec(statement).map_err(|_| TrustError::Malformed)?;
        let mut message = TRUST_CONTEXT.to_vec();
        message.extend_from_slice(&bytes);
        bytes.push(keys.len() as u8);
        let mut ids = alloc::vec::Vec::new();
        for key in keys {
            let id = KeyId::of_public_key(&key.verifying_key().to_bytes());
            if ids.contains(&id) {
                return Err(TrustError::DuplicateKey);
            }
            ids.push(id);
            bytes.extend_from_slice(&id.0);
            bytes.extend_from_slice(&key.sign(&message).to_bytes());
        }
        Ok(bytes)
    }
}
