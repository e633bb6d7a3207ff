//! Flash wear of one update (reference scenario R1 in DESIGN.md): erases and bytes programmed
//! for update+confirm (download into slot B, swap, confirm, state records) and for
//! update+revert, on nRF51822 geometry: 1 KiB erase unit, 4-byte write unit, erased 0xFF,
//! 112 KiB slots. R1 moves an 80 KiB image, R1-small a 16 KiB one.
//!
//! Run: `scripts/bench.sh flash-cost`, or `cargo run --release -p firmware --features sim
//! --example flash-cost`. Its figures (`r1.*`, counts: the same on any machine) are recorded
//! through `benchkit`; the quick run is the same run (it takes well under a second).
//!
//! The device starts in steady state: it already went through one update the same way, so slot
//! A runs the old image, slot B holds what that update left (every unit the download needs must
//! be erased), and the state log is in use.

use benchkit::Figure;
use firmware::flash::FlashLayout;
use firmware::sim::build::{self, TestKeys};
use firmware::sim::device::{Identity, SimDevice};
use firmware::sim::{Rng, Stats};

fn r1_layout() -> FlashLayout {
    build::pages_layout(112, 112)
}

struct Costs {
    download: Stats,
    swap: Stats,
    confirm_or_revert: Stats,
}

impl Costs {
    fn total(&self) -> (u64, u64) {
        let all = [self.download, self.swap, self.confirm_or_revert];
        (all.iter().map(|s| s.erases).sum(), all.iter().map(|s| s.programmed).sum())
    }
}

fn take(device: &mut SimDevice) -> Stats {
    let stats = device.flash.stats();
    device.flash.reset_stats();
    stats
}

/// One update of a `kib` KiB image, ending in confirm or revert.
fn run(kib: u32, confirm: bool) -> Costs {
    let layout = r1_layout();
    let keys = TestKeys::default();
    let identity: Identity = build::identity("r1", "test", &keys);
    let before = build::image(&layout, "r1", "0.9.0", 1, kib, 10, &keys.build);
    let old = build::image(&layout, "r1", "1.0.0", 1, kib, 11, &keys.build);
    let new = build::image(&layout, "r1", "2.0.0", 2, kib, 12, &keys.build);
    let mut device = SimDevice::new(layout.clone(), identity);
    device.provision(&before.bytes).expect("first image");
    // Steady state: the device already went through one update (before -> old, confirmed),
    // so slot B holds what that update left there and the state log is in use.
    let release = build::release(&old, "test", 1, &keys.environment);
    device.download(&release, &old.bytes, 1024, &mut Rng::new(1)).expect("download");
    device.boot().expect("swap");
    device.confirm().expect("confirm");
    let booted = device.boot().expect("boots the old image");
    assert!(!booted.trial && booted.image.id == old.id);
    take(&mut device);

    let release = build::release(&new, "test", 2, &keys.environment);
    device.download(&release, &new.bytes, 1024, &mut Rng::new(1)).expect("download");
    let download = take(&mut device);
    let booted = device.boot().expect("swap and trial boot");
    assert!(booted.trial && booted.image.id == new.id);
    let swap = take(&mut device);
    if confirm {
        device.confirm().expect("confirm");
        let booted = device.boot().expect("boots confirmed");
        assert!(!booted.trial && booted.image.id == new.id);
    } else {
        let booted = device.boot().expect("reverts");
        assert!(!booted.trial && booted.image.id == old.id);
    }
    let confirm_or_revert = take(&mut device);
    Costs { download, swap, confirm_or_revert }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let layout = r1_layout();
    println!("# geometry: {}, slots 112 KiB, erased 0xFF", build::describe(&layout));
    for (name, kib) in [("R1", 80u32), ("R1-small", 16)] {
        let pages = u64::from(kib);
        let image = u64::from(kib) * 1024;
        for (what, confirm) in [("update+confirm", true), ("update+revert", false)] {
            let costs = run(kib, confirm);
            let (erases, programmed) = costs.total();
            println!("{name} {what} erases={erases} programmed={programmed}");
            let figure = format!("{}.{}", name.to_ascii_lowercase(), what.replace('+', "-"));
            Figure::new(format!("{figure}.erases"), erases as f64, "erases").record()?;
            Figure::new(format!("{figure}.programmed"), programmed as f64, "B").record()?;
            let target = if confirm { 3 * pages + 2 } else { 5 * pages + 2 };
            println!(
                "#   download {}/{}, swap {}/{}, {} {}/{} (erases/bytes); target <= {target} erases{}",
                costs.download.erases,
                costs.download.programmed,
                costs.swap.erases,
                costs.swap.programmed,
                if confirm { "confirm" } else { "revert" },
                costs.confirm_or_revert.erases,
                costs.confirm_or_revert.programmed,
                if confirm { format!(", <= {} bytes", 3 * image + 512) } else { String::new() },
            );
        }
    }
    Ok(())
}
