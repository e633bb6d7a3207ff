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

/// v1 as a production line would program it: `imager factory` with the real bootloader, the
/// binary laid into QEMU's flash as it is.
#[test]
fn v1_boots_in_qemu_from_its_factory_image_and_says_its_image_id() {
    need_qemu();
    let out = build_device();
    let dir = tempfile::tempdir().unwrap();
    let (image, id) = fuse_demo(&dir, &out, "1.0.0");
    let factory = path(&dir, "factory.bin");
    let bootloader = out.join("bootloader");
    let bootloader = bootloader.to_str().unwrap();
    ok(
        None,
        &["factory", &image, "--bootloader", bootloader, "--format", "bin", "--out", &factory],
    );

    // `imager run`'s library, so that the test holds QEMU itself (dropping it ends QEMU).
    let catalog = boards::Catalog::builtin().unwrap();
    let board = catalog.get("microbit").unwrap();
    let mut flash = std::fs::read(&factory).unwrap();
    flash.resize(board.flash.size as usize, board.flash.erased_value);
    let machine = imager::run::Machine::start(board, &flash, "qemu-system-arm", &[]).unwrap();
    let mut uart = machine.uart().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = imager::console::TextLines::default();
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

/// A real ota-server with one prod device enrolled, the device (v1) in QEMU behind
/// `imager run --serial tcp:PORT`, and `imager gateway` between them.
struct Rig {
    dir: tempfile::TempDir,
    out: PathBuf,
    server: Server,
    v1_id: String,
    /// What the gateway prints: the device's console on stdout, its own notes on stderr.
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Lines before this one in `seen` were matched by an earlier step.
    cursor: usize,
    _run: Killed,
    _gateway: Killed,
}

impl Rig {
    /// Starts everything; the gateway talks to the server through `via` (a proxy), or directly.
    /// Returns once the device checked in running v1.
    fn start(via: Option<fn(&str) -> String>) -> Rig {
        need_qemu();
        let out = build_device();
        let dir = tempfile::tempdir().unwrap();
        let build_pub = fixture("keys/openssl-ed25519.pub.pem");
        let prod_pub = fixture("keys/release-ed25519.pub.pem");
        let server = Server::start(&dir, build_pub.to_str().unwrap(), prod_pub.to_str().unwrap());
        let (v1, v1_id) = fuse_demo(&dir, &out, "1.0.0");
        let created =
            json(&server, &["device", "add", "mb-1", "--board", "microbit", "--env", "prod"]);
        let token = created["token"].as_str().unwrap().to_owned();
        // Updates roll out to prod without waiting for confirmations elsewhere.
        no_promotion_gate(&server, "prod");

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
        let run = Killed(run);
        // ... and the gateway between it and the server.
        let url = via.map_or_else(|| server.url.clone(), |proxy| proxy(&server.url));
        let mut gateway = Command::new(bin("imager"))
            .args(["gateway", "--serial", &format!("tcp:127.0.0.1:{port}"), "--interval", "1"])
            .args(["--server", &url, "--token", &token])
            .env_remove("IMAGER_SERVER")
            .env_remove("IMAGER_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        lines_of(gateway.stdout.take().unwrap(), tx.clone());
        lines_of(gateway.stderr.take().unwrap(), tx);
        let mut rig = Rig {
            dir,
            out,
            server,
            v1_id,
            rx,
            seen: Vec::new(),
            cursor: 0,
            _run: run,
            _gateway: Killed(gateway),
        };
        let v1_id = rig.v1_id.clone();
        rig.expect(&[
            format!("fwi boot: starting {v1_id} (confirmed)"),
            "fwi demo os: ready".into(),
            format!("gateway: check-in: runs {v1_id} 1.0.0 (confirmed); nothing offered"),
        ]);
        rig
    }

    /// Waits for lines starting with each of `steps`, in this order, each after the line the
    /// step before matched (120 s each).
    fn expect(&mut self, steps: &[String]) {
        for step in steps {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let new = &self.seen[self.cursor..];
                if let Some(i) = new.iter().position(|l| l.starts_with(step.as_str())) {
                    self.cursor += i + 1;
                    break;
                }
                let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
                match self.rx.recv_timeout(left) {
                    Ok(line) => self.seen.push(line),
                    Err(_) => panic!("no `{step}` within 120 s; so far: {:#?}", self.seen),
                }
            }
        }
    }

    /// Waits for a line (after the last one matched) that satisfies `matches`, 120 s at most;
    /// returns it.
    fn expect_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(i) = self.seen[self.cursor..].iter().position(|l| matches(l)) {
                self.cursor += i + 1;
                return self.seen[self.cursor - 1].clone();
            }
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no {what} within 120 s; so far: {:#?}", self.seen),
            }
        }
    }

    /// Pushes `image` and releases it to prod, signed with prod's offline key.
    fn release(&self, image: &str, id: &str) {
        ok(Some(&self.server), &["push", image]);
        let key = fixture("keys/release-ed25519.pem");
        ok(Some(&self.server), &["promote", id, "--to", "prod", "--key", key.to_str().unwrap()]);
    }

    /// Fuses v2 and releases it to prod; returns its id once the device, running v1, was
    /// offered it and started the download.
    fn release_v2(&mut self) -> String {
        let (v2, v2_id) = fuse_demo(&self.dir, &self.out, "2.0.0");
        self.release(&v2, &v2_id);
        let v1_id = &self.v1_id;
        self.expect(&[
            format!("gateway: check-in: runs {v1_id} 1.0.0 (confirmed); offered {v2_id}"),
            format!("fwi demo os: downloading {v2_id}"),
        ]);
        v2_id
    }

    /// The device as the server sees it (`imager device show`).
    fn device(&self) -> serde_json::Value {
        json(&self.server, &["device", "show", "mb-1"])
    }
}

