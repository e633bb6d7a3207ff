//! The OS links at slot A's first byte after the image header (0x10400 on the micro:bit) and
//! ends where the app's table starts (`app_abi::APP_TABLE`, 0x24000; slot A ends at 0x26C00, which leaves the app 11 KiB).
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let memory = "MEMORY\n{\n  FLASH : ORIGIN = 0x10400, LENGTH = 0x13C00\n  RAM : ORIGIN = 0x20000000, LENGTH = 16K\n}\n";
    std::fs::write(out.join("memory.x"), memory).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=build.rs");
}
