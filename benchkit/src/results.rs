//! One run's results: the figures each benchmark recorded, checked, with the machine, date and
//! commit they were measured on, as one JSON file and a readable summary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::Figure;

/// Where and when a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `/proc/cpuinfo`'s first model name.
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// When the run started (UTC, as `scripts/bench.sh` gives it).
    pub date: String,
    /// The commit measured (`git describe`-like, `-dirty` when the tree had changes).
    pub commit: String,
}

impl Machine {
    /// This machine, with the run's `date` and `commit`.
    pub fn here(date: String, commit: String) -> Machine {
        let cpu = crate::cpu_model();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        Machine { cpu, cores, date, commit }
    }
}

/// A figure as the results file has it: self-contained, so that results of several machines
/// can be put side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The benchmark that measured it (`scripts/bench.sh`'s name for it).
    pub benchmark: String,
    /// The figure's name.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The baseline's name, if any.
    pub baseline: Option<String>,
    /// The baseline's value in the same run.
    pub baseline_value: Option<f64>,
    /// value / baseline_value.
    pub ratio: Option<f64>,
    /// The CPU model.
    pub cpu: String,
    /// Cores.
    pub cores: usize,
    /// The run's date.
    pub date: String,
    /// The commit.
    pub commit: String,
}

/// The whole results file.
#[derive(Debug, Serialize)]
pub struct Results {
    /// The machine and run.
    pub machine: Machine,
    /// Whether this was the quick (smoke) run: its figures are not to be quoted.
    pub quick: bool,
    /// Every figure of every benchmark run, in the order recorded.
    pub figures: Vec<Row>,
}

/// Reads the figures `benchmark` recorded in `path`: every line a well-formed [`Figure`], at
/// least one. Errors name the benchmark, the file and the line.
pub fn read_figures(benchmark: &str, path: &Path) -> Result<Vec<Figure>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("benchmark {benchmark} recorded no figures: cannot read {}", path.display())
    })?;
    let mut figures = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("benchmark {benchmark}: {}, line {}", path.display(), i + 1);
        let figure: Figure = serde_json::from_str(line).with_context(at)?;
        figure.check().with_context(at)?;
        figures.push(figure);
    }
    if figures.is_empty() {
        bail!("benchmark {benchmark} recorded no figures ({} is empty)", path.display());
    }
    Ok(figures)
}

impl Results {
    /// Gathers `(benchmark, figures file)` pairs measured on `machine`. Fails if a figure name
    /// comes twice: each name must mean one thing.
    pub fn gather(machine: Machine, quick: bool, files: &[(String, PathBuf)]) -> Result<Results> {
        let mut figures: Vec<Row> = Vec::new();
        for (benchmark, path) in files {
            for f in read_figures(benchmark, path)? {
                if let Some(before) = figures.iter().find(|r| r.name == f.name) {
                    bail!(
                        "figure {} recorded twice (by {} and by {benchmark}): each figure needs a name of its own",
                        f.name,
                        before.benchmark
                    );
                }
                figures.push(Row {
                    benchmark: benchmark.clone(),
                    ratio: f.ratio(),
                    baseline: f.baseline.as_ref().map(|b| b.name.clone()),
                    baseline_value: f.baseline.as_ref().map(|b| b.value),
                    name: f.name,
                    value: f.value,
                    unit: f.unit,
                    cpu: machine.cpu.clone(),
                    cores: machine.cores,
                    date: machine.date.clone(),
                    commit: machine.commit.clone(),
                });
            }
        }
        Ok(Results { machine, quick, figures })
    }

    /// The readable summary: the machine, then a table row per figure.
    pub fn summary(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Benchmark results{}\n\n{} cores, {}; {}; commit {}\n",
            if self.quick {
                " (quick run: sizes for a smoke test, not figures to quote)"
            } else {
                ""
            },
            m.cores,
            m.cpu,
            m.date,
            m.commit
        );
        let _ = writeln!(
            s,
            "| benchmark | figure | value | unit | baseline | baseline value | ratio |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for r in &self.figures {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.benchmark,
                r.name,
                number(r.value),
                r.unit,
                r.baseline.as_deref().unwrap_or(""),
                r.baseline_value.map(number).unwrap_or_default(),
                r.ratio.map(|x| format!("{x:.3}")).unwrap_or_default()
            );
        }
        s
    }
}

/// A value as a person reads it: integers whole, others with four significant digits.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{x:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine { cpu: "cpu".into(), cores: 2, date: "d".into(), commit: "c".into() }
    }

    fn file(dir: &Path, name: &str, text: &str) -> (String, PathBuf) {
        let path = dir.join(format!("{name}.jsonl"));
        std::fs::write(&path, text).unwrap();
        (name.into(), path)
    }

    #[test]
    fn figures_are_gathered_with_their_ratio_and_machine() {
        let dir = std::env::temp_dir().join(format!("benchkit-{}-ok", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = file(
            &dir,
            "a",
            "{\"name\":\"a.x\",\"value\":3,\"unit\":\"s\",\"baseline\":{\"name\":\"b\",\"value\":4}}\n",
        );
        let results = Results::gather(machine(), true, &[a]).unwrap();
        assert_eq!(results.figures[0].ratio, Some(0.75));
        assert_eq!(results.figures[0].cpu, "cpu");
        assert!(results.summary().contains("| a | a.x | 3 | s | b | 4 | 0.750 |"));
    }

    #[test]
    fn a_benchmark_with_no_figures_a_bad_line_or_a_name_twice_fails_by_name() {
        let dir = std::env::temp_dir().join(format!("benchkit-{}-bad", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = file(&dir, "empty", "");
        let e = Results::gather(machine(), true, &[empty]).unwrap_err();
        assert!(format!("{e:#}").contains("benchmark empty recorded no figures"), "{e:#}");
        let bad =
            file(&dir, "bad", "{\"name\":\"x\",\"value\":1,\"unit\":\"s\"}\n{\"name\":\"y\"}\n");
        let e = Results::gather(machine(), true, &[bad]).unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let one = file(&dir, "one", "{\"name\":\"x\",\"value\":1,\"unit\":\"s\"}\n");
        let two = file(&dir, "two", "{\"name\":\"x\",\"value\":2,\"unit\":\"s\"}\n");
        let e = Results::gather(machine(), true, &[one, two]).unwrap_err();
        assert!(e.to_string().contains("recorded twice"), "{e}");
    }
}
