//! The boot logic and the update agent together, on the simulated flash of every shipped
//! board: update and confirm, update and revert, and what is refused.

use boards::Catalog;
use firmware::flash::FlashLayout;
use firmware::sim::build::scenario;
use firmware::sim::device::Ending;

fn layouts() -> Vec<(String, FlashLayout)> {
    Catalog::builtin()
        .unwrap()
        .boards()
        .iter()
        .map(|b| (b.name.clone(), b.flash_layout().unwrap()))
        .collect()
}

/// Units an image of the scenario spans on a board: a few, but more than one group.
fn units_for(layout: &FlashLayout) -> u32 {
    let a = layout.unit_count(layout.slot(firmware::flash::Slot::A));
    a.min(6)
}

#[test]
fn update_then_confirm_on_every_board() {
    for (name, layout) in layouts() {
        let s = scenario(&layout, &name, units_for(&layout), Ending::Confirm, 1);
        let report = s.run(None, None, 7);
        assert_eq!(report.failure, None, "{name}");
        assert_eq!(report.running, Some(s.new), "{name}");
    }
}

#[test]
fn update_then_revert_on_every_board() {
    for (name, layout) in layouts() {
        let s = scenario(&layout, &name, units_for(&layout), Ending::Revert, 2);
        let report = s.run(None, None, 7);
        assert_eq!(report.failure, None, "{name}");
        assert_eq!(report.running, Some(s.old), "{name}");
    }
}
