//! Reference scenario R4 (DESIGN.md): delta updates on real firmware pairs.
//!
//! - For each release pair of `tests/fixtures/delta` (a one-line fix, a changed library, a new
//!   feature, a compiler-flag change; Cortex-M0 on the micro:bit and Cortex-M4 on the nRF52840
//!   DK): the full transport size (the `.fwi`), our patch (header included), and, in the same
//!   run on the same installed bytes, detools' patch with heatshrink and with lzma and bsdiff4's;
//!   our patch over detools' heatshrink patch (target: at most 0.8 on every pair). Every patch of
//!   ours is applied by the device's code on a simulated flash and must rebuild the target.
//! - R1 with a one-function change: the 80 KiB-class image (`big` -> `big-fix`) on nRF51
//!   geometry (1 KiB pages, 112 KiB slots): bytes downloaded as a share of the full transport
//!   size (target: at most 5 %), erases and bytes programmed for update+confirm, next to a full
//!   install.
//! - Patch creation time for a 1 MiB image (median of 5), and the decoder's RAM.
//!
//! Run: `scripts/bench.sh r4` (installs detools and bsdiff4 into target/tools/venv first), or
//! `cargo run --release -p imager --example r4-delta` with them on PATH's python3. Fails if
//! python3 lacks detools or bsdiff4, or if any target is missed. Its figures (`r4.*`) are
//! recorded through `benchkit`; with `FWI_BENCH_QUICK` patch creation is timed once, not 5 times.

#[path = "../common/bench.rs"]
mod bench;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use bench::{build_input, machine, time};
use benchkit::Figure;
use boards::Catalog;
use firmware::delta::{MODEL_BYTES, PatchOptions, create_patch};
use firmware::flash::{FlashLayout, LayoutSpec, Region, SectorRun, Slot};
use firmware::image::{
    ReleaseStatement, SignedRelease, TransportImage, TrustedKey, installed_form,
};
use firmware::sim::build::{TestKeys, edited, identity};
use firmware::sim::device::SimDevice;
use firmware::sim::{Rng, Stats};
use imager::fuse::{FuseRequest, fuse};

const PAIRS: [(&str, &str); 4] = [
    ("fix", "one-line fix"),
    ("library", "changed library"),
    ("feature", "new feature"),
    ("flags", "-Os -> -O2"),
];

/// The baselines, on two installed-form files: detools heatshrink, detools lzma, bsdiff4.
const BASELINES: &str = r#"
import io, sys, detools, bsdiff4
old, new = (open(p, 'rb').read() for p in sys.argv[1:3])
def detools_size(compression):
    out = io.BytesIO()
    detools.create_patch(io.BytesIO(old), io.BytesIO(new), out, compression=compression)
    return len(out.getvalue())
print(detools_size('heatshrink'), detools_size('lzma'), len(bsdiff4.diff(old, new)))
"#;

struct Baselines {
    heatshrink: usize,
    lzma: usize,
    bsdiff4: usize,
}

