//! TIMER0 as a free-running microsecond clock, for timeouts. Polled: no interrupts.

const TIMER0: usize = 0x4000_8000;
const TASKS_START: usize = 0x000;
const TASKS_CAPTURE0: usize = 0x040;
const BITMODE: usize = 0x508;
const PRESCALER: usize = 0x510;
const CC0: usize = 0x540;

fn reg(offset: usize) -> *mut u32 {
    (TIMER0 + offset) as *mut u32
}

/// A microsecond clock; wraps after about 71 minutes (compare with `wrapping_sub`).
pub struct Clock(());

impl Clock {
    /// Starts TIMER0 at 1 MHz, 32 bits.
    pub fn start() -> Self {
        // SAFETY: TIMER0's configuration and start registers; nothing else uses TIMER0 once the
        // OS runs (the bootloader's `measure` build ends in QEMU before handing over).
        unsafe {
            reg(BITMODE).write_volatile(3);
            reg(PRESCALER).write_volatile(4);
            reg(TASKS_START).write_volatile(1);
        }
        Clock(())
    }

    /// Microseconds since `start` (wrapping).
    pub fn now_us(&self) -> u32 {
        // SAFETY: TIMER0's capture task and CC[0] register.
        unsafe {
            reg(TASKS_CAPTURE0).write_volatile(1);
            reg(CC0).read_volatile()
        }
    }

    /// Whether `ms` milliseconds passed since `since` (a `now_us` reading).
    pub fn elapsed(&self, since: u32, ms: u32) -> bool {
        self.now_us().wrapping_sub(since) >= ms.saturating_mul(1000)
    }
}
