//! Authentication as extractors: a handler that takes [`Management`] or [`Device`] runs only
//! for a request whose bearer token is one (or whose dashboard session cookie stands for one,
//! see [`super::session`]), and knows who asks.

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
        let actor = match (bearer(&parts.headers), super::session::cookie(&parts.headers)) {
            // A dashboard session: reads need the cookie, changes the CSRF token too.
            (None, Some(secret)) => {
                let csrf = super::session::csrf(&parts.headers);
                app.session(secret, csrf, !parts.method.is_safe()).await?.0
            }
            (token, _) => app.authenticate(token).await?,
        };
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
