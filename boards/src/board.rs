//! The board types and what can be derived from them.

use serde::Serialize;

/// One board: its flash, RAM, partitions and tooling facts. Only made by
/// [`Board::from_toml`], which validates every rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Board {
    /// Board name, as used on the command line and in image manifests.
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// probe-rs chip name.
    pub chip: String,
    /// Rust target triple of code running on it.
    pub target: String,
    /// QEMU machine (`-M`) emulating it, if any.
    pub qemu_machine: Option<String>,
    /// Flash geometry.
    pub flash: Flash,
    /// RAM.
    pub ram: Ram,
    /// Where bootloader, slots and state live.
    pub partitions: Partitions,
    /// Image placement.
    pub image: ImageSettings,
}

/// Flash geometry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flash {
    /// Absolute address of the first byte of flash.
    pub base: u32,
    /// Size in bytes.
    pub size: u32,
    /// How flash is divided into erase units.
    pub erase: EraseLayout,
    /// Smallest programmable unit; writes are aligned to it.
    pub write_unit: u32,
    /// Value of every byte after an erase.
    pub erased_value: u8,
}

/// How flash is divided into erase units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EraseLayout {
    /// Every erase unit has this size.
    Uniform(u32),
    /// Runs of sectors of mixed sizes, from the start of flash.
    Sectors(Vec<SectorRun>),
}

/// `count` consecutive sectors of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectorRun {
    /// Sector size in bytes.
    pub size: u32,
    /// Number of sectors.
    pub count: u32,
}

/// RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ram {
    /// Absolute address.
    pub base: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A partition: a range of flash, as an offset from the start of flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Offset from the start of flash.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

impl Partition {
    /// Offset just past the partition.
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.size)
    }
}

/// The four partitions every board has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    /// The bootloader, which runs first at reset.
    pub bootloader: Partition,
    /// Slot A: the running image, executed in place.
    pub slot_a: Partition,
    /// Slot B: where an update is downloaded, and where the old image waits after a swap.
    pub slot_b: Partition,
    /// The append-only state log.
    pub state: Partition,
}

/// Names of the partitions, in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionName {
    /// `bootloader`
    Bootloader,
    /// `slot_a`
    SlotA,
    /// `slot_b`
    SlotB,
    /// `state`
    State,
}

impl PartitionName {
    /// All partitions.
    pub const ALL: [PartitionName; 4] = [
        PartitionName::Bootloader,
        PartitionName::SlotA,
        PartitionName::SlotB,
        PartitionName::State,
    ];

    /// The name used in board files.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionName::Bootloader => "bootloader",
            PartitionName::SlotA => "slot_a",
            PartitionName::SlotB => "slot_b",
            PartitionName::State => "state",
        }
    }
}

impl Partitions {
    /// The partition called `name`.
    pub fn get(&self, name: PartitionName) -> Partition {
        match name {
            PartitionName::Bootloader => self.bootloader,
            PartitionName::SlotA => self.slot_a,
            PartitionName::SlotB => self.slot_b,
            PartitionName::State => self.state,
        }
    }
}

/// How images are placed in slot A.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// Bytes reserved at the start of slot A for the image header; the first component is
    /// linked at slot A + this.
    pub header_size: u32,
}

impl Board {
    /// Absolute address of a flash offset.
    pub fn address(&self, offset: u32) -> u32 {
        // Validation guarantees base + size fits 32 bits, and offsets lie inside flash.
        self.flash.base.wrapping_add(offset)
    }

    /// Address where the first component of an image must be linked: slot A + header.
    pub fn link_address(&self) -> u32 {
        self.address(self.partitions.slot_a.offset + self.image.header_size)
    }

    /// Absolute address of slot A.
    pub fn slot_a_address(&self) -> u32 {
        self.address(self.partitions.slot_a.offset)
    }

    /// Every erase unit as (offset, size), from the start of flash.
    pub fn erase_units(&self) -> Vec<(u32, u32)> {
        let mut units = Vec::new();
        let mut offset = 0u32;
        let mut push_run = |size: u32, count: u32| {
            for _ in 0..count {
                units.push((offset, size));
                offset = offset.wrapping_add(size);
            }
        };
        match &self.flash.erase {
            EraseLayout::Uniform(size) => push_run(*size, self.flash.size / size),
            EraseLayout::Sectors(runs) => runs.iter().for_each(|r| push_run(r.size, r.count)),
        }
        units
    }

    /// Whether `offset` (from the start of flash) is where an erase unit starts, or the end of
    /// flash.
    pub fn is_erase_boundary(&self, offset: u64) -> bool {
        match &self.flash.erase {
            EraseLayout::Uniform(size) => {
                offset <= u64::from(self.flash.size) && offset.is_multiple_of(u64::from(*size))
            }
            EraseLayout::Sectors(_) => {
                offset == u64::from(self.flash.size)
                    || self.erase_units().iter().any(|&(start, _)| u64::from(start) == offset)
            }
        }
    }

    /// Erase units that `partition` covers.
    pub fn erase_units_in(&self, partition: Partition) -> Vec<(u32, u32)> {
        self.erase_units()
            .into_iter()
            .filter(|&(start, _)| start >= partition.offset && u64::from(start) < partition.end())
            .collect()
    }
}

impl Board {
    /// The block shift patches for this board are cut with: segments of 16 KiB or one erase
    /// unit of slot A, whichever is larger (up to 64 KiB). A device checkpoints where a segment
    /// starts on an erase unit boundary; 16 KiB is also the agent's default checkpoint interval
    /// for full images, so a patch resumes as finely as an image does, and its segments are
    /// long enough to compress well (each starts its model afresh: 4 KiB segments cost about
    /// 4 % more on the fixtures' pairs). `imager delta create` and the server use it alike.
    pub fn patch_block_shift(&self) -> Result<u8, firmware::flash::LayoutProblem> {
        let layout = self.flash_layout()?;
        let unit = layout.unit(layout.slot(firmware::flash::Slot::A), 0).map_or(4096, |u| u.size);
        Ok((31 - unit.leading_zeros()).clamp(14, 16) as u8)
    }

    /// The layout the device code (boot logic, update agent) works with.
    pub fn flash_layout(
        &self,
    ) -> Result<firmware::flash::FlashLayout, firmware::flash::LayoutProblem> {
        use firmware::flash::{FlashLayout, LayoutSpec, Region, SectorRun};
        let runs: Vec<SectorRun> = match &self.flash.erase {
            EraseLayout::Uniform(size) => {
                vec![SectorRun { size: *size, count: self.flash.size / size }]
            }
            EraseLayout::Sectors(runs) => {
                runs.iter().map(|r| SectorRun { size: r.size, count: r.count }).collect()
            }
        };
        let region = |p: Partition| Region { offset: p.offset, size: p.size };
        FlashLayout::new(LayoutSpec {
            base: self.flash.base,
            sectors: &runs,
            write_unit: self.flash.write_unit,
            erased: self.flash.erased_value,
            slot_a: region(self.partitions.slot_a),
            slot_b: region(self.partitions.slot_b),
            state: region(self.partitions.state),
            header_size: self.image.header_size,
        })
    }
}
