//! The artifact repository and fleet server. The HTTP APIs' types and client are in
//! `ota-proto`; this crate is the server.
//!
//! - [`store`]: persistence behind the [`store::Store`] trait, chosen at run time (SQLite
//!   file, the embedded default, or PostgreSQL for several replicas), with versioned
//!   migrations.
//! - [`journal`]: group commit, and the in-memory model kept current in commit order.
//! - [`blobs`]: the content-addressed folder of image files.
//! - [`private_files`]: the database (it holds release private keys) owner-only, checked.
//! - [`fleet`]: the in-memory model every decision is made on.
//! - [`images`], [`release`], [`rollout`], [`evidence`]: the domain rules, plain functions.
//! - [`service`]: the operations (upload, release, check-in, ...), one file per area.
//! - [`http`]: the axum routes, thin over [`service`]; authentication as extractors.
//! - [`config`], [`cli`]: the `ota-server` command line.

pub mod auth;
pub mod blobs;
pub mod cli;
pub mod config;
pub mod error;
pub mod evidence;
pub mod fleet;
pub mod http;
pub mod images;
pub mod journal;
pub mod metrics;
pub mod patches;
pub mod private_files;
pub mod release;
pub mod rollout;
pub mod service;
pub mod store;
