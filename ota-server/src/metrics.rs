//! `/metrics`: Prometheus text exposition, written by hand (a handful of counters and one
//! gauge family do not need a metrics library).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fleet::Fleet;
use crate::store::RolloutState;

/// The server's counters (per replica).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Device check-ins answered.
    pub checkins: AtomicU64,
    /// Check-ins answered with an offer.
    pub offers: AtomicU64,
    /// Image downloads (device and management).
    pub downloads: AtomicU64,
    /// Bytes of image files served.
    pub download_bytes: AtomicU64,
    /// Device downloads redirected to the object store.
    pub redirects: AtomicU64,
    /// Images stored.
    pub uploads: AtomicU64,
    /// Uploads refused.
    pub uploads_refused: AtomicU64,
    /// Device events received.
    pub events: AtomicU64,
    /// Device reports (events, check-in claims) refused as inconsistent.
    pub anomalies: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Renders the counters and the state of every current rollout.
pub fn render(m: &Metrics, fleet: &Fleet) -> String {
    let mut out = String::new();
    let counters = [
        ("ota_checkins_total", "Device check-ins answered.", &m.checkins),
        ("ota_offers_total", "Check-ins answered with an offer.", &m.offers),
        ("ota_downloads_total", "Image file downloads.", &m.downloads),
        ("ota_download_bytes_total", "Bytes of image files served.", &m.download_bytes),
        (
            "ota_download_redirects_total",
            "Device downloads redirected to the object store.",
            &m.redirects,
        ),
        ("ota_uploads_total", "Images stored.", &m.uploads),
        ("ota_uploads_refused_total", "Image uploads refused.", &m.uploads_refused),
        ("ota_device_events_total", "Device events received.", &m.events),
        (
            "ota_device_anomalies_total",
            "Device reports not counted: inconsistent with what the server knows of the device.",
            &m.anomalies,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    let _ = writeln!(out, "# HELP ota_devices Enrolled devices per environment.");
    let _ = writeln!(out, "# TYPE ota_devices gauge");
    for env in &fleet.environments {
        let n = fleet.devices.iter().filter(|d| d.row.environment == env.row.name).count();
        let _ = writeln!(out, "ota_devices{{environment=\"{}\"}} {n}", env.row.name);
    }
    // Each family's samples follow its HELP and TYPE lines, as the text format requires.
    let mut state = String::new();
    let mut stage = String::new();
    let mut confirmed = String::new();
    let mut failed = String::new();
    for env in &fleet.environments {
        let name = &env.row.name;
        for board in fleet.released_boards(name) {
            let Some(r) = fleet.current(name, board) else { continue };
            let labels = format!("environment=\"{name}\",board=\"{board}\"");
            for s in [
                RolloutState::Rolling,
                RolloutState::Completed,
                RolloutState::Paused,
                RolloutState::Halted,
            ] {
                let on = u8::from(r.row.state == s);
                let _ = writeln!(state, "ota_rollout_state{{{labels},state=\"{s}\"}} {on}");
            }
            let p = fleet.progress(r);
            let _ = writeln!(stage, "ota_rollout_stage{{{labels}}} {}", r.row.stage);
            let _ = writeln!(confirmed, "ota_rollout_confirmed{{{labels}}} {}", p.confirmed);
            let _ = writeln!(failed, "ota_rollout_failed{{{labels}}} {}", p.failed);
        }
    }
    let families = [
        ("ota_rollout_state", "Current release per environment and board: 1 for its state.", state),
        ("ota_rollout_stage", "Current stage index of the rollout.", stage),
        ("ota_rollout_confirmed", "Devices of the current stage that confirmed.", confirmed),
        ("ota_rollout_failed", "Devices of the current stage that reverted or refused.", failed),
    ];
    for (name, help, samples) in families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{samples}");
    }
    out
}
