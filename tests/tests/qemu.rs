//! The real firmware on emulated hardware: the device workspace (bootloader, demo OS, demo app
//! for `thumbv6m-none-eabi`) is built, the OS and app are fused by `imager`, and `imager run`
//! boots them in QEMU's micro:bit; the OS must say which image it is on its UART.
//!
//! Needs `qemu-system-arm` and the `thumbv6m-none-eabi` target (`.ci/run` installs both).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Builds the device workspace with the fixtures' test key as the bootloader's build key;
/// returns its release output folder.
fn build_device() -> PathBuf {
    let device = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/device");
    let key = fixture("keys/openssl-ed25519.pub.pem");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&device)
        .env("FWI_BOOT_KEYS", &key)
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

#[test]
fn v1_boots_in_qemu_and_says_its_image_id() {
    let qemu = Command::new("qemu-system-arm").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-system-arm is needed (Debian: apt-get install qemu-system-arm)"
    );
    let out = build_device();
    let dir = tempfile::tempdir().unwrap();
    let key = fixture("keys/openssl-ed25519.pem");
    let (os, app) = (out.join("demo-os"), out.join("demo-app"));
    let (image, id) = fuse_files(&dir, key.to_str().unwrap(), &os, &app, "1.0.0", &[]);

    // `imager run`, through its library (so that the test holds QEMU itself and ends it).
    let file = std::fs::read(&image).unwrap();
    let catalog = boards::Catalog::builtin().unwrap();
    let board = catalog.get("microbit").unwrap();
    let bootloader =
        imager::run::read_bootloader(out.join("bootloader").to_str().unwrap(), board).unwrap();
    let flash = imager::run::flash_image(board, &file, Some(&bootloader)).unwrap();
    let serial = imager::run::Serial::Stdio;
    let mut child =
        imager::run::start(board, &flash, &serial, true, "qemu-system-arm", &[]).unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let expected = format!("fwi demo os: image {id} version 1.0.0");
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let done = line.contains("fwi demo os: ready");
                seen.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no `ready` from the demo OS within 60 s; the UART said: {seen:#?}");
    assert!(seen.iter().any(|l| l.starts_with(&expected)), "{seen:#?}");
    assert!(seen.iter().any(|l| l.contains("app says: demo app")), "{seen:#?}");
}
