//! Defects found in review, each with the scenario that showed it: stale bytes in the gap
//! between components after a resumed download; a boot that loops when a restore does not take;
//! trial-boot records filling a log unit; resuming with a smaller window; a damaged log unit
//! taking the anti-rollback counters back; an older release replacing a newer download.

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use firmware::boot::{BootConfig, BootError, boot};
use firmware::flash::{FlashLayout, Region, Slot};
use firmware::image::{
    ComponentSource, EncodedImage, HeatshrinkParams, ImageSpec, MAX_WINDOW, ReleaseError, Role,
    encode_image,
};
use firmware::sim::SimFlash;
use firmware::sim::build::{TestKeys, code_like, identity, release};
use firmware::sim::device::SimDevice;
use firmware::state::Record;
use firmware::update::{Agent, AgentConfig, Refusal, UpdateError};

/// 1 KiB pages; slots of `a` and `b` KiB; 8 KiB of state.
fn layout(a: u32, b: u32) -> FlashLayout {
    firmware::sim::build::pages_layout(a, b)
}

/// An image of `(role, name, offset in slot A, length, seed)` components.
fn image(
    layout: &FlashLayout,
    version: &str,
    counter: u32,
    parts: &[(Role, &str, u32, usize, u64)],
    params: HeatshrinkParams,
) -> EncodedImage {
    let slot = layout.slot_layout();
    let spec = ImageSpec {
        board: "b".into(),
        version: version.parse().unwrap(),
        security_counter: counter,
        compression: Some(params),
        components: parts
            .iter()
            .map(|&(role, name, at, len, seed)| ComponentSource {
                role,
                name: name.into(),
                load_address: slot.start + at,
                bytes: code_like(len, seed),
            })
            .collect(),
        slot: Some(slot),
    };
    encode_image(&spec, std::slice::from_ref(&TestKeys::default().build)).unwrap()
}

fn os(len_kib: usize, seed: u64) -> (Role, &'static str, u32, usize, u64) {
    (Role::Os, "os", 0x400, len_kib * 1024, seed)
}

fn device(layout: &FlashLayout, first: &EncodedImage) -> SimDevice {
    let mut d = SimDevice::new(layout.clone(), identity("b", "test", &TestKeys::default()));
    d.provision(&first.bytes).unwrap();
    d.set_counters(1, 0).unwrap();
    d
}

fn config(d: &SimDevice) -> AgentConfig<'_> {
    d.identity.agent_config(d.checkpoint_every)
}

#[test]
fn a_resumed_download_leaves_no_stale_bytes_between_components() {
    let layout = layout(64, 66);
    let p = HeatshrinkParams::DEFAULT;
    let old = image(&layout, "1.0.0", 1, &[os(11, 1)], p);
    let new = image(&layout, "2.0.0", 2, &[os(11, 2), (Role::App, "app", 32 * 1024, 4096, 3)], p);
    let mut d = device(&layout, &old);
    let b = layout.slot(Slot::B);
    d.flash.load(b.offset, &vec![0xA5; b.size as usize]); // what an earlier image left
    let rel = release(&new, "test", 1, &TestKeys::default().environment);
    let app_payload = new.header_len + new.manifest.components()[0].stored_size() as usize;
    let (mut flash, layout2) = (d.flash.clone(), d.layout.clone());
    let mut w = [0u8; MAX_WINDOW];
    let mut agent = Agent::new(&mut flash, &layout2, config(&d), &mut w).unwrap();
    agent.begin(&mut flash, &rel).unwrap();
    // Power is lost just after the app's first payload byte (after its checkpoint).
    agent.feed(&mut flash, &new.bytes[..app_payload + 1]).unwrap();
    drop(agent);
    let mut agent = Agent::new(&mut flash, &layout2, config(&d), &mut w).unwrap();
    let started = agent.begin(&mut flash, &rel).unwrap();
    assert!(started.resume_from > 0);
    agent.feed(&mut flash, &new.bytes[started.resume_from as usize..]).unwrap();
    agent.finish(&mut flash).unwrap();
    drop(agent);
    d.flash = flash;
    assert_eq!(d.boot().unwrap().image.id, new.id);
    let a = layout.slot(Slot::A);
    let gap = d.flash.read_vec(a.offset + 12 * 1024, 20 * 1024);
    assert!(gap.iter().all(|&x| x == 0xFF), "stale bytes in slot A between components");
}

/// Flash with one unit that no longer erases or programs (worn out), counting operations.
struct Stuck {
    inner: SimFlash,
    bad: Region,
    operations: u64,
}

impl ErrorType for Stuck {
    type Error = <SimFlash as ErrorType>::Error;
}

