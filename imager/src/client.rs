//! The ota-server client: the management API (`{server}/api/v1`) over plain HTTP, and the
//! commands built on it (`push`, `release`, `promote`, `rollback`, `pause`, `resume`, `status`,
//! `devices`, `device`, `audit`), each a plain function returning the server's answer.
//!
//! Every request and response body is a type of [`ota_server::api`], so client and server agree
//! by construction. Text forms of the answers are in [`report`].
//!
//! Errors are specific: the server's own errors become [`ApiError`] (`message (code, HTTP
//! status)`), a missing URL or token is a [`MissingSetting`] (a usage mistake), and a server
//! that cannot be reached says so with its URL.

pub mod report;

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::SigningKey;
use firmware::image::{ImageId, ReleaseStatement, SignedRelease, TransportImage};
use indicatif::{ProgressBar, ProgressStyle};
use ota_server::api::{
    AuditEntry, DeviceCreated, DeviceDetail, DeviceInfo, EnvironmentInfo, ErrorBody, ImageInfo,
    NewDevice, NewRelease, ReleaseInfo, RollbackRequest, RollbackTarget,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use ureq::http::Response;
use ureq::{Agent, Body, SendBody};

use crate::keys;

/// Environment variable holding the server's URL (`--server`).
pub const SERVER_VAR: &str = "IMAGER_SERVER";
/// Environment variable holding the API token (`--token`).
pub const TOKEN_VAR: &str = "IMAGER_TOKEN";

/// Largest response body read: a fleet of 100,000 devices lists in well under this.
const MAX_RESPONSE: u64 = 512 << 20;

/// A connection setting that was given neither as a flag nor in the environment: a usage
/// mistake (`imager` exits with code 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingSetting {
    /// What is missing, for people.
    pub what: &'static str,
    /// The flag that sets it, with its value name.
    pub flag: &'static str,
    /// The environment variable that sets it.
    pub var: &'static str,
}

impl std::fmt::Display for MissingSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no {} given: pass {} or set {}", self.what, self.flag, self.var)
    }
}

impl std::error::Error for MissingSetting {}

/// An error the ota-server answered with (a 4xx or 5xx status and an [`ErrorBody`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The server's stable error code (`not_found`, `gate_closed`, ...).
    pub code: String,
    /// The server's explanation.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for ApiError {}

/// A connection to one ota-server's management API, with one token.
pub struct Client {
    agent: Agent,
    /// The server's base URL, without a trailing slash.
    base: String,
    /// `Bearer TOKEN`.
    authorization: String,
}

