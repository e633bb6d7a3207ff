//! The management API under `/api/v1` (a bearer token with a role).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use ota_proto::{
    BoardName, DeviceFilter, DeviceId, DevicePageQuery, EnvironmentName, ImageId, NewBuildKey,
    NewDevice, NewDevices, NewEnvironment, NewRelease, NewToken, Role, RollbackRequest, TokenId,
};
use serde::Deserialize;

use super::auth::Management;
use super::device::serve_file;
use super::session;
use super::{App, JsonBody, PathParams, QueryParams, read_body, require_content_type};
use crate::error::Failure;
use crate::service::Service;

type Answer = Result<Response, Failure>;

/// The OpenAPI description of this API.
const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Largest batch enrollment body: 200,000 devices of about 100 bytes each.
const MAX_BATCH_BODY: usize = 32 << 20;

pub(super) fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/images", get(images).post(upload))
        .route("/images/{id}", get(image))
        .route("/images/{id}/file", get(image_file))
        .route("/build-keys", get(build_keys).post(add_build_key))
        .route("/environments", get(environments).post(create_environment))
        .route("/environments/{env}", get(environment).patch(update_environment))
        .route("/environments/{env}/releases", get(releases).post(create_release))
        .route("/environments/{env}/releases/{seq}", get(release))
        .route("/environments/{env}/releases/{seq}/pause", post(pause))
        .route("/environments/{env}/releases/{seq}/resume", post(resume))
        .route("/environments/{env}/rollback", get(rollback_target).post(rollback))
        .route("/devices", get(devices).post(create_device))
        .route("/devices/batch", post(create_devices))
        .route("/devices/{id}", get(device))
        .route("/devices/{id}/token", post(rotate_device_token))
        .route("/tokens", get(tokens).post(create_token))
        .route("/tokens/{id}", delete(revoke_token))
        .route("/audit", get(audit))
        .route("/fleet/devices", get(device_page))
        .route("/session", get(session::current).post(session::sign_in).delete(session::sign_out))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], OPENAPI)
        .into_response()
}

fn ok<T: serde::Serialize>(value: T) -> Answer {
    Ok(axum::Json(value).into_response())
}

fn created<T: serde::Serialize>(value: T) -> Answer {
    Ok((StatusCode::CREATED, axum::Json(value)).into_response())
}

async fn images(State(app): App, _: Management) -> Answer {
    ok(app.images())
}

async fn upload(
    State(app): App,
    Management(who): Management,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    // Refuse before reading a possibly large body.
    if !matches!(who.role, Role::Admin | Role::Ci) {
        return Err(Failure::forbidden(format!("role {} may not upload images", who.role)));
    }
    require_content_type(&headers, "application/octet-stream")?;
    let file = read_body(&headers, body, app.limits.max_image_size).await?;
    let (new, info) = app.upload_image(&who, file).await?;
    if new { created(info) } else { ok(info) }
}

async fn image(State(app): App, _: Management, PathParams(id): PathParams<ImageId>) -> Answer {
    ok(app.image(id)?)
}

async fn image_file(
    State(app): App,
    _: Management,
    method: Method,
    headers: HeaderMap,
    PathParams(id): PathParams<ImageId>,
) -> Answer {
    let file = app.image_file(id).await?;
    Ok(serve_file(&app, &method, &headers, file, &id.to_string()))
}

async fn build_keys(State(app): App, _: Management) -> Answer {
    ok(app.build_keys())
}

async fn add_build_key(
    State(app): App,
    Management(who): Management,
    JsonBody(new): JsonBody<NewBuildKey>,
) -> Answer {
    created(app.add_build_key(&who, new).await?)
}

async fn environments(State(app): App, _: Management) -> Answer {
    ok(app.environments())
}

async fn create_environment(
    State(app): App,
    Management(who): Management,
    JsonBody(new): JsonBody<NewEnvironment>,
) -> Answer {
    created(app.create_environment(&who, new).await?)
}

