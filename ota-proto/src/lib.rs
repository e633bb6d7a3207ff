//! The ota-server's HTTP APIs, defined once.
//!
//! - The JSON types of the management API (`/api/v1/...`, a bearer token with a [`Role`]) and
//!   of the device API (`/api/v1/device/...`, a device token), one module per area.
//! - Typed names and ids ([`DeviceId`], [`EnvironmentName`], [`ImageId`], ...), checked where
//!   they enter, hex or RFC 3339 on the wire.
//! - With the `client` feature, [`client::Client`]: the one typed HTTP client that `imager`,
//!   `fleet-sim`, the tests and the benchmarks use.
//!
//! docs/server-api.md describes every route that carries these types.

mod audit;
mod dashboard;
mod device_api;
mod devices;
mod environments;
mod error;
mod ids;
mod images;
mod releases;
mod time;
mod tokens;

#[cfg(feature = "client")]
pub mod client;

pub use audit::{AuditAction, AuditEntry};
pub use dashboard::{DevicePage, DevicePageQuery, MAX_DEVICE_PAGE, SessionInfo, SignIn};
pub use device_api::{
    Capability, CheckIn, CheckInResponse, EventKind, NewEvent, Offer, SlotBReport, SlotBState,
    Transport, outcome_text,
};
pub use devices::{
    DeviceCreated, DeviceDetail, DeviceEvent, DeviceFilter, DeviceInfo, DeviceState, DeviceToken,
    DevicesEnrolled, NewDevice, NewDevices,
};
pub use environments::{EnvironmentInfo, NewEnvironment, RolloutSettings};
pub use error::{ErrorBody, ErrorDetail};
pub use ids::{
    BadName, BoardName, DeviceId, EnvironmentName, HexBytes, ImageId, KeyId, PublicKey, Sha256,
    TokenId, TokenName,
};
pub use images::{BuildKey, ImageInfo, NewBuildKey};
pub use releases::{
    NewRelease, ReleaseInfo, ReleaseKind, RollbackRequest, RollbackTarget, RolloutProgress,
    RolloutState,
};
pub use time::{BadTime, Timestamp};
pub use tokens::{NewToken, Role, TokenCreated, TokenInfo};

/// Path prefix of both APIs.
pub const API_PREFIX: &str = "/api/v1";
/// Prefix of management tokens.
pub const MANAGEMENT_TOKEN_PREFIX: &str = "fwm_";
/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "fwd_";