/// The demo app built with `--cfg unhealthy`: its self-test fails. Built in a target folder of
/// its own, so that the normal build's artifacts stay as they are.
fn build_unhealthy_app() -> PathBuf {
    let device = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/device");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = device.join("target/unhealthy");
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "demo-app"])
        .current_dir(&device)
        .env("RUSTFLAGS", "--cfg unhealthy")
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    target.join("thumbv6m-none-eabi/release/demo-app")
}

#[test]
fn v2_installs_and_confirms_v3_is_reverted_over_the_gateway() {
    let mut rig = Rig::start(None);

    // v2: offered at the next check-in, streamed over the serial link into slot B, installed
    // by the bootloader at the reset, booted on trial, confirmed by its self-test.
    let v2_id = rig.release_v2();
    rig.expect(&[
        format!("fwi demo os: {v2_id} verified in slot B; resetting to install it"),
        format!("fwi boot: installing {} from slot B", &v2_id[..16]),
        format!("fwi boot: starting {v2_id} (on trial)"),
        format!("fwi demo os: image {v2_id} version 2.0.0 (on trial)"),
        format!("fwi demo os: self-test passed, image {v2_id} confirmed"),
        format!("gateway: event confirmed {v2_id}"),
    ]);
    let device = rig.device();
    assert_eq!(device["device"]["running"], v2_id.as_str(), "{device:#}");
    assert_eq!(device["device"]["confirmed"], true, "{device:#}");

    // v3, whose app fails its self-test: installed, booted on trial, not confirmed; the
    // bootloader reverts it at the next reset, v2 runs again and says so; the server sees it.
    let key = fixture("keys/openssl-ed25519.pem");
    let unhealthy = build_unhealthy_app();
    let (v3, v3_id) = fuse_files(
        &rig.dir,
        key.to_str().unwrap(),
        &rig.out.join("demo-os"),
        &unhealthy,
        "3.0.0",
        &["--window", "10"],
    );
    rig.release(&v3, &v3_id);
    rig.expect(&[
        format!("gateway: check-in: runs {v2_id} 2.0.0 (confirmed); offered {v3_id}"),
        format!("fwi demo os: {v3_id} verified in slot B; resetting to install it"),
        format!("fwi boot: installing {} from slot B", &v3_id[..16]),
        format!("fwi boot: starting {v3_id} (on trial)"),
        format!("fwi demo os: self-test FAILED, not confirming {v3_id}"),
        format!("fwi boot: reverted {}", &v3_id[..16]),
        format!("fwi boot: starting {v2_id} (confirmed)"),
        // (Its bytes are gone; the state log keeps its tag, the gateway knows the image.)
        format!("fwi demo os: the bootloader reverted {} (NotConfirmed)", &v3_id[..16]),
        format!("gateway: event reverted {v3_id}"),
        format!("gateway: check-in: runs {v2_id} 2.0.0 (confirmed)"),
    ]);
    let device = rig.device();
    assert_eq!(device["device"]["running"], v2_id.as_str(), "{device:#}");
    assert_eq!(device["device"]["failed_image"], v3_id.as_str(), "{device:#}");
    let events = device["events"].as_array().unwrap();
    let reverted =
        events.iter().find(|e| e["kind"] == "reverted" && e["image_id"] == v3_id.as_str());
    assert!(reverted.is_some(), "no reverted event for v3 on the server: {device:#}");
}

