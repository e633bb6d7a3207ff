//! The device API under `/api/v1/device` (a device token: one device, these routes only).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ota_proto::{CheckIn, NewEvent};

use super::auth::Device;
use super::{App, JsonBody, PathParams, range};
use crate::error::Failure;
use crate::metrics::Metrics;
use crate::service::{Download, Service};
use crate::store::ImageId;

pub(super) fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/checkin", post(checkin))
        .route("/events", post(event))
        .route("/images/{id}", get(image))
        .route("/patches/{source}/{target}", get(patch))
}

async fn checkin(
    State(app): App,
    Device(device): Device,
    JsonBody(report): JsonBody<CheckIn>,
) -> Result<Response, Failure> {
    Ok(axum::Json(app.checkin(device, report).await?).into_response())
}

async fn event(
    State(app): App,
    Device(device): Device,
    JsonBody(event): JsonBody<NewEvent>,
) -> Result<Response, Failure> {
    app.device_event(device, event).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn image(
    State(app): App,
    Device(device): Device,
    method: Method,
    headers: HeaderMap,
    PathParams(id): PathParams<ImageId>,
) -> Result<Response, Failure> {
    let download = app.device_image(device, id).await?;
    deliver(&app, &method, &headers, download, &id.to_string())
}

/// A patch from the image the device runs to the offered one (docs/delta.md), like an image.
async fn patch(
    State(app): App,
    Device(device): Device,
    method: Method,
    headers: HeaderMap,
    PathParams((source, target)): PathParams<(ImageId, ImageId)>,
) -> Result<Response, Failure> {
    let download = app.device_patch(device, source, target).await?;
    deliver(&app, &method, &headers, download, &format!("{source}-{target}"))
}

/// Sends a download: the bytes (with `Range`), or a redirect to where the store serves them.
fn deliver(
    app: &Service,
    method: &Method,
    headers: &HeaderMap,
    download: Download,
    etag: &str,
) -> Result<Response, Failure> {
    match download {
        Download::File(file) => Ok(serve_file(app, method, headers, file, etag)),
        Download::Redirect(url) => {
            Metrics::count(&app.metrics.redirects);
            let location = axum::http::HeaderValue::from_str(&url).map_err(Failure::internal)?;
            Ok((
                StatusCode::TEMPORARY_REDIRECT,
                [
                    (axum::http::header::LOCATION, location),
                    (
                        axum::http::header::CACHE_CONTROL,
                        axum::http::HeaderValue::from_static("no-store"),
                    ),
                ],
            )
                .into_response())
        }
    }
}

/// Answers a GET or HEAD of a file (with `Range`; `etag` names its content), counting what is
/// sent.
pub(super) fn serve_file(
    app: &Service,
    method: &Method,
    headers: &HeaderMap,
    file: bytes::Bytes,
    etag: &str,
) -> Response {
    let (response, sent) = range::serve(headers, file, &format!("\"{etag}\""));
    // HEAD answers send no bytes.
    if sent > 0 && method != Method::HEAD {
        Metrics::count(&app.metrics.downloads);
        app.metrics.download_bytes.fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
    }
    response
}
