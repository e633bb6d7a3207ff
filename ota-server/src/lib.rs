//! The artifact repository and fleet server.
//!
//! Nothing is implemented here yet: the server (images, environments, signed releases, staged
//! rollouts, device API) is the subject of a later issue. The crate exists so the workspace has
//! its final shape.
