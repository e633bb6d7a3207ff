//! What the benchmark examples share: timing, running programs, the machine's description,
//! and the 1 MiB of real Thumb code they measure on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Bytes of the real-code input.
pub const INPUT_LEN: usize = 1 << 20;

/// Median wall time of `runs` calls.
pub fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Runs `command`; fails with its standard error if it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let out = command.output().with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Builds (once, into `work`) the 1 MiB input from `here/thumb-app.cpp`: compiled with -Os for
/// a Cortex-M0 and for a Cortex-M4F, the two raw binaries back to back, cut at 1 MiB.
pub fn build_input(here: &Path, work: &Path) -> Result<PathBuf> {
    let out = work.join("thumb-app.bin");
    if std::fs::metadata(&out).is_ok_and(|m| m.len() == INPUT_LEN as u64) {
        return Ok(out);
    }
    let mut code = Vec::new();
    for (name, flags) in [
        ("m0", &["-mcpu=cortex-m0", "-mfloat-abi=soft"][..]),
        ("m4f", &["-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"][..]),
    ] {
        let elf = work.join(format!("thumb-app-{name}.elf"));
        let bin = work.join(format!("thumb-app-{name}.bin"));
        run(Command::new("arm-none-eabi-g++")
            .args(["-mthumb", "-Os", "-w", "--specs=nosys.specs"])
            .args(flags)
            .arg(here.join("thumb-app.cpp"))
            .arg("-o")
            .arg(&elf))
        .context("arm-none-eabi-g++ is needed (Debian: gcc-arm-none-eabi libstdc++-arm-none-eabi-newlib)")?;
        run(Command::new("arm-none-eabi-objcopy").args(["-O", "binary"]).arg(&elf).arg(&bin))?;
        code.extend(std::fs::read(&bin)?);
    }
    if code.len() < INPUT_LEN {
        bail!("the two builds give {} bytes, fewer than 1 MiB", code.len());
    }
    code.truncate(INPUT_LEN);
    std::fs::write(&out, code)?;
    Ok(out)
}

/// The machine, for the record: cores and CPU model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = benchkit::cpu_model();
    format!("{cpus} cores, {model}")
}
