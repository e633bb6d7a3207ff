//! A real `ota-server` process on loopback, on either store (an SQLite file, or a database of
//! a throwaway PostgreSQL cluster), images built from the real fixture binaries, and the
//! project's client (`ota_proto::client`) for the tests' requests.
//!
//! Every test that is about the server's behaviour runs on both stores: write it as
//! `fn name(backend: Backend)` and add `both_backends!(name);`, which makes the tests
//! `name::sqlite` and `name::postgres`.

#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use firmware::image::{
    ComponentSource, EncodedImage, HeatshrinkParams, ImageSpec, ReleaseStatement, Role,
    SignedRelease, SlotLayout, Version, encode_image,
};
use ota_proto::client::{Blocking, Client};
use serde_json::Value;
use testkit::pg::Postgres;

pub const BIN: &str = env!("CARGO_BIN_EXE_ota-server");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn build_key() -> SigningKey {
    SigningKey::from_bytes(&[11; 32])
}

pub fn prod_key() -> SigningKey {
    SigningKey::from_bytes(&[22; 32])
}

pub fn write_public_pem(path: &Path, key: &SigningKey) {
    let pem = key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    std::fs::write(path, pem).unwrap();
}

/// A micro:bit image whose OS is the fixture's real Thumb code (built by arm-none-eabi-gcc),
/// with `version` and `counter`, signed by `key`; `board` is normally "microbit".
pub fn image_for(board: &str, version: &str, counter: u32, key: &SigningKey) -> EncodedImage {
    let catalog = boards::Catalog::builtin().unwrap();
    let microbit = catalog.get("microbit").unwrap();
    let slot = SlotLayout {
        start: microbit.slot_a_address(),
        size: microbit.partitions.slot_a.size,
        header_size: microbit.image.header_size,
    };
    // About 48 KiB of real Thumb code (the fixture app, built by arm-none-eabi-gcc, repeated),
    // then the version, so that different versions install different bytes.
    let app = std::fs::read(fixtures().join("microbit/app.bin")).unwrap();
    let mut code = app.repeat(75);
    code.extend_from_slice(version.as_bytes());
    let spec = ImageSpec {
        board: board.to_owned(),
        version: version.parse::<Version>().unwrap(),
        security_counter: counter,
        compression: Some(HeatshrinkParams::DEFAULT),
        components: vec![ComponentSource {
            role: Role::Os,
            name: "os".into(),
            load_address: slot.start + slot.header_size,
            bytes: code,
        }],
        slot: (board == "microbit").then_some(slot),
    };
    encode_image(&spec, std::slice::from_ref(key)).unwrap()
}

pub fn image(version: &str) -> EncodedImage {
    image_for("microbit", version, 0, &build_key())
}

pub fn sign_release(image_id: &str, env: &str, sequence: u64, key: &SigningKey) -> String {
    let id = firmware::image::ImageId::from_hex(image_id).unwrap();
    hex::encode(SignedRelease::sign(&ReleaseStatement::new(id, env, sequence).unwrap(), key))
}

pub use testkit::Backend;

/// Runs the test function `$name(backend: Backend)` on both stores, as the tests
/// `$name::sqlite` and `$name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::common::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::common::Backend::Postgres)
            }
        }
    };
}

