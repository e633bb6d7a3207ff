//! The shipped board files validate; broken ones are refused for the right reason.

use boards::{Board, BoardError, Catalog, EraseLayout};

const MICROBIT: &str = include_str!("../defs/microbit.toml");
const F411: &str = include_str!("../defs/nucleo-f411re.toml");

fn refuse(text: &str, field: &str, words: &str) {
    match Board::from_toml(text, "test.toml", None) {
        Err(BoardError::Invalid { field: f, message, .. }) => {
            assert_eq!(f, field, "{message}");
            assert!(message.contains(words), "{field}: {message:?} lacks {words:?}");
        }
        other => panic!("expected {field} to be refused, got {other:?}"),
    }
}

fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the board file");
    text.replacen(from, to, 1)
}

#[test]
fn every_shipped_board_validates() {
    let catalog = Catalog::builtin().unwrap();
    let names: Vec<&str> = catalog.boards().iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["microbit", "nrf52840dk", "nucleo-f411re", "rpi-pico"]);
    // Every file in defs/ is compiled in.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("defs");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, names);
    for board in catalog.boards() {
        assert_eq!(Board::load(&dir.join(format!("{}.toml", board.name))).unwrap(), *board);
    }
}

#[test]
fn shipped_boards_match_their_datasheets() {
    let catalog = Catalog::builtin().unwrap();
    let microbit = catalog.get("microbit").unwrap();
    assert_eq!(
        (microbit.chip.as_str(), microbit.flash.base, microbit.flash.size),
        ("nRF51822_xxAA", 0, 256 << 10)
    );
    assert_eq!(microbit.flash.erase, EraseLayout::Uniform(1024));
    assert_eq!(microbit.flash.write_unit, 4);
    assert_eq!(microbit.qemu_machine.as_deref(), Some("microbit"));
    assert_eq!(microbit.link_address(), 0x1_0400);

    let f411 = catalog.get("nucleo-f411re").unwrap();
    assert_eq!(f411.chip, "STM32F411RETx");
    let sizes: Vec<u32> = f411.erase_units().iter().map(|u| u.1 >> 10).collect();
    assert_eq!(sizes, [16, 16, 16, 16, 64, 128, 128, 128]);
    assert_eq!(f411.erase_units_in(f411.partitions.slot_b).len(), 2);
    assert_eq!(
        f411.erase_units_in(f411.partitions.state),
        [(0xC000, 0x4000), (0x1_0000, 0x1_0000)]
    );
    assert_eq!(f411.link_address(), 0x0802_0400);

    let nrf = catalog.get("nrf52840dk").unwrap();
    assert_eq!((nrf.chip.as_str(), nrf.flash.size), ("nRF52840_xxAA", 1 << 20));
    assert_eq!(nrf.flash.erase, EraseLayout::Uniform(4096));

    let pico = catalog.get("rpi-pico").unwrap();
    assert_eq!(
        (pico.chip.as_str(), pico.flash.base, pico.flash.size),
        ("RP2040", 0x1000_0000, 2 << 20)
    );
    assert_eq!(pico.flash.erase, EraseLayout::Uniform(4096));
    assert_eq!(pico.link_address(), 0x1001_0400);
}

