//! The ota-server commands (`push`, `release`, `promote`, `rollback`, `pause`, `resume`,
//! `status`, `devices`, `device`, `audit`), each a plain function over the one typed client of
//! the API, [`ota_proto::client`], returning the server's answer. Text forms of the answers are
//! in [`report`]; enrolling devices from a CSV file is in [`enroll`].
//!
//! What this module adds to the client is what a person at a command line needs: a missing URL
//! or token is a [`MissingSetting`] (a usage mistake), a server that cannot be reached comes
//! with a hint, image ids may be given as unique prefixes, and statements for environments
//! whose key is kept offline are signed here.

pub mod enroll;
pub mod report;

use std::future::Future;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::SigningKey;
use firmware::image::{ImageId, ReleaseStatement, SignedRelease, TransportImage};
use indicatif::{ProgressBar, ProgressStyle};
use ota_proto::client::{Blocking, Bytes, Client, Error, Progress, Uploaded};
use ota_proto::{
    AuditEntry, BoardName, DeviceCreated, DeviceDetail, DeviceFilter, DeviceId, DeviceInfo,
    EnvironmentInfo, EnvironmentName, HexBytes, ImageInfo, NewDevice, NewRelease, ReleaseInfo,
    RollbackRequest,
};

use crate::keys;

/// Environment variable holding the server's URL (`--server`).
pub const SERVER_VAR: &str = "IMAGER_SERVER";
/// Environment variable holding the API token (`--token`).
pub const TOKEN_VAR: &str = "IMAGER_TOKEN";

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

/// A client for the server at `server` (`http://host:port`; `host:port` alone means plain
/// HTTP) with the bearer `token`. Either missing is a [`MissingSetting`]. Connects nothing yet.
pub fn connect(server: Option<&str>, token: Option<&str>) -> Result<Blocking> {
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
    let client = Client::new(server, token).map_err(explain)?;
    Blocking::new(client).context("cannot start the HTTP client")
}

/// A client error for a person at a command line: an unreachable server comes with where to
/// look; every other error stays an [`Error`] (so [`is_code`] can read the server's code).
pub fn explain(err: Error) -> anyhow::Error {
    match err {
        Error::Unreachable { .. } => {
            anyhow!("{err} (is it running? check --server or {SERVER_VAR})")
        }
        other => other.into(),
    }
}

/// Runs one exchange (or several) with the server; errors [`explain`]ed.
pub fn call<'a, T, F>(client: &'a Blocking, exchange: impl FnOnce(&'a Client) -> F) -> Result<T>
where
    F: Future<Output = Result<T, Error>> + 'a,
{
    client.run(exchange).map_err(explain)
}

/// Whether `err` is the server's error `code`.
pub fn is_code(err: &anyhow::Error, code: &str) -> bool {
    err.downcast_ref::<Error>().and_then(Error::code) == Some(code)
}

/// An image id as typed: all 64 hex digits, or a prefix to look up.
#[derive(Debug, PartialEq, Eq)]
enum ImageRef {
    Full(ImageId),
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
    if let Some(full) = ImageId::from_hex(&id) {
        Ok(ImageRef::Full(full))
    } else if id.len() < MIN_PREFIX {
        bail!("image id prefix {id} is too short: give at least {MIN_PREFIX} hex digits")
    } else {
        Ok(ImageRef::Prefix(id))
    }
}

/// The one id among `ids` whose hex form starts with `prefix`.
fn match_prefix(prefix: &str, ids: impl IntoIterator<Item = ImageId>) -> Result<ImageId> {
    let mut found: Vec<ImageId> =
        ids.into_iter().filter(|id| id.to_string().starts_with(prefix)).collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [] => bail!("no image on the ota-server has an id starting with {prefix}"),
        [one] => Ok(*one),
        many => {
            let shown: Vec<String> = many.iter().take(5).map(ImageId::to_string).collect();
            bail!(
                "image id prefix {prefix} is ambiguous: {} images match ({}{}); give more digits",
                many.len(),
                shown.join(", "),
                if many.len() > shown.len() { ", ..." } else { "" }
            )
        }
    }
}

