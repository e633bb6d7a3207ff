//! Everything board- and key-specific comes in at build time, from the same files the host tools
//! use: the memory map from `boards/defs/microbit.toml` (the layout comes through the `nrf51`
//! crate, from the same file), and the build keys the
//! bootloader trusts from `FWI_BOOT_KEYS` (`;`-separated paths of Ed25519 public key PEM files,
//! as `imager keygen` writes them). Nothing is trusted by default: without keys the build stops.

use std::fmt::Write as _;
use std::path::PathBuf;

use ed25519_dalek::pkcs8::DecodePublicKey;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let board_file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../boards/defs/microbit.toml");
    println!("cargo:rerun-if-changed={}", board_file.display());
    println!("cargo:rerun-if-env-changed=FWI_BOOT_KEYS");
    let board = boards::Board::load(&board_file)
        .unwrap_or_else(|e| panic!("{}: {e}", board_file.display()));
    let p = &board.partitions;

    // The linker refuses a bootloader that does not fit its partition.
    let memory = format!(
        "/* Generated from {} */\nMEMORY\n{{\n  FLASH : ORIGIN = {:#x}, LENGTH = {:#x}\n  RAM : ORIGIN = {:#x}, LENGTH = {:#x}\n}}\n",
        board.name,
        board.flash.base + p.bootloader.offset,
        p.bootloader.size,
        board.ram.base,
        board.ram.size,
    );
    std::fs::write(out.join("memory.x"), memory).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");

    let mut layout = String::new();
    let keys = std::env::var("FWI_BOOT_KEYS").unwrap_or_else(|_| {
        panic!("set FWI_BOOT_KEYS to the build public key(s) the bootloader trusts (PEM files from `imager keygen`, `;`-separated)")
    });
    let mut list = Vec::new();
    for path in keys.split(';').filter(|s| !s.is_empty()) {
        println!("cargo:rerun-if-changed={path}");
        let pem =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("FWI_BOOT_KEYS: {path}: {e}"));
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem).unwrap_or_else(|e| {
            panic!("FWI_BOOT_KEYS: {path}: not an Ed25519 public key PEM: {e}")
        });
        list.push(key.to_bytes());
    }
    assert!(!list.is_empty(), "FWI_BOOT_KEYS names no key");
    let _ = writeln!(
        layout,
        "/// The build keys this bootloader trusts (from FWI_BOOT_KEYS).\npub const KEYS: [[u8; 32]; {}] = {:?};",
        list.len(),
        list
    );
    std::fs::write(out.join("keys.rs"), layout).expect("write keys.rs");
}
