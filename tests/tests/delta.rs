//! Delta updates end to end: a real `ota-server` and fleets of simulated devices that announce
//! delta support and install patches with the device's own `Agent::begin_patch`, with power
//! cuts. v1 and v2 are a real release pair (tests/fixtures/delta: the 80 KiB-class sensor node
//! `big`, 1.0.0, and its 1.0.1 with a one-line fix, `big-fix`; patches of several segments, so
//! a patch cut short resumes from a checkpoint past its start). A test fleet and a prod fleet on v1 get v2 as patches the server
//! made once, downloading a small share of the full image; a device whose slot A is not what the
//! server believed refuses its patch (`WrongSource`), reports it and gets the full image; devices
//! whose patch arrives damaged refuse it and get the full image; every device ends on the image
//! id test confirmed, none bricked.

mod common;

use std::collections::BTreeMap;

use common::*;
use ota_proto::client::Client;
use ota_proto::{DeviceId, EventKind};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tests::fleet::{Fleet, Summary};

/// Fuses the micro:bit release-pair fixture `variant` as `version`.
fn fuse_variant(
    dir: &tempfile::TempDir,
    key: &str,
    variant: &str,
    version: &str,
) -> (String, String) {
    fuse_os(dir, key, &fixture(&format!("delta/microbit/{variant}.elf")), version, &[])
}

/// Runs `fleet` to the end; checks what every run must show: nothing bricked, no anomaly, no
/// error.
async fn run(fleet: &mut Fleet) -> Summary {
    let s = fleet.run().await.unwrap();
    assert_eq!(s.bricked, 0, "{s:?}");
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    assert_eq!(s.error_count, 0, "{:?}", s.errors);
    s
}

/// Bytes of images and patches the server has served (its `ota_download_bytes_total`).
async fn served(admin: &Client) -> u64 {
    let metrics = admin.metrics().await.unwrap();
    let line = metrics.lines().find_map(|l| l.strip_prefix("ota_download_bytes_total "));
    line.and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("{metrics}"))
}

/// What the server recorded of device `id`'s download of `image`: the detail of its first
/// `downloading` event.
async fn download_detail(admin: &Client, id: &str, image: &str) -> String {
    let detail = admin.device(&DeviceId::new(id).unwrap()).await.unwrap();
    let event = detail
        .events
        .iter()
        .find(|e| e.kind == EventKind::Downloading && e.image_id.to_string() == image);
    let event = event.unwrap_or_else(|| panic!("no download of {image} recorded: {detail:?}"));
    event.detail.clone().unwrap_or_default()
}

fn short(id: &str) -> &str {
    &id[..12]
}

