//! Enrolling a factory line's devices in one request: all of them or none, and a refusal that
//! names the device.

mod common;

use common::{Backend, Server};
use ota_proto::{BoardName, DeviceFilter, DeviceId, EnvironmentName, NewDevice, NewDevices};

fn device(id: &str, board: &str, env: &str) -> NewDevice {
    NewDevice {
        id: DeviceId::new(id).unwrap(),
        board: BoardName::new(board).unwrap(),
        environment: EnvironmentName::new(env).unwrap(),
    }
}

fn batch(n: usize, prefix: &str) -> Vec<NewDevice> {
    (0..n).map(|i| device(&format!("{prefix}-{i:05}"), "microbit", "prod")).collect()
}

fn batch_enrollment_is_all_or_nothing(backend: Backend) {
    let server = Server::start_on(backend);
    let admin = server.client(&server.admin);
    let all = DeviceFilter::default();
    let count = || admin.run(|c| c.devices(&all)).unwrap().len();
    let enroll = |client: &ota_proto::client::Blocking, devices: Vec<NewDevice>| {
        let batch = NewDevices { devices };
        client.run(|c| c.create_devices(&batch))
    };

    let devices = batch(1_500, "line-a");
    let enrolled = enroll(&admin, devices.clone()).unwrap();
    assert_eq!(enrolled.tokens.len(), 1_500);
    let ids: Vec<&DeviceId> = enrolled.tokens.iter().map(|t| &t.id).collect();
    assert_eq!(ids, devices.iter().map(|d| &d.id).collect::<Vec<_>>(), "tokens come back in order");
    let distinct: std::collections::HashSet<&str> =
        enrolled.tokens.iter().map(|t| t.token.as_str()).collect();
    assert_eq!(distinct.len(), 1_500);
    assert_eq!(count(), 1_500);
    // Each token is that device's.
    let last = &enrolled.tokens[1_499];
    assert!(server.checkin(&last.token, None).is_null());
    let detail = admin.run(|c| c.device(&last.id)).unwrap();
    assert!(detail.device.last_seen.is_some());
    let audit = admin.run(|c| c.audit(None, Some(10))).unwrap();
    assert_eq!(audit[0].action, ota_proto::AuditAction::DeviceCreateBatch);
    assert_eq!(audit[0].detail["devices"], 1_500);

    // One bad device refuses the batch, naming it; nothing of it is enrolled.
    let mut bad = batch(10, "line-b");
    bad[4] = device("line-b-bad", "no-such-board", "prod");
    let err = enroll(&admin, bad).unwrap_err();
    assert_eq!(err.code(), Some("unknown_board"), "{err}");
    assert!(err.to_string().contains("device 5 of the batch (line-b-bad)"), "{err}");
    let mut twice = batch(10, "line-c");
    twice[6] = twice[2].clone();
    let err = enroll(&admin, twice).unwrap_err();
    assert_eq!(err.code(), Some("duplicate"), "{err}");
    assert!(
        err.to_string().contains("device 7 of the batch: id line-c-00002 appears twice"),
        "{err}"
    );
    let mut taken = batch(10, "line-d");
    taken[9] = devices[0].clone();
    let err = enroll(&admin, taken).unwrap_err();
    assert_eq!(err.code(), Some("exists"), "{err}");
    assert!(err.to_string().contains("device 10 of the batch (line-a-00000)"), "{err}");
    let mut elsewhere = batch(3, "line-e");
    elsewhere[1] = device("line-e-x", "microbit", "staging");
    let err = enroll(&admin, elsewhere).unwrap_err();
    assert_eq!(err.code(), Some("unknown_environment"), "{err}");
    let err = enroll(&admin, vec![]).unwrap_err();
    assert_eq!(err.code(), Some("bad_batch"), "{err}");
    assert_eq!(count(), 1_500, "refused batches enrolled nothing");
    // Only admins enroll.
    let qa = server.post_json(
        "/api/v1/tokens",
        &server.admin,
        serde_json::json!({"role": "qa", "name": "qa"}),
    );
    let qa = server.client(qa.json()["token"].as_str().unwrap());
    let err = enroll(&qa, batch(2, "line-f")).unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
}

both_backends!(batch_enrollment_is_all_or_nothing);
