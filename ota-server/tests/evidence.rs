//! False evidence does not open the promotion gate: device reports inconsistent with what the
//! server knows of the device (wrong board, wrong environment, never offered, out of order,
//! forged check-in claims) are recorded as anomalies and counted nowhere.

mod common;

use common::{Backend, Server};
use serde_json::{Value, json};

fn enroll_on(server: &Server, id: &str, board: &str, env: &str) -> String {
    let r = server.post_json(
        "/api/v1/devices",
        &server.admin,
        json!({"id": id, "board": board, "environment": env}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["token"].as_str().unwrap().to_owned()
}

/// Posts an event that must be refused as inconsistent; returns the error message.
fn refused(server: &Server, token: &str, image: &str, kind: &str) -> String {
    let r =
        server.post_json("/api/v1/device/events", token, json!({"image_id": image, "kind": kind}));
    assert_eq!((r.status, r.code().as_str()), (409, "inconsistent_event"), "{kind}");
    r.json()["error"]["message"].as_str().unwrap().to_owned()
}

fn anomalies(server: &Server) -> Vec<Value> {
    let audit = server.get("/api/v1/audit?limit=1000", &server.admin).json();
    audit.as_array().unwrap().iter().filter(|e| e["action"] == "device.anomaly").cloned().collect()
}

fn false_evidence_leaves_the_gate_shut(backend: Backend) {
    let server = Server::start_on(backend);
    let admin = server.admin.clone();
    let [x_id, y_id] =
        <[String; 2]>::try_from(server.upload_versions(&["2.0.0", "3.0.0"])).unwrap();
    // Test rolls out in stages so that some of its devices are not offered X yet.
    server.set_stages("test", "[5, 100]");
    let fleet: Vec<(String, String)> = (0..20)
        .map(|i| format!("qa-{i:02}"))
        .map(|id| (id.clone(), server.enroll(&id, "test")))
        .collect();
    let r =
        server.post_json("/api/v1/environments/test/releases", &admin, json!({"image_id": x_id}));
    assert_eq!(r.status, 201, "{}", r.json());
    let offered: Vec<&(String, String)> =
        fleet.iter().filter(|(_, t)| !server.checkin(t, None).is_null()).collect();
    assert_eq!(offered.len(), 1, "5 % of 20 devices");
    let (in_stage_id, in_stage) = offered[0].clone();
    let (_, waiting) = fleet.iter().find(|(id, _)| *id != in_stage_id).unwrap().clone();

    let mut expected = Vec::new();
    // Wrong board: an nrf52840dk test device confirms the micro:bit image.
    let nrf = enroll_on(&server, "nrf-1", "nrf52840dk", "test");
    let m = refused(&server, &nrf, &x_id, "downloading");
    assert!(m.contains("for board microbit") && m.contains("nrf52840dk"), "{m}");
    refused(&server, &nrf, &x_id, "confirmed");
    expected.extend(["wrong_board", "wrong_board"]);
    // ... and claims in a check-in to run it, confirmed: not taken.
    assert!(server.checkin(&nrf, Some(&x_id)).is_null());
    let d = server.get("/api/v1/devices/nrf-1", &admin).json();
    assert!(d["device"]["running"].is_null(), "{d}");
    expected.push("wrong_board");

    // Wrong environment: a dev device reports an image released only to test.
    let dev = server.enroll("dev-1", "dev");
    let m = refused(&server, &dev, &x_id, "downloading");
    assert!(m.contains("never released to dev"), "{m}");
    expected.push("not_released");
    // Never offered: an image released nowhere, and a test device whose stage has not come.
    refused(&server, &in_stage, &y_id, "downloading");
    expected.push("not_released");
    let m = refused(&server, &waiting, &x_id, "downloading");
    assert!(m.contains("has not reached the device's stage"), "{m}");
    expected.push("not_offered");
    // Out of order: confirmed without booting, reverted without installing.
    let m = refused(&server, &in_stage, &x_id, "confirmed");
    assert!(m.contains("does not follow"), "{m}");
    server.event(&in_stage, &x_id, "downloading");
    refused(&server, &in_stage, &x_id, "reverted");
    refused(&server, &in_stage, &x_id, "confirmed");
    expected.extend(["out_of_order", "out_of_order", "out_of_order"]);
    // A check-in claiming X confirmed, although the device only began downloading it: the
    // claim is not taken, so X is still offered.
    assert_eq!(server.checkin(&in_stage, Some(&x_id))["image_id"], x_id);
    expected.push("never_installed");

    // The gate is shut: nothing counted.
    let r = server.promote_to_prod(&x_id);
    assert_eq!((r.status, r.code().as_str()), (409, "gate_closed"), "{}", r.json());
    let test = server.get("/api/v1/environments/test", &admin).json();
    assert_eq!(test["current"][0]["progress"]["confirmed"], 0, "{test}");

    // Every anomaly is in the audit log (newest first) and the metrics.
    let found = anomalies(&server);
    let mut reasons: Vec<&str> =
        found.iter().map(|e| e["detail"]["reason"].as_str().unwrap()).collect();
    reasons.reverse();
    assert_eq!(reasons, expected);
    assert!(found.iter().all(|e| e["actor"] == "server"));
    assert_eq!(found.last().unwrap()["target"], "nrf-1");
    let metrics = server.request("GET", "/metrics", None, None, None, &[]);
    let metrics = String::from_utf8(metrics.body).unwrap();
    let line = format!("ota_device_anomalies_total {}", expected.len());
    assert!(metrics.contains(&line), "{metrics}");

    // The device's genuine update, step by step, counts: the gate opens.
    server.steps(&in_stage, &x_id, &["installed", "booted", "confirmed"]);
    assert_eq!(anomalies(&server).len(), expected.len(), "the genuine update is no anomaly");
    let r = server.promote_to_prod(&x_id);
    assert_eq!(r.status, 201, "{}", r.json());
}

fn history_survives_a_restart(backend: Backend) {
    // The step a report must follow is the device's last recorded one, also after a restart.
    let mut server = Server::start_on(backend);
    let admin = server.admin.clone();
    let id = server.upload_versions(&["2.0.0"]).remove(0);
    let r = server.post_json("/api/v1/environments/test/releases", &admin, json!({"image_id": id}));
    assert_eq!(r.status, 201);
    let (a, b) = (server.enroll("qa-a", "test"), server.enroll("qa-b", "test"));
    server.steps(&a, &id, &["downloading", "installed", "booted"]);
    server.steps(&b, &id, &["downloading"]);
    server.kill9();
    server.launch(&[]);
    server.event(&a, &id, "confirmed");
    refused(&server, &b, &id, "confirmed");
    let r = server.promote_to_prod(&id);
    assert_eq!(r.status, 201, "{}", r.json());
}

/// A device id whose bucket is in the top tenth: never among the first few of a stage.
fn high_bucket_id(prefix: &str) -> String {
    use sha2::Digest;
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| {
            let digest = sha2::Sha256::digest(id.as_bytes());
            u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000 >= 9_000
        })
        .unwrap()
}

fn events_of(server: &Server, id: &str) -> Vec<(String, String)> {
    let d = server.get(&format!("/api/v1/devices/{id}"), &server.admin).json();
    let mut events: Vec<(String, String)> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["image_id"].as_str().unwrap().to_owned(), e["kind"].as_str().unwrap().into()))
        .collect();
    // Newest first in the API.
    events.reverse();
    events
}

