//! Stack high-water mark: the free RAM between the end of the static data and the stack is
//! painted with a pattern at boot; the painted bytes later found changed were used.

const PAINT: u32 = 0x5AA5_5AA5;
/// Bytes below the current stack pointer left unpainted (what `paint` itself uses).
const MARGIN: usize = 64;

unsafe extern "C" {
    /// End of .bss/.uninit, from cortex-m-rt's linker script.
    static __sheap: u32;
    /// Initial stack pointer (top of RAM), from cortex-m-rt's linker script.
    static _stack_start: u32;
}

fn bounds() -> (usize, usize) {
    // Only the symbols' addresses are taken.
    (core::ptr::addr_of!(__sheap) as usize, core::ptr::addr_of!(_stack_start) as usize)
}

/// Paints the unused stack. Call first thing in `main`.
pub fn paint() {
    let (bottom, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize - MARGIN;
    let mut at = bottom;
    while at + 4 <= sp {
        // SAFETY: RAM between the statics and below the live stack: nothing lives there yet.
        unsafe { (at as *mut u32).write_volatile(PAINT) };
        at += 4;
    }
}

/// Stack bytes still free below the current stack pointer.
pub fn free() -> usize {
    let (bottom, _) = bounds();
    (cortex_m::register::msp::read() as usize).saturating_sub(bottom)
}

/// The stack's deepest use so far, in bytes.
pub fn used() -> usize {
    let (bottom, top) = bounds();
    let mut at = bottom;
    // SAFETY: reading RAM inside the stack region.
    while at < top && unsafe { (at as *const u32).read_volatile() } == PAINT {
        at += 4;
    }
    top - at
}
