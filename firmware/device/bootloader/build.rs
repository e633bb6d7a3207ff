//! Everything board- and key-specific comes in at build time, from the same files the host tools
//! use: the flash layout and memory map from `boards/defs/microbit.toml`, and the build keys the
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

    let units = board.erase_units();
    assert!(
        units.iter().all(|u| u.1 == units[0].1),
        "{}: this bootloader's generator handles uniform erase units only",
        board.name
    );
    let mut layout = String::new();
    let _ = writeln!(layout, "/// Flash geometry and partitions of board `{}`.", board.name);
    let _ = writeln!(
        layout,
        "pub const SPEC: LayoutSpec<'static> = LayoutSpec {{ base: {:#x}, sectors: &[SectorRun {{ size: {:#x}, count: {} }}], write_unit: {}, erased: {:#x}, slot_a: Region {{ offset: {:#x}, size: {:#x} }}, slot_b: Region {{ offset: {:#x}, size: {:#x} }}, state: Region {{ offset: {:#x}, size: {:#x} }}, header_size: {:#x} }};",
        board.flash.base,
        board.erase_units().first().map_or(0, |u| u.1),
        board.erase_units().len(),
        board.flash.write_unit,
        board.flash.erased_value,
        p.slot_a.offset,
        p.slot_a.size,
        p.slot_b.offset,
        p.slot_b.size,
        p.state.offset,
        p.state.size,
        board.image.header_size,
    );
    let _ = writeln!(
        layout,
        "/// The board's name, as images name it.\npub const BOARD: &str = {:?};",
        board.name
    );
    let _ = writeln!(
        layout,
        "/// Flash size in bytes.\npub const FLASH_SIZE: u32 = {:#x};",
        board.flash.size
    );
    let _ = writeln!(
        layout,
        "/// Where the OS's vector table is: slot A's first byte after the image header.\npub const OS_VECTORS: u32 = {:#x};",
        board.slot_a_address() + board.image.header_size
    );

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
    std::fs::write(out.join("board.rs"), layout).expect("write board.rs");
}
