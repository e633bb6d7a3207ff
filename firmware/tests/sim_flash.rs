//! The simulated NOR flash enforces what real parts do and cuts power as asked: the tests of
//! the boot logic are only as good as these rules.

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use firmware::flash::{FlashLayout, LayoutSpec, Region, SectorRun};
use firmware::sim::{Cut, CutKind, SimFlash};

/// 2 x 1 KiB, then 4 x 4 KiB sectors; write unit 4. (The partitions only carry the geometry.)
fn layout() -> FlashLayout {
    FlashLayout::new(LayoutSpec {
        base: 0,
        sectors: &[SectorRun { size: 1024, count: 2 }, SectorRun { size: 4096, count: 4 }],
        write_unit: 4,
        erased: 0xFF,
        slot_a: Region { offset: 0, size: 1024 },
        slot_b: Region { offset: 1024, size: 1024 + 4096 },
        state: Region { offset: 6144, size: 8192 },
        header_size: 0x100,
    })
    .unwrap()
}

#[test]
fn writes_must_be_aligned_and_hit_erased_units_once() {
    let mut flash = SimFlash::new(&layout());
    assert!(flash.write(2, &[0; 4]).is_err(), "unaligned offset");
    assert!(flash.write(0, &[0; 3]).is_err(), "partial write unit");
    flash.write(0, &[0x12, 0x34, 0xFF, 0x00]).unwrap();
    assert!(flash.write(0, &[0x12, 0x34, 0xFF, 0x00]).is_err(), "second write before an erase");
    assert_eq!(flash.stats().violations, 3);
    flash.erase(0, 1024).unwrap();
    flash.write(0, &[1, 2, 3, 4]).unwrap();
    let mut back = [0u8; 4];
    flash.read(0, &mut back).unwrap();
    assert_eq!(back, [1, 2, 3, 4]);
    assert_eq!(flash.stats().programmed, 8);
    assert_eq!(flash.stats().erases, 1);
}

#[test]
fn erases_follow_the_mixed_sector_grid() {
    let mut flash = SimFlash::new(&layout());
    assert!(flash.erase(0, 512).is_err(), "half a sector");
    assert!(flash.erase(1024, 4096).is_err(), "not a sector end");
    flash.erase(1024, 2048).unwrap();
    flash.erase(2048, 6144).unwrap();
    flash.erase(0, 18432).unwrap();
    assert_eq!(flash.stats().erases, 1 + 1 + 6);
}

#[test]
fn power_cuts_before_after_and_torn() {
    let data = [0x5Au8; 256];
    for (kind, check) in [
        (CutKind::Before, "nothing written"),
        (CutKind::After, "all written"),
        (CutKind::Torn(3), "a prefix written"),
    ] {
        let mut flash = SimFlash::new(&layout());
        flash.cut(Some(Cut { at: 1, kind }));
        flash.write(2048, &data).unwrap(); // operation 0
        assert!(flash.write(3072, &data).is_err(), "{check}: the cut operation fails");
        assert!(flash.is_off());
        assert!(flash.erase(0, 1024).is_err(), "no power, no operations");
        flash.power_on();
        let written = &flash.read_vec(3072, 256)[..];
        match kind {
            CutKind::Before => assert!(written.iter().all(|&b| b == 0xFF)),
            CutKind::After => assert_eq!(written, &data[..]),
            CutKind::Torn(_) => {
                let full = written.iter().take_while(|&&b| b == 0x5A).count();
                assert!(full < 256 && full % 4 == 0, "{full}");
                // After the torn unit, nothing was programmed.
                assert!(written[full + 4..].iter().all(|&b| b == 0xFF));
            }
        }
        assert_eq!(flash.stats().violations, 0);
    }
}

