//! `/metrics`: Prometheus text exposition, written by hand (a handful of counters and one
//! gauge family do not need a metrics library).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::api::RolloutState;
use crate::fleet::Fleet;
use crate::service::Metrics;

/// Renders the counters and the state of every current rollout.
pub fn render(m: &Metrics, fleet: &Fleet) -> String {
    let mut out = String::new();
    let counters = [
        ("ota_checkins_total", "Device check-ins answered.", &m.checkins),
        ("ota_offers_total", "Check-ins answered with an offer.", &m.offers),
        ("ota_downloads_total", "Image file downloads.", &m.downloads),
        ("ota_download_bytes_total", "Bytes of image files served.", &m.download_bytes),
        ("ota_uploads_total", "Images stored.", &m.uploads),
        ("ota_uploads_refused_total", "Image uploads refused.", &m.uploads_refused),
        ("ota_device_events_total", "Device events received.", &m.events),
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
    let _ = writeln!(
        out,
        "# HELP ota_rollout_state Current release per environment and board: 1 for its state."
    );
    let _ = writeln!(out, "# TYPE ota_rollout_state gauge");
    let _ = writeln!(out, "# HELP ota_rollout_stage Current stage index of the rollout.");
    let _ = writeln!(out, "# TYPE ota_rollout_stage gauge");
    let _ = writeln!(out, "# HELP ota_rollout_confirmed Devices of the stage that confirmed.");
    let _ = writeln!(out, "# TYPE ota_rollout_confirmed gauge");
    let _ = writeln!(out, "# HELP ota_rollout_failed Devices of the stage that failed.");
    let _ = writeln!(out, "# TYPE ota_rollout_failed gauge");
    for env in &fleet.environments {
        let name = &env.row.name;
        for board in fleet.released_boards(name) {
            let Some(r) = fleet.current(name, board) else { continue };
            let labels = format!("environment=\"{name}\",board=\"{board}\"");
            for state in [
                RolloutState::Rolling,
                RolloutState::Completed,
                RolloutState::Paused,
                RolloutState::Halted,
            ] {
                let on = u8::from(r.state == state);
                let _ = writeln!(
                    out,
                    "ota_rollout_state{{{labels},state=\"{}\"}} {on}",
                    state.as_str()
                );
            }
            let p = fleet.progress(r);
            let _ = writeln!(out, "ota_rollout_stage{{{labels}}} {}", r.row.stage);
            let _ = writeln!(out, "ota_rollout_confirmed{{{labels}}} {}", p.confirmed);
            let _ = writeln!(out, "ota_rollout_failed{{{labels}}} {}", p.failed);
        }
    }
    out
}
