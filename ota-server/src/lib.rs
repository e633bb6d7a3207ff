//! The artifact repository and fleet server.
//!
//! - [`api`]: the JSON wire types, shared with the `imager` client (always built).
//!
//! With the `server` feature (default):
//! - [`store`]: persistence behind a trait (SQLite by default) and the group-commit writer.
//! - [`blobs`]: the content-addressed folder of image files.
//! - [`fleet`]: the in-memory model every decision is made on.
//! - [`images`], [`release`], [`rollout`], [`devices`]: the domain rules, plain functions.
//! - [`service`]: the operations (upload, release, check-in, ...) over fleet + store + blobs.
//! - [`http`]: the axum routes, thin over [`service`].
//! - [`config`], [`cli`]: the `ota-server` command line.

pub mod api;

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod blobs;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod fleet;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod images;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod release;
#[cfg(feature = "server")]
pub mod rollout;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod store;
