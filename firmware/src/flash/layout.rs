//! The flash layout: geometry and partitions, checked once, then trusted.

use crate::image::SlotLayout;

/// Most runs of equal-size sectors a layout can describe (STM32F4 needs 3).
pub const MAX_SECTOR_RUNS: usize = 8;

/// `count` consecutive erase units of `size` bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SectorRun {
    /// Unit size in bytes.
    pub size: u32,
    /// Number of units.
    pub count: u32,
}

/// A range of flash: offset from the start of the device, and size.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Region {
    /// Offset from the start of flash.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

impl Region {
    /// Offset just past the region.
    pub fn end(&self) -> u32 {
        self.offset + self.size
    }
}

/// The two image slots.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Slot {
    /// Runs in place.
    A,
    /// Download area, and where the previous image waits after a swap.
    B,
}

/// A layout that cannot work, and why.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LayoutProblem {
    /// No sectors, too many runs, or runs that do not add up to the flash size.
    #[error("the sector runs do not describe the flash")]
    Sectors,
    /// The write unit is not a power of two of at most 256 bytes, or a sector is not a
    /// multiple of 256 bytes.
    #[error("the write unit must be a power of two of at most 256 bytes, sectors multiples of 256")]
    WriteUnit,
    /// A partition is empty, outside flash, or not on erase boundaries.
    #[error("a partition is empty, outside flash or off the erase grid")]
    Partition,
    /// Partitions overlap.
    #[error("partitions overlap")]
    Overlap,
    /// The state partition needs at least two erase units of 512 bytes or more.
    #[error("the state partition needs at least two erase units of 512 bytes or more")]
    StateUnits,
    /// The header does not fit slot A.
    #[error("the image header size does not fit slot A")]
    Header,
}

/// Flash geometry and the partitions the boot logic uses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FlashLayout {
    base: u32,
    size: u32,
    sectors: heapless::Vec<SectorRun, MAX_SECTOR_RUNS>,
    write_unit: u32,
    erased: u8,
    slot_a: Region,
    slot_b: Region,
    state: Region,
    header_size: u32,
}

/// What a [`FlashLayout`] is made from (usually the board file).
#[derive(Clone, Copy, Debug)]
pub struct LayoutSpec<'a> {
    /// Absolute address of flash offset 0.
    pub base: u32,
    /// Erase units, from the start of flash.
    pub sectors: &'a [SectorRun],
    /// Smallest programmable unit.
    pub write_unit: u32,
    /// Value of an erased byte.
    pub erased: u8,
    /// Slot A: runs in place.
    pub slot_a: Region,
    /// Slot B: download, and the previous image after a swap.
    pub slot_b: Region,
    /// The state log.
    pub state: Region,
    /// Bytes reserved for the image header at the start of slot A.
    pub header_size: u32,
}

impl FlashLayout {
    /// A checked layout.
    pub fn new(spec: LayoutSpec<'_>) -> Result<Self, LayoutProblem> {
        let LayoutSpec { base, sectors, write_unit, erased, slot_a, slot_b, state, header_size } =
            spec;
        let sectors = heapless::Vec::from_slice(sectors).map_err(|_| LayoutProblem::Sectors)?;
        let total: u64 = sectors.iter().map(|r| u64::from(r.size) * u64::from(r.count)).sum();
        if sectors.is_empty()
            || sectors.iter().any(|r| r.size == 0 || r.count == 0)
            || total > u64::from(u32::MAX)
            || u64::from(base) + total > 1 << 32
        {
            return Err(LayoutProblem::Sectors);
        }
        if !write_unit.is_power_of_two()
            || write_unit as usize > super::io::CHUNK
            || sectors.iter().any(|r| r.size % super::io::CHUNK as u32 != 0)
        {
            return Err(LayoutProblem::WriteUnit);
        }
        let layout = FlashLayout {
            base,
            size: total as u32,
            sectors,
            write_unit,
            erased,
            slot_a,
            slot_b,
            state,
            header_size,
        };
        for region in [slot_a, slot_b, state] {
            let end = u64::from(region.offset) + u64::from(region.size);
            if region.size == 0
                || end > u64::from(layout.size)
                || !layout.is_boundary(region.offset)
                || !layout.is_boundary(end as u32)
            {
                return Err(LayoutProblem::Partition);
            }
        }
        let overlap = |a: Region, b: Region| a.offset < b.end() && b.offset < a.end();
        if overlap(slot_a, slot_b) || overlap(slot_a, state) || overlap(slot_b, state) {
            return Err(LayoutProblem::Overlap);
        }
        // The state log needs two units or more, each holding a few records and markers.
        let smallest_state_unit = (0..layout.unit_count(state))
            .filter_map(|i| layout.unit(state, i))
            .map(|u| u.size)
            .min();
        if layout.unit_count(state) < 2 || smallest_state_unit.is_none_or(|size| size < 512) {
            return Err(LayoutProblem::StateUnits);
        }
        if header_size == 0 || header_size >= slot_a.size || !header_size.is_multiple_of(write_unit)
        {
            return Err(LayoutProblem::Header);
        }
        Ok(layout)
    }

