//! The update agent, `confirm`, `status` and the boot logic on a simulated micro:bit: every
//! refusal leaves slot A untouched and the device running; downloads resume after a reset;
//! trial boots, anti-rollback, signature checks and recovery behave as specified.

use boards::Catalog;
use firmware::boot::BootError;
use firmware::flash::{FlashLayout, Slot};
use firmware::image::{
    ComponentSource, HeatshrinkParams, ImageError, ImageSpec, MAX_WINDOW, ReleaseError, Role,
    encode_image,
};
use firmware::sim::Rng;
use firmware::sim::build::{self, TestKeys, identity, image, release};
use firmware::sim::device::SimDevice;
use firmware::slot::SlotError;
use firmware::state::{FailReason, OutcomeKind, RevertReason};
use firmware::update::{Agent, Confirmation, Refusal, SlotB, UpdateError};

const BOARD: &str = "microbit";
const UNITS: u32 = 8;

fn layout() -> FlashLayout {
    Catalog::builtin().unwrap().get(BOARD).unwrap().flash_layout().unwrap()
}

/// A micro:bit in service running v1 (counter 1), with v2 (counter 2) and its release ready.
struct Bench {
    device: SimDevice,
    keys: TestKeys,
    v1: firmware::image::EncodedImage,
    v2: firmware::image::EncodedImage,
}

fn bench() -> Bench {
    let layout = layout();
    let keys = TestKeys::default();
    let v1 = image(&layout, BOARD, "1.0.0", 1, UNITS, 1, &keys.build);
    let v2 = image(&layout, BOARD, "2.0.0", 2, UNITS, 2, &keys.build);
    let mut device = SimDevice::new(layout, identity(BOARD, "test", &keys));
    device.provision(&v1.bytes).unwrap();
    device.set_counters(1, 10).unwrap();
    assert_eq!(device.boot().unwrap().image.id, v1.id);
    Bench { device, keys, v1, v2 }
}

fn slot_a(device: &SimDevice) -> Vec<u8> {
    let a = device.layout.slot(Slot::A);
    device.flash.read_vec(a.offset, a.size as usize)
}

/// Runs `attempt`; it must fail as `expected` says, and leave slot A and the running image
/// as they were.
fn refused(
    b: &mut Bench,
    attempt: impl FnOnce(&mut Bench) -> Result<(), UpdateError>,
    expected: impl Fn(&UpdateError) -> bool,
) {
    let before = slot_a(&b.device);
    let err = attempt(b).expect_err("must be refused");
    assert!(expected(&err), "unexpected error: {err}");
    assert_eq!(slot_a(&b.device), before, "slot A changed ({err})");
    assert_eq!(b.device.flash.stats().violations, 0);
    let booted = b.device.boot().unwrap();
    assert!(booted.image.id == b.v1.id && !booted.trial, "{err}");
}

fn offer(b: &mut Bench, release_bytes: &[u8], image: &[u8]) -> Result<(), UpdateError> {
    b.device.download(release_bytes, image, 300, &mut Rng::new(5)).map(|_| ())
}

#[test]
fn truncated_stream_is_incomplete_and_can_continue() {
    let mut b = bench();
    b.device.checkpoint_every = 1024;
    let rel = release(&b.v2, "test", 11, &b.keys.environment);
    let cut = b.v2.bytes.len() * 2 / 3;
    let partial = b.v2.bytes[..cut].to_vec();
    refused(&mut b, |b| offer(b, &rel, &partial), |e| matches!(e, UpdateError::Incomplete { .. }));
    // The rest arrives later (after a reset, even): the agent says where to continue.
    let v2 = &b.v2;
    b.device
        .with_agent(|agent, flash| {
            let started = agent.begin(flash, &rel).unwrap();
            assert!(started.resume_from > 0 && started.resume_from as usize <= cut, "{started:?}");
            agent.feed(flash, &v2.bytes[started.resume_from as usize..]).unwrap();
            assert_eq!(agent.finish(flash).unwrap(), v2.id);
        })
        .unwrap();
    let booted = b.device.boot().unwrap();
    assert!(booted.trial && booted.image.id == b.v2.id);
}

