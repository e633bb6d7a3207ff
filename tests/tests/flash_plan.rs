//! The flash plan for every shipped board: it erases whole partitions, programs only inside
//! what it erased, writes the state log last, and leaves a flash on which the device's own boot
//! logic starts the image, confirmed. The factory files (Intel HEX, binary, ELF) of every board
//! hold exactly the plan's bytes, read back by imager's reader and by GNU objcopy.

mod common;

use boards::{Board, Catalog, PartitionName};
use common::{objcopy_binary, path, read_back};
use firmware::boot::{BootConfig, boot};
use firmware::sim::SimFlash;
use firmware::sim::build::{TestKeys, image, trusted};
use firmware::state::{ImageTag, OutcomeKind, Phase, StateLog};
use imager::factory::{Format, factory};
use imager::input::{Input, InputKind, Segment};
use imager::plan::FlashPlan;

/// A signed image of at least 8 KiB for `board`, with security counter 7.
fn image_for(board: &Board) -> Vec<u8> {
    let layout = board.flash_layout().unwrap();
    let units = layout.units_for(8 * 1024);
    image(&layout, &board.name, "1.2.3", 7, units, 11, &TestKeys::default().build).bytes
}

/// A 5000-byte "bootloader" at the start of the board's bootloader partition.
fn bootloader_for(board: &Board) -> Input {
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 13 + i / 251) as u8).collect();
    Input {
        path: "bootloader.bin".into(),
        kind: InputKind::Raw,
        segments: vec![Segment {
            address: board.address(board.partitions.bootloader.offset),
            bytes,
        }],
    }
}

#[test]
fn every_board_gets_a_plan_its_boot_logic_starts_confirmed() {
    let catalog = Catalog::builtin().unwrap();
    assert!(catalog.boards().len() >= 4);
    for board in catalog.boards() {
        let name = &board.name;
        let file = image_for(board);
        let plan = FlashPlan::new(board, &file, Some(&bootloader_for(board))).unwrap();

        // Every partition erased, whole; each program inside an erased partition, its own.
        let erased: Vec<_> = plan.erase.iter().map(|e| e.partition).collect();
        let expected = [
            PartitionName::State,
            PartitionName::Bootloader,
            PartitionName::SlotA,
            PartitionName::SlotB,
        ];
        assert_eq!(erased, expected, "{name}: the state partition first");
        for e in &plan.erase {
            let part = board.partitions.get(e.partition);
            assert_eq!((e.address, e.size), (board.address(part.offset), part.size), "{name}");
        }
        for p in &plan.program {
            let part = board.partitions.get(p.partition);
            let start = u64::from(board.address(part.offset));
            assert!(u64::from(p.address) >= start && p.end() <= start + u64::from(part.size));
        }
        let order: Vec<_> = plan.program.iter().map(|p| p.partition).collect();
        assert_eq!(
            order,
            [PartitionName::Bootloader, PartitionName::SlotA, PartitionName::State],
            "{name}: the state log goes last"
        );

        // The device's boot logic, on this flash, starts the image confirmed.
        let layout = board.flash_layout().unwrap();
        let mut flash = SimFlash::new(&layout);
        flash.load(0, &plan.flash());
        let keys = [trusted(&TestKeys::default().build)];
        let config = BootConfig { board: Some(name.as_str()), ..BootConfig::new(&keys) };
        let booted = boot(&mut flash, &layout, &config).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(booted.image.id, plan.image, "{name}");
        assert!(!booted.trial, "{name}: boots confirmed, not on trial");
        let state = *StateLog::open(&mut flash, &layout).unwrap().state();
        assert_eq!(state.phase, Phase::Idle, "{name}");
        assert_eq!(state.min_security_counter, 7, "{name}: the image's counter is the minimum");
        let outcome = state.outcome.unwrap();
        assert_eq!(
            (outcome.kind, outcome.image),
            (OutcomeKind::Updated, ImageTag::of(&plan.image))
        );
    }
}

#[test]
fn every_boards_factory_files_hold_the_plans_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::builtin().unwrap();
    for board in catalog.boards() {
        let name = &board.name;
        let plan = FlashPlan::new(board, &image_for(board), Some(&bootloader_for(board))).unwrap();
        let flash = plan.flash();
        let bin = factory(&plan, Format::Bin).unwrap();
        assert_eq!(bin[..], flash[..bin.len()], "{name}");
        assert!(flash[bin.len()..].iter().all(|&b| b == board.flash.erased_value), "{name}");

        for (format, ext) in [(Format::Hex, "hex"), (Format::Elf, "elf")] {
            let file = path(&dir, &format!("{name}.{ext}"));
            std::fs::write(&file, factory(&plan, format).unwrap()).unwrap();
            // imager's own reader: the same bytes at the same addresses; GNU objcopy: from the
            // lowest address (the bootloader, at the flash's base), gaps erased.
            let erased = board.flash.erased_value;
            let back = read_back(&file, board.flash.base, erased, bin.len());
            assert!(back == bin, "{name}: {ext} read back differs");
            let input = if ext == "hex" { "ihex" } else { "elf32-littlearm" };
            assert!(objcopy_binary(&file, input, erased) == bin, "{name}: objcopy of the {ext}");
        }
    }
}

#[test]
fn every_boards_plan_is_what_probe_rs_is_given_and_its_chip_holds_it() {
    let catalog = Catalog::builtin().unwrap();
    for board in catalog.boards() {
        let name = &board.name;
        let plan = FlashPlan::new(board, &image_for(board), Some(&bootloader_for(board))).unwrap();
        let target = imager::probe::target(&board.chip).unwrap();
        let downloads = imager::probe::downloads(&plan, &target).unwrap();
        let what: Vec<_> = downloads.iter().map(|(what, _)| *what).collect();
        assert_eq!(
            what,
            ["image", "state"],
            "{name}: the state log in a download of its own, last"
        );
        let mut given: Vec<(u64, Vec<u8>)> = downloads
            .iter()
            .flat_map(|(_, loader)| loader.data().map(|(at, bytes)| (at, bytes.to_vec())))
            .collect();
        let mut planned: Vec<(u64, Vec<u8>)> =
            plan.program.iter().map(|p| (u64::from(p.address), p.bytes.clone())).collect();
        given.sort();
        planned.sort();
        assert!(given == planned, "{name}: probe-rs is given exactly the plan's bytes");
    }

    // A chip whose flash is smaller than the board's: probe-rs refuses the data before any
    // probe is looked for, naming what does not fit.
    let microbit = catalog.get("microbit").unwrap();
    let plan = FlashPlan::new(microbit, &image_for(microbit), None).unwrap();
    let small = imager::probe::target("nRF51822_xxAB").unwrap();
    let err = format!("{:#}", imager::probe::downloads(&plan, &small).err().unwrap());
    assert!(err.contains("state log") && err.contains("on nRF51822_xxAB"), "{err}");
    let err = imager::probe::target("nRF51999").err().unwrap().to_string();
    assert!(err.contains("chip \"nRF51999\""), "{err}");
}
