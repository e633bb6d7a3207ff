//! Trust statements: the chain rules (TUF's root rotation), the store's power-fail safety on
//! every shipped geometry, and the agent and the boot logic taking their keys from the newest
//! statement (build-key rotation, prod release-key rotation, soft and hard revocation).

use boards::Catalog;
use ed25519_dalek::SigningKey;
use firmware::flash::{FlashLayout, Region, Slot};
use firmware::image::{ImageError, KeyId, TrustedKey};
use firmware::sim::build::{self, TestKeys};
use firmware::sim::device::SimDevice;
use firmware::sim::{Cut, CutKind, Rng, SimFlash};
use firmware::trust::{
    self, Anchor, EnvironmentKeys, RootKeys, SignedTrust, TrustError, TrustStatement, TrustStore,
};
use firmware::update::{Refusal, UpdateError};
use heapless::Vec as HVec;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(k: &SigningKey) -> [u8; 32] {
    k.verifying_key().to_bytes()
}

fn root_of(keys: &[&SigningKey], threshold: u8) -> RootKeys {
    RootKeys { threshold, keys: keys.iter().map(|k| public(k)).collect() }
}

fn statement(
    version: u32,
    root: RootKeys,
    build: &[&SigningKey],
    retired: &[&SigningKey],
    prod: &SigningKey,
) -> TrustStatement {
    TrustStatement {
        format: trust::TRUST_FORMAT,
        version,
        root,
        build_keys: build.iter().map(|k| public(k)).collect(),
        retired_build_keys: retired.iter().map(|k| public(k)).collect(),
        environments: HVec::from_slice(&[
            EnvironmentKeys {
                name: "prod".try_into().unwrap(),
                keys: HVec::from_slice(&[public(prod)]).unwrap(),
            },
            EnvironmentKeys {
                name: "test".try_into().unwrap(),
                keys: HVec::from_slice(&[public(&TestKeys::default().environment)]).unwrap(),
            },
        ])
        .unwrap(),
    }
}

/// Versions 1 to 4: root r1 (provisioned) → v1 keeps r1; v2 rotates to r2 (signed by r1 and r2);
/// v3 rotates build keys; v4 rotates to r3 with a threshold of 2 (r3a, r3b).
struct Chain {
    r1: SigningKey,
    r2: SigningKey,
    links: Vec<Vec<u8>>,
}

fn chain() -> Chain {
    let (r1, r2, r3a, r3b) = (key(1), key(2), key(3), key(4));
    let (b1, b2, p1) = (key(11), key(12), key(21));
    let v1 = statement(1, root_of(&[&r1], 1), &[&b1], &[], &p1);
    let v2 = statement(2, root_of(&[&r2], 1), &[&b1], &[], &p1);
    let v3 = statement(3, root_of(&[&r2], 1), &[&b2], &[&b1], &p1);
    let v4 = statement(4, root_of(&[&r3a, &r3b], 2), &[&b2], &[&b1], &p1);
    let links = vec![
        SignedTrust::sign(&v1, &[&r1]).unwrap(),
        SignedTrust::sign(&v2, &[&r1, &r2]).unwrap(),
        SignedTrust::sign(&v3, &[&r2]).unwrap(),
        SignedTrust::sign(&v4, &[&r2, &r3a, &r3b]).unwrap(),
    ];
    Chain { r1, r2, links }
}

fn provisioned(c: &Chain) -> Anchor {
    Anchor { version: 0, root: root_of(&[&c.r1], 1) }
}

fn refs(links: &[Vec<u8>]) -> Vec<&[u8]> {
    links.iter().map(Vec::as_slice).collect()
}

#[test]
fn a_device_far_behind_walks_the_chain_through_root_rotations() {
    let c = chain();
    let v1 = trust::walk(&provisioned(&c), refs(&c.links[..1])).unwrap().unwrap();
    let on_v1 = Anchor::of(&v1);
    let newest = trust::walk(&on_v1, refs(&c.links[1..])).unwrap().unwrap();
    assert_eq!(newest.version(), 4);
    assert_eq!(newest.statement().root.threshold, 2);
    // From the factory, all four at once.
    assert_eq!(trust::walk(&provisioned(&c), refs(&c.links)).unwrap().unwrap().version(), 4);
}

