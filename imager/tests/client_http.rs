//! The ota-server client over real HTTP, against a scripted stand-in server on loopback: what
//! it sends (routes, headers, bodies, signed statements) and how it reads every kind of answer.
//! (`tests/tests/imager_client.rs` runs the commands against the real server.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use firmware::image::{ImageId, ImageSummary, SignedRelease, TransportImage, TrustedKey};
use imager::client;
use ota_proto::client::{ApiError, Blocking, Error};
use ota_proto::{
    DeviceFilter, DeviceState, DeviceToken, DevicesEnrolled, EnvironmentInfo, HexBytes, ImageInfo,
    NewDevices, NewRelease, PublicKey, ReleaseInfo, ReleaseKind, RollbackRequest, RollbackTarget,
    RolloutProgress, RolloutSettings, RolloutState, Sha256,
};
use pkcs8::{EncodePrivateKey, LineEnding};
use serde::Serialize;
use tempfile::TempDir;

/// One request as the stand-in server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A server that answers each connection's one request with the next scripted answer.
struct Stand {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stand {
    fn new(answers: Vec<(u16, String)>) -> Stand {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let Ok((stream, _)) = listener.accept() else { return };
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let target = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap();
                    headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
                }
                let len = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut request_body = vec![0; len];
                reader.read_exact(&mut request_body).unwrap();
                log.lock().unwrap().push(Seen { method, target, headers, body: request_body });
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: \
                     {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Stand { url, seen }
    }

    fn client(&self) -> Blocking {
        client::connect(Some(&self.url), Some("secret-token")).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap()
}

fn error(code: &str, message: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#)
}

const ID: &str = "3f2a9c0d1e2b44556677889900aabbccddeeff00112233445566778899aabbcc";
const OTHER: &str = "77aa9c0d1e2b44556677889900aabbccddeeff00112233445566778899aabbcc";

fn id(hex: &str) -> ImageId {
    ImageId::from_hex(hex).unwrap()
}

fn noon() -> ota_proto::Timestamp {
    "2026-05-01T12:00:00.000Z".parse().unwrap()
}

fn environment(key: &SigningKey, next_sequence: u64) -> EnvironmentInfo {
    let public = key.verifying_key();
    EnvironmentInfo {
        name: "prod".parse().unwrap(),
        upstream: Some("test".parse().unwrap()),
        rollout: RolloutSettings { stages: vec![5, 100], ..RolloutSettings::default() },
        release_public_key: PublicKey(public.to_bytes()),
        release_key_id: imager::keys::key_id(&public),
        server_holds_key: false,
        next_sequence,
        devices: 3,
        current: vec![],
    }
}

fn release(image_id: &str, sequence: u64, kind: ReleaseKind) -> ReleaseInfo {
    ReleaseInfo {
        environment: "prod".parse().unwrap(),
        sequence,
        image_id: id(image_id),
        board: "microbit".parse().unwrap(),
        version: "1.0.0".into(),
        kind,
        statement: HexBytes::default(),
        created_at: noon(),
        created_by: "release".into(),
        state: RolloutState::Rolling,
        reason: None,
        stage: 0,
        stages: vec![5, 100],
        progress: RolloutProgress::default(),
    }
}

/// Writes `key` as a PKCS#8 PEM file.
fn key_file(dir: &TempDir, name: &str, key: &SigningKey) -> PathBuf {
    let path = dir.path().join(name);
    let pair = ed25519_dalek::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None };
    std::fs::write(&path, pair.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    path
}

/// Checks a signed statement: environment, image, sequence, and the key.
fn check_statement(statement: &HexBytes, key: &SigningKey, image_id: &str, sequence: u64) {
    let signed = SignedRelease::parse(&statement.0).unwrap();
    assert_eq!(signed.statement().environment(), "prod");
    assert_eq!(signed.statement().image_id(), id(image_id));
    assert_eq!(signed.statement().sequence(), sequence);
    let trusted = TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap();
    signed.verify(&[trusted]).unwrap();
}

#[test]
fn push_sends_the_file_and_tells_new_from_stored() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let fixtures = root.join("tests/fixtures/microbit");
    let prefix = dir.path().join("build");
    let image = dir.path().join("app.fwi");
    let imager = env!("CARGO_BIN_EXE_imager");
    let out = Command::new(imager).arg("keygen").arg("--out").arg(&prefix).output().unwrap();
    assert!(out.status.success());
    let out = Command::new(imager)
        .args(["fuse", "--board", "microbit", "--version", "1.0.0"])
        .arg("--os")
        .arg(fixtures.join("os.elf"))
        .arg("--app")
        .arg(fixtures.join("app.elf"))
        .arg("--key")
        .arg(dir.path().join("build.pem"))
        .arg("--out")
        .arg(&image)
        .env_remove("IMAGER_BOARDS")
        .output()
        .unwrap();
    assert!(out.status.success());
    let bytes = std::fs::read(&image).unwrap();
    let summary = ImageSummary::of(&TransportImage::parse(&bytes).unwrap(), bytes.len());
    let info = ImageInfo {
        summary,
        file_sha256: Sha256([0; 32]),
        uploaded_at: noon(),
        uploaded_by: "ci".into(),
    };