impl ReadNorFlash for Stuck {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl NorFlash for Stuck {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = 1;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.operations += 1;
        if from == self.bad.offset { Ok(()) } else { self.inner.erase(from, to) }
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.operations += 1;
        if offset >= self.bad.offset && offset < self.bad.end() {
            Ok(())
        } else {
            self.inner.write(offset, bytes)
        }
    }
}

#[test]
fn a_restore_that_does_not_take_ends_the_boot() {
    let layout = layout(64, 66);
    let p = HeatshrinkParams::DEFAULT;
    let old = image(&layout, "1.0.0", 1, &[os(11, 1)], p);
    let new = image(&layout, "2.0.0", 1, &[os(11, 2)], p);
    let mut d = device(&layout, &old);
    let rel = release(&new, "test", 1, &TestKeys::default().environment);
    d.download(&rel, &new.bytes, 500, &mut firmware::sim::Rng::new(1)).unwrap();
    d.boot().unwrap();
    d.confirm().unwrap();
    // A unit of slot A goes bad: a bit flips, and it can no longer be erased or programmed.
    let bad = Region { offset: layout.slot(Slot::A).offset + 3 * 1024, size: 1024 };
    let flipped = [d.flash.read_vec(bad.offset + 10, 1)[0] ^ 0x01];
    d.flash.load(bad.offset + 10, &flipped);
    let mut flash = Stuck { inner: d.flash.clone(), bad, operations: 0 };
    let result = boot(&mut flash, &layout, &BootConfig::new(&d.identity.build_keys));
    assert!(matches!(result, Err(BootError::NoBootableImage { .. })), "{result:?}");
    assert!(flash.operations < 200, "{} flash operations", flash.operations);
}

#[test]
fn many_trial_boots_do_not_fill_the_log() {
    let layout = layout(64, 66);
    let p = HeatshrinkParams::DEFAULT;
    let old = image(&layout, "1.0.0", 1, &[os(11, 1)], p);
    let new = image(&layout, "2.0.0", 2, &[os(11, 2)], p);
    let mut d = device(&layout, &old);
    d.trial_boots = 200;
    let rel = release(&new, "test", 1, &TestKeys::default().environment);
    d.download(&rel, &new.bytes, 500, &mut firmware::sim::Rng::new(1)).unwrap();
    for boot in 1..=200 {
        let booted = d.boot().unwrap_or_else(|e| panic!("boot {boot}: {e}"));
        assert!(booted.trial && booted.image.id == new.id, "boot {boot}");
    }
    assert_eq!(d.boot().unwrap().image.id, old.id, "reverted after its trial boots");
    assert_eq!(d.flash.stats().violations, 0);
}

#[test]
fn resuming_with_a_smaller_window_is_refused_not_a_panic() {
    let layout = layout(64, 66);
    let p = HeatshrinkParams::new(12, 5).unwrap();
    let old = image(&layout, "1.0.0", 1, &[os(11, 1)], p);
    let new = image(&layout, "2.0.0", 2, &[os(40, 2)], p);
    let mut d = device(&layout, &old);
    let rel = release(&new, "test", 1, &TestKeys::default().environment);
    let (mut flash, layout2) = (d.flash.clone(), d.layout.clone());
    let mut big = [0u8; 4096];
    let mut agent = Agent::new(&mut flash, &layout2, config(&d), &mut big).unwrap();
    agent.begin(&mut flash, &rel).unwrap();
    agent.feed(&mut flash, &new.bytes[..new.bytes.len() * 3 / 4]).unwrap();
    drop(agent);
    let mut small = [0u8; 2048];
    d.flash = flash.clone();
    let mut agent = Agent::new(&mut flash, &layout2, config(&d), &mut small).unwrap();
    let err = agent.begin(&mut flash, &rel).unwrap_err();
    assert!(
        matches!(err, UpdateError::Refused(Refusal::WindowTooLarge { needed: 4096, have: 2048 })),
        "{err}"
    );
}

#[test]
fn a_damaged_log_unit_does_not_take_the_counters_back() {
    let layout = layout(64, 66);
    let mut d = SimDevice::new(layout.clone(), identity("b", "test", &TestKeys::default()));
    d.set_counters(1, 1).unwrap();
    d.fill_log(0).unwrap(); // the next record moves the log to its next unit
    d.set_counters(7, 9).unwrap();
    // Find the current unit (highest sequence) and flip a bit of its start record.
    let state = layout.state();
    let current = (0..8u32)
        .filter_map(|i| {
            let at = (state.offset + i * 1024) as usize;
            let slot: [u8; 32] = d.flash.read_vec(at as u32, 32).try_into().unwrap();
            match Record::decode(&slot) {
                Some(Record::UnitStart { sequence }) => Some((sequence, at)),
                _ => None,
            }
        })
        .max()
        .unwrap();
    let flipped = [d.flash.read_vec(current.1 as u32 + 28, 1)[0] ^ 0x10];
    d.flash.load(current.1 as u32 + 28, &flipped);
    let s = d.state().unwrap();
    assert_eq!((s.min_security_counter, s.release_sequence), (7, 9));
}

