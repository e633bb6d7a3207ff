//! `imager factory` on the command line: the programming file holds exactly the flash plan's
//! bytes (what `imager run` lays into the flash and `imager flash` programs), at the same
//! addresses, in Intel HEX (read back by our reader and by Debian's `arm-none-eabi-objcopy`),
//! as ELF and as a padded binary. `flash_plan.rs` checks the plan and the files for every board.

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
fn hex_bin_and_elf_hold_the_flash_imager_run_would_program() {
    let dir = tempfile::tempdir().unwrap();
    let (image, bootloader, boot_bytes) = inputs(&dir);
    let (bin, hex, elf) =
        (path(&dir, "factory.bin"), path(&dir, "factory.hex"), path(&dir, "factory.elf"));
    for (format, out) in [("bin", &bin), ("hex", &hex), ("elf", &elf)] {
        ok(
            None,
            &["factory", &image, "--bootloader", &bootloader, "--format", format, "--out", out],
        );
    }

    // The binary is the flash `imager run` builds, cut after its last programmed byte.
    let catalog = boards::Catalog::builtin().unwrap();
    let board = catalog.get("microbit").unwrap();
    let loader = imager::run::read_bootloader(&bootloader, board).unwrap();
    let plan = imager::plan::FlashPlan::new(board, &std::fs::read(&image).unwrap(), Some(&loader))
        .unwrap();
    let flash = plan.flash();
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

    // The HEX and ELF read back by imager's own reader: the same bytes at the same addresses.
    // And by GNU objcopy, gaps filled with the erased value.
    for (file, format) in [(&hex, "ihex"), (&elf, "elf32-littlearm")] {
        let erased = board.flash.erased_value;
        assert!(read_back(file, board.flash.base, erased, bin.len()) == bin, "{file}");
        assert!(objcopy_binary(file, format, erased) == bin, "{file}");
    }

    // The ELF's segments name their partitions, as `arm-none-eabi-readelf` shows them.
    let readelf = Command::new("arm-none-eabi-readelf").args(["-lS", &elf]).output().unwrap();
    let text = String::from_utf8_lossy(&readelf.stdout);
    assert!(readelf.status.success(), "{text}");
    for section in [".bootloader", ".slot_a", ".state"] {
        assert!(text.contains(section), "{section} in\n{text}");
    }
    assert_eq!(text.matches("  LOAD ").count(), 3, "{text}");
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
