//! The micro:bit bootloader as shipped (`firmware/device`, provisioned for `prod`): its flash
//! size, and the instructions from reset to hand-over in QEMU (`-icount shift=0`: one TIMER0
//! tick is 62.5 instructions) booting the demo OS and app v1, with signature verification (as
//! shipped) and with hashes only (the `unverified` measurement build), so the cost of the
//! Ed25519 check shows as the difference.
//!
//! Run: `scripts/bench.sh boot`, or, with the release imager built (`cargo build --release -p
//! imager`), `cargo run --release -p tests --example boot-bench`. Needs the thumbv6m-none-eabi
//! target, qemu-system-arm and arm-none-eabi-size. Its figures (`boot.*`) are recorded through
//! `benchkit`; they are counts, the same on any machine, so the quick run is the same run.
//! It also runs the RAM probe (`firmware/device/probe`) and records the stack each boot step
//! paints and the size of what the device keeps (`ram.*`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benchkit::Figure;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// Builds the device workspace with `features` on the bootloader, into a target folder of its
/// own for each set of features (so the measurement builds never replace the shipped one).
/// Returns the release output folder.
fn build_device(features: &str) -> Result<PathBuf> {
    let device = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/device");
    let target = device.join(if features.is_empty() {
        "target".to_owned()
    } else {
        format!("target/bench-{}", features.replace(',', "-"))
    });
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--release", "--quiet"]);
    if !features.is_empty() {
        build.args(["-p", "bootloader", "--features", features]);
    }
    let out = build
        .current_dir(&device)
        .env("FWI_BOOT_KEYS", fixture("keys/openssl-ed25519.pub.pem"))
        .env("FWI_ENVIRONMENT", "prod")
        .env("FWI_ENVIRONMENT_KEYS", fixture("keys/release-ed25519.pub.pem"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!(
            "building firmware/device (bootloader features {features:?}) failed (rustup target add \
             thumbv6m-none-eabi?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(target.join("thumbv6m-none-eabi/release"))
}

/// Flash bytes of an ELF file (text + data), by `arm-none-eabi-size`'s Berkeley format.
fn flash_size(elf: &Path) -> Result<u64> {
    let out = Command::new("arm-none-eabi-size")
        .arg(elf)
        .output()
        .context("arm-none-eabi-size is needed (Debian: binutils-arm-none-eabi)")?;
    let text = String::from_utf8(out.stdout)?;
    let numbers: Vec<u64> = text
        .lines()
        .nth(1)
        .context("arm-none-eabi-size printed no sizes")?
        .split_whitespace()
        .take(2)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("arm-none-eabi-size printed {text:?}"))?;
    Ok(numbers.iter().sum())
}

/// Runs `command` to its end (at most 120 s: QEMU runs until the program exits), with its
/// stdout and stderr together.
fn run_to_end(mut command: Command, what: &str) -> Result<(std::process::ExitStatus, String)> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    child.stdout.take().context("stdout")?.read_to_string(&mut output)?;
    child.stderr.take().context("stderr")?.read_to_string(&mut output)?;
    Ok((status, output))
}

/// Boots `image` in QEMU with the measurement `bootloader`; the TIMER0 ticks it reports.
fn boot_ticks(image: &Path, bootloader: &Path) -> Result<u64> {
    let mut run = Command::new(benchkit::sibling_binary("imager")?);
    run.arg("run")
        .arg(image)
        .arg("--bootloader")
        .arg(bootloader)
        .args(["--qemu-arg=-icount", "--qemu-arg=shift=0", "--qemu-arg=-semihosting-config"])
        .arg("--qemu-arg=enable=on,target=native");
    let (_, output) = run_to_end(run, "the measurement boot")?;
    let line = output
        .lines()
        .find(|l| l.contains("bootloader: boot"))
        .with_context(|| format!("the bootloader reported no boot; imager run said:\n{output}"))?;
    let ticks = line
        .split_once("boot ok after ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the boot did not succeed: {line}"))?;
    Ok(ticks)
}

