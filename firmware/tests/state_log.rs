//! The state log: replays what was appended, skips torn records, survives power cuts while it
//! moves to its next unit, and erases a unit only when it moves into it.

use firmware::flash::{FlashLayout, LayoutSpec, Region, SectorRun};
use firmware::sim::{Cut, CutKind, SimFlash};
use firmware::state::{
    ImageTag, Outcome, OutcomeKind, Pending, Phase, Record, State, StateLog, marker_area,
};

/// State partition of 2 x 1 KiB units (32 slots each), write unit 4.
fn layout() -> FlashLayout {
    FlashLayout::new(LayoutSpec {
        base: 0,
        sectors: &[SectorRun { size: 1024, count: 32 }],
        write_unit: 4,
        erased: 0xFF,
        slot_a: Region { offset: 0, size: 8 * 1024 },
        slot_b: Region { offset: 8 * 1024, size: 10 * 1024 },
        state: Region { offset: 18 * 1024, size: 2 * 1024 },
        header_size: 0x400,
    })
    .unwrap()
}

fn outcome(n: u8) -> Record {
    Record::Outcome(Outcome { kind: OutcomeKind::Updated, image: ImageTag([n; 8]) })
}

fn reopen(flash: &mut SimFlash, layout: &FlashLayout) -> State {
    *StateLog::open(flash, layout).unwrap().state()
}

#[test]
fn a_new_partition_is_formatted_and_records_replay() {
    let layout = layout();
    let mut flash = SimFlash::new(&layout);
    let mut log = StateLog::open(&mut flash, &layout).unwrap();
    assert_eq!(*log.state(), State::default());
    log.append(&mut flash, Record::Base { min_security_counter: 4, release_sequence: 9 }).unwrap();
    log.append(&mut flash, outcome(1)).unwrap();
    let state = reopen(&mut flash, &layout);
    assert_eq!((state.min_security_counter, state.release_sequence), (4, 9));
    assert_eq!(
        state.outcome,
        Some(Outcome { kind: OutcomeKind::Updated, image: ImageTag([1; 8]) })
    );
}

#[test]
fn a_torn_record_is_skipped_and_the_next_one_counts() {
    let layout = layout();
    for seed in 0..20 {
        let mut flash = SimFlash::new(&layout);
        let mut log = StateLog::open(&mut flash, &layout).unwrap();
        log.append(&mut flash, outcome(1)).unwrap();
        let ops = flash.stats().operations;
        flash.cut(Some(Cut { at: ops, kind: CutKind::Torn(seed) }));
        assert!(log.append(&mut flash, outcome(2)).is_err());
        flash.power_on();
        flash.cut(None);
        let state = reopen(&mut flash, &layout);
        // The torn record is either complete (the cut came at its very end) or ignored.
        let image = state.outcome.unwrap().image;
        assert!(image == ImageTag([1; 8]) || image == ImageTag([2; 8]));
        let mut log = StateLog::open(&mut flash, &layout).unwrap();
        log.append(&mut flash, outcome(3)).unwrap();
        assert_eq!(reopen(&mut flash, &layout).outcome.unwrap().image, ImageTag([3; 8]));
        assert_eq!(flash.stats().violations, 0);
    }
}

#[test]
fn moving_to_the_next_unit_keeps_the_state_and_erases_only_then() {
    let layout = layout();
    let mut flash = SimFlash::new(&layout);
    let mut log = StateLog::open(&mut flash, &layout).unwrap();
    log.append(&mut flash, Record::Base { min_security_counter: 7, release_sequence: 70 }).unwrap();
    flash.reset_stats();
    // 32 slots per unit: the unit fills, the log moves on, wraps, and keeps going.
    for n in 0..100u8 {
        log.append(&mut flash, outcome(n)).unwrap();
        let state = reopen(&mut flash, &layout);
        assert_eq!(state.outcome.unwrap().image, ImageTag([n; 8]));
        assert_eq!((state.min_security_counter, state.release_sequence), (7, 70));
    }
    // About one erase per 29 records (each unit restarts with a snapshot of 3 records).
    let erases = flash.stats().erases;
    assert!((2..=4).contains(&erases), "{erases} erases");
}

