//! The whole pipeline as one system: real `imager` and `ota-server` processes, and fleets of
//! simulated devices that run the real `firmware` boot logic and update agent on simulated
//! flash. v2 goes through test to prod in stages; v3 fails in test and never reaches prod; prod
//! rolls back to v1 where the security counter allows it. Once without and once with power
//! cuts: no device is ever bricked.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;
use tests::fleet::device::Behaviour;
use tests::fleet::{Fleet, Options, Summary};

fn options(server: &Server, env: &str, devices: usize, prefix: &str, cuts: f64) -> Options {
    fleet_options(server, env, devices, prefix, cuts)
}

fn running(summary: &Summary) -> BTreeMap<String, usize> {
    summary.running.clone()
}

fn current(server: &Server, env: &str) -> Value {
    let envs = json(server, &["status"]);
    let env = envs.as_array().unwrap().iter().find(|e| e["name"] == env).unwrap().clone();
    env["current"][0].clone()
}

/// Checks what every run must show: nothing bricked, no anomaly, no error.
fn clean(s: &Summary) {
    assert_eq!(s.bricked, 0, "{s:?}");
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    assert_eq!(s.error_count, 0, "{:?}", s.errors);
}

async fn pipeline(cuts: f64, backend: Backend) {
    let mut cut_phases: BTreeMap<String, u64> = BTreeMap::new();
    let mut run = async |fleet: &mut Fleet| {
        let s = fleet.run().await.unwrap();
        clean(&s);
        for (phase, n) in &s.power_cuts_by_phase {
            *cut_phases.entry(phase.clone()).or_default() += n;
        }
        s
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, keys) = Server::with_new_keys_on(&dir, backend);
    let (build, prod_key) = (keys.build, keys.prod);
    let (v1, v1_id) = fuse(&dir, &build, "1.0.0");
    let (v2, v2_id) = fuse(&dir, &build, "2.0.0");
    let (v3, v3_id) = fuse(&dir, &build, "3.0.0");
    // v4 carries a security fix: devices that confirm it refuse anything older.
    let (v4, v4_id) = fuse_with(&dir, &build, "4.0.0", 1);
    for file in [&v1, &v2, &v3, &v4] {
        ok(Some(&server), &["push", file]);
    }
    let factory = std::fs::read(&v1).unwrap();
    // Both fleets come from the factory with v1, which is also what test and prod release
    // today: nothing to download.
    let mut test = Fleet::enroll(options(&server, "test", 12, "qa", cuts), &factory).await.unwrap();
    let mut prod =
        Fleet::enroll(options(&server, "prod", 60, "field", cuts), &factory).await.unwrap();
    ok(Some(&server), &["release", "test", &v1_id]);
    let s = run(&mut test).await;
    assert_eq!((s.offers, running(&s)), (0, BTreeMap::from([(v1_id.clone(), 12)])));
    ok(Some(&server), &["promote", &v1_id, "--to", "prod", "--key", &prod_key]);
    let s = run(&mut prod).await;
    assert_eq!((s.offers, running(&s)), (0, BTreeMap::from([(v1_id.clone(), 60)])));
    assert_eq!(current(&server, "prod")["state"], "completed");

    // 1. v2: test confirms it, prod gets it in stages, the very same image id.
    ok(Some(&server), &["release", "test", &v2_id]);
    let s = run(&mut test).await;
    assert_eq!(running(&s), BTreeMap::from([(v2_id.clone(), 12)]), "{s:?}");
    assert_eq!(s.confirmed, 12, "{s:?}");
    ok(Some(&server), &["promote", &v2_id, "--to", "prod", "--key", &prod_key]);
    assert_eq!(current(&server, "prod")["stage"], 0);
    let s = run(&mut prod).await;
    assert_eq!(running(&s), BTreeMap::from([(v2_id.clone(), 60)]), "{s:?}");
    assert_eq!(s.confirmed, 60, "{s:?}");
    assert!(s.rounds >= 4, "a round per stage at least: {s:?}");
    let release = current(&server, "prod");
    assert_eq!(
        (release["state"].as_str(), release["stage"].as_u64()),
        (Some("completed"), Some(2))
    );
    assert_eq!(release["image_id"], v2_id, "prod runs the image test ran");

    // 2. v3 is unhealthy: test reverts it, the rollout halts, prod never sees it.
    test.set_behaviour(Behaviour {
        fail_ratio: 1.0,
        power_cut_ratio: cuts,
        ..Behaviour::default()
    });
    ok(Some(&server), &["release", "test", &v3_id]);
    let s = run(&mut test).await;
    assert_eq!(running(&s), BTreeMap::from([(v2_id.clone(), 12)]), "{s:?}");
    // Every device offered v3 reverted it; the halt stopped the offers at 3 or more. With power
    // cuts, a device cut mid-download may check in again after the halt, find the offer
    // withdrawn and end its download as failed: at most one such device per download cut.
    let cut_downloads = s.power_cuts_by_phase.get("download").copied().unwrap_or(0);
    assert!(s.offers >= 3 && s.reverted >= 3 && s.confirmed == 0, "{s:?}");
    assert!(s.reverted + s.failed == s.offers && s.failed <= cut_downloads, "{s:?}");
    let release = current(&server, "test");
    assert_eq!(release["state"], "halted", "{release}");
    let s = run(&mut prod).await;
    assert_eq!((s.offers, running(&s)), (0, BTreeMap::from([(v2_id.clone(), 60)])));
    let refused = fails(Some(&server), &["promote", &v3_id, "--to", "prod", "--key", &prod_key]);
    assert!(refused.contains("gate_closed") && refused.contains("halted in test"), "{refused}");
    test.set_behaviour(Behaviour { power_cut_ratio: cuts, ..Behaviour::default() });

    // 3. Rollback of prod to v1: allowed by the security counter, every device goes back.
    ok(Some(&server), &["rollback", "--env", "prod", "--key", &prod_key]);
    let s = run(&mut prod).await;
    assert_eq!(running(&s), BTreeMap::from([(v1_id.clone(), 60)]), "{s:?}");
    assert_eq!((s.confirmed, s.failed), (60, 0), "{s:?}");

    // v4 raises the security counter; after it, a rollback to v1 is refused by the devices.
    ok(Some(&server), &["release", "test", &v4_id]);
    assert_eq!(run(&mut test).await.confirmed, 12);
    ok(Some(&server), &["promote", &v4_id, "--to", "prod", "--key", &prod_key]);
    let s = run(&mut prod).await;
    assert_eq!(running(&s), BTreeMap::from([(v4_id.clone(), 60)]), "{s:?}");
    ok(Some(&server), &["rollback", "--env", "prod", "--key", &prod_key]);
    let s = run(&mut prod).await;
    assert_eq!(running(&s), BTreeMap::from([(v4_id.clone(), 60)]), "{s:?}");
    assert!(s.failed >= 1 && s.failed == s.offers && s.confirmed == 0, "{s:?}");
    // The devices said why; the rollback's rollout halted on their refusals.
    let release = current(&server, "prod");
    assert_eq!(
        (release["image_id"].as_str(), release["state"].as_str()),
        (Some(v1_id.as_str()), Some("halted"))
    );
    let refused = json(&server, &["devices", "--env", "prod", "--state", "failed"]);
    let refused = refused.as_array().unwrap();
    assert_eq!(refused.len() as u64, s.failed);
    let first = refused[0]["id"].as_str().unwrap();
    let detail = json(&server, &["device", "show", first]);
    let reasons: Vec<&str> =
        detail["events"].as_array().unwrap().iter().filter_map(|e| e["detail"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("security counter")), "{reasons:?}");

    // 4. With power cuts, they landed in every phase.
    eprintln!("power cuts survived: {cut_phases:?}");
    for phase in ["download", "swap", "revert"] {
        let n = cut_phases.get(phase).copied().unwrap_or(0);
        assert_eq!(n > 0, cuts > 0.0, "{n} power cuts in {phase}");
    }
}

async fn test_to_prod_failures_and_rollback(backend: Backend) {
    pipeline(0.0, backend).await;
}

async fn the_same_with_power_cuts(backend: Backend) {
    pipeline(0.4, backend).await;
}

both_backends!(test_to_prod_failures_and_rollback);
both_backends!(the_same_with_power_cuts);

/// The `fleet-sim` command: JSON summary, taking over its enrollment on a second run, refusals.
#[test]
fn fleet_sim_command() {
    let dir = tempfile::tempdir().unwrap();
    let (server, keys) = Server::with_new_keys(&dir);
    let (v1, _) = fuse(&dir, &keys.build, "1.0.0");
    let (v2, v2_id) = fuse(&dir, &keys.build, "2.0.0");
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
        assert!(s["retries"].is_u64(), "{s}");
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
