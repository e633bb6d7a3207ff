//! Patches in memory: made by the encoder, applied by the device's decoder, on images that
//! change the way releases do; and every kind of damage to a patch is caught.

use firmware::delta::{
    ApplyError, CRC_START, PatchOptions, PatchPrefix, apply_installed, crc_update, crc_value,
    create_patch,
};
use firmware::flash::Slot;
use firmware::image::installed_form;
use firmware::sim::build::{TestKeys, edited_image, image, pages_layout};

#[test]
fn a_patch_rebuilds_the_target_exactly() {
    let layout = pages_layout(112, 112);
    let keys = TestKeys::default();
    let start = layout.base() + layout.slot(Slot::A).offset;
    let old = image(&layout, "r1", "1.0.0", 1, 40, 3, &keys.build);
    for (what, new) in [
        ("same components", image(&layout, "r1", "1.0.1", 1, 40, 3, &keys.build)),
        ("edited", edited_image(&layout, "r1", "1.1.0", 1, 40, 3, Some(9), &keys.build)),
        ("unrelated", image(&layout, "r1", "2.0.0", 2, 40, 4, &keys.build)),
    ] {
        for shift in [10, 12, 16] {
            let options = PatchOptions { block_shift: shift };
            let patch = create_patch(&old.bytes, &new.bytes, start, 0xFF, &options).unwrap();
            let source = installed_form(&old.bytes, start, 0xFF).unwrap();
            let rebuilt = apply_installed(&source, &patch.bytes, start, 0xFF).unwrap();
            let expected = installed_form(&new.bytes, start, 0xFF).unwrap();
            assert!(rebuilt == expected, "{what}, block shift {shift}");
            println!(
                "{what}, block shift {shift}: image {} bytes, patch {} bytes",
                new.bytes.len(),
                patch.bytes.len()
            );
        }
    }
}

#[test]
fn a_patch_for_another_source_is_refused() {
    let layout = pages_layout(112, 112);
    let keys = TestKeys::default();
    let start = layout.base() + layout.slot(Slot::A).offset;
    let old = image(&layout, "r1", "1.0.0", 1, 20, 3, &keys.build);
    let other = image(&layout, "r1", "1.0.0", 1, 20, 5, &keys.build);
    let new = edited_image(&layout, "r1", "1.1.0", 1, 20, 3, Some(9), &keys.build);
    let patch =
        create_patch(&old.bytes, &new.bytes, start, 0xFF, &PatchOptions::default()).unwrap();
    let source = installed_form(&other.bytes, start, 0xFF).unwrap();
    let err = apply_installed(&source, &patch.bytes, start, 0xFF).unwrap_err();
    assert!(matches!(err, ApplyError::WrongSource { .. }), "{err}");
}

mod device {
    use super::*;
    use boards::Catalog;
    use firmware::sim::Rng;
    use firmware::sim::build::delta_scenario;
    use firmware::sim::device::{Ending, SimDevice};
    use firmware::update::{Refusal, UpdateError};

    const P: usize = firmware::delta::PatchPrefix::LEN;

    fn slot_a(device: &SimDevice) -> Vec<u8> {
        let a = device.layout.slot(Slot::A);
        device.flash.read_vec(a.offset, a.size as usize)
    }

    #[test]
    fn a_device_installs_a_patch_and_runs_the_target() {
        for board in ["microbit", "nrf52840dk", "nucleo-f411re", "rpi-pico"] {
            let layout = Catalog::builtin().unwrap().get(board).unwrap().flash_layout().unwrap();
            let s = delta_scenario(&layout, board, 6, Ending::Confirm, 11);
            let mut device = s.device.clone();
            let patch = s.patch.clone().unwrap();
            for max_chunk in [1, 7, 700, 1 << 20] {
                let mut device = device.clone();
                let id = device.download_patch(&s.release, &patch, max_chunk, &mut Rng::new(1));
                assert_eq!(id.unwrap(), s.new, "{board}, chunks up to {max_chunk}");
                let booted = device.boot().unwrap();
                assert_eq!(booted.image.id, s.new);
                assert!(booted.trial);
            }
            let report = s.run(None, None, 3);
            assert_eq!(report.failure, None, "{board}");
            assert_eq!(report.running, Some(s.new));
            // The patch is much smaller than the image.
            assert!(
                patch.len() * 3 < s.new_image.len(),
                "{board}: {} vs {}",
                patch.len(),
                s.new_image.len()
            );
            let _ = device.boot();
        }
    }

