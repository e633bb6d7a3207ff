//! Authentication as extractors: a handler that takes [`Management`] or [`Device`] runs only
//! for a request whose bearer token is one, and knows who asks.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::bearer;
use crate::auth::Actor;
use crate::error::Failure;
use crate::service::Service;

/// A management token's holder (every role may read; what else is checked per operation).
/// The model is caught up with every replica's acknowledged writes before the handler runs.
pub struct Management(pub Actor);

impl FromRequestParts<Arc<Service>> for Management {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<Service>) -> Result<Self, Failure> {
        let actor = app.authenticate(bearer(&parts.headers)).await?;
        app.sync().await?;
        Ok(Management(actor))
    }
}

/// A device, by its token (an index into the model's devices).
pub struct Device(pub usize);

impl FromRequestParts<Arc<Service>> for Device {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<Service>) -> Result<Self, Failure> {
        app.authenticate_device(bearer(&parts.headers)).await.map(Device)
    }
}
