//! Which device reports count as evidence. The promotion gate rests on "prod runs what test
//! confirmed", so a device token (stolen, or on a misconfigured device) must not be able to
//! manufacture a confirmation: a report counts only when it is consistent with what the server
//! knows of the device. Plain functions over the model; the service records what they refuse
//! as an anomaly (audit entry `device.anomaly`, metric `ota_device_anomalies_total`) and
//! counts nothing of it.
//!
//! An update event (`downloading`, `installed`, ...) about image X from device D is consistent
//! when
//! - X's board is D's board,
//! - X was released to D's environment (for D's board), and, while that release is the
//!   current one, D is in a stage it has reached (it could have been offered X) or D's last
//!   step was already about X (the attempt began while it was offered; stages may have moved
//!   since, as the fleet grew),
//! - it follows D's own last step: `downloading` starts an attempt at any time; `installed`
//!   follows `downloading`; `booted` follows `installed` or `downloading` (a power cut may
//!   land the update before the `installed` report went out); `confirmed` follows `booted`;
//!   `reverted` follows `installed`, `booted` or `failed` (a self-test that failed, then the
//!   boot logic went back); `failed` may end any attempt. Each may repeat (a device resends
//!   a report it is not sure arrived).
//!
//! A report of an outcome (`confirmed`, `reverted`, `failed`) the server already recorded for
//! D and X is a repeat too, even after other steps (a device says a revert again at each boot
//! until its next update): answered as received, but neither recorded nor applied again.
//!
//! A check-in's claim that D runs X (on trial or confirmed) is consistent when X is unknown
//! to the server (a factory image never uploaded: it counts for nothing), or X has D's board
//! and D already claimed X, or D's last step was booting or confirming X, or D has no history
//! yet (its factory image, whatever it says), or D's last step was reverting or refusing
//! another image (it runs what it ran before). A check-in counts for the promotion gate only
//! through the event history: a claim adds a confirmation only after D booted X, or while D
//! has no history at all (its factory image, confirmed as it left the factory).

use std::fmt;

use crate::fleet::Fleet;
use crate::release::short;
use crate::store::{EventKind, ImageId, Reported};

/// Why a report does not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// The image is for another board.
    WrongBoard {
        /// The image's board.
        image: String,
        /// The device's board.
        device: String,
    },
    /// The image was never released to the device's environment.
    NotReleased {
        /// The device's environment.
        environment: String,
    },
    /// The image is released there, but the rollout has not reached the device's stage.
    NotOffered,
    /// The step does not follow the device's last one.
    OutOfOrder {
        /// The device's last step, if any.
        after: Option<(ImageId, EventKind)>,
    },
    /// The device claims to run an image it never reported installing.
    NeverInstalled,
}

impl Anomaly {
    /// A short machine-readable name (the audit entry's `reason`).
    pub fn code(&self) -> &'static str {
        match self {
            Anomaly::WrongBoard { .. } => "wrong_board",
            Anomaly::NotReleased { .. } => "not_released",
            Anomaly::NotOffered => "not_offered",
            Anomaly::OutOfOrder { .. } => "out_of_order",
            Anomaly::NeverInstalled => "never_installed",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::WrongBoard { image, device } => {
                write!(f, "the image is for board {image}, the device is a {device}")
            }
            Anomaly::NotReleased { environment } => {
                write!(f, "the image was never released to {environment}, the device's environment")
            }
            Anomaly::NotOffered => {
                f.write_str("the image's rollout has not reached the device's stage")
            }
            Anomaly::OutOfOrder { after: None } => {
                f.write_str("the step does not follow any step the device reported before")
            }
            Anomaly::OutOfOrder { after: Some((image, kind)) } => write!(
                f,
                "the step does not follow the device's last one ({} of {})",
                kind.as_str(),
                short(*image)
            ),
            Anomaly::NeverInstalled => {
                f.write_str("the device claims to run an image it never reported booting")
            }
        }
    }
}

/// Whether device `d` could have been offered `image`: same board, released to its
/// environment, and (for the current release) a stage that includes the device, unless its
/// attempt at `image` is under way.
fn offerable(fleet: &Fleet, d: usize, image: ImageId) -> Result<(), Anomaly> {
    let device = &fleet.devices[d];
    let Some(row) = fleet.images.get(&image) else {
        // The service refuses unknown images before it asks.
        return Err(Anomaly::NotReleased { environment: device.row.environment.to_string() });
    };
    if row.board != device.row.board {
        return Err(Anomaly::WrongBoard {
            image: row.board.to_string(),
            device: device.row.board.to_string(),
        });
    }
    let env = device.row.environment.as_str();
    let board = device.row.board.as_str();
    let releases = fleet.releases_of(env);
    if !releases.iter().any(|r| r.row.image_id == image && r.row.board == board) {
        return Err(Anomaly::NotReleased { environment: env.to_owned() });
    }
    let under_way = device.last_event.is_some_and(|(i, _)| i == image);
    if let Some(current) = fleet.current(env, board)
        && current.row.image_id == image
        && !under_way
        && !releases
            .iter()
            .any(|r| r.row.image_id == image && r.row.sequence < current.row.sequence)
    {
        // Paused or halted rollouts still count what their stages were offered.
        let stage = (current.row.stage as usize).min(current.cutoffs.len().saturating_sub(1));
        if device.bucket >= current.cutoffs.get(stage).copied().unwrap_or(0) {
            return Err(Anomaly::NotOffered);
        }
    }
    Ok(())
}

