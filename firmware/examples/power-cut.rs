//! Power-cut campaign: for every shipped board's geometry, an update that confirms and one that
//! reverts are run again and again with power cut at every flash operation in turn, in every
//! way (before the operation, after it, and torn halfway with several seeds), plus a sample of
//! second cuts during the recovery from the first. After each run the device must run a
//! correctly signed image, the right one for what happened (the new one once confirmed, the
//! old one after a revert), and never have broken a NOR flash rule.
//!
//! Besides the shipped boards, two geometries: `tight` (an image filling slot A, slot B one unit
//! larger) and `r1` (the 80 KiB update of the wear benchmark).
//!
//! Run: `cargo run --release -p firmware --example power-cut [-- --board NAME] [--torn N]`
//! Ends with `power-cut: N cuts, B bricked`; exits non-zero if B > 0.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use boards::Catalog;
use firmware::flash::{FlashLayout, Region, SectorRun, Slot};
use firmware::sim::build::{describe, scenario};
use firmware::sim::device::{Ending, RunReport, Scenario, SecondCut};
use firmware::sim::{Cut, CutKind};

/// Options from the command line.
struct Options {
    board: Option<String>,
    torn_seeds: u64,
    second_every: u64,
    quick: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value =
        |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: power-cut [--board NAME] [--torn SEEDS] [--second-every K] [--quick]");
        std::process::exit(0);
    }
    Options {
        board: value("--board"),
        torn_seeds: value("--torn").and_then(|v| v.parse().ok()).unwrap_or(3),
        second_every: value("--second-every").and_then(|v| v.parse().ok()).unwrap_or(4),
        quick: args.iter().any(|a| a == "--quick"),
    }
}

/// Units the campaign's images span: enough for several swap groups and checkpoints.
fn units(layout: &FlashLayout) -> u32 {
    let a = layout.unit_count(layout.slot(Slot::A));
    let unit = layout.unit(layout.slot(Slot::A), 0).map_or(1, |u| u.size);
    // About 12 KiB of image on small pages, at least 3 units, at most what slot A has.
    (12 * 1024 / unit).clamp(3, 12).min(a)
}

struct Tally {
    cuts: AtomicU64,
    bricked: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, what: &str, report: &RunReport) {
        self.cuts.fetch_add(u64::from(report.cuts), Ordering::Relaxed);
        if let Some(failure) = &report.failure {
            self.bricked.fetch_add(1, Ordering::Relaxed);
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if failures.len() < 20 {
                failures.push(format!("{what}: {failure}"));
            }
        }
    }
}