#[test]
fn an_older_release_does_not_replace_a_newer_download() {
    let layout = layout(64, 66);
    let p = HeatshrinkParams::DEFAULT;
    let old = image(&layout, "1.0.0", 1, &[os(11, 1)], p);
    let v2 = image(&layout, "2.0.0", 1, &[os(11, 2)], p);
    let v3 = image(&layout, "3.0.0", 1, &[os(11, 3)], p);
    let d = device(&layout, &old);
    let keys = TestKeys::default();
    let (mut flash, layout2) = (d.flash.clone(), d.layout.clone());
    let mut w = [0u8; MAX_WINDOW];
    let mut agent = Agent::new(&mut flash, &layout2, config(&d), &mut w).unwrap();
    agent.begin(&mut flash, &release(&v3, "test", 10, &keys.environment)).unwrap();
    agent.feed(&mut flash, &v3.bytes[..2000]).unwrap();
    let err = agent.begin(&mut flash, &release(&v2, "test", 7, &keys.environment)).unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Refused(Refusal::Release(ReleaseError::Replayed { got: 7, last: 10 }))
        ),
        "{err}"
    );
}

#[test]
fn a_destroyed_log_restarts_at_the_running_image_counter() {
    let layout = layout(64, 66);
    let old = image(&layout, "1.0.0", 5, &[os(11, 1)], HeatshrinkParams::DEFAULT);
    let mut d = SimDevice::new(layout.clone(), identity("b", "test", &TestKeys::default()));
    d.provision(&old.bytes).unwrap();
    let state = layout.state();
    d.flash.load(state.offset, &vec![0x5A; state.size as usize]);
    assert_eq!(d.boot().unwrap().image.id, old.id);
    assert_eq!(d.state().unwrap().min_security_counter, 5);
}

#[test]
fn misuse_of_the_agent_is_an_error_not_a_write() {
    let layout = layout(64, 66);
    let old = image(&layout, "1.0.0", 1, &[os(11, 1)], HeatshrinkParams::DEFAULT);
    let new = image(&layout, "2.0.0", 2, &[os(11, 2)], HeatshrinkParams::DEFAULT);
    let d = device(&layout, &old);
    let (mut flash, layout2) = (d.flash.clone(), d.layout.clone());
    let mut w = [0u8; MAX_WINDOW];
    let mut agent = Agent::new(&mut flash, &layout2, config(&d), &mut w).unwrap();
    assert!(matches!(agent.feed(&mut flash, &new.bytes[..10]), Err(UpdateError::NotStarted)));
    assert!(matches!(agent.finish(&mut flash), Err(UpdateError::NotStarted)));
    let rel = release(&new, "test", 1, &TestKeys::default().environment);
    agent.begin(&mut flash, &rel).unwrap();
    let mut long = new.bytes.clone();
    long.push(0);
    assert!(matches!(agent.feed(&mut flash, &long), Err(UpdateError::TrailingData)));
    assert_eq!(flash.stats().violations, 0);
}

#[test]
fn a_stream_with_bits_after_its_content_is_refused() {
    use firmware::image::{
        Component, ComponentName, Compression, FeedError, UnpackError, Unpacker, compress,
    };
    let params = HeatshrinkParams::DEFAULT;
    let unpack = |data: &[u8], stream: &[u8]| -> Result<(), UnpackError> {
        let name = ComponentName::try_from("os").unwrap();
        let c = Component::new(
            Role::Os,
            name,
            0,
            data,
            Compression::Heatshrink(params),
            stream.len() as u32,
        );
        let mut window = [0u8; MAX_WINDOW];
        let mut u = Unpacker::new(&c, &mut window).unwrap();
        u.feed(stream, &mut |_: &[u8]| Ok::<(), ()>(())).map_err(|e| match e {
            FeedError::Unpack(e) => e,
            FeedError::Output(()) => unreachable!("the output never fails"),
        })?;
        u.finish().map(|_| ())
    };
    // Setting the lowest bit of the last byte is refused: as a changed token (the content then
    // differs) or, where that bit is padding, as bits after the content.
    let mut padding_seen = 0;
    for seed in 0..16 {
        let data = code_like(3000 + seed as usize, seed);
        let stream = compress(params, &data);
        assert_eq!(unpack(&data, &stream), Ok(()));
        let mut bad = stream.clone();
        *bad.last_mut().unwrap() ^= 1;
        let err = unpack(&data, &bad).expect_err("a changed last bit went unnoticed");
        padding_seen += usize::from(err == UnpackError::TrailingBits);
    }
    assert!(padding_seen > 0, "no stream ended in padding");
}
