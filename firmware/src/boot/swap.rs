//! Moving images between the slots, one erase unit at a time, resumable at any point.
//!
//! The update agent writes the new image into slot B `s` units from its start, so that after a
//! download B[s + j] holds new page j, and A[j] holds old page j. The swap works in groups of
//! `g` units (`s >= 2g`); for group k:
//!
//! 1. save: copy A[j] -> B[j] for the group's units that hold the old image, then set a marker;
//! 2. install: copy B[j + s] -> A[j] for the group's units that hold the new image.
//!
//! Resuming with m markers set: groups below m were saved; group m - 1 may be partly installed.
//! Its install sources B[j + s] are intact, because the next group's save writes B units
//! `s >= 2g` units below them; so re-running install for group m - 1 (each copy skips a unit that
//! already matches) and carrying on is always right. When the shift is smaller than two groups
//! (one unit of room, g = s = 1), install is followed by its own marker too.
//!
//! Afterwards A holds the new image and B[0..] the old one, unshifted, so a revert is a plain
//! copy B[j] -> A[j], which is redone from the start after a cut (its source never changes).
//! Units beyond the old or new image are not touched.

use embedded_storage::nor_flash::NorFlash;

use super::BootError;
use crate::flash::io::{self, FlashError};
use crate::flash::{FlashLayout, Region, Slot};
use crate::state::{Pending, StateLog};

fn unit(layout: &FlashLayout, slot: Slot, index: u32) -> Result<Region, FlashError> {
    layout
        .unit(layout.slot(slot), index)
        .ok_or(FlashError(embedded_storage::nor_flash::NorFlashErrorKind::OutOfBounds))
}

fn copy<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    from: Region,
    to: Region,
) -> Result<(), FlashError> {
    io::copy_unit(flash, from, to, layout.write_unit() as usize, layout.erased()).map(|_| ())
}

/// Swaps the pending image in, from wherever `done` markers say it got to.
#[inline(never)]
pub(super) fn swap<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    log: &mut StateLog<'_>,
    pending: Pending,
    done: u16,
) -> Result<(), BootError> {
    let group = u32::from(pending.group.max(1));
    let shift = u32::from(pending.shift);
    let new_units = u32::from(pending.new_units);
    let save_units = new_units.min(u32::from(pending.old_units));
    let double = shift < 2 * group;
    let groups = new_units.div_ceil(group);
    let done = u32::from(done);
    // Where to pick up: (group, whether its save step is still to do).
    let (mut k, mut saving) = match (double, done) {
        (true, m) => (m / 2, m % 2 == 0),
        (false, 0) => (0, true),
        (false, m) => (m - 1, false),
    };
    while k < groups {
        let units = k * group..((k + 1) * group).min(new_units);
        if saving {
            for j in units.clone().filter(|&j| j < save_units) {
                copy(flash, layout, unit(layout, Slot::A, j)?, unit(layout, Slot::B, j)?)?;
            }
            log.set_marker(flash)?;
            saving = false;
        } else {
            for j in units {
                copy(flash, layout, unit(layout, Slot::B, j + shift)?, unit(layout, Slot::A, j)?)?;
            }
            if double {
                log.set_marker(flash)?;
            }
            k += 1;
            saving = true;
        }
    }
    Ok(())
}

/// Copies the first `units` units of slot B back into slot A (a revert).
#[inline(never)]
pub(super) fn copy_back<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    units: u16,
) -> Result<(), BootError> {
    // A record says how many; the slots say how many there can be.
    let units = u32::from(units)
        .min(layout.unit_count(layout.slot(Slot::A)))
        .min(layout.unit_count(layout.slot(Slot::B)));
    for j in 0..units {
        copy(flash, layout, unit(layout, Slot::B, j)?, unit(layout, Slot::A, j)?)?;
    }
    Ok(())
}
