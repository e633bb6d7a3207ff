//! Reading a board file: TOML into raw structs, then every rule checked, naming the field.

use serde::Deserialize;

use crate::board::{
    Board, EraseLayout, Flash, ImageSettings, PartitionName, Partitions, Ram, SectorRun,
};
use crate::error::BoardError;
use firmware::flash::{LayoutProblem, Slot};
use firmware::image::is_valid_board_name;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: String,
    description: String,
    chip: String,
    target: String,
    qemu_machine: Option<String>,
    flash: RawFlash,
    ram: Ram,
    partitions: Partitions,
    image: ImageSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlash {
    base: u32,
    size: u32,
    erase_size: Option<u32>,
    sectors: Option<Vec<SectorRun>>,
    write_unit: u32,
    erased_value: u8,
}

/// Collects the file name so every rule can fail with one call.
struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    fn ensure(
        &self,
        ok: bool,
        field: &str,
        message: impl FnOnce() -> String,
    ) -> Result<(), BoardError> {
        if ok {
            Ok(())
        } else {
            Err(BoardError::Invalid {
                file: self.file.into(),
                field: field.into(),
                message: message(),
            })
        }
    }
}

impl Board {
    /// Parses and validates a board file. `file` names it in error messages; when `expected_name`
    /// is given (the file's stem), the board's `name` must equal it.
    pub fn from_toml(
        text: &str,
        file: &str,
        expected_name: Option<&str>,
    ) -> Result<Board, BoardError> {
        let raw: RawBoard = toml::from_str(text).map_err(|err| BoardError::Parse {
            file: file.into(),
            message: err.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let check = Checker { file };

        check.ensure(is_valid_board_name(&raw.name), "name", || {
            format!("{:?} must be 1 to 32 characters of [a-z0-9_-]", raw.name)
        })?;
        if let Some(expected) = expected_name {
            check.ensure(raw.name == expected, "name", || {
                format!("{:?} does not match the file name ({expected}.toml)", raw.name)
            })?;
        }
        for (field, value) in [("chip", &raw.chip), ("target", &raw.target)] {
            check.ensure(!value.trim().is_empty(), field, || "must not be empty".into())?;
        }

        let flash = check_flash(&check, raw.flash)?;
        check.ensure(raw.ram.size > 0, "ram.size", || "must not be zero".into())?;
        check.ensure(
            u64::from(raw.ram.base) + u64::from(raw.ram.size) <= 1 << 32,
            "ram",
            || "runs past the end of the 32-bit address space".into(),
        )?;

        let board = Board {
            name: raw.name,
            description: raw.description,
            chip: raw.chip,
            target: raw.target,
            qemu_machine: raw.qemu_machine.filter(|m| !m.is_empty()),
            flash,
            ram: raw.ram,
            partitions: raw.partitions,
            image: raw.image,
        };
        check_partitions(&check, &board)?;
        check_image(&check, &board)?;
        check_device_layout(&check, &board)?;
        Ok(board)
    }
}

fn check_flash(check: &Checker<'_>, raw: RawFlash) -> Result<Flash, BoardError> {
    check.ensure(raw.size > 0, "flash.size", || "must not be zero".into())?;
    check.ensure(u64::from(raw.base) + u64::from(raw.size) <= 1 << 32, "flash", || {
        format!("{:#x} + {:#x} runs past the end of the 32-bit address space", raw.base, raw.size)
    })?;
    let erase = match (raw.erase_size, raw.sectors) {
        (Some(size), None) => {
            check.ensure(size > 0 && raw.size.is_multiple_of(size), "flash.erase_size", || {
                format!("{size:#x} must be non-zero and divide flash.size ({:#x})", raw.size)
            })?;
            EraseLayout::Uniform(size)
        }
        (None, Some(runs)) => {
            for (i, run) in runs.iter().enumerate() {
                check.ensure(
                    run.size > 0 && run.count > 0,
                    &format!("flash.sectors[{i}]"),
                    || "size and count must not be zero".into(),
                )?;
            }
            let total: u64 = runs.iter().map(|r| u64::from(r.size) * u64::from(r.count)).sum();
            check.ensure(total == u64::from(raw.size), "flash.sectors", || {
                format!("add up to {total:#x} bytes, flash.size is {:#x}", raw.size)
            })?;
            EraseLayout::Sectors(runs)
        }
        _ => {
            return Err(BoardError::Invalid {
                file: check.file.into(),
                field: "flash".into(),
                message: "give exactly one of erase_size (uniform) or sectors (mixed sizes)".into(),
            });
        }
    };
    let unit = raw.write_unit;
    let sizes: Vec<u32> = match &erase {
        EraseLayout::Uniform(size) => vec![*size],
        EraseLayout::Sectors(runs) => runs.iter().map(|r| r.size).collect(),
    };
    check.ensure(
        unit.is_power_of_two() && sizes.iter().all(|s| s.is_multiple_of(unit)),
        "flash.write_unit",
        || format!("{unit} must be a power of two that divides every erase unit"),
    )?;
    check.ensure(matches!(raw.erased_value, 0xFF | 0x00), "flash.erased_value", || {
        format!("{:#04x} must be 0xFF or 0x00", raw.erased_value)
    })?;
    Ok(Flash {
        base: raw.base,
        size: raw.size,
        erase,
        write_unit: unit,
        erased_value: raw.erased_value,
    })
}

fn check_partitions(check: &Checker<'_>, board: &Board) -> Result<(), BoardError> {
    let parts = &board.partitions;
    for name in PartitionName::ALL {
        let p = parts.get(name);
        let field = format!("partitions.{}", name.as_str());
        check.ensure(p.size > 0, &format!("{field}.size"), || "must not be zero".into())?;
        check.ensure(p.end() <= u64::from(board.flash.size), &field, || {
            format!(
                "{:#x}..{:#x} leaves flash, which is {:#x} bytes",
                p.offset,
                p.end(),
                board.flash.size
            )
        })?;
        check.ensure(
            board.is_erase_boundary(p.offset.into()),
            &format!("{field}.offset"),
            || {
                format!(
                    "{:#x} is not on an erase boundary{}",
                    p.offset,
                    nearest(board, p.offset.into())
                )
            },
        )?;
        check.ensure(board.is_erase_boundary(p.end()), &format!("{field}.size"), || {
            format!(
                "the partition ends at {:#x}, not on an erase boundary{}",
                p.end(),
                nearest(board, p.end())
            )
        })?;
    }
    for (i, a) in PartitionName::ALL.iter().enumerate() {
        for b in &PartitionName::ALL[i + 1..] {
            let (pa, pb) = (parts.get(*a), parts.get(*b));
            let overlap = u64::from(pa.offset) < pb.end() && u64::from(pb.offset) < pa.end();
            check.ensure(!overlap, &format!("partitions.{}", b.as_str()), || {
                format!(
                    "{:#x}..{:#x} overlaps partitions.{} ({:#x}..{:#x})",
                    pb.offset,
                    pb.end(),
                    a.as_str(),
                    pa.offset,
                    pa.end()
                )
            })?;
        }
    }
    check.ensure(parts.slot_b.size >= parts.slot_a.size, "partitions.slot_b.size", || {
        format!(
            "slot B ({:#x} bytes) cannot hold what slot A ({:#x} bytes) can",
            parts.slot_b.size, parts.slot_a.size
        )
    })?;
    Ok(())
}

/// What the device code needs on top of the file's own rules.
fn check_device_layout(check: &Checker<'_>, board: &Board) -> Result<(), BoardError> {
    let parts = &board.partitions;
    // What the device code needs on top: a swap moves an image through slot B one erase unit
    // further on, so slot B needs one unit more than slot A, in units of matching sizes.
    let layout = board.flash_layout().map_err(|problem| BoardError::Invalid {
        file: check.file.into(),
        field: match problem {
            LayoutProblem::StateUnits => "partitions.state.size",
            LayoutProblem::Header => "image.header_size",
            LayoutProblem::WriteUnit => "flash.write_unit",
            _ => "partitions",
        }
        .into(),
        message: problem.to_string(),
    })?;
    let a_units = layout.unit_count(layout.slot(Slot::A));
    check.ensure(layout.swap_room(a_units).is_some(), "partitions.slot_b.size", || {
        format!(
            "slot B ({:#x} bytes) cannot hold what slot A ({:#x} bytes) can plus the erase unit \
             of room a swap needs",
            parts.slot_b.size, parts.slot_a.size
        )
    })?;
    Ok(())
}

fn check_image(check: &Checker<'_>, board: &Board) -> Result<(), BoardError> {
    let header = board.image.header_size;
    let unit = board.flash.write_unit;
    check.ensure(header > 0 && header.is_multiple_of(unit), "image.header_size", || {
        format!("{header:#x} must be a non-zero multiple of flash.write_unit ({unit})")
    })?;
    check.ensure(header < board.partitions.slot_a.size, "image.header_size", || {
        format!("{header:#x} leaves no room in slot A ({:#x} bytes)", board.partitions.slot_a.size)
    })?;
    Ok(())
}

/// ", nearest boundaries are X and Y" for an offset that is not on one.
fn nearest(board: &Board, offset: u64) -> String {
    let mut below = 0u64;
    let mut above = None;
    for (start, size) in board.erase_units() {
        let (start, end) = (u64::from(start), u64::from(start) + u64::from(size));
        if start <= offset && offset < end {
            below = start;
            above = Some(end);
        }
    }
    match above {
        Some(above) => format!(" (nearest: {below:#x} or {above:#x})"),
        None => String::new(),
    }
}
