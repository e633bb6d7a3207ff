//! A simulated NOR flash.
//!
//! Rules enforced on every operation (a violation is an error, and counted, so tests can assert
//! the logic never commits one):
//! - erase only whole erase units, from the layout's grid (mixed sizes included);
//! - write only at write-unit-aligned offsets, whole write units;
//! - write a write unit only when it reads erased and was not written since its last erase
//!   (strict write-once, as flash with ECC requires).
//!
//! Power cuts: [`SimFlash::cut`] arms a cut at operation number N (erases and writes count;
//! reads do not). The cut happens before the operation, after it, or in the middle ("torn": a
//! write programs only some of its bytes; an erase leaves its unit partly erased or garbage).
//! From then on every operation fails until [`SimFlash::power_on`].
//!
//! Storage is sparse, so many simulated devices fit in one process: an erase unit holds memory
//! only while it has been written since its last erase (its content and one bit per write
//! unit); an erase frees it.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use core::fmt;
use std::boxed::Box;
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

use super::Rng;
use crate::flash::FlashLayout;

/// How a power cut hits its operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CutKind {
    /// The operation does not happen.
    Before,
    /// The operation completes, then power is lost.
    After,
    /// The operation is interrupted halfway; the seed picks how.
    Torn(u64),
}

/// A scheduled power cut.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cut {
    /// Operation number (0-based, counting since the flash was made) at which power is lost.
    pub at: u64,
    /// How.
    pub kind: CutKind,
}

/// Wear and activity counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Stats {
    /// Erase units erased (a torn erase counts).
    pub erases: u64,
    /// Bytes programmed (a torn write counts what it programmed).
    pub programmed: u64,
    /// Erase and write operations attempted.
    pub operations: u64,
    /// Operations that broke a NOR rule.
    pub violations: u64,
}

/// An error from the simulated flash.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SimError {
    /// What kind, in `embedded_storage` terms.
    pub kind: NorFlashErrorKind,
    /// True when the cause is a power cut (not a rule violation).
    pub power_loss: bool,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        self.kind
    }
}

/// The erase grid, shared by a flash and its clones.
#[derive(Debug)]
struct Geometry {
    /// Offset of each erase unit, then the flash size.
    bounds: Vec<u32>,
    /// The size of every unit, when they all have the same (then units are found by division).
    uniform: Option<usize>,
    write_unit: usize,
    erased: u8,
}

impl Geometry {
    fn units(&self) -> usize {
        self.bounds.len() - 1
    }

    fn size(&self) -> usize {
        self.bounds[self.units()] as usize
    }

    fn start(&self, unit: usize) -> usize {
        self.bounds[unit] as usize
    }

    fn len(&self, unit: usize) -> usize {
        (self.bounds[unit + 1] - self.bounds[unit]) as usize
    }

    /// The unit holding byte `offset` (< size).
    fn unit_at(&self, offset: usize) -> usize {
        match self.uniform {
            Some(size) => offset / size,
            None => self.bounds.partition_point(|&b| b as usize <= offset) - 1,
        }
    }

    /// Bytes of written-bits after a unit's content: one bit per write unit.
    fn bits_len(&self, unit: usize) -> usize {
        (self.len(unit) / self.write_unit).div_ceil(8)
    }

    /// The pieces of `at..at + len` (in bounds) per unit: (unit, offset in it, length).
    fn segments(&self, at: usize, len: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let mut unit = if len == 0 { 0 } else { self.unit_at(at) };
        let (mut at, end) = (at, at + len);
        core::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let start = self.start(unit);
            let n = (start + self.len(unit)).min(end) - at;
            let piece = (unit, at - start, n);
            at += n;
            unit += 1;
            Some(piece)
        })
    }
}

/// One erase unit's content, then its written-bits (bit `k`: write unit `k` of the unit was
/// written since the unit's last erase). A unit that is not allocated reads erased and has no
/// bit set; every unit that reads erased with no bit set is freed by an erase.
type Page = Box<[u8]>;

/// A simulated NOR flash with the geometry of a [`FlashLayout`].
///
/// Sparse: only erase units written since their last erase hold their content (and a bitset of
/// written write units); an erased unit costs one empty slot. Clones share the geometry.
#[derive(Clone)]
pub struct SimFlash {
    geometry: Arc<Geometry>,
    /// Per erase unit: its content, or `None` when it reads erased and nothing was written.
    pages: Vec<Option<Page>>,
    stats: Stats,
    cut: Option<Cut>,
    off: bool,
}

