//! The management API under `/api/v1` (bearer token with a role).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::{JsonBody, bearer, query, range, read_body, require_content_type};
use crate::api::{self, Role};
use crate::service::{Actor, DeviceFilter, Failure, FailureKind, Service};
use crate::store::Store;

type App<S> = State<Arc<Service<S>>>;
type Answer = Result<Response, Failure>;

/// The OpenAPI description of this API.
const OPENAPI: &str = include_str!("../../../docs/openapi.json");

pub(super) fn routes<S: Store>() -> Router<Arc<Service<S>>> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/images", get(images::<S>).post(upload::<S>))
        .route("/images/{id}", get(image::<S>))
        .route("/images/{id}/file", get(image_file::<S>))
        .route("/build-keys", get(build_keys::<S>).post(add_build_key::<S>))
        .route("/environments", get(environments::<S>).post(create_environment::<S>))
        .route("/environments/{env}", get(environment::<S>).patch(update_environment::<S>))
        .route("/environments/{env}/releases", get(releases::<S>).post(create_release::<S>))
        .route("/environments/{env}/releases/{seq}", get(release::<S>))
        .route("/environments/{env}/releases/{seq}/pause", post(pause::<S>))
        .route("/environments/{env}/releases/{seq}/resume", post(resume::<S>))
        .route("/environments/{env}/rollback", get(rollback_target::<S>).post(rollback::<S>))
        .route("/devices", get(devices::<S>).post(create_device::<S>))
        .route("/devices/{id}", get(device::<S>))
        .route("/devices/{id}/token", post(rotate_device_token::<S>))
        .route("/tokens", get(tokens::<S>).post(create_token::<S>))
        .route("/tokens/{id}", delete(revoke_token::<S>))
        .route("/audit", get(audit::<S>))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], OPENAPI)
        .into_response()
}

/// Authenticates; every management route is at least a read, which every role may do.
async fn actor<S: Store>(app: &Service<S>, headers: &HeaderMap) -> Result<Actor, Failure> {
    app.authenticate(bearer(headers)).await
}

fn ok<T: serde::Serialize>(value: T) -> Answer {
    Ok(axum::Json(value).into_response())
}

fn created<T: serde::Serialize>(value: T) -> Answer {
    Ok((StatusCode::CREATED, axum::Json(value)).into_response())
}

fn sequence(text: &str) -> Result<u64, Failure> {
    text.parse().map_err(|_| {
        Failure::new(
            FailureKind::BadRequest,
            "bad_sequence",
            format!("{text:?} is not a release sequence number"),
        )
    })
}

async fn images<S: Store>(State(app): App<S>, headers: HeaderMap) -> Answer {
    actor(&app, &headers).await?;
    ok(app.images())
}

async fn upload<S: Store>(State(app): App<S>, headers: HeaderMap, body: Body) -> Answer {
    let who = actor(&app, &headers).await?;
    // Refuse before reading a possibly large body.
    if !matches!(who.role, Role::Admin | Role::Ci) {
        let message = format!("role {} may not upload images", who.role.as_str());
        return Err(Failure::new(FailureKind::Forbidden, "forbidden", message));
    }
    require_content_type(&headers, "application/octet-stream")?;
    let file = read_body(&headers, body, app.limits.max_image_size).await?;
    let (new, info) = app.upload_image(&who, file).await?;
    if new { created(info) } else { ok(info) }
}

async fn image<S: Store>(State(app): App<S>, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    actor(&app, &headers).await?;
    ok(app.image(&id)?)
}

async fn image_file<S: Store>(
    State(app): App<S>,
    method: axum::http::Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    actor(&app, &headers).await?;
    let file = app.image_file(&id)?;
    let (response, sent) = range::serve(&headers, file, &format!("\"{id}\""));
    if sent > 0 && method != axum::http::Method::HEAD {
        app.metrics.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        app.metrics.download_bytes.fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(response)
}

async fn build_keys<S: Store>(State(app): App<S>, headers: HeaderMap) -> Answer {
    actor(&app, &headers).await?;
    ok(app.build_keys())
}

async fn add_build_key<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    JsonBody(new): JsonBody<api::NewBuildKey>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    created(app.add_build_key(&who, new).await?)
}

async fn environments<S: Store>(State(app): App<S>, headers: HeaderMap) -> Answer {
    actor(&app, &headers).await?;
    ok(app.environments())
}

async fn create_environment<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    JsonBody(new): JsonBody<api::NewEnvironment>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    created(app.create_environment(&who, new).await?)
}

async fn environment<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(env): Path<String>,
) -> Answer {
    actor(&app, &headers).await?;
    ok(app.environment(&env)?)
}

async fn update_environment<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(env): Path<String>,
    JsonBody(update): JsonBody<api::EnvironmentUpdate>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    ok(app.update_environment(&who, &env, update).await?)
}

async fn releases<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(env): Path<String>,
) -> Answer {
    actor(&app, &headers).await?;
    ok(app.releases(&env)?)
}

async fn create_release<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(env): Path<String>,
    JsonBody(new): JsonBody<api::NewRelease>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    created(app.create_release(&who, &env, new).await?)
}

async fn release<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path((env, seq)): Path<(String, String)>,
) -> Answer {
    actor(&app, &headers).await?;
    ok(app.release(&env, sequence(&seq)?)?)
}

async fn pause<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path((env, seq)): Path<(String, String)>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    ok(app.set_paused(&who, &env, sequence(&seq)?, true).await?)
}

async fn resume<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path((env, seq)): Path<(String, String)>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    ok(app.set_paused(&who, &env, sequence(&seq)?, false).await?)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardQuery {
    board: Option<String>,
}

async fn rollback_target<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(env): Path<String>,
    RawQuery(raw): RawQuery,
) -> Answer {
    actor(&app, &headers).await?;
    let q: BoardQuery = query(raw.as_deref())?;
    ok(app.rollback_target(&env, q.board.as_deref())?)
}

async fn rollback<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(env): Path<String>,
    JsonBody(req): JsonBody<api::RollbackRequest>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    created(app.rollback(&who, &env, req).await?)
}

async fn devices<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    actor(&app, &headers).await?;
    let filter: DeviceFilter = query(raw.as_deref())?;
    ok(app.devices(&filter)?)
}

async fn create_device<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    JsonBody(new): JsonBody<api::NewDevice>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    created(app.create_device(&who, new).await?)
}

async fn device<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    actor(&app, &headers).await?;
    ok(app.device(&id).await?)
}

async fn rotate_device_token<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    ok(app.rotate_device_token(&who, &id).await?)
}

async fn tokens<S: Store>(State(app): App<S>, headers: HeaderMap) -> Answer {
    let who = actor(&app, &headers).await?;
    if who.role != Role::Admin {
        return Err(Failure::new(
            FailureKind::Forbidden,
            "forbidden",
            "only admin tokens list tokens",
        ));
    }
    ok(app.tokens().await?)
}

async fn create_token<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    JsonBody(new): JsonBody<api::NewToken>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    created(app.create_token(&who, new).await?)
}

async fn revoke_token<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let who = actor(&app, &headers).await?;
    ok(app.revoke_token(&who, &id).await?)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn audit<S: Store>(
    State(app): App<S>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    actor(&app, &headers).await?;
    let q: AuditQuery = query(raw.as_deref())?;
    ok(app.audit(q.before, q.limit.unwrap_or(100)).await?)
}