async fn delta_rollout(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (server, keys) = Server::with_new_keys_on(&dir, backend);
    let admin = Client::new(&server.url, &server.token).unwrap();
    // v0 is v1's code under another version: what a device that reverted might still run.
    let (v0, v0_id) = fuse_variant(&dir, &keys.build, "big", "0.9.0");
    let (v1, v1_id) = fuse_variant(&dir, &keys.build, "big", "1.0.0");
    let (v2, v2_id) = fuse_variant(&dir, &keys.build, "big-fix", "1.0.1");
    for file in [&v0, &v1, &v2] {
        ok(Some(&server), &["push", file]);
    }
    let full = std::fs::metadata(&v2).unwrap().len();
    // The patch the server makes from v1 to v2 is the one `imager delta create` makes (the same
    // encoder and block size).
    let patch_file = path(&dir, "v1-v2.fwp");
    let created = ok(None, &["delta", "create", &v1, &v2, "--out", &patch_file, "--json"]);
    let created: Value = serde_json::from_str(&created).unwrap();
    let patch = created["patch_size"].as_u64().unwrap();
    assert!(patch * 10 < full, "a one-line fix: patch {patch} bytes, image {full}");

    let factory = std::fs::read(&v1).unwrap();
    let mut test =
        Fleet::enroll(fleet_options(&server, "test", 8, "qa", 0.3), &factory).await.unwrap();
    let mut prod =
        Fleet::enroll(fleet_options(&server, "prod", 30, "field", 0.5), &factory).await.unwrap();
    ok(Some(&server), &["release", "test", &v1_id]);
    assert_eq!(run(&mut test).await.offers, 0);
    ok(Some(&server), &["promote", &v1_id, "--to", "prod", "--key", &keys.prod]);
    assert_eq!(run(&mut prod).await.offers, 0);

    // 1. v2 to test, as patches. One device tells the server it runs v0 (a report from before
    // a revert, say): the patch it is offered is from v0, its slot A holds v1, so the agent
    // refuses it before writing anything; it reports that and is offered v2 whole.
    ok(Some(&server), &["release", "test", &v2_id]);
    test.devices()[0].stale_running = Some(v0_id.parse().unwrap());
    let s = run(&mut test).await;
    assert_eq!(s.running, BTreeMap::from([(v2_id.clone(), 8)]), "{s:?}");
    assert_eq!((s.confirmed, s.reverted, s.failed), (8, 0, 0), "{s:?}");
    assert_eq!((s.offers, s.patches, s.patches_failed), (9, 8, 1), "{s:?}");
    // The image once (a power cut may have made it resume), patches otherwise.
    assert!(s.downloaded_image_bytes >= full && s.downloaded_image_bytes < 2 * full, "{s:?}");
    assert!(s.downloaded_patch_bytes < 8 * 2 * patch + full, "{s:?}");
    let stale = download_detail(&admin, "qa-00000", &v2_id).await;
    assert!(stale.starts_with(&format!("patch from {}, ", short(&v0_id))), "{stale}");
    let detail = admin.device(&DeviceId::new("qa-00000").unwrap()).await.unwrap();
    assert_eq!(detail.device.failed_image, None, "a failed patch is not a failed image");

    // 2. Devices whose patch arrives damaged (a proxy inverts bytes near the end of the body)
    // refuse it once its check fails, report it, and get v2 whole.
    let proxy = corrupting_proxy(&server.url, "/api/v1/device/patches/", patch as usize - 32);
    let mut options = fleet_options(&server, "test", 4, "qa-damaged", 0.3);
    options.server = proxy;
    let mut damaged = Fleet::enroll(options, &factory).await.unwrap();
    let s = run(&mut damaged).await;
    assert_eq!(s.running, BTreeMap::from([(v2_id.clone(), 4)]), "{s:?}");
    assert_eq!((s.confirmed, s.failed), (4, 0), "{s:?}");
    assert_eq!((s.offers, s.patches, s.patches_failed), (8, 4, 4), "{s:?}");
    assert!(s.downloaded_image_bytes >= 4 * full, "{s:?}");

    // 3. Prod: every device takes v2 as the patch, with power cuts while it is applied, and
    // runs the very image test confirmed.
    ok(Some(&server), &["promote", &v2_id, "--to", "prod", "--key", &keys.prod]);
    let before = served(&admin).await;
    let s = run(&mut prod).await;
    let sent = served(&admin).await - before;
    eprintln!(
        "prod: 30 devices, image {full} bytes, patch {patch} bytes; {} bytes downloaded, {sent} \
         served ({:.1} % of 30 images), {} power cuts ({:?}), {} patch downloads resumed",
        s.downloaded_bytes,
        100.0 * sent as f64 / (30 * full) as f64,
        s.power_cuts,
        s.power_cuts_by_phase,
        s.resumed_patches
    );
    assert_eq!(s.running, BTreeMap::from([(v2_id.clone(), 30)]), "{s:?}");
    assert_eq!((s.confirmed, s.reverted, s.failed), (30, 0, 0), "{s:?}");
    assert_eq!((s.offers, s.patches, s.patches_failed), (30, 30, 0), "{s:?}");
    assert_eq!(s.downloaded_image_bytes, 0, "{s:?}");
    assert!(s.power_cuts_by_phase["download"] > 0, "no cut while a patch was applied: {s:?}");
    assert!(s.resumed_patches > 0, "no patch download resumed from a checkpoint: {s:?}");
    // Every device got the whole patch, a device cut short fetched the rest (at most again):
    // far below the images' bytes, on the devices' count and on the server's.
    assert!(s.downloaded_bytes >= 30 * patch && s.downloaded_bytes <= 2 * 30 * patch, "{s:?}");
    assert_eq!(sent, s.downloaded_bytes, "the server served what the devices downloaded");
    assert!(sent * 10 < 30 * full, "{sent} bytes served for 30 images of {full}");
    for i in [0, 7, 29] {
        let id = format!("field-{i:05}");
        let detail = download_detail(&admin, &id, &v2_id).await;
        assert_eq!(detail, format!("patch from {}, {patch} bytes", short(&v1_id)), "{id}");
    }
    let status = json(&server, &["status"]);
    let env = status.as_array().unwrap().iter().find(|e| e["name"] == "prod").unwrap();
    assert_eq!(env["current"][0]["image_id"], v2_id.as_str());
    assert_eq!(env["current"][0]["state"], "completed");

    // The server made each patch once, and keeps the one imager makes, byte for byte.
    let bytes = std::fs::read(&patch_file).unwrap();
    let name = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let blob = std::path::Path::new(server.data()).join("blobs").join(name);
    assert_eq!(std::fs::read(&blob).ok(), Some(bytes), "{}", blob.display());
    let log = std::fs::read_to_string(&server.replicas[0].log).unwrap();
    assert_eq!(log.matches("patch made").count(), 2, "v0 -> v2 and v1 -> v2, once each: {log}");
}

