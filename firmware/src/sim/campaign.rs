//! The power-cut campaign: an update scenario run again and again with power cut at each flash
//! operation in turn, in each way, and a sample of second cuts during recovery. Shared by the
//! `power-cut` example (everything) and the test suite (a sample).

use std::format;
use std::string::String;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::vec;
use std::vec::Vec;

use super::build::{delta_scenario, scenario};
use super::device::{Ending, RunReport, Scenario, SecondCut};
use super::{Cut, CutKind};
use crate::flash::FlashLayout;

/// How thoroughly to cut.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Cut at every `step`th operation.
    pub step: u64,
    /// Torn cuts per operation, each with its own seed.
    pub torn_seeds: u64,
    /// Add second cuts at every `second_every`th cut operation (0: none).
    pub second_every: u64,
    /// Worker threads.
    pub threads: u64,
}

/// Counts cuts and failures across runs.
#[derive(Debug, Default)]
pub struct Tally {
    cuts: AtomicU64,
    bricked: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    /// Power cuts that hit so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    /// Runs that ended bricked or in the wrong state.
    pub fn bricked(&self) -> u64 {
        self.bricked.load(Ordering::Relaxed)
    }

    /// The first failures, described.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, what: impl FnOnce() -> String, report: &RunReport) {
        self.cuts.fetch_add(u64::from(report.cuts), Ordering::Relaxed);
        if let Some(failure) = &report.failure {
            self.bricked.fetch_add(1, Ordering::Relaxed);
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if failures.len() < 20 {
                failures.push(format!("{}: {failure}", what()));
            }
        }
    }
}

/// Runs `scenario` once without cuts (it must succeed), then with every cut `plan` asks for.
/// Returns the number of flash operations of the clean run.
pub fn run(scenario: &Scenario, label: &str, plan: Plan, tally: &Tally) -> u64 {
    let seed = 7;
    let clean = scenario.run(None, None, seed);
    if clean.failure.is_some() {
        tally.record(|| format!("{label} without cuts"), &clean);
        return 0;
    }
    let operations = clean.operations;
    let threads = plan.threads.max(1);
    let step = plan.step.max(1);
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let mut at = t * step;
                while at < operations {
                    let mut kinds = vec![CutKind::Before, CutKind::After];
                    kinds.extend((0..plan.torn_seeds).map(|i| CutKind::Torn(at * 31 + i + 1)));
                    for kind in kinds {
                        let report = scenario.run(Some(Cut { at, kind }), None, seed);
                        tally.record(|| format!("{label}: cut {kind:?} at op {at}"), &report);
                    }
                    if plan.second_every > 0 && (at / step).is_multiple_of(plan.second_every) {
                        for after in [0u64, 1, 2, 5, 17, 60, 200] {
                            for kind in [CutKind::Before, CutKind::Torn(at ^ after ^ 0x5A)] {
                                let first = Cut { at, kind: CutKind::Torn(at + 99) };
                                let report = scenario.run(Some(first), Some(SecondCut { after, kind }), seed);
                                tally.record(
                                    || format!("{label}: cut torn at op {at}, then {kind:?} {after} ops into recovery"),
                                    &report,
                                );
                            }
                        }
                    }
                    at += threads * step;
                }
            });
        }
    });
    operations
}

/// One scenario of a campaign.
#[derive(Debug)]
pub struct Variant {
    /// For reports: geometry, ending, log fill.
    pub label: String,
    /// The scenario.
    pub scenario: Scenario,
    /// Whether the log starts nearly full.
    pub log_full: bool,
}

/// The scenarios of a campaign on one geometry: an update that confirms and one that reverts,
/// on a fresh state log, then on a log whose unit is `slots` record slots from full, for each
/// of `fill_levels` (so the update's records move the log to its next unit at each record in
/// turn: the download, a checkpoint, the pending record and its marker area, the trial start,
/// the confirmation or the revert). Downloads checkpoint at every erase unit, so cuts exercise
/// resuming them.
pub fn variants(
    layout: &FlashLayout,
    name: &str,
    units: u32,
    fill_levels: impl IntoIterator<Item = u32>,
) -> Vec<Variant> {
    variants_of(scenario, layout, name, units, fill_levels)
}

/// [`variants`] with the update coming as a patch ([`delta_scenario`]): the device rebuilds
/// v2 in slot B from slot A and the patch, checkpointing at every erase unit.
pub fn delta_variants(
    layout: &FlashLayout,
    name: &str,
    units: u32,
    fill_levels: impl IntoIterator<Item = u32>,
) -> Vec<Variant> {
    let mut out = variants_of(delta_scenario, layout, name, units, fill_levels);
    for variant in &mut out {
        variant.label = format!("{} (patch)", variant.label);
    }
    out
}

fn variants_of(
    make: fn(&FlashLayout, &str, u32, Ending, u64) -> Scenario,
    layout: &FlashLayout,
    name: &str,
    units: u32,
    fill_levels: impl IntoIterator<Item = u32>,
) -> Vec<Variant> {
    let endings = [(Ending::Confirm, "update+confirm"), (Ending::Revert, "update+revert")];
    let mut levels: Vec<Option<u32>> = vec![None];
    levels.extend(fill_levels.into_iter().map(Some));
    let mut out = Vec::new();
    for level in levels {
        for (ending, what) in endings {
            let mut s = make(layout, name, units, ending, 3);
            s.device.checkpoint_every = 1;
            let label = match level {
                None => format!("{name} {what}"),
                Some(slots) => {
                    // Filling only writes records; it cannot fail on a fresh simulated device.
                    let _ = s.device.fill_log(slots * 32);
                    format!("{name} {what}, log {slots} slots from full")
                }
            };
            out.push(Variant { label, scenario: s, log_full: level.is_some() });
        }
    }
    out
}
