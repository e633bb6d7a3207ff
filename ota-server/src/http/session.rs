//! Dashboard sessions over HTTP: `POST /api/v1/session` exchanges a management token for a
//! session cookie (`HttpOnly`: the page's scripts never hold a credential; `SameSite=Strict`:
//! other sites' pages do not send it), `GET` tells the page who it is signed in as and its CSRF
//! token, `DELETE` signs out. Which requests a session authorizes is decided in
//! [`super::auth::Management`], the same extractor bearer tokens go through.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ota_proto::SignIn;

use super::{App, JsonBody};
use crate::error::{Failure, FailureKind};
use crate::service::SESSION_LIFETIME;

/// The session cookie's name.
pub const COOKIE: &str = "fwi_session";

/// The header a session's changing requests carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session secret in a request's `Cookie` header(s).
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The request's CSRF token.
pub fn csrf(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

fn set_cookie(value: &str, max_age: u64) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    ))
    .map_err(Failure::internal)
}

fn no_session() -> Failure {
    Failure::new(FailureKind::Unauthorized, "unauthorized", "not signed in")
}

pub(super) async fn sign_in(
    State(app): App,
    JsonBody(req): JsonBody<SignIn>,
) -> Result<Response, Failure> {
    let signed = app.sign_in(&req.token).await?;
    let cookie = set_cookie(&signed.secret, SESSION_LIFETIME.as_secs())?;
    Ok(([(header::SET_COOKIE, cookie)], axum::Json(signed.info)).into_response())
}

pub(super) async fn current(State(app): App, headers: HeaderMap) -> Result<Response, Failure> {
    let secret = cookie(&headers).ok_or_else(no_session)?;
    let (_, info) = app.session(secret, None, false).await?;
    Ok(axum::Json(info).into_response())
}

/// Signing out changes something: it needs the CSRF token too (else another site could sign a
/// person out).
pub(super) async fn sign_out(State(app): App, headers: HeaderMap) -> Result<Response, Failure> {
    let secret = cookie(&headers).ok_or_else(no_session)?;
    app.session(secret, csrf(&headers), true).await?;
    app.sign_out(secret).await?;
    let clear = set_cookie("", 0)?;
    Ok(([(header::SET_COOKIE, clear)], axum::http::StatusCode::NO_CONTENT).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; fwi_session=fws_x ; b=2"));
        assert_eq!(cookie(&h), Some("fws_x"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("fwi_session="));
        assert_eq!(cookie(&h), None);
    }
}
