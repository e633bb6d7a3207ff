//! Images, keys and update scenarios for simulated devices.

use std::string::String;
use std::vec::Vec;

use ed25519_dalek::SigningKey;

use super::Rng;
use super::device::{Ending, Identity, Scenario, SimDevice};
use crate::delta::{PatchOptions, create_patch};
use crate::flash::{FlashLayout, LayoutSpec, Region, SectorRun, Slot};
use crate::image::{
    ComponentSource, EncodedImage, HeatshrinkParams, ImageSpec, ReleaseStatement, Role,
    SignedRelease, TrustedKey, Version, encode_image,
};

/// Fixed test keys (never for anything real).
#[derive(Clone, Debug)]
pub struct TestKeys {
    /// Signs images.
    pub build: SigningKey,
    /// Signs release statements.
    pub environment: SigningKey,
}

impl Default for TestKeys {
    fn default() -> Self {
        TestKeys {
            build: SigningKey::from_bytes(&[0x42; 32]),
            environment: SigningKey::from_bytes(&[0x43; 32]),
        }
    }
}

/// The public half of a signing key, trusted.
pub fn trusted(key: &SigningKey) -> TrustedKey {
    // A key made from 32 bytes by ed25519-dalek is never weak.
    TrustedKey::from_bytes(&key.verifying_key().to_bytes()).expect("a valid key")
}

/// A device identity trusting `keys`, in environment `environment`.
pub fn identity(board: &str, environment: &str, keys: &TestKeys) -> Identity {
    Identity {
        board: board.into(),
        build_keys: std::vec![trusted(&keys.build)],
        environment: environment.into(),
        environment_keys: std::vec![trusted(&keys.environment)],
    }
}