/// The agent verifies the header's signature as it arrives, and at `finish` compares what slot B
/// holds with those bytes instead of verifying again: a signature damaged in flash after it was
/// written is caught there, the download abandoned, slot A kept.
#[test]
fn a_header_changed_in_slot_b_before_finish_fails_the_final_check() {
    let mut b = bench();
    let rel = release(&b.v2, "test", 11, &b.keys.environment);
    let layout = b.device.layout.clone();
    let id = b.device.identity.clone();
    let config = id.agent_config(b.device.checkpoint_every);
    let mut window = [0u8; MAX_WINDOW];
    let mut agent = Agent::new(&mut b.device.flash, &layout, config, &mut window).unwrap();
    agent.begin(&mut b.device.flash, &rel).unwrap();
    agent.feed(&mut b.device.flash, &b.v2.bytes).unwrap();
    // The header's last byte is in its last signature; the manifest, and so the id, stay.
    let header_len = firmware::image::Prefix::parse(&b.v2.bytes).unwrap().header_len();
    let at = in_slot_b(&b.device, &b.v2.bytes[..header_len]) + header_len as u32 - 1;
    let byte = b.device.flash.read_vec(at, 1)[0];
    b.device.flash.load(at, &[byte ^ 0x01]);
    let before = slot_a(&b.device);
    let err = agent.finish(&mut b.device.flash).unwrap_err();
    assert!(
        matches!(err, UpdateError::Failed(SlotError::NotAsWritten(o)) if o == header_len as u32 - 1),
        "{err}"
    );
    assert_eq!(slot_a(&b.device), before);
    let booted = b.device.boot().unwrap();
    assert!(booted.image.id == b.v1.id && !booted.trial);
}

/// Where slot B holds the start of `bytes` (the download's header), as a flash offset.
fn in_slot_b(device: &SimDevice, bytes: &[u8]) -> u32 {
    let slot_b = device.layout.slot(Slot::B);
    let data = device.flash.read_vec(slot_b.offset, slot_b.size as usize);
    let at = data.windows(bytes.len()).position(|w| w == bytes).expect("slot B holds it");
    slot_b.offset + at as u32
}

/// A download interrupted after a checkpoint, whose header in slot B was then damaged: taking
/// the same release again starts it over from byte 0 (not a refusal, which would refuse the
/// release for good), and it completes.
#[test]
fn a_resume_over_a_damaged_header_starts_over() {
    for damaged in [0, 20] {
        let mut b = bench();
        b.device.checkpoint_every = 1024;
        let rel = release(&b.v2, "test", 11, &b.keys.environment);
        let partial = b.v2.bytes[..b.v2.bytes.len() * 2 / 3].to_vec();
        assert!(matches!(offer(&mut b, &rel, &partial), Err(UpdateError::Incomplete { .. })));
        // Byte 0 is in the prefix (its magic), byte 20 in the manifest.
        let at = in_slot_b(&b.device, &b.v2.bytes[..64]) + damaged;
        let byte = b.device.flash.read_vec(at, 1)[0];
        b.device.flash.load(at, &[byte ^ 0x01]);
        let v2 = &b.v2;
        b.device
            .with_agent(|agent, flash| {
                let started = agent.begin(flash, &rel).unwrap();
                assert_eq!(started.resume_from, 0, "byte {damaged} damaged");
                agent.feed(flash, &v2.bytes).unwrap();
                assert_eq!(agent.finish(flash).unwrap(), v2.id);
            })
            .unwrap();
        assert_eq!(b.device.boot().unwrap().image.id, b.v2.id);
    }
}

#[test]
fn a_flipped_bit_anywhere_is_refused() {
    let rel_seq = std::cell::Cell::new(20);
    let mut b = bench();
    let len = b.v2.bytes.len();
    let mut rng = Rng::new(9);
    let mut positions: Vec<usize> = (0..b.v2.header_len).step_by(7).collect();
    positions.extend(
        (0..60).map(|_| b.v2.header_len + rng.below((len - b.v2.header_len) as u64) as usize),
    );
    positions.push(len - 1);
    for at in positions {
        let mut bad = b.v2.bytes.clone();
        bad[at] ^= 1 << (at % 8);
        rel_seq.set(rel_seq.get() + 1);
        let rel = release(&b.v2, "test", rel_seq.get(), &b.keys.environment);
        refused(
            &mut b,
            |b| offer(b, &rel, &bad),
            |e| {
                matches!(
                    e,
                    UpdateError::Refused(Refusal::Image(_))
                        | UpdateError::Refused(Refusal::WrongImage { .. })
                ) || matches!(e, UpdateError::Corrupt(_))
            },
        );
    }
    // A corrupt stream that got as far as writing records why.
    let state = b.device.state().unwrap();
    assert!(matches!(state.outcome, Some(o) if o.kind == OutcomeKind::Failed(FailReason::Corrupt)));
}

