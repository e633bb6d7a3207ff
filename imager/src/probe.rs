//! `imager flash`: a flash plan (`crate::plan`) carried out through a debug probe, with
//! probe-rs: the plan's partitions erased, then its programs written in the plan's order (the
//! state log last), optionally read back, then the chip reset so the new image starts.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use probe_rs::config::Registry;
use probe_rs::flashing::{
    DownloadOptions, FlashLoader, FlashProgress, ProgressEvent, ProgressOperation,
};
use probe_rs::probe::DebugProbeSelector;
use probe_rs::probe::list::{Accessibility, Lister};
use probe_rs::{Permissions, Target};

use boards::Board;

use crate::plan::FlashPlan;

/// How to reach the chip.
#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    /// Which probe (`VID:PID[:SERIAL]`); needed only when several are attached.
    pub probe: Option<DebugProbeSelector>,
    /// SWD/JTAG clock in kHz; the probe's default if not given.
    pub speed_khz: Option<u32>,
    /// Read every programmed byte back and compare.
    pub verify: bool,
}

/// What to do when no probe is usable: said with every "no probe" error.
const PROBE_HELP: &str = "check that the probe is plugged in and shows up in `lsusb`; on Linux, \
a probe that is attached but not accessible to your user needs udev rules (see \
https://probe.rs/docs/getting-started/probe-setup/ : install 69-probe-rs.rules into \
/etc/udev/rules.d, run `udevadm control --reload` and `udevadm trigger`, replug the probe, and \
make sure your user is in the plugdev group)";

/// Parses `--probe VID:PID[:SERIAL]` (hex ids, as `lsusb` prints them).
pub fn parse_selector(s: &str) -> Result<DebugProbeSelector, String> {
    s.parse::<DebugProbeSelector>()
        .map_err(|_| format!("{s:?}: expected VID:PID or VID:PID:SERIAL, with hex ids as lsusb prints them (e.g. 0d28:0204)"))
}

/// Refuses a board whose file does not match its chip (`crate::chip`): erasing a partition
/// off the chip's sector grid erases only the sectors wholly inside it, and programming what
/// was not erased corrupts the flash.
pub fn ensure_matches_chip(board: &Board) -> Result<()> {
    let check = crate::chip::check(board, &Registry::from_builtin_families());
    if !check.ok() {
        bail!(
            "board {} does not match chip {}: {} (see `imager boards --check`)",
            board.name,
            board.chip,
            check.problems.join("; ")
        );
    }
    Ok(())
}

/// Carries out `plan` through a probe; progress goes to `bars` (drawn on the terminal, hidden
/// when it is not one). The board must match its chip ([`ensure_matches_chip`]).
pub fn flash(plan: &FlashPlan, options: &ProbeOptions, bars: &MultiProgress) -> Result<()> {
    let target = target(&plan.chip)?;
    let downloads = downloads(plan, &target)?;
    let info = choose_probe(&Lister::new(), options.probe.as_ref())?;
    let mut probe = info.open().map_err(|e| anyhow!("opening probe {info}: {e}; {PROBE_HELP}"))?;
    if let Some(khz) = options.speed_khz {
        let set = probe
            .set_speed(khz)
            .with_context(|| format!("setting the probe speed to {khz} kHz"))?;
        bars.println(format!("probe {info}: {set} kHz")).ok();
    }
    let mut session = match probe.attach(target, Permissions::default()) {
        Ok(session) => session,
        Err(probe_rs::Error::MissingPermissions(why)) => bail!(
            "{} is locked ({why}); unlocking it erases the whole chip, the provisioning record \
             with it, which imager does not do: re-provision it deliberately (e.g. `probe-rs \
             erase --allow-erase-all`, then flash the bootloader)",
            plan.chip
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "attaching to {} through {info} (is the board powered and the cable seated?)",
                    plan.chip
                )
            });
        }
    };

    let erase_bar = bar(bars, plan.erase_bytes(), "erase");
    for e in &plan.erase {
        erase_bar.set_message(format!("erase {}", e.partition.as_str()));
        let (start, end) = (u64::from(e.address), u64::from(e.address) + u64::from(e.size));
        probe_rs::flashing::erase(&mut session, &mut FlashProgress::empty(), start, end, false)
            .with_context(|| format!("erasing {} ({start:#x}..{end:#x})", e.partition.as_str()))?;
        erase_bar.inc(u64::from(e.size));
    }
    erase_bar.finish_with_message("erased");

    for (what, loader) in downloads {
        let mut events = Bars::new(bars, what);
        let mut download = DownloadOptions::new();
        download.progress = FlashProgress::new(|event| events.on(event));
        download.skip_erase = true;
        download.verify = options.verify;
        let done = loader.commit(&mut session, download);
        events.finish();
        done.with_context(|| format!("programming the {what}"))?;
    }

    session.core(0).and_then(|mut core| core.reset()).context("resetting the chip")?;
    Ok(())
}