/// Bytes that compress like Thumb code: common instruction halfwords, literals, and noise. Some
/// start with a run of zeros, which encoders code as references to the zeroed window before the
/// start of the stream.
pub fn code_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let zeros = if seed.is_multiple_of(2) { 48.min(len) } else { 0 };
    let words = [0x4770u16, 0xB510, 0xBD10, 0x2000, 0x6803, 0x4618, 0xF000, 0xE7FE, 0x2101, 0x4B02];
    let mut out = Vec::with_capacity(len + 2);
    out.resize(zeros, 0);
    while out.len() < len {
        let r = rng.next_u64();
        let word = if r.is_multiple_of(3) {
            (r >> 16) as u16
        } else {
            words[(r >> 8) as usize % words.len()]
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Installed bytes of the first `units` erase units of slot A.
pub fn span(layout: &FlashLayout, units: u32) -> u32 {
    (0..units).filter_map(|i| layout.unit(layout.slot(Slot::A), i)).map(|u| u.size).sum()
}

/// `bytes` changed the way a small release changes code, keeping its length: a few bytes
/// rewritten here and there, and a run inserted with as many bytes deleted further on, so that
/// what lies between moves (and would need its addresses changed in real code).
pub fn edited(bytes: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = bytes.to_vec();
    let len = out.len();
    if len < 64 {
        return out;
    }
    for _ in 0..4 {
        let at = rng.below(len as u64) as usize;
        out[at] ^= 1 + rng.below(255) as u8;
    }
    let at = rng.below(len as u64 / 2) as usize;
    let n = 1 + rng.below(24) as usize;
    let inserted: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    out.splice(at..at, inserted);
    let cut = (at + n + rng.below(len as u64 / 2) as usize).min(out.len() - n);
    out.drain(cut..cut + n);
    out
}

/// A signed image whose installed form ends inside erase unit `units - 1` of slot A: an OS
/// from the link address, an app and a data part further on.
pub fn image(
    layout: &FlashLayout,
    board: &str,
    version: &str,
    security_counter: u32,
    units: u32,
    seed: u64,
    key: &SigningKey,
) -> EncodedImage {
    edited_image(layout, board, version, security_counter, units, seed, None, key)
}

/// [`image`], with every component [`edited`] with seed `edit` when it is given: the next
/// release of the same firmware.
#[allow(clippy::too_many_arguments)]
pub fn edited_image(
    layout: &FlashLayout,
    board: &str,
    version: &str,
    security_counter: u32,
    units: u32,
    seed: u64,
    edit: Option<u64>,
    key: &SigningKey,
) -> EncodedImage {
    let slot = layout.slot_layout();
    let end = span(layout, units) - 96;
    let header = slot.header_size;
    let app_at = (header + (end - header) * 11 / 20 + 64) & !3;
    let data_at = (header + (end - header) * 9 / 10 + 128) & !3;
    let component = |role, name: &str, from: u32, to: u32, salt| ComponentSource {
        role,
        name: name.into(),
        load_address: slot.start + from,
        bytes: {
            let bytes = code_like((to - from) as usize, seed ^ salt);
            edit.map_or(bytes.clone(), |e| edited(&bytes, e ^ salt))
        },
    };
    let spec = ImageSpec {
        board: board.into(),
        version: version.parse::<Version>().expect("a valid version"),
        security_counter,
        compression: Some(HeatshrinkParams::DEFAULT),
        components: std::vec![
            component(Role::Os, "os", header, app_at - 32, 1),
            component(Role::App, "app", app_at, data_at - 16, 2),
            component(Role::Data, "tables", data_at, end, 3),
        ],
        slot: Some(slot),
    };
    encode_image(&spec, core::slice::from_ref(key)).expect("the test image builds")
}

/// The signed release statement for `image` in `environment`.
pub fn release(
    image: &EncodedImage,
    environment: &str,
    sequence: u64,
    key: &SigningKey,
) -> Vec<u8> {
    let statement = ReleaseStatement::new(image.id, environment, sequence).expect("a valid name");
    SignedRelease::sign(&statement, key)
}

/// A device on `layout` provisioned with v1 (`units` units), about to be offered v2 (same size,
/// different content, higher security counter), which ends as `ending` says.
pub fn scenario(
    layout: &FlashLayout,
    board: &str,
    units: u32,
    ending: Ending,
    seed: u64,
) -> Scenario {
    let keys = TestKeys::default();
    let old = image(layout, board, "1.0.0", 1, units, seed, &keys.build);
    let new = image(layout, board, "2.0.0", 2, units, seed.wrapping_add(1), &keys.build);
    scenario_of(layout, board, &old, &new, ending, &keys)
}

/// A device on `layout` provisioned with `old` (in service, confirmed), about to be offered
/// `new`, which ends as `ending` says.
fn scenario_of(
    layout: &FlashLayout,
    board: &str,
    old: &EncodedImage,
    new: &EncodedImage,
    ending: Ending,
    keys: &TestKeys,
) -> Scenario {
    let mut device = SimDevice::new(layout.clone(), identity(board, "test", keys));
    device.provision(&old.bytes).expect("the old image installs");
    // In service: the old image (counter 1) was confirmed, release 0 applied.
    device.set_counters(1, 0).expect("the state log formats");
    Scenario {
        device,
        old: old.id,
        new_image: new.bytes.clone(),
        patch: None,
        new: new.id,
        release: release(new, "test", 1, &keys.environment),
        ending,
        max_chunk: 700,
    }
}

/// [`scenario`], the update coming as a patch: v2 is v1 [`edited`] (a small release), and the
/// patch's segments start at every erase unit of slot A (up to 64 KiB), so that a download cut
/// anywhere resumes from the last unit done.
pub fn delta_scenario(
    layout: &FlashLayout,
    board: &str,
    units: u32,
    ending: Ending,
    seed: u64,
) -> Scenario {
    let keys = TestKeys::default();
    let old = image(layout, board, "1.0.0", 1, units, seed, &keys.build);
    let new = edited_image(layout, board, "2.0.0", 2, units, seed, Some(seed + 1), &keys.build);
    let mut s = scenario_of(layout, board, &old, &new, ending, &keys);
    let unit = layout.unit(layout.slot(Slot::A), 0).map_or(1024, |u| u.size);
    let options = PatchOptions { block_shift: (31 - unit.leading_zeros()).clamp(10, 16) as u8 };
    let slot_start = layout.base() + layout.slot(Slot::A).offset;
    let patch = create_patch(&old.bytes, &new.bytes, slot_start, layout.erased(), &options)
        .expect("the patch builds");
    s.patch = Some(patch.bytes);
    s
}

/// nRF51-like geometry for tests and benchmarks: 1 KiB pages, 4-byte write unit, erased 0xFF;
/// 16 KiB for a bootloader, slot A of `a_kib` KiB, slot B of `b_kib` KiB, 8 KiB of state.
pub fn pages_layout(a_kib: u32, b_kib: u32) -> FlashLayout {
    let kib = 1024;
    FlashLayout::new(LayoutSpec {
        base: 0,
        sectors: &[SectorRun { size: kib, count: 16 + a_kib + b_kib + 8 }],
        write_unit: 4,
        erased: 0xFF,
        slot_a: Region { offset: 16 * kib, size: a_kib * kib },
        slot_b: Region { offset: (16 + a_kib) * kib, size: b_kib * kib },
        state: Region { offset: (16 + a_kib + b_kib) * kib, size: 8 * kib },
        header_size: 0x400,
    })
    .expect("slots of at least 2 KiB, slot B at least one page larger")
}

/// A name for a board's geometry in reports.
pub fn describe(layout: &FlashLayout) -> String {
    let sizes: Vec<String> =
        layout.sectors().iter().map(|r| std::format!("{}x{}K", r.count, r.size / 1024)).collect();
    std::format!("{} sectors, write unit {}", sizes.join("+"), layout.write_unit())
}
