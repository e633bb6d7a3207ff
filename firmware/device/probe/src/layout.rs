// The probe's flash layout, shared by build.rs (which formats its state log) and main.rs:
// slot A at offset 0 (address 0x10000), slot B after it, a two-unit state partition.

/// The layout.
pub fn probe_layout() -> firmware::flash::FlashLayout {
    use firmware::flash::{FlashLayout, LayoutSpec, Region, SectorRun};
    FlashLayout::new(LayoutSpec {
        base: 0x1_0000,
        sectors: &[SectorRun { size: 1024, count: 102 }],
        write_unit: 4,
        erased: 0xFF,
        slot_a: Region { offset: 0, size: 0xC000 },
        slot_b: Region { offset: 0xC000, size: 0xD000 },
        state: Region { offset: STATE_OFFSET, size: STATE_SIZE as u32 },
        header_size: 0x400,
    })
    .unwrap()
}

/// Where the state partition starts.
pub const STATE_OFFSET: u32 = 0x1_9000;
/// Its size: two 1 KiB units.
pub const STATE_SIZE: usize = 2048;