/// The id of the image `text` names: 64 hex digits as they are, a shorter prefix (at least 8
/// digits) looked up among the server's images.
pub fn resolve_image(client: &Blocking, text: &str) -> Result<ImageId> {
    match image_ref(text)? {
        ImageRef::Full(id) => Ok(id),
        ImageRef::Prefix(prefix) => {
            let images = list_images(client)?;
            match_prefix(&prefix, images.iter().map(|i| i.summary.id))
        }
    }
}

/// `imager push`: uploads an image file. It must parse as an image here first, so a wrong file
/// fails before anything is sent; the server checks signatures and the board. A progress bar
/// goes to stderr when `progress` is set and stderr is a terminal.
pub fn push(client: &Blocking, file: &Path, progress: bool) -> Result<Uploaded> {
    let bytes = crate::verify::read_image_file(file)?;
    TransportImage::parse(&bytes).with_context(|| format!("{}", file.display()))?;
    let bar = if progress && std::io::stderr().is_terminal() {
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
    let shown = bar.clone();
    let sent: Progress = Arc::new(move |n| shown.set_position(n));
    let uploaded = call(client, |c| c.upload(Bytes::from(bytes), Some(sent)));
    bar.finish_and_clear();
    uploaded
}

/// `imager images`: every stored image.
pub fn list_images(client: &Blocking) -> Result<Vec<ImageInfo>> {
    call(client, |c| c.images())
}

/// `imager release`: releases an image to an environment whose key the server holds (the
/// server signs the statement).
pub fn release(client: &Blocking, env: &EnvironmentName, image: &str) -> Result<ReleaseInfo> {
    let body = NewRelease { image_id: resolve_image(client, image)?, statement: None };
    call(client, |c| c.create_release(env, &body))
}

/// `imager promote`: releases an image to `env` with a statement signed here by `key` (the
/// environment's release key), numbered with the environment's next sequence. If another
/// release took that number meanwhile, reads it again and retries once.
pub fn promote(
    client: &Blocking,
    image: &str,
    env: &EnvironmentName,
    key: &Path,
) -> Result<ReleaseInfo> {
    let signing_key = keys::read_signing_key(key)?;
    let image_id = resolve_image(client, image)?;
    retry_on_race(|| {
        let info = release_key_check(client, env, &signing_key, key)?;
        let statement = sign_statement(image_id, env, info.next_sequence, &signing_key)?;
        let body = NewRelease { image_id, statement: Some(statement) };
        call(client, |c| c.create_release(env, &body))
    })
}

/// `imager rollback`: goes back to the previous image of `env`'s current release for `board`.
/// Without a key the server signs (it must hold the environment's key); with one, the
/// statement for the server's rollback target is signed here.
pub fn rollback(
    client: &Blocking,
    env: &EnvironmentName,
    board: Option<&BoardName>,
    key: Option<&Path>,
) -> Result<ReleaseInfo> {
    let Some(key) = key else {
        let body = RollbackRequest { board: board.cloned(), statement: None };
        return call(client, |c| c.rollback(env, &body));
    };
    let signing_key = keys::read_signing_key(key)?;
    retry_on_race(|| {
        release_key_check(client, env, &signing_key, key)?;
        let target = call(client, |c| c.rollback_target(env, board))?;
        let statement = sign_statement(target.image_id, env, target.sequence, &signing_key)?;
        let body = RollbackRequest { board: Some(target.board), statement: Some(statement) };
        call(client, |c| c.rollback(env, &body))
    })
}

/// `imager pause` (`pause` true) and `imager resume`: acts on `env`'s current release for
/// `board` (which may be left out when the environment has releases for one board only).
pub fn set_paused(
    client: &Blocking,
    env: &EnvironmentName,
    board: Option<&BoardName>,
    pause: bool,
) -> Result<ReleaseInfo> {
    let info = call(client, |c| c.environment(env))?;
    let sequence = current_release(&info, board)?.sequence;
    if pause {
        call(client, |c| c.pause(env, sequence))
    } else {
        call(client, |c| c.resume(env, sequence))
    }
}

/// The environment's current release for `board`, or its only one.
fn current_release<'a>(
    info: &'a EnvironmentInfo,
    board: Option<&BoardName>,
) -> Result<&'a ReleaseInfo> {
    let env = &info.name;
    match board {
        Some(board) => {
            info.current.iter().find(|r| &r.board == board).ok_or_else(|| {
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

/// Reads `env` and checks that `signing_key` is its release key.
fn release_key_check(
    client: &Blocking,
    env: &EnvironmentName,
    signing_key: &SigningKey,
    key_path: &Path,
) -> Result<EnvironmentInfo> {
    let info = call(client, |c| c.environment(env))?;
    check_release_key(&info, signing_key, key_path)?;
    Ok(info)
}

/// Refuses to sign for an environment with a key that is not its release key.
fn check_release_key(info: &EnvironmentInfo, signing_key: &SigningKey, path: &Path) -> Result<()> {
    let public = signing_key.verifying_key();
    if public.to_bytes() == info.release_public_key.0 {
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

/// The signed statement "`env` runs `image_id`, release `sequence`".
fn sign_statement(
    image_id: ImageId,
    env: &EnvironmentName,
    sequence: u64,
    key: &SigningKey,
) -> Result<HexBytes> {
    let statement = ReleaseStatement::new(image_id, env, sequence)
        .ok_or_else(|| anyhow!("environment name {env} cannot go in a release statement"))?;
    Ok(HexBytes(SignedRelease::sign(&statement, key)))
}

/// `imager status`: one environment, or all of them, with their current releases.
pub fn environments(
    client: &Blocking,
    env: Option<&EnvironmentName>,
) -> Result<Vec<EnvironmentInfo>> {
    match env {
        Some(env) => Ok(vec![call(client, |c| c.environment(env))?]),
        None => call(client, |c| c.environments()),
    }
}

/// `imager devices`: the devices that pass `filter` and, if `image` is given (an id or a
/// unique prefix), run that image.
pub fn devices(
    client: &Blocking,
    filter: &DeviceFilter,
    image: Option<&str>,
) -> Result<Vec<DeviceInfo>> {
    let mut filter = filter.clone();
    if let Some(image) = image {
        filter.image = Some(resolve_image(client, image)?);
    }
    call(client, |c| c.devices(&filter))
}

/// `imager device add`: enrolls a device; the answer holds its token, shown only this once.
pub fn add_device(client: &Blocking, device: &NewDevice) -> Result<DeviceCreated> {
    call(client, |c| c.create_device(device))
}

/// `imager device show`: one device and its events.
pub fn device(client: &Blocking, id: &DeviceId) -> Result<DeviceDetail> {
    call(client, |c| c.device(id))
}

/// `imager audit`: the audit log, newest first, at most `limit` entries (the server's default
/// when `None`).
pub fn audit(client: &Blocking, limit: Option<u32>) -> Result<Vec<AuditEntry>> {
    call(client, |c| c.audit(None, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_proto::client::ApiError;

    const A: &str = "3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b0001";
    const B: &str = "3f2a9c0d1e2bff2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b3f2a9c0d1e2b0002";
    const C: &str = "aa00000000000000000000000000000000000000000000000000000000000000";

    fn id(hex: &str) -> ImageId {
        ImageId::from_hex(hex).unwrap()
    }

    #[test]
    fn image_refs() {
        assert_eq!(image_ref(A).unwrap(), ImageRef::Full(id(A)));
        assert_eq!(image_ref(&A.to_uppercase()).unwrap(), ImageRef::Full(id(A)));
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
        let ids = [id(A), id(B), id(C), id(A)];
        assert_eq!(match_prefix("aa000000", ids).unwrap(), id(C));
        assert_eq!(match_prefix(&B[..13], ids).unwrap(), id(B));
        let err = match_prefix("3f2a9c0d", ids).unwrap_err().to_string();
        assert!(err.contains("ambiguous: 2 images match") && err.contains(A), "{err}");
        let err = match_prefix("bb000000", ids).unwrap_err().to_string();
        assert_eq!(err, "no image on the ota-server has an id starting with bb000000");
    }

    #[test]
    fn errors_keep_their_code_and_an_unreachable_server_gets_a_hint() {
        let api: anyhow::Error = explain(
            ApiError { status: 409, code: "gate_closed".into(), message: "not yet".into() }.into(),
        );
        assert!(is_code(&api, "gate_closed") && !is_code(&api, "sequence_taken"));
        assert_eq!(api.to_string(), "not yet (gate_closed, HTTP 409)");
        let down = explain(Error::Unreachable {
            base: "http://127.0.0.1:9".into(),
            reason: "Connection refused".into(),
        });
        assert_eq!(
            down.to_string(),
            "cannot reach the ota-server at http://127.0.0.1:9: Connection refused (is it \
             running? check --server or IMAGER_SERVER)"
        );
        assert!(!is_code(&anyhow!("gate_closed"), "gate_closed"));
    }

    #[test]
    fn missing_settings_name_flag_and_variable() {
        let err = connect(None, Some("t")).unwrap_err();
        assert_eq!(
            err.downcast_ref::<MissingSetting>().unwrap().to_string(),
            "no ota-server URL given: pass --server URL or set IMAGER_SERVER"
        );
        let err = connect(Some("http://x"), Some("  ")).unwrap_err();
        assert_eq!(err.to_string(), "no API token given: pass --token TOKEN or set IMAGER_TOKEN");
        let err = connect(Some("http://x"), Some("a\u{7f}b")).unwrap_err();
        assert!(err.to_string().contains("cannot go in an HTTP header"));
        assert!(err.downcast_ref::<MissingSetting>().is_none());
        let err = connect(Some("https://x"), Some("t")).unwrap_err();
        assert!(err.to_string().contains("plain HTTP"), "{err}");
        let client = connect(Some("http://x"), Some("abc-secret")).unwrap();
        assert!(!format!("{client:?}").contains("abc-secret"));
    }

    /// prod, whose release key is `key`'s public half.
    fn env_info(key: &SigningKey, current: Vec<ReleaseInfo>) -> EnvironmentInfo {
        let public = key.verifying_key();
        EnvironmentInfo {
            release_public_key: ota_proto::PublicKey(public.to_bytes()),
            release_key_id: keys::key_id(&public),
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
        assert!(text.contains(&info.release_key_id.to_string()), "{text}");

        let prod = EnvironmentName::new("prod").unwrap();
        let bytes = sign_statement(id(A), &prod, 4, &right).unwrap().0;
        let signed = SignedRelease::parse(&bytes).unwrap();
        assert_eq!(signed.statement().sequence(), 4);
        assert_eq!(signed.statement().environment(), "prod");
        assert_eq!(signed.statement().image_id(), id(A));
        let trusted =
            firmware::image::TrustedKey::from_bytes(&right.verifying_key().to_bytes()).unwrap();
        assert!(signed.verify(&[trusted]).is_ok());
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
        let board = |name: &str| BoardName::new(name).unwrap();
        assert_eq!(current_release(&info, Some(&board("pico"))).unwrap().sequence, 4);
        let err = current_release(&info, None).unwrap_err().to_string();
        assert!(err.contains("several boards (microbit, pico); pass --board"), "{err}");
        let err = current_release(&info, Some(&board("nrf"))).unwrap_err().to_string();
        assert_eq!(err, "environment prod has no current release for board nrf");
        info.current.truncate(1);
        assert_eq!(current_release(&info, None).unwrap().board, "microbit");
    }

    #[test]
    fn one_retry_on_a_sequence_race() {
        let race = || -> anyhow::Error {
            explain(
                ApiError { status: 409, code: "sequence_taken".into(), message: "taken".into() }
                    .into(),
            )
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
