//! `imager`'s server commands end to end: the real `imager` and `ota-server` binaries, a fresh
//! server on loopback, images fused from the firmware fixtures.

mod common;

use common::*;
use std::net::TcpListener;
use std::path::Path;

use serde_json::Value;

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|item| item[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {list:#}"))
}

#[test]
fn push_release_status_devices_promote_rollback_audit() {
    let dir = tempfile::tempdir().unwrap();
    let (build, build_pub) = keygen(&dir, "build");
    let (prod, prod_pub) = keygen(&dir, "prod");
    let (wrong, _) = keygen(&dir, "wrong");
    let (rogue, _) = keygen(&dir, "rogue");
    let (v1, id1) = fuse(&dir, &build, "1.0.0");
    let (v2, id2) = fuse(&dir, &build, "1.1.0");
    let (untrusted, _) = fuse(&dir, &rogue, "6.6.6");
    let server = Server::start(&dir, &build_pub, &prod_pub);
    let s = Some(&server);

    // push: new, then already there; --json is the stored image.
    let text = ok(s, &["push", &v1]);
    assert!(text.starts_with(&format!("image {id1}: new, stored\n")), "{text}");
    assert!(text.contains("board microbit, version 1.0.0"), "{text}");
    let text = ok(s, &["push", &v1]);
    assert!(text.starts_with(&format!("image {id1}: already stored")), "{text}");
    let info = json(&server, &["push", &v1]);
    assert_eq!((info["id"].as_str(), info["board"].as_str()), (Some(&*id1), Some("microbit")));
    assert_eq!(info["version"], "1.0.0");
    ok(s, &["push", &v2]);

    // Broken files: refused with one clear line.
    let bytes = std::fs::read(&v1).unwrap();
    let truncated = path(&dir, "truncated.fwi");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails(s, &["push", &truncated]);
    // A byte of the build signature: the file still parses, the server refuses it.
    let summary: Value = serde_json::from_str(&ok(None, &["inspect", &v1, "--json"])).unwrap();
    let in_signature = summary["header_size"].as_u64().unwrap() as usize - 10;
    let mut flipped = bytes.clone();
    flipped[in_signature] ^= 0x55;
    let flipped_path = path(&dir, "flipped.fwi");
    std::fs::write(&flipped_path, &flipped).unwrap();
    let err = fails(s, &["push", &flipped_path]);
    assert!(err.contains(", HTTP 4"), "{err}");
    let err = fails(s, &["push", &path(&dir, "missing.fwi")]);
    assert!(err.contains("missing.fwi"), "{err}");
    // Signed by a key the server does not trust: the server's own error, code and status.
    let err = fails(s, &["push", &untrusted]);
    assert!(err.contains(", HTTP 4") && err.trim_end().ends_with(')'), "{err}");

    let images = ok(s, &["images"]);
    assert!(images.contains(&id1[..12]) && images.contains(&id2[..12]), "{images}");

    // release to dev (the server holds dev's key), by a unique id prefix.
    let text = ok(s, &["release", "dev", &id1[..12]]);
    assert!(text.starts_with("dev release ") && text.contains(&id1), "{text}");
    let release = json(&server, &["release", "dev", &id2]);
    assert_eq!(
        (release["environment"].as_str(), release["kind"].as_str()),
        (Some("dev"), Some("release"))
    );
    let text = fails(s, &["release", "dev", "00000000"]);
    assert!(text.contains("no image on the ota-server has an id starting with 00000000"), "{text}");

    // status, text and JSON.
    let status = ok(s, &["status"]);
    let row = status.lines().find(|l| l.starts_with("dev ")).unwrap_or_else(|| panic!("{status}"));
    assert!(row.contains("microbit") && row.contains(&id2[..12]) && row.contains("1.1.0"), "{row}");
    for env in ["test", "prod"] {
        assert!(
            status.lines().any(|l| l.starts_with(env) && l.contains("(no release)")),
            "{status}"
        );
    }
    let envs = json(&server, &["status"]);
    let dev = find(&envs, "name", "dev");
    assert_eq!(dev["current"][0]["image_id"], id2.as_str());
    assert_eq!(dev["server_holds_key"], true);
    assert_eq!(find(&envs, "name", "prod")["server_holds_key"], false);
    let only_dev = json(&server, &["status", "--env", "dev"]);
    assert_eq!(only_dev.as_array().unwrap().len(), 1);

    // Devices.
    let text = ok(s, &["device", "add", "dev-001", "--board", "microbit", "--env", "dev"]);
    let token =
        text.lines().find_map(|l| l.strip_prefix("token: ")).unwrap_or_else(|| panic!("{text}"));
    assert!(!token.trim().is_empty());
    let created =
        json(&server, &["device", "add", "dev-002", "--board", "microbit", "--env", "dev"]);
    assert_eq!(created["device"]["id"], "dev-002");
    assert!(created["token"].as_str().is_some_and(|t| !t.is_empty() && t != token));
    let devices = json(&server, &["devices"]);
    for id in ["dev-001", "dev-002"] {
        assert_eq!(find(&devices, "id", id)["environment"], "dev");
    }
    let unseen = json(&server, &["devices", "--env", "dev", "--state", "unseen"]);
    assert_eq!(unseen.as_array().unwrap().len(), 2, "{unseen:#}");
    let running = json(&server, &["devices", "--image", &id1[..10]]);
    assert_eq!(running.as_array().unwrap().len(), 0, "{running:#}");
    let table = ok(s, &["devices", "--env", "dev"]);
    assert!(
        table.starts_with("DEVICE") && table.contains("dev-001") && table.contains("never"),
        "{table}"
    );
    assert!(ok(s, &["device", "show", "dev-001"]).contains("dev-001"));
    let err = fails(s, &["device", "show", "nobody"]);
    assert!(err.contains(", HTTP 404)"), "{err}");

    // Promotion to prod: the wrong key is refused here; the right one meets the gate.
    let err = fails(s, &["promote", &id2, "--to", "prod", "--key", &wrong]);
    assert!(err.contains("is not the release key of environment prod"), "{err}");
    let err = fails(s, &["promote", &id2, "--to", "prod", "--key", &prod]);
    assert!(err.contains("(gate_closed, HTTP 409)"), "{err}");

    // Pause, resume, roll back (the server signs for dev).
    let text = ok(s, &["pause", "--env", "dev"]);
    assert!(text.contains(", paused,"), "{text}");
    let text = ok(s, &["resume", "--env", "dev", "--board", "microbit"]);
    assert!(!text.contains(", paused,"), "{text}");
    let text = ok(s, &["rollback", "--env", "dev"]);
    assert!(text.starts_with("dev rollback ") && text.contains(&id1), "{text}");
    let dev = json(&server, &["status", "--env", "dev"]);
    assert_eq!(dev[0]["current"][0]["image_id"], id1.as_str());

    // The audit log names every action.
    let audit = ok(s, &["audit"]);
    for action in [
        "image.upload",
        "release.create",
        "device.create",
        "release.pause",
        "release.resume",
        "release.rollback",
    ] {
        assert!(audit.contains(action), "{action} missing:\n{audit}");
    }
    assert!(audit.starts_with("WHEN") && audit.contains("dev-001"), "{audit}");
    let last_two = json(&server, &["audit", "--limit", "2"]);
    assert_eq!(last_two.as_array().unwrap().len(), 2);
    assert_eq!(last_two[0]["action"], "release.rollback");

    // A token the server does not know.
    let err = fails(None, &["status", "--server", &server.url, "--token", "not-a-token"]);
    assert!(err.contains(", HTTP 401)"), "{err}");
}

#[test]
fn a_missing_server_or_token_is_a_usage_error() {
    for (args, named) in [
        (&["status", "--token", "t"][..], ["--server", "IMAGER_SERVER"]),
        (&["status", "--server", "http://127.0.0.1:1"][..], ["--token", "IMAGER_TOKEN"]),
        (&["push", "x.fwi"][..], ["--server", "IMAGER_SERVER"]),
    ] {
        let out = imager(None, args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        for name in named {
            assert!(stderr.contains(name), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn an_unreachable_server_is_named() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let err = fails(None, &["status", "--server", &url, "--token", "t"]);
    assert!(err.starts_with(&format!("error: cannot reach the ota-server at {url}: ")), "{err}");
    let err = fails(None, &["audit", "--server", "https://127.0.0.1:1", "--token", "t"]);
    assert!(err.contains("plain HTTP"), "{err}");
}

/// The devices enrolled on `server`, by id.
fn enrolled(server: &Server) -> Vec<String> {
    let devices = json(server, &["devices"]);
    devices.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn device_add_from_csv_enrolls_all_or_none_and_keeps_the_tokens_private() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = Server::with_new_keys(&dir);
    let s = Some(&server);
    let write = |name: &str, text: &str| {
        let file = path(&dir, name);
        std::fs::write(&file, text).unwrap();
        file
    };

    // A good list: every device enrolled, the tokens in a new file only its owner reads.
    let good = write(
        "line-1.csv",
        "id,board,environment\n# the test bench\nqa-1,microbit,test\nqa-2,microbit,test\n\nfield-1,nrf52840dk,prod\n",
    );
    let tokens = path(&dir, "tokens.csv");
    let out = ok(s, &["device", "add", "--from-csv", &good, "--out", &tokens]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!("enrolled 3 devices from {good}; their tokens are in {tokens}")),
        "{out}"
    );
    let written = std::fs::read_to_string(&tokens).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines[0], "id,token");
    let pairs: Vec<(&str, &str)> = lines[1..].iter().map(|l| l.split_once(',').unwrap()).collect();
    let ids: Vec<&str> = pairs.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, ["qa-1", "qa-2", "field-1"]);
    for (_, token) in &pairs {
        assert!(token.starts_with("fwd_") && !out.contains(token), "{token}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&tokens).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Each token is its device's: it checks in as that device.
    let client = ota_proto::client::Client::new(&server.url, pairs[2].1).unwrap();
    let api = ota_proto::client::Blocking::new(client).unwrap();
    let nothing_yet = ota_proto::CheckIn::default();
    api.run(|c| c.checkin(&nothing_yet)).unwrap();
    let field = json(&server, &["device", "show", "field-1"]);
    assert_eq!(
        (field["device"]["board"].as_str(), field["device"]["environment"].as_str()),
        (Some("nrf52840dk"), Some("prod"))
    );
    assert!(field["device"]["last_seen"].is_string(), "{field:#}");
    let before = enrolled(&server);
    assert_eq!(before.len(), 3);

    // An existing --out: refused before anything is sent; the file is left as it was.
    let more = write("more.csv", "qa-3,microbit,test\n");
    let err = fails(s, &["device", "add", "--from-csv", &more, "--out", &tokens]);
    assert!(err.contains(&format!("{tokens} exists")), "{err}");
    assert_eq!(std::fs::read_to_string(&tokens).unwrap(), written);
    assert_eq!(enrolled(&server), before);

    // A board the server does not know, on line 5: nothing enrolled, the line named.
    let new_tokens = path(&dir, "new-tokens.csv");
    let unknown = write(
        "unknown.csv",
        "id,board,environment\nqa-3,microbit,test\nqa-4,microbit,test\n# next: a typo\nqa-5,mircobit,test\nqa-6,microbit,test\n",
    );
    let err = fails(s, &["device", "add", "--from-csv", &unknown, "--out", &new_tokens]);
    assert!(
        err.starts_with(&format!("error: {unknown} line 5: the ota-server refused device qa-5: ")),
        "{err}"
    );
    assert!(err.contains("mircobit") && err.contains("nothing was enrolled"), "{err}");
    // A device enrolled already, on line 2.
    let again = write("again.csv", "qa-7,microbit,test\nqa-1,microbit,test\n");
    let err = fails(s, &["device", "add", "--from-csv", &again, "--out", &new_tokens]);
    assert!(
        err.starts_with(&format!("error: {again} line 2: the ota-server refused device qa-1: ")),
        "{err}"
    );
    assert!(err.contains("(exists, HTTP 409)"), "{err}");
    // An id twice in the file, and a bad name: refused here, naming the lines.
    let twice = write("twice.csv", "qa-8,microbit,test\nqa-9,microbit,test\nqa-8,microbit,prod\n");
    let err = fails(s, &["device", "add", "--from-csv", &twice, "--out", &new_tokens]);
    assert_eq!(err.trim_end(), format!("error: {twice} line 3: device qa-8 is already on line 1"));
    let bad = write("bad.csv", "qa-10,microbit,test\nqa-11,microbit,Test\n");
    let err = fails(s, &["device", "add", "--from-csv", &bad, "--out", &new_tokens]);
    assert!(err.starts_with(&format!("error: {bad} line 2: environment name \"Test\"")), "{err}");
    assert_eq!(enrolled(&server), before, "nothing was enrolled by the refused lists");
    assert!(!Path::new(&new_tokens).exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(".imager-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Usage: a list needs --out; one device needs its board and environment.
    for args in [
        &["device", "add", "--from-csv", &good][..],
        &["device", "add", "qa-12", "--board", "microbit"][..],
        &[
            "device",
            "add",
            "qa-12",
            "--board",
            "microbit",
            "--env",
            "test",
            "--from-csv",
            &good,
            "--out",
            &new_tokens,
        ][..],
    ] {
        let out = imager(s, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let help = ok(None, &["device", "add", "--help"]);
    assert!(help.contains("--from-csv <FILE>") && help.contains("id,board,environment"), "{help}");
}
