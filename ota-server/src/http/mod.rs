//! The HTTP layer: routes, authentication (as extractors), bounded JSON and binary bodies,
//! JSON errors. Handlers are thin: parse, call [`crate::service::Service`], answer.

mod auth;
mod device;
mod management;
mod range;
mod session;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;

use ota_proto::{ErrorBody, ErrorDetail};

use crate::error::{Failure, FailureKind};
use crate::service::Service;

/// Largest JSON body accepted, bytes.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Most bytes of an oversized body read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 64 << 20;

/// The application's state: the service, shared by every request.
pub type App = axum::extract::State<Arc<Service>>;

/// The whole application.
pub fn router(app: Arc<Service>) -> Router {
    Router::new()
        .nest("/api/v1/device", device::routes())
        .nest("/api/v1", management::routes())
        .route("/", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::style))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
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

/// Ready to serve: the database answers and the model is current. A load balancer takes a
/// replica that says otherwise out of rotation.
async fn ready(axum::extract::State(app): App) -> Result<&'static str, Failure> {
    app.ready().await?;
    Ok("ready\n")
}

async fn metrics(axum::extract::State(app): App) -> Response {
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
        FailureKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
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

/// A JSON body: `Content-Type: application/json`, at most `LIMIT` bytes, parsed strictly
/// (unknown fields refused, ids and names checked by their types), every refusal a JSON error.
pub struct JsonBody<T, const LIMIT: usize = MAX_JSON_BODY>(pub T);

impl<T: DeserializeOwned, St: Send + Sync, const LIMIT: usize> FromRequest<St>
    for JsonBody<T, LIMIT>
{
    type Rejection = Failure;

    async fn from_request(req: Request, _: &St) -> Result<Self, Failure> {
        let (parts, body) = req.into_parts();
        require_content_type(&parts.headers, "application/json")?;
        let bytes = read_body(&parts.headers, body, LIMIT).await?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            Failure::new(FailureKind::BadRequest, "bad_json", format!("request body: {e}"))
        })
    }
}

/// A path's parameters, typed: a bad id or name is a JSON error naming the rule it breaks.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, St: Send + Sync> axum::extract::FromRequestParts<St>
    for PathParams<T>
{
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &St,
    ) -> Result<Self, Failure> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParams(value)),
            Err(e) => Err(Failure::bad("bad_path", e.body_text())),
        }
    }
}

/// A query string, typed and strict.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Default, St: Send + Sync> axum::extract::FromRequestParts<St>
    for QueryParams<T>
{
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &St,
    ) -> Result<Self, Failure> {
        query(parts.uri.query()).map(QueryParams)
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
