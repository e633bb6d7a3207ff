//! The state log on flash.
//!
//! The state partition is a ring of at least two erase units. The current unit is the one whose
//! first slot holds the highest valid `UnitStart`; its records, replayed in order, give the
//! state. Records are appended in 32-byte slots; a slot whose checksum fails was torn by a power
//! cut and is skipped; the first erased slot ends the log. A `Pending` or `MoreMarkers` record is
//! followed by an area of write units, each programmed once (a "marker") as the swap
//! progresses: the number of complete markers is the progress.
//!
//! When a unit is full, the state is written afresh into the next unit (after erasing it), and
//! only then that unit's `UnitStart`: a cut at any point leaves either the old unit current,
//! or the new one complete. A unit is erased only when the log moves into it.

use embedded_storage::nor_flash::NorFlash;

use super::record::{ImageTag, Record, SLOT};
use super::{Phase, State};
use crate::flash::io::{self, FlashError};
use crate::flash::{FlashLayout, Region};

/// Spare markers added to every marker area, for markers torn by power cuts.
const SPARE_MARKERS: u16 = 4;

/// The state log failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum StateError {
    /// A flash operation failed.
    #[error("{0}")]
    Flash(#[from] FlashError),
    /// A record with its marker area does not fit an empty log unit.
    #[error("a state record does not fit a state partition erase unit")]
    UnitTooSmall,
    /// A marker was set with no swap in progress (a logic error).
    #[error("no swap is in progress")]
    NoSwap,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct MarkerArea {
    next: u32,
    end: u32,
}

/// The state log: the durable state, and where the next record goes.
pub struct StateLog<'l> {
    layout: &'l FlashLayout,
    unit_index: u32,
    unit: Region,
    sequence: u32,
    next: u32,
    markers: Option<MarkerArea>,
    state: State,
    formatted: bool,
}

impl<'l> StateLog<'l> {
    /// Reads the log and replays it. A partition without any valid unit (a new device, or one
    /// whose log is destroyed) is initialized to the empty state ([`StateLog::formatted`]).
    ///
    /// The durable counters only ever rise, and every valid record holds their true value when
    /// it was written, so they are taken as the highest found in any valid record of any unit:
    /// damage to the current unit (even its start record) cannot take them back.
    // Not inlined (nor are `append` and `set_marker`): their buffers then take stack only while
    // they run, not in the frame of a caller that goes on to check an image.
    #[inline(never)]
    pub fn open<F: NorFlash>(flash: &mut F, layout: &'l FlashLayout) -> Result<Self, StateError> {
        let count = layout.unit_count(layout.state());
        let mut current: Option<StateLog<'l>> = None;
        let (mut min_counter, mut release) = (0u32, 0u64);
        for index in 0..count {
            let start = read_record(flash, unit(layout, index).offset)?;
            let sequence = match start {
                Some(Record::UnitStart { sequence }) => Some(sequence),
                _ => None,
            };
            let mut log = StateLog::at(layout, index, sequence.unwrap_or(0));
            log.replay(flash)?;
            min_counter = min_counter.max(log.state.min_security_counter);
            release = release.max(log.state.release_sequence);
            if let Some(sequence) = sequence
                && current.as_ref().is_none_or(|best| sequence > best.sequence)
            {
                current = Some(log);
            }
        }
        match current {
            Some(mut log) => {
                log.state.min_security_counter = min_counter;
                log.state.release_sequence = release;
                Ok(log)
            }
            None => {
                let mut log = StateLog::at(layout, count - 1, 0);
                log.formatted = true;
                log.move_to_next_unit(flash, 0)?;
                Ok(log)
            }
        }
    }

    /// The log of a device being programmed (by a debug probe, or in a factory file): the whole
    /// partition erased, then a fresh log whose one record says the image in slot A is
    /// confirmed and its security counter the lowest the device accepts from now on.
    ///
    /// Erasing every unit matters: a unit left over from the flash's earlier life, with a higher
    /// sequence, would otherwise be taken as the current one.
    pub fn initialize<F: NorFlash>(
        flash: &mut F,
        layout: &'l FlashLayout,
        image: ImageTag,
        security_counter: u32,
    ) -> Result<Self, StateError> {
        io::erase(flash, layout.state())?;
        let mut log = StateLog::open(flash, layout)?;
        log.append(flash, Record::Confirmed { image, security_counter })?;
        Ok(log)
    }

    fn at(layout: &'l FlashLayout, unit_index: u32, sequence: u32) -> Self {
        StateLog {
            layout,
            unit_index,
            unit: unit(layout, unit_index),
            sequence,
            next: 0,
            markers: None,
            state: State::default(),
            formatted: false,
        }
    }

