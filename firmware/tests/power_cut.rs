//! A sample of the power-cut campaign (`cargo run --release -p firmware --example power-cut`
//! runs all of it): cuts before, after and in the middle of flash operations during updates
//! that confirm and updates that revert, with second cuts during recovery and with the state
//! log moving to its next unit, on the micro:bit's, the STM32F4's (mixed sectors) and a tight
//! geometry (two markers per unit). Nothing may brick.

use boards::Catalog;
use firmware::flash::Slot;
use firmware::sim::campaign::{self, Plan, Tally};

fn check(name: &str, units: u32, fresh_step: u64, fill_step: u64, fill_levels: &[u32]) {
    let layout = match Catalog::builtin().unwrap().get(name) {
        Ok(board) => board.flash_layout().unwrap(),
        Err(_) => tight_layout(),
    };
    let units = units.min(layout.unit_count(layout.slot(Slot::A)));
    let tally = Tally::default();
    for variant in campaign::variants(&layout, name, units, fill_levels.iter().copied()) {
        let step = if variant.log_full { fill_step } else { fresh_step };
        let plan = Plan { step, torn_seeds: 1, second_every: 5, threads: 2 };
        campaign::run(&variant.scenario, &variant.label, plan, &tally);
    }
    assert_eq!(tally.bricked(), 0, "{:#?}", tally.failures());
    assert!(tally.cuts() > 300, "only {} cuts", tally.cuts());
}

fn tight_layout() -> firmware::flash::FlashLayout {
    firmware::sim::build::pages_layout(8, 9)
}

#[test]
fn microbit_survives_power_cuts() {
    check("microbit", 8, 2, 11, &[0, 5, 10, 14]);
}

#[test]
fn mixed_sector_flash_survives_power_cuts() {
    check("nucleo-f411re", 1, 17, 101, &[3, 9]);
}

#[test]
fn tight_slot_b_survives_power_cuts() {
    check("tight", 8, 2, 11, &[4, 12]);
}
