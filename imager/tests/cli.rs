//! The `imager` binary end to end, on real firmware built by arm-none-eabi-gcc
//! (`tests/fixtures/`, see its build.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

const BOARDS: [&str; 4] = ["microbit", "nrf52840dk", "nucleo-f411re", "rpi-pico"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fixture(rel: &str) -> String {
    root().join("tests/fixtures").join(rel).to_string_lossy().into_owned()
}

/// A scratch folder, removed at the end of the test.
struct Scratch(PathBuf);
impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("imager-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn imager(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_imager"))
        .args(args)
        .env_remove("IMAGER_BOARDS")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{args:?}: {stderr}"
    );
    out
}

fn ok(args: &[&str]) -> String {
    let out = imager(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with exit code 1 and a one-line `error: ...` message.
fn fails(args: &[&str]) -> String {
    let out = imager(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: ") && stderr.lines().count() == 1, "{args:?}: {stderr:?}");
    stderr
}

fn keygen(dir: &Scratch, name: &str) -> (String, String) {
    ok(&["keygen", "--out", &dir.path(name)]);
    (dir.path(&format!("{name}.pem")), dir.path(&format!("{name}.pub.pem")))
}

fn fuse(board: &str, key: &str, out: &str, extra: &[&str]) -> String {
    let os = fixture(&format!("{board}/os.elf"));
    let app = fixture(&format!("{board}/app.elf"));
    let mut args =
        vec!["fuse", "--board", board, "--os", &os, "--app", &app, "--version", "1.4.2-rc.1"];
    args.extend_from_slice(&["--key", key, "--out", out]);
    args.extend_from_slice(extra);
    ok(&args)
}

fn board_json(name: &str) -> Value {
    let boards: Value = serde_json::from_str(&ok(&["boards", "--json"])).unwrap();
    boards.as_array().unwrap().iter().find(|b| b["name"] == name).unwrap().clone()
}

#[test]
fn fuse_inspect_verify_on_every_board() {
    let dir = Scratch::new("roundtrip");
    let (key, pubkey) = keygen(&dir, "build");
    for board in BOARDS {
        let image = dir.path(&format!("{board}.fwi"));
        fuse(board, &key, &image, &["--security-counter", "3"]);
        let summary: Value = serde_json::from_str(&ok(&["inspect", &image, "--json"])).unwrap();
        let id = ok(&["verify", &image, "--pubkey", &pubkey]);
        assert_eq!(id.trim(), summary["id"], "{board}");
        assert_eq!(summary["board"], board);
        assert_eq!(summary["version"], "1.4.2-rc.1");
        assert_eq!(summary["security_counter"], 3);
        let file_size = std::fs::metadata(&image).unwrap().len();
        assert_eq!(summary["file_size"], file_size);

        let info = board_json(board);
        let slot_a = info["partition_addresses"]["slot_a"].as_u64().unwrap();
        let components = summary["components"].as_array().unwrap();
        assert_eq!(components.len(), 2);
        let (os, app) = (&components[0], &components[1]);
        assert_eq!((os["role"].as_str(), os["name"].as_str()), (Some("os"), Some("os")));
        assert_eq!(
            os["load_address"], info["link_address"],
            "{board}: the OS is linked at slot A + header"
        );
        assert_eq!(app["role"], "app");
        assert_eq!(app["load_address"].as_u64(), Some(slot_a + 0x8000));
        // Payloads follow the header back to back and fill the file.
        let mut offset = summary["header_size"].as_u64().unwrap();
        for c in components {
            assert_eq!(c["payload_offset"].as_u64(), Some(offset));
            offset += c["payload_size"].as_u64().unwrap();
            // heatshrink by default; a component it would not shrink is carried raw.
            if c["compression"]["kind"] == "heatshrink" {
                assert_eq!(
                    (c["compression"]["window"].as_u64(), c["compression"]["lookahead"].as_u64()),
                    (Some(11), Some(4))
                );
                assert!(c["payload_size"].as_u64() < c["size"].as_u64());
            } else {
                assert_eq!(
                    (c["compression"]["kind"].as_str(), &c["payload_size"]),
                    (Some("none"), &c["size"])
                );
            }
            assert_eq!(c["sha256"].as_str().unwrap().len(), 64);
        }
        assert_eq!(offset, file_size);
        let signatures = summary["signatures"].as_array().unwrap();
        assert_eq!(signatures.len(), 1);
        assert_eq!(signatures[0]["key_id"].as_str().unwrap().len(), 16);
        // The readable form says the same.
        let text = ok(&["inspect", &image]);
        assert!(text.contains(summary["id"].as_str().unwrap()) && text.contains(board), "{text}");
    }
}

#[test]
fn installed_bytes_are_what_the_toolchain_built() {
    // app.bin is `arm-none-eabi-objcopy -O binary app.elf`: the manifest's hash must be its hash,
    // and the same app given as ELF, Intel HEX or raw binary must give the same image id.
    let dir = Scratch::new("inputs");
    let (key, _) = keygen(&dir, "build");
    let objcopy_sha =
        hex::encode(Sha256::digest(std::fs::read(fixture("microbit/app.bin")).unwrap()));
    let mut ids = Vec::new();
    for app in [
        fixture("microbit/app.elf"),
        fixture("microbit/app.hex"),
        format!("{}@0x18000", fixture("microbit/app.bin")),
    ] {
        let image = dir.path("app.fwi");
        ok(&[
            "fuse",
            "--board",
            "microbit",
            "--app",
            &app,
            "--version",
            "1.0.0",
            "--key",
            &key,
            "--out",
            &image,
        ]);
        let summary: Value = serde_json::from_str(&ok(&["inspect", &image, "--json"])).unwrap();
        assert_eq!(summary["components"][0]["sha256"], objcopy_sha, "{app}");
        ids.push(summary["id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

#[test]
fn data_parts_and_raw_compression() {
    let dir = Scratch::new("data");
    let (key, pubkey) = keygen(&dir, "build");
    let image = dir.path("d.fwi");
    let fonts = format!("{}@0x20000", fixture("data/fonts.bin"));
    fuse("microbit", &key, &image, &["--data", &format!("fonts={fonts}"), "--compression", "none"]);
    let summary: Value = serde_json::from_str(&ok(&["inspect", &image, "--json"])).unwrap();
    let names: Vec<&str> = summary["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["os", "app", "fonts"]);
    for c in summary["components"].as_array().unwrap() {
        assert_eq!(c["compression"]["kind"], "none");
        assert_eq!(c["payload_size"], c["size"]);
    }
    ok(&["verify", &image, "--pubkey", &pubkey]);
    for window in ["8", "10", "12"] {
        let lookahead = if window == "12" { "5" } else { "4" };
        fuse("microbit", &key, &image, &["--window", window, "--lookahead", lookahead]);
        ok(&["verify", &image, "--pubkey", &pubkey]);
    }
    let err = imager(&[
        "fuse",
        "--board",
        "microbit",
        "--os",
        &fixture("microbit/os.elf"),
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--out",
        &image,
        "--window",
        "13",
        "--lookahead",
        "4",
    ]);
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("window 13 / lookahead 4 is not supported")
    );
}

#[test]
fn same_inputs_same_file() {
    let dir = Scratch::new("determinism");
    let (key, _) = keygen(&dir, "build");
    let (a, b) = (dir.path("a.fwi"), dir.path("b.fwi"));
    fuse("nucleo-f411re", &key, &a, &[]);
    fuse("nucleo-f411re", &key, &b, &[]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // A key made by OpenSSL signs too, and gives the same id (the id names content).
    let c = dir.path("c.fwi");
    fuse("nucleo-f411re", &fixture("keys/openssl-ed25519.pem"), &c, &[]);
    let id = |f: &str| {
        serde_json::from_str::<Value>(&ok(&["inspect", f, "--json"])).unwrap()["id"].clone()
    };
    assert_eq!(id(&a), id(&c));
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    ok(&["verify", &c, "--pubkey", &fixture("keys/openssl-ed25519.pub.pem")]);
}

#[test]
fn every_damage_fails_verify_without_panicking() {
    let dir = Scratch::new("damage");
    let (key, pubkey) = keygen(&dir, "build");
    let image = dir.path("good.fwi");
    fuse("microbit", &key, &image, &[]);
    let good = std::fs::read(&image).unwrap();
    let summary: Value = serde_json::from_str(&ok(&["inspect", &image, "--json"])).unwrap();
    let header = summary["header_size"].as_u64().unwrap() as usize;
    let bad = dir.path("bad.fwi");

    let mut payload_offsets: Vec<usize> =
        (header..good.len()).step_by(((good.len() - header) / 40).max(1)).collect();
    payload_offsets.push(good.len() - 1);
    for offset in (0..header).chain(payload_offsets) {
        let mut bytes = good.clone();
        bytes[offset] ^= 0x10;
        std::fs::write(&bad, &bytes).unwrap();
        fails(&["verify", &bad, "--pubkey", &pubkey]);
    }

    let (_, other) = keygen(&dir, "other");
    assert!(fails(&["verify", &image, "--pubkey", &other]).contains("unknown key"));

    for len in [0, 3, 15, header - 1, header + 1, good.len() - 1] {
        std::fs::write(&bad, &good[..len]).unwrap();
        let err = fails(&["verify", &bad, "--pubkey", &pubkey]);
        assert!(err.contains("truncated"), "{len}: {err}");
    }
    std::fs::write(&bad, b"\x7fELF not an image").unwrap();
    assert!(fails(&["verify", &bad, "--pubkey", &pubkey]).contains("not an image"));
    assert!(fails(&["inspect", &bad]).contains("not an image"));
    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 1;
    std::fs::write(&bad, &tampered).unwrap();
    let err = fails(&["verify", &bad, "--pubkey", &pubkey]);
    assert!(err.contains("component"), "{err}");
}

#[test]
fn firmware_outside_slot_a_is_refused() {
    let dir = Scratch::new("outside");
    let (key, _) = keygen(&dir, "build");
    let out = dir.path("x.fwi");
    let err = fails(&[
        "fuse",
        "--board",
        "microbit",
        "--os",
        &fixture("microbit/os.elf"),
        "--app",
        &fixture("microbit/outside.elf"),
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--out",
        &out,
    ]);
    assert!(err.contains("component app") && err.contains("outside.elf"), "{err}");
    assert!(err.contains("0x00008000..") && err.contains("0x00010400..0x00026c00"), "{err}");
    assert!(!Path::new(&out).exists(), "nothing written");

    // An ELF for one board does not fit another.
    let err = fails(&[
        "fuse",
        "--board",
        "rpi-pico",
        "--os",
        &fixture("microbit/os.elf"),
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--out",
        &out,
    ]);
    assert!(err.contains("outside slot A's image area 0x10010400..0x10100000"), "{err}");

    // The OS and an app placed on top of it.
    let err = fails(&[
        "fuse",
        "--board",
        "microbit",
        "--os",
        &fixture("microbit/os.elf"),
        "--app",
        &format!("{}@0x10800", fixture("microbit/app.bin")),
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--out",
        &out,
    ]);
    assert!(
        err.contains("components os") && err.contains("and app") && err.contains("overlap"),
        "{err}"
    );

    // A write over an existing output leaves it whole when fusing fails.
    std::fs::write(&out, b"previous").unwrap();
    fails(&[
        "fuse",
        "--board",
        "microbit",
        "--app",
        &fixture("microbit/outside.elf"),
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--out",
        &out,
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
}

#[test]
fn wrong_inputs_are_named() {
    let dir = Scratch::new("inputs-wrong");
    let (key, pubkey) = keygen(&dir, "build");
    let out = dir.path("x.fwi");
    let os = fixture("microbit/os.elf");
    let run = |extra: &[&str]| {
        let mut args = vec!["fuse", "--board", "microbit", "--version", "1.0.0", "--out", &out];
        args.extend_from_slice(extra);
        fails(&args)
    };
    for (key_file, algorithm) in
        [("ecdsa-p256.pem", "ECDSA"), ("rsa-1024.pem", "RSA"), ("ed448.pem", "Ed448")]
    {
        let err = run(&["--os", &os, "--key", &fixture(&format!("keys/{key_file}"))]);
        assert!(err.contains(algorithm) && err.contains("Ed25519"), "{err}");
    }
    assert!(run(&["--os", &os, "--key", &pubkey]).contains("is a public key"));
    let err = run(&["--os", &fixture("microbit/app.bin"), "--key", &key]);
    assert!(err.contains("neither ELF nor Intel HEX") && err.contains("@0x10400"), "{err}");
    let err = run(&["--os", &dir.path("missing.elf"), "--key", &key]);
    assert!(err.contains("missing.elf"), "{err}");
    // The header of an x86-64 executable (this test's own binary is over the input size cap).
    let x86 = dir.path("x86_64.elf");
    let mut header = vec![0u8; 64];
    header[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    header[16] = 2; // ET_EXEC
    header[18] = 0x3e; // EM_X86_64
    std::fs::write(&x86, header).unwrap();
    let err = run(&["--os", &x86, "--key", &key]);
    assert!(err.contains("64-bit ELF") || err.contains("x86"), "{err}");
    let err = fails(&[
        "fuse",
        "--board",
        "nope",
        "--os",
        &os,
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--out",
        &out,
    ]);
    assert!(err.contains("unknown board \"nope\"") && err.contains("microbit"), "{err}");
}

#[test]
fn usage_mistakes_exit_2_with_help() {
    let cases: [&[&str]; 4] = [
        &["fuse", "--board", "microbit", "--version", "1.0.0", "--key", "k.pem", "--out", "x.fwi"],
        &[
            "fuse",
            "--board",
            "microbit",
            "--os",
            "a.elf",
            "--version",
            "1.0",
            "--key",
            "k.pem",
            "--out",
            "x.fwi",
        ],
        &[
            "fuse",
            "--board",
            "microbit",
            "--os",
            "a.elf",
            "--data",
            "OS=x.bin",
            "--version",
            "1.0.0",
            "--key",
            "k",
            "--out",
            "x",
        ],
        &["verify", "x.fwi"],
    ];
    for args in cases {
        let out = imager(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Usage") || stderr.contains("--help"), "{args:?}: {stderr}");
    }
    for command in ["keygen", "fuse", "inspect", "verify", "boards"] {
        let help = ok(&[command, "--help"]);
        assert!(help.contains("Usage: imager"), "{command}");
    }
}

#[test]
fn keygen_writes_openssl_keys_and_never_overwrites() {
    let dir = Scratch::new("keygen");
    let (private, public) = keygen(&dir, "k");
    let private_text = std::fs::read_to_string(&private).unwrap();
    assert!(private_text.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(std::fs::read_to_string(&public).unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let err = fails(&["keygen", "--out", &dir.path("k")]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&private).unwrap(), private_text);
    // Only the public half exists: still refused, and no private key appears.
    std::fs::remove_file(&private).unwrap();
    fails(&["keygen", "--out", &dir.path("k")]);
    assert!(!Path::new(&private).exists());

    // OpenSSL reads both files, and agrees on the public key.
    let (private, public) = keygen(&dir, "o");
    let openssl =
        |args: &[&str]| Command::new("openssl").args(args).output().expect("openssl is installed");
    let derived = openssl(&["pkey", "-in", &private, "-pubout"]);
    assert!(derived.status.success(), "{}", String::from_utf8_lossy(&derived.stderr));
    assert_eq!(
        String::from_utf8(derived.stdout).unwrap(),
        std::fs::read_to_string(&public).unwrap()
    );
    assert!(openssl(&["pkey", "-pubin", "-in", &public, "-noout"]).status.success());
}

#[test]
fn boards_lists_partitions_and_link_addresses() {
    let boards: Value = serde_json::from_str(&ok(&["boards", "--json"])).unwrap();
    let names: Vec<&str> =
        boards.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, BOARDS);
    let microbit = board_json("microbit");
    assert_eq!(microbit["link_address"], 0x10400);
    assert_eq!(microbit["partitions"]["slot_a"]["size"], 0x16C00);
    assert_eq!(microbit["flash"]["erase"]["uniform"], 1024);
    let f411 = board_json("nucleo-f411re");
    assert_eq!(f411["flash"]["erase"]["sectors"][2]["size"], 0x20000);
    assert_eq!(f411["partition_addresses"]["slot_b"], 0x0804_0000u64);
    let text = ok(&["boards"]);
    assert!(text.contains("link the first component at 0x10010400"), "{text}");

    // A folder of extra boards adds to the list; a broken file there is named.
    let dir = Scratch::new("boards");
    let custom = std::fs::read_to_string(root().join("boards/defs/microbit.toml"))
        .unwrap()
        .replace("name = \"microbit\"", "name = \"bitty\"");
    std::fs::write(dir.path("bitty.toml"), custom).unwrap();
    assert!(ok(&["--boards", &dir.0.to_string_lossy(), "boards"]).contains("bitty"));
    std::fs::write(dir.path("bad.toml"), "name = \"bad\"\n").unwrap();
    let out = imager(&["--boards", &dir.0.to_string_lossy(), "boards"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("bad.toml") && err.contains("missing field `description`"), "{err}");
}

/// Fuses the release-pair fixture `variant` (tests/fixtures/delta) for `board`.
fn fuse_pair(board: &str, variant: &str, key: &str, out: &str) {
    let os = fixture(&format!("delta/{board}/{variant}.elf"));
    let version = format!("1.0.0-{variant}");
    ok(&["fuse", "--board", board, "--os", &os, "--version", &version, "--key", key, "--out", out]);
}

#[test]
fn delta_create_apply_and_inspect() {
    let dir = Scratch::new("delta");
    let (key, public) = keygen(&dir, "build");
    let (old, new, patch) = (dir.path("old.fwi"), dir.path("new.fwi"), dir.path("p.fwp"));
    fuse_pair("microbit", "base", &key, &old);
    fuse_pair("microbit", "fix", &key, &new);
    let new_size = std::fs::metadata(&new).unwrap().len();

    let text = ok(&["delta", "create", &old, &new, "--out", &patch]);
    let patch_size = std::fs::metadata(&patch).unwrap().len();
    assert!(patch_size * 10 < new_size, "{patch_size} of {new_size}");
    assert!(
        text.contains(&format!("full image {new_size} bytes, patch {patch_size} bytes")),
        "{text}"
    );
    let json: Value =
        serde_json::from_str(&ok(&["delta", "create", &old, &new, "--out", &patch, "--json"]))
            .unwrap();
    assert_eq!(json["patch_size"], patch_size);
    assert_eq!(json["target_size"], new_size);
    let ratio = json["ratio"].as_f64().unwrap();
    assert!((ratio - patch_size as f64 / new_size as f64).abs() < 1e-9);
    let new_id = ok(&["verify", &new, "--pubkey", &public]).trim().to_owned();
    assert_eq!(json["target"], new_id.as_str());

    // Applied by the device's code: prints the rebuilt image's id.
    assert_eq!(ok(&["delta", "apply", &old, &patch, "--pubkey", &public]).trim(), new_id);
    let applied: Value =
        serde_json::from_str(&ok(&["delta", "apply", &old, &patch, "--pubkey", &public, "--json"]))
            .unwrap();
    assert_eq!(applied["id"], new_id.as_str());
    assert!(applied["programmed"].as_u64().unwrap() > 0);

    // Exit 1, one line, for a key that did not sign, another source, a damaged patch.
    let (_, stranger) = keygen(&dir, "stranger");
    let err = fails(&["delta", "apply", &old, &patch, "--pubkey", &stranger]);
    assert!(err.contains("none of which is trusted"), "{err}");
    let err = fails(&["delta", "apply", &new, &patch, "--pubkey", &public]);
    assert!(err.contains("the patch applies to image"), "{err}");
    let mut bytes = std::fs::read(&patch).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let damaged = dir.path("damaged.fwp");
    std::fs::write(&damaged, &bytes).unwrap();
    fails(&["delta", "apply", &old, &damaged, "--pubkey", &public]);

    // inspect knows a patch.
    let text = ok(&["inspect", &patch]);
    assert!(text.starts_with("patch ") && text.contains(&new_id), "{text}");
    let json: Value = serde_json::from_str(&ok(&["inspect", &patch, "--json"])).unwrap();
    assert_eq!(json["kind"], "patch");
    assert_eq!(json["target"], new_id.as_str());
    assert_eq!(json["file_size"], patch_size);
    let truncated = dir.path("truncated.fwp");
    std::fs::write(&truncated, &bytes[..last]).unwrap();
    let err = fails(&["inspect", &truncated]);
    assert!(err.contains("truncated.fwp") && err.contains("its header says"), "{err}");

    for command in ["create", "apply"] {
        let help = ok(&["delta", command, "--help"]);
        assert!(help.contains(&format!("Usage: imager delta {command}")), "{help}");
    }
    assert!(ok(&["delta", "--help"]).contains("create"));
}

/// Key id of a public key file, as `imager trust show` prints it.
fn key_id_of(public: &str) -> String {
    let key = imager::keys::read_public_key(Path::new(public)).unwrap();
    key.id().to_string()
}

#[test]
fn trust_init_rotate_revoke_show_sign_offline_and_refuse_what_a_device_would() {
    let dir = Scratch::new("trust");
    let (root1, root1_pub) = keygen(&dir, "root1");
    let (root2, _) = keygen(&dir, "root2");
    let (_, build1) = keygen(&dir, "build1");
    let (_, build2) = keygen(&dir, "build2");
    let (_, prod1) = keygen(&dir, "prod1");
    let (_, prod2) = keygen(&dir, "prod2");
    let (v1, v2, v3, v4) =
        (dir.path("v1.fwt"), dir.path("v2.fwt"), dir.path("v3.fwt"), dir.path("v4.fwt"));
    let prod1_env = format!("prod={prod1}");
    let shown = ok(&[
        "trust", "init", "--root", &root1, "--build", &build1, "--env", &prod1_env, "--out", &v1,
    ]);
    assert!(shown.contains("trust statement version 1"), "{shown}");
    // Build-key rotation: build1 retired, build2 signs.
    ok(&["trust", "rotate", &v1, "--sign", &root1, "--build", &build2, "--out", &v2]);
    // A rotation signed by a key that is not the root is refused, and nothing written.
    let err = fails(&["trust", "rotate", &v2, "--sign", &root2, "--build", &build1, "--out", &v3]);
    assert!(err.contains("would refuse version 3") && err.contains("root key"), "{err}");
    assert!(!Path::new(&v3).exists());
    // Root rotation (signed by the old and the new root) with a prod key rotation.
    let prod2_env = format!("prod={prod2}");
    ok(&[
        "trust",
        "rotate",
        &v2,
        "--sign",
        &root1,
        "--new-root",
        &root2,
        "--env",
        &prod2_env,
        "--out",
        &v3,
    ]);
    // Revoke build1 entirely: after the root rotation only root2 signs.
    let build1_id = key_id_of(&build1);
    let err = fails(&[
        "trust", "revoke", &v3, "--sign", &root1, "--key", &build1_id, "--hard", "--out", &v4,
    ]);
    assert!(err.contains("would refuse"), "{err}");
    ok(&["trust", "revoke", &v3, "--sign", &root2, "--key", &build1_id, "--hard", "--out", &v4]);
    let err = fails(&[
        "trust",
        "revoke",
        &v4,
        "--sign",
        &root2,
        "--key",
        &build1_id,
        "--out",
        &dir.path("v5.fwt"),
    ]);
    assert!(err.contains("not in the current statement"), "{err}");
    // The chain, checked from the provisioned root, as JSON.
    let json: Value = serde_json::from_str(&ok(&[
        "trust", "show", &v1, &v2, &v3, &v4, "--root", &root1_pub, "--json",
    ]))
    .unwrap();
    let versions: Vec<u64> =
        json.as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(json[1]["retired_build_keys"][0], build1_id);
    assert_eq!(json[3]["retired_build_keys"].as_array().unwrap().len(), 0);
    assert_eq!(json[2]["environments"][0][1][0], key_id_of(&prod2));
    // A gap in the chain is named.
    let err = fails(&["trust", "show", &v1, &v3]);
    assert!(err.contains("does not extend version 1"), "{err}");
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let dir = Scratch::new("out-is-input");
    let (key, _) = keygen(&dir, "build");
    let os = dir.path("os.elf");
    std::fs::copy(fixture("microbit/os.elf"), &os).unwrap();
    let before = std::fs::read(&os).unwrap();
    let fuse_to = |out: &str| {
        fails(&[
            "fuse",
            "--board",
            "microbit",
            "--os",
            &os,
            "--version",
            "1.0.0",
            "--key",
            &key,
            "--out",
            out,
        ])
    };
    for out in [&os, &key] {
        let err = fuse_to(out);
        assert!(err.contains("is also an input"), "{err}");
    }
    assert_eq!(std::fs::read(&os).unwrap(), before);
    // A raw input is named with its load address; the file is what counts.
    let raw = format!("{os}@0x1000");
    let err = fails(&[
        "fuse",
        "--board",
        "microbit",
        "--app",
        &raw,
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--out",
        &os,
    ]);
    assert!(err.contains("is also an input"), "{err}");
    assert_eq!(std::fs::read(&os).unwrap(), before);
}
