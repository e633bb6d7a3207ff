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

/// Whether this is the quick run: each benchmark then measures at a size that takes seconds.
/// Its figures are well-formed but not meant to be quoted.
pub fn quick() -> bool {
    std::env::var_os(QUICK_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}
