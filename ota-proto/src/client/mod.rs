//! The one typed client for both APIs: one method per route, typed requests and answers,
//! pooled keep-alive connections (hyper), the server's JSON errors as [`ApiError`]s.
//!
//! It is async (fleet-sim runs thousands of devices on one runtime); [`Blocking`] runs it on a
//! small runtime of its own for command-line tools and tests. A client holds one token;
//! [`Client::with_token`] makes another on the same connection pool (fleet-sim gives each
//! simulated device its own).

mod body;
mod error;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use body::Progress;
use body::RequestBody;
/// The bytes of a file to upload ([`Client::upload`]) or downloaded.
pub use bytes::Bytes;
pub use error::{ApiError, Error};
pub use hyper::Method;

use crate::*;

/// Largest answer read by default: a fleet of 100,000 devices lists in well under this.
pub const MAX_RESPONSE: usize = 512 << 20;

/// An answer as it came: for tests that check the wire itself.
#[derive(Clone, Debug)]
pub struct RawReply {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl RawReply {
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The error code of an error body, or `""`.
    pub fn code(&self) -> String {
        serde_json::from_slice::<ErrorBody>(&self.body).map(|e| e.error.code).unwrap_or_default()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An image upload's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Uploaded {
    /// The stored image.
    pub image: ImageInfo,
    /// True when this upload stored it (201); false when it was there already (200).
    pub new: bool,
}

/// A connection to an ota-server (or to several replicas of one), with one token.
///
/// Given several servers (`http://a:8080,http://b:8080`), each request goes to one of them at
/// random, and to the next one when it cannot be delivered: replicas behave as one server, so
/// any of them will do, and a lost replica costs a retry, not an outage.
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpConnector, RequestBody>,
    servers: Arc<[Arc<str>]>,
    turn: Arc<AtomicUsize>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("servers", &self.servers).finish_non_exhaustive()
    }
}

/// A request's body, kept so that it can be sent again to another replica.
#[derive(Clone)]
struct Payload {
    content_type: String,
    bytes: Bytes,
    progress: Option<Progress>,
}

/// The base URL from what a user gave: `http://` added when no scheme is given, trailing
/// slashes and a trailing `/api/v1` dropped.
pub fn base_url(server: &str) -> Result<String, Error> {
    let server = server.trim();
    let url = if server.contains("://") { server.to_owned() } else { format!("http://{server}") };
    if !url.starts_with("http://") {
        return Err(Error::Setting(format!(
            "ota-server URL {server}: this client speaks plain HTTP (http://HOST:PORT); put a TLS \
             proxy in front of it on this side, or use the server's plain listener"
        )));
    }
    let mut url = url.trim_end_matches('/');
    if let Some(stripped) = url.strip_suffix(API_PREFIX) {
        url = stripped;
    }
    if url.len() <= "http://".len() {
        return Err(Error::Setting(format!("ota-server URL {server} names no host")));
    }
    Ok(url.to_owned())
}

