//! Device reports checked against the model (rules in [`crate::evidence`]): what does not
//! count is recorded as an anomaly, in the audit log and the metrics.

use crate::error::Outcome;
use crate::evidence::Anomaly;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::release::short;
use crate::store::ImageId;

use super::{Service, audit, server_actor};

impl Service {
    /// Checks a report of `device` with `check`. A report that looks inconsistent may follow
    /// a step another replica recorded a moment ago: this replica catches up once and checks
    /// again before it calls it an anomaly.
    pub(super) async fn check_evidence(
        &self,
        device: usize,
        check: impl Fn(&Fleet, usize) -> Result<(), Anomaly>,
    ) -> Outcome<Result<(), Anomaly>> {
        if check(&self.fleet(), device).is_ok() {
            return Ok(Ok(()));
        }
        self.sync().await?;
        Ok(check(&self.fleet(), device))
    }

    /// Records that `device`'s `report` about `image` did not count, and why.
    pub(super) async fn record_anomaly(
        &self,
        device: usize,
        image: ImageId,
        report: &str,
        anomaly: &Anomaly,
    ) -> Outcome<()> {
        let id = self.fleet().devices[device].row.id.clone();
        tracing::warn!(device = %id, image = %short(image), report, reason = %anomaly, "device anomaly");
        let detail = serde_json::json!({
            "image_id": image,
            "report": report,
            "reason": anomaly.code(),
            "message": anomaly.to_string(),
        });
        let entry = audit(&server_actor(), ota_proto::AuditAction::DeviceAnomaly, id, detail);
        self.journal.commit(vec![entry]).await?;
        Metrics::count(&self.metrics.anomalies);
        Ok(())
    }
}
