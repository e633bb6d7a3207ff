//! Everything board- and device-specific comes in at build time, from the same files the host
//! tools use: the memory map from `boards/defs/microbit.toml` (the layout comes through the
//! `nrf51` crate, from the same file), and the provisioning record this build places in the
//! partition's last erase unit (see `firmware::provision`):
//!
//! - `FWI_BOOT_KEYS`: the build keys images must be signed by (`;`-separated paths of Ed25519
//!   public key PEM files, as `imager keygen` writes them). Nothing is trusted by default:
//!   without keys the build stops.
//! - `FWI_ENVIRONMENT`, `FWI_ENVIRONMENT_KEYS`: the environment the device belongs to and the
//!   public keys its releases are signed by. Without them the device boots but refuses every
//!   update offer.

use std::path::PathBuf;

use ed25519_dalek::pkcs8::DecodePublicKey;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let board_file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../boards/defs/microbit.toml");
    println!("cargo:rerun-if-changed={}", board_file.display());
    println!("cargo:rerun-if-env-changed=FWI_ENVIRONMENT");
    let environment = std::env::var("FWI_ENVIRONMENT").unwrap_or_default();
    let board = boards::Board::load(&board_file)
        .unwrap_or_else(|e| panic!("{}: {e}", board_file.display()));
    let p = &board.partitions;

    // The linker refuses a bootloader that does not fit its partition (less the last erase
    // unit, which holds the provisioning record).
    let unit = board.erase_units()[0].1;
    let start = board.flash.base + p.bootloader.offset;
    let memory = format!(
        "/* Generated from {} */\nMEMORY\n{{\n  FLASH : ORIGIN = {start:#x}, LENGTH = {:#x}\n  PROVISION : ORIGIN = {:#x}, LENGTH = {unit:#x}\n  RAM : ORIGIN = {:#x}, LENGTH = {:#x}\n}}\nSECTIONS\n{{\n  .provision : {{ KEEP(*(.provision)); }} > PROVISION\n}}\nINSERT AFTER .rodata;\n",
        board.name,
        p.bootloader.size - unit,
        start + p.bootloader.size - unit,
        board.ram.base,
        board.ram.size,
    );
    std::fs::write(out.join("memory.x"), memory).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");

    // The provisioning record this build carries in the partition's last erase unit.
    let record = firmware::provision::Provision {
        environment: &environment,
        build_keys: keys_from("FWI_BOOT_KEYS", true)
            .as_slice()
            .try_into()
            .expect("at most 2 build keys (firmware::provision::MAX_KEYS)"),
        environment_keys: keys_from("FWI_ENVIRONMENT_KEYS", false)
            .as_slice()
            .try_into()
            .expect("at most 2 environment keys (firmware::provision::MAX_KEYS)"),
        root: None,
    }
    .encode();
    std::fs::write(
        out.join("provision.rs"),
        format!(
            "/// The provisioning record, from FWI_BOOT_KEYS, FWI_ENVIRONMENT and FWI_ENVIRONMENT_KEYS.\npub static RECORD: [u8; {}] = {:?};\n",
            record.len(),
            record
        ),
    )
    .expect("write provision.rs");
}

/// The Ed25519 public keys named by the `;`-separated PEM paths in the variable `var`.
fn keys_from(var: &str, required: bool) -> Vec<[u8; 32]> {
    println!("cargo:rerun-if-env-changed={var}");
    let paths = match std::env::var(var) {
        Ok(paths) => paths,
        Err(_) if !required => return Vec::new(),
        Err(_) => panic!(
            "set {var} to the build public key(s) the bootloader trusts (PEM files from `imager keygen`, `;`-separated)"
        ),
    };
    let mut list = Vec::new();
    for path in paths.split(';').filter(|s| !s.is_empty()) {
        println!("cargo:rerun-if-changed={path}");
        let pem = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{var}: {path}: {e}"));
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
            .unwrap_or_else(|e| panic!("{var}: {path}: not an Ed25519 public key PEM: {e}"));
        list.push(key.to_bytes());
    }
    assert!(!required || !list.is_empty(), "{var} names no key");
    list
}
