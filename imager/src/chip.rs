//! `imager boards --check`: each board file held against probe-rs's built-in target database
//! (compiled into imager, so offline): the chip exists and has the board's kind of core, its
//! flash and RAM hold what the board file says, and every partition starts and ends on the
//! chip's real sector grid. A partition off that grid is the dangerous case: erasing it would
//! erase part of its neighbour.
//!
//! The board file still rules the flash size where the chip's entry describes a window onto
//! external flash (RP2040: its entry covers the whole 128 MiB XIP address space, whatever flash
//! chip the board carries); that case is a note, not a problem.

use std::ops::Range;

use boards::{Board, PartitionName};
use probe_rs::config::{MemoryRegion, Registry};
use probe_rs::{CoreType, Target};

/// What the check found for one board.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChipCheck {
    /// The board.
    pub board: String,
    /// The probe-rs chip name.
    pub chip: String,
    /// Facts worth knowing that are not wrong.
    pub notes: Vec<String>,
    /// What is wrong; empty if the board file matches its chip.
    pub problems: Vec<String>,
}

impl ChipCheck {
    /// Whether the board file matches its chip.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// For people: a verdict line, then notes and problems.
    pub fn to_text(&self) -> String {
        let verdict = if self.ok() { "ok  " } else { "FAIL" };
        let mut text = format!("{verdict} {} ({})\n", self.board, self.chip);
        for n in &self.notes {
            text += &format!("       note: {n}\n");
        }
        for p in &self.problems {
            text += &format!("       problem: {p}\n");
        }
        text
    }
}

/// Checks `board` against the chip its file names.
pub fn check(board: &Board, registry: &Registry) -> ChipCheck {
    let mut report =
        ChipCheck { board: board.name.clone(), chip: board.chip.clone(), ..ChipCheck::default() };
    let target = match registry.get_target_by_name(&board.chip) {
        Ok(target) => target,
        Err(_) => {
            let stem: String = board.chip.chars().take(5).collect();
            let mut close = registry.search_chips(&stem);
            close.truncate(8);
            report.problems.push(format!(
                "chip {:?} is not in probe-rs's target database{}",
                board.chip,
                if close.is_empty() {
                    String::new()
                } else {
                    format!(" (similar: {})", close.join(", "))
                }
            ));
            return report;
        }
    };
    if !target.name.eq_ignore_ascii_case(&board.chip) {
        report.notes.push(format!("probe-rs knows the chip as {}", target.name));
    }
    check_core(board, &target, &mut report);
    check_ram(board, &target, &mut report);
    let flash = flash_range(board);
    let Some(parts) = covering_regions(&target, &flash) else {
        report.problems.push(format!(
            "flash {} is not inside {}'s flash ({})",
            show(&flash),
            target.name,
            regions(&target, true)
        ));
        return report;
    };
    if let [region] = parts.as_slice()
        && *region != flash
    {
        report.notes.push(format!(
            "{}'s flash region is {} ({}); the board file's {} at {:#x} rules (external flash behind an XIP window, or a smaller part)",
            target.name,
            show(region),
            kib(region.end - region.start),
            kib(flash.end - flash.start),
            flash.start
        ));
    }
    check_sectors(board, &target, &flash, &parts, &mut report);
    report
}

/// The chip's flash regions that together hold `flash`, in address order (a dual-bank chip
/// lists one per bank); `None` if they leave part of it out.
fn covering_regions(target: &Target, flash: &Range<u64>) -> Option<Vec<Range<u64>>> {
    let mut parts: Vec<Range<u64>> = target
        .memory_map
        .iter()
        .filter_map(|r| match r {
            MemoryRegion::Nvm(nvm)
                if !nvm.is_alias && nvm.range.start < flash.end && flash.start < nvm.range.end =>
            {
                Some(nvm.range.clone())
            }
            _ => None,
        })
        .collect();
    parts.sort_by_key(|r| r.start);
    let mut covered = flash.start;
    for part in &parts {
        if part.start > covered {
            return None;
        }
        covered = covered.max(part.end);
    }
    (!parts.is_empty() && covered >= flash.end).then_some(parts)
}

/// The Rust target's core against the chip's first core.
fn check_core(board: &Board, target: &Target, report: &mut ChipCheck) {
    let expected = match board.target.split('-').next().unwrap_or_default() {
        "thumbv6m" => Some(CoreType::Armv6m),
        "thumbv7m" => Some(CoreType::Armv7m),
        "thumbv7em" => Some(CoreType::Armv7em),
        "thumbv8m.base" | "thumbv8m.main" => Some(CoreType::Armv8m),
        _ => None,
    };
    let core = target.cores.first().map(|c| c.core_type);
    match (expected, core) {
        (Some(expected), Some(core)) if expected != core => report.problems.push(format!(
            "target {} builds for {expected:?} cores, {} has a {core:?} core",
            board.target, target.name
        )),
        (None, _) => report.notes.push(format!("target {}: core kind not checked", board.target)),
        _ => {}
    }
}

