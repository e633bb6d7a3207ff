//! `imager flash` and `imager boards --check` on the command line: the dry run prints the
//! plan; with no probe attached (as on CI machines) flashing fails, saying so and how to check
//! permissions, before anything happens; a board file whose partition is off its chip's sector
//! grid fails the check, naming the partition.

mod common;

use common::*;

fn image(dir: &tempfile::TempDir) -> String {
    let key = fixture("keys/openssl-ed25519.pem");
    fuse(dir, key.to_str().unwrap(), "1.0.0").0
}

#[test]
fn a_dry_run_prints_the_plan_without_a_probe() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(&dir);
    let bootloader = path(&dir, "bootloader.bin");
    std::fs::write(&bootloader, vec![0x5Au8; 4000]).unwrap();
    let text =
        ok(None, &["flash", &image, "--bootloader", &format!("{bootloader}@0"), "--dry-run"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("flash plan for microbit (nRF51822_xxAA): image "), "{text}");
    // The micro:bit's partitions, erased whole, in the plan's order; then the programs.
    let expected = [
        ("erase", "0x0003e000..0x00040000", "state"),
        ("erase", "0x00000000..0x00010000", "bootloader"),
        ("erase", "0x00010000..0x00026c00", "slot_a"),
        ("erase", "0x00026c00..0x0003e000", "slot_b"),
        ("program", "0x00000000..0x00000fa0", "bootloader:"),
        ("program", "0x00010000..", "slot_a: image"),
        ("program", "0x0003e000..", "state: state log: image"),
    ];
    for (line, (verb, range, what)) in lines[1..].iter().zip(expected) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], verb, "{line}");
        assert!(words[1].starts_with(range), "{line}");
        assert!(line.contains(what), "{line}");
    }
    assert!(text.contains("confirmed, minimum security counter 0"), "{text}");
}

#[test]
fn without_a_probe_flashing_fails_saying_so_and_how_to_check_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(&dir);
    // A selector no real probe matches: on a developer's machine with a probe attached, this
    // test must not flash it. (Without --probe the search is the same, over every probe.)
    let err = fails(None, &["flash", &image, "--probe", "ffff:fffe:NO-SUCH-PROBE", "--verify"]);
    assert!(err.contains("no debug probe found matching ffff:fffe"), "{err}");
    assert!(err.contains("lsusb") && err.contains("udev rules"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A usage error (clap's exit code 2), named as such.
    let out = imager(None, &["flash", &image, "--probe", "micro:bit"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expected VID:PID or VID:PID:SERIAL"), "{err}");
}

#[test]
fn shipped_boards_match_their_chips() {
    let text = ok(None, &["boards", "--check"]);
    for board in ["microbit", "nrf52840dk", "nucleo-f411re", "rpi-pico"] {
        assert!(text.lines().any(|l| l.starts_with("ok") && l.contains(board)), "{board}: {text}");
    }
    // RP2040's entry describes the XIP window, not the flash chip: the board's size rules.
    assert!(text.contains("RP2040's flash region is 0x10000000..0x18000000 (128 MiB)"), "{text}");
}

#[test]
fn a_partition_off_the_chips_sector_grid_fails_the_check_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // The nRF52840 DK's file with 1 KiB erase units: valid as a board file, but the chip erases
    // 4 KiB sectors, so slot B's end and the state partition fall between sectors.
    let shipped = std::fs::read_to_string(fixture("../../boards/defs/nrf52840dk.toml")).unwrap();
    let fine = shipped
        .replace("name = \"nrf52840dk\"", "name = \"nrf52840-fine\"")
        .replace("erase_size = 0x1000", "erase_size = 0x400")
        .replace(
            "slot_b     = { offset = 0x08_0000, size = 0x7_2000 }",
            "slot_b = { offset = 0x08_0000, size = 0x7_0800 }",
        )
        .replace(
            "state      = { offset = 0x0F_2000, size = 0x8000 }",
            "state = { offset = 0x0F_0800, size = 0x2000 }",
        );
    assert_ne!(fine, shipped);
    std::fs::write(dir.path().join("nrf52840-fine.toml"), fine).unwrap();
    let out = imager(None, &["--boards", dir.path().to_str().unwrap(), "boards", "--check"]);
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(err.contains("1 of 5 board files do not match their chip"), "{err}");
    assert!(text.contains("FAIL nrf52840-fine (nRF52840_xxAA)"), "{text}");
    assert!(
        text.contains("partition slot_b (0x80000..0xf0800) ends at 0xf0800, off nRF52840_xxAA's sector grid (its 4 KiB sector there is 0xf0000..0xf1000)"),
        "{text}"
    );
    assert!(text.contains("partition state (0xf0800..0xf2800) starts at 0xf0800"), "{text}");
    assert!(
        text.contains("the board's erase unit at 0x400 (1 KiB) does not start on a sector"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("ok") && l.contains("nrf52840dk")), "{text}");

    // And `imager flash` refuses such a board, even for a dry run, before looking for a probe.
    let boards = dir.path().to_str().unwrap();
    let os = path(&dir, "os.bin");
    std::fs::write(&os, vec![0x11u8; 2048]).unwrap();
    let image = path(&dir, "fine.fwi");
    let key = fixture("keys/openssl-ed25519.pem");
    let fuse = ["--boards", boards, "fuse", "--board", "nrf52840-fine", "--version", "1.0.0"];
    let os_arg = format!("{os}@0x10400");
    let mut args = fuse.to_vec();
    args.extend(["--os", &os_arg, "--key", key.to_str().unwrap(), "--out", &image]);
    ok(None, &args);
    let err = fails(None, &["--boards", boards, "flash", &image, "--dry-run"]);
    assert!(
        err.contains("board nrf52840-fine does not match chip nRF52840_xxAA: partition slot_b"),
        "{err}"
    );
    assert!(err.contains("imager boards --check"), "{err}");
}
