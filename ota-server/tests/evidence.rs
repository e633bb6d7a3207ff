//! False evidence does not open the promotion gate: device reports inconsistent with what the
//! server knows of the device (wrong board, wrong environment, never offered, out of order,
//! forged check-in claims) are recorded as anomalies and counted nowhere.

mod common;

use common::{Backend, Server, image, prod_key, sign_release};
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
    let (x, y) = (image("2.0.0"), image("3.0.0"));
    for v in [&x, &y] {
        assert_eq!(server.upload(&admin, &v.bytes).status, 201);
    }
    let (x_id, y_id) = (x.id.to_string(), y.id.to_string());
    // Test rolls out in stages so that some of its devices are not offered X yet.
    let r = server.request(
        "PATCH",
        "/api/v1/environments/test",
        Some(&admin),
        Some("application/json"),
        Some(br#"{"stages": [5, 100]}"#),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.json());
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
    // Out of order: confirmed without booting, booted without installing.
    let m = refused(&server, &in_stage, &x_id, "confirmed");
    assert!(m.contains("does not follow"), "{m}");
    server.event(&in_stage, &x_id, "downloading");
    refused(&server, &in_stage, &x_id, "booted");
    refused(&server, &in_stage, &x_id, "confirmed");
    expected.extend(["out_of_order", "out_of_order", "out_of_order"]);
    // A check-in claiming X confirmed, although the device only began downloading it: the
    // claim is not taken, so X is still offered.
    assert_eq!(server.checkin(&in_stage, Some(&x_id))["image_id"], x_id);
    expected.push("never_installed");

    // The gate is shut: nothing counted.
    let statement = sign_release(&x_id, "prod", 1, &prod_key());
    let promote = json!({"image_id": x_id, "statement": statement});
    let r = server.post_json("/api/v1/environments/prod/releases", &admin, promote.clone());
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
    let r = server.post_json("/api/v1/environments/prod/releases", &admin, promote);
    assert_eq!(r.status, 201, "{}", r.json());
}

fn history_survives_a_restart(backend: Backend) {
    // The step a report must follow is the device's last recorded one, also after a restart.
    let mut server = Server::start_on(backend);
    let admin = server.admin.clone();
    let x = image("2.0.0");
    assert_eq!(server.upload(&admin, &x.bytes).status, 201);
    let id = x.id.to_string();
    let r = server.post_json("/api/v1/environments/test/releases", &admin, json!({"image_id": id}));
    assert_eq!(r.status, 201);
    let (a, b) = (server.enroll("qa-a", "test"), server.enroll("qa-b", "test"));
    server.steps(&a, &id, &["downloading", "installed", "booted"]);
    server.steps(&b, &id, &["downloading"]);
    server.kill9();
    server.launch(&[]);
    server.event(&a, &id, "confirmed");
    refused(&server, &b, &id, "confirmed");
    let statement = sign_release(&id, "prod", 1, &prod_key());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": id, "statement": statement}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
}

both_backends!(false_evidence_leaves_the_gate_shut);
both_backends!(history_survives_a_restart);