impl fmt::Debug for SimFlash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFlash")
            .field("size", &self.geometry.size())
            .field("units", &self.geometry.units())
            .field("units_in_use", &self.units_in_use())
            .field("write_unit", &self.geometry.write_unit)
            .field("erased", &self.geometry.erased)
            .field("stats", &self.stats)
            .field("cut", &self.cut)
            .field("off", &self.off)
            .finish()
    }
}

impl SimFlash {
    /// An erased flash with `layout`'s geometry.
    pub fn new(layout: &FlashLayout) -> Self {
        let mut bounds: Vec<u32> = layout.units().map(|u| u.offset).collect();
        bounds.push(layout.size());
        bounds.shrink_to_fit();
        let first = layout.sectors().first().map(|r| r.size);
        let uniform = layout.sectors().iter().all(|r| Some(r.size) == first);
        let units = bounds.len() - 1;
        let geometry = Geometry {
            uniform: first.filter(|_| uniform).map(|s| s as usize),
            bounds,
            write_unit: layout.write_unit() as usize,
            erased: layout.erased(),
        };
        SimFlash {
            geometry: Arc::new(geometry),
            pages: (0..units).map(|_| None).collect(),
            stats: Stats::default(),
            cut: None,
            off: false,
        }
    }

    /// The whole flash content (materialized: as large as the flash).
    pub fn data(&self) -> Vec<u8> {
        self.read_vec(0, self.geometry.size())
    }

    /// `len` bytes at `offset`, whatever the power state; not an operation. Panics when out of
    /// bounds.
    pub fn read_vec(&self, offset: u32, len: usize) -> Vec<u8> {
        let at = offset as usize;
        assert!(at + len <= self.geometry.size(), "read_vec out of bounds: {at}+{len}");
        let mut out = vec![0; len];
        self.read_into(at, &mut out);
        out
    }

    /// Erase units currently holding content (written since their last erase).
    pub fn units_in_use(&self) -> usize {
        self.pages.iter().filter(|p| p.is_some()).count()
    }

    /// Approximate bytes this flash holds on the heap (allocator overhead not included): the
    /// unit slots, the content and written-bits of units in use, and a share of the geometry,
    /// which clones share.
    pub fn heap_bytes(&self) -> usize {
        let slots = self.pages.capacity() * size_of::<Option<Page>>();
        let pages: usize = self.pages.iter().flatten().map(|p| p.len()).sum();
        let geometry = size_of::<Geometry>()
            + 2 * size_of::<usize>()
            + self.geometry.bounds.capacity() * size_of::<u32>();
        slots + pages + geometry / Arc::strong_count(&self.geometry)
    }