#[test]
fn wrong_board_unknown_key_and_wrong_image_are_refused() {
    let mut b = bench();
    let layout = b.device.layout.clone();
    let other_board = image(&layout, "nrf52840dk", "2.0.0", 2, UNITS, 2, &b.keys.build);
    let rel = release(&other_board, "test", 11, &b.keys.environment);
    refused(
        &mut b,
        |b| offer(b, &rel, &other_board.bytes),
        |e| matches!(e, UpdateError::Refused(Refusal::WrongBoard { .. })),
    );

    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let unsigned = image(&layout, BOARD, "2.0.0", 2, UNITS, 2, &stranger);
    let rel = release(&unsigned, "test", 11, &b.keys.environment);
    refused(
        &mut b,
        |b| offer(b, &rel, &unsigned.bytes),
        |e| matches!(e, UpdateError::Refused(Refusal::Image(ImageError::UnknownKey { .. }))),
    );

    let rel = release(&b.v2, "test", 11, &b.keys.environment);
    let v1 = b.v1.bytes.clone();
    refused(
        &mut b,
        |b| offer(b, &rel, &v1),
        |e| matches!(e, UpdateError::Refused(Refusal::WrongImage { .. })),
    );
}

#[test]
fn lower_security_counter_is_refused() {
    let mut b = bench();
    let layout = b.device.layout.clone();
    let v0 = image(&layout, BOARD, "2.0.0", 0, UNITS, 2, &b.keys.build);
    let rel = release(&v0, "test", 11, &b.keys.environment);
    refused(
        &mut b,
        |b| offer(b, &rel, &v0.bytes),
        |e| matches!(e, UpdateError::Refused(Refusal::Rollback { counter: 0, min: 1 })),
    );
}

#[test]
fn component_too_large_for_the_slot_is_refused() {
    let mut b = bench();
    let layout = b.device.layout.clone();
    let slot = layout.slot_layout();
    // Built without a layout check: the app runs past the end of slot A.
    let spec = ImageSpec {
        board: BOARD.into(),
        version: "2.0.0".parse().unwrap(),
        security_counter: 2,
        compression: Some(HeatshrinkParams::DEFAULT),
        components: vec![
            ComponentSource {
                role: Role::Os,
                name: "os".into(),
                load_address: slot.image_area_start(),
                bytes: build::code_like(4000, 1),
            },
            ComponentSource {
                role: Role::App,
                name: "app".into(),
                load_address: slot.start + slot.size - 1000,
                bytes: build::code_like(4000, 2),
            },
        ],
        slot: None,
    };
    let big = encode_image(&spec, std::slice::from_ref(&b.keys.build)).unwrap();
    let rel = release(&big, "test", 11, &b.keys.environment);
    refused(
        &mut b,
        |b| offer(b, &rel, &big.bytes),
        |e| matches!(e, UpdateError::Refused(Refusal::TooLarge(_))),
    );
}

#[test]
fn releases_for_other_environments_and_replays_are_refused() {
    let mut b = bench();
    let v2 = b.v2.bytes.clone();
    let prod = release(&b.v2, "prod", 11, &b.keys.environment);
    refused(
        &mut b,
        |b| offer(b, &prod, &v2),
        |e| {
            matches!(
                e,
                UpdateError::Refused(Refusal::Release(ReleaseError::WrongEnvironment { .. }))
            )
        },
    );
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let forged = release(&b.v2, "test", 11, &stranger);
    refused(
        &mut b,
        |b| offer(b, &forged, &v2),
        |e| matches!(e, UpdateError::Refused(Refusal::Release(ReleaseError::UnknownKey(_)))),
    );
    // The agent remembers the last refusal for the OS to report.
    b.device
        .with_agent(|agent, flash| {
            assert!(agent.last_refusal().is_none());
            assert!(agent.begin(flash, &prod).is_err());
            assert!(matches!(
                agent.last_refusal(),
                Some(Refusal::Release(ReleaseError::WrongEnvironment { .. }))
            ));
        })
        .unwrap();
    // The device applied release 10: 10 again, or 9, is a replay.
    for sequence in [10, 9] {
        let old = release(&b.v2, "test", sequence, &b.keys.environment);
        refused(
            &mut b,
            |b| offer(b, &old, &v2),
            |e| {
                matches!(
                    e,
                    UpdateError::Refused(Refusal::Release(ReleaseError::Replayed { last: 10, .. }))
                )
            },
        );
    }
    // A newer release is taken; once applied, the same statement replayed is refused.
    let rel = release(&b.v2, "test", 11, &b.keys.environment);
    offer(&mut b, &rel, &v2).unwrap();
    let err = offer(&mut b, &rel, &v2).unwrap_err();
    assert!(
        matches!(err, UpdateError::Refused(Refusal::Release(ReleaseError::Replayed { .. }))),
        "{err}"
    );
}

