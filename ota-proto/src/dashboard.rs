//! What the browser dashboard needs beyond the rest of the API: signing in with a management
//! token for a session cookie, and a page of a large device table (filtered, searched and
//! counted on the server, so a browser never loads a 100,000-device fleet).

use serde::{Deserialize, Serialize};

use crate::{BoardName, DeviceInfo, DeviceState, EnvironmentName, ImageId, Role, Timestamp};

/// `POST /api/v1/session`: a management token, exchanged for a session cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The management token (`fwm_...`).
    pub token: String,
}

/// A signed-in session: who it acts as, and the token a page sends back in `X-CSRF-Token` with
/// every request that changes something (the cookie alone authorizes only reading).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The management token's name.
    pub name: String,
    /// Its role: what the session may do, exactly as the token may.
    pub role: Role,
    /// The CSRF token of this session.
    pub csrf: String,
    /// When the session ends (sign in again then).
    pub expires_at: Timestamp,
}

/// Most devices one page holds.
pub const MAX_DEVICE_PAGE: usize = 500;

/// `GET /api/v1/fleet/devices`: which page of which devices (every filter optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePageQuery {
    /// Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentName>,
    /// Board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<BoardName>,
    /// Where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeviceState>,
    /// Running image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageId>,
    /// Part of the device id (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// Matching devices to skip (enrollment order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// Page size, 1 to [`MAX_DEVICE_PAGE`] (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One page of the device table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DevicePage {
    /// How many devices match, over all pages.
    pub total: u64,
    /// Where this page starts among them.
    pub offset: u64,
    /// This page's devices, in enrollment order.
    pub devices: Vec<DeviceInfo>,
}