/// The board's RAM inside one of the chip's RAM regions.
fn check_ram(board: &Board, target: &Target, report: &mut ChipCheck) {
    let ram = u64::from(board.ram.base)..u64::from(board.ram.base) + u64::from(board.ram.size);
    let fits = target.memory_map.iter().any(|r| match r {
        MemoryRegion::Ram(region) => contains(&region.range, &ram),
        _ => false,
    });
    if !fits {
        report.problems.push(format!(
            "RAM {} is not inside any RAM region of {} ({})",
            show(&ram),
            target.name,
            regions(target, false)
        ));
    }
}

/// Partitions and the board's erase units against the sectors of the chip's flash algorithms
/// (one per region `parts` lists).
fn check_sectors(
    board: &Board,
    target: &Target,
    flash: &Range<u64>,
    parts: &[Range<u64>],
    report: &mut ChipCheck,
) {
    let mut sectors = Vec::new();
    for part in parts {
        let piece = part.start.max(flash.start)..part.end.min(flash.end);
        let algorithms: Vec<_> = target
            .flash_algorithms
            .iter()
            .filter(|a| contains(&a.flash_properties.address_range, &piece))
            .collect();
        let Some(algorithm) = algorithms.iter().find(|a| a.default).or(algorithms.first()) else {
            report.problems.push(format!(
                "{} has no flash algorithm for {}: probe-rs cannot program it",
                target.name,
                show(&piece)
            ));
            return;
        };
        let properties = &algorithm.flash_properties;
        if properties.erased_byte_value != board.flash.erased_value {
            report.problems.push(format!(
                "erased_value {:#04x}, but {}'s flash reads {:#04x} when erased",
                board.flash.erased_value, target.name, properties.erased_byte_value
            ));
        }
        match sectors_in(&properties.address_range, &properties.sectors, &piece) {
            Ok(found) => sectors.extend(found),
            Err(why) => {
                report.problems.push(format!("{}'s sector list: {why}", target.name));
                return;
            }
        }
    }
    // Sector boundaries: where a sector starts or ends.
    let mut bounds: Vec<u64> = sectors.iter().flat_map(|s| [s.start, s.end]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let grid = |address: u64| bounds.binary_search(&address).is_ok();
    let around = |address: u64| {
        let before = sectors.iter().rev().find(|s| s.start <= address);
        match before {
            Some(s) => format!("its {} sector there is {}", kib(s.end - s.start), show(s)),
            None => String::new(),
        }
    };
    for name in PartitionName::ALL {
        let part = board.partitions.get(name);
        let start = flash.start + u64::from(part.offset);
        let end = start + u64::from(part.size);
        for (which, address) in [("starts", start), ("ends", end)] {
            if !grid(address) {
                report.problems.push(format!(
                    "partition {} ({}) {which} at {address:#x}, off {}'s sector grid ({})",
                    name.as_str(),
                    show(&(start..end)),
                    target.name,
                    around(address)
                ));
            }
        }
    }
    // The board's erase units must each be whole chip sectors: the device erases what the board
    // file calls one unit, and the chip erases a whole sector.
    if let Some((offset, size)) =
        board.erase_units().into_iter().find(|&(offset, _)| !grid(flash.start + u64::from(offset)))
    {
        report.problems.push(format!(
            "the board's erase unit at {:#x} ({}) does not start on a sector of {} ({}): the board file's flash geometry is not the chip's",
            flash.start + u64::from(offset),
            kib(u64::from(size)),
            target.name,
            around(flash.start + u64::from(offset))
        ));
    }
}

/// The chip's sectors that lie in `within`, in order, from probe-rs's run-length list (each
/// entry: a sector size and the offset from the algorithm's start where that size begins).
fn sectors_in(
    range: &Range<u64>,
    list: &[probe_rs::config::SectorDescription],
    within: &Range<u64>,
) -> Result<Vec<Range<u64>>, String> {
    let mut out = Vec::new();
    for (i, run) in list.iter().enumerate() {
        let from = range.start + run.address;
        let to = list.get(i + 1).map_or(range.end, |next| range.start + next.address);
        if run.size == 0 || to < from {
            return Err(format!("entry {i} is malformed"));
        }
        if to <= within.start || from >= within.end {
            continue;
        }
        // The first sector of this run that ends after `within` starts.
        let skip = within.start.saturating_sub(from) / run.size;
        let mut start = from + skip * run.size;
        while start < to.min(within.end) {
            out.push(start..start + run.size);
            start += run.size;
        }
    }
    if out.first().is_none_or(|s| s.start > within.start) {
        return Err(format!("no sector starts at {:#x}", within.start));
    }
    Ok(out)
}

fn flash_range(board: &Board) -> Range<u64> {
    u64::from(board.flash.base)..u64::from(board.flash.base) + u64::from(board.flash.size)
}

fn contains(outer: &Range<u64>, inner: &Range<u64>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn show(range: &Range<u64>) -> String {
    format!("{:#x}..{:#x}", range.start, range.end)
}

fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// The chip's flash (`nvm`) or RAM regions, for messages.
fn regions(target: &Target, nvm: bool) -> String {
    let list: Vec<String> = target
        .memory_map
        .iter()
        .filter_map(|r| match r {
            MemoryRegion::Nvm(n) if nvm && !n.is_alias => Some(show(&n.range)),
            MemoryRegion::Ram(r) if !nvm => Some(show(&r.range)),
            _ => None,
        })
        .collect();
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(toml: &str) -> Board {
        Board::from_toml(toml, "test.toml", None).unwrap()
    }

    /// STM32F429ZI: 2 MiB in two banks that probe-rs lists as two regions, each with the
    /// F4's 16/64/128 KiB sectors.
    const DUAL_BANK: &str = r#"
name = "disco-f429"
description = "dual bank"
chip = "STM32F429ZITx"
target = "thumbv7em-none-eabihf"
[flash]
base = 0x0800_0000
size = 0x20_0000
sectors = [
    { size = 0x4000, count = 4 }, { size = 0x1_0000, count = 1 }, { size = 0x2_0000, count = 7 },
    { size = 0x4000, count = 4 }, { size = 0x1_0000, count = 1 }, { size = 0x2_0000, count = 7 },
]
write_unit = 4
erased_value = 0xFF
[ram]
base = 0x2000_0000
size = 0x3_0000
[partitions]
bootloader = { offset = 0x0, size = 0xC000 }
state = { offset = 0xC000, size = 0x1_4000 }
slot_a = { offset = 0x2_0000, size = 0x6_0000 }
slot_b = { offset = 0x8_0000, size = 0x8_0000 }
[image]
header_size = 0x400
"#;

    #[test]
    fn a_flash_over_two_banks_is_checked_against_both() {
        let registry = Registry::from_builtin_families();
        let check = check(&board(DUAL_BANK), &registry);
        assert!(check.ok(), "{check:?}");

        // A board file that takes the second bank for 16 KiB sectors throughout: its unit at
        // 0x8114000 lies inside the chip's 64 KiB sector.
        let fine = DUAL_BANK.replacen(
            "{ size = 0x4000, count = 4 }, { size = 0x1_0000, count = 1 }, { size = 0x2_0000, count = 7 },\n]",
            "{ size = 0x4000, count = 64 },\n]",
            1,
        );
        assert_ne!(fine, DUAL_BANK);
        let check = super::check(&board(&fine), &registry);
        assert!(
            check.problems.iter().any(|p| p.contains("erase unit at 0x8114000 (16 KiB)")),
            "{check:?}"
        );
    }

    #[test]
    fn an_unknown_chip_is_named_with_close_ones() {
        let registry = Registry::from_builtin_families();
        let text = include_str!("../../boards/defs/microbit.toml")
            .replace("chip = \"nRF51822_xxAA\"", "chip = \"nRF51822_xxZZ\"");
        let check = check(&board(&text), &registry);
        assert_eq!(check.problems.len(), 1, "{check:?}");
        assert!(
            check.problems[0]
                .contains("\"nRF51822_xxZZ\" is not in probe-rs's target database (similar: nRF51"),
            "{check:?}"
        );
    }

    #[test]
    fn a_core_of_another_kind_is_a_problem() {
        let registry = Registry::from_builtin_families();
        let text = include_str!("../../boards/defs/microbit.toml")
            .replace("thumbv6m-none-eabi", "thumbv7em-none-eabihf");
        let check = check(&board(&text), &registry);
        assert!(
            check
                .problems
                .iter()
                .any(|p| p.contains("builds for Armv7em cores, nRF51822_xxAA has a Armv6m core")),
            "{check:?}"
        );
    }
}