#[test]
fn power_cuts_while_moving_lose_nothing() {
    let layout = layout();
    let mut base = SimFlash::new(&layout);
    let mut log = StateLog::open(&mut base, &layout).unwrap();
    log.append(&mut base, Record::Base { min_security_counter: 7, release_sequence: 70 }).unwrap();
    while log.free() >= 32 {
        log.append(&mut base, outcome(1)).unwrap();
    }
    // The next append moves the log: cut at each of its operations, in each way.
    for at in 0..8 {
        for kind in [CutKind::Before, CutKind::After, CutKind::Torn(at + 1), CutKind::Torn(at + 50)]
        {
            let mut flash = base.clone();
            let start = flash.stats().operations;
            flash.cut(Some(Cut { at: start + at, kind }));
            let mut log = StateLog::open(&mut flash, &layout).unwrap();
            let appended = log.append(&mut flash, outcome(2)).is_ok();
            flash.power_on();
            flash.cut(None);
            let state = reopen(&mut flash, &layout);
            assert_eq!(
                (state.min_security_counter, state.release_sequence),
                (7, 70),
                "{kind:?} at {at}"
            );
            let image = state.outcome.unwrap().image;
            if appended {
                assert_eq!(image, ImageTag([2; 8]));
            } else {
                assert!(image == ImageTag([1; 8]) || image == ImageTag([2; 8]));
            }
            assert_eq!(flash.stats().violations, 0);
        }
    }
}

#[test]
fn markers_count_swap_progress_even_when_torn() {
    let layout = layout();
    let mut flash = SimFlash::new(&layout);
    let mut log = StateLog::open(&mut flash, &layout).unwrap();
    let mut pending = Pending {
        release_sequence: 1,
        image: ImageTag([5; 8]),
        new_units: 6,
        old_units: 6,
        shift: 2,
        group: 1,
        done: 0,
        markers: 0,
    };
    pending.markers = marker_area(&layout, &pending);
    log.append(&mut flash, Record::Pending(pending)).unwrap();
    log.set_marker(&mut flash).unwrap();
    // A torn marker does not count; the next one goes after it.
    let ops = flash.stats().operations;
    flash.cut(Some(Cut { at: ops, kind: CutKind::Torn(4) }));
    let _ = log.set_marker(&mut flash);
    flash.power_on();
    flash.cut(None);
    let mut log = StateLog::open(&mut flash, &layout).unwrap();
    let Phase::Swapping { done, .. } = log.state().phase else { panic!() };
    assert!(done == 1 || done == 2, "{done}");
    // Markers beyond the area's spares continue in a new area.
    for _ in 0..12 {
        log.set_marker(&mut flash).unwrap();
    }
    let Phase::Swapping { done: now, .. } = reopen(&mut flash, &layout).phase else { panic!() };
    assert_eq!(now, done + 12);
    assert_eq!(flash.stats().violations, 0);
}

#[test]
fn an_initialized_log_says_slot_a_is_confirmed_whatever_the_partition_held() {
    let layout = layout();
    let mut flash = SimFlash::new(&layout);
    // An earlier life: a log that moved through both units (the later one with sequence 2+),
    // an update in progress and a high release sequence.
    let mut log = StateLog::open(&mut flash, &layout).unwrap();
    log.append(&mut flash, Record::Base { min_security_counter: 9, release_sequence: 40 }).unwrap();
    for n in 0..40 {
        log.append(&mut flash, outcome(n)).unwrap();
    }
    assert!(reopen(&mut flash, &layout).release_sequence == 40);

    StateLog::initialize(&mut flash, &layout, ImageTag([7; 8]), 3).unwrap();
    let state = reopen(&mut flash, &layout);
    assert_eq!(state.phase, Phase::Idle);
    assert_eq!((state.min_security_counter, state.release_sequence), (3, 0));
    assert_eq!(
        state.outcome,
        Some(Outcome { kind: OutcomeKind::Updated, image: ImageTag([7; 8]) })
    );
    // Only the first unit holds anything.
    let second = layout.unit(layout.state(), 1).unwrap();
    assert!(flash.read_vec(second.offset, second.size as usize).iter().all(|&b| b == 0xFF));
}
