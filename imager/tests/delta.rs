//! Patches on real firmware pairs (`tests/fixtures/delta`, built by arm-none-eabi-gcc: a
//! one-line fix, a changed library, a new feature, a compiler-flag change; Cortex-M0 and
//! Cortex-M4): made by `imager::delta::create`, applied by the device's own agent on a
//! simulated flash holding the old image; slot B must hold exactly the new image's installed
//! bytes, with its id, signature and hashes checked.

use std::path::{Path, PathBuf};

use boards::Catalog;
use firmware::image::{TransportImage, TrustedKey, installed_form};
use imager::fuse::{FuseRequest, fuse};

struct Bench {
    catalog: Catalog,
    dir: tempfile::TempDir,
    key: PathBuf,
    public: TrustedKey,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        imager::keys::keygen(&dir.path().join("key")).unwrap();
        let public = imager::keys::read_public_key(&dir.path().join("key.pub.pem")).unwrap();
        Bench { catalog: Catalog::builtin().unwrap(), key: dir.path().join("key.pem"), dir, public }
    }

    fn fuse(&self, board: &str, variant: &str) -> Vec<u8> {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/delta");
        let out = self.dir.path().join(format!("{board}-{variant}.fwi"));
        let request = FuseRequest {
            board: board.into(),
            os: Some(fixtures.join(board).join(format!("{variant}.elf")).display().to_string()),
            app: None,
            data: vec![],
            version: format!("1.0.0-{variant}").parse().unwrap(),
            security_counter: 1,
            keys: vec![self.key.clone()],
            compression: Some(firmware::image::HeatshrinkParams::DEFAULT),
            out: out.clone(),
        };
        fuse(&self.catalog, &request).unwrap().bytes
    }
}

#[test]
fn every_fixture_pair_round_trips_through_the_device_code() {
    let bench = Bench::new();
    let mut pairs = Vec::new();
    for board in ["microbit", "nrf52840dk"] {
        for variant in ["fix", "library", "feature", "flags"] {
            pairs.push((board, "base", variant));
        }
    }
    pairs.push(("microbit", "big", "big-fix"));
    for (board, old_variant, new_variant) in pairs {
        let old = bench.fuse(board, old_variant);
        let new = bench.fuse(board, new_variant);
        let what = format!("{board} {old_variant} -> {new_variant}");
        let created = imager::delta::create(&bench.catalog, &old, &new, None).unwrap();
        let new_id = TransportImage::parse(&new).unwrap().header().id();
        assert_eq!(created.target, new_id, "{what}");
        assert!(created.patch_size < new.len(), "{what}: {} bytes", created.patch_size);
        let applied =
            imager::delta::apply(&bench.catalog, &old, &created.patch.bytes, &[bench.public])
                .unwrap();
        assert_eq!(applied.id, new_id, "{what}");
        let slot = bench.catalog.get(board).unwrap().slot_a_address();
        let expected = installed_form(&new, slot, 0xFF).unwrap();
        assert!(applied.installed == expected, "{what}: slot B is not the target's installed form");
        // The changes small releases make stay small as patches.
        if new_variant.ends_with("fix") {
            assert!(created.ratio < 0.05, "{what}: {:.3} of the image", created.ratio);
        }
    }
}

#[test]
fn apply_refuses_another_source_a_foreign_signature_and_damage() {
    let bench = Bench::new();
    let base = bench.fuse("microbit", "base");
    let fix = bench.fuse("microbit", "fix");
    let library = bench.fuse("microbit", "library");
    let patch = imager::delta::create(&bench.catalog, &base, &fix, None).unwrap().patch.bytes;
    let err = imager::delta::apply(&bench.catalog, &library, &patch, &[bench.public]).unwrap_err();
    assert!(format!("{err:#}").contains("the patch applies to image"), "{err:#}");
    let stranger = Bench::new();
    let err = imager::delta::apply(&bench.catalog, &base, &patch, &[stranger.public]).unwrap_err();
    assert!(format!("{err:#}").contains("none of which is trusted"), "{err:#}");
    let mut damaged = patch.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    let err = imager::delta::apply(&bench.catalog, &base, &damaged, &[bench.public]).unwrap_err();
    assert!(format!("{err:#}").contains("corrupt patch"), "{err:#}");
    let err = imager::delta::create(&bench.catalog, &base, &base, None).unwrap_err();
    assert!(format!("{err:#}").contains("same image"), "{err:#}");
    let nrf = bench.fuse("nrf52840dk", "fix");
    let err = imager::delta::create(&bench.catalog, &base, &nrf, None).unwrap_err();
    assert!(format!("{err:#}").contains("one board"), "{err:#}");
}