impl std::fmt::Debug for Client {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the server at `server` (`http://host:port`; `host:port` alone means plain
    /// HTTP) with the bearer `token`. Either missing is a [`MissingSetting`].
    pub fn new(server: Option<&str>, token: Option<&str>) -> Result<Client> {
        let server = server.map(str::trim).filter(|s| !s.is_empty()).ok_or(MissingSetting {
            what: "ota-server URL",
            flag: "--server URL",
            var: SERVER_VAR,
        })?;
        let token = token.map(str::trim).filter(|s| !s.is_empty()).ok_or(MissingSetting {
            what: "API token",
            flag: "--token TOKEN",
            var: TOKEN_VAR,
        })?;
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the API token holds spaces or characters that cannot go in an HTTP header");
        }
        let config = Agent::config_builder()
            // Error statuses carry an ErrorBody: read it rather than stopping at the status.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .user_agent(concat!("imager/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: config.into(),
            base: base_url(server)?,
            authorization: format!("Bearer {token}"),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1{path}?query`, decoded.
    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        let request = self
            .agent
            .get(self.url(path))
            .header("Authorization", &self.authorization)
            .query_pairs(query.iter().copied());
        let (_, body) = self.finish("GET", path, request.call())?;
        decode("GET", path, &body)
    }

    /// `POST /api/v1{path}` with a JSON body (or none), decoded; also returns the status.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<(u16, T)> {
        let request = self.agent.post(self.url(path)).header("Authorization", &self.authorization);
        let answer = match body {
            Some(body) => {
                let json = serde_json::to_vec(body).context("cannot encode the request")?;
                request.content_type("application/json").send(&json)
            }
            None => request.send_empty(),
        };
        let (status, body) = self.finish("POST", path, answer)?;
        Ok((status, decode("POST", path, &body)?))
    }

    /// `POST /api/v1{path}` with a JSON body, for answers without a body (204).
    pub fn post_quiet<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        let json = serde_json::to_vec(body).context("cannot encode the request")?;
        let answer = self
            .agent
            .post(self.url(path))
            .header("Authorization", &self.authorization)
            .content_type("application/json")
            .send(&json);
        self.finish("POST", path, answer).map(|_| ())
    }

    /// `GET` of a server-relative URL as the server names them (`/api/v1/...`), from byte
    /// `from` (a `Range` request when not 0): the bytes, at most `limit` of them.
    pub fn download(&self, url: &str, from: u64, limit: u64) -> Result<Vec<u8>> {
        if !url.starts_with('/') {
            bail!("the server named a download URL that is not server-relative: {url:?}");
        }
        let mut request = self
            .agent
            .get(format!("{}{url}", self.base))
            .header("Authorization", &self.authorization);
        if from > 0 {
            request = request.header("Range", format!("bytes={from}-"));
        }
        let mut response = request.call().map_err(|err| self.transport_error(err))?;
        let status = response.status().as_u16();
        let expected = if from > 0 { 206 } else { 200 };
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|err| self.transport_error(err))?;
        if status != expected {
            return Err(status_error(status, &body, "GET", url));
        }
        Ok(body)
    }

    /// `POST /api/v1/images` with an image file's bytes; a progress bar on stderr when
    /// `progress` is set. Returns the status (201 new, 200 already stored) and the image.
    pub fn upload(&self, bytes: &[u8], progress: bool) -> Result<(u16, ImageInfo)> {
        let path = "/images";
        let bar = if progress {
            let bar = ProgressBar::new(bytes.len() as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "uploading [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut reader = bar.wrap_read(bytes);
        let answer = self
            .agent
            .post(self.url(path))
            .header("Authorization", &self.authorization)
            .header("Content-Length", bytes.len().to_string())
            .content_type("application/octet-stream")
            .send(SendBody::from_reader(&mut reader as &mut dyn Read));
        bar.finish_and_clear();
        let (status, body) = self.finish("POST", path, answer)?;
        Ok((status, decode("POST", path, &body)?))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// The status and body of a successful answer; every failure as a specific error.
    fn finish(
        &self,
        method: &str,
        path: &str,
        answer: Result<Response<Body>, ureq::Error>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut response = answer.map_err(|err| self.transport_error(err))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|err| self.transport_error(err))?;
        if !(200..300).contains(&status) {
            return Err(status_error(status, &body, method, path));
        }
        Ok((status, body))
    }

    fn transport_error(&self, err: ureq::Error) -> anyhow::Error {
        transport_error(&self.base, &err)
    }
}

/// The base URL from what the user gave: `http://` added when no scheme is given, trailing
/// slashes and a trailing `/api/v1` dropped.
fn base_url(server: &str) -> Result<String> {
    let url = if server.contains("://") { server.to_owned() } else { format!("http://{server}") };
    if !url.starts_with("http://") {
        bail!(
            "ota-server URL {server}: imager speaks plain HTTP (http://HOST:PORT); put a TLS \
             proxy in front of it on this side, or use the server's plain listener"
        );
    }
    let mut url = url.trim_end_matches('/');
    if let Some(stripped) = url.strip_suffix("/api/v1") {
        url = stripped;
    }
    if url.len() <= "http://".len() {
        bail!("ota-server URL {server} names no host");
    }
    Ok(url.to_owned())
}

/// A transport failure, named: the server cannot be reached, or the exchange broke.
fn transport_error(base: &str, err: &ureq::Error) -> anyhow::Error {
    let unreachable = |why: &dyn std::fmt::Display| {
        anyhow!(
            "cannot reach the ota-server at {base}: {why} (is it running? check --server or {SERVER_VAR})"
        )
    };
    match err {
        ureq::Error::Io(io) => unreachable(io),
        ureq::Error::HostNotFound => unreachable(&"host not found"),
        ureq::Error::ConnectionFailed => unreachable(&"connection failed"),
        ureq::Error::Timeout(timeout) => unreachable(&format!("timed out ({timeout})")),
        other => anyhow!("the exchange with the ota-server at {base} failed: {other}"),
    }
}

/// The error for a 4xx/5xx answer: the server's [`ErrorBody`] as an [`ApiError`], or, for any
/// other body (a proxy's page, say), the status with the start of the body.
fn status_error(status: u16, body: &[u8], method: &str, path: &str) -> anyhow::Error {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return ApiError { status, code: error.code, message: error.message }.into();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let excerpt: String = text.chars().take(200).collect();
    let more = if excerpt.len() < text.len() { "..." } else { "" };
    let sep = if excerpt.is_empty() { "" } else { ": " };
    anyhow!("the ota-server answered HTTP {status} to {method} /api/v1{path}{sep}{excerpt}{more}")
}

fn decode<T: DeserializeOwned>(method: &str, path: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|err| {
        anyhow!("unexpected answer from the ota-server to {method} /api/v1{path}: {err}")
    })
}

/// One path segment, percent-encoded (names come from the command line).
fn segment(what: &str, text: &str) -> Result<String> {
    if text.is_empty() {
        bail!("the {what} must not be empty");
    }
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-_~:".contains(&b);
    let dots_only = text.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if keep(b) || (b == b'.' && !dots_only) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// `/environments/{env}` and what follows.
fn env_path(env: &str, rest: &str) -> Result<String> {
    Ok(format!("/environments/{}{rest}", segment("environment name", env)?))
}

/// An image id as typed: all 64 hex digits, or a prefix to look up.
#[derive(Debug, PartialEq, Eq)]
enum ImageRef {
    Full(String),
    Prefix(String),
}

/// Shortest image id prefix accepted.
const MIN_PREFIX: usize = 8;

fn image_ref(text: &str) -> Result<ImageRef> {
    let id = text.trim().to_ascii_lowercase();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{text:?} is not an image id: expected 64 hex digits, or a unique prefix of at least \
             {MIN_PREFIX}"
        );
    }
    if id.len() == 64 {
        Ok(ImageRef::Full(id))
    } else if id.len() < MIN_PREFIX {
        bail!("image id prefix {id} is too short: give at least {MIN_PREFIX} hex digits")
    } else {
        Ok(ImageRef::Prefix(id))
    }
}

