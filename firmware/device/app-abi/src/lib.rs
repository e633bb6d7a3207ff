//! The interface between the demo OS and the demo app, two components of one image linked at
//! their own addresses. The app starts with an [`AppTable`] at [`APP_TABLE`]; the OS reads it,
//! checks [`MAGIC`] and [`ABI_VERSION`], and calls the app only through it. The app has no
//! runtime of its own: it runs on the OS's stack, owns no static RAM, and gets everything it
//! needs as arguments.
#![no_std]

/// Where the app's table is: the app component's load address.
pub const APP_TABLE: u32 = 0x0002_4000;
/// "APP1".
pub const MAGIC: u32 = 0x3150_5041;
/// Changes when the table changes incompatibly.
pub const ABI_VERSION: u32 = 1;

/// What the app offers the OS.
#[repr(C)]
pub struct AppTable {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`ABI_VERSION`].
    pub abi: u32,
    /// Writes the app's greeting into `out` (at most `len` bytes); returns the length written.
    pub greet: extern "C" fn(out: *mut u8, len: usize) -> usize,
    /// The app's self-test, run by the OS before it confirms a new image: 0 means healthy.
    pub self_test: extern "C" fn() -> u32,
}
