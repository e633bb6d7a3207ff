//! A data folder made by ota-server 0.1 (before versioned migrations; committed in
//! tests/fixtures/data-0.1 with the keys and tokens it was made with): it upgrades in place
//! and serves the same state, and `copy-store` moves that state to PostgreSQL whole.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{BIN, Server};
use serde_json::{Value, json};
use testkit::pg::Postgres;

fn fixture() -> (Arc<tempfile::TempDir>, Value) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-0.1");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("blobs")).unwrap();
    std::fs::copy(from.join("ota.db"), data.join("ota.db")).unwrap();
    // Release 0.1 left its database as the umask made it (0644 here, as checked out). The
    // server now refuses a database others can read, saying how to fix it; the fixture is
    // fixed the way the message says.
    let db = data.join("ota.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = Command::new(BIN).args(["migrate", "--data"]).arg(&data).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("chmod 600"), "{said}");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    for blob in std::fs::read_dir(from.join("blobs")).unwrap() {
        let blob = blob.unwrap();
        if blob.file_type().unwrap().is_file() {
            std::fs::copy(blob.path(), data.join("blobs").join(blob.file_name())).unwrap();
        }
    }
    let about: Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("fixture.json")).unwrap()).unwrap();
    (Arc::new(dir), about)
}

/// A server on the fixture's copy (no init).
fn serve(dir: &Arc<tempfile::TempDir>, admin: &str, database: Option<String>) -> Server {
    Server::existing(dir.clone(), admin, database)
}

/// What the API shows of the whole state.
fn state(server: &Server) -> Value {
    let get = |path: &str| server.get(path, &server.admin).json();
    let mut releases = json!({});
    for env in ["dev", "test", "prod"] {
        releases[env] = get(&format!("/api/v1/environments/{env}/releases"));
    }
    let mut devices = get("/api/v1/devices");
    // Last check-in times are written every few seconds, not with each check-in.
    for d in devices.as_array_mut().unwrap() {
        d.as_object_mut().unwrap().remove("last_seen");
    }
    json!({
        "images": get("/api/v1/images"),
        "environments": get("/api/v1/environments"),
        "releases": releases,
        "devices": devices,
        "tokens": get("/api/v1/tokens"),
        "audit": get("/api/v1/audit?limit=1000"),
        "build_keys": get("/api/v1/build-keys"),
    })
}

#[test]
fn a_data_folder_from_0_1_upgrades_in_place_and_serves_the_same_state() {
    let (dir, about) = fixture();
    let admin = about["admin_token"].as_str().unwrap();
    let (v1, v2) = (about["v1"].as_str().unwrap(), about["v2"].as_str().unwrap());
    let server = serve(&dir, admin, None);
    let s = state(&server);
    // What 0.1 stored: two images; v1 released to test, confirmed there, promoted to prod;
    // v2 released to test and halted (one of two devices reverted it); a qa token made offline.
    let images: Vec<&str> =
        s["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(images.len(), 2);
    assert!(images.contains(&v1) && images.contains(&v2));
    let test = &s["releases"]["test"];
    assert_eq!((test[0]["sequence"].as_u64(), test[0]["image_id"].as_str()), (Some(2), Some(v2)));
    assert_eq!(test[0]["state"], "halted");
    assert!(test[0]["reason"].as_str().unwrap().contains("1 of 2 devices"));
    assert_eq!(test[1]["state"], "superseded");
    assert_eq!(s["releases"]["prod"][0]["image_id"], v1);
    assert_eq!(s["releases"]["prod"][0]["state"], "completed");
    assert_eq!(s["environments"][2]["rollout"]["stages"], json!([5, 25, 100]));
    let device =
        |id: &str| s["devices"].as_array().unwrap().iter().find(|d| d["id"] == id).unwrap().clone();
    assert_eq!(
        (device("qa-1")["running"].as_str(), device("qa-1")["confirmed"].as_bool()),
        (Some(v2), Some(false))
    );
    assert_eq!(device("qa-2")["failed_image"], v2);
    assert_eq!(
        (device("field-1")["running"].as_str(), device("field-1")["state"].as_str()),
        (Some(v1), Some("current"))
    );
    assert_eq!(s["tokens"].as_array().unwrap().len(), 2);
    let audit = s["audit"].as_array().unwrap();
    assert_eq!(audit.last().unwrap()["action"], "server.init");
    assert!(audit.iter().any(|e| e["action"] == "release.create" && e["target"] == "prod/1"));

    // The tokens still work, with their roles; the gate remembers the halt.
    let qa = about["qa_token"].as_str().unwrap();
    assert_eq!(server.get("/api/v1/images", qa).status, 200);
    let r = server.post_json("/api/v1/environments/dev/releases", qa, json!({"image_id": v1}));
    assert_eq!(r.code(), "forbidden");
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        admin,
        json!({"image_id": v2, "statement": "00"}),
    );
    assert_eq!(r.code(), "gate_closed");
    let qa1 = about["device_tokens"]["qa-1"].as_str().unwrap();
    assert!(server.checkin(qa1, Some(v2)).is_null(), "a halted rollout offers nothing");

    // A second start finds the schema current and the same state.
    let before = state(&server);
    drop(server);
    let again = serve(&dir, admin, None);
    assert_eq!(state(&again)["releases"], before["releases"]);
}

#[test]
fn copy_store_moves_a_fleet_to_postgres_whole() {
    let (dir, about) = fixture();
    let admin = about["admin_token"].as_str().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("data/ota.db").display());
    let url = Postgres::shared().create_database();
    let copy = |from: &str, to: &str| {
        Command::new(BIN).args(["copy-store", "--from", from, "--to", to]).output().unwrap()
    };
    let out = copy(&sqlite, &url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("and checked the copy") && stdout.contains("audit"), "{stdout}");

    // The same state through the API, from either store.
    let on_sqlite = serve(&dir, admin, None);
    let expected = state(&on_sqlite);
    drop(on_sqlite);
    let on_pg = serve(&dir, admin, Some(url.clone()));
    assert_eq!(state(&on_pg), expected);
    // Device tokens moved too.
    let qa1 = about["device_tokens"]["qa-1"].as_str().unwrap();
    let r = on_pg.post_json("/api/v1/device/checkin", qa1, json!({"image_id": about["v1"]}));
    assert_eq!(r.status, 200);
    // New audit entries continue after the copied ones.
    let r = on_pg.post_json("/api/v1/tokens", admin, json!({"role": "qa", "name": "after"}));
    assert_eq!(r.status, 201);
    let audit = on_pg.get("/api/v1/audit?limit=2", admin).json();
    assert!(audit[0]["seq"].as_i64() > audit[1]["seq"].as_i64(), "{audit}");

    // A target that holds anything is refused, and left as it was.
    let out = copy(&sqlite, &url);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
