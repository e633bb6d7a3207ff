//! The app's own linker script: its table first, at `app_abi::APP_TABLE`; code and constants
//! after it; no RAM sections (the app has no static data).
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let script = "MEMORY { FLASH : ORIGIN = 0x24000, LENGTH = 0x2C00 }
ENTRY(APP)
SECTIONS {
  .app_table : { KEEP(*(.app_table)) } > FLASH
  .text : { *(.text .text.*) } > FLASH
  .rodata : { *(.rodata .rodata.*) } > FLASH
  /DISCARD/ : { *(.ARM.exidx .ARM.exidx.*) *(.data .data.*) *(.bss .bss.*) }
}
";
    std::fs::write(out.join("app.ld"), script).unwrap();
    println!("cargo:rustc-link-arg-bins=-T{}", out.join("app.ld").display());
    println!("cargo:rustc-check-cfg=cfg(unhealthy)");
    println!("cargo:rerun-if-changed=build.rs");
}