    let stand = Stand::new(vec![(201, json(&info)), (200, json(&info))]);
    let client = stand.client();
    let pushed = client::push(&client, &image, false).unwrap();
    assert!(pushed.new);
    assert_eq!(pushed.image.summary.id, info.summary.id);
    assert!(!client::push(&client, &image, false).unwrap().new);
    let seen = stand.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("POST", "/api/v1/images"));
    assert_eq!(seen[0].header("authorization"), Some("Bearer secret-token"));
    assert_eq!(seen[0].header("content-type"), Some("application/octet-stream"));
    assert_eq!(seen[0].header("content-length"), Some(bytes.len().to_string().as_str()));
    assert_eq!(seen[0].body, bytes);
    let text = client::report::pushed(&pushed);
    assert!(text.starts_with(&format!("image {}: new, stored\n", info.summary.id)), "{text}");

    // Not an image: refused here, nothing sent.
    let elf = fixtures.join("os.elf");
    let err = format!("{:#}", client::push(&client, &elf, false).unwrap_err());
    assert!(err.starts_with(&format!("{}: ", elf.display())), "{err}");
    assert_eq!(stand.seen().len(), 2);
}

#[test]
fn server_errors_keep_message_code_and_status() {
    let stand = Stand::new(vec![
        (409, error("gate_closed", "image 3f2a9c0d1e2b is not confirmed in test")),
        (502, "<html>bad gateway</html>".into()),
        (200, "not json".into()),
    ]);
    let client = stand.client();
    let prod = "prod".parse().unwrap();
    let err = client::release(&client, &prod, ID).unwrap_err();
    let Some(Error::Api(api)) = err.downcast_ref::<Error>() else { panic!("{err:?}") };
    assert_eq!(
        api,
        &ApiError {
            status: 409,
            code: "gate_closed".into(),
            message: "image 3f2a9c0d1e2b is not confirmed in test".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "image 3f2a9c0d1e2b is not confirmed in test (gate_closed, HTTP 409)"
    );
    let err = client::audit(&client, Some(5)).unwrap_err().to_string();
    assert_eq!(
        err,
        "the ota-server answered HTTP 502 to GET /api/v1/audit?limit=5: <html>bad gateway</html>"
    );
    let err = client::environments(&client, None).unwrap_err().to_string();
    assert!(err.starts_with("unexpected answer from the ota-server to GET /api/v1/environments"));
    let seen = stand.seen();
    let body: NewRelease = seen[0].json();
    assert_eq!((body.image_id, body.statement), (id(ID), None));
    assert_eq!(seen[0].target, "/api/v1/environments/prod/releases");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(seen[1].target, "/api/v1/audit?limit=5");
}

#[test]
fn promote_signs_the_next_sequence_and_retries_a_race_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let path = key_file(&dir, "prod.pem", &key);
    let images = vec![ImageInfo {
        summary: ImageSummary {
            id: id(ID),
            board: "microbit".into(),
            version: "1.0.0".into(),
            security_counter: 0,
            format_version: 1,
            header_size: 0,
            manifest_size: 0,
            file_size: 0,
            installed_size: 0,
            components: vec![],
            signatures: vec![],
        },
        file_sha256: Sha256([0; 32]),
        uploaded_at: noon(),
        uploaded_by: String::new(),
    }];
    let stand = Stand::new(vec![
        (200, json(&images)),
        (200, json(&environment(&key, 4))),
        (409, error("sequence_taken", "sequence 4 is taken")),
        (200, json(&environment(&key, 5))),
        (201, json(&release(ID, 5, ReleaseKind::Release))),
    ]);
    let prod = "prod".parse().unwrap();
    let done = client::promote(&stand.client(), "3f2a9c0d", &prod, &path).unwrap();
    assert_eq!(done.sequence, 5);
    let seen = stand.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/api/v1/images",
            "/api/v1/environments/prod",
            "/api/v1/environments/prod/releases",
            "/api/v1/environments/prod",
            "/api/v1/environments/prod/releases",
        ]
    );
    for (post, sequence) in [(&seen[2], 4), (&seen[4], 5)] {
        let body: NewRelease = post.json();
        assert_eq!(body.image_id, id(ID));
        check_statement(&body.statement.unwrap(), &key, ID, sequence);
    }
}

