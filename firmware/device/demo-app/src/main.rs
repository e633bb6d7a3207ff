//! The demo application: its table at `app_abi::APP_TABLE`, two functions behind it. Built
//! with `--cfg unhealthy` (see `firmware/device/README`), its self-test fails: an image with
//! it never confirms, and the bootloader reverts it.
#![no_std]
#![no_main]

use app_abi::{ABI_VERSION, AppTable, MAGIC};

/// The greeting: which app this is.
const GREETING: &[u8] = concat!("demo app ", env!("CARGO_PKG_VERSION"), "\n").as_bytes();

extern "C" fn greet(out: *mut u8, len: usize) -> usize {
    let n = GREETING.len().min(len);
    // SAFETY: the OS passes a buffer of `len` writable bytes.
    unsafe { core::ptr::copy_nonoverlapping(GREETING.as_ptr(), out, n) };
    n
}

extern "C" fn self_test() -> u32 {
    if cfg!(unhealthy) { 1 } else { 0 }
}

/// The table the OS reads; the linker script puts it first.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".app_table")]
pub static APP: AppTable = AppTable { magic: MAGIC, abi: ABI_VERSION, greet, self_test };

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
