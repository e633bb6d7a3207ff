//! A fleet rides out a server outage: the real `ota-server` is killed with SIGKILL (as
//! `kill -9` or a crash would) and restarted on the same data folder while simulated devices
//! update, and every device still ends on the released image, none bricked, with the retries
//! counted; an outage longer than the limit ends the run with an error that says so.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use ota_proto::client::Client;
use ota_proto::{DeviceFilter, DeviceState};
use tests::fleet::device::Behaviour;
use tests::fleet::{Fleet, Options};

fn options(server: &Server, devices: usize, outage_limit: Duration) -> Options {
    Options {
        server: server.url.clone(),
        token: server.token.clone(),
        devices,
        board: "microbit".parse().unwrap(),
        environment: "dev".parse().unwrap(),
        prefix: "outage".into(),
        behaviour: Behaviour { power_cut_ratio: 0.3, ..Behaviour::default() },
        checkin_interval: Duration::from_millis(20),
        max_idle_rounds: 50,
        // Few at a time, so that the run is still going when the server is killed mid-way.
        concurrency: 2,
        seed: 11,
        verbose: false,
        outage_limit,
    }
}

/// Devices of the fleet that confirmed the release (the server's view).
async fn current(admin: &Client) -> usize {
    let filter = DeviceFilter {
        environment: Some("dev".parse().unwrap()),
        state: Some(DeviceState::Current),
        ..DeviceFilter::default()
    };
    admin.devices(&filter).await.map_or(0, |d| d.len())
}

async fn a_fleet_rides_out_the_server_killed_and_restarted(backend: Backend) {
    const DEVICES: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, keys) = Server::with_new_keys_on(&dir, backend);
    let (v1, _) = fuse(&dir, &keys.build, "1.0.0");
    let (v2, v2_id) = fuse(&dir, &keys.build, "2.0.0");
    ok(Some(&server), &["push", &v2]);
    let factory = std::fs::read(&v1).unwrap();
    let mut fleet =
        Fleet::enroll(options(&server, DEVICES, Duration::from_secs(60)), &factory).await.unwrap();
    ok(Some(&server), &["release", "dev", &v2_id]);
    let admin = Client::new(&server.url, &server.token).unwrap();

    // 1. The server is down when the run starts: every device's first check-in fails, and the
    //    devices keep trying until it is back.
    server.kill();
    let run = tokio::spawn(async move { fleet.run().await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| server.restart());

    // 2. Killed again in the middle of the rollout, some devices updated and some not.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut updated = current(&admin).await;
    while updated == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        updated = current(&admin).await;
    }
    server.kill();
    assert!(
        (1..DEVICES).contains(&updated),
        "the second kill should land mid-rollout: {updated} of {DEVICES} devices had updated"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    tokio::task::block_in_place(|| server.restart());

    let summary = run.await.unwrap().unwrap_or_else(|e| panic!("the run failed: {e:#}"));
    assert_eq!(summary.running, BTreeMap::from([(v2_id.clone(), DEVICES)]), "{summary:?}");
    assert_eq!((summary.bricked, summary.confirmed), (0, DEVICES as u64), "{summary:?}");
    assert!(summary.anomalies.is_empty() && summary.error_count == 0, "{summary:?}");
    // At least each device in flight when the server went away retried.
    assert!(summary.retries >= 2, "{summary:?}");
    assert_eq!(current(&admin).await, DEVICES, "the server sees every device current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_limit_ends_the_run_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, keys) = Server::with_new_keys(&dir);
    let (v1, _) = fuse(&dir, &keys.build, "1.0.0");
    let factory = std::fs::read(&v1).unwrap();
    let limit = Duration::from_secs(2);
    let mut fleet = Fleet::enroll(options(&server, 6, limit), &factory).await.unwrap();
    server.kill();
    let started = Instant::now();
    let err = fleet.run().await.unwrap_err();
    let took = started.elapsed();
    let text = format!("{err:#}");
    assert!(took >= limit && took < limit * 5, "gave up after {took:?}: {text}");
    assert!(text.starts_with("device outage-"), "{text}");
    assert!(
        text.contains("check-in: gave up after 2.")
            && text.contains("(the outage limit, --outage-limit)"),
        "{text}"
    );
    assert!(text.contains(&format!("cannot reach the ota-server at {}", server.url)), "{text}");
    // The devices are all still there, and none started an update.
    assert_eq!(fleet.devices().len(), 6);
}

both_backends!(a_fleet_rides_out_the_server_killed_and_restarted);