async fn environment(
    State(app): App,
    _: Management,
    PathParams(env): PathParams<EnvironmentName>,
) -> Answer {
    ok(app.environment(env.as_str())?)
}

async fn update_environment(
    State(app): App,
    Management(who): Management,
    PathParams(env): PathParams<EnvironmentName>,
    JsonBody(changes): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> Answer {
    ok(app.update_environment(&who, &env, changes).await?)
}

async fn releases(
    State(app): App,
    _: Management,
    PathParams(env): PathParams<EnvironmentName>,
) -> Answer {
    ok(app.releases(env.as_str())?)
}

async fn create_release(
    State(app): App,
    Management(who): Management,
    PathParams(env): PathParams<EnvironmentName>,
    JsonBody(new): JsonBody<NewRelease>,
) -> Answer {
    created(app.create_release(&who, &env, new).await?)
}

async fn release(
    State(app): App,
    _: Management,
    PathParams((env, seq)): PathParams<(EnvironmentName, u64)>,
) -> Answer {
    ok(app.release(env.as_str(), seq)?)
}

async fn pause(
    State(app): App,
    Management(who): Management,
    PathParams((env, seq)): PathParams<(EnvironmentName, u64)>,
) -> Answer {
    ok(app.set_paused(&who, &env, seq, true).await?)
}

async fn resume(
    State(app): App,
    Management(who): Management,
    PathParams((env, seq)): PathParams<(EnvironmentName, u64)>,
) -> Answer {
    ok(app.set_paused(&who, &env, seq, false).await?)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardQuery {
    board: Option<BoardName>,
}

async fn rollback_target(
    State(app): App,
    _: Management,
    PathParams(env): PathParams<EnvironmentName>,
    QueryParams(q): QueryParams<BoardQuery>,
) -> Answer {
    ok(app.rollback_target(env.as_str(), q.board.as_ref())?)
}

async fn rollback(
    State(app): App,
    Management(who): Management,
    PathParams(env): PathParams<EnvironmentName>,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> Answer {
    created(app.rollback(&who, &env, req).await?)
}

async fn devices(
    State(app): App,
    _: Management,
    QueryParams(filter): QueryParams<DeviceFilter>,
) -> Answer {
    ok(app.devices(&filter))
}

async fn create_device(
    State(app): App,
    Management(who): Management,
    JsonBody(new): JsonBody<NewDevice>,
) -> Answer {
    created(app.create_device(&who, new).await?)
}

async fn create_devices(
    State(app): App,
    Management(who): Management,
    JsonBody(batch): JsonBody<NewDevices, MAX_BATCH_BODY>,
) -> Answer {
    created(app.create_devices(&who, batch).await?)
}

async fn device(State(app): App, _: Management, PathParams(id): PathParams<DeviceId>) -> Answer {
    ok(app.device(&id).await?)
}

async fn rotate_device_token(
    State(app): App,
    Management(who): Management,
    PathParams(id): PathParams<DeviceId>,
) -> Answer {
    ok(app.rotate_device_token(&who, &id).await?)
}

async fn tokens(State(app): App, Management(who): Management) -> Answer {
    ok(app.tokens(&who).await?)
}

async fn create_token(
    State(app): App,
    Management(who): Management,
    JsonBody(new): JsonBody<NewToken>,
) -> Answer {
    created(app.create_token(&who, new).await?)
}

async fn revoke_token(
    State(app): App,
    Management(who): Management,
    PathParams(id): PathParams<TokenId>,
) -> Answer {
    ok(app.revoke_token(&who, &id).await?)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn audit(State(app): App, _: Management, QueryParams(q): QueryParams<AuditQuery>) -> Answer {
    ok(app.audit(q.before, q.limit.unwrap_or(100)).await?)
}

async fn device_page(
    State(app): App,
    _: Management,
    QueryParams(q): QueryParams<DevicePageQuery>,
) -> Answer {
    ok(app.device_page(&q)?)
}