/// The one id among `ids` that starts with `prefix`.
fn match_prefix<'a>(prefix: &str, ids: impl IntoIterator<Item = &'a str>) -> Result<String> {
    let mut found: Vec<&str> = ids.into_iter().filter(|id| id.starts_with(prefix)).collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [] => bail!("no image on the ota-server has an id starting with {prefix}"),
        [one] => Ok((*one).to_owned()),
        many => {
            let shown: Vec<&str> = many.iter().take(5).copied().collect();
            bail!(
                "image id prefix {prefix} is ambiguous: {} images match ({}{}); give more digits",
                many.len(),
                shown.join(", "),
                if many.len() > shown.len() { ", ..." } else { "" }
            )
        }
    }
}

/// The full id of the image `text` names: 64 hex digits as they are, a shorter prefix (at least
/// 8 digits) looked up among the server's images.
pub fn resolve_image(client: &Client, text: &str) -> Result<String> {
    match image_ref(text)? {
        ImageRef::Full(id) => Ok(id),
        ImageRef::Prefix(prefix) => {
            let images = list_images(client)?;
            match_prefix(&prefix, images.iter().map(|i| i.summary.id.as_str()))
        }
    }
}

/// An uploaded image and whether the server stored it just now.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The stored image.
    pub image: ImageInfo,
    /// True when this upload stored it (201); false when it was there already (200).
    pub new: bool,
}

