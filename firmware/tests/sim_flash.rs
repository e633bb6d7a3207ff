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
        let written = &flash.data()[3072..3072 + 256];
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
        let unit = flash.data()[2048..6144].to_vec();
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
