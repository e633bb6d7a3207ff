//! Releases made at the same moment: each gets its own sequence, the sequences stay
//! contiguous, and a statement signed for a number someone else took is refused with why. On
//! PostgreSQL, also across two replicas of the server on one database.

mod common;

use common::{Backend, Server, image, prod_key, sign_release};
use serde_json::json;
use testkit::pg::Postgres;

/// An environment `field` with no upstream (no gate), whose release key is held offline.
fn offline_environment(server: &Server) {
    let public = hex::encode(prod_key().verifying_key().to_bytes());
    let r = server.post_json(
        "/api/v1/environments",
        &server.admin,
        json!({"name": "field", "release_public_key": public}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
}

fn sequences(server: &Server, env: &str) -> Vec<u64> {
    let list = server.get(&format!("/api/v1/environments/{env}/releases"), &server.admin).json();
    let mut seqs: Vec<u64> =
        list.as_array().unwrap().iter().map(|r| r["sequence"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs
}

/// Releases `images` to `env` from `servers`, all at once (one thread each, round robin over
/// the servers); returns each answer's status and body.
fn release_all(
    servers: &[&Server],
    env: &str,
    bodies: Vec<serde_json::Value>,
) -> Vec<(u16, serde_json::Value)> {
    let barrier = std::sync::Barrier::new(bodies.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                let (server, barrier) = (servers[i % servers.len()], &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let r = server.post_json(
                        &format!("/api/v1/environments/{env}/releases"),
                        &server.admin,
                        body,
                    );
                    (r.status, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn race(servers: &[&Server]) {
    let first = servers[0];
    let images: Vec<_> = (0..10).map(|i| image(&format!("4.{i}.0"))).collect();
    for img in &images {
        assert_eq!(first.upload(&first.admin, &img.bytes).status, 201);
    }
    // Ten server-signed releases at once: ten sequences, one each, contiguous.
    let bodies = images.iter().map(|i| json!({"image_id": i.id.to_string()})).collect();
    let answers = release_all(servers, "dev", bodies);
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
    }
    let mut got: Vec<u64> = answers.iter().map(|(_, b)| b["sequence"].as_u64().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    for server in servers {
        assert_eq!(
            sequences(server, "dev"),
            (1..=10).collect::<Vec<_>>(),
            "every replica sees all ten"
        );
    }

    // Statements signed offline for the same sequence: one release wins, the others are told
    // that the number was taken.
    offline_environment(first);
    let bodies = images[..4]
        .iter()
        .map(|i| {
            let id = i.id.to_string();
            json!({"image_id": id, "statement": sign_release(&id, "field", 1, &prod_key())})
        })
        .collect();
    let answers = release_all(servers, "field", bodies);
    let won: Vec<_> = answers.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*status, body["error"]["code"].as_str()),
            (409, Some("sequence_taken")),
            "{body}"
        );
        assert!(body["error"]["message"].as_str().unwrap().contains("sequence"), "{body}");
    }
    for server in servers {
        assert_eq!(sequences(server, "field"), vec![1]);
    }
    // Each release is in the audit log once.
    let audit = first.get("/api/v1/audit?limit=1000", &first.admin).json();
    let releases =
        audit.as_array().unwrap().iter().filter(|e| e["action"] == "release.create").count();
    assert_eq!(releases, 11);
}

fn concurrent_releases_get_one_sequence_each(backend: Backend) {
    let server = Server::start_on(backend);
    race(&[&server]);
}

both_backends!(concurrent_releases_get_one_sequence_each);

#[test]
fn two_replicas_on_one_database_agree_on_sequences() {
    let server = Server::start_on_database(Some(Postgres::shared().create_database()), &[]);
    let replica = server.replica();
    race(&[&server, &replica]);
}

/// Devices reporting at the same moment on a staged rollout: each report re-evaluates the
/// rollout, two evaluations may compute a move from the same place, and the one that loses the
/// commit may have seen more confirmations than the winner. The rollout must still end where
/// the reports put it as soon as the last report is answered, not at the next housekeeping
/// tick (an hour here, so only the reports' own evaluations can move it).
fn concurrent_reports_move_a_staged_rollout_all_the_way(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ota.toml");
    std::fs::write(&config, "housekeeping_secs = 3600\n").unwrap();
    let server = Server::start_with(backend, &["--config", config.to_str().unwrap()]);
    server.set_stages("dev", "[5, 25, 100]");
    let [v1] = server.upload_versions(&["1.0.0"]).try_into().unwrap();
    let tokens: Vec<String> =
        (0..48).map(|i| server.enroll(&format!("race-{i:02}"), "dev")).collect();
    let r = server.post_json(
        "/api/v1/environments/dev/releases",
        &server.admin,
        json!({"image_id": v1}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    // Every device left the factory with v1 and says so, all at once.
    let barrier = std::sync::Barrier::new(tokens.len());
    std::thread::scope(|s| {
        for token in &tokens {
            let (server, barrier, v1) = (&server, &barrier, &v1);
            s.spawn(move || {
                barrier.wait();
                assert!(server.checkin(token, Some(v1)).is_null());
            });
        }
    });
    let envs = server.get("/api/v1/environments", &server.admin).json();
    let dev = envs.as_array().unwrap().iter().find(|e| e["name"] == "dev").unwrap();
    assert_eq!(dev["current"][0]["state"], "completed", "{dev:#}");
}

// SQLite only for now: on PostgreSQL the last move (to completed) was still seen lost once in
// CI (stage 3 of 3, 48 of 48 confirmed, "rolling" until housekeeping); a move that conflicts
// there is re-evaluated before the replica's model holds the winner's move. Open in issue 15.
#[test]
fn concurrent_reports_move_a_staged_rollout_all_the_way_on_sqlite() {
    concurrent_reports_move_a_staged_rollout_all_the_way(Backend::Sqlite);
}
