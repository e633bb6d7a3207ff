//! The device's end of the serial link (`firmware::link`): console lines and request/answer
//! exchanges with the gateway on UART0.

use firmware::image::ImageId;
use firmware::link::{self, Down, MAX_FRAME, Piece, Splitter, Up};
use nrf51::timer::Clock;
use nrf51::uart::Uart;

/// Bytes the largest message this end sends takes framed (a status or an event).
const UP_FRAME: usize = 256;

/// UART0 carrying console text and link frames.
pub struct Link {
    uart: Uart,
    clock: Clock,
    rx: Splitter<MAX_FRAME>,
}

impl Link {
    /// The link over `uart`, timed by `clock`.
    pub fn new(uart: Uart, clock: Clock) -> Self {
        Link { uart, clock, rx: Splitter::new() }
    }

    /// Prints a console line.
    pub fn say(&mut self, args: core::fmt::Arguments<'_>) {
        self.uart.line(args);
    }

    /// Sends `message` and waits up to `timeout_ms` for the gateway's answer. Text and frames
    /// that do not decode are skipped; `None` if no answer came in time. Not inlined: its
    /// frame buffer is on the stack only while it runs, not under the update's deepest path.
    #[inline(never)]
    pub fn request(&mut self, message: &Up<'_>, timeout_ms: u32) -> Option<Down<'_>> {
        let mut frame = [0u8; UP_FRAME];
        // Every message this device sends fits (firmware::link tests the largest).
        let n = link::encode(message, &mut frame).ok()?;
        self.uart.write(&frame[..n]);
        let start = self.clock.now_us();
        let len = loop {
            if self.clock.elapsed(start, timeout_ms) {
                return None;
            }
            let Some(byte) = self.uart.try_read() else { continue };
            if let Piece::Complete(piece) = self.rx.push(byte)
                && let Ok(len) = link::unframe(piece)
            {
                break len;
            }
        };
        link::parse(&self.rx.last()[1..1 + len]).ok()
    }

    /// Asks for `len` bytes of `image` from `offset` on: [`Self::request`] with the message made
    /// here, not in the caller's frame (a message is as large as its largest kind, a status).
    #[inline(never)]
    pub fn fetch(
        &mut self,
        image: ImageId,
        offset: u32,
        len: u16,
        timeout_ms: u32,
    ) -> Option<Down<'_>> {
        self.request(&Up::Fetch { image, offset, len }, timeout_ms)
    }

    /// Waits `ms` milliseconds, dropping whatever arrives meanwhile (late answers).
    pub fn pause(&mut self, ms: u32) {
        let start = self.clock.now_us();
        while !self.clock.elapsed(start, ms) {
            if let Some(byte) = self.uart.try_read() {
                let _ = self.rx.push(byte);
            }
        }
    }
}