#[test]
fn torn_erases_leave_partial_or_garbage_content() {
    let mut outcomes = (0, 0);
    for seed in 0..40 {
        let mut flash = SimFlash::new(&layout());
        flash.load(2048, &[0u8; 4096]);
        flash.cut(Some(Cut { at: 0, kind: CutKind::Torn(seed) }));
        assert!(flash.erase(2048, 6144).is_err());
        flash.power_on();
        let unit = flash.read_vec(2048, 4096);
        let erased = unit.iter().take_while(|&&b| b == 0xFF).count();
        if unit[erased..].iter().all(|&b| b == 0) {
            outcomes.0 += 1; // erased up to the cut, old content after it
        } else {
            outcomes.1 += 1; // garbage
        }
        // Whatever it left, writing needs a new erase unless the unit reads erased.
        if !unit.iter().all(|&b| b == 0xFF) {
            assert!(
                flash.write(6140, &[1, 2, 3, 4]).is_err()
                    || unit[4092..].iter().all(|&b| b == 0xFF)
            );
        }
    }
    assert!(outcomes.0 > 5 && outcomes.1 > 5, "{outcomes:?}");
}

// Storage is sparse: erased units hold no memory, written ones do until erased.

#[test]
fn erased_units_allocate_nothing_and_read_erased() {
    let mut flash = SimFlash::new(&layout());
    let fresh = flash.heap_bytes();
    assert_eq!(flash.units_in_use(), 0);
    // The flash is 18 KiB; a fresh one holds far less (the unit slots and the grid).
    assert!(fresh < 512, "{fresh} bytes");
    let mut back = [0u8; 300];
    flash.read(1000, &mut back).unwrap(); // across the first two units
    assert!(back.iter().all(|&b| b == 0xFF));
    assert_eq!(flash.read_vec(6144, 4096), vec![0xFF; 4096]);
    assert_eq!(flash.data(), vec![0xFF; 18432]);
    // Erasing erased units, reading and failed operations allocate nothing.
    flash.erase(0, 18432).unwrap();
    assert!(flash.write(2, &[0; 4]).is_err());
    assert!(flash.read(18430, &mut [0u8; 4]).is_err());
    assert_eq!((flash.units_in_use(), flash.heap_bytes()), (0, fresh));
}

#[test]
fn heap_grows_with_written_units_and_erase_frees_them() {
    let mut flash = SimFlash::new(&layout());
    let fresh = flash.heap_bytes();
    flash.write(0, &[1, 2, 3, 4]).unwrap();
    let one = flash.heap_bytes();
    assert!(one >= fresh + 1024, "{fresh} -> {one}");
    flash.write(8, &[5; 8]).unwrap(); // same unit: nothing more
    assert_eq!((flash.units_in_use(), flash.heap_bytes()), (1, one));
    flash.write(6144 + 4092, &[6; 8]).unwrap(); // across two 4 KiB units
    assert_eq!(flash.units_in_use(), 3);
    assert!(flash.heap_bytes() >= one + 8192);
    assert_eq!(flash.read_vec(6144 + 4088, 16), [[0xFF; 4], [6; 4], [6; 4], [0xFF; 4]].concat());
    flash.erase(6144, 10240).unwrap();
    assert_eq!(flash.units_in_use(), 2);
    assert_eq!(flash.read_vec(6144 + 4088, 16), [&[0xFF; 8][..], &[6; 4], &[0xFF; 4]].concat());
    // Only the erased unit may be written again.
    flash.write(6144 + 4092, &[7; 4]).unwrap();
    assert!(flash.write(10240, &[7; 4]).is_err());
    flash.erase(0, 18432).unwrap();
    assert_eq!((flash.units_in_use(), flash.heap_bytes()), (0, fresh));
    assert_eq!(flash.data(), vec![0xFF; 18432]);
}