    #[test]
    fn a_patch_for_another_source_is_refused_before_anything_is_written() {
        let layout = Catalog::builtin().unwrap().get("microbit").unwrap().flash_layout().unwrap();
        let s = delta_scenario(&layout, "microbit", 6, Ending::Confirm, 11);
        let keys = TestKeys::default();
        let other = image(&layout, "microbit", "1.0.0", 1, 6, 12, &keys.build);
        let start = layout.base() + layout.slot(Slot::A).offset;
        let patch = create_patch(&other.bytes, &s.new_image, start, 0xFF, &PatchOptions::default())
            .unwrap();
        let mut device = s.device.clone();
        let before = device.flash.data();
        let stats = device.flash.stats();
        let err =
            device.download_patch(&s.release, &patch.bytes, 100, &mut Rng::new(1)).unwrap_err();
        assert!(
            matches!(err, UpdateError::Refused(Refusal::WrongSource { patch, slot_a })
                if patch == other.id && slot_a == s.old),
            "{err}"
        );
        assert!(device.flash.data() == before, "nothing written");
        assert_eq!(device.flash.stats().erases, stats.erases);
        assert_eq!(device.boot().unwrap().image.id, s.old);
    }

    /// Flips `mask` into byte `at` of the patch (or truncates it, or appends to it), feeds it
    /// to a fresh copy of the device, and checks that it fails, that slot A is untouched and
    /// that the old image still boots; with `nothing_written`, that no flash byte changed.
    fn damaged(
        s: &firmware::sim::device::Scenario,
        patch: &[u8],
        what: &str,
        nothing_written: bool,
    ) -> UpdateError {
        let mut device = s.device.clone();
        let before = device.flash.data();
        let a = slot_a(&device);
        let err = device.download_patch(&s.release, patch, 97, &mut Rng::new(3)).expect_err(what);
        assert!(slot_a(&device) == a, "{what}: slot A changed");
        if nothing_written {
            assert!(device.flash.data() == before, "{what}: flash written before the refusal");
        }
        let booted = device.boot().unwrap();
        assert_eq!(booted.image.id, s.old, "{what}");
        assert!(!booted.trial, "{what}");
        err
    }

    #[test]
    fn every_damage_to_a_patch_is_refused_with_slot_a_untouched() {
        let layout = Catalog::builtin().unwrap().get("microbit").unwrap().flash_layout().unwrap();
        let s = delta_scenario(&layout, "microbit", 8, Ending::Confirm, 21);
        let patch = s.patch.clone().unwrap();
        let header_end = P + firmware::image::Prefix::parse(&patch[P..]).unwrap().header_len();
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        let mut note = |err: &UpdateError| {
            let kind = format!("{err:?}");
            *kinds.entry(kind.split(['(', ' ', '{']).take(2).collect()).or_default() += 1;
        };
        // Every byte of the fixed start: refused by its checksum (or magic) before writing.
        for at in 0..P {
            let mut bad = patch.clone();
            bad[at] ^= 0x10;
            let err = damaged(&s, &bad, &format!("prefix byte {at}"), true);
            assert!(matches!(err, UpdateError::Refused(Refusal::Patch(_))), "prefix {at}: {err}");
        }
        // The carried header: refused (format or signature) before writing.
        for at in (P..header_end).step_by(3) {
            let mut bad = patch.clone();
            bad[at] ^= 0x01;
            let err = damaged(&s, &bad, &format!("header byte {at}"), true);
            assert!(matches!(err, UpdateError::Refused(_)), "header {at}: {err}");
            note(&err);
        }
        // The body: op headers, differences, literals, in every segment.
        for at in header_end..patch.len() {
            for mask in [0x01, 0x80] {
                let mut bad = patch.clone();
                bad[at] ^= mask;
                let err = damaged(&s, &bad, &format!("body byte {at} ^ {mask:#x}"), false);
                assert!(
                    matches!(err, UpdateError::CorruptPatch(_) | UpdateError::Corrupt(_)),
                    "body {at}: {err}"
                );
                note(&err);
            }
        }
        // Truncated anywhere, and bytes appended.
        for len in
            [0, 3, P - 1, P, P + 1, header_end - 1, header_end, header_end + 1, patch.len() - 1]
        {
            let err = damaged(&s, &patch[..len], &format!("truncated to {len}"), len < header_end);
            assert!(matches!(err, UpdateError::Incomplete { .. }), "truncated to {len}: {err}");
        }
        for extra in [&[0u8][..], &[0xFF; 100]] {
            let mut long = patch.clone();
            long.extend_from_slice(extra);
            let err = damaged(&s, &long, "appended", false);
            assert!(matches!(err, UpdateError::TrailingData), "appended: {err}");
        }
        // A full image fed as a patch, and a patch fed as an image.
        let err = damaged(&s, &s.new_image, "image as a patch", true);
        assert!(matches!(err, UpdateError::Refused(Refusal::Patch(_))), "{err}");
        let mut device = s.device.clone();
        let err = device.download(&s.release, &patch, 50, &mut Rng::new(1)).unwrap_err();
        assert!(matches!(err, UpdateError::Refused(Refusal::Image(_))), "{err}");
        println!("{kinds:#?}");
    }