#[test]
fn missing_forged_and_replayed_links_are_refused() {
    let c = chain();
    let on_v1 = Anchor::of(&SignedTrust::parse(&c.links[0]).unwrap());
    // v3 and v4 without v2.
    assert_eq!(
        trust::walk(&on_v1, refs(&c.links[2..])).unwrap_err(),
        TrustError::Gap { got: 3, have: 1 }
    );
    // v2 signed by the new root only: the old root never vouched for it.
    let v2 = SignedTrust::parse(&c.links[1]).unwrap().statement().clone();
    let forged = SignedTrust::sign(&v2, &[&c.r2]).unwrap();
    let links = [forged.as_slice(), &c.links[2], &c.links[3]];
    assert_eq!(trust::walk(&on_v1, links).unwrap_err(), TrustError::Threshold { have: 0, need: 1 });
    // v2 signed by the old root only: the new root never held its keys.
    let half = SignedTrust::sign(&v2, &[&c.r1]).unwrap();
    assert_eq!(
        trust::walk(&on_v1, [half.as_slice()]).unwrap_err(),
        TrustError::Threshold { have: 0, need: 1 }
    );
    // v4 with one of the two new root signatures missing.
    let v4 = SignedTrust::parse(&c.links[3]).unwrap().statement().clone();
    let short = SignedTrust::sign(&v4, &[&c.r2, &key(3)]).unwrap();
    let on_v3 = Anchor::of(&SignedTrust::parse(&c.links[2]).unwrap());
    assert_eq!(
        trust::walk(&on_v3, [short.as_slice()]).unwrap_err(),
        TrustError::Threshold { have: 1, need: 2 }
    );
    // A signature damaged in one bit.
    let mut damaged = c.links[1].clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(matches!(trust::walk(&on_v1, [damaged.as_slice()]), Err(TrustError::BadSignature(_))));
    // Replaying v2 to a device on v3.
    assert_eq!(
        trust::accept(&on_v3, &SignedTrust::parse(&c.links[1]).unwrap()),
        Err(TrustError::Replayed { got: 2, have: 3 })
    );
    assert_eq!(
        trust::walk(&on_v3, [c.links[1].as_slice()]).unwrap_err(),
        TrustError::Replayed { got: 2, have: 3 }
    );
    // Every byte of a link matters.
    for i in 0..c.links[1].len() {
        let mut bad = c.links[1].clone();
        bad[i] ^= 0x04;
        assert!(trust::walk(&on_v1, [bad.as_slice()]).is_err(), "byte {i}");
    }
    for n in 0..c.links[1].len() {
        assert!(SignedTrust::parse(&c.links[1][..n]).is_err(), "cut at {n}");
    }
}

#[test]
fn statements_that_break_their_own_rules_are_not_signed_or_read() {
    let (r, b, p) = (key(1), key(11), key(21));
    let good = statement(1, root_of(&[&r], 1), &[&b], &[], &p);
    let mut zero_threshold = good.clone();
    zero_threshold.root.threshold = 0;
    assert_eq!(SignedTrust::sign(&zero_threshold, &[&r]), Err(TrustError::BadThreshold));
    let mut no_build = good.clone();
    no_build.build_keys.clear();
    assert_eq!(SignedTrust::sign(&no_build, &[&r]), Err(TrustError::NoBuildKey));
    let both = statement(1, root_of(&[&r], 1), &[&b], &[&b], &p);
    assert_eq!(SignedTrust::sign(&both, &[&r]), Err(TrustError::DuplicateKey));
    let mut weak = good.clone();
    weak.build_keys[0] = [0; 32];
    assert_eq!(SignedTrust::sign(&weak, &[&r]), Err(TrustError::BadKey));
    let bytes = SignedTrust::sign(&good, &[&r]).unwrap();
    assert!(bytes.len() <= trust::MAX_SIGNED_LEN);
}

