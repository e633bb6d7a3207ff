//! Bad input against a real server process: every refusal is a 4xx with a JSON error naming
//! the cause, and nothing is stored or changed.

mod common;

use common::Backend;

use common::{Server, build_key, image, image_for};
use ed25519_dalek::SigningKey;
use serde_json::json;

fn bad_images_are_refused_and_nothing_is_stored(backend: Backend) {
    let server = Server::start_with(backend, &["--max-image-size", "200000"]);
    let admin = server.admin.clone();
    let good = image("1.0.0");
    let audit_before = server.audit_len();

    let mut tampered = good.bytes.clone();
    let last = tampered.len() - 10;
    tampered[last] ^= 0x40;
    let mut bad_signature = good.bytes.clone();
    bad_signature[good.header_len - 5] ^= 1;
    let mut unsigned = good.bytes.clone();
    unsigned[8] = 0; // the signature count
    let truncated = &good.bytes[..good.bytes.len() / 2];
    let stranger = image_for("microbit", "1.0.0", 0, &SigningKey::from_bytes(&[99; 32]));
    let other_board = image_for("no-such-board", "1.0.0", 0, &build_key());
    let cases: [(&str, &[u8], &str); 7] = [
        ("tampered payload", &tampered, "bad_component"),
        ("bad signature", &bad_signature, "bad_signature"),
        ("unsigned", &unsigned, "unsigned_image"),
        ("truncated", truncated, "truncated_image"),
        ("unknown key", &stranger.bytes, "unknown_key"),
        ("unknown board", &other_board.bytes, "unknown_board"),
        ("not an image", b"hello", "malformed_image"),
    ];
    for (what, bytes, code) in cases {
        let r = server.upload(&admin, bytes);
        assert_eq!(r.status, 400, "{what}");
        assert_eq!(r.code(), code, "{what}: {}", r.json());
        assert!(r.json()["error"]["message"].as_str().unwrap().len() > 10);
    }

    // Oversized, wrong content type, no token, unknown token, device token, qa role.
    let big = vec![0u8; 200_001];
    let r = server.upload(&admin, &big);
    assert_eq!((r.status, r.code().as_str()), (413, "too_large"));
    let r = server.request(
        "POST",
        "/api/v1/images",
        Some(&admin),
        Some("application/json"),
        Some(&good.bytes),
        &[],
    );
    assert_eq!((r.status, r.code().as_str()), (415, "wrong_content_type"));
    let r = server.request(
        "POST",
        "/api/v1/images",
        None,
        Some("application/octet-stream"),
        Some(&good.bytes),
        &[],
    );
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = server.upload("fwm_0000", &good.bytes);
    assert_eq!(r.status, 401);
    let device = server.enroll("dev-1", "dev");
    let r = server.upload(&device, &good.bytes);
    assert_eq!((r.status, r.code().as_str()), (403, "device_token"));
    let qa = server.post_json("/api/v1/tokens", &admin, json!({"role": "qa", "name": "qa-1"}));
    assert_eq!(qa.status, 201);
    let qa = qa.json()["token"].as_str().unwrap().to_owned();
    let r = server.upload(&qa, &good.bytes);
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));

    // Nothing stored: no image, no blob, no leftover, only the device and token in the audit.
    assert_eq!(server.get("/api/v1/images", &admin).json(), json!([]));
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
    assert_eq!(server.tmp_files(), 0);
    assert_eq!(server.audit_len(), audit_before + 2);

    // And the good one is accepted, then recognised.
    let r = server.upload(&admin, &good.bytes);
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["id"], good.id.to_string());
    assert_eq!(server.upload(&admin, &good.bytes).status, 200);
    assert_eq!(server.blob_files().len(), 1);
}