both_backends!(delta_rollout);

/// The `fleet-sim` command: devices take patches unless told not to (`--delta-ratio`), and the
/// summary counts bytes per transport.
#[test]
fn fleet_sim_command_takes_patches() {
    let dir = tempfile::tempdir().unwrap();
    let (server, keys) = Server::with_new_keys(&dir);
    let (v1, _) = fuse_variant(&dir, &keys.build, "base", "1.0.0");
    let (v2, v2_id) = fuse_variant(&dir, &keys.build, "fix", "1.0.1");
    for file in [&v1, &v2] {
        ok(Some(&server), &["push", file]);
    }
    ok(Some(&server), &["release", "dev", &v2_id]);
    let full = std::fs::metadata(&v2).unwrap().len();
    let sim = |prefix: &str, extra: &[&str]| {
        let out = std::process::Command::new(bin("fleet-sim"))
            .args(["--server", &server.url, "--token", &server.token, "--board", "microbit"])
            .args(["--environment", "dev", "--factory", &v1, "--devices", "20"])
            .args(["--prefix", prefix, "--power-cut-ratio", "0.3"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let summary = |prefix: &str, extra: &[&str]| -> Value {
        let s: Value = serde_json::from_str(&sim(prefix, &[extra, &["--json"]].concat())).unwrap();
        assert_eq!(s["running"][&v2_id], 20, "{s}");
        assert_eq!((s["bricked"].as_u64(), s["offers"].as_u64()), (Some(0), Some(20)), "{s}");
        s
    };
    let n = |s: &Value, k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k}: {s}"));

    // By default every device announces delta support and takes the patch.
    let s = summary("all", &[]);
    assert_eq!((n(&s, "patches"), n(&s, "downloaded_image_bytes")), (20, 0), "{s}");
    assert!(n(&s, "downloaded_patch_bytes") * 10 < 20 * full, "{s}");
    assert_eq!(n(&s, "downloaded_bytes"), n(&s, "downloaded_patch_bytes"), "{s}");
    // None does: full images only.
    let s = summary("none", &["--delta-ratio", "0"]);
    assert_eq!((n(&s, "patches"), n(&s, "downloaded_patch_bytes")), (0, 0), "{s}");
    assert!(n(&s, "downloaded_image_bytes") >= 20 * full, "{s}");
    // Some do; the text summary says how many and what each transport cost.
    let text = sim("some", &["--delta-ratio", "0.5"]);
    let patches = text
        .split_once(" offers (")
        .and_then(|(_, rest)| rest.split_once(" as patches")?.0.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((1..20).contains(&patches), "{text}");
    assert!(text.contains(" of images, ") && text.contains(" of patches; "), "{text}");

    let out = std::process::Command::new(bin("fleet-sim"))
        .args(["--server", &server.url, "--token", &server.token, "--board", "microbit"])
        .args(["--environment", "dev", "--factory", &v1, "--devices", "1"])
        .args(["--delta-ratio", "1.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
