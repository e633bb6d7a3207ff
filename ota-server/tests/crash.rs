//! `kill -9` of the server while uploads, releases and device reports are in flight, then a
//! restart: every acknowledged write is there, no blob is partial, no release is half made.

mod common;

use common::Backend;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, image};
use firmware::image::{SignedRelease, TrustedKey};
use serde_json::json;
use sha2::{Digest, Sha256};

fn acknowledged_writes_survive_kill_9(backend: Backend) {
    let mut server = Server::start_on(backend);
    let admin = server.admin.clone();
    // Images of a realistic size, prepared before the clock starts.
    let images: Vec<_> = (0..60).map(|i| image(&format!("1.{i}.0"))).collect();
    let acked_images = Mutex::new(Vec::new());
    let acked_releases = Mutex::new(Vec::new());
    // Devices that report a new outcome in every check-in; the last acknowledged one counts.
    let devices: Vec<(String, String)> = (0..6)
        .map(|i| format!("d-{i}"))
        .map(|id| (id.clone(), server.enroll(&id, "dev")))
        .collect();
    // Per device: the last acknowledged report, and the one in flight when the server died
    // (which may or may not have been written).
    let reported = Mutex::new(std::collections::HashMap::<String, (String, Option<String>)>::new());
    let mut next = 0;
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let batch = &images[next..next + 20];
        next += 20;
        let pid = server.child.as_ref().unwrap().id().to_string();
        std::thread::scope(|s| {
            {
                let (server, stop, devices, reported) =
                    (&server, stop.clone(), &devices, &reported);
                s.spawn(move || {
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let (id, token) = &devices[i % devices.len()];
                        // What a device changes between check-ins: the outcome of its last
                        // attempt (a claim to run an image it never installed is an anomaly).
                        let outcome = format!("round {round}, report {i}");
                        let body = serde_json::to_vec(&json!({"last_outcome": outcome})).unwrap();
                        reported.lock().unwrap().entry(id.clone()).or_default().1 =
                            Some(outcome.clone());
                        let Ok(r) = server.try_request(
                            "POST",
                            "/api/v1/device/checkin",
                            Some(token),
                            Some("application/json"),
                            Some(&body),
                            &[],
                        ) else {
                            return;
                        };
                        assert_eq!(r.status, 200);
                        reported.lock().unwrap().insert(id.clone(), (outcome, None));
                    }
                });
            }
            for worker in 0..3 {
                let (server, admin, stop) = (&server, &admin, stop.clone());
                let (acked_images, acked_releases) = (&acked_images, &acked_releases);
                s.spawn(move || {
                    for img in batch.iter().skip(worker).step_by(3) {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let Ok(r) = server.try_request(
                            "POST",
                            "/api/v1/images",
                            Some(admin),
                            Some("application/octet-stream"),
                            Some(&img.bytes),
                            &[],
                        ) else {
                            return;
                        };
                        assert!(r.status == 201 || r.status == 200, "{}", r.status);
                        acked_images.lock().unwrap().push(img.clone());
                        let body =
                            serde_json::to_vec(&json!({"image_id": img.id.to_string()})).unwrap();
                        let Ok(r) = server.try_request(
                            "POST",
                            "/api/v1/environments/dev/releases",
                            Some(admin),
                            Some("application/json"),
                            Some(&body),
                            &[],
                        ) else {
                            return;
                        };
                        if r.status == 201 {
                            let sequence = r.json()["sequence"].as_u64().unwrap();
                            acked_releases.lock().unwrap().push((sequence, img.id.to_string()));
                        }
                    }
                });
            }
            // Killed mid-flight, but only once this round has had a release acknowledged: on a
            // loaded machine a fixed delay may come before any write was answered.
            let before = acked_releases.lock().unwrap().len();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while acked_releases.lock().unwrap().len() == before
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(20 * round));
            let killed = std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();
            assert!(killed.success());
            stop.store(true, Ordering::Relaxed);
        });
        server.kill9();
        server.launch(&[]);
    }

    let acked_images = acked_images.into_inner().unwrap();
    let acked_releases = acked_releases.into_inner().unwrap();
    assert!(!acked_images.is_empty() && !acked_releases.is_empty(), "the kill came too early");
    // Every acknowledged image is there, byte for byte.
    for img in &acked_images {
        let id = img.id.to_string();
        let r = server.get(&format!("/api/v1/images/{id}/file"), &admin);
        assert_eq!(r.status, 200, "acknowledged image {id} lost");
        assert_eq!(r.body, img.bytes);
    }
    // Every blob is whole (named by its content's hash); no leftovers.
    for name in server.blob_files() {
        let bytes = std::fs::read(server.data().join("blobs").join(&name)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), name, "partial blob {name}");
    }
    // (A write the kill cut short may stay in blobs/tmp/ for an hour, under no blob's name.)
    // Every acknowledged release is there; the history has no gaps and every release carries a
    // statement that verifies for its image.
    let dev = server.get("/api/v1/environments/dev", &admin).json();
    let key: [u8; 32] =
        hex::decode(dev["release_public_key"].as_str().unwrap()).unwrap().try_into().unwrap();
    let key = TrustedKey::from_bytes(&key).unwrap();
    let history = server.get("/api/v1/environments/dev/releases", &admin).json();
    let history = history.as_array().unwrap();
    let sequences: Vec<u64> =
        history.iter().rev().map(|r| r["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, (1..=history.len() as u64).collect::<Vec<_>>());
    for r in history {
        let bytes = hex::decode(r["statement"].as_str().unwrap()).unwrap();
        let signed = SignedRelease::parse(&bytes).unwrap();
        signed.verify(&[key]).unwrap();
        assert_eq!(signed.statement().image_id().to_string(), r["image_id"].as_str().unwrap());
        assert_eq!(signed.statement().sequence(), r["sequence"].as_u64().unwrap());
    }
    for (sequence, id) in &acked_releases {
        let r = history.iter().find(|r| r["sequence"] == *sequence);
        assert_eq!(
            r.map(|r| r["image_id"].as_str().unwrap()),
            Some(id.as_str()),
            "release {sequence} lost"
        );
    }
    // Every device shows the last report it had acknowledged.
    let reported = reported.into_inner().unwrap();
    assert!(!reported.is_empty());
    for (id, (acked, in_flight)) in &reported {
        let d = server.get(&format!("/api/v1/devices/{id}"), &admin).json();
        let shown = d["device"]["last_outcome"].as_str().unwrap_or_default();
        assert!(
            shown == acked || in_flight.as_deref() == Some(shown),
            "device {id} shows {shown}, reported {acked} (then {in_flight:?})"
        );
    }
    // And the restarted server takes new work.
    let fresh = image("9.9.9");
    assert_eq!(server.upload(&admin, &fresh.bytes).status, 201);
    eprintln!(
        "{} images and {} releases acknowledged across 3 kills",
        acked_images.len(),
        acked_releases.len()
    );
}

both_backends!(acknowledged_writes_survive_kill_9);