#[test]
fn broken_partitions_are_refused_naming_the_field() {
    refuse(
        &edit(MICROBIT, "slot_b     = { offset = 0x2_6C00", "slot_b     = { offset = 0x2_6800"),
        "partitions.slot_b",
        "overlaps partitions.slot_a",
    );
    refuse(
        &edit(MICROBIT, "state      = { offset = 0x3_E000", "state      = { offset = 0x3_F000"),
        "partitions.state",
        "leaves flash",
    );
    refuse(
        &edit(MICROBIT, "slot_a     = { offset = 0x1_0000", "slot_a     = { offset = 0x1_0100"),
        "partitions.slot_a.offset",
        "not on an erase boundary (nearest: 0x10000 or 0x10400)",
    );
    let slot_b = "slot_b     = { offset = 0x2_6C00, size = 0x1_7400 }";
    refuse(
        &edit(MICROBIT, slot_b, "slot_b     = { offset = 0x2_6C00, size = 0x1_6800 }"),
        "partitions.slot_b.size",
        "cannot hold what slot A",
    );
    // As large as slot A is not enough: the swap needs one more erase unit.
    refuse(
        &edit(MICROBIT, slot_b, "slot_b     = { offset = 0x2_6C00, size = 0x1_6C00 }"),
        "partitions.slot_b.size",
        "plus the erase unit of room a swap needs",
    );
    refuse(
        &edit(MICROBIT, "size = 0x2000 }", "size = 0x400 }"),
        "partitions.state.size",
        "two erase units",
    );
    refuse(
        &edit(
            MICROBIT,
            "state      = { offset = 0x3_E000, size = 0x2000 }",
            "state      = { offset = 0x3_E000, size = 0x1F00 }",
        ),
        "partitions.state.size",
        "not on an erase boundary",
    );
    // Mixed sectors: 0xD000 lies inside the 16 KiB sector 0xC000..0x10000.
    refuse(
        &edit(
            F411,
            "state      = { offset = 0x0_C000, size = 0x1_4000 }",
            "state      = { offset = 0x0_D000, size = 0x1_3000 }",
        ),
        "partitions.state.offset",
        "(nearest: 0xc000 or 0x10000)",
    );
    // A 128 KiB sector cannot be split between two partitions.
    refuse(
        &edit(
            F411,
            "slot_b     = { offset = 0x4_0000, size = 0x4_0000 }",
            "slot_b     = { offset = 0x5_0000, size = 0x3_0000 }",
        ),
        "partitions.slot_b.offset",
        "not on an erase boundary",
    );
}

#[test]
fn broken_geometry_is_refused_naming_the_field() {
    refuse(
        &edit(F411, "{ size = 0x4000, count = 4 }", "{ size = 0x4000, count = 3 }"),
        "flash.sectors",
        "add up to",
    );
    refuse(
        &edit(MICROBIT, "erased_value = 0xFF", "erased_value = 0x12"),
        "flash.erased_value",
        "0xFF or 0x00",
    );
    refuse(&edit(MICROBIT, "write_unit = 4", "write_unit = 3"), "flash.write_unit", "power of two");
    refuse(&edit(MICROBIT, "write_unit = 4", "write_unit = 512"), "flash.write_unit", "256 bytes");
    refuse(
        &edit(MICROBIT, "erase_size = 0x400", "erase_size = 0x300"),
        "flash.erase_size",
        "divide",
    );
    refuse(
        &edit(MICROBIT, "erase_size = 0x400 ", "erase_size = 0x400\nsectors = []"),
        "flash",
        "exactly one",
    );
    refuse(
        &edit(MICROBIT, "header_size = 0x400", "header_size = 0x3FE"),
        "image.header_size",
        "multiple",
    );
    refuse(&edit(MICROBIT, "name = \"microbit\"", "name = \"Micro Bit\""), "name", "[a-z0-9_-]");
    match Board::from_toml(MICROBIT, "other.toml", Some("other")) {
        Err(BoardError::Invalid { field, message, .. }) => {
            assert_eq!(field, "name");
            assert!(message.contains("other.toml"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn toml_mistakes_are_reported_with_their_place() {
    for (text, words) in [
        (edit(MICROBIT, "[ram]", "[rma]"), "rma"),
        (edit(MICROBIT, "write_unit = 4 ", "write_unit = -4 "), "write_unit"),
        (edit(MICROBIT, "chip = \"nRF51822_xxAA\"\n", ""), "chip"),
    ] {
        let err = Board::from_toml(&text, "test.toml", None).unwrap_err().to_string();
        assert!(err.starts_with("board file test.toml:") && err.contains(words), "{err}");
    }
}

#[test]
fn user_folders_add_and_replace_boards() {
    let dir = std::env::temp_dir().join(format!("boards-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("my-bit.toml"),
        edit(MICROBIT, "name = \"microbit\"", "name = \"my-bit\""),
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let catalog = Catalog::with_dir(&dir).unwrap();
    assert!(catalog.get("my-bit").is_ok());
    assert_eq!(catalog.boards().len(), 5);
    let err = catalog.get("nope").unwrap_err().to_string();
    assert!(err.contains("unknown board \"nope\"") && err.contains("my-bit"), "{err}");
    std::fs::write(dir.join("broken.toml"), "name = 3").unwrap();
    assert!(Catalog::with_dir(&dir).unwrap_err().to_string().contains("broken.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}
