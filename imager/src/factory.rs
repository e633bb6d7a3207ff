//! Factory programming files: the flash plan (`crate::plan`) as one file a production line
//! programs: the bootloader, the installed image in slot A and the state log that says it is
//! confirmed, at their addresses. The bytes are the plan's, as `imager flash` programs them and
//! `imager run` boots them.

use anyhow::{Result, bail};
use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, SectionHeader, Writer};

use crate::plan::FlashPlan;

/// A programming file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Intel HEX: data records with extended linear addresses; erased bytes left out.
    Hex,
    /// Raw binary from the flash's base address to the last programmed byte, gaps filled with
    /// the board's erased value.
    Bin,
    /// ELF: one loadable segment (and section) per programmed range, at its address, as
    /// probe-rs, OpenOCD or J-Link program an ELF file.
    Elf,
}

/// The programming file for `plan`.
pub fn factory(plan: &FlashPlan, format: Format) -> Result<Vec<u8>> {
    let flash = plan.flash();
    let erased = plan.erased_value();
    // Slot A always holds the image's header, so something is programmed.
    let end = flash.iter().rposition(|&b| b != erased).map_or(0, |i| i + 1);
    match format {
        Format::Bin => Ok(flash[..end].to_vec()),
        Format::Hex => hex(plan.flash_base(), &flash[..end], erased),
        Format::Elf => elf(plan),
    }
}

/// Bytes per data record: what most tools write.
const RECORD: usize = 16;

/// Intel HEX of `bytes` at `base`: a data record per 16-byte line holding anything but the
/// erased value, an extended linear address record whenever the upper 16 address bits change.
fn hex(base: u32, bytes: &[u8], erased: u8) -> Result<Vec<u8>> {
    if !base.is_multiple_of(RECORD as u32) {
        bail!("the flash base {base:#x} is not aligned to {RECORD} bytes");
    }
    let mut records = Vec::new();
    let mut upper = None;
    for (i, line) in bytes.chunks(RECORD).enumerate() {
        if line.iter().all(|&b| b == erased) {
            continue;
        }
        let Some(address) = u32::try_from(i * RECORD).ok().and_then(|o| base.checked_add(o)) else {
            bail!("the flash reaches past the 32-bit address space");
        };
        let high = (address >> 16) as u16;
        if upper != Some(high) {
            records.push(ihex::Record::ExtendedLinearAddress(high));
            upper = Some(high);
        }
        // A line never crosses a 64 KiB boundary: lines start at multiples of 16 (`base` is
        // one), and 16 divides 65536.
        records.push(ihex::Record::Data { offset: address as u16, value: line.to_vec() });
    }
    records.push(ihex::Record::EndOfFile);
    let text = ihex::create_object_file_representation(&records)
        .map_err(|e| anyhow::anyhow!("writing Intel HEX: {e}"))?;
    Ok((text + "\n").into_bytes())
}

/// An ELF file for ARM (32-bit, little-endian, executable) holding each of the plan's programs
/// as a `PT_LOAD` segment with a section of its own: programmers take the segments; probe-rs
/// also wants a section inside each.
fn elf(plan: &FlashPlan) -> Result<Vec<u8>> {
    let programs = &plan.program;
    let count = u32::try_from(programs.len())?;
    let names: Vec<String> = programs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let same = programs[..i].iter().filter(|q| q.partition == p.partition).count();
            match same {
                0 => format!(".{}", p.partition.as_str()),
                n => format!(".{}.{n}", p.partition.as_str()),
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut w = Writer::new(object::Endianness::Little, false, &mut out);
    // Reserve the layout: header, program headers, the data, then sections.
    w.reserve_file_header();
    w.reserve_program_headers(count);
    let offsets: Vec<u64> = programs.iter().map(|p| w.reserve(p.bytes.len() as u64, 4)).collect();
    let name_ids: Vec<_> = names.iter().map(|n| w.add_section_name(n.as_bytes())).collect();
    w.reserve_null_section_index();
    for _ in programs {
        w.reserve_section_index();
    }
    w.reserve_shstrtab_section_index();
    w.reserve_shstrtab()?;
    w.reserve_section_headers();

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::EM_ARM,
        // Programmers take the segments; a Cortex-M starts from its vector table, not here.
        e_entry: 0,
        e_flags: elf::EF_ARM_EABI_VER5,
    })?;
    w.write_align_program_headers();
    for (p, &offset) in programs.iter().zip(&offsets) {
        let len = p.bytes.len() as u64;
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: elf::PF_R | elf::PF_X,
            p_offset: offset,
            p_vaddr: u64::from(p.address),
            p_paddr: u64::from(p.address),
            p_filesz: len,
            p_memsz: len,
            p_align: 1,
        });
    }
    for p in programs {
        w.write_align(4);
        w.write(&p.bytes);
    }
    w.write_shstrtab();
    w.write_null_section_header();
    for ((p, &offset), &name) in programs.iter().zip(&offsets).zip(&name_ids) {
        w.write_section_header(&SectionHeader {
            sh_name: w.section_name_offset(Some(name)),
            sh_type: elf::SHT_PROGBITS,
            sh_flags: elf::SHF_ALLOC | elf::SHF_EXECINSTR,
            sh_addr: u64::from(p.address),
            sh_offset: offset,
            sh_size: p.bytes.len() as u64,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 1,
            sh_entsize: 0,
        });
    }
    w.write_shstrtab_section_header();
    if w.reserved_len() != out.len() as u64 {
        bail!("internal error: the ELF writer's layout and output differ");
    }
    Ok(out)
}
