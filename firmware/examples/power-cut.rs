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
//! With `--delta` the update comes as a patch (`firmware::delta`): the device rebuilds the new
//! image in slot B from slot A and the patch, checkpointing at every erase unit (the patch's
//! segments start there), and every cut must resume from the last checkpoint.
//!
//! Run: `scripts/bench.sh power-cut power-cut-delta`, or `cargo run --release -p firmware
//! --example power-cut [-- --board NAME] [--torn N] [--delta] [--quick]`.
//! Ends with `power-cut: N cuts, B bricked`; exits non-zero if B > 0. Its figures
//! (`power-cut[-delta].*`: cuts and bricked devices per geometry, the campaign's wall time) are
//! recorded through `benchkit`.

use benchkit::Figure;
use boards::Catalog;
use firmware::flash::{FlashLayout, Slot};
use firmware::sim::build::{describe, pages_layout};
use firmware::sim::campaign::{self, Plan, Tally};

/// Options from the command line.
struct Options {
    board: Option<String>,
    delta: bool,
    torn_seeds: u64,
    second_every: u64,
    quick: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value =
        |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: power-cut [--board NAME] [--torn SEEDS] [--second-every K] [--quick] [--delta]"
        );
        std::process::exit(0);
    }
    Options {
        board: value("--board"),
        delta: args.iter().any(|a| a == "--delta"),
        torn_seeds: value("--torn").and_then(|v| v.parse().ok()).unwrap_or(3),
        second_every: value("--second-every").and_then(|v| v.parse().ok()).unwrap_or(4),
        quick: args.iter().any(|a| a == "--quick") || benchkit::quick(),
    }
}

/// Units the campaign's images span: enough for several swap groups and checkpoints.
fn units(layout: &FlashLayout) -> u32 {
    let a = layout.unit_count(layout.slot(Slot::A));
    let unit = layout.unit(layout.slot(Slot::A), 0).map_or(1, |u| u.size);
    // About 12 KiB of image on small pages, at least 3 units, at most what slot A has.
    (12 * 1024 / unit).clamp(3, 12).min(a)
}

/// Geometries beyond the shipped boards: `tight`, an image filling slot A with slot B one unit
/// larger (the swap then needs two markers per unit); `r1`, the 80 KiB update of the wear
/// benchmark on nRF51 geometry.
fn extra_targets() -> Vec<(String, FlashLayout, u32)> {
    vec![("tight".into(), pages_layout(8, 9), 8), ("r1".into(), pages_layout(112, 112), 80)]
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
    let started = std::time::Instant::now();
    let campaign = if options.delta { "power-cut-delta" } else { "power-cut" };
    let tally = Tally::default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    for (name, layout, units) in targets {
        let (board_cuts, board_bricked) = (tally.cuts(), tally.bricked());
        // Every cut on a fresh state log; then, with every 8th cut, the log's unit nearly full,
        // so the update's records move the log to its next unit at each record in turn.
        let variants = if options.delta {
            campaign::delta_variants(&layout, &name, units, 0..=20)
        } else {
            campaign::variants(&layout, &name, units, 0..=20)
        };
        for variant in variants {
            let (before, bricked) = (tally.cuts(), tally.bricked());
            let step = if variant.log_full { 8 } else { 1 } * if options.quick { 5 } else { 1 };
            let plan = Plan {
                step,
                torn_seeds: options.torn_seeds,
                second_every: options.second_every,
                threads,
            };
            let operations = campaign::run(&variant.scenario, &variant.label, plan, &tally);
            println!(
                "{}: {} ({units}-unit images), {operations} flash operations, {} cuts, {} bricked",
                variant.label,
                describe(&layout),
                tally.cuts() - before,
                tally.bricked() - bricked,
            );
        }
        record(&format!("{campaign}.{name}.cuts"), (tally.cuts() - board_cuts) as f64, "cuts");
        record(
            &format!("{campaign}.{name}.bricked"),
            (tally.bricked() - board_bricked) as f64,
            "devices",
        );
    }
    for failure in tally.failures() {
        println!("  {failure}");
    }
    let (cuts, bricked) = (tally.cuts(), tally.bricked());
    println!("power-cut: {cuts} cuts, {bricked} bricked");
    record(&format!("{campaign}.cuts"), cuts as f64, "cuts");
    record(&format!("{campaign}.bricked"), bricked as f64, "devices");
    record(&format!("{campaign}.wall"), started.elapsed().as_secs_f64(), "s");
    if bricked > 0 {
        std::process::exit(1);
    }
}

/// Records a figure; a figure that cannot be recorded ends the campaign with an error.
fn record(name: &str, value: f64, unit: &str) {
    if let Err(e) = Figure::new(name, value, unit).record() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