    /// Writes bytes directly, bypassing the rules (factory programming, test setup).
    pub fn load(&mut self, offset: u32, bytes: &[u8]) {
        let at = offset as usize;
        assert!(at + bytes.len() <= self.geometry.size(), "load out of bounds");
        self.copy_in(at, bytes);
        let wu = self.geometry.write_unit;
        let (first, last) = (at / wu, (at + bytes.len()).div_ceil(wu));
        self.mark_written(first * wu, last * wu);
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Sets the counters back to zero (the operation numbering of cuts continues).
    pub fn reset_stats(&mut self) {
        let operations = self.stats.operations;
        self.stats = Stats { operations, ..Stats::default() };
    }

    /// Schedules a power cut, or none.
    pub fn cut(&mut self, cut: Option<Cut>) {
        self.cut = cut;
    }

    /// Whether power is off (a cut happened and `power_on` was not called since).
    pub fn is_off(&self) -> bool {
        self.off
    }

    /// Restores power, as a reset does. The content is what the cut left.
    pub fn power_on(&mut self) {
        self.off = false;
    }

    fn violation(&mut self, kind: NorFlashErrorKind) -> SimError {
        self.stats.violations += 1;
        SimError { kind, power_loss: false }
    }

    const POWER_LOSS: SimError = SimError { kind: NorFlashErrorKind::Other, power_loss: true };

    /// Counts the operation; returns the cut kind if power is lost at it.
    fn begin_operation(&mut self) -> Result<Option<CutKind>, SimError> {
        if self.off {
            return Err(Self::POWER_LOSS);
        }
        let number = self.stats.operations;
        self.stats.operations += 1;
        match self.cut {
            Some(cut) if cut.at == number => {
                self.off = true;
                Ok(Some(cut.kind))
            }
            _ => Ok(None),
        }
    }

    /// Unit `unit`'s page, allocated (erased, nothing written) if it was not.
    fn page_mut(&mut self, unit: usize) -> &mut [u8] {
        let g = &self.geometry;
        let (len, bits, erased) = (g.len(unit), g.bits_len(unit), g.erased);
        self.pages[unit].get_or_insert_with(|| {
            let mut page = vec![erased; len + bits];
            page[len..].fill(0);
            page.into_boxed_slice()
        })
    }

    /// Copies `at..at + out.len()` (in bounds) into `out`.
    fn read_into(&self, at: usize, out: &mut [u8]) {
        let mut done = 0;
        for (unit, from, n) in self.geometry.segments(at, out.len()) {
            let dst = &mut out[done..done + n];
            match &self.pages[unit] {
                Some(page) => dst.copy_from_slice(&page[from..from + n]),
                None => dst.fill(self.geometry.erased),
            }
            done += n;
        }
    }

    /// Copies `bytes` to `at` (in bounds), allocating units as needed; written-bits unchanged.
    fn copy_in(&mut self, at: usize, bytes: &[u8]) {
        let geometry = Arc::clone(&self.geometry);
        let mut done = 0;
        for (unit, from, n) in geometry.segments(at, bytes.len()) {
            self.page_mut(unit)[from..from + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    /// Sets the written-bits of the write units in `from..to` (write-unit aligned, in bounds).
    fn mark_written(&mut self, from: usize, to: usize) {
        let geometry = Arc::clone(&self.geometry);
        let wu = geometry.write_unit;
        for (unit, start, n) in geometry.segments(from, to - from) {
            let len = geometry.len(unit);
            set_bits(&mut self.page_mut(unit)[len..], start / wu, (start + n) / wu);
        }
    }

    /// Copies `bytes` (whole write units) to `at` (aligned, in bounds) and marks their write
    /// units written.
    fn program(&mut self, at: usize, bytes: &[u8]) {
        let geometry = Arc::clone(&self.geometry);
        let wu = geometry.write_unit;
        let mut done = 0;
        for (unit, from, n) in geometry.segments(at, bytes.len()) {
            let len = geometry.len(unit);
            let page = self.page_mut(unit);
            page[from..from + n].copy_from_slice(&bytes[done..done + n]);
            set_bits(&mut page[len..], from / wu, (from + n) / wu);
            done += n;
        }
    }

    /// Whether every write unit in `at..at + len` (aligned, in bounds) reads erased and was not
    /// written since its last erase.
    fn clean(&self, at: usize, len: usize) -> bool {
        let g = &*self.geometry;
        let wu = g.write_unit;
        g.segments(at, len).all(|(unit, from, n)| match &self.pages[unit] {
            None => true,
            Some(page) => {
                let (bytes, bits) = page.split_at(g.len(unit));
                !any_bit(bits, from / wu, (from + n) / wu)
                    && all_erased(&bytes[from..from + n], g.erased)
            }
        })
    }

    fn erase_unit(&mut self, unit: usize, torn: Option<u64>) {
        self.stats.erases += 1;
        let Some(seed) = torn else {
            // Erased, nothing written: the unit needs no storage.
            self.pages[unit] = None;
            return;
        };
        let g = Arc::clone(&self.geometry);
        let (len, erased, wu) = (g.len(unit), g.erased, g.write_unit);
        let mut rng = Rng::new(seed);
        if rng.below(2) == 0 {
            // Cut partway: a prefix is erased, the rest keeps its old content.
            let n = rng.below(len as u64 + 1) as usize;
            if let Some(page) = &mut self.pages[unit] {
                page[..n].fill(erased);
            }
        } else {
            // Cells left in between states: garbage.
            self.page_mut(unit)[..len].iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        }
        let Some(page) = &mut self.pages[unit] else { return };
        // A write unit that reads erased may be written again; anything else needs an erase.
        let (bytes, bits) = page.split_at_mut(len);
        bits.fill(0);
        let mut any = false;
        for (k, chunk) in bytes.chunks(wu).enumerate() {
            if !all_erased(chunk, erased) {
                bits[k / 8] |= 1 << (k % 8);
                any = true;
            }
        }
        if !any {
            self.pages[unit] = None;
        }
    }
}

/// Whether `bytes` all equal `erased` (branch-free, so it vectorizes).
fn all_erased(bytes: &[u8], erased: u8) -> bool {
    bytes.iter().fold(0, |acc, &b| acc | (b ^ erased)) == 0
}

/// Sets bits `from..to` of a bitset (bit `k` is bit `k % 8` of byte `k / 8`).
fn set_bits(bits: &mut [u8], from: usize, to: usize) {
    let mut k = from;
    while k < to && !k.is_multiple_of(8) {
        bits[k / 8] |= 1 << (k % 8);
        k += 1;
    }
    let whole = (to - k) / 8;
    bits[k / 8..k / 8 + whole].fill(0xFF);
    k += whole * 8;
    while k < to {
        bits[k / 8] |= 1 << (k % 8);
        k += 1;
    }
}

/// Whether any of bits `from..to` of a bitset is set.
fn any_bit(bits: &[u8], from: usize, to: usize) -> bool {
    let mut k = from;
    while k < to && !k.is_multiple_of(8) {
        if bits[k / 8] & (1 << (k % 8)) != 0 {
            return true;
        }
        k += 1;
    }
    let whole = (to - k) / 8;
    if bits[k / 8..k / 8 + whole].iter().any(|&b| b != 0) {
        return true;
    }
    k += whole * 8;
    (k..to).any(|k| bits[k / 8] & (1 << (k % 8)) != 0)
}

impl ErrorType for SimFlash {
    type Error = SimError;
}

impl ReadNorFlash for SimFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        if self.off {
            return Err(Self::POWER_LOSS);
        }
        let at = offset as usize;
        if at + bytes.len() > self.geometry.size() {
            return Err(self.violation(NorFlashErrorKind::OutOfBounds));
        }
        self.read_into(at, bytes);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.geometry.size()
    }
}

impl NorFlash for SimFlash {
    /// The real write unit is the layout's, checked at run time on every write.
    const WRITE_SIZE: usize = 1;
    /// The real erase units are the layout's (possibly of mixed sizes), checked at run time.
    const ERASE_SIZE: usize = 1;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let bounds = &self.geometry.bounds;
        let first = bounds[..bounds.len() - 1].binary_search(&from).ok();
        let last = bounds[1..].binary_search(&to).ok();
        let (Some(first), Some(last)) = (first, last) else {
            return Err(self.violation(NorFlashErrorKind::NotAligned));
        };
        if last < first {
            return Err(self.violation(NorFlashErrorKind::NotAligned));
        }
        let cut = self.begin_operation()?;
        let units = first..last + 1;
        match cut {
            None => units.for_each(|u| self.erase_unit(u, None)),
            Some(CutKind::Before) => {}
            Some(CutKind::After) => units.for_each(|u| self.erase_unit(u, None)),
            Some(CutKind::Torn(seed)) => {
                // Units before the cut are erased, the cut one is torn, later ones untouched.
                let mut rng = Rng::new(seed);
                let torn_at = first + rng.below(units.len() as u64) as usize;
                for u in first..torn_at {
                    self.erase_unit(u, None);
                }
                self.erase_unit(torn_at, Some(rng.next_u64()));
            }
        }
        match cut {
            None => Ok(()),
            Some(_) => Err(Self::POWER_LOSS),
        }
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let wu = self.geometry.write_unit;
        let at = offset as usize;
        if !at.is_multiple_of(wu) || !bytes.len().is_multiple_of(wu) {
            return Err(self.violation(NorFlashErrorKind::NotAligned));
        }
        if at + bytes.len() > self.geometry.size() {
            return Err(self.violation(NorFlashErrorKind::OutOfBounds));
        }
        if !self.clean(at, bytes.len()) {
            return Err(self.violation(NorFlashErrorKind::Other));
        }
        let cut = self.begin_operation()?;
        let full = match cut {
            None | Some(CutKind::After) => bytes.len(),
            Some(CutKind::Before) => 0,
            Some(CutKind::Torn(seed)) => {
                // Whole write units up to the cut, then one unit with only some bits programmed.
                let mut rng = Rng::new(seed);
                let whole = rng.below((bytes.len() / wu) as u64) as usize * wu;
                let partial = &bytes[whole..whole + wu];
                let erased = self.geometry.erased;
                // The unit reads erased (it was clean).
                let torn: Vec<u8> = partial
                    .iter()
                    .map(|&target| {
                        // Programming only moves bits away from the erased value; keep a random
                        // subset of the moves.
                        let moves = (erased ^ target) & rng.next_u64() as u8;
                        erased ^ moves
                    })
                    .collect();
                // A unit the cut left reading erased may be programmed again.
                if !all_erased(&torn, erased) {
                    self.program(at + whole, &torn);
                }
                self.stats.programmed += wu as u64;
                whole
            }
        };
        self.program(at, &bytes[..full]);
        self.stats.programmed += full as u64;
        match cut {
            None => Ok(()),
            Some(_) => Err(Self::POWER_LOSS),
        }
    }
}
