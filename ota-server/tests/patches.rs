//! Patches as a transport (docs/delta.md, docs/server-api.md): which form a check-in is offered
//! (no capability: the image; a small enough patch: the patch; the threshold), a patch made once
//! and served from the blob store with `Range`, and a device that failed a patch offered the
//! image whole from then on, across a restart.

mod common;

use common::{Backend, Server, image};
use serde_json::{Value, json};
use sha2::Digest;

fn checkin_with_delta(server: &Server, token: &str, running: &str) -> Value {
    let body = json!({"image_id": running, "trial": false, "capabilities": ["delta"]});
    let r = server.post_json("/api/v1/device/checkin", token, body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["offer"].clone()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Uploads v1 and v2 and releases v2 to test; returns their ids and v2's file.
fn v1_to_v2(server: &Server) -> (String, String, Vec<u8>) {
    let (v1, v2) = (image("1.0.0"), image("2.0.0"));
    for v in [&v1, &v2] {
        assert_eq!(server.upload(&server.admin, &v.bytes).status, 201);
    }
    let (v1_id, v2_id) = (v1.id.to_string(), v2.id.to_string());
    let r = server.post_json(
        "/api/v1/environments/test/releases",
        &server.admin,
        json!({"image_id": v2_id}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    (v1_id, v2_id, v2.bytes)
}

fn transport_patch_cache_and_fallback(backend: Backend) {
    let mut server = Server::start_on(backend);
    let (v1, v2, v2_file) = v1_to_v2(&server);
    let a = server.enroll("old-device", "test");
    let b = server.enroll("delta-1", "test");
    let c = server.enroll("delta-2", "test");

    // No capability announced: the image, whole, with its size and hash.
    let offer = server.checkin(&a, Some(&v1));
    assert_eq!(offer["transport"], "image");
    assert_eq!(offer["size"], v2_file.len());
    assert_eq!(offer["sha256"], sha256_hex(&v2_file));
    assert_eq!(offer["url"], format!("/api/v1/device/images/{v2}"));
    assert!(offer.get("source").is_none(), "{offer}");

    // Delta announced, running v1: a patch from v1, far smaller than the image.
    let blobs_before = server.blob_files().len();
    let offer = checkin_with_delta(&server, &b, &v1);
    assert_eq!(offer["transport"], "patch", "{offer}");
    assert_eq!(offer["image_id"], v2);
    assert_eq!(offer["source"], v1);
    assert_eq!(offer["url"], format!("/api/v1/device/patches/{v1}/{v2}"));
    let size = offer["size"].as_u64().unwrap() as usize;
    assert!(size * 10 < v2_file.len(), "patch {size} bytes, image {}", v2_file.len());
    assert_eq!(server.blob_files().len(), blobs_before + 1, "the patch is in the blob store");

    // Served like an image: whole, then from an offset with `Range`.
    let url = offer["url"].as_str().unwrap();
    let whole = server.get(url, &b);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body.len(), size);
    assert_eq!(offer["sha256"], sha256_hex(&whole.body));
    let prefix = firmware::delta::PatchPrefix::parse(&whole.body).unwrap();
    assert_eq!((prefix.source.to_string(), prefix.target.to_string()), (v1.clone(), v2.clone()));
    let part = server.request("GET", url, Some(&b), None, None, &[("range", "bytes=10-")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body[10..]);
    // Only the current release's patches, only with a device token.
    let other = format!("/api/v1/device/patches/{v2}/{v1}");
    assert_eq!(server.get(&other, &b).status, 404);
    assert_eq!(server.get(url, &server.admin).status, 401);

    // A second device on v1: the same patch, not made again.
    let again = checkin_with_delta(&server, &c, &v1);
    assert_eq!(again["sha256"], offer["sha256"]);
    assert_eq!(server.blob_files().len(), blobs_before + 1);

    // Running an image the server does not hold: the image.
    let unknown = "ab".repeat(32);
    assert_eq!(checkin_with_delta(&server, &c, &unknown)["transport"], "image");

    // b refuses the patch (slot A was not v1 after all): still offered v2, now whole, and the
    // refusal does not count against v2.
    let r = server.post_json(
        "/api/v1/device/events",
        &b,
        json!({"image_id": v2, "kind": "failed", "detail": "WrongSource", "transport": "patch"}),
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let offer = checkin_with_delta(&server, &b, &v1);
    assert_eq!(offer["transport"], "image", "{offer}");
    assert_eq!(offer["image_id"], v2);
    assert_eq!(checkin_with_delta(&server, &c, &v1)["transport"], "patch");

    // Kept in the database: the same after a restart.
    server.kill9();
    server.launch(&[]);
    assert_eq!(checkin_with_delta(&server, &b, &v1)["transport"], "image");
    assert_eq!(checkin_with_delta(&server, &c, &v1)["transport"], "patch");
    assert_eq!(server.blob_files().len(), blobs_before + 1);
}
both_backends!(transport_patch_cache_and_fallback);

fn threshold(backend: Backend) {
    // A patch must be at most a millionth of the image: none is.
    let server = Server::start_with(backend, &["--patch-max-ratio", "0.000001"]);
    let (v1, _, v2_file) = v1_to_v2(&server);
    let d = server.enroll("delta-1", "test");
    let offer = checkin_with_delta(&server, &d, &v1);
    assert_eq!(offer["transport"], "image", "{offer}");
    assert_eq!(offer["size"], v2_file.len());
}
both_backends!(threshold);
