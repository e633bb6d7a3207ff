//! The power-cut campaign on patch installs, on every shipped board's geometry: a device
//! rebuilding v2 in slot B from slot A and a patch is cut before, after and in the middle of
//! flash operations (a sample here; `cargo run --release -p firmware --example power-cut --
//! --delta` cuts at every one), resumes from its last checkpoint, and must end on the right,
//! correctly signed image: never bricked, never an image that is neither v1 nor v2.

use boards::Catalog;
use firmware::flash::Slot;
use firmware::sim::campaign::{self, Plan, Tally};

fn check(name: &str, units: u32, fresh_step: u64, fill_step: u64, fill_levels: &[u32]) {
    let layout = Catalog::builtin().unwrap().get(name).unwrap().flash_layout().unwrap();
    let units = units.min(layout.unit_count(layout.slot(Slot::A)));
    let tally = Tally::default();
    for variant in campaign::delta_variants(&layout, name, units, fill_levels.iter().copied()) {
        let step = if variant.log_full { fill_step } else { fresh_step };
        let plan = Plan { step, torn_seeds: 1, second_every: 5, threads: 2 };
        campaign::run(&variant.scenario, &variant.label, plan, &tally);
    }
    assert_eq!(tally.bricked(), 0, "{:#?}", tally.failures());
    assert!(tally.cuts() > 200, "only {} cuts", tally.cuts());
}

#[test]
fn microbit_patch_install_survives_power_cuts() {
    check("microbit", 8, 2, 13, &[0, 7, 14]);
}

#[test]
fn nrf52840dk_patch_install_survives_power_cuts() {
    check("nrf52840dk", 3, 3, 17, &[5]);
}

#[test]
fn nucleo_f411re_patch_install_survives_power_cuts() {
    check("nucleo-f411re", 1, 17, 101, &[3]);
}

#[test]
fn rpi_pico_patch_install_survives_power_cuts() {
    check("rpi-pico", 3, 3, 17, &[9]);
}