/// `imager push`: uploads an image file. It must parse as an image here first, so a wrong file
/// fails before anything is sent; the server checks signatures and the board.
pub fn push(client: &Client, file: &Path, progress: bool) -> Result<Pushed> {
    let bytes = crate::verify::read_image_file(file)?;
    TransportImage::parse(&bytes).with_context(|| format!("{}", file.display()))?;
    let (status, image) = client.upload(&bytes, progress && std::io::stderr().is_terminal())?;
    Ok(Pushed { image, new: status == 201 })
}

/// `imager images`: every stored image.
pub fn list_images(client: &Client) -> Result<Vec<ImageInfo>> {
    client.get("/images", &[])
}

/// `imager release`: releases an image to an environment whose key the server holds (the
/// server signs the statement).
pub fn release(client: &Client, env: &str, image: &str) -> Result<ReleaseInfo> {
    let image_id = resolve_image(client, image)?;
    let body = NewRelease { image_id, statement: None };
    Ok(client.post(&env_path(env, "/releases")?, Some(&body))?.1)
}

/// `imager promote`: releases an image to `env` with a statement signed here by `key` (the
/// environment's release key), numbered with the environment's next sequence. If another
/// release took that number meanwhile, reads it again and retries once.
pub fn promote(client: &Client, image: &str, env: &str, key: &Path) -> Result<ReleaseInfo> {
    let signing_key = keys::read_signing_key(key)?;
    let image_id = resolve_image(client, image)?;
    let path = env_path(env, "/releases")?;
    retry_on_race(|| {
        let info = release_key_check(client, env, &signing_key, key)?;
        let statement = sign_statement(&image_id, env, info.next_sequence, &signing_key)?;
        let body = NewRelease { image_id: image_id.clone(), statement: Some(statement) };
        Ok(client.post(&path, Some(&body))?.1)
    })
}

/// `imager rollback`: goes back to the previous image of `env`'s current release for `board`.
/// Without a key the server signs (it must hold the environment's key); with one, the
/// statement for the server's rollback target is signed here.
pub fn rollback(
    client: &Client,
    env: &str,
    board: Option<&str>,
    key: Option<&Path>,
) -> Result<ReleaseInfo> {
    let path = env_path(env, "/rollback")?;
    let Some(key) = key else {
        let body = RollbackRequest { board: board.map(str::to_owned), statement: None };
        return Ok(client.post(&path, Some(&body))?.1);
    };
    let signing_key = keys::read_signing_key(key)?;
    retry_on_race(|| {
        release_key_check(client, env, &signing_key, key)?;
        let query: Vec<(&str, &str)> = board.map(|b| ("board", b)).into_iter().collect();
        let target: RollbackTarget = client.get(&path, &query)?;
        let statement = sign_statement(&target.image_id, env, target.sequence, &signing_key)?;
        let body = RollbackRequest { board: Some(target.board), statement: Some(statement) };
        Ok(client.post(&path, Some(&body))?.1)
    })
}

/// `imager pause` (`pause` true) and `imager resume`: acts on `env`'s current release for
/// `board` (which may be left out when the environment has releases for one board only).
pub fn set_paused(
    client: &Client,
    env: &str,
    board: Option<&str>,
    pause: bool,
) -> Result<ReleaseInfo> {
    let info: EnvironmentInfo = client.get(&env_path(env, "")?, &[])?;
    let current = current_release(&info, board)?;
    let action = if pause { "pause" } else { "resume" };
    let path = env_path(env, &format!("/releases/{}/{action}", current.sequence))?;
    Ok(client.post::<(), _>(&path, None)?.1)
}

/// The environment's current release for `board`, or its only one.
fn current_release<'a>(info: &'a EnvironmentInfo, board: Option<&str>) -> Result<&'a ReleaseInfo> {
    let env = &info.name;
    match board {
        Some(board) => {
            info.current.iter().find(|r| r.board == board).ok_or_else(|| {
                anyhow!("environment {env} has no current release for board {board}")
            })
        }
        None => match info.current.as_slice() {
            [] => bail!("environment {env} has no current release"),
            [one] => Ok(one),
            many => {
                let boards: Vec<&str> = many.iter().map(|r| r.board.as_str()).collect();
                bail!(
                    "environment {env} has releases for several boards ({}); pass --board",
                    boards.join(", ")
                )
            }
        },
    }
}

