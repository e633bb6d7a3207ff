//! Enrolling devices (one, or a factory line's thousands at once) and listing them.

use std::collections::HashSet;

use ota_proto::{
    DeviceCreated, DeviceDetail, DeviceEvent, DeviceFilter, DeviceInfo, DeviceToken,
    DevicesEnrolled, NewDevice, NewDevices,
};
use serde_json::json;

use super::{Service, audit, views};
use crate::auth::{self, Actor};
use crate::error::{Failure, Outcome};
use crate::journal::CommitError;
use crate::store::{AuditAction, Conflict, DeviceId, DeviceRow, Mutation, Timestamp};

/// Most devices enrolled by one request.
pub const MAX_BATCH: usize = 200_000;

fn unknown_device(id: &DeviceId) -> Failure {
    Failure::not_found("unknown_device", format!("no device {id}"))
}

impl Service {
    /// Checks a device to enroll against the model: its board and environment exist and its id
    /// is new.
    fn check_new_device(&self, new: &NewDevice) -> Outcome<()> {
        if self.catalog.get(new.board.as_str()).is_err() {
            return Err(Failure::bad(
                "unknown_board",
                format!("board {} is not known to this server", new.board),
            ));
        }
        let fleet = self.fleet();
        if fleet.environment(new.environment.as_str()).is_none() {
            return Err(Failure::bad(
                "unknown_environment",
                format!("environment {} does not exist", new.environment),
            ));
        }
        if fleet.device_by_id.contains_key(&new.id) {
            return Err(Failure::conflict(
                "exists",
                format!("device {} is already enrolled", new.id),
            ));
        }
        Ok(())
    }

    /// Enrolls a device; returns its token (once).
    pub async fn create_device(&self, actor: &Actor, new: NewDevice) -> Outcome<DeviceCreated> {
        actor.require(&[], "enroll devices")?;
        let _guard = self.manage().await?;
        self.check_new_device(&new)?;
        let (token, token_hash) = auth::generate(auth::DEVICE_PREFIX).map_err(Failure::internal)?;
        let row = DeviceRow::enrolled(
            new.id.clone(),
            new.board.clone(),
            new.environment.clone(),
            token_hash,
            Timestamp::now(),
        );
        let detail = json!({"board": new.board, "environment": new.environment});
        self.commit_enrollment(vec![
            Mutation::EnrollDevices(vec![row]),
            audit(actor, AuditAction::DeviceCreate, &new.id, detail),
        ])
        .await?;
        self.reevaluate(new.environment.as_str(), new.board.as_str()).await;
        let fleet = self.fleet();
        let d = &fleet.devices[fleet.device_by_id[&new.id]];
        Ok(DeviceCreated { device: views::device_info(&fleet, d), token })
    }

    /// Enrolls every device of `batch` or none: a bad one (unknown board or environment, an id
    /// enrolled already or twice in the batch) is refused with its place in the batch.
    pub async fn create_devices(
        &self,
        actor: &Actor,
        batch: NewDevices,
    ) -> Outcome<DevicesEnrolled> {
        actor.require(&[], "enroll devices")?;
        let count = batch.devices.len();
        if count == 0 || count > MAX_BATCH {
            return Err(Failure::bad(
                "bad_batch",
                format!("a batch enrolls 1 to {MAX_BATCH} devices, not {count}"),
            ));
        }
        let _guard = self.manage().await?;
        let mut seen = HashSet::with_capacity(count);
        for (i, new) in batch.devices.iter().enumerate() {
            let at = |e: Failure| {
                Failure::new(
                    e.kind,
                    e.code,
                    format!("device {} of the batch ({}): {}", i + 1, new.id, e.message),
                )
            };
            if !seen.insert(&new.id) {
                return Err(Failure::bad(
                    "duplicate",
                    format!("device {} of the batch: id {} appears twice", i + 1, new.id),
                ));
            }
            self.check_new_device(new).map_err(at)?;
        }
        let now = Timestamp::now();
        let mut rows = Vec::with_capacity(count);
        let mut tokens = Vec::with_capacity(count);
        for new in &batch.devices {
            let (token, token_hash) =
                auth::generate(auth::DEVICE_PREFIX).map_err(Failure::internal)?;
            rows.push(DeviceRow::enrolled(
                new.id.clone(),
                new.board.clone(),
                new.environment.clone(),
                token_hash,
                now,
            ));
            tokens.push(DeviceToken { id: new.id.clone(), token });
        }
        let mut pairs: Vec<(&str, &str)> =
            batch.devices.iter().map(|d| (d.environment.as_str(), d.board.as_str())).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let detail = json!({
            "devices": count,
            "first": batch.devices.first().map(|d| &d.id),
            "last": batch.devices.last().map(|d| &d.id),
        });
        self.commit_enrollment(vec![
            Mutation::EnrollDevices(rows),
            audit(actor, AuditAction::DeviceCreateBatch, format!("{count} devices"), detail),
        ])
        .await?;
        for (env, board) in pairs {
            self.reevaluate(env, board).await;
        }
        tracing::info!(devices = count, actor = %actor.name, "devices enrolled");
        Ok(DevicesEnrolled { tokens })
    }

    async fn commit_enrollment(&self, batch: Vec<Mutation>) -> Outcome<()> {
        match self.journal.commit(batch).await {
            Ok(()) => Ok(()),
            Err(CommitError::Conflict(Conflict::Exists(what))) => Err(Failure::conflict(
                "exists",
                format!(
                    "{what} was enrolled meanwhile (through another replica); nothing was enrolled"
                ),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives an enrolled device a new token (the old one stops working); returns it once.
    pub async fn rotate_device_token(
        &self,
        actor: &Actor,
        id: &DeviceId,
    ) -> Outcome<DeviceCreated> {
        actor.require(&[], "issue device tokens")?;
        let _guard = self.manage().await?;
        if !self.fleet().device_by_id.contains_key(id) {
            return Err(unknown_device(id));
        }
        let (token, token_hash) = auth::generate(auth::DEVICE_PREFIX).map_err(Failure::internal)?;
        self.journal
            .commit(vec![
                Mutation::SetDeviceToken { id: id.clone(), token_hash },
                audit(actor, AuditAction::DeviceToken, id, json!({})),
            ])
            .await?;
        let fleet = self.fleet();
        let i = fleet.device_by_id[id];
        Ok(DeviceCreated { device: views::device_info(&fleet, &fleet.devices[i]), token })
    }

    /// Devices matching the filters (each optional), in enrollment order.
    pub fn devices(&self, filter: &DeviceFilter) -> Vec<DeviceInfo> {
        let fleet = self.fleet();
        fleet
            .devices
            .iter()
            .filter(|d| super::device_pages::matches(&fleet, d, filter))
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(|d| views::device_info(&fleet, d))
            .collect()
    }

    /// One device with its recent events.
    pub async fn device(&self, id: &DeviceId) -> Outcome<DeviceDetail> {
        let device = {
            let fleet = self.fleet();
            let &i = fleet.device_by_id.get(id).ok_or_else(|| unknown_device(id))?;
            views::device_info(&fleet, &fleet.devices[i])
        };
        let events = self.store.events(id, 200).await?;
        Ok(DeviceDetail {
            device,
            events: events
                .into_iter()
                .map(|e| DeviceEvent {
                    at: e.at,
                    image_id: e.image_id,
                    kind: e.kind,
                    detail: e.detail,
                })
                .collect(),
        })
    }
}