/// Runs the RAM probe (`firmware/device/probe`: painted stack of each boot step, sizes of the
/// structures the device keeps) on QEMU's micro:bit and records what it measured. Its lines are
/// the measurement instrument's own report: `LABEL: ok=BOOL ... stack=N B` and `sizes: NAME N B,
/// ...`.
fn ram_probe(probe: &Path) -> Result<()> {
    let mut qemu = Command::new("qemu-system-arm");
    qemu.args(["-M", "microbit", "-nographic", "-semihosting-config", "enable=on,target=native"])
        .arg("-kernel")
        .arg(probe);
    let (status, output) = run_to_end(qemu, "the RAM probe")?;
    if !status.success() {
        bail!("the RAM probe failed ({status}):\n{output}");
    }
    let stacks = [
        ("signature verify", "ram.verify-stack"),
        ("boot (state log", "ram.boot-stack"),
        ("boot without signature check", "ram.boot-hashes-only-stack"),
        ("patch body decode", "ram.patch-decode-stack"),
    ];
    for (label, figure) in stacks {
        let line = output
            .lines()
            .find(|l| l.starts_with(label))
            .with_context(|| format!("the RAM probe reported no {label:?} line:\n{output}"))?;
        if line.contains("ok=false") {
            bail!("the RAM probe's measured step failed: {line}");
        }
        let bytes: u64 = line
            .split_once("stack=")
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no stack=N B in {line:?}"))?;
        println!("{line}");
        Figure::new(figure, bytes as f64, "B").record()?;
    }
    let structures = [
        ("StateLog", "state-log"),
        ("Agent", "agent"),
        ("BodyDecoder", "body-decoder"),
        ("Unpacker", "unpacker"),
        ("Header", "header"),
    ];
    for (name, figure) in structures {
        let bytes: u64 = output
            .lines()
            .filter_map(|l| l.strip_prefix("sizes: "))
            .flat_map(|l| l.split(", "))
            .find_map(|pair| {
                pair.strip_prefix(name)?.strip_prefix(' ')?.split(' ').next()?.parse().ok()
            })
            .with_context(|| format!("the RAM probe reported no size of {name}:\n{output}"))?;
        println!("{name}: {bytes} B");
        Figure::new(format!("ram.size.{figure}"), bytes as f64, "B").record()?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let shipped = build_device("")?;
    let verified = build_device("measure")?;
    let unverified = build_device("measure,unverified")?;
    let dir = tempfile::tempdir()?;
    let v1 = dir.path().join("v1.fwi");
    let key = fixture("keys/openssl-ed25519.pem");
    let out = Command::new(benchkit::sibling_binary("imager")?)
        .args(["fuse", "--board", "microbit", "--window", "10", "--version", "1.0.0"])
        .arg("--os")
        .arg(shipped.join("demo-os"))
        .arg("--app")
        .arg(shipped.join("demo-app"))
        .arg("--key")
        .arg(&key)
        .arg("--out")
        .arg(&v1)
        .output()?;
    if !out.status.success() {
        bail!("imager fuse: {}", String::from_utf8_lossy(&out.stderr));
    }

    let size = flash_size(&shipped.join("bootloader"))?;
    println!("micro:bit bootloader (prod, as shipped): {size} B of flash (text + data)");
    Figure::new("boot.bootloader-flash", size as f64, "B").record()?;
    let instructions = |ticks: u64| ticks as f64 * 62.5;
    let with = boot_ticks(&v1, &verified.join("bootloader"))?;
    let without = boot_ticks(&v1, &unverified.join("bootloader"))?;
    println!(
        "reset to hand-over, demo OS + app v1: {with} TIMER0 ticks (~{:.1} M instructions) with \
         signature verification, {without} (~{:.1} M) hashes only",
        instructions(with) / 1e6,
        instructions(without) / 1e6
    );
    Figure::new("boot.instructions", instructions(with), "instructions").record()?;
    Figure::new("boot.instructions-hashes-only", instructions(without), "instructions").record()?;
    Figure::new(
        "boot.ed25519-instructions",
        instructions(with) - instructions(without),
        "instructions",
    )
    .record()?;
    ram_probe(&shipped.join("probe"))?;
    Ok(())
}
