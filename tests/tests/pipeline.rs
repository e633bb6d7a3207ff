//! The whole pipeline as one system: real `imager` and `ota-server` processes, and fleets of
//! simulated devices that run the real `firmware` boot logic and update agent on simulated
//! flash. v2 goes through test to prod in stages; v3 fails in test and never reaches prod; prod
//! rolls back to v1 where the security counter allows it. Once without and once with power
//! cuts: no device is ever bricked.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tests::fleet::client::Client;
use tests::fleet::device::Behaviour;
use tests::fleet::{Fleet, Options, Summary};

fn options(server: &Server, env: &str, devices: usize, prefix: &str, cuts: f64) -> Options {
    Options {
        server: server.url.clone(),
        token: server.token.clone(),
        devices,
        board: "microbit".into(),
        environment: env.into(),
        prefix: prefix.into(),
        behaviour: Behaviour { fail_ratio: 0.0, power_cut_ratio: cuts },
        checkin_interval: Duration::from_millis(20),
        max_idle_rounds: 50,
        concurrency: 64,
        seed: 7,
        verbose: false,
    }
}

fn running(summary: &Summary) -> BTreeMap<String, usize> {
    summary.running.clone()
}

fn current(server: &Server, env: &str) -> Value {
    let envs = json(server, &["status"]);
    let env = envs.as_array().unwrap().iter().find(|e| e["name"] == env).unwrap().clone();
    env["current"][0].clone()
}

