//! A real `ota-server` process on loopback, images built from the real fixture binaries, and a
//! small HTTP client for the tests.

#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use firmware::image::{
    ComponentSource, EncodedImage, HeatshrinkParams, ImageSpec, ReleaseStatement, Role,
    SignedRelease, SlotLayout, Version, encode_image,
};
use serde_json::Value;

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

pub struct Server {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub url: String,
    pub admin: String,
    agent: ureq::Agent,
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
    /// Inits a data folder (build key, prod key) and starts the server on it.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        write_public_pem(&dir.path().join("build.pub.pem"), &build_key());
        write_public_pem(&dir.path().join("prod.pub.pem"), &prod_key());
        let out = Command::new(BIN)
            .arg("init")
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--build-key")
            .arg(dir.path().join("build.pub.pem"))
            .arg("--prod-key")
            .arg(dir.path().join("prod.pub.pem"))
            .output()
            .unwrap();
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let admin = stdout
            .lines()
            .find_map(|l| l.strip_prefix("admin token: "))
            .expect("init prints the admin token")
            .to_owned();
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut server = Server { dir, child: None, url: String::new(), admin, agent };
        server.launch(extra);
        server
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (or restarts) the process.
    pub fn launch(&mut self, extra: &[&str]) {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data")
            .arg(self.data())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
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
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            c.wait().unwrap();
        }
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
    ) -> Result<Reply, ureq::Error> {
        let mut req =
            ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let result = match body {
            Some(b) => self.agent.run(req.body(b.to_vec()).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut response = result?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let mut body = Vec::new();
        response.body_mut().as_reader().read_to_end(&mut body)?;
        Ok(Reply { status, body, headers })
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
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
