//! Patches as a transport of offered images: which offer a device gets (the image or a patch to
//! it from what the device runs), patches made on demand and kept in the blob store, and the
//! devices that failed one (they get the image whole from then on).

use bytes::Bytes;
use ota_proto::{Capability, Offer, Transport};

use super::Service;
use crate::error::{Failure, Outcome};
use crate::patches;
use crate::release::short;
use crate::store::{ImageId, Mutation, PatchFailureRow, PatchRow, Timestamp};

/// The download path of the patch from `source` to `target`.
pub fn patch_url(source: ImageId, target: ImageId) -> String {
    format!("{}/device/patches/{source}/{target}", ota_proto::API_PREFIX)
}

impl Service {
    /// `offer`, as a patch from the image device `d` runs where the device takes patches
    /// (announced in `capabilities`), one can be made, it has not failed one to this image, and
    /// the patch is small enough (see [`patches::worth_it`]); otherwise `offer` as it is. A
    /// patch that cannot be made is logged and the image offered: a patch only saves bytes.
    pub async fn choose_transport(
        &self,
        d: usize,
        capabilities: &[Capability],
        offer: Offer,
    ) -> Offer {
        let max_ratio = self.limits.patch_max_ratio;
        if !capabilities.contains(&Capability::Delta) || max_ratio <= 0.0 {
            return offer;
        }
        let target = offer.image_id;
        let source = {
            let fleet = self.fleet();
            let device = &fleet.devices[d];
            let Some(source) = device.running() else { return offer };
            let same_board = fleet.images.get(&source).map(|i| &i.board)
                == fleet.images.get(&target).map(|i| &i.board);
            if source == target || !same_board || device.patch_failed.contains(&target) {
                return offer;
            }
            source
        };
        let patch = match self.patch(source, target).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(source = %short(source), target = %short(target), error = %e.message,
                    "no patch; offering the image");
                return offer;
            }
        };
        if !patches::worth_it(patch.size, offer.size, max_ratio) {
            return offer;
        }
        Offer {
            transport: Transport::Patch,
            source: Some(source),
            size: patch.size,
            sha256: patch.sha256,
            url: patch_url(source, target),
            ..offer
        }
    }

    /// The patch from `source` to `target` (stored images of one board): as stored, or made
    /// now and stored (its file first, then the row). Replicas that race make the same bytes
    /// under the same name, and the row is written once.
    pub async fn patch(&self, source: ImageId, target: ImageId) -> Outcome<PatchRow> {
        if let Some(p) = self.fleet().patches.get(&(source, target)) {
            return Ok(p.clone());
        }
        let _one_at_a_time = self.patching.lock().await;
        // Made meanwhile here, or by another replica.
        self.sync().await?;
        if let Some(p) = self.fleet().patches.get(&(source, target)) {
            return Ok(p.clone());
        }
        let (board, source_file, target_file) = {
            let fleet = self.fleet();
            let image = |id: ImageId| fleet.images.get(&id).ok_or_else(|| super::unknown_image(id));
            let (s, t) = (image(source)?, image(target)?);
            (t.board.clone(), s.file_sha256, t.file_sha256)
        };
        let source_file = self.blobs.get(&source_file).await?;
        let target_file = self.blobs.get(&target_file).await?;
        let catalog = self.catalog.clone();
        let started = std::time::Instant::now();
        // Seconds of CPU for a large image: off the async runtime.
        let made = tokio::task::spawn_blocking(move || {
            patches::make(&catalog, board.as_str(), &source_file, &target_file)
        })
        .await
        .map_err(Failure::internal)?
        .map_err(|e| {
            Failure::internal(format!("patch {} to {}: {e}", short(source), short(target)))
        })?;
        let bytes = Bytes::from(made);
        let size = bytes.len() as u64;
        // The file is durable before the row that names it.
        let sha256 = self.blobs.put(bytes).await?;
        let row = PatchRow { source, target, sha256, size, created_at: Timestamp::now() };
        self.journal.commit(vec![Mutation::InsertPatch(row.clone())]).await?;
        tracing::info!(source = %short(source), target = %short(target), size,
            ms = started.elapsed().as_millis() as u64, "patch made");
        Ok(self.fleet().patches.get(&(source, target)).cloned().unwrap_or(row))
    }

    /// Where device `d` downloads the patch from `source` to `target`: only to its environment's
    /// current image for its board, and only a patch that was made.
    pub async fn device_patch(
        &self,
        d: usize,
        source: ImageId,
        target: ImageId,
    ) -> Outcome<super::Download> {
        self.check_offered(d, target)?;
        let blob = self.fleet().patches.get(&(source, target)).map(|p| p.sha256);
        let blob = blob.ok_or_else(|| {
            Failure::not_found(
                "no_patch",
                format!("no patch from image {} to {} was made", short(source), short(target)),
            )
        })?;
        self.download(blob).await
    }

    /// Device `d` failed the patch to `image`: offered whole from then on.
    pub(super) fn patch_failed(
        &self,
        d: usize,
        image: ImageId,
        detail: Option<String>,
    ) -> Mutation {
        let device = self.fleet().devices[d].row.id.clone();
        Mutation::PatchFailed(PatchFailureRow {
            device,
            image_id: image,
            at: Timestamp::now(),
            detail,
        })
    }
}
