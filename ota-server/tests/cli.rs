//! The `ota-server` command line: init, token create against a running server, settings from a
//! file and the environment, and its refusals.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{BIN, Backend, Server, build_key, image, write_public_pem};
use serde_json::json;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn token_made_offline_works_on_the_running_server(backend: Backend) {
    let server = Server::start_on(backend);
    let data = server.data();
    let mut args = vec![
        "token",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--role",
        "ci",
        "--name",
        "ci-bot",
    ];
    let database = server.database_args();
    args.extend(database.iter().map(String::as_str));
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    let token = stdout.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(token.starts_with("fwm_"), "{stdout}");
    // CI may upload and release where the server holds the key, not enroll devices or
    // release to prod.
    let v1 = image("1.0.0");
    assert_eq!(server.upload(&token, &v1.bytes).status, 201);
    let r = server.post_json(
        "/api/v1/environments/dev/releases",
        &token,
        json!({"image_id": v1.id.to_string()}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    let r = server.post_json(
        "/api/v1/environments/prod/releases",
        &token,
        json!({"image_id": v1.id.to_string(), "statement": "00"}),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    let r = server.post_json(
        "/api/v1/devices",
        &token,
        json!({"id": "d", "board": "microbit", "environment": "dev"}),
    );
    assert_eq!(r.status, 403);
    let audit = server.get("/api/v1/audit", &server.admin).json();
    assert_eq!(audit[0]["actor"], "ci-bot");
    assert_eq!(audit[0]["action"], "release.create");
}

#[test]
fn settings_from_a_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_public_pem(&dir.path().join("build.pub.pem"), &build_key());
    write_public_pem(&dir.path().join("prod.pub.pem"), &common::prod_key());
    let (ok, stdout, stderr) = run(&[
        "init",
        "--data",
        data.to_str().unwrap(),
        "--build-key",
        dir.path().join("build.pub.pem").to_str().unwrap(),
        "--prod-key",
        dir.path().join("prod.pub.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let admin = stdout.lines().find_map(|l| l.strip_prefix("admin token: ")).unwrap().to_owned();
    let config = dir.path().join("ota.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = {:?}\nmax_image_size = 1000\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("OTA_LOG_FORMAT", "json")
        .env("OTA_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    // The file's size limit applies.
    let client =
        ota_proto::client::Blocking::new(ota_proto::client::Client::new(&url, &admin).unwrap())
            .unwrap();
    let err = client.run(|c| c.upload(image("1.0.0").bytes.into(), None)).unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(413), Some("too_large")), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Logs are JSON lines.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let first = stderr.lines().next().expect("a log line");
    let parsed: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(parsed["fields"]["message"], "serving");
}

#[test]
fn refusals_are_clear_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // A private key where a public one is expected: nothing is created.
    let private = dir.path().join("build.pem");
    std::fs::write(&private, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsL\n-----END PRIVATE KEY-----\n").unwrap();
    let prod = dir.path().join("prod.pub.pem");
    write_public_pem(&prod, &common::prod_key());
    let prod = prod.to_str().unwrap();
    let (ok, _, stderr) = run(&[
        "init",
        "--data",
        data,
        "--build-key",
        private.to_str().unwrap(),
        "--prod-key",
        prod,
    ]);
    assert!(!ok);
    assert!(stderr.contains("is a private key; pass the public key"), "{stderr}");
    let (ok, _, stderr) = run(&["init", "--data", data]);
    assert!(!ok);
    assert!(stderr.contains("--prod-key"), "{stderr}");
    assert!(!dir.path().join("data").exists());
    let (ok, _, stderr) = run(&["serve", "--data", data, "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(stderr.contains("ota-server init"), "{stderr}");
    let (ok, _, _) = run(&["init", "--data", data, "--prod-key", prod]);
    assert!(ok);
    let (ok, _, stderr) = run(&["init", "--data", data, "--prod-key", prod]);
    assert!(!ok);
    assert!(stderr.contains("already holds a database"), "{stderr}");
    let (ok, _, stderr) = run(&[
        "serve",
        "--data",
        data,
        "--database",
        "postgres://db/ota",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("cannot connect to postgres://db/ota"), "{stderr}");
    let (ok, _, stderr) = run(&["serve", "--data", data, "--database", "mysql://u:secret@h/x"]);
    assert!(!ok);
    assert!(stderr.contains("expected sqlite://PATH or postgres://"), "{stderr}");
    assert!(!stderr.contains("secret"), "passwords are never shown: {stderr}");
    // One server process per SQLite file.
    let mut first = Command::new(BIN)
        .args(["serve", "--data", data, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let (ok, _, stderr) = run(&["serve", "--data", data, "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(stderr.contains("another ota-server serves"), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();
    let (ok, _, stderr) = run(&["token", "create", "--data", data, "--role", "root"]);
    assert!(!ok);
    assert!(stderr.contains("unknown role"), "{stderr}");
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["init", "--help"],
        &["migrate", "--help"],
        &["copy-store", "--help"],
        &["gc", "--help"],
        &["token", "create", "--help"],
    ] {
        let (ok, stdout, _) = run(args);
        assert!(ok && stdout.contains("Usage:"), "{args:?}");
    }
}

both_backends!(token_made_offline_works_on_the_running_server);
