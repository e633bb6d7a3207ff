//! The micro:bit bootloader: runs the `firmware` crate's boot logic (resume or start a swap,
//! trial boots, revert, checks of header, board, hashes, signature and security counter) over
//! the NVMC, then hands over to the OS in slot A.
//!
//! Hand-over, without VTOR (the Cortex-M0 has none): the OS's vector table sits at a fixed
//! address, slot A's first byte after the image header ([`board::OS_VECTORS`]). The bootloader
//! loads the OS's initial stack pointer and reset vector from it and branches; it never enables
//! interrupts itself. Its own vector table (at 0) forwards every exception and interrupt to the
//! OS's handler for the same vector number (see [`forward`]). The OS must not write VTOR:
//! QEMU emulates one, the chip has none.
//!
//! Board and keys are fixed at build time (`build.rs`): `FWI_BOOT_KEYS` names the build
//! public keys it trusts. Build: `FWI_BOOT_KEYS=build.pub.pem cargo build --release -p
//! bootloader` in `firmware/device`.
#![no_std]
#![no_main]

mod forward;
mod nvmc;

mod board {
    use firmware::flash::{LayoutSpec, Region, SectorRun};
    include!(concat!(env!("OUT_DIR"), "/board.rs"));
}

use cortex_m_rt::entry;
use firmware::boot::{BootConfig, boot};
use firmware::flash::FlashLayout;
use firmware::image::TrustedKey;

/// Trial boots an image gets before it is reverted unless it confirms itself.
const TRIAL_BOOTS: u8 = 2;

#[entry]
fn main() -> ! {
    measure::start();
    let Ok(layout) = FlashLayout::new(board::SPEC) else { halt() };
    let trusted = board::KEYS.map(|raw| TrustedKey::from_bytes(&raw).unwrap_or_else(|_| halt()));
    let config = BootConfig {
        board: Some(board::BOARD),
        keys: &trusted,
        verify_signatures: true,
        trial_boots: TRIAL_BOOTS,
    };
    let lowest =
        board::SPEC.slot_a.offset.min(board::SPEC.slot_b.offset).min(board::SPEC.state.offset);
    let mut flash = nvmc::Nvmc { size: board::FLASH_SIZE, lowest, page: 1024 };
    let booted = boot(&mut flash, &layout, &config);
    measure::hand_over(booted.is_ok());
    if booted.is_err() {
        // No image passes its checks: nothing safe to run.
        halt();
    }
    // SAFETY: the boot logic checked slot A's image (header, hashes, signature); its first
    // component starts with the OS's vector table at OS_VECTORS.
    unsafe { jump(board::OS_VECTORS) }
}

/// Sets MSP and branches to the reset vector of the vector table at `table`.
///
/// # Safety
/// `table` must hold a valid initial stack pointer and reset vector.
unsafe fn jump(table: u32) -> ! {
    // SAFETY: the caller vouches for the table; reading two words of flash.
    let (sp, pc) = unsafe {
        ((table as *const u32).read_volatile(), ((table + 4) as *const u32).read_volatile())
    };
    // SAFETY: the new stack and entry point are the OS's; nothing of ours runs after this.
    unsafe {
        core::arch::asm!("msr msp, {sp}", "bx {pc}", sp = in(reg) sp, pc = in(reg) pc, options(noreturn))
    }
}

fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    halt()
}

/// The reset-to-hand-over measurement (feature `measure`): TIMER0 at 16 MHz from the first
/// instruction of `main`, captured at hand-over; under `-icount shift=0` one tick is 62.5
/// instructions.
mod measure {
    #[cfg(feature = "measure")]
    const TIMER0: usize = 0x4000_8000;

    /// Starts TIMER0.
    pub fn start() {
        #[cfg(feature = "measure")]
        // SAFETY: TIMER0's BITMODE, PRESCALER and TASKS_START registers; the timer is unused.
        unsafe {
            ((TIMER0 + 0x508) as *mut u32).write_volatile(3);
            ((TIMER0 + 0x510) as *mut u32).write_volatile(0);
            (TIMER0 as *mut u32).write_volatile(1);
        }
    }

    /// Reports the boot's outcome and the ticks so far, then exits QEMU.
    pub fn hand_over(_ok: bool) {
        #[cfg(feature = "measure")]
        {
            // SAFETY: TIMER0's TASKS_CAPTURE[0] and CC[0] registers.
            let ticks = unsafe {
                ((TIMER0 + 0x040) as *mut u32).write_volatile(1);
                ((TIMER0 + 0x540) as *const u32).read_volatile()
            };
            cortex_m_semihosting::hprintln!(
                "bootloader: boot {} after {} TIMER0 ticks (~{} instructions under -icount shift=0)",
                if _ok { "ok" } else { "FAILED" },
                ticks,
                u64::from(ticks) * 125 / 2
            );
            cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_SUCCESS);
        }
    }
}