#[test]
fn promote_with_another_key_signs_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let wrong = key_file(&dir, "wrong.pem", &SigningKey::from_bytes(&[10; 32]));
    let stand = Stand::new(vec![(200, json(&environment(&key, 4)))]);
    let prod = "prod".parse().unwrap();
    let err = client::promote(&stand.client(), ID, &prod, &wrong).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{} is not the release key of environment prod", wrong.display())),
        "{err}"
    );
    assert_eq!(stand.seen().len(), 1);
}

#[test]
fn rollback_signs_the_servers_target() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let path = key_file(&dir, "prod.pem", &key);
    let microbit = "microbit".parse().unwrap();
    let target = RollbackTarget { board: microbit, image_id: id(OTHER), sequence: 8 };
    let stand = Stand::new(vec![
        (200, json(&environment(&key, 8))),
        (200, json(&target)),
        (201, json(&release(OTHER, 8, ReleaseKind::Rollback))),
        (201, json(&release(OTHER, 9, ReleaseKind::Rollback))),
    ]);
    let client = stand.client();
    let prod = "prod".parse().unwrap();
    let done = client::rollback(&client, &prod, Some(&target.board), Some(&path)).unwrap();
    assert_eq!((done.kind, done.sequence), (ReleaseKind::Rollback, 8));
    client::rollback(&client, &prod, None, None).unwrap();
    let seen = stand.seen();
    assert_eq!(seen[1].target, "/api/v1/environments/prod/rollback?board=microbit");
    assert_eq!(seen[2].target, "/api/v1/environments/prod/rollback");
    let body: RollbackRequest = seen[2].json();
    assert_eq!(body.board.as_ref(), Some(&target.board));
    check_statement(&body.statement.unwrap(), &key, OTHER, 8);
    let body: RollbackRequest = seen[3].json();
    assert_eq!((body.board, body.statement), (None, None));
}

#[test]
fn pause_acts_on_the_current_release_and_filters_reach_the_query() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let mut env = environment(&key, 8);
    env.current = vec![release(ID, 7, ReleaseKind::Release)];
    let mut paused = release(ID, 7, ReleaseKind::Release);
    paused.state = RolloutState::Paused;
    let stand = Stand::new(vec![(200, json(&env)), (200, json(&paused)), (200, "[]".into())]);
    let client = stand.client();
    let prod = "prod".parse().unwrap();
    let done = client::set_paused(&client, &prod, None, true).unwrap();
    assert_eq!(done.state, RolloutState::Paused);
    let filter = DeviceFilter {
        environment: Some(prod),
        state: Some(DeviceState::Failed),
        ..DeviceFilter::default()
    };
    assert!(client::devices(&client, &filter, Some(ID)).unwrap().is_empty());
    let seen = stand.seen();
    assert_eq!(
        (seen[1].method.as_str(), seen[1].target.as_str()),
        ("POST", "/api/v1/environments/prod/releases/7/pause")
    );
    assert_eq!(seen[2].target, format!("/api/v1/devices?environment=prod&state=failed&image={ID}"));
}

