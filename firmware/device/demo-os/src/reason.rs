//! Why an update step failed, in a few words. The errors' own texts (their `Display`) would
//! cost about 13 KB of the OS's flash; these short reasons say what the device, the server's
//! event log and the operator need to tell cases apart.

use firmware::image::ReleaseError;
use firmware::update::{Refusal, UpdateError};

/// A short reason for `error`.
pub fn reason(error: &UpdateError) -> &'static str {
    match error {
        UpdateError::Refused(refusal) => match refusal {
            Refusal::Release(release) => match release {
                ReleaseError::Malformed => "release statement malformed",
                ReleaseError::BadEnvironment => "release names an invalid environment",
                ReleaseError::UnknownKey(_) => {
                    "release not signed by this device's environment key"
                }
                ReleaseError::BadSignature(_) => "release signature does not verify",
                ReleaseError::WrongEnvironment { .. } => "release is for another environment",
                ReleaseError::Replayed { .. } => {
                    "release sequence not above the last one applied (replay)"
                }
            },
            Refusal::Image(_) => "image header bad or not signed by a trusted build key",
            Refusal::WrongBoard { .. } => "image is for another board",
            Refusal::WrongImage { .. } => "image is not the one the release names",
            Refusal::Rollback { .. } => "security counter below this device's minimum",
            Refusal::TooLarge(_) | Refusal::NoRoomInSlotB { .. } => "image too large for the slots",
            Refusal::Busy => "the running image is still on trial",
            Refusal::WindowTooLarge { .. } => "compression window larger than this device lends",
            Refusal::Patch(_) => "patch header bad (damaged, unknown version, not a patch)",
            Refusal::WrongSource { .. } => "patch is for another image than the one running",
            Refusal::NoSource => "no readable running image to apply a patch to",
        },
        UpdateError::Corrupt(_) => "corrupt image: a component did not decode or failed its hash",
        UpdateError::CorruptPatch(_) => "corrupt patch: its body did not decode or check",
        UpdateError::Failed(_) => "the image written to slot B failed its final check",
        UpdateError::Incomplete { .. } => "download incomplete",
        UpdateError::TrailingData => "bytes after the end of the image",
        UpdateError::NotStarted | UpdateError::WindowTooSmall => "update agent misused",
        UpdateError::Flash(_) => "flash error",
        UpdateError::State(_) => "state log error",
    }
}