#[test]
fn confirm_makes_permanent_and_raises_the_counter() {
    let mut b = bench();
    let rel = release(&b.v2, "test", 11, &b.keys.environment);
    let v2 = b.v2.bytes.clone();
    offer(&mut b, &rel, &v2).unwrap();
    assert!(matches!(b.device.status().unwrap().slot_b, SlotB::Pending(_)));
    let booted = b.device.boot().unwrap();
    assert!(booted.trial && booted.image.id == b.v2.id);
    let status = b.device.status().unwrap();
    assert!(status.trial && status.running.as_ref().unwrap().0 == b.v2.id);
    assert_eq!(b.device.confirm().unwrap(), Confirmation::Confirmed(b.v2.id));
    assert_eq!(b.device.confirm().unwrap(), Confirmation::AlreadyConfirmed(b.v2.id));
    let booted = b.device.boot().unwrap();
    assert!(!booted.trial && booted.image.id == b.v2.id);
    let status = b.device.status().unwrap();
    assert_eq!(status.min_security_counter, 2);
    assert_eq!(status.release_sequence, 11);
    assert_eq!(status.slot_b, SlotB::Previous(b.v1.id));
    assert!(matches!(status.outcome, Some(o) if o.kind == OutcomeKind::Updated));
    // v1 (counter 1) under a new release is now refused.
    let back = release(&b.v1, "test", 12, &b.keys.environment);
    let v1 = b.v1.bytes.clone();
    let err = offer(&mut b, &back, &v1).unwrap_err();
    assert!(matches!(err, UpdateError::Refused(Refusal::Rollback { counter: 1, min: 2 })), "{err}");
}

#[test]
fn an_unconfirmed_image_is_reverted_after_its_trial_boots() {
    for trial_boots in [1u8, 3] {
        let mut b = bench();
        b.device.trial_boots = trial_boots;
        let rel = release(&b.v2, "test", 11, &b.keys.environment);
        let v2 = b.v2.bytes.clone();
        offer(&mut b, &rel, &v2).unwrap();
        for boot in 1..=trial_boots {
            let booted = b.device.boot().unwrap();
            assert!(booted.trial && booted.image.id == b.v2.id, "trial boot {boot}");
        }
        let booted = b.device.boot().unwrap();
        assert!(!booted.trial && booted.image.id == b.v1.id);
        let status = b.device.status().unwrap();
        assert!(
            matches!(status.outcome, Some(o) if o.kind == OutcomeKind::Reverted(RevertReason::NotConfirmed))
        );
        assert_eq!(status.min_security_counter, 1, "a revert does not raise the counter");
        // And it stays reverted.
        assert_eq!(b.device.boot().unwrap().image.id, b.v1.id);
    }
}

