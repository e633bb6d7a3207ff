//! The device API: check-ins, offers, downloads and update reports, for one device per token.

use bytes::Bytes;
use ota_proto::{CheckIn, CheckInResponse, EventKind, NewEvent, Offer, Transport};

use super::{Service, unknown_image};
use crate::auth;
use crate::config::Downloads;
use crate::error::{Failure, FailureKind, Outcome};
use crate::evidence;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::release::short;
use crate::rollout;
use crate::store::{EventRow, ImageId, Mutation, Reported, Sha256, Timestamp};

/// How long a presigned download URL is good for: long enough for a slow device to fetch an
/// image in one go; a device that resumes later asks the server again.
pub const PRESIGNED_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Where a device gets an image file.
#[derive(Clone, Debug)]
pub enum Download {
    /// These bytes (served with `Range`).
    File(Bytes),
    /// A presigned URL of the object store (which serves `Range` itself).
    Redirect(String),
}

/// The offer for device `d`, if any: its environment's current image for its board, while
/// the rollout offers it to the device's stage, unless it runs it or failed it.
pub fn offer_for(fleet: &Fleet, d: usize) -> Option<Offer> {
    let device = &fleet.devices[d];
    let release = fleet.current(device.row.environment.as_str(), device.row.board.as_str())?;
    let image = release.row.image_id;
    if device.running() == Some(image) || device.failed(image) {
        return None;
    }
    if !rollout::offered(release.at(), &release.cutoffs, device.bucket) {
        return None;
    }
    let file = fleet.images.get(&image)?;
    Some(Offer {
        image_id: image,
        transport: Transport::Image,
        source: None,
        size: file.size,
        sha256: file.file_sha256,
        release: ota_proto::HexBytes(release.row.statement.clone()),
        environment: release.row.environment.clone(),
        sequence: release.row.sequence,
        url: format!("{}/device/images/{image}", ota_proto::API_PREFIX),
    })
}

impl Service {
    /// The device behind a device token. A token this replica does not know yet may belong to
    /// a device another replica just enrolled: it catches up once before it says no.
    pub async fn authenticate_device(&self, token: Option<&str>) -> Outcome<usize> {
        let unauthorized = |m: &str| Failure::new(FailureKind::Unauthorized, "unauthorized", m);
        let token = token.ok_or_else(|| unauthorized("missing device token"))?;
        let hash = auth::hash(token);
        let known = self.fleet().device_by_token.get(&hash).copied();
        if let Some(d) = known {
            return Ok(d);
        }
        self.sync().await?;
        self.fleet()
            .device_by_token
            .get(&hash)
            .copied()
            .ok_or_else(|| unauthorized("unknown device token"))
    }

    /// A device checks in: records what it runs and answers with an offer or nothing.
    pub async fn checkin(&self, device: usize, mut report: CheckIn) -> Outcome<CheckInResponse> {
        if report.last_outcome.as_ref().is_some_and(|o| o.len() > CheckIn::MAX_OUTCOME) {
            return Err(Failure::bad(
                "too_long",
                format!("last_outcome is at most {} bytes", CheckIn::MAX_OUTCOME),
            ));
        }
        let capabilities = std::mem::take(&mut report.capabilities);
        let mut reported = Reported {
            confirmed: report.image_id.is_some() && !report.trial,
            running: report.image_id,
            slot_b: report.slot_b,
            last_outcome: report.last_outcome,
            release_sequence: report.release_sequence,
        };
        let claim = reported.clone();
        if let Err(anomaly) =
            self.check_evidence(device, |f, d| evidence::check_claim(f, d, &claim)).await?
            && let Some(image) = claim.running
        {
            // What it claims to run is not taken; the rest of the report is.
            let before = self.fleet().devices[device].row.reported.clone();
            (reported.running, reported.confirmed) = (before.running, before.confirmed);
            self.record_anomaly(device, image, "check-in", &anomaly).await?;
        }
        let change = {
            let mut fleet = self.fleet();
            let d = &mut fleet.devices[device];
            d.row.last_seen = Some(Timestamp::now());
            d.seen_dirty = true;
            (d.row.reported != reported)
                .then(|| Mutation::Report { id: d.row.id.clone(), reported })
        };
        if let Some(change) = change {
            self.journal.commit(vec![change]).await?;
            self.after_report(device).await;
        }
        let offer = offer_for(&self.fleet(), device);
        let offer = match offer {
            Some(offer) => Some(self.choose_transport(device, &capabilities, offer).await),
            None => None,
        };
        Metrics::count(&self.metrics.checkins);
        if offer.is_some() {
            Metrics::count(&self.metrics.offers);
        }
        Ok(CheckInResponse { offer })
    }

    /// After a device's report: if it counts in a running rollout, the rollout may move.
    async fn after_report(&self, device: usize) {
        let pair = {
            let fleet = self.fleet();
            let d = &fleet.devices[device].row;
            fleet.in_rollout(device).then(|| (d.environment.clone(), d.board.clone()))
        };
        if let Some((env, board)) = pair {
            self.reevaluate(env.as_str(), board.as_str()).await;
        }
    }

