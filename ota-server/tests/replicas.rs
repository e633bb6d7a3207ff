//! Several `ota-server` replicas as one server: three processes on one PostgreSQL database and
//! one S3 bucket (a real Garage node), each with an empty data folder of its own.

mod common;

use std::time::{Duration, Instant};

use common::{BIN, Server, image};
use serde_json::json;

fn release(server: &Server, env: &str, image: &firmware::image::EncodedImage) -> u64 {
    let r = server.post_json(
        &format!("/api/v1/environments/{env}/releases"),
        &server.admin,
        json!({"image_id": image.id.to_string()}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    r.json()["sequence"].as_u64().unwrap()
}

#[test]
fn an_image_pushed_to_one_replica_is_served_by_the_others_at_once() {
    let replicas = Server::cluster(3, &[]);
    let (one, two, three) = (&replicas[0], &replicas[1], &replicas[2]);
    let v1 = image("1.0.0");
    assert_eq!(one.upload(&one.admin, &v1.bytes).status, 201);
    // Management reads on another replica see it at once, byte for byte.
    let r = three.get(&format!("/api/v1/images/{}/file", v1.id), &three.admin);
    assert_eq!((r.status, r.body == v1.bytes), (200, true));
    // The same upload through another replica is the same image, not a conflict.
    assert_eq!(two.upload(&two.admin, &v1.bytes).status, 200);
    // A device offered it by one replica downloads it from another, resuming on a third.
    release(one, "dev", &v1);
    let device = two.enroll("d-1", "dev");
    let offer = two.checkin(&device, None);
    let url = offer["url"].as_str().unwrap();
    let half = v1.bytes.len() / 2;
    let first = three.request(
        "GET",
        url,
        Some(&device),
        None,
        None,
        &[("range", &format!("bytes=0-{}", half - 1))],
    );
    let rest =
        one.request("GET", url, Some(&device), None, None, &[("range", &format!("bytes={half}-"))]);
    assert_eq!((first.status, rest.status), (206, 206));
    assert_eq!([first.body, rest.body].concat(), v1.bytes);
    // Nothing of it is in any replica's data folder: the bucket holds the file.
    for r in &replicas {
        let files = std::fs::read_dir(r.data().join("blobs")).map_or(0, |d| {
            d.filter(|e| e.as_ref().is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_file()))).count()
        });
        assert_eq!(files, 0, "{}", r.data().display());
    }
}

#[test]
fn downloads_can_go_straight_to_the_bucket() {
    let replicas = Server::cluster(2, &["--downloads", "redirect"]);
    let (one, two) = (&replicas[0], &replicas[1]);
    let v1 = image("1.0.0");
    assert_eq!(one.upload(&one.admin, &v1.bytes).status, 201);
    release(one, "dev", &v1);
    let device = one.enroll("d-1", "dev");
    let url = one.checkin(&device, None)["url"].as_str().unwrap().to_owned();
    // The replica answers with a presigned URL of the bucket, which serves ranges itself.
    let r = two.request("GET", &url, Some(&device), None, None, &[]);
    assert_eq!(r.status, 307);
    let location = r.header("location").unwrap().to_owned();
    assert!(location.starts_with(&testkit::garage::Garage::shared().endpoint()), "{location}");
    let client = ota_proto::client::Blocking::new(
        ota_proto::client::Client::new(&two.url, &device).unwrap(),
    )
    .unwrap();
    let whole = client.run(|c| c.download(&url, 0, 1 << 20)).unwrap();
    assert_eq!(whole, v1.bytes);
    let tail = client.run(|c| c.download(&url, 1000, 1 << 20)).unwrap();
    assert_eq!(&tail[..], &v1.bytes[1000..]);
    let metrics = client.run(|c| c.metrics()).unwrap();
    assert!(metrics.contains("ota_download_redirects_total 3"), "{metrics}");
}