#[test]
fn writing_erased_values_still_counts_as_written() {
    let mut flash = SimFlash::new(&layout());
    flash.write(1024, &[0xFF; 8]).unwrap();
    assert_eq!(flash.units_in_use(), 1, "the write unit's written bit needs storage");
    assert!(flash.write(1024, &[0; 4]).is_err(), "written once already");
    assert!(flash.write(1028, &[0; 4]).is_err());
    flash.write(1032, &[0; 4]).unwrap();
    // Factory programming marks the write units it touches too.
    flash.load(3000, &[0xFF; 2]);
    assert!(flash.write(3000, &[0; 4]).is_err());
    flash.write(3004, &[0; 4]).unwrap();
    assert_eq!(flash.stats().violations, 3);
}

#[test]
fn clones_are_independent() {
    let mut flash = SimFlash::new(&layout());
    flash.write(2048, &[1; 16]).unwrap();
    let mut copy = flash.clone();
    assert_eq!(copy.data(), flash.data());
    copy.write(2064, &[2; 4]).unwrap();
    copy.erase(0, 1024).unwrap();
    flash.erase(2048, 6144).unwrap();
    flash.write(0, &[3; 4]).unwrap();
    assert_eq!(flash.read_vec(2048, 24), vec![0xFF; 24]);
    assert_eq!(flash.read_vec(0, 4), [3; 4]);
    assert_eq!(copy.read_vec(2048, 24), [&[1; 16][..], &[2; 4], &[0xFF; 4]].concat());
    assert_eq!(copy.read_vec(0, 4), [0xFF; 4]);
    assert!(copy.write(2048, &[0; 4]).is_err(), "the clone keeps its written bits");
    assert_eq!((flash.units_in_use(), copy.units_in_use()), (1, 1));
    assert_eq!((flash.stats().erases, copy.stats().erases), (1, 1));
}

#[test]
fn a_micro_bit_holds_only_the_units_it_wrote() {
    use firmware::sim::Rng;
    use firmware::sim::build::{TestKeys, identity, image, release};
    use firmware::sim::device::SimDevice;
    use firmware::update::Confirmation;

    let layout =
        boards::Catalog::builtin().unwrap().get("microbit").unwrap().flash_layout().unwrap();
    let keys = TestKeys::default();
    // Images ending in the 5th 1 KiB unit of slot A: about 5 KB installed.
    let v1 = image(&layout, "microbit", "1.0.0", 1, 5, 1, &keys.build);
    let v2 = image(&layout, "microbit", "2.0.0", 2, 5, 2, &keys.build);
    let mut device = SimDevice::new(layout.clone(), identity("microbit", "test", &keys));
    let fresh = device.flash.heap_bytes();
    device.provision(&v1.bytes).unwrap();
    device.set_counters(1, 0).unwrap();
    let provisioned = (device.flash.units_in_use(), device.flash.heap_bytes());
    assert_eq!(device.boot().unwrap().image.id, v1.id);
    let rel = release(&v2, "test", 1, &keys.environment);
    device.download(&rel, &v2.bytes, 700, &mut Rng::new(1)).unwrap();
    let downloaded = (device.flash.units_in_use(), device.flash.heap_bytes());
    let booted = device.boot().unwrap();
    assert!(booted.trial && booted.image.id == v2.id);
    assert!(matches!(device.confirm(), Ok(Confirmation::Confirmed(_))));
    assert_eq!(device.boot().unwrap().image.id, v2.id);
    let updated = (device.flash.units_in_use(), device.flash.heap_bytes());
    eprintln!(
        "micro:bit ({} KiB flash): fresh {fresh} B; provisioned {provisioned:?}; downloaded \
         {downloaded:?}; updated {updated:?} (units in use, heap bytes)",
        layout.size() / 1024
    );
    assert_eq!(device.flash.stats().violations, 0);
    // 256 units of 1 KiB: a fresh flash holds only their slots, an updated one a few dozen units.
    assert!(fresh < 8 * 1024, "{fresh}");
    assert!(provisioned.0 <= 8 && provisioned.1 < 16 * 1024, "{provisioned:?}");
    assert!(updated.0 <= 24 && updated.1 < 32 * 1024, "{updated:?}");
}