fn genuine_reports_are_no_anomalies(backend: Backend) {
    let server = Server::start_on(backend);
    let admin = server.admin.clone();
    let versions = server.upload_versions(&["2.0.0", "3.0.0", "4.0.0"]);
    let [x_id, y_id, z_id] = <[String; 3]>::try_from(versions).unwrap();
    server.set_stages("test", "[100]");
    let release = |env: &str, id: &str| {
        let url = format!("/api/v1/environments/{env}/releases");
        let r = server.post_json(&url, &admin, json!({"image_id": id}));
        assert_eq!(r.status, 201, "{}", r.json());
    };
    let (a, b, c) = (
        server.enroll("qa-a", "test"),
        server.enroll("qa-b", "test"),
        server.enroll("qa-c", "test"),
    );
    release("test", &x_id);

    // A power cut landed the update before the `installed` report went out.
    server.steps(&a, &x_id, &["downloading", "booted", "confirmed"]);
    // The self-test failed, then the bootloader went back; the revert said again.
    server.steps(
        &b,
        &x_id,
        &["downloading", "installed", "booted", "failed", "reverted", "reverted"],
    );
    // The next update begins; a reset mid-download, and the device reports the revert again
    // at boot (its last outcome until the update lands): received, not recorded again, and
    // the download it resumes follows its last step still.
    release("test", &y_id);
    server.event(&b, &y_id, "downloading");
    server.event(&b, &x_id, "reverted");
    server.steps(&b, &y_id, &["downloading", "installed", "booted", "confirmed"]);
    let kinds = |d: &str| -> Vec<String> {
        events_of(&server, d).into_iter().map(|(i, k)| format!("{k} {}", &i[..8])).collect()
    };
    let (x8, y8) = (&x_id[..8], &y_id[..8]);
    assert_eq!(
        kinds("qa-b"),
        [
            format!("downloading {x8}"),
            format!("installed {x8}"),
            format!("booted {x8}"),
            format!("failed {x8}"),
            format!("reverted {x8}"),
            format!("downloading {y8}"),
            format!("installed {y8}"),
            format!("booted {y8}"),
            format!("confirmed {y8}"),
        ]
    );
    let d = server.get("/api/v1/devices/qa-b", &admin).json();
    assert_eq!(
        (d["device"]["running"].as_str(), d["device"]["confirmed"].as_bool()),
        (Some(y_id.as_str()), Some(true))
    );
    // A device that never reported a step runs its factory image, whatever it says: each
    // claim is taken.
    let unknown = "ab".repeat(32);
    for claim in [&x_id, &unknown, &x_id] {
        server.checkin(&c, Some(claim));
        let d = server.get("/api/v1/devices/qa-c", &admin).json();
        assert_eq!(d["device"]["running"].as_str(), Some(claim.as_str()));
    }

    // The fleet grows during an update: the device's stage moves on, its update goes on.
    server.set_stages("dev", "[5, 100]");
    let g_id = high_bucket_id("dev-g");
    let g = server.enroll(&g_id, "dev");
    release("dev", &z_id);
    // The first stage of one device holds it.
    assert_eq!(server.checkin(&g, Some(&y_id))["image_id"], z_id);
    server.event(&g, &z_id, "downloading");
    for i in 0..40 {
        server.enroll(&format!("dev-more-{i}"), "dev");
    }
    // Five per cent of 41: the three lowest buckets; its bucket is in the top tenth.
    assert!(server.checkin(&g, Some(&y_id)).is_null(), "{g_id} is out of the first stage now");
    server.steps(&g, &z_id, &["installed", "booted", "confirmed"]);

    assert_eq!(anomalies(&server), Vec::<Value>::new());
    let metrics = server.request("GET", "/metrics", None, None, None, &[]);
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(metrics.contains("ota_device_anomalies_total 0"), "{metrics}");
}

both_backends!(false_evidence_leaves_the_gate_shut);
both_backends!(genuine_reports_are_no_anomalies);
both_backends!(history_survives_a_restart);