pub struct Server {
    /// The data folder's parent (shared by the replicas of one server).
    pub dir: std::sync::Arc<tempfile::TempDir>,
    pub child: Option<Child>,
    pub url: String,
    pub admin: String,
    /// The `--database` URL (PostgreSQL), if not the data folder's SQLite file.
    pub database: Option<String>,
    /// More `serve` arguments and environment, kept for restarts and replicas (`--blobs`, say).
    pub serve_args: Vec<String>,
    /// Environment variables of `serve`.
    pub serve_env: Vec<(String, String)>,
    http: Option<Blocking>,
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error code of an error reply.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Server {
    /// Inits a data folder (build key, prod key) on SQLite and starts the server on it.
    pub fn start() -> Server {
        Server::start_on(Backend::Sqlite)
    }

    /// Inits a data folder on `backend` and starts the server on it.
    pub fn start_on(backend: Backend) -> Server {
        Server::start_with(backend, &[])
    }

    pub fn start_with(backend: Backend, extra: &[&str]) -> Server {
        Server::start_on_database(backend.database(), extra)
    }

    /// Inits a data folder on the database `url` (`None`: the data folder's SQLite file) and
    /// starts the server on it.
    pub fn start_on_database(database: Option<String>, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        write_public_pem(&dir.path().join("build.pub.pem"), &build_key());
        write_public_pem(&dir.path().join("prod.pub.pem"), &prod_key());
        let mut init = Command::new(BIN);
        init.arg("init")
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--build-key")
            .arg(dir.path().join("build.pub.pem"))
            .arg("--prod-key")
            .arg(dir.path().join("prod.pub.pem"));
        if let Some(url) = &database {
            init.args(["--database", url]);
        }
        let out = init.output().unwrap();
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let admin = stdout
            .lines()
            .find_map(|l| l.strip_prefix("admin token: "))
            .expect("init prints the admin token")
            .to_owned();
        let mut server = Server {
            dir: std::sync::Arc::new(dir),
            child: None,
            url: String::new(),
            admin,
            database,
            serve_args: extra.iter().map(|s| s.to_string()).collect(),
            serve_env: Vec::new(),
            http: None,
        };
        server.launch(&[]);
        server
    }

    /// `n` replicas on one fresh PostgreSQL database and one fresh Garage bucket (each with a
    /// data folder of its own, which holds nothing: state is in the database, files in the
    /// bucket), with more `serve` arguments `extra` (`--downloads redirect`, say).
    pub fn cluster(n: usize, extra: &[&str]) -> Vec<Server> {
        let garage = testkit::garage::Garage::shared();
        let bucket = garage.create_bucket();
        let mut args: Vec<String> = vec![
            "--blobs".into(),
            format!("s3://{bucket}"),
            "--s3-endpoint".into(),
            garage.endpoint(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let env: Vec<(String, String)> =
            garage.aws_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let mut first = Server::start_on_database(Backend::Postgres.database(), &[]);
        first.kill9();
        first.serve_args = args;
        first.serve_env = env;
        first.launch(&[]);
        let mut all = vec![first];
        for _ in 1..n {
            let mut replica = all[0].replica();
            // A data folder of its own.
            replica.kill9();
            let own = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(own.path().join("data")).unwrap();
            replica.dir = std::sync::Arc::new(own);
            replica.launch(&[]);
            all.push(replica);
        }
        all
    }

    /// A server on the existing data folder `dir`/data (no init).
    pub fn existing(
        dir: std::sync::Arc<tempfile::TempDir>,
        admin: &str,
        database: Option<String>,
    ) -> Server {
        let mut server = Server {
            dir,
            child: None,
            url: String::new(),
            admin: admin.to_owned(),
            database,
            serve_args: Vec::new(),
            serve_env: Vec::new(),
            http: None,
        };
        server.launch(&[]);
        server
    }

    /// Another replica: a second process on the same data folder and database.
    pub fn replica(&self) -> Server {
        let mut other = Server {
            dir: self.dir.clone(),
            child: None,
            url: String::new(),
            admin: self.admin.clone(),
            database: self.database.clone(),
            serve_args: self.serve_args.clone(),
            serve_env: self.serve_env.clone(),
            http: None,
        };
        other.launch(&[]);
        other
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The `--database` arguments for this server's store (none for the default SQLite file).
    pub fn database_args(&self) -> Vec<String> {
        self.database.iter().flat_map(|url| ["--database".to_owned(), url.clone()]).collect()
    }

    /// Starts (or restarts) the process.
    pub fn launch(&mut self, extra: &[&str]) {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data")
            .arg(self.data())
            .args(self.database_args())
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.serve_args)
            .args(extra)
            .envs(self.serve_env.iter().map(|(k, v)| (k, v)))
            .env("OTA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| {
            panic!("server did not start: {line:?}");
        });
        self.url = url.to_owned();
        self.http = Some(Blocking::new(Client::anonymous(url).unwrap()).unwrap());
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            c.wait().unwrap();
        }
    }

    /// The typed client with `token`.
    pub fn client(&self, token: &str) -> Blocking {
        Blocking::new(Client::new(&self.url, token).unwrap()).unwrap()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_request(method, path, token, content_type, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Server::request`], but a failed connection is an error, not a panic.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, ota_proto::client::Error> {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &authorization {
            all.push(("authorization", a));
        }
        let method: hyper::Method = method.parse().unwrap();
        let body = match (content_type, body) {
            (Some(ct), Some(b)) => Some((ct, bytes::Bytes::copy_from_slice(b))),
            (Some(ct), None) => Some((ct, bytes::Bytes::new())),
            // No Content-Type header at all.
            (None, Some(b)) => Some(("", bytes::Bytes::copy_from_slice(b))),
            (None, None) => None,
        };
        let http = self.http.as_ref().expect("the server runs");
        let reply = http.run(|c| c.raw(method, path, body, &all))?;
        let headers = reply
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        Ok(Reply { status: reply.status, body: reply.body.to_vec(), headers })
    }

    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.request("GET", path, Some(token), None, None, &[])
    }

    pub fn post_json(&self, path: &str, token: &str, body: Value) -> Reply {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.request("POST", path, Some(token), Some("application/json"), Some(&bytes), &[])
    }

    pub fn upload(&self, token: &str, file: &[u8]) -> Reply {
        self.request(
            "POST",
            "/api/v1/images",
            Some(token),
            Some("application/octet-stream"),
            Some(file),
            &[],
        )
    }

    /// Enrolls a device; returns its token.
    pub fn enroll(&self, id: &str, env: &str) -> String {
        let r = self.post_json(
            "/api/v1/devices",
            &self.admin,
            serde_json::json!({"id": id, "board": "microbit", "environment": env}),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["token"].as_str().unwrap().to_owned()
    }

    pub fn checkin(&self, device_token: &str, running: Option<&str>) -> Value {
        let r = self.post_json(
            "/api/v1/device/checkin",
            device_token,
            serde_json::json!({"image_id": running, "trial": false}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["offer"].clone()
    }

    pub fn event(&self, device_token: &str, image_id: &str, kind: &str) {
        let r = self.post_json(
            "/api/v1/device/events",
            device_token,
            serde_json::json!({"image_id": image_id, "kind": kind}),
        );
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    }

    /// Releases `image_id` to prod with a statement signed by prod's key (sequence 1).
    pub fn promote_to_prod(&self, image_id: &str) -> Reply {
        let statement = sign_release(image_id, "prod", 1, &prod_key());
        let body = serde_json::json!({"image_id": image_id, "statement": statement});
        self.post_json("/api/v1/environments/prod/releases", &self.admin, body)
    }

    /// Uploads an image of each version (microbit, build key); returns their ids.
    pub fn upload_versions(&self, versions: &[&str]) -> Vec<String> {
        let upload = |v: &&str| {
            let file = image(v);
            assert_eq!(self.upload(&self.admin, &file.bytes).status, 201);
            file.id.to_string()
        };
        versions.iter().map(upload).collect()
    }

    /// Sets an environment's rollout stages (`stages` a JSON array of percentages).
    pub fn set_stages(&self, env: &str, stages: &str) {
        let body = format!(r#"{{"stages": {stages}}}"#);
        let url = format!("/api/v1/environments/{env}");
        let json = Some("application/json");
        let r = self.request("PATCH", &url, Some(&self.admin), json, Some(body.as_bytes()), &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    /// Reports `kinds` in turn for `image_id` (a device's update history).
    pub fn steps(&self, device_token: &str, image_id: &str, kinds: &[&str]) {
        for kind in kinds {
            self.event(device_token, image_id, kind);
        }
    }

    /// Reports a whole update of `image_id`: downloading, installed, booted, confirmed.
    pub fn confirm(&self, device_token: &str, image_id: &str) {
        self.steps(device_token, image_id, &["downloading", "installed", "booted", "confirmed"]);
    }

    pub fn audit_len(&self) -> usize {
        self.get("/api/v1/audit?limit=1000", &self.admin).json().as_array().unwrap().len()
    }

    /// Files in the blob folder (not counting `tmp/`).
    pub fn blob_files(&self) -> Vec<String> {
        std::fs::read_dir(self.data().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    pub fn tmp_files(&self) -> usize {
        std::fs::read_dir(self.data().join("blobs/tmp")).unwrap().count()
    }

    /// Runs `sql` on this server's PostgreSQL database (`psql` output: rows per line, `|`
    /// between columns). Panics on SQLite.
    pub fn pg_sql(&self, sql: &str) -> String {
        let url = self.database.as_deref().expect("a PostgreSQL server");
        Postgres::shared().sql(Postgres::database_of(url), sql)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