    /// An image file for a device: only its environment's current image for its board. Where
    /// downloads are redirected and the store signs URLs, where to fetch it instead.
    pub async fn device_image(&self, device: usize, image: ImageId) -> Outcome<Download> {
        self.check_offered(device, image)?;
        let blob = self.fleet().images.get(&image).map(|i| i.file_sha256);
        self.download(blob.ok_or_else(|| unknown_image(image))?).await
    }

    /// Refuses a download of anything but `image`, if that is not the device's environment's
    /// current image for its board.
    pub(super) fn check_offered(&self, device: usize, image: ImageId) -> Outcome<()> {
        let fleet = self.fleet();
        let d = &fleet.devices[device];
        let allowed = fleet
            .current(d.row.environment.as_str(), d.row.board.as_str())
            .is_some_and(|r| r.row.image_id == image);
        if !allowed {
            return Err(Failure::not_found(
                "not_offered",
                format!(
                    "image {} is not released to this device's environment and board",
                    short(image)
                ),
            ));
        }
        Ok(())
    }

    /// Where a device gets file `blob` (an image or a patch): a presigned URL of the store
    /// where downloads are redirected and it signs them, else the bytes.
    pub(super) async fn download(&self, blob: Sha256) -> Outcome<Download> {
        if self.limits.downloads == Downloads::Redirect
            && let Some(url) = self.blobs.store().presign(&blob, PRESIGNED_FOR).await?
        {
            return Ok(Download::Redirect(url));
        }
        Ok(Download::File(self.blobs.get(&blob).await?))
    }

    /// A device reports an update step.
    pub async fn device_event(&self, device: usize, event: NewEvent) -> Outcome<()> {
        if event.detail.as_ref().is_some_and(|d| d.len() > NewEvent::MAX_DETAIL) {
            return Err(Failure::bad(
                "too_long",
                format!("detail is at most {} bytes", NewEvent::MAX_DETAIL),
            ));
        }
        // Reports are about images the server stored (and so could have offered).
        if !self.fleet().images.contains_key(&event.image_id) {
            return Err(unknown_image(event.image_id));
        }
        if event.kind == EventKind::Failed && event.transport == Some(Transport::Patch) {
            // The patch failed (refused against slot A, say), not the image: it neither counts
            // against the image nor stops its offer; the image comes whole next time.
            let m = self.patch_failed(device, event.image_id, event.detail);
            self.journal.commit(vec![m]).await?;
            Metrics::count(&self.metrics.events);
            return Ok(());
        }
        // They feed rollouts and the promotion gate, when consistent.
        let (image, kind) = (event.image_id, event.kind);
        if let Err(anomaly) =
            self.check_evidence(device, |f, d| evidence::check_event(f, d, image, kind)).await?
        {
            if evidence::already_recorded(&self.fleet(), device, image, kind) {
                // An outcome said again after other steps: received, and counted before.
                Metrics::count(&self.metrics.events);
                return Ok(());
            }
            self.record_anomaly(device, image, kind.as_str(), &anomaly).await?;
            return Err(Failure::new(
                FailureKind::Conflict,
                "inconsistent_event",
                format!("{} of image {} not counted: {anomaly}", kind.as_str(), short(image)),
            ));
        }
        let m = {
            let fleet = self.fleet();
            let d = &fleet.devices[device];
            // The same step again (the device did not hear that it arrived): recorded once,
            // but applied again, which is harmless and may now count (say, a confirmation of
            // an image released since).
            let repeat = d.last_event == Some((event.image_id, event.kind));
            Mutation::Event {
                event: EventRow {
                    device: d.row.id.clone(),
                    at: Timestamp::now(),
                    image_id: event.image_id,
                    kind: event.kind,
                    detail: event.detail,
                },
                record: !repeat,
            }
        };
        self.journal.commit(vec![m]).await?;
        self.after_report(device).await;
        Metrics::count(&self.metrics.events);
        Ok(())
    }

    /// Writes last check-in times that changed (a check-in that changes nothing else is not
    /// worth a commit of its own).
    pub async fn flush_seen(&self) -> Outcome<usize> {
        let seen: Vec<_> = {
            let mut fleet = self.fleet();
            fleet
                .devices
                .iter_mut()
                .filter(|d| d.seen_dirty)
                .filter_map(|d| {
                    d.seen_dirty = false;
                    Some((d.row.id.clone(), d.row.last_seen?))
                })
                .collect()
        };
        let n = seen.len();
        if n > 0
            && let Err(e) = self.journal.commit(vec![Mutation::Seen(seen.clone())]).await
        {
            // Try again next time.
            let mut fleet = self.fleet();
            for (id, _) in &seen {
                if let Some(&i) = fleet.device_by_id.get(id) {
                    fleet.devices[i].seen_dirty = true;
                }
            }
            return Err(e.into());
        }
        Ok(n)
    }
}
