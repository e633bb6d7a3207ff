//! The demo OS for the micro:bit. It runs from slot A, where the bootloader handed over: it
//! says on UART0 which image it is (id, version, trial or confirmed), calls the demo app
//! through its table and runs the app's self-test. A new image on trial is confirmed only if
//! the self-test passes; otherwise the OS resets, and the bootloader reverts it once its trial
//! boots are used up. Then it checks in with the server through the gateway on the same UART
//! (`updater`), and installs what it is offered.
//!
//! RAM (16 KiB): 1.5 KB of statics (the update client with the link's receive buffer, the event
//! queue and the offer's release statement; the flash layout), and a stack that peaks at about
//! 13.3 KB during an install: the update agent (1.7 KB), its heatshrink window (1 KiB) and,
//! under them, Ed25519 (about 7.6 KB) checking the header. At "ready" and when an install ends
//! the OS says how much stack it has used (`stack`): the bytes below it are painted at boot and
//! the untouched ones counted. firmware/device/NOTES.md says how the path was kept this short.
#![no_std]
#![no_main]

mod link;
mod reason;
mod stack;
mod updater;

use app_abi::{ABI_VERSION, APP_TABLE, AppTable, MAGIC};
use cortex_m_rt::entry;
use firmware::flash::FlashLayout;
use firmware::link::{EventImage, EventKind};
use firmware::provision::Provision;
use firmware::state::OutcomeKind;
use firmware::update::{Confirmation, confirm, status};
use nrf51::board;
use nrf51::timer::Clock;
use nrf51::uart::Uart;

use crate::link::Link;
use crate::updater::Updater;

#[entry]
fn main() -> ! {
    stack::paint();
    let updater = setup();
    after_boot(updater);
    updater.say(format_args!("fwi demo os: ready (stack used so far: {} bytes)", stack::used()));
    updater.run()
}

/// Makes the update client and the flash layout, once, in static RAM. They live as long as the
/// device runs; made in `main`'s frame they would hold that much stack (more, counting the
/// moves) under the deepest path of every update. Not inlined: what building them takes on
/// the stack is given back before anything else runs.
#[inline(never)]
fn setup() -> &'static mut Updater<'static> {
    let mut link = Link::new(Uart::new(), Clock::start());
    let Ok(layout) = FlashLayout::new(board::SPEC) else { stop(&mut link, "bad layout") };
    let Some(layout) = cortex_m::singleton!(: FlashLayout = layout) else {
        stop(&mut link, "set up twice")
    };
    let provision = Provision::parse(board::provision_area());
    if let Err(e) = &provision {
        link.say(format_args!("fwi demo os: updates disabled: {e}"));
    }
    let updater = Updater::new(link, board::flash(), layout, provision.ok());
    let Some(updater) = cortex_m::singleton!(: Updater<'static> = updater) else {
        loop {
            cortex_m::asm::wfi();
        }
    };
    updater
}

/// Says which image runs, runs the self-test, and settles a trial: confirms a healthy image,
/// resets an unhealthy one; reports a revert the bootloader made. Not inlined, so that its
/// buffers leave the stack before the update client runs.
#[inline(never)]
fn after_boot(updater: &mut Updater<'_>) {
    let layout = updater.layout();
    let mut flash = board::flash();
    let Ok(state) = status(&mut flash, layout) else {
        updater.say(format_args!("fwi demo os: state log unreadable"));
        return;
    };
    let Some((id, version)) = state.running.clone() else {
        updater.say(format_args!("fwi demo os: cannot read my own image header"));
        return;
    };
    updater.say(format_args!(
        "fwi demo os: image {id} version {version} ({})",
        if state.trial { "on trial" } else { "confirmed" }
    ));
    let healthy = self_test(updater);

    if state.trial {
        updater.report(id, EventKind::Booted, format_args!("on trial"));
        if !healthy {
            updater.say(format_args!(
                "fwi demo os: self-test FAILED, not confirming {id}; resetting (the bootloader reverts it after its trial boots)"
            ));
            updater.report(id, EventKind::Failed, format_args!("self-test failed"));
            updater.flush();
            cortex_m::peripheral::SCB::sys_reset();
        }
        match confirm(&mut flash, layout) {
            Ok(Confirmation::Confirmed(_)) | Ok(Confirmation::AlreadyConfirmed(_)) => {
                updater.say(format_args!("fwi demo os: self-test passed, image {id} confirmed"));
                updater.report(id, EventKind::Confirmed, format_args!(""));
            }
            Err(_) => updater.say(format_args!("fwi demo os: confirm failed (state log)")),
        }
    } else if let Some(outcome) = state.outcome
        && let OutcomeKind::Reverted(reason) = outcome.kind
    {
        // The bootloader went back to this image: the new one did not make it. Its bytes are
        // gone (slot A holds this image again), its tag is in the state log: reported by tag,
        // the gateway knows the image it offered. (Said at every boot until the next update;
        // the server records a repeat once.)
        let reverted = EventImage::Tag(outcome.image);
        updater.say(format_args!("fwi demo os: the bootloader reverted {reverted} ({reason:?})"));
        updater.report(reverted, EventKind::Reverted, format_args!("{reason:?}; back to {id}"));
    }
}

/// Greets the app through its table and runs its self-test; true if it passed.
fn self_test(link: &mut Updater<'_>) -> bool {
    // SAFETY: APP_TABLE is the app component's load address inside this image, which the
    // bootloader checked (hashes and signature) before handing over.
    let app = unsafe { &*(APP_TABLE as *const AppTable) };
    if app.magic != MAGIC || app.abi != ABI_VERSION {
        link.say(format_args!("fwi demo os: no usable app table at {APP_TABLE:#x}"));
        return false;
    }
    let mut greeting = [0u8; 64];
    let n = (app.greet)(greeting.as_mut_ptr(), greeting.len()).min(greeting.len());
    let text = core::str::from_utf8(&greeting[..n]).unwrap_or("(not UTF-8)").trim_end();
    link.say(format_args!("fwi demo os: app says: {text}"));
    (app.self_test)() == 0
}

fn stop(link: &mut Link, why: &str) -> ! {
    link.say(format_args!("fwi demo os: {why}"));
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
