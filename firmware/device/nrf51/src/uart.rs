//! UART0, polled, 115200 baud on the micro:bit's USB serial pins (P0.24 TX, P0.25 RX).

const BASE: usize = 0x4000_2000;
const TASKS_STARTRX: usize = 0x000;
const TASKS_STARTTX: usize = 0x008;
const EVENTS_RXDRDY: usize = 0x108;
const EVENTS_TXDRDY: usize = 0x11C;
const ENABLE: usize = 0x500;
const PSELTXD: usize = 0x50C;
const PSELRXD: usize = 0x514;
const RXD: usize = 0x518;
const TXD: usize = 0x51C;
const BAUDRATE: usize = 0x524;

fn reg(offset: usize) -> *mut u32 {
    (BASE + offset) as *mut u32
}

/// UART0, started.
pub struct Uart(());

impl Uart {
    /// Configures and starts UART0 (transmit and receive).
    pub fn new() -> Self {
        // SAFETY: UART0's configuration and task registers; nothing else drives UART0.
        unsafe {
            reg(PSELTXD).write_volatile(24);
            reg(PSELRXD).write_volatile(25);
            reg(BAUDRATE).write_volatile(0x01D7_E000);
            reg(ENABLE).write_volatile(4);
            reg(TASKS_STARTTX).write_volatile(1);
            reg(TASKS_STARTRX).write_volatile(1);
        }
        Uart(())
    }

    /// Sends `bytes`, waiting for each to go.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: UART0's TXD and EVENTS_TXDRDY registers, the UART started.
            unsafe {
                reg(TXD).write_volatile(u32::from(b));
                while reg(EVENTS_TXDRDY).read_volatile() == 0 {}
                reg(EVENTS_TXDRDY).write_volatile(0);
            }
        }
    }

    /// Prints a line of text for the console, ended with `\r\n` and a zero byte: the zero
    /// keeps text and link frames apart on the one UART (see `firmware::link`).
    pub fn line(&mut self, args: core::fmt::Arguments<'_>) {
        let _ = core::fmt::Write::write_fmt(self, args);
        self.write(b"\r\n\0");
    }

    /// A received byte, if one is waiting.
    pub fn try_read(&mut self) -> Option<u8> {
        // SAFETY: UART0's EVENTS_RXDRDY and RXD registers, the UART started.
        unsafe {
            if reg(EVENTS_RXDRDY).read_volatile() == 0 {
                return None;
            }
            reg(EVENTS_RXDRDY).write_volatile(0);
            Some(reg(RXD).read_volatile() as u8)
        }
    }
}

impl Default for Uart {
    fn default() -> Self {
        Uart::new()
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}
