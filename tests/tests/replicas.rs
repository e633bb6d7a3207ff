//! The pipeline on three `ota-server` replicas that behave as one: one PostgreSQL database, one
//! S3 bucket (a real Garage node), fleet-sim spreading every device's requests over the
//! replicas. Test fleet, promotion with the prod key, staged prod rollout with power cuts during
//! which one replica is killed with SIGKILL (and started again later), an unhealthy image halted
//! and refused for prod, rollback: every prod device ends on the very image test confirmed,
//! none bricked, every stage advanced once, every act in the audit log once.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tests::fleet::device::Behaviour;
use tests::fleet::{Fleet, Options, Summary};

/// Fewer devices at a time than the pipeline's, so that the rollout is still going when a
/// replica dies.
fn options(server: &Server, env: &str, devices: usize, prefix: &str, cuts: f64) -> Options {
    Options {
        max_idle_rounds: 100,
        concurrency: 16,
        seed: 5,
        ..fleet_options(server, env, devices, prefix, cuts)
    }
}

fn clean(s: &Summary) {
    assert_eq!(s.bricked, 0, "{s:?}");
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    assert_eq!(s.error_count, 0, "{:?}", s.errors);
}

/// The audit log, oldest first.
async fn audit(server: &Server) -> Vec<Value> {
    let client = ota_proto::client::Client::new(&server.url, &server.token).unwrap();
    let entries = client.audit(None, Some(1000)).await.unwrap();
    entries.into_iter().rev().map(|e| serde_json::to_value(e).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_as_one_through_a_staged_rollout_and_a_lost_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (build, build_pub) = keygen(&dir, "build");
    let (prod_key, prod_pub) = keygen(&dir, "prod");
    let server = Server::cluster(&dir, &build_pub, &prod_pub, 3);
    let (v1, v1_id) = fuse(&dir, &build, "1.0.0");
    let (v2, v2_id) = fuse(&dir, &build, "2.0.0");
    let (v3, v3_id) = fuse(&dir, &build, "3.0.0");
    for file in [&v1, &v2, &v3] {
        ok(Some(&server), &["push", file]);
    }
    let factory = std::fs::read(&v1).unwrap();
    let mut test = Fleet::enroll(options(&server, "test", 10, "qa", 0.0), &factory).await.unwrap();
    let mut prod =
        Fleet::enroll(options(&server, "prod", 60, "field", 0.3), &factory).await.unwrap();
    ok(Some(&server), &["release", "test", &v1_id]);
    clean(&test.run().await.unwrap());
    ok(Some(&server), &["promote", &v1_id, "--to", "prod", "--key", &prod_key]);
    clean(&prod.run().await.unwrap());

    // v2 through test, then to prod in stages while replica 2 is killed and, later, started
    // again; the rollout goes on through the others.
    ok(Some(&server), &["release", "test", &v2_id]);
    let s = test.run().await.unwrap();
    clean(&s);
    assert_eq!(s.running, BTreeMap::from([(v2_id.clone(), 10)]), "{s:?}");
    ok(Some(&server), &["promote", &v2_id, "--to", "prod", "--key", &prod_key]);
    let watcher = admin(&server);
    let server = Arc::new(Mutex::new(server));
    let chaos = {
        let server = server.clone();
        std::thread::spawn(move || {
            // Once the first stage is done, mid-rollout.
            let prod = "prod".parse().unwrap();
            let at_kill = loop {
                let release = watcher.run(|c| c.release(&prod, 2)).unwrap();
                if release.stage >= 1 {
                    break release;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            server.lock().unwrap().kill_replica(1);
            std::thread::sleep(Duration::from_secs(2));
            server.lock().unwrap().restart_replica(1);
            at_kill
        })
    };
    let s = prod.run().await.unwrap();
    let at_kill = chaos.join().unwrap();
    assert_eq!(
        at_kill.state,
        ota_proto::RolloutState::Rolling,
        "the replica died mid-rollout: {at_kill:?}"
    );
    clean(&s);
    assert_eq!(
        s.running,
        BTreeMap::from([(v2_id.clone(), 60)]),
        "prod runs what test confirmed: {s:?}"
    );
    assert_eq!(s.confirmed, 60, "{s:?}");
    let server = Arc::try_unwrap(server).ok().unwrap().into_inner().unwrap();

    // v3 is unhealthy: test reverts it, the rollout halts, prod refuses it.
    test.set_behaviour(Behaviour { fail_ratio: 1.0, ..Behaviour::default() });
    ok(Some(&server), &["release", "test", &v3_id]);
    let s = test.run().await.unwrap();
    assert_eq!(s.running, BTreeMap::from([(v2_id.clone(), 10)]), "{s:?}");
    let refused = fails(Some(&server), &["promote", &v3_id, "--to", "prod", "--key", &prod_key]);
    assert!(refused.contains("gate_closed") && refused.contains("halted in test"), "{refused}");

    // Rollback of prod: every device back on v1.
    ok(Some(&server), &["rollback", "--env", "prod", "--key", &prod_key]);
    let s = prod.run().await.unwrap();
    clean(&s);
    assert_eq!(s.running, BTreeMap::from([(v1_id.clone(), 60)]), "{s:?}");

    // Every act once; prod's staged rollout of v2 advanced through each stage once.
    let log = audit(&server).await;
    let count = |action: &str, target: &str| {
        log.iter().filter(|e| e["action"] == action && e["target"] == target).count()
    };
    assert_eq!(count("release.create", "prod/2"), 1);
    assert_eq!(count("release.rollback", "prod/3"), 1);
    assert_eq!(count("release.create", "test/3"), 1);
    let moves: Vec<(String, u64)> = log
        .iter()
        .filter(|e| {
            e["target"] == "prod/2" && e["action"].as_str().unwrap().starts_with("rollout.")
        })
        .map(|e| {
            (e["action"].as_str().unwrap().to_owned(), e["detail"]["to"]["stage"].as_u64().unwrap())
        })
        .collect();
    let expected = [("rollout.advance", 1), ("rollout.advance", 2), ("rollout.complete", 2)];
    assert_eq!(moves, expected.map(|(a, s)| (a.to_owned(), s)).to_vec(), "{log:#?}");
    let halts =
        log.iter().filter(|e| e["target"] == "test/3" && e["action"] == "rollout.halt").count();
    assert_eq!(halts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_the_object_store_restarting_mid_rollout_are_ridden_out() {
    let (garage, pg) = (
        testkit::garage::Garage::start(),
        testkit::pg::Postgres::start(testkit::pg::Options { fast: true }),
    );
    let dir = tempfile::tempdir().unwrap();
    let (build, build_pub) = keygen(&dir, "build");
    let (_, prod_pub) = keygen(&dir, "prod");
    let server = Server::cluster_on(&dir, &build_pub, &prod_pub, 3, &garage, &pg);
    let (v1, _) = fuse(&dir, &build, "1.0.0");
    let (v2, v2_id) = fuse(&dir, &build, "2.0.0");
    ok(Some(&server), &["push", &v2]);
    let factory = std::fs::read(&v1).unwrap();
    let mut dev = Fleet::enroll(options(&server, "dev", 40, "lab", 0.2), &factory).await.unwrap();
    ok(Some(&server), &["release", "dev", &v2_id]);
    let replica = ota_proto::client::Client::anonymous(&server.replicas[2].url).unwrap();
    let replica = ota_proto::client::Blocking::new(replica).unwrap();
    let chaos = std::thread::spawn(move || {
        let check = |what: &str| {
            // While it is down, the replica says it is not ready, with a JSON error.
            let r = replica
                .run(|c| c.raw(ota_proto::client::Method::GET, "/readyz", None, &[]))
                .unwrap();
            assert!(r.status == 503 || r.status == 200, "{what}: /readyz answered {}", r.status);
            if r.status == 503 {
                assert!(!r.code().is_empty(), "{what}: {:?}", r.body);
            }
            r.status.to_string()
        };
        std::thread::sleep(Duration::from_millis(700));
        pg.kill();
        std::thread::sleep(Duration::from_millis(300));
        let during_pg = check("PostgreSQL down");
        std::thread::sleep(Duration::from_millis(1200));
        pg.start_again();
        std::thread::sleep(Duration::from_millis(700));
        garage.kill();
        std::thread::sleep(Duration::from_millis(300));
        let during_garage = check("Garage down");
        std::thread::sleep(Duration::from_millis(1200));
        garage.start_again();
        (during_pg, during_garage, pg, garage)
    });
    let s = dev.run().await.unwrap();
    let (during_pg, during_garage, _pg, _garage) = chaos.join().unwrap();
    assert_eq!((during_pg.as_str(), during_garage.as_str()), ("503", "503"));
    clean(&s);
    assert_eq!(s.running, BTreeMap::from([(v2_id.clone(), 40)]), "{s:?}");
    assert!(s.retries > 0, "the outages were noticed: {s:?}");
}