    /// Absolute address of flash offset 0.
    pub fn base(&self) -> u32 {
        self.base
    }
    /// Flash size in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }
    /// Smallest programmable unit.
    pub fn write_unit(&self) -> u32 {
        self.write_unit
    }
    /// Value of an erased byte.
    pub fn erased(&self) -> u8 {
        self.erased
    }
    /// The sector runs.
    pub fn sectors(&self) -> &[SectorRun] {
        &self.sectors
    }
    /// Bytes reserved for the image header at the start of slot A.
    pub fn header_size(&self) -> u32 {
        self.header_size
    }
    /// The state partition.
    pub fn state(&self) -> Region {
        self.state
    }
    /// A slot's region.
    pub fn slot(&self, slot: Slot) -> Region {
        match slot {
            Slot::A => self.slot_a,
            Slot::B => self.slot_b,
        }
    }

    /// Slot A as the image format checks placement against.
    pub fn slot_layout(&self) -> SlotLayout {
        SlotLayout {
            start: self.base + self.slot_a.offset,
            size: self.slot_a.size,
            header_size: self.header_size,
        }
    }

    /// Every erase unit, in order.
    pub fn units(&self) -> impl Iterator<Item = Region> + '_ {
        let mut offset = 0u32;
        self.sectors.iter().flat_map(|r| (0..r.count).map(move |_| r.size)).map(move |size| {
            let unit = Region { offset, size };
            offset += size;
            unit
        })
    }

    fn is_boundary(&self, offset: u32) -> bool {
        offset == self.size || self.units().any(|u| u.offset == offset)
    }

    /// Number of erase units in `region` (which lies on the erase grid).
    pub fn unit_count(&self, region: Region) -> u32 {
        self.units().filter(|u| u.offset >= region.offset && u.offset < region.end()).count() as u32
    }

    /// The `index`th erase unit of `region`.
    pub fn unit(&self, region: Region, index: u32) -> Option<Region> {
        self.units()
            .filter(|u| u.offset >= region.offset && u.offset < region.end())
            .nth(index as usize)
    }

    /// The erase unit containing `offset`.
    pub fn unit_containing(&self, offset: u32) -> Option<Region> {
        self.units().find(|u| u.offset <= offset && offset < u.end())
    }

    /// How many erase units of slot A an installed image of `len` bytes (counted from the start
    /// of slot A) occupies; `u32::MAX` if slot A is too small.
    pub fn units_for(&self, len: u32) -> u32 {
        let slot = self.slot_a;
        let mut count = 0;
        let mut end = slot.offset;
        while end < slot.offset.saturating_add(len) {
            match self.unit(slot, count) {
                Some(unit) => end = unit.end(),
                None => return u32::MAX,
            }
            count += 1;
        }
        count
    }

    /// Where the update agent puts an image of `units` erase units in slot B, as
    /// `(shift, group)`: `shift` units from the start of slot B, swapped in groups of `group`
    /// units. Prefers groups of up to 16 units with a shift of two groups (one progress marker
    /// per group); with one unit of room, one unit each. `None` if slot B has no room, or its
    /// units do not match slot A's in size.
    pub fn swap_room(&self, units: u32) -> Option<(u8, u8)> {
        let (a, b) = (self.slot_a, self.slot_b);
        let (a_units, b_units) = (self.unit_count(a), self.unit_count(b));
        if units == 0 || units > a_units || b_units < units + 1 {
            return None;
        }
        let largest = ((b_units - units) / 2).clamp(1, 16);
        let size = |region, index| self.unit(region, index).map(|u| u.size);
        let fits = |shift: u32| {
            shift + units <= b_units
                && (0..units).all(|j| size(a, j) == size(b, j) && size(a, j) == size(b, j + shift))
        };
        (1..=largest)
            .rev()
            .map(|group| (2 * group, group))
            .chain([(1, 1)])
            .find(|&(shift, _)| fits(shift))
            .map(|(shift, group)| (shift as u8, group as u8))
    }
}