impl Client {
    /// A client for the server at `server` (`http://host:port`; `host:port` alone means plain
    /// HTTP; several replicas separated by commas) with the bearer `token` (management or
    /// device). Makes no connection yet.
    pub fn new(server: &str, token: &str) -> Result<Client, Error> {
        let servers = server
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| base_url(s).map(Arc::<str>::from))
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(Error::Setting("no ota-server URL given".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        // Where each client starts its turns: clients made at once spread over the replicas.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
        let client = Client {
            pool,
            servers: servers.into(),
            turn: Arc::new(AtomicUsize::new(seed)),
            authorization: None,
            timeout: Duration::from_secs(300),
        };
        client.with_token(token)
    }

    /// A client for the server at `server` without a token: for the routes that need none
    /// (`/healthz`, `/readyz`, `/metrics`) and for [`Client::raw`] requests that bring their
    /// own `Authorization` header.
    pub fn anonymous(server: &str) -> Result<Client, Error> {
        let mut client = Client::new(server, "-")?;
        client.authorization = None;
        Ok(client)
    }

    /// The same server and connection pool with another token.
    pub fn with_token(&self, token: &str) -> Result<Client, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Setting("no API token given".into()));
        }
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .ok()
            .filter(|_| token.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                Error::Setting(
                    "the API token holds spaces or characters that cannot go in an HTTP header"
                        .into(),
                )
            })?;
        let mut value = value;
        value.set_sensitive(true);
        // Its own turns: devices made from one client spread over the replicas too.
        let turn = Arc::new(AtomicUsize::new(self.turn.fetch_add(1, Ordering::Relaxed)));
        Ok(Client { authorization: Some(value), turn, ..self.clone() })
    }

    /// How long one exchange may take, connecting and reading the whole answer included
    /// (default 300 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The (first) server's base URL (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.servers[0]
    }

    /// Every server's base URL.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| &**s)
    }

    /// The servers in the order this request tries them: from a random one (a step of a
    /// multiplicative hash over the client's turns), then the others in turn.
    fn order(&self) -> impl Iterator<Item = &Arc<str>> {
        let n = self.servers.len();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let start = (turn.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> 7) % n;
        (0..n).map(move |i| &self.servers[(start + i) % n])
    }

    // ----- images -----

    /// `GET /images`: every stored image, newest first.
    pub async fn images(&self) -> Result<Vec<ImageInfo>, Error> {
        self.get("/images").await
    }

    /// `GET /images/{id}`.
    pub async fn image(&self, id: ImageId) -> Result<ImageInfo, Error> {
        self.get(&format!("/images/{id}")).await
    }

    /// `POST /images`: stores an image file (the server checks it first). `progress`, if
    /// given, hears how many bytes have been sent so far.
    pub async fn upload(&self, file: Bytes, progress: Option<Progress>) -> Result<Uploaded, Error> {
        let payload =
            Payload { content_type: "application/octet-stream".into(), bytes: file, progress };
        let path = format!("{API_PREFIX}/images");
        let (status, bytes) = self.exchange(Method::POST, &path, Some(payload)).await?;
        let image = decode("POST", "/images", status, &bytes)?;
        Ok(Uploaded { image, new: status == StatusCode::CREATED })
    }

    /// `GET /images/{id}/file`: the image file.
    pub async fn image_file(&self, id: ImageId) -> Result<Bytes, Error> {
        self.download(&format!("{API_PREFIX}/images/{id}/file"), 0, MAX_RESPONSE).await
    }

    /// `GET /build-keys`.
    pub async fn build_keys(&self) -> Result<Vec<BuildKey>, Error> {
        self.get("/build-keys").await
    }

    /// `POST /build-keys`.
    pub async fn add_build_key(&self, key: &NewBuildKey) -> Result<BuildKey, Error> {
        self.post("/build-keys", key).await
    }

    // ----- environments -----

    /// `GET /environments`, in promotion order.
    pub async fn environments(&self) -> Result<Vec<EnvironmentInfo>, Error> {
        self.get("/environments").await
    }

    /// `GET /environments/{env}`.
    pub async fn environment(&self, env: &EnvironmentName) -> Result<EnvironmentInfo, Error> {
        self.get(&format!("/environments/{env}")).await
    }

    /// `POST /environments`.
    pub async fn create_environment(&self, new: &NewEnvironment) -> Result<EnvironmentInfo, Error> {
        self.post("/environments", new).await
    }

    /// `PATCH /environments/{env}`: new rollout settings (the server also takes a subset).
    pub async fn update_environment(
        &self,
        env: &EnvironmentName,
        settings: &RolloutSettings,
    ) -> Result<EnvironmentInfo, Error> {
        self.send_json(Method::PATCH, &format!("/environments/{env}"), Some(settings)).await
    }

    // ----- releases -----

    /// `GET /environments/{env}/releases`, newest first.
    pub async fn releases(&self, env: &EnvironmentName) -> Result<Vec<ReleaseInfo>, Error> {
        self.get(&format!("/environments/{env}/releases")).await
    }

    /// `GET /environments/{env}/releases/{sequence}`.
    pub async fn release(
        &self,
        env: &EnvironmentName,
        sequence: u64,
    ) -> Result<ReleaseInfo, Error> {
        self.get(&format!("/environments/{env}/releases/{sequence}")).await
    }

    /// `POST /environments/{env}/releases`: releases (or, with an upstream, promotes) an
    /// image.
    pub async fn create_release(
        &self,
        env: &EnvironmentName,
        new: &NewRelease,
    ) -> Result<ReleaseInfo, Error> {
        self.post(&format!("/environments/{env}/releases"), new).await
    }

    /// `POST /environments/{env}/releases/{sequence}/pause`.
    pub async fn pause(&self, env: &EnvironmentName, sequence: u64) -> Result<ReleaseInfo, Error> {
        let path = format!("/environments/{env}/releases/{sequence}/pause");
        self.send_json::<(), _>(Method::POST, &path, None).await
    }

    /// `POST /environments/{env}/releases/{sequence}/resume`.
    pub async fn resume(&self, env: &EnvironmentName, sequence: u64) -> Result<ReleaseInfo, Error> {
        let path = format!("/environments/{env}/releases/{sequence}/resume");
        self.send_json::<(), _>(Method::POST, &path, None).await
    }

    /// `GET /environments/{env}/rollback`: what a rollback would release (sign this).
    pub async fn rollback_target(
        &self,
        env: &EnvironmentName,
        board: Option<&BoardName>,
    ) -> Result<RollbackTarget, Error> {
        let query = board.map(|b| format!("?board={b}")).unwrap_or_default();
        self.get(&format!("/environments/{env}/rollback{query}")).await
    }

    /// `POST /environments/{env}/rollback`.
    pub async fn rollback(
        &self,
        env: &EnvironmentName,
        request: &RollbackRequest,
    ) -> Result<ReleaseInfo, Error> {
        self.post(&format!("/environments/{env}/rollback"), request).await
    }

    // ----- devices -----

    /// `GET /devices?...`.
    pub async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<DeviceInfo>, Error> {
        let mut query = Vec::new();
        if let Some(v) = &filter.environment {
            query.push(format!("environment={v}"));
        }
        if let Some(v) = &filter.board {
            query.push(format!("board={v}"));
        }
        if let Some(v) = filter.state {
            query.push(format!("state={v}"));
        }
        if let Some(v) = filter.image {
            query.push(format!("image={v}"));
        }
        if let Some(v) = filter.limit {
            query.push(format!("limit={v}"));
        }
        let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
        self.get(&format!("/devices{query}")).await
    }

    /// `GET /fleet/devices?...`: one page of the devices matching `query`, and their count.
    pub async fn device_page(&self, query: &DevicePageQuery) -> Result<DevicePage, Error> {
        let path = "/fleet/devices";
        let query = serde_urlencoded::to_string(query)
            .map_err(|e| Error::Setting(format!("cannot encode the query of {path}: {e}")))?;
        self.get(&format!("{path}?{query}")).await
    }

    /// `GET /devices/{id}`: one device and its recent events.
    pub async fn device(&self, id: &DeviceId) -> Result<DeviceDetail, Error> {
        self.get(&format!("/devices/{id}")).await
    }

    /// `POST /devices`: enrolls a device; the answer holds its token, shown only this once.
    pub async fn create_device(&self, new: &NewDevice) -> Result<DeviceCreated, Error> {
        self.post("/devices", new).await
    }

    /// `POST /devices/batch`: enrolls every device or none.
    pub async fn create_devices(&self, batch: &NewDevices) -> Result<DevicesEnrolled, Error> {
        self.post("/devices/batch", batch).await
    }

    /// `POST /devices/{id}/token`: a new token for an enrolled device (the old one stops
    /// working).
    pub async fn rotate_device_token(&self, id: &DeviceId) -> Result<DeviceCreated, Error> {
        self.send_json::<(), _>(Method::POST, &format!("/devices/{id}/token"), None).await
    }

    // ----- tokens and audit -----

    /// `GET /tokens` (admin).
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        self.get("/tokens").await
    }

    /// `POST /tokens` (admin).
    pub async fn create_token(&self, new: &NewToken) -> Result<TokenCreated, Error> {
        self.post("/tokens", new).await
    }

    /// `DELETE /tokens/{id}` (admin).
    pub async fn revoke_token(&self, id: &TokenId) -> Result<TokenInfo, Error> {
        self.send_json::<(), _>(Method::DELETE, &format!("/tokens/{id}"), None).await
    }

    /// `GET /audit`: newest first; `before` an entry's `seq` to page back.
    pub async fn audit(
        &self,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditEntry>, Error> {
        let mut query = Vec::new();
        if let Some(b) = before {
            query.push(format!("before={b}"));
        }
        if let Some(l) = limit {
            query.push(format!("limit={l}"));
        }
        let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
        self.get(&format!("/audit{query}")).await
    }

    // ----- device API -----

    /// `POST /device/checkin`: what the device runs; the answer is an offer or nothing.
    pub async fn checkin(&self, report: &CheckIn) -> Result<CheckInResponse, Error> {
        self.post("/device/checkin", report).await
    }

    /// `POST /device/events`: one step of an update.
    pub async fn event(&self, event: &NewEvent) -> Result<(), Error> {
        let path = "/device/events";
        let json = Bytes::from(serde_json::to_vec(event).map_err(|e| Error::encode(path, e))?);
        let payload =
            Payload { content_type: "application/json".into(), bytes: json, progress: None };
        self.exchange(Method::POST, &format!("{API_PREFIX}{path}"), Some(payload)).await.map(|_| ())
    }

    /// `GET` of a download URL as the server names it (server-relative, `/api/v1/...`, or
    /// absolute), from byte `from` (a `Range` request when not 0): the bytes, at most `limit`.
    /// A redirect (to a presigned object-store URL, say) is followed, without the token.
    pub async fn download(&self, url: &str, from: u64, limit: usize) -> Result<Bytes, Error> {
        let range = format!("bytes={from}-");
        let headers: &[(&str, &str)] = if from > 0 { &[("range", &range)] } else { &[] };
        let expected = if from > 0 { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
        let (mut parts, mut body) = if url.starts_with('/') {
            self.fetch(Method::GET, url, None, headers, limit).await?
        } else if url.starts_with("http://") {
            self.fetch_at(url, headers, limit).await?
        } else {
            return Err(Error::Setting(format!(
                "download URL {url:?}: not server-relative or http://"
            )));
        };
        for _ in 0..4 {
            if !parts.status.is_redirection() {
                if parts.status != expected {
                    return Err(Error::from_answer("GET", url, parts.status.as_u16(), &body));
                }
                return Ok(body);
            }
            let location = parts
                .headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .filter(|l| l.starts_with("http://") || l.starts_with('/'))
                .ok_or_else(|| Error::Broken {
                    base: self.base().to_owned(),
                    reason: format!(
                        "GET {url}: a redirect ({}) without a usable Location",
                        parts.status
                    ),
                })?
                .to_owned();
            (parts, body) = if location.starts_with('/') {
                self.fetch(Method::GET, &location, None, headers, limit).await?
            } else {
                // Another host (an object store's presigned URL): without our token.
                self.fetch_at(&location, headers, limit).await?
            };
        }
        Err(Error::Broken {
            base: self.base().to_owned(),
            reason: format!("GET {url}: too many redirects"),
        })
    }

    // ----- health -----

    /// `GET /healthz`: the process answers.
    pub async fn healthz(&self) -> Result<(), Error> {
        self.raw_ok(Method::GET, "/healthz").await
    }

    /// `GET /readyz`: the server can serve (its database and store answer).
    pub async fn readyz(&self) -> Result<(), Error> {
        self.raw_ok(Method::GET, "/readyz").await
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String, Error> {
        let reply = self.raw(Method::GET, "/metrics", None, &[]).await?;
        if reply.status != 200 {
            return Err(Error::from_answer("GET", "/metrics", reply.status, &reply.body));
        }
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    async fn raw_ok(&self, method: Method, path: &str) -> Result<(), Error> {
        let reply = self.raw(method.clone(), path, None, &[]).await?;
        if reply.status != 200 {
            return Err(Error::from_answer(method.as_str(), path, reply.status, &reply.body));
        }
        Ok(())
    }

    // ----- the plumbing -----

    /// Any request, as it is, to `path` (from the server root, e.g. `/api/v1/images`), with
    /// this client's token and a body of the given content type (`""`: no `Content-Type`
    /// header): the status, headers and body as they came. For tests of the wire itself
    /// (malformed bodies, wrong content types); everything else has a typed method.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        headers: &[(&str, &str)],
    ) -> Result<RawReply, Error> {
        let payload = body.map(|(content_type, bytes)| Payload {
            content_type: content_type.into(),
            bytes,
            progress: None,
        });
        let (parts, body) = self.fetch(method, path, payload, headers, MAX_RESPONSE).await?;
        Ok(RawReply { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.send_json::<(), T>(Method::GET, path, None).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.send_json(Method::POST, path, Some(body)).await
    }

    async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let payload = match body {
            Some(b) => {
                let json = serde_json::to_vec(b).map_err(|e| Error::encode(path, e))?;
                Some(Payload {
                    content_type: "application/json".into(),
                    bytes: Bytes::from(json),
                    progress: None,
                })
            }
            None => None,
        };
        let name = method.to_string();
        let (status, bytes) =
            self.exchange(method, &format!("{API_PREFIX}{path}"), payload).await?;
        decode(&name, path, status, &bytes)
    }

    /// Sends to one of the servers and reads the whole answer; a non-2xx status is an error.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        payload: Option<Payload>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let name = method.to_string();
        let (parts, body) = self.fetch(method, path, payload, &[], MAX_RESPONSE).await?;
        if !parts.status.is_success() {
            return Err(Error::from_answer(&name, path, parts.status.as_u16(), &body));
        }
        Ok((parts.status, body))
    }

    /// A request to `path` (from the server root) on one of the servers, with the token: the
    /// answer's head and whole body. A request that could not be delivered goes to the next
    /// server; a `GET` or `HEAD` also after a broken exchange or a 502–504 (it can be repeated
    /// harmlessly).
    async fn fetch(
        &self,
        method: Method,
        path: &str,
        payload: Option<Payload>,
        headers: &[(&str, &str)],
        limit: usize,
    ) -> Result<(hyper::http::response::Parts, Bytes), Error> {
        let repeatable = matches!(method, Method::GET | Method::HEAD);
        let mut last_error = None;
        let mut last_answer = None;
        for base in self.order() {
            let mut request =
                Request::builder().method(method.clone()).uri(format!("{base}{path}"));
            if let Some(auth) = &self.authorization {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let body = match &payload {
                Some(p) => {
                    if !p.content_type.is_empty() {
                        request = request.header(CONTENT_TYPE, p.content_type.as_str());
                    }
                    RequestBody::file(p.bytes.clone(), p.progress.clone())
                }
                None => RequestBody::empty(),
            };
            let request =
                request.body(body).map_err(|e| Error::Setting(format!("{method} {path}: {e}")))?;
            match self.round_trip(base, &method, path, request, limit).await {
                // Another replica may do better; if none does, this is the answer.
                Ok(answer) if repeatable && matches!(answer.0.status.as_u16(), 502..=504) => {
                    last_answer = Some(answer);
                }
                Ok(answer) => return Ok(answer),
                Err(e @ Error::Unreachable { .. }) => last_error = Some(e),
                Err(e @ (Error::Broken { .. } | Error::Timeout { .. })) if repeatable => {
                    last_error = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        match (last_answer, last_error) {
            (Some(answer), _) => Ok(answer),
            (None, Some(e)) => Err(e),
            (None, None) => Err(Error::Setting("no ota-server URL given".into())),
        }
    }

    /// A `GET` of an absolute URL (another host: without the token).
    async fn fetch_at(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        limit: usize,
    ) -> Result<(hyper::http::response::Parts, Bytes), Error> {
        let mut request = Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(RequestBody::empty())
            .map_err(|e| Error::Setting(format!("GET {url}: {e}")))?;
        let host = url.split('/').take(3).collect::<Vec<_>>().join("/");
        self.round_trip(&host, &Method::GET, url, request, limit).await
    }

    /// One request to `base` and its whole answer, within the timeout.
    async fn round_trip(
        &self,
        base: &str,
        method: &Method,
        path: &str,
        request: Request<RequestBody>,
        limit: usize,
    ) -> Result<(hyper::http::response::Parts, Bytes), Error> {
        let timeout = || Error::Timeout {
            base: base.to_owned(),
            what: format!("{method} {path}"),
            secs: self.timeout.as_secs(),
        };
        let response = match tokio::time::timeout(self.timeout, self.pool.request(request)).await {
            Err(_) => return Err(timeout()),
            Ok(Err(e)) => return Err(Error::transport(base, &e)),
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        match tokio::time::timeout(
            self.timeout,
            http_body_util::Limited::new(body, limit).collect(),
        )
        .await
        {
            Err(_) => Err(timeout()),
            Ok(Err(e)) => Err(Error::Broken {
                base: base.to_owned(),
                reason: format!("{method} {path}: reading the answer: {e}"),
            }),
            Ok(Ok(collected)) => Ok((parts, collected.to_bytes())),
        }
    }
}

fn decode<T: DeserializeOwned>(
    method: &str,
    path: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<T, Error> {
    // A route that answers nothing (204) decodes as unit.
    let body: &[u8] =
        if status == StatusCode::NO_CONTENT && body.is_empty() { b"null" } else { body };
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        what: format!("{method} {API_PREFIX}{path}"),
        reason: e.to_string(),
    })
}

/// [`Client`] for code that does not run async: each call runs on a small runtime of its own.
pub struct Blocking {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl std::fmt::Debug for Blocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.client.fmt(f)
    }
}

impl Blocking {
    /// Wraps `client` (made outside any runtime: [`Client::new`] connects nothing).
    ///
    /// The runtime has one worker thread of its own, so that pooled connections are looked
    /// after between calls: a connection the server closed (a restart, its keep-alive
    /// timeout) leaves the pool when it closes. On a runtime that runs only during calls, a
    /// long-lived program (the serial gateway) would send its next request on that dead
    /// connection and fail ("connection closed before message completed").
    pub fn new(client: Client) -> std::io::Result<Blocking> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        Ok(Blocking { runtime, client })
    }

    /// Runs one or more calls: `blocking.run(|c| c.images())`.
    pub fn run<'a, F: std::future::Future + 'a>(
        &'a self,
        call: impl FnOnce(&'a Client) -> F,
    ) -> F::Output {
        self.runtime.block_on(call(&self.client))
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(base_url("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://ota.local/api/v1/").unwrap(), "http://ota.local");
        assert_eq!(base_url("http://ota.local/fleet").unwrap(), "http://ota.local/fleet");
        assert!(base_url("https://ota.example").unwrap_err().to_string().contains("plain HTTP"));
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("http://").unwrap_err().to_string().contains("names no host"));
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        let err = Client::new("http://x", "  ").unwrap_err();
        assert_eq!(err.to_string(), "no API token given");
        let err = Client::new("http://x", "a\u{7f}b").unwrap_err();
        assert!(err.to_string().contains("cannot go in an HTTP header"));
        let client = Client::new("http://x", "abc-secret").unwrap();
        assert!(!format!("{client:?}").contains("abc-secret"));
        let other = client.with_token("other-secret").unwrap();
        assert_eq!(other.base(), "http://x");
    }

    #[test]
    fn an_unreachable_server_is_named_and_transient() {
        // A port nothing listens on: bind one, then drop it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client =
            Blocking::new(Client::new(&format!("127.0.0.1:{port}"), "t").unwrap()).unwrap();
        let err = client.run(|c| c.images()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot reach the ota-server at http://127.0.0.1:{port}: ")),
            "{err}"
        );
        assert!(err.is_transient());
    }
}