/// Every cut of one scenario: each operation, each way; and second cuts on a sample.
fn campaign(s: &Scenario, label: &str, options: &Options, step: u64, tally: &Tally) -> u64 {
    let seed = 7;
    let clean = s.run(None, None, seed);
    if let Some(failure) = &clean.failure {
        tally.record(&format!("{label} without cuts"), &clean);
        eprintln!("{label}: fails without any cut: {failure}");
        return 0;
    }
    let operations = clean.operations;
    let step = if options.quick { step * 5 } else { step };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let mut at = t * step;
                while at < operations {
                    let mut kinds = vec![CutKind::Before, CutKind::After];
                    kinds.extend((0..options.torn_seeds).map(|i| CutKind::Torn(at * 31 + i + 1)));
                    for kind in kinds {
                        let cut = Cut { at, kind };
                        tally.record(&format!("{label} cut {kind:?} at op {at}"), &s.run(Some(cut), None, seed));
                    }
                    if at % options.second_every == 0 {
                        for after in [0u64, 1, 2, 5, 17, 60, 200] {
                            for kind in [CutKind::Before, CutKind::Torn(at ^ after ^ 0x5A)] {
                                let first = Cut { at, kind: CutKind::Torn(at + 99) };
                                let second = SecondCut { after, kind };
                                let what = format!("{label} cut torn at op {at}, then {kind:?} {after} ops into recovery");
                                tally.record(&what, &s.run(Some(first), Some(second), seed));
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

/// Geometries beyond the shipped boards: `tight`, an image filling slot A with slot B one unit
/// larger (the swap then needs two markers per unit); `r1`, the 80 KiB update of the wear
/// benchmark on nRF51 geometry.
fn extra_targets() -> Vec<(String, FlashLayout, u32)> {
    let kib = 1024;
    let layout = |a: u32, b: u32| {
        FlashLayout::new(
            0,
            &[SectorRun { size: kib, count: 256 }],
            4,
            0xFF,
            Region { offset: 16 * kib, size: a * kib },
            Region { offset: (16 + a) * kib, size: b * kib },
            Region { offset: (16 + a + b) * kib, size: 8 * kib },
            0x400,
        )
        .expect("a valid layout")
    };
    vec![("tight".into(), layout(8, 9), 8), ("r1".into(), layout(112, 112), 80)]
}

fn main() {
    let options = options();
    let catalog = Catalog::builtin().expect("shipped boards are valid");
    let mut targets: Vec<(String, FlashLayout, u32)> = catalog
        .boards()
        .iter()
        .map(|b| {
            let layout = b.flash_layout().expect("shipped layouts are valid");
            let units = units(&layout);
            (b.name.clone(), layout, units)
        })
        .collect();
    targets.extend(extra_targets());
    targets.retain(|(name, ..)| options.board.as_ref().is_none_or(|wanted| name == wanted));
    if targets.is_empty() {
        eprintln!(
            "error: no board {:?} (known: microbit, nrf52840dk, nucleo-f411re, rpi-pico, tight, r1)",
            options.board
        );
        std::process::exit(2);
    }
    let tally = Tally {
        cuts: AtomicU64::new(0),
        bricked: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
    };
    for (name, layout, units) in targets {
        // Every cut on a fresh state log; then, with every 8th cut, the log's unit nearly full,
        // so the update's records move the log to its next unit at each record in turn: at the
        // download, a checkpoint, the pending record and its marker area, the trial start, the
        // confirmation or the revert.
        let mut variants = vec![
            (Ending::Confirm, "update+confirm".to_owned(), None),
            (Ending::Revert, "update+revert".to_owned(), None),
        ];
        for slots in 0u32..=20 {
            for (ending, what) in
                [(Ending::Confirm, "update+confirm"), (Ending::Revert, "update+revert")]
            {
                variants.push((
                    ending,
                    format!("{what}, log {slots} slots from full"),
                    Some(slots * 32),
                ));
            }
        }
        for (ending, what, leave) in variants {
            let before = tally.cuts.load(Ordering::Relaxed);
            let bricked = tally.bricked.load(Ordering::Relaxed);
            let mut s = scenario(&layout, &name, units, ending, 3);
            // Checkpoint at (nearly) every erase unit, so cuts exercise resuming downloads.
            s.device.checkpoint_every = 1;
            if let Some(leave) = leave {
                s.device.fill_log(leave).expect("the log fills");
            }
            let label = format!("{name} {what}");
            let step = if leave.is_some() { 8 } else { 1 };
            let operations = campaign(&s, &label, &options, step, &tally);
            println!(
                "{label}: {} ({units}-unit images), {operations} flash operations, {} cuts, {} bricked",
                describe(&layout),
                tally.cuts.load(Ordering::Relaxed) - before,
                tally.bricked.load(Ordering::Relaxed) - bricked,
            );
        }
    }
    for failure in tally.failures.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  {failure}");
    }
    let (cuts, bricked) =
        (tally.cuts.load(Ordering::Relaxed), tally.bricked.load(Ordering::Relaxed));
    println!("power-cut: {cuts} cuts, {bricked} bricked");
    if bricked > 0 {
        std::process::exit(1);
    }
}
