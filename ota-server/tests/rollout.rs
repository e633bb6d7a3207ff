//! The release pipeline against a real server process: test fleet, promotion gate, signed
//! promotion to prod, staged rollout, automatic halt, rollback, pause.

mod common;

use common::Backend;

use common::{Server, image, prod_key, sign_release};
use ed25519_dalek::SigningKey;
use firmware::image::{SignedRelease, TrustedKey};
use serde_json::{Value, json};

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
}

/// Checks in every device; returns the ids that got an offer (checking each offer).
fn offered(
    server: &Server,
    devices: &[(String, String)],
    running: &str,
    image: &str,
) -> Vec<String> {
    let mut got = Vec::new();
    for (id, token) in devices {
        let offer = server.checkin(token, Some(running));
        if !offer.is_null() {
            assert_eq!(offer["image_id"], image);
            got.push(id.clone());
        }
    }
    got
}

fn environment(server: &Server, env: &str) -> Value {
    server.get(&format!("/api/v1/environments/{env}"), &server.admin).json()
}

fn test_then_staged_prod_then_halt_and_rollback(backend: Backend) {
    let server = Server::start_on(backend);
    let admin = server.admin.clone();
    let (v1, v2, v3) = (image("1.0.0"), image("2.0.0"), image("3.0.0"));
    for v in [&v1, &v2, &v3] {
        assert_eq!(server.upload(&admin, &v.bytes).status, 201);
    }
    let (v1_id, v2_id, v3_id) = (v1.id.to_string(), v2.id.to_string(), v3.id.to_string());
    let enroll = |prefix: &str, n: usize, env: &str| -> Vec<(String, String)> {
        (0..n)
            .map(|i| format!("{prefix}-{i:02}"))
            .map(|id| (id.clone(), server.enroll(&id, env)))
            .collect()
    };
    let test = enroll("qa", 4, "test");
    let prod = enroll("field", 60, "prod");
    assert!(offered(&server, &test, &v1_id, "").is_empty());

    // Promotion before the test fleet confirmed anything: the gate is closed.
    let statement = sign_release(&v2_id, "prod", 1, &prod_key());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": v2_id, "statement": statement}),
    );
    assert_eq!((r.status, r.code().as_str()), (409, "gate_closed"), "{}", r.json());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("never released to test"));

    // Release v2 to test with the server-held key.
    let r =
        server.post_json("/api/v1/environments/test/releases", &admin, json!({"image_id": v2_id}));
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["state"], "rolling");
    let test_key = environment(&server, "test")["release_public_key"].as_str().unwrap().to_owned();
    let test_key =
        TrustedKey::from_bytes(&hex::decode(test_key).unwrap().try_into().unwrap()).unwrap();
    for (_, token) in &test {
        let offer = server.checkin(token, Some(&v1_id));
        assert_eq!(offer["image_id"], v2_id);
        assert_eq!(offer["size"], v2.bytes.len());
        // The statement verifies with the environment's key and names this image.
        let statement = hex::decode(offer["release"].as_str().unwrap()).unwrap();
        let signed = SignedRelease::parse(&statement).unwrap();
        signed.verify(&[test_key]).unwrap();
        assert_eq!(signed.statement().image_id(), v2.id);
        assert_eq!(signed.statement().environment(), "test");
        let file = server.get(offer["url"].as_str().unwrap(), token);
        assert_eq!(file.status, 200);
        assert_eq!(file.body, v2.bytes);
        server.confirm(token, &v2_id);
        assert!(server.checkin(token, Some(&v2_id)).is_null());
    }
    let current = &environment(&server, "test")["current"][0];
    assert_eq!(current["state"], "completed", "{current}");
    assert_eq!(current["progress"]["confirmed"], 4);

    // Promotion: the server does not hold prod's key; a statement by another key, or with a
    // stale sequence, is refused; the right one is accepted.
    let r =
        server.post_json("/api/v1/environments/prod/releases", &admin, json!({"image_id": v2_id}));
    assert_eq!((r.status, r.code().as_str()), (400, "statement_required"));
    let forged = sign_release(&v2_id, "prod", 1, &SigningKey::from_bytes(&[5; 32]));
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": v2_id, "statement": forged}),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "wrong_release_key"));
    let stale = sign_release(&v2_id, "prod", 7, &prod_key());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": v2_id, "statement": stale}),
    );
    assert_eq!((r.status, r.code().as_str()), (409, "sequence_taken"));
    let for_test = sign_release(&v2_id, "test", 1, &prod_key());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": v2_id, "statement": for_test}),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "bad_statement"));
    assert!(environment(&server, "prod")["current"].as_array().unwrap().is_empty());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": v2_id, "statement": statement}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["statement"], statement);

    // Staged rollout: each round, exactly the devices below the stage's cut-off are offered v2.
    let bucket: std::collections::HashMap<String, u64> = server
        .get("/api/v1/devices?environment=prod", &admin)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d["bucket"].as_u64().unwrap()))
        .collect();
    let mut stages_seen = Vec::new();
    let mut confirmed = std::collections::HashSet::new();
    for _round in 0..5 {
        let release = &environment(&server, "prod")["current"][0];
        if release["state"] == "completed" {
            break;
        }
        let stage = release["stage"].as_u64().unwrap() as usize;
        stages_seen.push(stage);
        // Stage k: the ceil(stages[k] % of 60) devices with the lowest buckets.
        let mut sorted: Vec<u64> = bucket.values().copied().collect();
        sorted.sort_unstable();
        let size = (([5u64, 25, 100][stage] * 60).div_ceil(100)).max(1) as usize;
        let cutoff = sorted[size - 1] + 1;
        let waiting: Vec<_> =
            prod.iter().filter(|(id, _)| !confirmed.contains(id)).cloned().collect();
        let got = offered(&server, &waiting, &v1_id, &v2_id);
        let expected: Vec<String> = waiting
            .iter()
            .filter(|(id, _)| bucket[id] < cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(got, expected, "stage {stage}");
        for (id, token) in prod.iter().filter(|(id, _)| got.contains(id)) {
            server.confirm(token, &v2_id);
            confirmed.insert(id.clone());
        }
    }
    assert_eq!(stages_seen, vec![0, 1, 2], "a round per stage");
    let release = &environment(&server, "prod")["current"][0];
    assert_eq!(release["state"], "completed");
    // Every prod device runs the very image test ran.
    let on_v2 = server
        .get(&format!("/api/v1/devices?environment=prod&image={v2_id}&state=current"), &admin)
        .json();
    assert_eq!(ids(&on_v2).len(), 60);

    // v3 makes the test fleet unhealthy: three of four revert; the rollout halts by itself
    // (with a 50 % threshold, at the third).
    let r = server.request(
        "PATCH",
        "/api/v1/environments/test",
        Some(&admin),
        Some("application/json"),
        Some(br#"{"failure_threshold": 0.5}"#),
        &[],
    );
    assert_eq!(r.json()["rollout"]["failure_threshold"], 0.5);
    let r =
        server.post_json("/api/v1/environments/test/releases", &admin, json!({"image_id": v3_id}));
    assert_eq!(r.status, 201);
    let seq3 = r.json()["sequence"].as_u64().unwrap();
    for (_, token) in &test[..3] {
        assert_eq!(server.checkin(token, Some(&v2_id))["image_id"], v3_id);
        server.steps(token, &v3_id, &["downloading", "installed", "booted", "reverted"]);
        // Back on v2, which the next check-in says.
        assert!(server.checkin(token, Some(&v2_id)).is_null());
    }
    let current = &environment(&server, "test")["current"][0];
    assert_eq!(current["state"], "halted", "{current}");
    assert!(current["reason"].as_str().unwrap().contains("3 of 4 devices"));
    assert!(server.checkin(&test[3].1, Some(&v2_id)).is_null(), "a halted rollout offers nothing");
    let failed = server.get("/api/v1/devices?environment=test&state=failed", &admin).json();
    assert_eq!(ids(&failed).len(), 3);
    let statement = sign_release(&v3_id, "prod", 2, &prod_key());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": v3_id, "statement": statement}),
    );
    assert_eq!((r.status, r.code().as_str()), (409, "gate_closed"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("halted in test"));
    let metrics = server.request("GET", "/metrics", None, None, None, &[]);
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(
        metrics
            .contains(r#"ota_rollout_state{environment="test",board="microbit",state="halted"} 1"#),
        "{metrics}"
    );

    // Roll test back to v2 (the server signs); prod has nothing earlier to go back to.
    let target = server.get("/api/v1/environments/test/rollback", &admin).json();
    assert_eq!(target["image_id"], v2_id);
    let r = server.post_json("/api/v1/environments/test/rollback", &admin, json!({}));
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(
        (r.json()["kind"].as_str(), r.json()["sequence"].as_u64()),
        (Some("rollback"), Some(seq3 + 1))
    );
    assert_eq!(r.json()["state"], "completed", "every test device already runs v2");
    let history = server.get("/api/v1/environments/test/releases", &admin).json();
    assert_eq!(history[1]["state"], "superseded");
    // The halt is remembered after the rollback superseded it.
    let statement = sign_release(&v3_id, "prod", 2, &prod_key());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": v3_id, "statement": statement}),
    );
    assert_eq!((r.status, r.code().as_str()), (409, "gate_closed"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("halted in test"));
    let r = server.get("/api/v1/environments/prod/rollback", &admin);
    assert_eq!((r.status, r.code().as_str()), (409, "nothing_to_roll_back"));

    // Pause stops offers; resume restarts them.
    let r = server.post_json("/api/v1/environments/test/releases/1/pause", &admin, json!({}));
    assert_eq!((r.status, r.code().as_str()), (409, "bad_state"), "superseded releases stay so");
    let seq = seq3 + 1;
    let r = server.request(
        "POST",
        &format!("/api/v1/environments/test/releases/{seq}/pause"),
        Some(&admin),
        None,
        None,
        &[],
    );
    assert_eq!(r.json()["state"], "paused");
    let r = server.request(
        "POST",
        &format!("/api/v1/environments/test/releases/{seq}/resume"),
        Some(&admin),
        None,
        None,
        &[],
    );
    assert_eq!(r.json()["state"], "completed", "{}", r.json());

    // The audit log has every act, with who did it.
    let audit = server.get("/api/v1/audit", &admin).json();
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    for a in [
        "image.upload",
        "device.create",
        "release.create",
        "release.rollback",
        "release.pause",
        "release.resume",
        "rollout.advance",
        "rollout.complete",
        "rollout.halt",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    // People act through their tokens; the rollout engine moves rollouts by itself.
    for entry in audit.as_array().unwrap() {
        let action = entry["action"].as_str().unwrap();
        let expected = match action {
            "server.init" => "cli",
            a if a.starts_with("rollout.") => "server",
            _ => "admin",
        };
        assert_eq!(entry["actor"], expected, "{entry}");
    }
    // Prod's staged rollout of v2 (its first release) advanced through each stage once, then completed.
    let moves: Vec<(&str, u64)> = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|a| {
            a["target"] == "prod/1" && a["action"].as_str().unwrap().starts_with("rollout.")
        })
        .map(|a| (a["action"].as_str().unwrap(), a["detail"]["to"]["stage"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        moves,
        vec![("rollout.advance", 1), ("rollout.advance", 2), ("rollout.complete", 2)]
    );
}

fn range_downloads_resume_byte_exact(backend: Backend) {
    let server = Server::start_on(backend);
    let admin = server.admin.clone();
    let v1 = image("1.0.0");
    assert_eq!(server.upload(&admin, &v1.bytes).status, 201);
    let id = v1.id.to_string();
    assert_eq!(
        server
            .post_json("/api/v1/environments/dev/releases", &admin, json!({"image_id": id}))
            .status,
        201
    );
    let device = server.enroll("bench-1", "dev");
    let url = server.checkin(&device, None)["url"].as_str().unwrap().to_owned();
    let len = v1.bytes.len();

    // Resume after an interruption at every tenth of the file.
    for cut in (0..len).step_by(len / 10 + 1) {
        let first = server.request(
            "GET",
            &url,
            Some(&device),
            None,
            None,
            &[("Range", &format!("bytes=0-{cut}"))],
        );
        assert_eq!(first.status, 206);
        let rest = server.request(
            "GET",
            &url,
            Some(&device),
            None,
            None,
            &[("Range", &format!("bytes={}-", cut + 1))],
        );
        let mut joined = first.body.clone();
        if cut + 1 < len {
            assert_eq!(rest.status, 206);
            assert_eq!(
                rest.header("content-range"),
                Some(format!("bytes {}-{}/{len}", cut + 1, len - 1).as_str())
            );
            joined.extend_from_slice(&rest.body);
        } else {
            assert_eq!(rest.status, 416);
        }
        assert_eq!(joined, v1.bytes, "cut at {cut}");
    }
    let tail = server.request("GET", &url, Some(&device), None, None, &[("Range", "bytes=-100")]);
    assert_eq!(tail.body, &v1.bytes[len - 100..]);
    let malformed =
        server.request("GET", &url, Some(&device), None, None, &[("Range", "bytes=9-3")]);
    assert_eq!((malformed.status, malformed.body.len()), (200, len), "malformed: ignored");
    let bad = server.request(
        "GET",
        &url,
        Some(&device),
        None,
        None,
        &[("Range", &format!("bytes={len}-"))],
    );
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("content-range"), Some(format!("bytes */{len}").as_str()));
    let whole = server.get(&url, &device);
    assert_eq!((whole.status, whole.header("accept-ranges")), (200, Some("bytes")));
    // Management download too.
    let file = server.request(
        "GET",
        &format!("/api/v1/images/{id}/file"),
        Some(&admin),
        None,
        None,
        &[("Range", "bytes=10-19")],
    );
    assert_eq!(file.body, &v1.bytes[10..20]);
    // Another environment's device is not offered it and cannot fetch it.
    let other = server.enroll("bench-2", "test");
    assert!(server.checkin(&other, None).is_null());
    assert_eq!(server.get(&url, &other).status, 404);
}

fn gate_counts_survive_a_restart(backend: Backend) {
    let mut server = Server::start_on(backend);
    let admin = server.admin.clone();
    let v2 = image("2.0.0");
    assert_eq!(server.upload(&admin, &v2.bytes).status, 201);
    let id = v2.id.to_string();
    let r = server.request(
        "PATCH",
        "/api/v1/environments/prod",
        Some(&admin),
        Some("application/json"),
        Some(br#"{"promote_min_confirmed": 2}"#),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        server
            .post_json("/api/v1/environments/test/releases", &admin, json!({"image_id": id}))
            .status,
        201
    );
    // One device confirms by event, the other, after booting it, only by checking in with
    // the image confirmed (its confirmation report was lost).
    let a = server.enroll("qa-a", "test");
    let b = server.enroll("qa-b", "test");
    server.confirm(&a, &id);
    server.steps(&b, &id, &["downloading", "installed", "booted"]);
    assert!(server.checkin(&b, Some(&id)).is_null());
    server.kill9();
    server.launch(&[]);
    let statement = sign_release(&id, "prod", 1, &prod_key());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &admin,
        json!({"image_id": id, "statement": statement}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
}

fn device_reports_are_checked(backend: Backend) {
    let server = Server::start_on(backend);
    let device = server.enroll("d-1", "dev");
    let zero = "0".repeat(64);
    let r = server.post_json(
        "/api/v1/device/events",
        &device,
        json!({"image_id": zero, "kind": "confirmed"}),
    );
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_image"));
    let r = server.post_json(
        "/api/v1/device/checkin",
        &device,
        json!({"image_id": null, "slot_b": {"state": "full"}}),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "bad_json"));
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("unknown variant `full`") && message.contains("`pending`"),
        "{message}"
    );
    let r = server.post_json(
        "/api/v1/device/checkin",
        &device,
        json!({"last_outcome": "x".repeat(200)}),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "too_long"));
    let r = server.post_json(
        "/api/v1/device/checkin",
        &device,
        json!({"image_id": null, "slot_b": {"state": "empty"}, "last_outcome": "none"}),
    );
    assert_eq!(r.status, 200);
    let d = server.get("/api/v1/devices/d-1", &server.admin).json();
    assert_eq!(d["device"]["slot_b"]["state"], "empty");
    assert_eq!(d["device"]["last_outcome"], "none");
    // A new token replaces the old one at once.
    let r = server.post_json("/api/v1/devices/d-1/token", &server.admin, json!({}));
    assert_eq!(r.status, 200);
    let fresh = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(server.post_json("/api/v1/device/checkin", &device, json!({})).status, 401);
    assert_eq!(server.post_json("/api/v1/device/checkin", &fresh, json!({})).status, 200);
    let r = server.post_json("/api/v1/devices/nope/token", &server.admin, json!({}));
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_device"));
}

fn claims_do_not_open_the_gate_and_empty_fleets_do_not_complete(backend: Backend) {
    let server = Server::start_on(backend);
    let admin = server.admin.clone();
    let v2 = image("2.0.0");
    assert_eq!(server.upload(&admin, &v2.bytes).status, 201);
    let id = v2.id.to_string();
    // A test device says it runs v2, confirmed, although v2 was never released to test.
    let qa = server.enroll("qa-1", "test");
    assert!(server.checkin(&qa, Some(&id)).is_null());
    let r = server.post_json(
        "/api/v1/device/events",
        &qa,
        json!({"image_id": id, "kind": "confirmed"}),
    );
    assert_eq!((r.status, r.code().as_str()), (409, "inconsistent_event"));
    let statement = sign_release(&id, "prod", 1, &prod_key());
    let promote = json!({"image_id": id, "statement": statement});
    let r = server.post_json("/api/v1/environments/prod/releases", &admin, promote.clone());
    assert_eq!((r.status, r.code().as_str()), (409, "gate_closed"));
    // Released to test, a confirmation after the release that follows the device's own
    // update history opens the gate.
    assert_eq!(
        server
            .post_json("/api/v1/environments/test/releases", &admin, json!({"image_id": id}))
            .status,
        201
    );
    server.confirm(&qa, &id);
    let r = server.post_json("/api/v1/environments/prod/releases", &admin, promote);
    assert_eq!(r.status, 201, "{}", r.json());
    // Prod has no devices: the rollout waits at its first stage instead of completing.
    assert_eq!(
        (r.json()["state"].as_str(), r.json()["stage"].as_u64()),
        (Some("rolling"), Some(0))
    );
    // Devices enrolled later are still staged: only the first stage's device is offered.
    let tokens: Vec<String> =
        (0..20).map(|i| server.enroll(&format!("late-{i:02}"), "prod")).collect();
    let offered = tokens.iter().filter(|t| !server.checkin(t, None).is_null()).count();
    assert_eq!(offered, 1, "5 % of 20 devices");
}

fn a_repeated_report_is_recorded_once(backend: Backend) {
    // Devices repeat a report whose answer they did not hear (a serial link, a reset).
    let server = Server::start_on(backend);
    let v1 = image("1.0.0");
    assert_eq!(server.upload(&server.admin, &v1.bytes).status, 201);
    let id = v1.id.to_string();
    let device = server.enroll("d-1", "dev");
    let r = server.post_json(
        "/api/v1/environments/dev/releases",
        &server.admin,
        json!({"image_id": id}),
    );
    assert_eq!(r.status, 201);
    for kind in ["downloading", "downloading", "failed", "failed", "downloading"] {
        server.event(&device, &id, kind);
    }
    let d = server.get("/api/v1/devices/d-1", &server.admin).json();
    let kinds: Vec<&str> =
        d["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["downloading", "failed", "downloading"], "newest first");
}

both_backends!(test_then_staged_prod_then_halt_and_rollback);
both_backends!(range_downloads_resume_byte_exact);
both_backends!(gate_counts_survive_a_restart);
both_backends!(device_reports_are_checked);
both_backends!(claims_do_not_open_the_gate_and_empty_fleets_do_not_complete);
both_backends!(a_repeated_report_is_recorded_once);