    #[test]
    fn an_interrupted_patch_download_resumes_from_its_checkpoint() {
        let layout = Catalog::builtin().unwrap().get("microbit").unwrap().flash_layout().unwrap();
        let s = delta_scenario(&layout, "microbit", 8, Ending::Confirm, 21);
        let patch = s.patch.clone().unwrap();
        let mut device = s.device.clone();
        device.checkpoint_every = 1;
        let header_end = P + firmware::image::Prefix::parse(&patch[P..]).unwrap().header_len();
        let half = header_end + (patch.len() - header_end) * 2 / 3;
        device
            .with_agent(|agent, flash| {
                assert_eq!(agent.begin_patch(flash, &s.release).unwrap().resume_from, 0);
                agent.feed(flash, &patch[..half]).unwrap();
            })
            .unwrap();
        // A reset; the agent is made again, as the OS would.
        let resumed = device
            .with_agent(|agent, flash| {
                let from = agent.begin_patch(flash, &s.release).unwrap().resume_from as usize;
                assert!(
                    from > header_end && from <= half,
                    "resumes from {from} of {}",
                    patch.len()
                );
                agent.feed(flash, &patch[from..]).unwrap();
                agent.finish(flash).unwrap();
                from
            })
            .unwrap();
        assert_eq!(device.boot().unwrap().image.id, s.new, "resumed from {resumed}");
        // The same download offered as the full image starts again from the beginning.
        let mut device = s.device.clone();
        device.checkpoint_every = 1;
        device
            .with_agent(|agent, flash| {
                agent.begin_patch(flash, &s.release).unwrap();
                agent.feed(flash, &patch[..half]).unwrap();
            })
            .unwrap();
        let id = device.download(&s.release, &s.new_image, 300, &mut Rng::new(2)).unwrap();
        assert_eq!(id, s.new);
    }

    /// A patch whose fixed start and header are sound (checksums recomputed) but whose body is
    /// anything at all: every op the decoder can read out of it is checked, nothing panics,
    /// and the device refuses it with slot A untouched.
    #[test]
    fn any_body_behind_a_sound_header_is_refused_without_panicking() {
        let layout = Catalog::builtin().unwrap().get("microbit").unwrap().flash_layout().unwrap();
        let s = delta_scenario(&layout, "microbit", 6, Ending::Confirm, 31);
        let patch = s.patch.clone().unwrap();
        let prefix = PatchPrefix::parse(&patch).unwrap();
        let header_end = P + firmware::image::Prefix::parse(&patch[P..]).unwrap().header_len();
        let start = layout.base() + layout.slot(Slot::A).offset;
        let keys = TestKeys::default();
        let old = image(&layout, "microbit", "1.0.0", 1, 6, 31, &keys.build);
        let source = installed_form(&old.bytes, start, 0xFF).unwrap();
        let mut rng = Rng::new(77);
        for round in 0..300 {
            let len = rng.below(600) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if round % 3 == 0 {
                // Mostly the real body, partly garbage: gets further into the segments.
                body = patch[header_end..].to_vec();
                let at = rng.below(body.len() as u64) as usize;
                for byte in &mut body[at..] {
                    *byte = rng.next_u64() as u8;
                }
            }
            let crc = crc_value(body.iter().fold(CRC_START, |c, &b| crc_update(c, b)));
            let fixed = PatchPrefix { body_len: body.len() as u32, body_crc: crc, ..prefix };
            let mut bad = fixed.encode().to_vec();
            bad.extend_from_slice(&patch[P..header_end]);
            bad.extend_from_slice(&body);
            // In memory: an error, or bytes the hashes will refuse; never a panic.
            let _ = apply_installed(&source, &bad, start, 0xFF);
            if round % 10 == 0 {
                let err = damaged(&s, &bad, &format!("random body {round}"), false);
                assert!(
                    matches!(err, UpdateError::CorruptPatch(_) | UpdateError::Corrupt(_)),
                    "round {round}: {err}"
                );
            }
        }
    }

    /// The micro:bit's OS lends the agent 1 KiB: the patch model fits it; a device lending
    /// less is refused by name before anything is written.
    #[test]
    fn a_one_kib_window_takes_a_patch_and_a_smaller_one_is_refused() {
        let layout = Catalog::builtin().unwrap().get("microbit").unwrap().flash_layout().unwrap();
        let s = delta_scenario(&layout, "microbit", 6, Ending::Confirm, 41);
        let patch = s.patch.clone().unwrap();
        let mut device = s.device.clone();
        device.window = 1024;
        let id = device.download_patch(&s.release, &patch, 64, &mut Rng::new(2)).unwrap();
        assert_eq!(id, s.new);
        let mut device = s.device.clone();
        device.window = 512;
        let before = device.flash.data();
        let err = device.download_patch(&s.release, &patch, 64, &mut Rng::new(2)).unwrap_err();
        let needed = firmware::delta::MODEL_BYTES;
        assert!(
            matches!(err, UpdateError::Refused(Refusal::WindowTooLarge { needed: n, have: 512 }) if n == needed),
            "{err}"
        );
        assert!(device.flash.data() == before);
    }
}