#[test]
fn an_unreachable_server_is_named() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client::connect(Some(&format!("127.0.0.1:{port}/")), Some("t")).unwrap();
    let err = client::audit(&client, None).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot reach the ota-server at http://127.0.0.1:{port}: ")),
        "{err}"
    );
    assert!(err.ends_with("(is it running? check --server or IMAGER_SERVER)"), "{err}");
}

/// Writes a device list; returns its path and where the tokens are to go.
fn device_list(dir: &TempDir, text: &str) -> (PathBuf, PathBuf) {
    let csv = dir.path().join("devices.csv");
    std::fs::write(&csv, text).unwrap();
    (csv, dir.path().join("tokens.csv"))
}

/// The names of the files in `dir`.
fn files(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_device_list_goes_in_one_batch_and_the_tokens_to_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, out) = device_list(
        &dir,
        "id,board,environment
sn-1,microbit,test
sn-2,microbit,prod
",
    );
    let answer = DevicesEnrolled {
        tokens: vec![
            DeviceToken { id: "sn-1".parse().unwrap(), token: "fwd_one".into() },
            DeviceToken { id: "sn-2".parse().unwrap(), token: "fwd_two".into() },
        ],
    };
    let stand = Stand::new(vec![(201, json(&answer))]);
    let done = client::enroll::enroll(&stand.client(), &csv, &out).unwrap();
    assert_eq!((done.devices, done.tokens_file.as_path()), (2, out.as_path()));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "id,token\nsn-1,fwd_one\nsn-2,fwd_two\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let seen = stand.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/api/v1/devices/batch")
    );
    let sent: NewDevices = seen[0].json();
    let ids: Vec<&str> = sent.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["sn-1", "sn-2"]);
    assert_eq!(sent.devices[1].environment, "prod");
    assert_eq!(files(&dir), ["devices.csv", "tokens.csv"], "no temporary file left");
}

#[test]
fn a_refused_device_is_named_by_its_line_and_no_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, out) = device_list(
        &dir,
        "# line 1
sn-1,microbit,test
sn-2,nosuch,test
",
    );
    let refusal = error(
        "unknown_board",
        "device 2 of the batch (sn-2): board nosuch is not known to this server",
    );
    let stand = Stand::new(vec![(400, refusal)]);
    let err = client::enroll::enroll(&stand.client(), &csv, &out).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "{} line 3: the ota-server refused device sn-2: board nosuch is not known to this \
             server (unknown_board, HTTP 400); nothing was enrolled",
            csv.display()
        )
    );
    assert_eq!(files(&dir), ["devices.csv"], "no token file, no temporary file");
}

#[test]
fn an_existing_token_file_or_a_bad_line_stops_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, out) = device_list(
        &dir,
        "sn-1,microbit,test
",
    );
    std::fs::write(&out, "keep me").unwrap();
    let stand = Stand::new(vec![]);
    let err = format!("{:#}", client::enroll::enroll(&stand.client(), &csv, &out).unwrap_err());
    assert!(err.contains(&format!("{} exists", out.display())), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    std::fs::remove_file(&out).unwrap();
    std::fs::write(
        &csv,
        "sn-1,microbit,test
sn-1,microbit,prod
",
    )
    .unwrap();
    let err = format!("{:#}", client::enroll::enroll(&stand.client(), &csv, &out).unwrap_err());
    assert!(err.ends_with("line 2: device sn-1 is already on line 1"), "{err}");
    assert!(stand.seen().is_empty());
    assert_eq!(files(&dir), ["devices.csv"]);
}