/// Each shipped board, with a trust area of its own geometry (the first units of its slot B
/// stand in for the board's trust partition: only the geometry matters to the store).
fn boards() -> Vec<(String, FlashLayout, TrustStore)> {
    let catalog = Catalog::builtin().unwrap();
    ["microbit", "nrf52840dk", "nucleo-f411re", "rpi-pico"]
        .iter()
        .map(|name| {
            let layout = catalog.get(name).unwrap().flash_layout().unwrap();
            let slot_b = layout.slot(Slot::B);
            let store = TrustStore::new(&layout, slot_b).unwrap();
            ((*name).to_owned(), layout, store)
        })
        .collect()
}

fn held(store: &TrustStore, flash: &mut SimFlash) -> Option<Vec<u8>> {
    let mut buf = [0u8; trust::MAX_SIGNED_LEN];
    store.read(flash, &mut buf).unwrap().map(<[u8]>::to_vec)
}

#[test]
fn the_store_keeps_the_newest_and_survives_a_power_cut_at_every_flash_operation() {
    let c = chain();
    let mut cuts = 0;
    for (name, layout, store) in boards() {
        // v1 then v2 into a fresh store, then v3 (over v1's copy) and v4 (over v2's).
        let mut flash = SimFlash::new(&layout);
        let mut before: Option<Vec<u8>> = None;
        for (i, link) in c.links.iter().enumerate() {
            let version = i as u32 + 1;
            // How many flash operations the install takes, counted on a copy.
            let mut probe = flash.clone();
            let start = probe.stats().operations;
            store.install(&mut probe, version, link).unwrap();
            let ops = probe.stats().operations - start;
            assert!(ops >= 2, "{name}: an install programs the body and the header");
            for at in 0..ops {
                for kind in
                    [CutKind::Before, CutKind::After, CutKind::Torn(at), CutKind::Torn(at + 7919)]
                {
                    let mut cut = flash.clone();
                    let base = cut.stats().operations;
                    cut.cut(Some(Cut { at: base + at, kind }));
                    let _ = store.install(&mut cut, version, link);
                    cut.power_on();
                    let now = held(&store, &mut cut);
                    assert!(
                        now == before || now.as_deref() == Some(link.as_slice()),
                        "{name}: v{version}, cut {kind:?} at op {at}: neither the old nor the new statement"
                    );
                    if let Some(bytes) = &now {
                        SignedTrust::parse(bytes).expect("what the store gives back parses");
                    }
                    // The retry completes.
                    if now.as_deref() != Some(link.as_slice()) {
                        store.install(&mut cut, version, link).unwrap();
                    }
                    assert_eq!(held(&store, &mut cut).as_deref(), Some(link.as_slice()), "{name}");
                    assert_eq!(store.version(&mut cut).unwrap(), version);
                    cuts += 1;
                }
            }
            store.install(&mut flash, version, link).unwrap();
            before = Some(link.clone());
        }
    }
    assert!(cuts > 100, "only {cuts} cuts");
}

#[test]
fn a_trust_area_too_small_or_off_the_grid_is_refused() {
    let (_, layout, _) = boards().remove(0);
    let b = layout.slot(Slot::B);
    assert_eq!(
        TrustStore::new(&layout, Region { offset: b.offset, size: 1024 }),
        Err(TrustError::Area)
    );
    assert_eq!(
        TrustStore::new(&layout, Region { offset: b.offset + 4, size: 8192 }),
        Err(TrustError::Area)
    );
}

/// A micro:bit-geometry device whose keys come from trust statements installed in a store.
struct Device {
    sim: SimDevice,
    store: TrustStore,
    provisioned: RootKeys,
}

impl Device {
    fn new(chain: &Chain) -> Self {
        let layout = build::pages_layout(16, 18);
        let keys = TestKeys::default();
        let mut sim = SimDevice::new(layout.clone(), build::identity("sim", "prod", &keys));
        // The trust area: 8 KiB of the test layout's bootloader area, where neither the agent
        // nor the boot logic writes, stands in for a trust partition.
        let store = TrustStore::new(&layout, Region { offset: 8 * 1024, size: 8 * 1024 }).unwrap();
        let old = build::image(&layout, "sim", "1.0.0", 1, 4, 1, &key(11));
        sim.provision(&old.bytes).unwrap();
        sim.set_counters(1, 0).unwrap();
        Device { sim, store, provisioned: root_of(&[&chain.r1], 1) }
    }