/// The chip `name` from probe-rs's built-in database.
pub fn target(name: &str) -> Result<Target> {
    Registry::from_builtin_families()
        .get_target_by_name(name)
        .map_err(|e| anyhow!("chip {name:?}: {e} (see `imager boards --check`)"))
}

/// The plan's programs as probe-rs downloads, in order: everything but the state log, then the
/// state log, so that a chip cut off between the two holds no record naming an image that is
/// not all there. probe-rs refuses data outside `target`'s memory map here, before any probe is
/// touched.
pub fn downloads(plan: &FlashPlan, target: &Target) -> Result<Vec<(&'static str, FlashLoader)>> {
    let (state, rest): (Vec<_>, Vec<_>) =
        plan.program.iter().partition(|p| p.partition == boards::PartitionName::State);
    [("image", rest), ("state", state)]
        .into_iter()
        .map(|(what, programs)| {
            let mut loader = target.flash_loader();
            for p in programs {
                loader.add_data(u64::from(p.address), &p.bytes).with_context(|| {
                    format!("{}: {:#x}..{:#x} on {}", p.what, p.address, p.end(), target.name)
                })?;
            }
            Ok((what, loader))
        })
        .collect()
}

/// The probe to use: the one `selector` names, or the only one attached.
fn choose_probe(
    lister: &Lister,
    selector: Option<&DebugProbeSelector>,
) -> Result<probe_rs::probe::DebugProbeInfo> {
    let found = lister.list_with_access(selector);
    let wanted = selector.map(|s| format!(" matching {s}")).unwrap_or_default();
    let (usable, denied): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|p| p.accessibility == Accessibility::Accessible);
    match (usable.len(), denied.first()) {
        (1, _) => Ok(usable.into_iter().next().map(|p| p.info).expect("one probe")),
        (0, None) => bail!("no debug probe found{wanted}; {PROBE_HELP}"),
        (0, Some(p)) => {
            bail!("debug probe {} found, but this user may not open it; {PROBE_HELP}", p.info)
        }
        _ => bail!(
            "{} debug probes found{wanted}: {}; choose one with --probe VID:PID:SERIAL",
            usable.len(),
            usable.iter().map(|p| p.info.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A progress bar of `total` bytes.
fn bar(bars: &MultiProgress, total: u64, message: &str) -> ProgressBar {
    let bar = bars.add(ProgressBar::new(total));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// probe-rs's progress events, shown as one bar per operation.
struct Bars<'m> {
    bars: &'m MultiProgress,
    what: &'static str,
    shown: Vec<(ProgressOperation, ProgressBar)>,
}

impl<'m> Bars<'m> {
    fn new(bars: &'m MultiProgress, what: &'static str) -> Self {
        Bars { bars, what, shown: Vec::new() }
    }

    fn get(&self, op: ProgressOperation) -> Option<&ProgressBar> {
        self.shown
            .iter()
            .find(|(o, _)| std::mem::discriminant(o) == std::mem::discriminant(&op))
            .map(|(_, b)| b)
    }

    /// Ends every bar still drawn (probe-rs does not finish a bar it sent no progress for).
    fn finish(&self) {
        self.shown.iter().filter(|(_, b)| !b.is_finished()).for_each(|(_, b)| b.finish());
    }

    fn on(&mut self, event: ProgressEvent) {
        let name = |op| match op {
            ProgressOperation::Fill => "read back",
            ProgressOperation::Erase => "erase",
            ProgressOperation::Program => "program",
            ProgressOperation::Verify => "verify",
        };
        match event {
            // imager erased the partitions itself (downloads skip erasing): no bar for it.
            ProgressEvent::AddProgressBar { operation: ProgressOperation::Erase, .. } => {}
            ProgressEvent::AddProgressBar { operation, total } => {
                let b = bar(
                    self.bars,
                    total.unwrap_or(0),
                    &format!("{} {}", name(operation), self.what),
                );
                self.shown.push((operation, b));
            }
            ProgressEvent::Progress { operation, size, .. } => {
                if let Some(b) = self.get(operation) {
                    b.inc(size);
                }
            }
            ProgressEvent::Finished(operation) => {
                if let Some(b) = self.get(operation) {
                    b.finish();
                }
            }
            ProgressEvent::Failed(operation) => {
                if let Some(b) = self.get(operation) {
                    b.abandon_with_message(format!("{} {} failed", name(operation), self.what));
                }
            }
            ProgressEvent::DiagnosticMessage { message } => {
                self.bars.println(message).ok();
            }
            ProgressEvent::Started(_) | ProgressEvent::FlashLayoutReady { .. } => {}
        }
    }
}
