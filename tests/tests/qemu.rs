//! The real firmware on emulated hardware: the device workspace (bootloader, demo OS, demo app
//! for `thumbv6m-none-eabi`) is built, the OS and app are fused by `imager`, `imager run` boots
//! them in QEMU's micro:bit, and `imager gateway` bridges the device's UART to a real
//! ota-server.
//!
//! Needs `qemu-system-arm` and the `thumbv6m-none-eabi` target (`.ci/run` installs both).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Builds the device workspace, provisioned as a `prod` device: the fixtures' test key is the
/// build key, `release-ed25519` prod's release key. Returns its release output folder.
fn build_device() -> PathBuf {
    let device = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/device");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&device)
        .env("FWI_BOOT_KEYS", fixture("keys/openssl-ed25519.pub.pem"))
        .env("FWI_ENVIRONMENT", "prod")
        .env("FWI_ENVIRONMENT_KEYS", fixture("keys/release-ed25519.pub.pem"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building firmware/device failed (rustup target add thumbv6m-none-eabi?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    device.join("target/thumbv6m-none-eabi/release")
}

fn need_qemu() {
    let qemu = Command::new("qemu-system-arm").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-system-arm is needed (Debian: apt-get install qemu-system-arm)"
    );
}

/// Fuses the demo OS and app as `version`; the micro:bit lends its update agent a 1 KiB
/// window, so images for it use `--window 10`.
fn fuse_demo(dir: &tempfile::TempDir, out: &Path, version: &str) -> (String, String) {
    let key = fixture("keys/openssl-ed25519.pem");
    let (os, app) = (out.join("demo-os"), out.join("demo-app"));
    fuse_files(dir, key.to_str().unwrap(), &os, &app, version, &["--window", "10"])
}

/// Lines a child process writes on one of its pipes, as they come.
fn lines_of(pipe: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Waits until a line satisfies `done`; every line seen is kept in `seen`.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> bool {
    if seen.iter().any(|l| done(l)) {
        return true;
    }
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = done(&line);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Kills a child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn v1_boots_in_qemu_and_says_its_image_id() {
    need_qemu();
    let out = build_device();
    let dir = tempfile::tempdir().unwrap();
    let (image, id) = fuse_demo(&dir, &out, "1.0.0");

    // `imager run`'s library, so that the test holds QEMU itself (dropping it ends QEMU).
    let file = std::fs::read(&image).unwrap();
    let catalog = boards::Catalog::builtin().unwrap();
    let board = catalog.get("microbit").unwrap();
    let bootloader =
        imager::run::read_bootloader(out.join("bootloader").to_str().unwrap(), board).unwrap();
    let flash = imager::run::flash_image(board, &file, Some(&bootloader)).unwrap();
    let machine = imager::run::Machine::start(board, &flash, "qemu-system-arm", &[]).unwrap();
    let mut uart = machine.uart().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = imager::run::TextLines::default();
        let mut buf = [0u8; 1024];
        while let Ok(n) = uart.read(&mut buf) {
            if n == 0 {
                break;
            }
            for line in text.push(&buf[..n]) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    let mut seen = Vec::new();
    let ready =
        wait_for(&rx, &mut seen, Duration::from_secs(60), |l| l.contains("fwi demo os: ready"));
    drop(machine);
    assert!(ready, "no `ready` from the demo OS within 60 s; the UART said: {seen:#?}");
    let expected = format!("fwi demo os: image {id} version 1.0.0 (confirmed)");
    assert!(seen.iter().any(|l| l == &expected), "{seen:#?}");
    assert!(seen.iter().any(|l| l == &format!("fwi boot: starting {id} (confirmed)")), "{seen:#?}");
    assert!(seen.iter().any(|l| l.contains("app says: demo app")), "{seen:#?}");
}

#[test]
fn v1_updates_to_v2_over_the_gateway() {
    need_qemu();
    let out = build_device();
    let dir = tempfile::tempdir().unwrap();
    let build_pub = fixture("keys/openssl-ed25519.pub.pem");
    let prod_pub = fixture("keys/release-ed25519.pub.pem");
    let server = Server::start(&dir, build_pub.to_str().unwrap(), prod_pub.to_str().unwrap());
    let (v1, v1_id) = fuse_demo(&dir, &out, "1.0.0");
    let created = json(&server, &["device", "add", "mb-1", "--board", "microbit", "--env", "prod"]);
    let token = created["token"].as_str().unwrap().to_owned();

    // The device, its UART on a TCP port (it starts once the gateway connected)...
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bootloader = out.join("bootloader");
    let run = Command::new(bin("imager"))
        .args(["run", &v1, "--bootloader", bootloader.to_str().unwrap()])
        .args(["--serial", &format!("tcp:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _run = Killed(run);
    // ... and the gateway between it and the server.
    let mut gateway = Command::new(bin("imager"))
        .args(["gateway", "--serial", &format!("tcp:127.0.0.1:{port}"), "--interval", "1"])
        .args(["--server", &server.url, "--token", &token])
        .env_remove("IMAGER_SERVER")
        .env_remove("IMAGER_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    lines_of(gateway.stdout.take().unwrap(), tx.clone());
    lines_of(gateway.stderr.take().unwrap(), tx);
    let _gateway = Killed(gateway);

    let mut seen = Vec::new();
    let checked_in = format!("gateway: check-in: runs {v1_id} 1.0.0 (confirmed); nothing offered");
    let seen_it = wait_for(&rx, &mut seen, Duration::from_secs(60), |l| l == checked_in);
    assert!(seen_it, "no check-in through the gateway within 60 s: {seen:#?}");
    assert!(
        seen.iter().any(|l| l == &format!("fwi boot: starting {v1_id} (confirmed)")),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|l| l.starts_with("fwi demo os: ready")), "{seen:#?}");

    // The server saw it: the device runs v1, confirmed, as it said over the serial link.
    let device = json(&server, &["device", "show", "mb-1"]);
    assert_eq!(device["device"]["running"], v1_id.as_str(), "{device:#}");

    // v2 released to prod (signed with prod's offline key): offered at the next check-in,
    // streamed over the serial link into slot B, installed by the bootloader at the reset,
    // booted on trial, confirmed by its self-test.
    let (v2, v2_id) = fuse_demo(&dir, &out, "2.0.0");
    ok(Some(&server), &["push", &v2]);
    patch(&server, "/api/v1/environments/prod", r#"{"promote_min_confirmed": 0}"#);
    let key = fixture("keys/release-ed25519.pem");
    ok(Some(&server), &["promote", &v2_id, "--to", "prod", "--key", key.to_str().unwrap()]);
    let steps = [
        format!("gateway: check-in: runs {v1_id} 1.0.0 (confirmed); offered {v2_id}"),
        format!("fwi demo os: downloading {v2_id}"),
        format!("fwi demo os: {v2_id} verified in slot B; resetting to install it"),
        format!("fwi boot: installing {} from slot B", &v2_id[..16]),
        format!("fwi boot: starting {v2_id} (on trial)"),
        format!("fwi demo os: image {v2_id} version 2.0.0 (on trial)"),
        format!("fwi demo os: self-test passed, image {v2_id} confirmed"),
        format!("gateway: event confirmed {v2_id}"),
    ];
    for step in &steps {
        let seen_it = wait_for(&rx, &mut seen, Duration::from_secs(120), |l| l.starts_with(step));
        assert!(seen_it, "no `{step}` within 120 s: {seen:#?}");
    }
    let device = json(&server, &["device", "show", "mb-1"]);
    assert_eq!(device["device"]["running"], v2_id.as_str(), "{device:#}");
    assert_eq!(device["device"]["confirmed"], true, "{device:#}");
}

/// `PATCH` with a JSON body and the admin token (no imager command sets environment options).
fn patch(server: &Server, path: &str, body: &str) {
    use std::io::Write;
    let address = server.url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "PATCH {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.token,
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "PATCH {path}: {answer}");
}