    /// Installs `links`, then takes the keys from the newest statement, as the OS does at start.
    fn install(&mut self, links: &[&[u8]], running: &[KeyId]) -> Result<u32, TrustError> {
        let version =
            trust::install(&self.store, &mut self.sim.flash, &self.provisioned, links, running)?;
        self.take_keys();
        Ok(version)
    }

    fn take_keys(&mut self) {
        let mut buf = [0u8; trust::MAX_SIGNED_LEN];
        let bytes = self.store.read(&mut self.sim.flash, &mut buf).unwrap().unwrap();
        let statement = SignedTrust::parse(bytes).unwrap().statement().clone();
        self.sim.identity.build_keys = statement.build_keys().to_vec();
        self.sim.identity.environment_keys = statement.environment_keys("prod").to_vec();
    }
}

fn id(k: &SigningKey) -> KeyId {
    TrustedKey::from_bytes(&public(k)).unwrap().id()
}

fn unknown_key(result: Result<firmware::image::ImageId, UpdateError>) -> bool {
    matches!(result, Err(UpdateError::Refused(Refusal::Image(ImageError::UnknownKey { .. }))))
}

#[test]
fn after_a_build_key_rotation_new_images_install_and_old_key_images_are_refused() {
    let c = chain();
    let mut device = Device::new(&c);
    let mut rng = Rng::new(5);
    // v1..v3: the build key moves from b1 to b2 (b1 retired).
    assert_eq!(device.install(&refs(&c.links[..3]), &[id(&key(11))]).unwrap(), 3);
    let layout = device.sim.layout.clone();
    let prod = key(21);
    let old_key = build::image(&layout, "sim", "2.0.0", 2, 4, 2, &key(11));
    let release = build::release(&old_key, "prod", 1, &prod);
    assert!(unknown_key(device.sim.download(&release, &old_key.bytes, 700, &mut rng)));
    let new_key = build::image(&layout, "sim", "2.0.0", 2, 4, 3, &key(12));
    let release = build::release(&new_key, "prod", 2, &prod);
    assert_eq!(device.sim.download(&release, &new_key.bytes, 700, &mut rng).unwrap(), new_key.id);
}

#[test]
fn releases_by_a_retired_prod_key_are_refused() {
    let c = chain();
    let mut device = Device::new(&c);
    let mut rng = Rng::new(6);
    // A v4 that also rotates prod from p1 to p2, on top of v1..v3.
    let (r2, r3a, r3b) = (key(2), key(3), key(4));
    let v4 = statement(4, root_of(&[&r3a, &r3b], 2), &[&key(12)], &[&key(11)], &key(22));
    let v4 = SignedTrust::sign(&v4, &[&r2, &r3a, &r3b]).unwrap();
    let mut links = refs(&c.links[..3]);
    links.push(&v4);
    assert_eq!(device.install(&links, &[id(&key(11))]).unwrap(), 4);
    let layout = device.sim.layout.clone();
    let image = build::image(&layout, "sim", "2.0.0", 2, 4, 3, &key(12));
    let by_old = build::release(&image, "prod", 1, &key(21));
    assert!(matches!(
        device.sim.download(&by_old, &image.bytes, 700, &mut rng),
        Err(UpdateError::Refused(Refusal::Release(firmware::image::ReleaseError::UnknownKey(_))))
    ));
    let by_new = build::release(&image, "prod", 2, &key(22));
    assert_eq!(device.sim.download(&by_new, &image.bytes, 700, &mut rng).unwrap(), image.id);
}