#[test]
fn ten_pauses_and_resumes_at_once_are_as_if_made_one_after_the_other() {
    let replicas = Server::cluster(3, &[]);
    let v1 = image("1.0.0");
    assert_eq!(replicas[0].upload(&replicas[0].admin, &v1.bytes).status, 201);
    let sequence = release(&replicas[0], "dev", &v1);
    let barrier = std::sync::Barrier::new(10);
    let answers: Vec<(&str, u16)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let (server, barrier) = (&replicas[i % 3], &barrier);
                let action = if i % 2 == 0 { "pause" } else { "resume" };
                s.spawn(move || {
                    barrier.wait();
                    let path = format!("/api/v1/environments/dev/releases/{sequence}/{action}");
                    let r = server.post_json(&path, &server.admin, json!({}));
                    assert!(
                        r.status == 200 || (r.status == 409 && r.code() == "bad_state"),
                        "{}",
                        r.json()
                    );
                    (action, r.status)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The audit log holds exactly the calls that succeeded, alternating as they must.
    let audit = replicas[1].get("/api/v1/audit?limit=100", &replicas[1].admin).json();
    let acts: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter_map(|e| e["action"].as_str()?.strip_prefix("release."))
        .filter(|a| *a == "pause" || *a == "resume")
        .collect();
    let succeeded = answers.iter().filter(|(_, status)| *status == 200).count();
    assert_eq!(acts.len(), succeeded, "{answers:?} {acts:?}");
    assert!(succeeded >= 1);
    for (i, act) in acts.iter().enumerate() {
        assert_eq!(*act, if i % 2 == 0 { "pause" } else { "resume" }, "{acts:?}");
    }
    // Every replica shows the state the last of them left.
    let expected = if acts.len() % 2 == 1 { "paused" } else { "completed" };
    for r in &replicas {
        let release =
            r.get(&format!("/api/v1/environments/dev/releases/{sequence}"), &r.admin).json();
        let state = release["state"].as_str().unwrap();
        assert!(
            state == expected || (expected == "completed" && state == "rolling"),
            "{state} {acts:?}"
        );
    }
}

#[test]
fn a_release_on_one_replica_reaches_device_check_ins_on_another_within_a_second() {
    let replicas = Server::cluster(2, &[]);
    let (one, two) = (&replicas[0], &replicas[1]);
    let v1 = image("1.0.0");
    assert_eq!(one.upload(&one.admin, &v1.bytes).status, 201);
    let device = one.enroll("d-1", "dev");
    assert!(two.checkin(&device, None).is_null());
    release(one, "dev", &v1);
    let start = Instant::now();
    loop {
        if !two.checkin(&device, None).is_null() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "no offer on the other replica within 1 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("offer seen on the other replica after {:?}", start.elapsed());
}

#[test]
fn an_object_store_outage_is_ridden_out_and_gc_sweeps_orphans() {
    let garage = testkit::garage::Garage::start();
    let bucket = garage.create_bucket();
    let env: Vec<(String, String)> =
        garage.aws_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let mut server = Server::start_on_database(common::Backend::Postgres.database(), &[]);
    server.kill9();
    server.serve_args =
        vec!["--blobs".into(), format!("s3://{bucket}"), "--s3-endpoint".into(), garage.endpoint()];
    server.serve_env = env.clone();
    server.launch(&[]);
    let (v1, v2) = (image("1.0.0"), image("2.0.0"));
    assert_eq!(server.upload(&server.admin, &v1.bytes).status, 201);
    garage.kill();
    let r = server.upload(&server.admin, &v2.bytes);
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "blobs_unavailable"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(server.get("/readyz", &server.admin).status, 503);
    // Nothing half-made: v2 is not an image.
    assert_eq!(server.get(&format!("/api/v1/images/{}", v2.id), &server.admin).status, 404);
    garage.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.upload(&server.admin, &v2.bytes).status != 201 {
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.get("/readyz", &server.admin).status, 200);
    assert_eq!(server.get(&format!("/api/v1/images/{}/file", v1.id), &server.admin).body, v1.bytes);

    // A file stored without its row (a crash between the two): gc removes it, and only it.
    use object_store::ObjectStoreExt;
    let bucket_store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(garage.endpoint())
        .with_region(garage.region())
        .with_access_key_id(garage.access_key_id())
        .with_secret_access_key(garage.secret_access_key())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let orphan = bytes::Bytes::from_static(b"an upload whose row was never committed");
    let orphan_digest = ota_server::blobs::digest(&orphan);
    let count = |store: &object_store::aws::AmazonS3| {
        runtime.block_on(async {
            use futures_util::TryStreamExt;
            use object_store::ObjectStore;
            store.list(None).try_collect::<Vec<_>>().await.unwrap().len()
        })
    };
    let path = object_store::path::Path::from(orphan_digest.to_string());
    runtime.block_on(bucket_store.put(&path, orphan.into())).unwrap();
    assert_eq!(count(&bucket_store), 3);
    let mut gc = std::process::Command::new(BIN);
    gc.args(["gc", "--min-age", "0", "--data"])
        .arg(server.data())
        .args(server.database_args())
        .args(&server.serve_args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let out = gc.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("removed {orphan_digest}")) && stdout.contains("2 files in use"),
        "{stdout}"
    );
    assert_eq!(count(&bucket_store), 2);
    for v in [&v1, &v2] {
        assert_eq!(
            server.get(&format!("/api/v1/images/{}/file", v.id), &server.admin).body,
            v.bytes
        );
    }
}
