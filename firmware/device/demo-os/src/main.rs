//! The demo OS for the micro:bit. It runs from slot A, where the bootloader handed over: it
//! says on UART0 which image it is (id, version, trial or confirmed), calls the demo app
//! through its table, runs the app's self-test and, on a new image on trial, confirms it only
//! if the self-test passes — otherwise it leaves it to the bootloader to revert at the next
//! reset.
#![no_std]
#![no_main]

use core::fmt::Write;

use app_abi::{ABI_VERSION, APP_TABLE, AppTable, MAGIC};
use cortex_m_rt::entry;
use firmware::flash::FlashLayout;
use firmware::image::MAX_HEADER_LEN;
use firmware::slot::{Place, read_header};
use firmware::update::{Confirmation, confirm, status};
use nrf51::board;
use nrf51::uart::Uart;

#[entry]
fn main() -> ! {
    let mut uart = Uart::new();
    let mut flash = board::flash();
    let Ok(layout) = FlashLayout::new(board::SPEC) else { stop(&mut uart, "bad layout") };
    let mut buf = [0u8; MAX_HEADER_LEN];
    let Ok(header) = read_header(&mut flash, &layout, Place::A, &mut buf) else {
        stop(&mut uart, "cannot read my own image header")
    };
    let (id, version) = (header.id(), header.manifest().version().clone());
    let trial = status(&mut flash, &layout).map(|s| s.trial).unwrap_or(false);
    let _ = writeln!(
        uart,
        "fwi demo os: image {id} version {version} ({})\r",
        if trial { "on trial" } else { "confirmed" }
    );

    // The app, through its table.
    // SAFETY: APP_TABLE is the app component's load address inside this image, which the
    // bootloader checked (hashes and signature) before handing over.
    let app = unsafe { &*(APP_TABLE as *const AppTable) };
    let healthy = if app.magic != MAGIC || app.abi != ABI_VERSION {
        let _ = writeln!(uart, "fwi demo os: no usable app table at {APP_TABLE:#x}\r");
        false
    } else {
        let mut greeting = [0u8; 64];
        let n = (app.greet)(greeting.as_mut_ptr(), greeting.len()).min(greeting.len());
        uart.write(b"fwi demo os: app says: ");
        uart.write(&greeting[..n]);
        uart.write(b"\r");
        (app.self_test)() == 0
    };

    if trial {
        if healthy {
            match confirm(&mut flash, &layout) {
                Ok(Confirmation::Confirmed(_)) | Ok(Confirmation::AlreadyConfirmed(_)) => {
                    let _ = writeln!(uart, "fwi demo os: self-test passed, image {id} confirmed\r");
                }
                Err(e) => {
                    let _ = writeln!(uart, "fwi demo os: confirm failed: {e}\r");
                }
            }
        } else {
            let _ = writeln!(uart, "fwi demo os: self-test FAILED, not confirming {id}\r");
        }
    }
    let _ = writeln!(uart, "fwi demo os: ready\r");
    loop {
        cortex_m::asm::wfi();
    }
}

fn stop(uart: &mut Uart, why: &str) -> ! {
    let _ = writeln!(uart, "fwi demo os: {why}\r");
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