    /// Whether `open` found no valid log and started an empty one.
    pub fn formatted(&self) -> bool {
        self.formatted
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Bytes left in the current log unit.
    pub fn free(&self) -> u32 {
        self.unit.end().saturating_sub(self.next)
    }

    fn slot(&self) -> u32 {
        slot_size(self.layout)
    }

    fn replay<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), StateError> {
        let slot = self.slot();
        let mut at = self.unit.offset + slot;
        while at + slot <= self.unit.end() {
            if io::is_erased(flash, Region { offset: at, size: slot }, self.layout.erased())? {
                break;
            }
            let Some(record) = read_record(flash, at)? else {
                at += slot; // torn: skip it
                continue;
            };
            self.state.apply(&record);
            at += slot;
            let area = u32::from(record.marker_units()) * self.layout.write_unit();
            if area > 0 {
                let end = (at + area).min(self.unit.end());
                let (count, next) = self.scan_markers(flash, at, end)?;
                self.state.add_markers(count);
                self.markers = Some(MarkerArea { next, end });
                at = round_up(end - self.unit.offset, slot) + self.unit.offset;
            }
            if !matches!(self.state.phase, Phase::Swapping { .. }) {
                self.markers = None;
            }
        }
        self.next = at;
        Ok(())
    }

    /// Counts complete markers in `[start, end)` and finds where the next one goes.
    fn scan_markers<F: NorFlash>(
        &self,
        flash: &mut F,
        start: u32,
        end: u32,
    ) -> Result<(u16, u32), StateError> {
        let wu = self.layout.write_unit();
        let pattern = !self.layout.erased();
        let (mut count, mut next) = (0u16, start);
        let mut buf = [0u8; io::CHUNK];
        let mut at = start;
        while at < end {
            let unit = &mut buf[..wu as usize];
            io::read(flash, at, unit)?;
            if unit.iter().all(|&b| b == pattern) {
                count += 1;
            }
            if unit.iter().any(|&b| b != self.layout.erased()) {
                next = at + wu;
            }
            at += wu;
        }
        Ok((count, next))
    }

    /// Appends `record` and applies it to the state. Moves to the next unit first if this one
    /// has no room.
    #[inline(never)]
    pub fn append<F: NorFlash>(&mut self, flash: &mut F, record: Record) -> Result<(), StateError> {
        let need = self.footprint(&record);
        if self.next + need > self.unit.end() {
            self.move_to_next_unit(flash, need)?;
        }
        self.write_record(flash, record)
    }

    fn footprint(&self, record: &Record) -> u32 {
        let area = u32::from(record.marker_units()) * self.layout.write_unit();
        self.slot() + round_up(area, self.slot())
    }

    /// Writes `record` at `next` (the room was checked), applies it, reserves its marker area.
    fn write_record<F: NorFlash>(
        &mut self,
        flash: &mut F,
        record: Record,
    ) -> Result<(), StateError> {
        let at = self.next;
        let mut slot = [self.layout.erased(); io::CHUNK];
        let bytes = &mut slot[..self.slot() as usize];
        bytes[..SLOT].copy_from_slice(&record.encode());
        let wu = self.layout.write_unit() as usize;
        io::program(flash, at, bytes, wu, self.layout.erased())?;
        self.next = at + self.footprint(&record);
        self.state.apply(&record);
        let area = u32::from(record.marker_units()) * self.layout.write_unit();
        self.markers =
            (area > 0).then(|| MarkerArea { next: at + self.slot(), end: at + self.slot() + area });
        Ok(())
    }