/// Whether step `kind` may follow the device's last step `after` for the same attempt.
fn follows(after: Option<(ImageId, EventKind)>, image: ImageId, kind: EventKind) -> bool {
    use EventKind::*;
    let last = after.filter(|(i, _)| *i == image).map(|(_, k)| k);
    match kind {
        Downloading | Failed => true,
        Installed => matches!(last, Some(Downloading | Installed)),
        Booted => matches!(last, Some(Downloading | Installed | Booted)),
        Confirmed => matches!(last, Some(Booted | Confirmed)),
        Reverted => matches!(last, Some(Installed | Booted | Failed | Reverted)),
    }
}

/// Checks an update event of device `d` about a stored `image`.
pub fn check_event(
    fleet: &Fleet,
    d: usize,
    image: ImageId,
    kind: EventKind,
) -> Result<(), Anomaly> {
    offerable(fleet, d, image)?;
    let after = fleet.devices[d].last_event;
    if !follows(after, image, kind) {
        return Err(Anomaly::OutOfOrder { after });
    }
    Ok(())
}

/// Checks what a check-in claims device `d` runs. On an anomaly the claim (running image and
/// whether confirmed) is not taken; the rest of the report is.
pub fn check_claim(fleet: &Fleet, d: usize, claim: &Reported) -> Result<(), Anomaly> {
    let Some(image) = claim.running else { return Ok(()) };
    let Some(row) = fleet.images.get(&image) else { return Ok(()) };
    let device = &fleet.devices[d];
    if row.board != device.row.board {
        return Err(Anomaly::WrongBoard {
            image: row.board.to_string(),
            device: device.row.board.to_string(),
        });
    }
    let before = device.row.reported.running;
    let consistent = before == Some(image)
        || match device.last_event {
            None => true,
            Some((last, kind)) if last == image => {
                matches!(kind, EventKind::Booted | EventKind::Confirmed)
            }
            Some((_, kind)) => matches!(kind, EventKind::Reverted | EventKind::Failed),
        };
    if consistent { Ok(()) } else { Err(Anomaly::NeverInstalled) }
}

/// Whether `kind` of `image` is an outcome the server already recorded for device `d`: a
/// repeat, to be answered as received but not recorded or applied again.
pub fn already_recorded(fleet: &Fleet, d: usize, image: ImageId, kind: EventKind) -> bool {
    let Some(o) = fleet.outcomes.get(&image) else { return false };
    match kind {
        EventKind::Confirmed => o.confirmed.contains(&d),
        EventKind::Reverted | EventKind::Failed => o.failed.contains(&d),
        EventKind::Downloading | EventKind::Installed | EventKind::Booted => false,
    }
}

/// Whether a check-in's confirmed claim of `image` counts as a confirmation for the promotion
/// gate: only after the device reported booting (or confirming) it, or from a device that
/// has reported no update step at all (its factory image, as it left the factory).
pub fn claim_confirms(last_event: Option<(ImageId, EventKind)>, image: ImageId) -> bool {
    match last_event {
        None => true,
        Some((i, kind)) => i == image && matches!(kind, EventKind::Booted | EventKind::Confirmed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_update_order() {
        use EventKind::*;
        let x = ImageId([1; 32]);
        let y = ImageId([2; 32]);
        assert!(follows(None, x, Downloading));
        assert!(follows(Some((y, Confirmed)), x, Downloading));
        assert!(follows(None, x, Failed));
        assert!(!follows(None, x, Confirmed));
        assert!(!follows(Some((x, Downloading)), x, Confirmed));
        assert!(!follows(Some((x, Installed)), x, Confirmed));
        assert!(!follows(Some((y, Booted)), x, Confirmed));
        assert!(follows(Some((x, Booted)), x, Confirmed));
        assert!(follows(Some((x, Confirmed)), x, Confirmed));
        assert!(follows(Some((x, Installed)), x, Booted));
        assert!(follows(Some((x, Downloading)), x, Booted));
        assert!(!follows(Some((y, Installed)), x, Booted));
        assert!(!follows(Some((x, Confirmed)), x, Booted));
        assert!(!follows(Some((x, Booted)), x, Installed));
        assert!(follows(Some((x, Booted)), x, Reverted));
        assert!(follows(Some((x, Failed)), x, Reverted));
        assert!(!follows(Some((x, Downloading)), x, Reverted));
        assert!(!follows(Some((y, Failed)), x, Reverted));
    }
}
