//! Exception and interrupt forwarding to the OS (the Cortex-M0 has no VTOR).
//!
//! The bootloader's default handler and HardFault handler are one trampoline: it reads the
//! active vector number from IPSR and branches to the OS's handler for that number in the OS's
//! vector table. LR still holds the exception return value and r0/r1 were stacked by the
//! hardware, so the OS's handler returns as if it had been called directly. Five instructions.

core::arch::global_asm!(
    ".section .text.DefaultHandler,\"ax\",%progbits",
    ".global DefaultHandler",
    ".global HardFault",
    ".thumb_func",
    "DefaultHandler:",
    ".thumb_func",
    "HardFault:",
    "  mrs r0, ipsr",
    "  lsls r0, r0, #2",
    "  ldr r1, ={table}",
    "  ldr r0, [r0, r1]",
    "  bx r0",
    ".ltorg",
    table = const nrf51::board::OS_VECTORS,
);