#[test]
fn a_damaged_slot_a_is_never_booted() {
    let mut b = bench();
    let a = b.device.layout.slot(Slot::A);
    let mut corrupt = slot_a(&b.device);
    corrupt[0x1000] ^= 0x40;
    b.device.flash.load(a.offset, &corrupt);
    match b.device.boot() {
        Err(BootError::NoBootableImage {
            slot_a: SlotError::Image(ImageError::Component { .. }),
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_damaged_slot_a_is_restored_from_slot_b_when_allowed() {
    // v2 with the same security counter as v1, so v1 stays a valid fallback after the update.
    let mut b = bench();
    let layout = b.device.layout.clone();
    let v2 = image(&layout, BOARD, "1.1.0", 1, UNITS, 3, &b.keys.build);
    let rel = release(&v2, "test", 11, &b.keys.environment);
    offer(&mut b, &rel, &v2.bytes).unwrap();
    b.device.boot().unwrap();
    b.device.confirm().unwrap();
    let a = layout.slot(Slot::A);
    let mut damaged = slot_a(&b.device);
    damaged[0x1800] ^= 1;
    b.device.flash.load(a.offset, &damaged);
    let booted = b.device.boot().unwrap();
    assert_eq!(booted.image.id, b.v1.id);
    let status = b.device.status().unwrap();
    assert!(
        matches!(status.outcome, Some(o) if o.kind == OutcomeKind::Reverted(RevertReason::ImageInvalid))
    );
}

#[test]
fn signature_checks_before_boot_are_configurable() {
    let layout = layout();
    let keys = TestKeys::default();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let foreign = image(&layout, BOARD, "1.0.0", 1, UNITS, 1, &stranger);
    let mut device = SimDevice::new(layout.clone(), identity(BOARD, "test", &keys));
    device.provision(&foreign.bytes).unwrap();
    assert!(matches!(
        device.boot(),
        Err(BootError::NoBootableImage { slot_a: SlotError::Image(ImageError::UnknownKey { .. }) })
    ));
    let config = firmware::boot::BootConfig {
        verify_signatures: false,
        ..firmware::boot::BootConfig::new(&device.identity.build_keys)
    };
    let booted = firmware::boot::boot(&mut device.flash, &layout, &config).unwrap();
    assert_eq!(booted.image.id, foreign.id);
}

#[test]
fn a_device_with_a_small_window_takes_only_what_it_can_decode() {
    let mut b = bench();
    b.device.window = 1024;
    let layout = b.device.layout.clone();
    // The default window (2 KiB) is too large for this device.
    let rel = release(&b.v2, "test", 11, &b.keys.environment);
    let v2 = b.v2.bytes.clone();
    refused(
        &mut b,
        |b| offer(b, &rel, &v2),
        |e| matches!(e, UpdateError::Refused(Refusal::WindowTooLarge { needed: 2048, have: 1024 })),
    );
    // The same content compressed with a 1 KiB window is fine.
    let mut spec_image = image(&layout, BOARD, "2.0.0", 2, UNITS, 2, &b.keys.build);
    let file = &spec_image.bytes;
    let parsed = firmware::image::TransportImage::parse(file).unwrap();
    let slot_start = layout.slot_layout().start;
    let installed = firmware::image::installed_form(file, slot_start, 0xFF).unwrap();
    let components = parsed
        .header()
        .manifest()
        .components()
        .iter()
        .map(|c| {
            let start = (c.load_address() - slot_start) as usize;
            ComponentSource {
                role: c.role(),
                name: c.name().to_string(),
                load_address: c.load_address(),
                bytes: installed[start..start + c.size() as usize].to_vec(),
            }
        })
        .collect();
    let spec = ImageSpec {
        board: BOARD.into(),
        version: "2.0.0".parse().unwrap(),
        security_counter: 2,
        compression: Some(HeatshrinkParams::new(10, 4).unwrap()),
        components,
        slot: Some(layout.slot_layout()),
    };
    spec_image = encode_image(&spec, std::slice::from_ref(&b.keys.build)).unwrap();
    let rel = release(&spec_image, "test", 12, &b.keys.environment);
    offer(&mut b, &rel, &spec_image.bytes).unwrap();
    assert_eq!(b.device.boot().unwrap().image.id, spec_image.id);
}

#[test]
fn a_newer_release_replaces_a_pending_one() {
    let mut b = bench();
    let layout = b.device.layout.clone();
    let v3 = image(&layout, BOARD, "3.0.0", 3, UNITS, 4, &b.keys.build);
    let v2 = b.v2.bytes.clone();
    let (r2, r3) = (
        release(&b.v2, "test", 11, &b.keys.environment),
        release(&v3, "test", 12, &b.keys.environment),
    );
    offer(&mut b, &r2, &v2).unwrap();
    offer(&mut b, &r3, &v3.bytes).unwrap();
    let booted = b.device.boot().unwrap();
    assert!(booted.trial && booted.image.id == v3.id);
}