/// Runs `attempt`; if the server answers `sequence_taken` (another release took the number),
/// runs it once more.
fn retry_on_race(mut attempt: impl FnMut() -> Result<ReleaseInfo>) -> Result<ReleaseInfo> {
    match attempt() {
        Err(err) if is_code(&err, "sequence_taken") => {
            eprintln!("note: {err}; reading the next sequence again and retrying once");
            attempt()
        }
        other => other,
    }
}

/// Whether `err` is the server's error `code`.
pub fn is_code(err: &anyhow::Error, code: &str) -> bool {
    err.downcast_ref::<ApiError>().is_some_and(|e| e.code == code)
}

/// Reads `env` and checks that `signing_key` is its release key.
fn release_key_check(
    client: &Client,
    env: &str,
    signing_key: &SigningKey,
    key_path: &Path,
) -> Result<EnvironmentInfo> {
    let info: EnvironmentInfo = client.get(&env_path(env, "")?, &[])?;
    check_release_key(&info, signing_key, key_path)?;
    Ok(info)
}

/// Refuses to sign for an environment with a key that is not its release key.
fn check_release_key(info: &EnvironmentInfo, signing_key: &SigningKey, path: &Path) -> Result<()> {
    let public = signing_key.verifying_key();
    if hex::encode(public.to_bytes()).eq_ignore_ascii_case(info.release_public_key.trim()) {
        return Ok(());
    }
    bail!(
        "{} is not the release key of environment {}: its public key has id {}, {} takes \
         releases signed by key id {}; nothing was signed or sent",
        path.display(),
        info.name,
        keys::key_id(&public),
        info.name,
        info.release_key_id
    )
}

/// The signed statement "`env` runs `image_id`, release `sequence`", hex.
fn sign_statement(image_id: &str, env: &str, sequence: u64, key: &SigningKey) -> Result<String> {
    let id = ImageId::from_hex(image_id)
        .ok_or_else(|| anyhow!("the ota-server named image {image_id:?}, not a 64-hex image id"))?;
    let statement = ReleaseStatement::new(id, env, sequence).ok_or_else(|| {
        anyhow!("{env:?} is not a valid environment name (1 to 32 characters of [a-z0-9_-])")
    })?;
    Ok(hex::encode(SignedRelease::sign(&statement, key)))
}

/// `imager status`: one environment, or all of them, with their current releases.
pub fn environments(client: &Client, env: Option<&str>) -> Result<Vec<EnvironmentInfo>> {
    match env {
        Some(env) => Ok(vec![client.get(&env_path(env, "")?, &[])?]),
        None => client.get("/environments", &[]),
    }
}

/// Which devices `imager devices` lists; `None` means any.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    /// Environment.
    pub environment: Option<String>,
    /// State (`unseen`, `current`, `updating`, `waiting`, `failed`).
    pub state: Option<String>,
    /// Image running, id or unique prefix.
    pub image: Option<String>,
    /// Board.
    pub board: Option<String>,
}

