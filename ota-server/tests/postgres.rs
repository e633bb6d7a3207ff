//! The server on a PostgreSQL server that goes away and comes back: requests fail cleanly
//! while it is gone (503 and a JSON error, no panic, nothing half-written), the server
//! recovers by itself, and nothing acknowledged is lost.

mod common;

use std::time::{Duration, Instant};

use common::{Server, image};
use serde_json::json;
use testkit::pg::{Options, Postgres};

#[test]
fn a_database_restart_is_ridden_out() {
    // A cluster of its own: the other tests' cluster keeps running.
    let pg = Postgres::start(Options { fast: true });
    let mut server = Server::start_on_database(Some(pg.create_database()), &[]);
    let admin = server.admin.clone();
    let (v1, v2) = (image("1.0.0"), image("2.0.0"));
    assert_eq!(server.upload(&admin, &v1.bytes).status, 201);
    let device = server.enroll("d-1", "dev");
    let r = server.post_json(
        "/api/v1/environments/dev/releases",
        &admin,
        json!({"image_id": v1.id.to_string()}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(server.get("/readyz", &admin).status, 200);

    pg.kill();
    // Writes fail cleanly, with a JSON error that says to try again.
    let r = server.upload(&admin, &v2.bytes);
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "store_unavailable"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = server.post_json(
        "/api/v1/devices",
        &admin,
        json!({"id": "d-2", "board": "microbit", "environment": "dev"}),
    );
    assert_eq!((r.status, r.code().as_str()), (503, "store_unavailable"));
    let r =
        server.post_json("/api/v1/device/checkin", &device, json!({"image_id": v1.id.to_string()}));
    assert_eq!((r.status, r.code().as_str()), (503, "store_unavailable"));
    let r = server.get("/readyz", &admin);
    assert_eq!((r.status, r.code().as_str()), (503, "store_unavailable"));
    // The management API answers only what it knows to be current: not now.
    let r = server.get("/api/v1/environments/dev", &admin);
    assert_eq!((r.status, r.code().as_str()), (503, "store_unavailable"));
    // A device whose check-in changes nothing is still answered, from the model; the process
    // keeps running.
    let r = server.post_json("/api/v1/device/checkin", &device, json!({}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(server.get("/healthz", &admin).status, 200);
    assert!(server.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the server exited");

    pg.start_again();
    // It recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = server.upload(&admin, &v2.bytes);
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.get("/readyz", &admin).status, 200);
    let r =
        server.post_json("/api/v1/device/checkin", &device, json!({"image_id": v1.id.to_string()}));
    assert_eq!(r.status, 200);

    // Everything acknowledged is there after a restart of the server too; what failed is not.
    server.kill9();
    server.launch(&[]);
    for v in [&v1, &v2] {
        assert_eq!(server.get(&format!("/api/v1/images/{}/file", v.id), &admin).body, v.bytes);
    }
    let d = server.get("/api/v1/devices/d-1", &admin).json();
    assert_eq!(d["device"]["running"], v1.id.to_string());
    assert_eq!(server.get("/api/v1/devices/d-2", &admin).status, 404);
    assert_eq!(
        server.get("/api/v1/environments/dev/releases", &admin).json().as_array().unwrap().len(),
        1
    );
}
