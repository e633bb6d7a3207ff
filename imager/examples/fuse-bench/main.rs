//! Fuse benchmark: how fast `imager fuse` turns a 1 MiB application into a signed image,
//! side by side with MCUboot's `imgtool sign` on the same input in the same run, and how well
//! each supported heatshrink window compresses real Thumb code for the RAM it costs the device.
//!
//! Run: `scripts/bench.sh fuse` (installs imgtool and heatshrink2 first), or
//! `cargo build --release -p imager && cargo run --release -p imager --example fuse-bench [--
//! --runs N]`. Its figures (`fuse.*`, `window.*`) are recorded through `benchkit`; with
//! `FWI_BENCH_QUICK` it times one run each (`imager` from the benchmark's own profile).
//!
//! Needs `arm-none-eabi-g++` (Debian: gcc-arm-none-eabi libstdc++-arm-none-eabi-newlib) to build
//! the input, `imgtool` (PyPI: imgtool) and PyPI's heatshrink2 (windows the device does not
//! support, from the reference C encoder, for context).
//!
//! The input is real code: `thumb-app.cpp` (a libstdc++-heavy program) compiled with -Os for a
//! Cortex-M0 and for a Cortex-M4F; the two raw binaries, back to back, cut at 1 MiB.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bench::{build_input, machine, run, time};
use benchkit::Figure;
use ed25519_dalek::{Signer, SigningKey};
use firmware::image::{HeatshrinkParams, compress};
use sha2::{Digest, Sha256};

#[path = "../common/bench.rs"]
mod bench;

/// Where bench-4m's first component is linked (slot A + header).
const LINK_ADDRESS: &str = "0x10010400";

