//! The HTTP layer: routes, authentication, bounded JSON and binary bodies, JSON errors.
//! Handlers are thin: parse, call [`crate::service::Service`], answer.

mod device;
mod management;
mod range;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;

use crate::api::{ErrorBody, ErrorDetail};
use crate::service::{Failure, FailureKind, Service};
use crate::store::Store;

/// Largest JSON body accepted, bytes.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Most bytes of an oversized body read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 64 << 20;

/// The whole application.
pub fn router<S: Store>(app: Arc<Service<S>>) -> Router {
    Router::new()
        .nest("/api/v1/device", device::routes::<S>())
        .nest("/api/v1", management::routes::<S>())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::<S>))
        .fallback(|| async {
            Failure::new(
                FailureKind::NotFound,
                "no_route",
                "no such route (see /api/v1/openapi.json)",
            )
        })
        .method_not_allowed_fallback(|| async {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(app)
}

async fn metrics<S: Store>(
    axum::extract::State(app): axum::extract::State<Arc<Service<S>>>,
) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))],
        app.render_metrics(),
    )
        .into_response()
}

fn status(kind: FailureKind) -> StatusCode {
    match kind {
        FailureKind::BadRequest => StatusCode::BAD_REQUEST,
        FailureKind::Unauthorized => StatusCode::UNAUTHORIZED,
        FailureKind::Forbidden => StatusCode::FORBIDDEN,
        FailureKind::NotFound => StatusCode::NOT_FOUND,
        FailureKind::Conflict => StatusCode::CONFLICT,
        FailureKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        FailureKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.to_owned() } };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        error_response(status(self.kind), self.code, &self.message)
    }
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    crate::auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
}

/// Checks the content type (ignoring parameters).
fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), Failure> {
    let given = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(Failure::new(
        FailureKind::UnsupportedMediaType,
        "wrong_content_type",
        format!(
            "expected Content-Type {expected}, got {}",
            if given.is_empty() { "none" } else { given }
        ),
    ))
}

/// Reads a whole body of at most `limit` bytes.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<bytes::Bytes, Failure> {
    let too_large = || {
        Failure::new(
            FailureKind::TooLarge,
            "too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // Read (and drop) what the client is sending, up to a bound, so that it gets to read
        // this answer instead of a reset connection.
        let _ = axum::body::to_bytes(body, DRAIN_LIMIT).await;
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if over {
            too_large()
        } else {
            Failure::new(
                FailureKind::BadRequest,
                "bad_body",
                format!("could not read the body: {e}"),
            )
        }
    })
}

/// A JSON body: `Content-Type: application/json`, at most [`MAX_JSON_BODY`] bytes, parsed
/// strictly (unknown fields refused), every refusal a JSON error.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, _: &St) -> Result<Self, Failure> {
        let (parts, body) = req.into_parts();
        require_content_type(&parts.headers, "application/json")?;
        let bytes = read_body(&parts.headers, body, MAX_JSON_BODY).await?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            Failure::new(FailureKind::BadRequest, "bad_json", format!("request body: {e}"))
        })
    }
}

/// Parses a query string strictly.
fn query<T: DeserializeOwned + Default>(raw: Option<&str>) -> Result<T, Failure> {
    match raw {
        None | Some("") => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| {
            Failure::new(FailureKind::BadRequest, "bad_query", format!("query string: {e}"))
        }),
    }
}