fn bad_requests_change_nothing(backend: Backend) {
    let server = Server::start_on(backend);
    let admin = server.admin.clone();
    let device = server.enroll("dev-1", "test");
    let before = server.audit_len();
    let devices_before = server.get("/api/v1/devices", &admin).json();

    let post = |path: &str, ct: &str, body: &[u8]| {
        server.request("POST", path, Some(&admin), Some(ct), Some(body), &[])
    };
    let r = post("/api/v1/devices", "application/json", b"{\"id\": ");
    assert_eq!((r.status, r.code().as_str()), (400, "bad_json"));
    let r = post(
        "/api/v1/devices",
        "text/plain",
        br#"{"id":"x","board":"microbit","environment":"dev"}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (415, "wrong_content_type"));
    let r = post(
        "/api/v1/devices",
        "application/json",
        br#"{"id":"x","board":"microbit","environment":"dev","extra":1}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "bad_json"));
    let big = format!("{{\"id\": \"{}\"}}", "x".repeat(70_000));
    let r = post("/api/v1/devices", "application/json", big.as_bytes());
    assert_eq!((r.status, r.code().as_str()), (413, "too_large"));
    let r = post(
        "/api/v1/devices",
        "application/json",
        br#"{"id":"bad id!","board":"microbit","environment":"dev"}"#,
    );
    // Ids are typed from the wire: the refusal names the rule.
    assert_eq!((r.status, r.code().as_str()), (400, "bad_json"));
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(r#"device id "bad id!": 1 to 64 bytes of A-Z"#), "{message}");
    let r = post(
        "/api/v1/devices",
        "application/json",
        br#"{"id":"x","board":"nope","environment":"dev"}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "unknown_board"));
    let r = post(
        "/api/v1/devices",
        "application/json",
        br#"{"id":"dev-1","board":"microbit","environment":"dev"}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (409, "exists"));
    let r = post(
        "/api/v1/environments",
        "application/json",
        br#"{"name":"stage","rollout":{"stages":[50,25,100]}}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "bad_setting"));
    let r = post("/api/v1/environments", "application/json", br#"{"name":"Bad Name"}"#);
    assert_eq!((r.status, r.code().as_str()), (400, "bad_json"));
    assert!(
        r.json()["error"]["message"].as_str().unwrap().contains(r#"environment name "Bad Name""#)
    );

    // Unknown ids.
    let zero = "0".repeat(64);
    assert_eq!(server.get(&format!("/api/v1/images/{zero}"), &admin).code(), "unknown_image");
    let r = server.get("/api/v1/images/xyz", &admin);
    assert_eq!(r.code(), "bad_path");
    assert!(
        r.json()["error"]["message"].as_str().unwrap().contains("64 hex digits"),
        "{}",
        r.json()
    );
    assert_eq!(server.get("/api/v1/environments/nope", &admin).code(), "unknown_environment");
    assert_eq!(server.get("/api/v1/devices/nope", &admin).code(), "unknown_device");
    assert_eq!(
        server.get("/api/v1/environments/test/releases/7", &admin).code(),
        "unknown_release"
    );
    assert_eq!(server.get("/api/v1/environments/test/releases/x", &admin).code(), "bad_path");
    assert_eq!(server.get("/api/v1/devices?colour=red", &admin).code(), "bad_query");
    assert_eq!(server.get("/api/v1/nothing-here", &admin).status, 404);
    let r = server.request("DELETE", "/api/v1/images", Some(&admin), None, None, &[]);
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
    let r = post(
        "/api/v1/environments/test/releases",
        "application/json",
        format!("{{\"image_id\":\"{zero}\"}}").as_bytes(),
    );
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_image"));

    // Tokens: missing, wrong, a device token on the management API, a revoked one.
    assert_eq!(server.request("GET", "/api/v1/devices", None, None, None, &[]).status, 401);
    assert_eq!(server.get("/api/v1/devices", "fwm_wrong").status, 401);
    assert_eq!(server.get("/api/v1/devices", &device).code(), "device_token");
    // A device token that names no device is just an unknown token.
    let r = server.get("/api/v1/devices", &format!("fwd_{}", "0".repeat(64)));
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    let ci = server.post_json("/api/v1/tokens", &admin, json!({"role": "ci", "name": "ci"})).json();
    let (ci_token, ci_id) = (ci["token"].as_str().unwrap(), ci["info"]["id"].as_str().unwrap());
    let r = server.post_json(
        "/api/v1/devices",
        ci_token,
        json!({"id": "y", "board": "microbit", "environment": "dev"}),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    let r =
        server.request("DELETE", &format!("/api/v1/tokens/{ci_id}"), Some(&admin), None, None, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(server.get("/api/v1/images", ci_token).status, 401);

    // Device API: management tokens and other devices' tokens do not reach it.
    let r = server.post_json("/api/v1/device/checkin", &admin, json!({}));
    assert_eq!(r.status, 401);
    let r = server.post_json(
        "/api/v1/device/events",
        &device,
        json!({"image_id": "zz", "kind": "confirmed"}),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "bad_json"));
    let r = server.post_json(
        "/api/v1/device/events",
        &device,
        json!({"image_id": zero, "kind": "exploded"}),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "bad_json"));
    let r = server.get(&format!("/api/v1/device/images/{zero}"), &device);
    assert_eq!((r.status, r.code().as_str()), (404, "not_offered"));

    // Nothing changed but the token made and revoked.
    assert_eq!(server.get("/api/v1/devices", &admin).json(), devices_before);
    assert_eq!(server.audit_len(), before + 2);
    assert_eq!(server.get("/api/v1/environments", &admin).json().as_array().unwrap().len(), 3);
}

both_backends!(bad_images_are_refused_and_nothing_is_stored);
both_backends!(bad_requests_change_nothing);
