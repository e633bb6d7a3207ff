//! Images and the build keys that sign them.

use bytes::Bytes;
use firmware::image::TrustedKey;
use ota_proto::{BuildKey, ImageInfo, NewBuildKey, Role};
use serde_json::json;

use super::{Service, audit, unknown_image, views};
use crate::auth::Actor;
use crate::error::{Failure, FailureKind, Outcome};
use crate::images;
use crate::journal::CommitError;
use crate::metrics::Metrics;
use crate::store::{
    AuditAction, BuildKeyRow, Conflict, ImageId, ImageRow, Mutation, Sha256, Timestamp,
};

impl Service {
    /// Stores an uploaded image after checking it. `Ok((true, _))` if it is new.
    pub async fn upload_image(&self, actor: &Actor, file: Bytes) -> Outcome<(bool, ImageInfo)> {
        actor.require(&[Role::Ci], "upload images")?;
        let keys = self.fleet().trusted_build_keys();
        let catalog = self.catalog.clone();
        let checked = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || images::check(&file, &keys, &catalog))
                .await
                .map_err(Failure::internal)?
        };
        let accepted = match checked {
            Ok(a) => a,
            Err(refused) => {
                Metrics::count(&self.metrics.uploads_refused);
                return Err(Failure::bad(refused.code, refused.message));
            }
        };
        let _guard = self.manage().await?;
        let file_sha256 = crate::blobs::digest(&file);
        if let Some(existing) = self.existing(accepted.id, file_sha256)? {
            return Ok((false, existing));
        }
        // The file is durable before the row that names it.
        self.blobs.put(file.clone()).await?;
        let summary = accepted.summary;
        let row = ImageRow {
            id: accepted.id,
            file_sha256,
            board: summary.board.parse().map_err(Failure::internal)?,
            version: summary.version.clone(),
            security_counter: summary.security_counter,
            size: file.len() as u64,
            summary,
            uploaded_at: Timestamp::now(),
            uploaded_by: actor.name.clone(),
        };
        let detail = json!({"board": row.board, "version": row.version, "size": row.size});
        let id = row.id;
        match self
            .journal
            .commit(vec![
                Mutation::InsertImage(Box::new(row)),
                audit(actor, AuditAction::ImageUpload, id, detail),
            ])
            .await
        {
            Ok(()) => {}
            // Another replica stored it meanwhile.
            Err(CommitError::Conflict(Conflict::Exists(_))) => {
                self.journal.sync().await?;
                if let Some(existing) = self.existing(id, file_sha256)? {
                    return Ok((false, existing));
                }
                return Err(Failure::internal(format!(
                    "image {id} exists but is not in the model"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Metrics::count(&self.metrics.uploads);
        tracing::info!(image = %id, actor = %actor.name, "image stored");
        Ok((true, self.image(id)?))
    }

    /// The stored image `id`, if it is there with the same file bytes; a conflict if it is
    /// there with other bytes (images are immutable).
    fn existing(&self, id: ImageId, file_sha256: Sha256) -> Outcome<Option<ImageInfo>> {
        let fleet = self.fleet();
        let Some(existing) = fleet.images.get(&id) else { return Ok(None) };
        if existing.file_sha256 != file_sha256 {
            return Err(Failure::new(
                FailureKind::Conflict,
                "image_conflict",
                format!(
                    "image {id} is already stored with other file bytes (a different encoding or \
                     signature set); images are immutable"
                ),
            ));
        }
        Ok(Some(views::image_info(existing)))
    }

    /// All images, newest first.
    pub fn images(&self) -> Vec<ImageInfo> {
        let fleet = self.fleet();
        let mut list: Vec<&ImageRow> = fleet.images.values().collect();
        list.sort_by(|a, b| b.uploaded_at.cmp(&a.uploaded_at).then(a.id.cmp(&b.id)));
        list.into_iter().map(views::image_info).collect()
    }

    /// One image.
    pub fn image(&self, id: ImageId) -> Outcome<ImageInfo> {
        self.fleet().images.get(&id).map(views::image_info).ok_or_else(|| unknown_image(id))
    }

    /// An image's file.
    pub async fn image_file(&self, id: ImageId) -> Outcome<Bytes> {
        let blob = self.fleet().images.get(&id).ok_or_else(|| unknown_image(id))?.file_sha256;
        Ok(self.blobs.get(&blob).await?)
    }

    /// Trusted build keys.
    pub fn build_keys(&self) -> Vec<BuildKey> {
        self.fleet().build_keys.iter().map(|(k, name)| views::build_key(k, name)).collect()
    }

    /// Trusts another build key.
    pub async fn add_build_key(&self, actor: &Actor, new: NewBuildKey) -> Outcome<BuildKey> {
        actor.require(&[], "add build keys")?;
        let key = TrustedKey::from_bytes(&new.public_key.0)
            .map_err(|e| Failure::bad("bad_key", format!("public key: {e}")))?;
        let _guard = self.manage().await?;
        self.journal
            .commit(vec![
                Mutation::InsertBuildKey(BuildKeyRow {
                    public_key: new.public_key,
                    name: new.name.clone(),
                }),
                audit(actor, AuditAction::BuildKeyAdd, key.id(), json!({"name": new.name})),
            ])
            .await?;
        Ok(views::build_key(&key, &new.name))
    }
}