fn baselines(old: &Path, new: &Path) -> Result<Baselines> {
    let out = Command::new("python3")
        .args(["-c", BASELINES])
        .arg(old)
        .arg(new)
        .output()
        .context("python3 is needed")?;
    if !out.status.success() {
        bail!(
            "the baselines need detools and bsdiff4 (source scripts/tools.sh; need_pip detools \
             detools R4; need_pip bsdiff4 bsdiff4 R4): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let sizes: Vec<usize> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    let [heatshrink, lzma, bsdiff4] = sizes[..] else { bail!("baselines printed {text:?}") };
    Ok(Baselines { heatshrink, lzma, bsdiff4 })
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixtures = root.join("tests/fixtures/delta");
    let exe = std::env::current_exe()?;
    let release_dir = exe.parent().and_then(Path::parent).context("where is target/release?")?;
    let work = release_dir.join("r4-delta");
    std::fs::create_dir_all(&work)?;
    let catalog = Catalog::builtin()?;
    let key = work.join("key");
    for suffix in [".pem", ".pub.pem"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", key.display()));
    }
    imager::keys::keygen(&key)?;
    let private = PathBuf::from(format!("{}.pem", key.display()));
    let public = imager::keys::read_public_key(Path::new(&format!("{}.pub.pem", key.display())))?;
    let fuse_one = |board: &str, variant: &str| -> Result<Vec<u8>> {
        let out = work.join(format!("{board}-{variant}.fwi"));
        let request = FuseRequest {
            board: board.into(),
            os: Some(fixtures.join(board).join(format!("{variant}.elf")).display().to_string()),
            app: None,
            data: vec![],
            version: format!("1.0.0-{variant}").parse()?,
            security_counter: 1,
            keys: vec![private.clone()],
            compression: Some(firmware::image::HeatshrinkParams::DEFAULT),
            out: out.clone(),
        };
        fuse(&catalog, &request)?;
        Ok(std::fs::read(&out)?)
    };

    println!("R4, delta updates on real firmware pairs (tests/fixtures/delta)");
    println!("machine: {}", machine());
    println!(
        "decoder RAM: model {MODEL_BYTES} B (in the window the OS lends for heatshrink), decoder \
         state {} B on this host (204 B on a Cortex-M0: docs/delta.md)",
        std::mem::size_of::<firmware::delta::BodyDecoder>()
    );
    println!();
    println!(
        "{:<11} {:<16} {:>9} {:>8} {:>10} {:>12} {:>8} {:>11}",
        "board",
        "pair",
        "full .fwi",
        "ours",
        "detools-hs",
        "detools-lzma",
        "bsdiff4",
        "ours/det-hs"
    );
    let mut missed = Vec::new();
    for board in ["microbit", "nrf52840dk"] {
        let base = fuse_one(board, "base")?;
        let slot = catalog.get(board)?.slot_a_address();
        let old_installed = work.join(format!("{board}-base.installed"));
        std::fs::write(&old_installed, installed_form(&base, slot, 0xFF)?)?;
        for (variant, what) in PAIRS {
            let new = fuse_one(board, variant)?;
            let created = imager::delta::create(&catalog, &base, &new, None)?;
            let applied = imager::delta::apply(&catalog, &base, &created.patch.bytes, &[public])?;
            let expected = installed_form(&new, slot, 0xFF)?;
            if applied.id != created.target || applied.installed != expected {
                bail!("{board} {variant}: the patch did not rebuild the target");
            }
            let new_installed = work.join(format!("{board}-{variant}.installed"));
            std::fs::write(&new_installed, &expected)?;
            let theirs = baselines(&old_installed, &new_installed)?;
            let ratio = created.patch_size as f64 / theirs.heatshrink as f64;
            if ratio > 0.8 {
                missed.push(format!("{board} {variant}: {ratio:.3} of detools' heatshrink patch"));
            }
            let pair = format!("r4.{board}.{variant}");
            let ours = created.patch_size as f64;
            Figure::new(format!("{pair}.full"), new.len() as f64, "B").record()?;
            Figure::new(format!("{pair}.patch"), ours, "B")
                .against("detools heatshrink", theirs.heatshrink as f64)
                .record()?;
            Figure::new(format!("{pair}.patch-vs-lzma"), ours, "B")
                .against("detools lzma", theirs.lzma as f64)
                .record()?;
            Figure::new(format!("{pair}.patch-vs-bsdiff4"), ours, "B")
                .against("bsdiff4", theirs.bsdiff4 as f64)
                .record()?;
            println!(
                "{board:<11} {what:<16} {:>9} {:>8} {:>10} {:>12} {:>8} {:>11.3}",
                new.len(),
                created.patch_size,
                theirs.heatshrink,
                theirs.lzma,
                theirs.bsdiff4,
                ratio
            );
        }
    }
    println!("(sizes in bytes; ours includes the 84-byte fixed start and the signed header)");
    println!();

    r1(&catalog, &fuse_one, public, &mut missed)?;
    creation_time(&root, &work, &mut missed)?;

    if !missed.is_empty() {
        bail!("targets missed:\n  {}", missed.join("\n  "));
    }
    println!("every target met");
    Ok(())
}

/// nRF51822 geometry as R1 has it: 1 KiB pages, 4-byte writes, erased 0xFF, a 64 KiB
/// bootloader, slot A at 0x10000 (where the micro:bit fixtures are linked), 112 KiB slots.
fn r1_layout() -> Result<FlashLayout> {
    let kib = 1024;
    Ok(FlashLayout::new(LayoutSpec {
        base: 0,
        sectors: &[SectorRun { size: kib, count: 64 + 112 + 113 + 8 }],
        write_unit: 4,
        erased: 0xFF,
        slot_a: Region { offset: 64 * kib, size: 112 * kib },
        slot_b: Region { offset: (64 + 112) * kib, size: 113 * kib },
        state: Region { offset: (64 + 112 + 113) * kib, size: 8 * kib },
        header_size: 0x400,
    })?)
}

/// One update of `old` to `new` on R1's geometry, in steady state (slot B holds an older
/// image's bytes), downloaded whole or as `patch`: the costs of the download, and of the whole
/// update+confirm (download, swap, confirm).
fn r1_update(
    old: &[u8],
    new: &[u8],
    patch: Option<&[u8]>,
    build: TrustedKey,
) -> Result<(Stats, Stats)> {
    let keys = TestKeys::default();
    let mut identity = identity("microbit", "test", &keys);
    identity.build_keys = vec![build];
    let mut device = SimDevice::new(r1_layout()?, identity);
    device.provision(old)?;
    // Steady state: slot B holds what the previous update left (none of it erased).
    let slot_b = device.layout.slot(Slot::B);
    device.flash.load(slot_b.offset, &vec![0u8; slot_b.size as usize]);
    device.set_counters(0, 0)?;
    device.flash.reset_stats();
    let target = TransportImage::parse(new)?.header().id();
    let statement = ReleaseStatement::new(target, "test", 1).context("release statement")?;
    let statement = SignedRelease::sign(&statement, &keys.environment);
    let mut rng = Rng::new(1);
    let id = match patch {
        Some(patch) => device.download_patch(&statement, patch, 1024, &mut rng)?,
        None => device.download(&statement, new, 1024, &mut rng)?,
    };
    if id != target {
        bail!("installed the wrong image");
    }
    let download = device.flash.stats();
    let booted = device.boot()?;
    if !booted.trial || booted.image.id != target {
        bail!("the update did not boot on trial");
    }
    device.confirm()?;
    device.boot()?;
    Ok((download, device.flash.stats()))
}

fn r1(
    catalog: &Catalog,
    fuse_one: &dyn Fn(&str, &str) -> Result<Vec<u8>>,
    build: TrustedKey,
    missed: &mut Vec<String>,
) -> Result<()> {
    let old = fuse_one("microbit", "big")?;
    let new = fuse_one("microbit", "big-fix")?;
    let slot = catalog.get("microbit")?.slot_a_address();
    let block_shift = imager::delta::default_block_shift(catalog.get("microbit")?)?;
    let patch = create_patch(&old, &new, slot, 0xFF, &PatchOptions { block_shift })?;
    let installed = installed_form(&new, slot, 0xFF)?.len() - 0x400;
    let (full_download, full_total) = r1_update(&old, &new, None, build)?;
    let (patch_download, patch_total) = r1_update(&old, &new, Some(&patch.bytes), build)?;
    let share = patch.bytes.len() as f64 / new.len() as f64;
    println!(
        "R1 with a one-line fix in one function (big -> big-fix, {installed} bytes installed), \
         nRF51 geometry, 112 KiB slots:"
    );
    println!(
        "  downloaded: full {} B, patch {} B = {:.2}% of the full transport size (target <= 5%)",
        new.len(),
        patch.bytes.len(),
        100.0 * share
    );
    println!("  {:<34} {:>8} {:>12}", "", "erases", "programmed");
    for (what, stats) in [
        ("full image: download", full_download),
        ("full image: update+confirm", full_total),
        ("patch: download", patch_download),
        ("patch: update+confirm", patch_total),
    ] {
        println!("  {what:<34} {:>8} {:>12}", stats.erases, stats.programmed);
    }
    println!(
        "  (a patch changes what is downloaded, not what is written: slot B receives the same \
         installed bytes either way)"
    );
    Figure::new("r4.r1.download", patch.bytes.len() as f64, "B")
        .against("full image", new.len() as f64)
        .record()?;
    Figure::new("r4.r1.patch.erases", patch_total.erases as f64, "erases")
        .against("full image", full_total.erases as f64)
        .record()?;
    Figure::new("r4.r1.patch.programmed", patch_total.programmed as f64, "B")
        .against("full image", full_total.programmed as f64)
        .record()?;
    if share > 0.05 {
        missed.push(format!("R1: the patch is {:.2}% of the full image", 100.0 * share));
    }
    println!();
    Ok(())
}

/// Patch creation for a 1 MiB image: the 1 MiB of real code (`fuse-bench`'s input) as the old
/// image, and that code edited the way a release edits it (bytes rewritten, a run inserted,
/// another deleted, so what lies between moves) as the new one; and, as the worst case, a new
/// image made of the old one's code moved around (the two halves of the input swapped), and one
/// sharing nothing with it (pseudo-random bytes: every position searched, nothing found).
fn creation_time(root: &Path, work: &Path, missed: &mut Vec<String>) -> Result<()> {
    let input = std::fs::read(build_input(&root.join("imager/examples/fuse-bench"), work)?)?;
    let keys = TestKeys::default();
    let layout =
        firmware::image::SlotLayout { start: 0x1001_0000, size: 0x1F_0000, header_size: 0x400 };
    let image = |bytes: Vec<u8>, version: &str| -> Result<Vec<u8>> {
        let spec = firmware::image::ImageSpec {
            board: "bench-4m".into(),
            version: version.parse()?,
            security_counter: 1,
            compression: Some(firmware::image::HeatshrinkParams::DEFAULT),
            components: vec![firmware::image::ComponentSource {
                role: firmware::image::Role::App,
                name: "app".into(),
                load_address: layout.start + layout.header_size,
                bytes,
            }],
            slot: Some(layout),
        };
        Ok(firmware::image::encode_image(&spec, std::slice::from_ref(&keys.build))?.bytes)
    };
    let old = image(input.clone(), "1.0.0")?;
    let new = image(edited(&input, 5), "1.0.1")?;
    let half = input.len() / 2;
    let swapped = image([&input[half..], &input[..half]].concat(), "2.0.0")?;
    let mut rng = Rng::new(3);
    let random: Vec<u8> = (0..input.len()).map(|_| rng.next_u64() as u8).collect();
    let unrelated = image(random, "3.0.0")?;
    let runs = if benchkit::quick() { 1 } else { 5 };
    println!(
        "patch creation for a 1 MiB image (1 MiB of Thumb code from fuse-bench), median of {runs}:"
    );
    for (figure, what, new) in [
        ("edits", "a release's edits", &new),
        ("swapped", "halves swapped", &swapped),
        ("unrelated", "unrelated bytes", &unrelated),
    ] {
        let mut size = 0;
        let elapsed = time(runs, || {
            let patch = create_patch(&old, new, layout.start, 0xFF, &PatchOptions::default())?;
            size = patch.bytes.len();
            Ok(())
        })?;
        println!("  {what:<28} {:>7.3} s, patch {size} B", elapsed.as_secs_f64());
        Figure::new(format!("r4.create-1mib.{figure}"), elapsed.as_secs_f64(), "s").record()?;
        Figure::new(format!("r4.create-1mib.{figure}.patch"), size as f64, "B").record()?;
        // A time is a target only at full size in the release build, never in the smoke run.
        if elapsed.as_secs_f64() > 2.0 && !benchkit::quick() {
            missed
                .push(format!("1 MiB patch creation ({what}) took {:.2} s", elapsed.as_secs_f64()));
        }
    }
    println!();
    Ok(())
}