#[test]
fn a_soft_revoked_running_image_keeps_booting_and_a_hard_revoke_waits_for_its_replacement() {
    let c = chain();
    let mut device = Device::new(&c);
    device.install(&refs(&c.links[..3]), &[id(&key(11))]).unwrap();
    // Soft: b1 is retired in v3; the confirmed image it signed boots under the boot keys.
    let mut buf = [0u8; trust::MAX_SIGNED_LEN];
    let bytes = device.store.read(&mut device.sim.flash, &mut buf).unwrap().unwrap();
    let v3 = SignedTrust::parse(bytes).unwrap().statement().clone();
    device.sim.identity.build_keys = v3.boot_keys().to_vec();
    device.sim.boot().expect("the running image, by a retired key, still boots");
    // Under the install keys alone (b2), the same image would not: that is what retiring means.
    device.sim.identity.build_keys = v3.build_keys().to_vec();
    assert!(device.sim.boot().is_err());
    // Hard: a v4 that drops b1 entirely is refused while the running image is b1's.
    let v4 = statement(4, root_of(&[&key(2)], 1), &[&key(12)], &[], &key(21));
    let v4 = SignedTrust::sign(&v4, &[&key(2)]).unwrap();
    assert_eq!(device.install(&[&v4], &[id(&key(11))]), Err(TrustError::StrandsRunningImage));
    assert_eq!(device.store.version(&mut device.sim.flash).unwrap(), 3, "nothing stored");
    // Once the replacement (by b2) runs, the hard revoke installs.
    assert_eq!(device.install(&[&v4], &[id(&key(12))]).unwrap(), 4);
}

#[path = "support/vector_doc.rs"]
mod vector_doc;

/// The documented vector: version 1, root key of seed 0x01 (threshold 1), build key of seed
/// 0x0b, prod key of seed 0x15, test key of the test keys, signed by the root.
fn vector() -> Vec<u8> {
    let v1 = statement(1, root_of(&[&key(1)], 1), &[&key(11)], &[], &key(21));
    SignedTrust::sign(&v1, &[&key(1)]).unwrap()
}

#[test]
fn the_documented_test_vector_is_what_the_code_signs_and_accepts() {
    let doc = vector_doc::documented("trust.md");
    if std::env::var_os("PRINT_VECTOR").is_some() {
        println!("{}", hex::encode(vector()));
    }
    assert_eq!(doc.bytes, vector());
    let parsed = SignedTrust::parse(&doc.bytes).unwrap();
    assert_eq!(parsed.version().to_string(), doc.field("version"));
    assert_eq!(hex::encode(public(&key(1))), doc.field("root_key"));
    let provisioned = Anchor { version: 0, root: root_of(&[&key(1)], 1) };
    trust::accept(&provisioned, &parsed).unwrap();
}

#[test]
fn the_documented_bound_holds() {
    // docs/trust.md: "At most 916 bytes in all", one 1 KiB page per copy on the micro:bit.
    assert_eq!(trust::MAX_SIGNED_LEN, 916);
}

#[test]
fn the_boot_logic_takes_its_keys_from_the_statement_and_refuses_a_planted_image() {
    let c = chain();
    let mut device = Device::new(&c);
    let mut rng = Rng::new(7);
    device.install(&refs(&c.links[..3]), &[id(&key(11))]).unwrap();
    let layout = device.sim.layout.clone();
    let boot_keys = |device: &mut Device| {
        let mut buf = [0u8; trust::MAX_SIGNED_LEN];
        let bytes = device.store.read(&mut device.sim.flash, &mut buf).unwrap().unwrap();
        SignedTrust::parse(bytes).unwrap().statement().boot_keys().to_vec()
    };
    device.sim.identity.build_keys = boot_keys(&mut device);
    let running = device.sim.boot().unwrap().image.id;
    // Planted: an agent holding a key the statement does not name (b3, leaked and dropped)
    // writes its image into slot B and marks it pending, as a flash writer could.
    let planted = build::image(&layout, "sim", "2.0.0", 2, 4, 9, &key(13));
    let release = build::release(&planted, "prod", 1, &key(21));
    device.sim.identity.build_keys = vec![TrustedKey::from_bytes(&public(&key(13))).unwrap()];
    device.sim.download(&release, &planted.bytes, 700, &mut rng).unwrap();
    // At reset the boot logic checks slot B with the statement's keys.
    device.sim.identity.build_keys = boot_keys(&mut device);
    let booted = device.sim.boot().unwrap();
    assert_eq!(booted.image.id, running, "the planted image is not swapped in");
    assert!(!booted.trial);
    let outcome = device.sim.status().unwrap().outcome.unwrap();
    assert_eq!(
        outcome.kind,
        firmware::state::OutcomeKind::Failed(firmware::state::FailReason::PendingCorrupt)
    );
}
