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

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use std::vec;
use std::vec::Vec;

use super::Rng;
use crate::flash::{FlashLayout, Region};

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

/// A simulated NOR flash with the geometry of a [`FlashLayout`].
#[derive(Clone, Debug)]
pub struct SimFlash {
    data: Vec<u8>,
    /// Per write unit: written since its last erase.
    written: Vec<bool>,
    units: Vec<Region>,
    write_unit: usize,
    erased: u8,
    stats: Stats,
    cut: Option<Cut>,
    off: bool,
}

impl SimFlash {
    /// An erased flash with `layout`'s geometry.
    pub fn new(layout: &FlashLayout) -> Self {
        let size = layout.size() as usize;
        let write_unit = layout.write_unit() as usize;
        SimFlash {
            data: vec![layout.erased(); size],
            written: vec![false; size / write_unit],
            units: layout.units().collect(),
            write_unit,
            erased: layout.erased(),
            stats: Stats::default(),
            cut: None,
            off: false,
        }
    }

    /// The whole flash content.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Writes bytes directly, bypassing the rules (factory programming, test setup).
    pub fn load(&mut self, offset: u32, bytes: &[u8]) {
        let at = offset as usize;
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
        let (first, last) = (at / self.write_unit, (at + bytes.len()).div_ceil(self.write_unit));
        self.written[first..last].iter_mut().for_each(|w| *w = true);
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

    fn erase_unit(&mut self, unit: Region, torn: Option<u64>) {
        let range = unit.offset as usize..unit.end() as usize;
        match torn {
            None => self.data[range.clone()].fill(self.erased),
            Some(seed) => {
                let mut rng = Rng::new(seed);
                let bytes = &mut self.data[range.clone()];
                if rng.below(2) == 0 {
                    // Cut partway: a prefix is erased, the rest keeps its old content.
                    let n = rng.below(bytes.len() as u64 + 1) as usize;
                    bytes[..n].fill(self.erased);
                } else {
                    // Cells left in between states: garbage.
                    bytes.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
                }
            }
        }
        self.stats.erases += 1;
        let wu = self.write_unit;
        for (i, chunk) in self.data[range.clone()].chunks(wu).enumerate() {
            // A write unit that reads erased may be written again; anything else needs an erase.
            self.written[range.start / wu + i] = chunk.iter().any(|&b| b != self.erased);
        }
    }
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
        match self.data.get(at..at + bytes.len()) {
            Some(src) => {
                bytes.copy_from_slice(src);
                Ok(())
            }
            None => Err(self.violation(NorFlashErrorKind::OutOfBounds)),
        }
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl NorFlash for SimFlash {
    /// The real write unit is the layout's, checked at run time on every write.
    const WRITE_SIZE: usize = 1;
    /// The real erase units are the layout's (possibly of mixed sizes), checked at run time.
    const ERASE_SIZE: usize = 1;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let first = self.units.iter().position(|u| u.offset == from);
        let last = self.units.iter().position(|u| u.end() == to);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(self.violation(NorFlashErrorKind::NotAligned));
        };
        if last < first {
            return Err(self.violation(NorFlashErrorKind::NotAligned));
        }
        let cut = self.begin_operation()?;
        let units: Vec<Region> = self.units[first..=last].to_vec();
        match cut {
            None => units.iter().for_each(|&u| self.erase_unit(u, None)),
            Some(CutKind::Before) => {}
            Some(CutKind::After) => units.iter().for_each(|&u| self.erase_unit(u, None)),
            Some(CutKind::Torn(seed)) => {
                // Units before the cut are erased, the cut one is torn, later ones untouched.
                let mut rng = Rng::new(seed);
                let torn_at = rng.below(units.len() as u64) as usize;
                for &u in &units[..torn_at] {
                    self.erase_unit(u, None);
                }
                self.erase_unit(units[torn_at], Some(rng.next_u64()));
            }
        }
        match cut {
            None => Ok(()),
            Some(_) => Err(Self::POWER_LOSS),
        }
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let wu = self.write_unit;
        let at = offset as usize;
        if !at.is_multiple_of(wu) || !bytes.len().is_multiple_of(wu) {
            return Err(self.violation(NorFlashErrorKind::NotAligned));
        }
        if at + bytes.len() > self.data.len() {
            return Err(self.violation(NorFlashErrorKind::OutOfBounds));
        }
        let units = at / wu..(at + bytes.len()) / wu;
        let clean = units.clone().all(|u| {
            !self.written[u] && self.data[u * wu..(u + 1) * wu].iter().all(|&b| b == self.erased)
        });
        if !clean {
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
                for (i, &target) in partial.iter().enumerate() {
                    let current = self.data[at + whole + i];
                    // Programming only moves bits away from the erased value; keep a random
                    // subset of the moves.
                    let moves = (current ^ target) & rng.next_u64() as u8;
                    self.data[at + whole + i] = current ^ moves;
                }
                // A unit the cut left reading erased may be programmed again.
                let unit = &self.data[at + whole..at + whole + wu];
                self.written[(at + whole) / wu] = unit.iter().any(|&b| b != self.erased);
                self.stats.programmed += wu as u64;
                whole
            }
        };
        self.data[at..at + full].copy_from_slice(&bytes[..full]);
        self.written[at / wu..(at + full) / wu].iter_mut().for_each(|w| *w = true);
        self.stats.programmed += full as u64;
        match cut {
            None => Ok(()),
            Some(_) => Err(Self::POWER_LOSS),
        }
    }
}
