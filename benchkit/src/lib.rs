//! What every benchmark of the project shares, so that `scripts/bench.sh` can run them all the
//! same way and no figure is scraped from text meant for people:
//!
//! - [`Figure`]: one measured figure (name, value, unit, and the baseline it is compared with),
//!   recorded with [`Figure::record`] as one JSON line in the file `FWI_BENCH_FIGURES` names.
//! - [`quick`]: whether `FWI_BENCH_QUICK` asks for the smoke run (`scripts/bench.sh --quick`,
//!   part of the test command): sizes that take seconds, so that a benchmark whose inputs broke
//!   fails CI instead of rotting until someone runs it by hand.
//! - The `bench-results` program: the figures of one run, checked and gathered with the machine
//!   they were measured on into one results file and a readable summary.

mod figure;
pub mod results;

pub use figure::{Baseline, Figure};

/// The environment variable naming the file a benchmark appends its figures to.
pub const FIGURES_ENV: &str = "FWI_BENCH_FIGURES";

/// The environment variable that asks for the quick (smoke) run.
pub const QUICK_ENV: &str = "FWI_BENCH_QUICK";

/// The CPU model (`/proc/cpuinfo`'s first model name), for the record next to every figure.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A program of the workspace (`imager`, `ota-server`) built in the same profile as the running
/// benchmark: next to its `examples/` folder, so `cargo run --release --example ...` uses the
/// release build and the quick run (`scripts/bench.sh --quick`, in the dev profile) reuses the
/// binaries the tests already built instead of compiling the workspace a second time.
pub fn sibling_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or_else(|| anyhow::anyhow!("{}: not inside target/PROFILE/examples", exe.display()))?;
    let path = profile_dir.join(name);
    if !path.exists() {
        let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let flag = if profile == "release" { " --release" } else { "" };
        anyhow::bail!(
            "{} is missing: build it first in the benchmark's profile ({profile}): `cargo build{flag} -p {name}`",
            path.display()
        );
    }
    Ok(path)
}

/// Whether this is the quick run: each benchmark then measures at a size that takes seconds.
/// Its figures are well-formed but not meant to be quoted.
pub fn quick() -> bool {
    std::env::var_os(QUICK_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}