/// `imager devices`: the devices that pass `filter`.
pub fn devices(client: &Client, filter: &DeviceFilter) -> Result<Vec<DeviceInfo>> {
    let image = filter.image.as_deref().map(|i| resolve_image(client, i)).transpose()?;
    let query: Vec<(&str, &str)> = [
        ("environment", filter.environment.as_deref()),
        ("state", filter.state.as_deref()),
        ("image", image.as_deref()),
        ("board", filter.board.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect();
    client.get("/devices", &query)
}

/// `imager device add`: enrolls a device; the answer holds its token, shown only this once.
pub fn add_device(client: &Client, device: &NewDevice) -> Result<DeviceCreated> {
    Ok(client.post("/devices", Some(device))?.1)
}

/// `imager device show`: one device and its events.
pub fn device(client: &Client, id: &str) -> Result<DeviceDetail> {
    client.get(&format!("/devices/{}", segment("device id", id)?), &[])
}

/// `imager audit`: the audit log, newest first, at most `limit` entries (the server's default
/// when `None`).
pub fn audit(client: &Client, limit: Option<u32>) -> Result<Vec<AuditEntry>> {
    let limit = limit.map(|n| n.to_string());
    let query: Vec<(&str, &str)> = limit.as_deref().map(|n| ("limit", n)).into_iter().collect();
    client.get("/audit", &query)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b0001";
    const B: &str = "3f2a9c0d1e2bff2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b0002";
    const C: &str = "aa00000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn image_refs() {
        assert_eq!(image_ref(A).unwrap(), ImageRef::Full(A.into()));
        assert_eq!(image_ref(&A.to_uppercase()).unwrap(), ImageRef::Full(A.into()));
        assert_eq!(image_ref("3F2A9C0D").unwrap(), ImageRef::Prefix("3f2a9c0d".into()));
        let short = image_ref("3f2a9c0").unwrap_err().to_string();
        assert!(short.contains("too short") && short.contains("at least 8"), "{short}");
        for bad in ["", "xyz12345", "3f2a-9c0d", &format!("{A}0")] {
            let err = image_ref(bad).unwrap_err().to_string();
            assert!(err.contains("is not an image id"), "{bad}: {err}");
        }
    }

    #[test]
    fn prefixes_must_be_unique() {
        let ids = [A, B, C, A];
        assert_eq!(match_prefix("aa000000", ids).unwrap(), C);
        assert_eq!(match_prefix(&B[..13], ids).unwrap(), B);
        let err = match_prefix("3f2a9c0d", ids).unwrap_err().to_string();
        assert!(err.contains("ambiguous: 2 images match") && err.contains(A), "{err}");
        let err = match_prefix("bb000000", ids).unwrap_err().to_string();
        assert_eq!(err, "no image on the ota-server has an id starting with bb000000");
    }

    #[test]
    fn server_errors_read_as_message_code_status() {
        let body = br#"{"error":{"code":"gate_closed","message":"image not confirmed in test"}}"#;
        let err = status_error(409, body, "POST", "/environments/prod/releases");
        assert_eq!(err.to_string(), "image not confirmed in test (gate_closed, HTTP 409)");
        assert!(is_code(&err, "gate_closed") && !is_code(&err, "sequence_taken"));

        let err = status_error(502, b"<html>Bad gateway</html>\n", "GET", "/images");
        assert_eq!(
            err.to_string(),
            "the ota-server answered HTTP 502 to GET /api/v1/images: <html>Bad gateway</html>"
        );
        let err = status_error(404, b"", "GET", "/nope");
        assert_eq!(err.to_string(), "the ota-server answered HTTP 404 to GET /api/v1/nope");
        let long = "x".repeat(500);
        let err = status_error(500, long.as_bytes(), "GET", "/images").to_string();
        assert!(err.ends_with("...") && err.len() < 300, "{err}");
    }

    #[test]
    fn transport_errors_name_the_server() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = transport_error("http://127.0.0.1:9", &ureq::Error::Io(refused)).to_string();
        assert!(err.starts_with("cannot reach the ota-server at http://127.0.0.1:9: "), "{err}");
        let err = transport_error("http://h:1", &ureq::Error::HostNotFound).to_string();
        assert!(err.starts_with("cannot reach the ota-server at http://h:1: host not found"));
    }

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
    fn missing_settings_name_flag_and_variable() {
        let err = Client::new(None, Some("t")).unwrap_err();
        assert_eq!(
            err.downcast_ref::<MissingSetting>().unwrap().to_string(),
            "no ota-server URL given: pass --server URL or set IMAGER_SERVER"
        );
        let err = Client::new(Some("http://x"), Some("  ")).unwrap_err();
        assert_eq!(err.to_string(), "no API token given: pass --token TOKEN or set IMAGER_TOKEN");
        let err = Client::new(Some("http://x"), Some("a\u{7f}b")).unwrap_err();
        assert!(err.to_string().contains("cannot go in an HTTP header"));
        let client = Client::new(Some("http://x"), Some("abc-secret")).unwrap();
        assert!(!format!("{client:?}").contains("abc-secret"));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("x", "dev-1_a:b.c~").unwrap(), "dev-1_a:b.c~");
        assert_eq!(segment("x", "a/b?c d#").unwrap(), "a%2Fb%3Fc%20d%23");
        assert_eq!(segment("x", "..").unwrap(), "%2E%2E");
        assert_eq!(segment("x", "é").unwrap(), "%C3%A9");
        assert_eq!(
            segment("device id", "").unwrap_err().to_string(),
            "the device id must not be empty"
        );
        assert_eq!(env_path("prod", "/rollback").unwrap(), "/environments/prod/rollback");
    }

    /// prod, whose release key is `key`'s public half.
    fn env_info(key: &SigningKey, current: Vec<ReleaseInfo>) -> EnvironmentInfo {
        let public = key.verifying_key();
        EnvironmentInfo {
            release_public_key: hex::encode(public.to_bytes()),
            release_key_id: keys::key_id(&public).to_string(),
            server_holds_key: false,
            ..report::tests::env("prod", current)
        }
    }

    #[test]
    fn only_the_environments_key_signs() {
        let right = SigningKey::from_bytes(&[1; 32]);
        let wrong = SigningKey::from_bytes(&[2; 32]);
        let info = env_info(&right, vec![]);
        check_release_key(&info, &right, Path::new("prod.pem")).unwrap();
        let err = check_release_key(&info, &wrong, Path::new("wrong.pem")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("wrong.pem is not the release key of environment prod"), "{text}");
        assert!(text.contains(&info.release_key_id), "{text}");

        let hex = sign_statement(A, "prod", 4, &right).unwrap();
        let bytes = hex::decode(hex).unwrap();
        let signed = SignedRelease::parse(&bytes).unwrap();
        assert_eq!(signed.statement().sequence(), 4);
        assert_eq!(signed.statement().environment(), "prod");
        assert_eq!(signed.statement().image_id().to_string(), A);
        let trusted =
            firmware::image::TrustedKey::from_bytes(&right.verifying_key().to_bytes()).unwrap();
        assert!(signed.verify(&[trusted]).is_ok());
        assert!(sign_statement("abc", "prod", 4, &right).is_err());
        assert!(sign_statement(A, "Prod!", 4, &right).unwrap_err().to_string().contains("valid"));
    }

    #[test]
    fn current_release_by_board() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut info = env_info(&key, vec![]);
        assert_eq!(
            current_release(&info, None).unwrap_err().to_string(),
            "environment prod has no current release"
        );
        info.current =
            vec![report::tests::release("microbit", 3), report::tests::release("pico", 4)];
        assert_eq!(current_release(&info, Some("pico")).unwrap().sequence, 4);
        let err = current_release(&info, None).unwrap_err().to_string();
        assert!(err.contains("several boards (microbit, pico); pass --board"), "{err}");
        let err = current_release(&info, Some("nrf")).unwrap_err().to_string();
        assert_eq!(err, "environment prod has no current release for board nrf");
        info.current.truncate(1);
        assert_eq!(current_release(&info, None).unwrap().board, "microbit");
    }

    #[test]
    fn one_retry_on_a_sequence_race() {
        let race = || -> anyhow::Error {
            ApiError { status: 409, code: "sequence_taken".into(), message: "taken".into() }.into()
        };
        let mut calls = 0;
        let result = retry_on_race(|| {
            calls += 1;
            if calls == 1 { Err(race()) } else { Ok(report::tests::release("microbit", 5)) }
        });
        assert_eq!(result.unwrap().sequence, 5);
        assert_eq!(calls, 2);
        let mut calls = 0;
        let result = retry_on_race(|| {
            calls += 1;
            Err(race())
        });
        assert!(is_code(&result.unwrap_err(), "sequence_taken"));
        assert_eq!(calls, 2);
        let mut calls = 0;
        let _ = retry_on_race(|| {
            calls += 1;
            Err(anyhow!("other"))
        });
        assert_eq!(calls, 1);
    }
}
