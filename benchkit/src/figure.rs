//! One measured figure and how a benchmark records it.

use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A figure as a benchmark measured it: one JSON line in the figures file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// Dotted and stable, e.g. `fuse.throughput`: docs and comparisons across machines key on it.
    pub name: String,
    /// The measured value, finite.
    pub value: f64,
    /// Its unit (`MB/s`, `s`, `B`, `erases`, `ratio`...).
    pub unit: String,
    /// What the same run measured for the baseline this figure is compared with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

/// The baseline of a figure, measured in the same run, in the figure's unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// The tool or setup, e.g. `imgtool sign 2.5.0`, `nginx`.
    pub name: String,
    /// Its value, finite and not zero (the ratio divides by it).
    pub value: f64,
}

impl Figure {
    /// A figure with no baseline.
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Figure {
        Figure { name: name.into(), value, unit: unit.into(), baseline: None }
    }

    /// The same figure compared with `name`'s `value`.
    pub fn against(mut self, name: impl Into<String>, value: f64) -> Figure {
        self.baseline = Some(Baseline { name: name.into(), value });
        self
    }

    /// value / baseline, when there is a baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().map(|b| self.value / b.value)
    }

    /// Fails, saying which figure and why, unless the figure can be compared and quoted: a
    /// name of lower-case words, digits, `-`, `_` and dots; a finite value; a unit; a named,
    /// finite, non-zero baseline.
    pub fn check(&self) -> Result<()> {
        let name = &self.name;
        let name_ok = !name.is_empty()
            && !name.starts_with('.')
            && !name.ends_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !name_ok {
            bail!("figure name {name:?}: use lower-case letters, digits, '-', '_' and dots");
        }
        if !self.value.is_finite() {
            bail!("figure {name}: value {} is not a finite number", self.value);
        }
        if self.unit.trim().is_empty() {
            bail!("figure {name}: no unit");
        }
        if let Some(b) = &self.baseline {
            if b.name.trim().is_empty() {
                bail!("figure {name}: the baseline has no name");
            }
            if !b.value.is_finite() || b.value == 0.0 {
                bail!(
                    "figure {name}: baseline {} has value {}, not a finite non-zero number",
                    b.name,
                    b.value
                );
            }
        }
        Ok(())
    }

    /// Checks the figure, prints it for the reader and, when `FWI_BENCH_FIGURES` names a file,
    /// appends it there as one JSON line.
    pub fn record(self) -> Result<()> {
        self.check()?;
        let ratio = self
            .ratio()
            .map(|r| format!(" ({r:.3} of {})", self.baseline.as_ref().map_or("", |b| &b.name)))
            .unwrap_or_default();
        println!("figure {} = {} {}{ratio}", self.name, self.value, self.unit);
        let Some(path) = std::env::var_os(crate::FIGURES_ENV) else {
            return Ok(());
        };
        let mut line = serde_json::to_string(&self)?;
        line.push('\n');
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(
                || format!("cannot open the figures file {}", path.to_string_lossy()),
            )?;
        file.write_all(line.as_bytes())
            .with_context(|| format!("cannot write to the figures file {}", path.to_string_lossy()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_without_a_unit_or_with_a_zero_baseline_is_refused_by_name() {
        let e = Figure::new("r2.checkins", 1.0, " ").check().unwrap_err().to_string();
        assert!(e.contains("r2.checkins") && e.contains("unit"), "{e}");
        let e = Figure::new("r2.checkins", 1.0, "/s").against("bare", 0.0).check().unwrap_err();
        assert!(e.to_string().contains("bare"), "{e}");
        let e = Figure::new("R2 checkins", 1.0, "/s").check().unwrap_err();
        assert!(e.to_string().contains("lower-case"), "{e}");
        let e = Figure::new("r2.x", f64::NAN, "/s").check().unwrap_err();
        assert!(e.to_string().contains("finite"), "{e}");
        let ok = Figure::new("r2.x", 3.0, "/s").against("bare", 4.0);
        ok.check().unwrap();
        assert_eq!(ok.ratio(), Some(0.75));
    }
}
