//! The board's flash layout as constants, generated from the same board file the host tools
//! read (`boards/defs/microbit.toml`), so the device code and `imager` cannot disagree.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../boards/defs/microbit.toml");
    println!("cargo:rerun-if-changed={}", file.display());
    let board = boards::Board::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let units = board.erase_units();
    assert!(units.iter().all(|u| u.1 == units[0].1), "uniform erase units only");
    let p = &board.partitions;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/// Flash geometry and partitions.\npub const SPEC: LayoutSpec<'static> = LayoutSpec {{ base: {:#x}, sectors: &[SectorRun {{ size: {:#x}, count: {} }}], write_unit: {}, erased: {:#x}, slot_a: Region {{ offset: {:#x}, size: {:#x} }}, slot_b: Region {{ offset: {:#x}, size: {:#x} }}, state: Region {{ offset: {:#x}, size: {:#x} }}, header_size: {:#x} }};",
        board.flash.base,
        units[0].1,
        units.len(),
        board.flash.write_unit,
        board.flash.erased_value,
        p.slot_a.offset,
        p.slot_a.size,
        p.slot_b.offset,
        p.slot_b.size,
        p.state.offset,
        p.state.size,
        board.image.header_size,
    );
    let _ = writeln!(
        s,
        "/// The board's name, as images name it.\npub const BOARD: &str = {:?};",
        board.name
    );
    let _ = writeln!(
        s,
        "/// Flash size in bytes.\npub const FLASH_SIZE: u32 = {:#x};",
        board.flash.size
    );
    let _ = writeln!(s, "/// Erase page size in bytes.\npub const PAGE: u32 = {:#x};", units[0].1);
    let _ = writeln!(
        s,
        "/// The bootloader's partition: nothing below its end is ever erased or written at run time.\npub const BOOTLOADER_END: u32 = {:#x};",
        p.bootloader.offset + p.bootloader.size
    );
    let _ = writeln!(
        s,
        "/// The provisioning record's erase unit: the bootloader partition's last.\npub const PROVISION: u32 = {:#x};",
        p.bootloader.offset + p.bootloader.size - units[0].1
    );
    let _ = writeln!(
        s,
        "/// Where the OS's vector table is: slot A's first byte after the image header.\npub const OS_VECTORS: u32 = {:#x};",
        board.slot_a_address() + board.image.header_size
    );
    std::fs::write(out.join("board.rs"), s).expect("write board.rs");
}