async fn pipeline(cuts: f64) {
    let mut survived = 0;
    let dir = tempfile::tempdir().unwrap();
    let (build, build_pub) = keygen(&dir, "build");
    let (prod_key, prod_pub) = keygen(&dir, "prod");
    let server = Server::start(&dir, &build_pub, &prod_pub);
    let (v1, v1_id) = fuse(&dir, &build, "1.0.0");
    let (v2, v2_id) = fuse(&dir, &build, "2.0.0");
    let (v3, v3_id) = fuse(&dir, &build, "3.0.0");
    for file in [&v1, &v2, &v3] {
        ok(Some(&server), &["push", file]);
    }
    let factory = std::fs::read(&v1).unwrap();
    // Both fleets come from the factory with v1, which is also what test and prod release
    // today: nothing to download.
    let mut test = Fleet::enroll(options(&server, "test", 12, "qa", cuts), &factory).await.unwrap();
    let mut prod =
        Fleet::enroll(options(&server, "prod", 60, "field", cuts), &factory).await.unwrap();
    ok(Some(&server), &["release", "test", &v1_id]);
    assert_eq!(test.run().await.unwrap().offers, 0);
    ok(Some(&server), &["promote", &v1_id, "--to", "prod", "--key", &prod_key]);
    assert_eq!(prod.run().await.unwrap().offers, 0);
    assert_eq!(current(&server, "prod")["state"], "completed");

    // 1. v2: test confirms it, prod gets it in stages, the very same image id.
    ok(Some(&server), &["release", "test", &v2_id]);
    let s = test.run().await.unwrap();
    survived += s.power_cuts;
    assert_eq!(running(&s), BTreeMap::from([(v2_id.clone(), 12)]), "{s:?}");
    assert_eq!((s.confirmed, s.bricked), (12, 0), "{s:?}");
    ok(Some(&server), &["promote", &v2_id, "--to", "prod", "--key", &prod_key]);
    assert_eq!(current(&server, "prod")["stage"], 0);
    let s = prod.run().await.unwrap();
    survived += s.power_cuts;
    assert_eq!(running(&s), BTreeMap::from([(v2_id.clone(), 60)]), "{s:?}");
    assert_eq!((s.confirmed, s.bricked), (60, 0), "{s:?}");
    assert!(s.rounds >= 4, "one round per stage at least: {s:?}");
    let release = current(&server, "prod");
    assert_eq!(
        (release["state"].as_str(), release["stage"].as_u64()),
        (Some("completed"), Some(2))
    );
    assert_eq!(release["image_id"], v2_id, "prod runs the image test ran");

    // 2. v3 is unhealthy: test reverts it, the rollout halts, prod never sees it.
    test.set_behaviour(Behaviour { fail_ratio: 1.0, power_cut_ratio: cuts });
    ok(Some(&server), &["release", "test", &v3_id]);
    let s = test.run().await.unwrap();
    survived += s.power_cuts;
    assert_eq!(running(&s), BTreeMap::from([(v2_id.clone(), 12)]), "{s:?}");
    assert!(s.reverted >= 3 && s.confirmed == 0 && s.bricked == 0, "{s:?}");
    let release = current(&server, "test");
    assert_eq!(release["state"], "halted", "{release}");
    let s = prod.run().await.unwrap();
    survived += s.power_cuts;
    assert_eq!((s.offers, running(&s)), (0, BTreeMap::from([(v2_id.clone(), 60)])));
    let refused = fails(Some(&server), &["promote", &v3_id, "--to", "prod", "--key", &prod_key]);
    assert!(refused.contains("gate_closed") && refused.contains("halted in test"), "{refused}");

    // 3. Roll prod back to v1. Every other device stored a higher security counter (a security
    // fix it took meanwhile): those refuse v1 and say why; the rest go back.
    for d in prod.devices().iter_mut().step_by(2) {
        let status = d.device.status().unwrap();
        d.device.set_counters(1, status.release_sequence).unwrap();
    }
    // Half the fleet refusing is expected here: let the rollout go on through it.
    let client = Client::new(&server.url).unwrap();
    let r = client
        .send(
            hyper::Method::PATCH,
            "/api/v1/environments/prod",
            &server.token,
            Some((
                "application/json",
                serde_json::to_vec(&json!({"failure_threshold": 0.9})).unwrap().into(),
            )),
            None,
        )
        .await
        .unwrap();
    assert!(r.status.is_success(), "{}", r.error());
    ok(Some(&server), &["rollback", "--env", "prod", "--key", &prod_key]);
    let s = prod.run().await.unwrap();
    survived += s.power_cuts;
    assert_eq!(running(&s), BTreeMap::from([(v1_id.clone(), 30), (v2_id.clone(), 30)]), "{s:?}");
    assert_eq!((s.confirmed, s.failed, s.bricked), (30, 30, 0), "{s:?}");
    for (i, d) in prod.devices().iter_mut().enumerate() {
        let expected = if i % 2 == 0 { &v2_id } else { &v1_id };
        assert_eq!(&d.running().unwrap().to_string(), expected, "device {}", d.id);
    }
    // The server saw both: the refusals with their reason.
    let refused = json(&server, &["devices", "--env", "prod", "--state", "failed"]);
    assert_eq!(refused.as_array().unwrap().len(), 30);
    let detail = json(&server, &["device", "show", "field-00000"]);
    let reasons: Vec<&str> =
        detail["events"].as_array().unwrap().iter().filter_map(|e| e["detail"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("security counter")), "{reasons:?}");
    let current = json(&server, &["devices", "--env", "prod", "--state", "current"]);
    assert_eq!(current.as_array().unwrap().len(), 30);
    eprintln!("power cuts survived: {survived}");
    assert_eq!(survived > 0, cuts > 0.0, "{survived} power cuts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_to_prod_failures_and_rollback() {
    pipeline(0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_power_cuts() {
    pipeline(0.4).await;
}

/// The `fleet-sim` command: JSON summary, taking over its enrollment on a second run, refusals.
#[test]
fn fleet_sim_command() {
    let dir = tempfile::tempdir().unwrap();
    let (build, build_pub) = keygen(&dir, "build");
    let (_, prod_pub) = keygen(&dir, "prod");
    let server = Server::start(&dir, &build_pub, &prod_pub);
    let (v1, _) = fuse(&dir, &build, "1.0.0");
    let (v2, v2_id) = fuse(&dir, &build, "2.0.0");
    ok(Some(&server), &["push", &v2]);
    ok(Some(&server), &["release", "dev", &v2_id]);
    let sim = |extra: &[&str]| {
        let mut c = std::process::Command::new(bin("fleet-sim"));
        c.args(["--server", &server.url, "--token", &server.token, "--board", "microbit"])
            .args(["--environment", "dev", "--factory", &v1, "--devices", "25"])
            .args(extra);
        c.output().unwrap()
    };
    let mut reverted_first = 0;
    for run in 0..2 {
        let out = sim(&["--json", "--fail-ratio", "0.2", "--power-cut-ratio", "0.5"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((s["devices"].as_u64(), s["bricked"].as_u64()), (Some(25), Some(0)), "{s}");
        let n = |k: &str| s[k].as_u64().unwrap();
        let on_v2 = s["running"][&v2_id].as_u64().unwrap_or(0);
        if run == 0 {
            // Everyone got the offer; the unhealthy share reverted it.
            assert_eq!(n("offers"), 25, "{s}");
            assert_eq!(n("confirmed") + n("reverted"), 25, "{s}");
            assert!(n("reverted") > 0, "{s}");
            assert_eq!(on_v2, n("confirmed"));
            reverted_first = n("reverted");
        } else {
            // The same devices (new tokens, factory v1 again): those that reverted v2 are not
            // offered it again; the others take it again.
            assert_eq!((n("offers"), n("reverted")), (25 - reverted_first, 0), "{s}");
        }
    }
    let devices = json(&server, &["devices", "--env", "dev"]);
    assert_eq!(devices.as_array().unwrap().len(), 25, "the second run took the enrollments over");
    let out = sim(&["--fail-ratio", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(bin("fleet-sim"))
        .args(["--server", "http://127.0.0.1:9", "--token", "x", "--board", "microbit"])
        .args(["--environment", "dev", "--factory", &v1, "--devices", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the ota-server"));
}
