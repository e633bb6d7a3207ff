//! Gathers one benchmark run's figures into a results file and a readable summary (run by
//! `scripts/bench.sh`; see `benchkit`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use benchkit::results::{Machine, Results};
use clap::Parser;

/// The figures of one run of `scripts/bench.sh`, checked and gathered.
#[derive(Parser)]
struct Args {
    /// The results file to write (JSON).
    #[arg(long)]
    out: PathBuf,
    /// The summary to write (Markdown); it is printed too.
    #[arg(long)]
    summary: PathBuf,
    /// When the run started (UTC).
    #[arg(long)]
    date: String,
    /// The commit measured.
    #[arg(long)]
    commit: String,
    /// The run was the quick (smoke) run.
    #[arg(long)]
    quick: bool,
    /// BENCHMARK=FILE: the figures file each benchmark of the run recorded.
    #[arg(required = true)]
    figures: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut files = Vec::new();
    for pair in &args.figures {
        let Some((name, path)) = pair.split_once('=') else {
            bail!("{pair:?}: expected BENCHMARK=FILE");
        };
        files.push((name.to_owned(), PathBuf::from(path)));
    }
    let results = Results::gather(Machine::here(args.date, args.commit), args.quick, &files)?;
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(&args.out, json + "\n")
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let summary = results.summary();
    std::fs::write(&args.summary, &summary)
        .with_context(|| format!("cannot write {}", args.summary.display()))?;
    print!("{summary}");
    Ok(())
}