#[test]
fn the_device_backs_off_while_the_server_is_down_and_checks_in_once_it_is_back() {
    let mut rig = Rig::start(None);
    rig.server.kill();
    // Each check-in the gateway cannot make for it, the device waits twice as long as before
    // (2 s, 4 s, 8 s...): it neither gives up nor hammers a server that is down.
    for wait in [2, 4, 8] {
        rig.expect(&["gateway: check-in: cannot reach the ota-server".into()]);
        let said = format!("checking in again in {wait} s");
        let line = rig.expect_line(&said, |l| {
            l.starts_with("fwi demo os: gateway: check-in: cannot reach the ota-server")
                && l.contains("checking in again")
        });
        assert!(line.ends_with(&said), "{line}");
    }
    // Back, on the same data folder: the next check-in goes through and runs as before.
    rig.server.restart();
    let v1_id = rig.v1_id.clone();
    rig.expect(&[format!("gateway: check-in: runs {v1_id} 1.0.0 (confirmed); nothing offered")]);
    // And the device is updated as usual.
    let v2_id = rig.release_v2();
    rig.expect(&[format!("fwi demo os: self-test passed, image {v2_id} confirmed")]);
}

#[test]
fn a_corrupted_image_is_refused_and_v1_keeps_running() {
    // The gateway downloads through a proxy that flips one byte of the image's payload.
    let mut rig =
        Rig::start(Some(|server| corrupting_proxy(server, "/api/v1/device/images/", 4000)));
    let v2_id = rig.release_v2();
    let v1_id = rig.v1_id.clone();
    rig.expect(&[
        format!("fwi demo os: update {v2_id} refused: corrupt image"),
        format!("gateway: event failed {v2_id}: corrupt image"),
        format!("gateway: check-in: runs {v1_id} 1.0.0 (confirmed)"),
    ]);
    assert!(
        !rig.seen
            .iter()
            .any(|l| l.starts_with("fwi boot: installing") || l.contains("verified in slot B")),
        "{:#?}",
        rig.seen
    );
    let device = rig.device();
    assert_eq!(device["device"]["running"], v1_id.as_str(), "{device:#}");
    let failed = device["events"].as_array().unwrap().iter().find(|e| e["kind"] == "failed");
    let failed = failed.unwrap_or_else(|| panic!("no failed event on the server: {device:#}"));
    assert_eq!(failed["image_id"], v2_id.as_str());
    assert!(failed["detail"].as_str().unwrap().contains("corrupt image"), "{failed}");
}

/// Lets images into `env` without confirmations upstream (no imager command sets rollout
/// settings).
fn no_promotion_gate(server: &Server, env: &str) {
    let env: ota_proto::EnvironmentName = env.parse().unwrap();
    let api = admin(server);
    let mut rollout = api.run(|c| c.environment(&env)).unwrap().rollout;
    rollout.promote_min_confirmed = 0;
    let changed = api.run(|c| c.update_environment(&env, &rollout)).unwrap();
    assert_eq!(changed.rollout.promote_min_confirmed, 0);
}