    /// Records one more step of swap progress.
    #[inline(never)]
    pub fn set_marker<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), StateError> {
        let Phase::Swapping { pending, done } = self.state.phase else {
            return Err(StateError::NoSwap);
        };
        if self.markers.is_none_or(|m| m.next >= m.end) {
            let remaining = marker_count(&pending).saturating_sub(done);
            let markers = area_len(self.layout, remaining);
            let record = Record::MoreMarkers { done, markers };
            if self.next + self.footprint(&record) > self.unit.end() {
                // Moving restates the swap with a fresh marker area: that is the room needed.
                self.move_to_next_unit(flash, 0)?;
            }
            if self.markers.is_none_or(|m| m.next >= m.end) {
                self.write_record(flash, record)?;
            }
        }
        let Some(area) = self.markers.as_mut() else { return Err(StateError::NoSwap) };
        let at = area.next;
        area.next += self.layout.write_unit();
        let pattern = [!self.layout.erased(); io::CHUNK];
        let wu = self.layout.write_unit() as usize;
        io::program(flash, at, &pattern[..wu], wu, self.layout.erased())?;
        self.state.add_markers(1);
        Ok(())
    }

    /// Starts the next unit: erase it, write the current state as fresh records, then its
    /// `UnitStart`. Makes sure `need` more bytes fit after the snapshot.
    fn move_to_next_unit<F: NorFlash>(
        &mut self,
        flash: &mut F,
        need: u32,
    ) -> Result<(), StateError> {
        let count = self.layout.unit_count(self.layout.state());
        let index = (self.unit_index + 1) % count;
        let target = unit(self.layout, index);
        if !io::is_erased(flash, target, self.layout.erased())? {
            io::erase(flash, target)?;
        }
        let snapshot = snapshot(self.layout, &self.state);
        self.state = State::default();
        self.unit = target;
        self.unit_index = index;
        self.next = target.offset + self.slot();
        self.markers = None;
        for record in snapshot.iter().flatten() {
            if self.next + self.footprint(record) > target.end() {
                return Err(StateError::UnitTooSmall);
            }
            self.write_record(flash, *record)?;
        }
        if self.next + need > target.end() {
            return Err(StateError::UnitTooSmall);
        }
        self.sequence = self.sequence.wrapping_add(1);
        let mut first = [self.layout.erased(); io::CHUNK];
        first[..SLOT].copy_from_slice(&Record::UnitStart { sequence: self.sequence }.encode());
        let wu = self.layout.write_unit() as usize;
        io::program(
            flash,
            target.offset,
            &first[..self.slot() as usize],
            wu,
            self.layout.erased(),
        )?;
        Ok(())
    }
}

/// Size of the marker area a new `Pending` record reserves on `layout`: what the swap needs
/// plus spares, at most what fits a log unit next to a restated state (more areas follow, with
/// `MoreMarkers`, when a swap needs more).
pub fn marker_area(layout: &FlashLayout, p: &super::Pending) -> u16 {
    area_len(layout, marker_count(p))
}

/// An area for `markers` more markers and the spares, capped to what a log unit can hold.
fn area_len(layout: &FlashLayout, markers: u16) -> u16 {
    let smallest =
        (0..layout.unit_count(layout.state())).map(|i| unit(layout, i).size).min().unwrap_or(0);
    // A unit holds its start, a restated state (at most 4 records), the record with the area,
    // and the next record.
    let room = smallest.saturating_sub(7 * slot_size(layout)) / layout.write_unit();
    markers.saturating_add(SPARE_MARKERS).min(room.min(u32::from(u16::MAX)) as u16)
}

/// Markers a whole swap needs: one per group, or two when the shift is under two groups.
pub fn marker_count(p: &super::Pending) -> u16 {
    let group = u32::from(p.group.max(1));
    let groups = u32::from(p.new_units).div_ceil(group);
    let count = if u32::from(p.shift) >= 2 * group { groups } else { 2 * groups };
    count.min(u32::from(u16::MAX - SPARE_MARKERS)) as u16
}

/// Records that rebuild `state` in an empty unit.
fn snapshot(layout: &FlashLayout, state: &State) -> [Option<Record>; 4] {
    let base = Record::Base {
        min_security_counter: state.min_security_counter,
        release_sequence: state.release_sequence,
    };
    let outcome = state.outcome.map(Record::Outcome);
    let (phase, extra) = match state.phase {
        Phase::Idle => (None, None),
        Phase::Downloading { download, checkpoint } => {
            (Some(Record::Download(download)), checkpoint.map(Record::Checkpoint))
        }
        Phase::Swapping { pending, done } => {
            let markers = area_len(layout, marker_count(&pending).saturating_sub(done));
            (Some(Record::Pending(super::Pending { done, markers, ..pending })), None)
        }
        Phase::Trial { image, boots_allowed, units, boots } => (
            Some(Record::TrialStart { image, boots_allowed, units }),
            (boots > 1).then_some(Record::TrialBoot { boots }),
        ),
        Phase::Reverting { reason, units, image } => {
            (Some(Record::RevertBegin { reason, units, image }), None)
        }
    };
    [Some(base), outcome, phase, extra]
}

fn unit(layout: &FlashLayout, index: u32) -> Region {
    // `index` is below the state partition's unit count.
    layout.unit(layout.state(), index).unwrap_or(layout.state())
}

fn slot_size(layout: &FlashLayout) -> u32 {
    round_up(SLOT as u32, layout.write_unit())
}

fn round_up(value: u32, to: u32) -> u32 {
    value.div_ceil(to) * to
}

fn read_record<F: NorFlash>(flash: &mut F, at: u32) -> Result<Option<Record>, StateError> {
    let mut slot = [0u8; SLOT];
    io::read(flash, at, &mut slot)?;
    Ok(Record::decode(&slot))
}
