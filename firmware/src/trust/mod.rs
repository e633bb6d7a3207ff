//! Device trust that changes in the field.
//!
//! The provisioning record holds the root of trust: root public key(s) and a threshold. Root
//! keys sign versioned [`TrustStatement`]s naming the keys trusted for each role (build keys,
//! retired build keys, each environment's release keys, the next root). A device accepts a
//! statement only one version above the one it holds, signed by the old root and the new
//! ([`chain`]), keeps the newest in its own flash area ([`TrustStore`]), and the agent and the
//! bootloader take their keys from it. `docs/trust.md` has the format, a test vector, and the
//! revocation policy.

pub mod chain;
mod error;
mod install;
mod statement;
mod store;

pub use chain::{Anchor, accept, walk};
pub use error::TrustError;
pub use install::{anchor, install};
pub use statement::{
    EnvironmentKeys, MAX_BUILD_KEYS, MAX_ENVIRONMENT_KEYS, MAX_ENVIRONMENTS, MAX_RETIRED_KEYS,
    MAX_ROOT_KEYS, MAX_SIGNED_LEN, MAX_STATEMENT_LEN, MAX_TRUST_SIGNATURES, RootKeys,
    SIGNATURE_RECORD_LEN, SignedTrust, TRUST_CONTEXT, TRUST_FORMAT, TrustStatement,
};
pub use store::TrustStore;
