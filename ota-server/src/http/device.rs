//! The device API under `/api/v1/device` (device token: one device, these routes only).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{JsonBody, bearer, range};
use crate::api;
use crate::service::{Failure, Service};
use crate::store::Store;

type App<S> = State<Arc<Service<S>>>;

pub(super) fn routes<S: Store>() -> Router<Arc<Service<S>>> {
    Router::new()
        .route("/checkin", post(checkin::<S>))
        .route("/events", post(event::<S>))
        .route("/images/{id}", get(image::<S>))
}

async fn checkin<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    JsonBody(report): JsonBody<api::CheckIn>,
) -> Result<Response, Failure> {
    let device = app.authenticate_device(bearer(&headers))?;
    Ok(axum::Json(app.checkin(device, report).await?).into_response())
}

async fn event<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    JsonBody(event): JsonBody<api::NewEvent>,
) -> Result<Response, Failure> {
    let device = app.authenticate_device(bearer(&headers))?;
    app.device_event(device, event).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn image<S: Store>(
    State(app): App<S>,
    method: axum::http::Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let device = app.authenticate_device(bearer(&headers))?;
    let file = app.device_image(device, &id)?;
    let (response, sent) = range::serve(&headers, file, &format!("\"{id}\""));
    // HEAD answers send no bytes.
    if sent > 0 && method != axum::http::Method::HEAD {
        app.metrics.downloads.fetch_add(1, Ordering::Relaxed);
        app.metrics.download_bytes.fetch_add(sent, Ordering::Relaxed);
    }
    Ok(response)
}
