//! Measures, on a Cortex-M0 (QEMU's micro:bit), the RAM the device code needs: the worst-case
//! stack of signature verification, of a full boot (state log, image hash and signature
//! check), and the size of the structures the boot logic and the agent keep.
//!
//! Run from `firmware/device`: `cargo run --release -p probe` (needs `qemu-system-arm`).
//! The numbers go to `docs/bootloader.md`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use firmware::boot::{BootConfig, boot};
use firmware::image::{Header, TrustedKey, verify_signatures};

/// The format document's test vector, and the public key it verifies with.
static VECTOR: &[u8] = include_bytes!("vector.fwi");
static INSTALLED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vector.installed"));
const PUBLIC_KEY: [u8; 32] = [
    0x03, 0xa1, 0x07, 0xbf, 0xf3, 0xce, 0x10, 0xbe, 0x1d, 0x70, 0xdd, 0x18, 0xe7, 0x4b, 0xc0, 0x99,
    0x67, 0xe4, 0xd6, 0x30, 0x9b, 0xa5, 0x0d, 0x5f, 0x1d, 0xdc, 0x86, 0x64, 0x12, 0x55, 0x31, 0xb8,
];

mod layout;
use layout::{STATE_OFFSET, STATE_SIZE, probe_layout};

static STATE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/state.bin"));

/// Read-only flash for the boot measurement: slot A holds the installed test vector, the state
/// partition a formatted log; everything else reads erased. A boot with nothing to do writes
/// nothing.
struct ProbeFlash;

impl ErrorType for ProbeFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for ProbeFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        for (i, b) in bytes.iter_mut().enumerate() {
            let at = offset as usize + i;
            let state = STATE_OFFSET as usize..STATE_OFFSET as usize + STATE_SIZE;
            *b = if state.contains(&at) {
                STATE[at - state.start]
            } else {
                INSTALLED.get(at).copied().unwrap_or(0xFF)
            };
        }
        Ok(())
    }
    fn capacity(&self) -> usize {
        0x2_0000
    }
}

impl NorFlash for ProbeFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 1024;
    fn erase(&mut self, _: u32, _: u32) -> Result<(), Self::Error> {
        Err(NorFlashErrorKind::Other)
    }
    fn write(&mut self, _: u32, _: &[u8]) -> Result<(), Self::Error> {
        Err(NorFlashErrorKind::Other)
    }
}

/// Runs `f` and returns how many bytes of stack it used at most (by painting the free stack
/// first and finding the lowest word it changed).
fn stack_used<R>(f: impl FnOnce() -> R) -> (usize, R) {
    unsafe extern "C" {
        static __sheap: u32;
    }
    const PAINT: u32 = 0xDEAD_BEEF;
    let bottom = (&raw const __sheap) as usize;
    let sp = cortex_m::register::msp::read() as usize;
    let top = sp - 128;
    // SAFETY: [bottom, top) is free stack below this frame; nothing else uses it now.
    unsafe {
        for at in (bottom..top).step_by(4) {
            (at as *mut u32).write_volatile(PAINT);
        }
    }
    let result = f();
    let mut lowest = bottom;
    // SAFETY: reading the same region back.
    while lowest < top && unsafe { (lowest as *const u32).read_volatile() } == PAINT {
        lowest += 4;
    }
    (sp - lowest, result)
}

#[inline(never)]
fn verify_only(keys: &[TrustedKey]) -> bool {
    Header::parse(VECTOR).is_ok_and(|header| verify_signatures(&header, keys).is_ok())
}

#[inline(never)]
fn full_boot(keys: &[TrustedKey]) -> bool {
    let layout = probe_layout();
    boot(&mut ProbeFlash, &layout, &BootConfig::new(keys)).is_ok()
}

#[inline(never)]
fn boot_hashes_only(keys: &[TrustedKey]) -> bool {
    let layout = probe_layout();
    let config = BootConfig { verify_signatures: false, ..BootConfig::new(keys) };
    boot(&mut ProbeFlash, &layout, &config).is_ok()
}

/// The patch of `docs/delta.md`'s test vector: from `VECTOR` to its v1.0.1.
static DELTA: &[u8] = include_bytes!("delta.fwp");