fn main() -> Result<()> {
    let runs: usize = match std::env::args().skip_while(|a| a != "--runs").nth(1) {
        Some(n) => n.parse().context("--runs N")?,
        None if benchkit::quick() => 1,
        None => 7,
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fuse-bench");
    let exe = std::env::current_exe()?;
    let release_dir = exe.parent().and_then(Path::parent).context("where is target/release?")?;
    let work = release_dir.join("fuse-bench");
    std::fs::create_dir_all(&work)?;

    let input_path = build_input(&here, &work)?;
    let input = std::fs::read(&input_path)?;
    let imager = benchkit::sibling_binary("imager")?;
    println!(
        "fuse benchmark: {} bytes of Thumb code (thumb-app.cpp, arm-none-eabi-g++ -Os, Cortex-M0 + Cortex-M4F)",
        input.len()
    );
    println!("machine: {}", machine());
    println!();

    // Keys for both tools.
    let key = work.join("imager-key");
    for suffix in [".pem", ".pub.pem"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", key.display()));
    }
    run(Command::new(&imager).arg("keygen").arg("--out").arg(&key))?;
    let imgtool_key = work.join("imgtool-key.pem");
    let _ = std::fs::remove_file(&imgtool_key);
    run(Command::new("imgtool").args(["keygen", "-t", "ed25519", "-k"]).arg(&imgtool_key))
        .context("imgtool is needed: python3 -m pip install imgtool")?;

    // End to end, one process per fuse, as a build pipeline runs them.
    let fwi = work.join("app.fwi");
    let ours = time(runs, || {
        run(Command::new(&imager)
            .arg("--boards")
            .arg(&here)
            .args(["fuse", "--board", "bench-4m", "--version", "1.0.0"])
            .arg("--app")
            .arg(format!("{}@{LINK_ADDRESS}", input_path.display()))
            .arg("--key")
            .arg(format!("{}.pem", key.display()))
            .arg("--out")
            .arg(&fwi))
    })?;
    let ours_size = std::fs::metadata(&fwi)?.len();
    let signed = work.join("imgtool-signed.bin");
    let imgtool = |extra: &'static [&'static str]| {
        let (key, input, signed) = (imgtool_key.clone(), input_path.clone(), signed.clone());
        move || {
            run(Command::new("imgtool")
                .args(["sign", "--header-size", "0x400", "--pad-header", "--align", "4"])
                .args(["--version", "1.0.0", "--slot-size", "0x1F0000", "--key"])
                .arg(&key)
                .args(extra)
                .arg(&input)
                .arg(&signed))
        }
    };
    let theirs = time(runs, imgtool(&[]))?;
    let theirs_size = std::fs::metadata(&signed)?.len();
    let lzma = time(runs.min(3), imgtool(&["--compression", "lzma2armthumb"]))?;
    let lzma_size = std::fs::metadata(&signed)?.len();

    let mbps = |d: Duration| input.len() as f64 / 1e6 / d.as_secs_f64();
    println!("end to end, one process each, median of {runs} runs:");
    let row = |name: &str, d: Duration, size: u64| {
        println!(
            "  {name:<52} {:>7.3} s {:>7.2} MB/s  output {size:>8} B ({:.1}%)",
            d.as_secs_f64(),
            mbps(d),
            100.0 * size as f64 / input.len() as f64
        );
    };
    row("imager fuse (heatshrink 11/4, sha256, ed25519)", ours, ours_size);
    row("imgtool sign (sha256, ed25519; no compression)", theirs, theirs_size);
    row("imgtool sign --compression lzma2armthumb", lzma, lzma_size);
    println!(
        "  ratio: imager fuse is {:.2}x the throughput of imgtool sign, {:.2}x that of imgtool with lzma2",
        theirs.as_secs_f64() / ours.as_secs_f64(),
        lzma.as_secs_f64() / ours.as_secs_f64()
    );
    let imgtool_name = format!("imgtool sign {}", imgtool_version());
    Figure::new("fuse.throughput", mbps(ours), "MB/s")
        .against(&imgtool_name, mbps(theirs))
        .record()?;
    Figure::new("fuse.throughput-vs-lzma2", mbps(ours), "MB/s")
        .against(format!("{imgtool_name} --compression lzma2armthumb"), mbps(lzma))
        .record()?;
    Figure::new("fuse.output", ours_size as f64, "B")
        .against(&imgtool_name, theirs_size as f64)
        .record()?;
    Figure::new("fuse.output-vs-lzma2", ours_size as f64, "B")
        .against(format!("{imgtool_name} --compression lzma2armthumb"), lzma_size as f64)
        .record()?;
    println!();

    // Where the time goes inside one fuse (no process start, no file I/O).
    let params = HeatshrinkParams::DEFAULT;
    let compress_time = time(runs, || {
        std::hint::black_box(compress(params, &input));
        Ok(())
    })?;
    let hash_time = time(runs, || {
        std::hint::black_box(Sha256::digest(&input));
        Ok(())
    })?;
    let signer = SigningKey::from_bytes(&[7; 32]);
    let manifest = vec![0x5A; 300];
    let sign_time = time(runs, || {
        std::hint::black_box(signer.sign(&manifest));
        Ok(())
    })?;
    println!("in process, median of {runs} runs:");
    println!(
        "  heatshrink 11/4 compress   {:>8.1} ms  {:>7.2} MB/s",
        ms(compress_time),
        mbps(compress_time)
    );
    println!(
        "  sha256 of the input        {:>8.1} ms  {:>7.2} MB/s",
        ms(hash_time),
        mbps(hash_time)
    );
    println!("  ed25519 sign of a manifest {:>8.3} ms", ms(sign_time));
    Figure::new("fuse.heatshrink-compress", mbps(compress_time), "MB/s").record()?;
    Figure::new("fuse.sha256", mbps(hash_time), "MB/s").record()?;
    Figure::new("fuse.ed25519-sign", ms(sign_time), "ms").record()?;
    println!();

    // Compression of real Thumb code per window, and what the window costs the device.
    // A small real OS too: the .text of the nucleo-f411re fixture OS (arm-none-eabi-objcopy).
    let os_path = here.join("../../../firmware/tests/vectors/heatshrink/thumb-os.bin");
    let os =
        std::fs::read(&os_path).with_context(|| format!("cannot read {}", os_path.display()))?;
    println!("heatshrink on real Thumb code (stored / installed; smaller is better):");
    println!(
        "  {:<10} {:>13} {:>14} {:>15} {:>14}",
        "window/la", "decoder RAM", "1 MiB app", "4.3 KiB os", "compress MB/s"
    );
    for &p in HeatshrinkParams::SUPPORTED {
        let start = Instant::now();
        let big = compress(p, &input).len();
        let speed = mbps(start.elapsed());
        let small = compress(p, &os).len() as f64 / os.len() as f64;
        println!(
            "  {:<10} {:>11} B {:>14.3} {:>15} {:>14.2}{}",
            format!("{}/{}", p.window(), p.lookahead()),
            p.decoder_ram(),
            big as f64 / input.len() as f64,
            format!("{small:.3}"),
            speed,
            if p == HeatshrinkParams::DEFAULT { "   <- default" } else { "" }
        );
        let window = format!("window.{}-{}", p.window(), p.lookahead());
        Figure::new(format!("{window}.decoder-ram"), p.decoder_ram() as f64, "B").record()?;
        Figure::new(format!("{window}.app"), big as f64 / input.len() as f64, "stored/installed")
            .record()?;
        Figure::new(format!("{window}.compress"), speed, "MB/s").record()?;
        Figure::new(format!("{window}.os"), small, "stored/installed").record()?;
    }
    for (w, l) in [(9, 4), (13, 5), (14, 5)] {
        {
            let size = reference_size(&input_path, w, l)?;
            println!(
                "  {:<10} {:>11} B {:>14.3} {:>15} {:>14}   (reference C only; not supported on the device)",
                format!("{w}/{l}"),
                (1usize << w) + 32,
                size as f64 / input.len() as f64,
                "-",
                "-"
            );
            Figure::new(
                format!("window.{w}-{l}.app-reference-c"),
                size as f64 / input.len() as f64,
                "stored/installed",
            )
            .record()?;
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// imgtool's version, for the baseline's name.
fn imgtool_version() -> String {
    Command::new("imgtool")
        .arg("version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Size of the reference C encoder's stream for (w, l): python3 with heatshrink2.
fn reference_size(input: &Path, w: u8, l: u8) -> Result<usize> {
    let script = format!(
        "import heatshrink2,sys; print(len(heatshrink2.encode(open(sys.argv[1],'rb').read(), window_sz2={w}, lookahead_sz2={l})))"
    );
    let out = Command::new("python3").args(["-c", &script]).arg(input).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "the reference rows need python3 with heatshrink2 (scripts/bench.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}
