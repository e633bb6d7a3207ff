//! `imager factory`: the programming file holds exactly the bytes `imager run` lays into the
//! flash, at the same addresses, in Intel HEX (read back by our reader and by Debian's
//! `arm-none-eabi-objcopy`) and as a padded binary.

mod common;

use std::process::Command;

use common::*;

/// A micro:bit image fused from the fixtures, and a 3000-byte bootloader at address 0.
fn inputs(dir: &tempfile::TempDir) -> (String, String, Vec<u8>) {
    let key = fixture("keys/openssl-ed25519.pem");
    let (image, _) = fuse(dir, key.to_str().unwrap(), "1.0.0");
    let bootloader: Vec<u8> = (0..3000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    let file = path(dir, "bootloader.bin");
    std::fs::write(&file, &bootloader).unwrap();
    (image, format!("{file}@0x0"), bootloader)
}

#[test]
fn hex_and_bin_hold_the_flash_imager_run_would_program() {
    let dir = tempfile::tempdir().unwrap();
    let (image, bootloader, boot_bytes) = inputs(&dir);
    let (bin, hex) = (path(&dir, "factory.bin"), path(&dir, "factory.hex"));
    for (format, out) in [("bin", &bin), ("hex", &hex)] {
        ok(
            None,
            &["factory", &image, "--bootloader", &bootloader, "--format", format, "--out", out],
        );
    }

    // The binary is the flash `imager run` builds, cut after its last programmed byte.
    let catalog = boards::Catalog::builtin().unwrap();
    let board = catalog.get("microbit").unwrap();
    let loader = imager::run::read_bootloader(&bootloader, board).unwrap();
    let flash =
        imager::run::flash_image(board, &std::fs::read(&image).unwrap(), Some(&loader)).unwrap();
    let bin = std::fs::read(&bin).unwrap();
    assert_eq!(bin[..], flash[..bin.len()]);
    assert!(flash[bin.len()..].iter().all(|&b| b == board.flash.erased_value));
    assert_eq!(bin[..boot_bytes.len()], boot_bytes[..]);
    let slot_a = (board.slot_a_address() - board.flash.base) as usize;
    let installed = firmware::image::installed_form(
        &std::fs::read(&image).unwrap(),
        board.slot_a_address(),
        board.flash.erased_value,
    )
    .unwrap();
    assert_eq!(bin[slot_a..slot_a + installed.len()], installed[..]);

    // The HEX read back by imager's own reader: the same bytes at the same addresses.
    let read = imager::input::Input::read(&hex, None).unwrap();
    let mut from_hex = vec![board.flash.erased_value; bin.len()];
    for s in &read.segments {
        let at = (s.address - board.flash.base) as usize;
        from_hex[at..at + s.bytes.len()].copy_from_slice(&s.bytes);
    }
    assert_eq!(from_hex, bin);

    // And by GNU objcopy (Debian's binutils-arm-none-eabi), gaps filled with the erased value.
    let objcopy_out = path(&dir, "objcopy.bin");
    let status = Command::new("arm-none-eabi-objcopy")
        .args(["-I", "ihex", "-O", "binary", "--gap-fill", "0xff", &hex, &objcopy_out])
        .status()
        .expect("arm-none-eabi-objcopy is needed (Debian: binutils-arm-none-eabi)");
    assert!(status.success());
    assert_eq!(std::fs::read(&objcopy_out).unwrap(), bin);
}

#[test]
fn a_bootloader_outside_its_partition_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let (image, bootloader, _) = inputs(&dir);
    let out = path(&dir, "factory.hex");
    // Slot A starts at 0x10000 on the micro:bit: a "bootloader" there overlaps it.
    let misplaced = bootloader.replace("@0x0", "@0x10000");
    let err = fails(
        None,
        &["factory", &image, "--bootloader", &misplaced, "--format", "hex", "--out", &out],
    );
    assert!(err.contains("outside the bootloader partition"), "{err}");
    assert!(!std::path::Path::new(&out).exists());
}