/// Where the patch's body starts, its layout and its components' installed ranges, read
/// outside the measured frame (the agent reads them in frames of their own).
fn delta_plan() -> Option<(usize, firmware::delta::BodyLayout, [(u32, u32); 2])> {
    use firmware::delta::{PatchPrefix, source_range};
    let prefix = PatchPrefix::parse(DELTA).ok()?;
    let target = Header::parse(DELTA.get(PatchPrefix::LEN..)?).ok()?;
    let source = Header::parse(INSTALLED).ok()?;
    let (start, end) = source_range(source.manifest(), 0x1_0000);
    let mut ranges = [(0, 0); 2];
    for (range, c) in ranges.iter_mut().zip(target.manifest().components()) {
        let at = c.load_address() - 0x1_0000;
        *range = (at, at + c.size());
    }
    Some((PatchPrefix::LEN + target.len(), prefix.body_layout(start, end), ranges))
}

/// Decodes the patch's body, reading the source from the installed test vector: the patch
/// decoder's own stack (the agent adds its frame: a 256-byte output buffer, the hash).
#[inline(never)]
fn decode_delta(
    window: &mut [u8],
    body_start: usize,
    layout: firmware::delta::BodyLayout,
    ranges: &[(u32, u32)],
) -> u32 {
    use firmware::delta::{BodyDecoder, CRC_START, Model};
    let Some(mut model) = Model::new(window) else { return 0 };
    let mut decoder = BodyDecoder::new(layout, 0, CRC_START);
    let mut body = DELTA.get(body_start..).unwrap_or_default();
    // The test vector's patch repeats nothing of its own target: only the source is read.
    let mut read = |_, at: u32, buf: &mut [u8]| ProbeFlash.read(at, buf);
    let mut produced_total = 0;
    for &(start, end) in ranges {
        decoder.start_component(start, start, end);
        let mut out = [0u8; 64];
        while !decoder.component_done() {
            let Ok((taken, produced)) = decoder.step(&mut model, body, &mut out, &mut read) else {
                return 0;
            };
            body = body.get(taken..).unwrap_or_default();
            produced_total += produced as u32;
            if taken == 0 && produced == 0 {
                return 0;
            }
        }
    }
    if decoder.finish().is_err() { 0 } else { produced_total }
}

#[entry]
fn main() -> ! {
    let keys = [TrustedKey::from_bytes(&PUBLIC_KEY).unwrap()];
    let (verify_stack, verified) = stack_used(|| verify_only(&keys));
    hprintln!(
        "signature verify (header parse + Ed25519): ok={} stack={} B",
        verified,
        verify_stack
    );
    let (boot_stack, booted) = stack_used(|| full_boot(&keys));
    hprintln!(
        "boot (state log, component hashes, signature): ok={} stack={} B",
        booted,
        boot_stack
    );
    let (hashes_stack, hashed) = stack_used(|| boot_hashes_only(&keys));
    hprintln!("boot without signature check: ok={} stack={} B", hashed, hashes_stack);
    let mut window = [0u8; 1024];
    if let Some((body_start, layout, ranges)) = delta_plan() {
        let (delta_stack, produced) =
            stack_used(|| decode_delta(&mut window, body_start, layout, &ranges));
        hprintln!("patch body decode (test vector): produced={} B stack={} B", produced, delta_stack);
    }
    use core::mem::size_of;
    hprintln!(
        "sizes: Manifest {} B, Header {} B, StateLog {} B, Agent {} B (+ window {} B), Unpacker {} B, Sha256 {} B",
        size_of::<firmware::image::Manifest>(),
        size_of::<Header>(),
        size_of::<firmware::state::StateLog>(),
        size_of::<firmware::update::Agent>(),
        firmware::image::MAX_WINDOW,
        size_of::<firmware::image::Unpacker>(),
        size_of::<sha2::Sha256>(),
    );
    hprintln!(
        "sizes: UpdateError {} B, SlotError {} B, ImageError {} B, TrustedKey {} B, FlashLayout {} B",
        size_of::<firmware::update::UpdateError>(),
        size_of::<firmware::slot::SlotError>(),
        size_of::<firmware::image::ImageError>(),
        size_of::<TrustedKey>(),
        size_of::<firmware::flash::FlashLayout>(),
    );
    hprintln!(
        "sizes: BodyDecoder {} B (+ model {} B in the window), Refusal {} B",
        size_of::<firmware::delta::BodyDecoder>(),
        firmware::delta::MODEL_BYTES,
        size_of::<firmware::update::Refusal>(),
    );
    hprintln!(
        "free stack for the measurements: {} B",
        cortex_m::register::msp::read() as usize - 0x2000_0000
    );
    debug::exit(if verified && booted && hashed {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
