//! The device code builds for a Cortex-M0 (`thumbv6m-none-eabi`) without `std`, so the image
//! parser and verifier really are `no_std`. Needs `rustup target add thumbv6m-none-eabi`.

use std::process::Command;

#[test]
fn firmware_builds_for_thumbv6m_without_std() {
    let target_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-std");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "firmware", "--target", "thumbv6m-none-eabi"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "firmware must build for thumbv6m-none-eabi (rustup target add thumbv6m-none-eabi):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rlib = target_dir.join("thumbv6m-none-eabi/release/libfirmware.rlib");
    assert!(rlib.exists(), "{} missing", rlib.display());
}
