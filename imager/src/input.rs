//! Reading firmware inputs: ELF (loadable segments at their load addresses), Intel HEX, or a
//! raw binary with an explicit address (`app.bin@0x18200`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use object::elf::{
    EM_386, EM_AARCH64, EM_ARM, EM_RISCV, EM_X86_64, Machine, PT_LOAD, SHF_ALLOC, SHT_NOBITS,
};
use object::read::elf::{ElfFile32, FileHeader, ProgramHeader, SectionHeader};

/// Largest input file read, so a wrong path (a disk image, say) fails fast and clearly.
pub const MAX_INPUT_LEN: u64 = 64 << 20;

/// What kind of file an input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// ELF executable: `PT_LOAD` segments at their physical (load) addresses.
    Elf,
    /// Intel HEX.
    IntelHex,
    /// Raw bytes placed at an address given on the command line.
    Raw,
}

/// A run of bytes at an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Address of the first byte.
    pub address: u32,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Segment {
    /// Address just past the last byte.
    pub fn end(&self) -> u64 {
        u64::from(self.address) + self.bytes.len() as u64
    }
}

/// An input file's loadable content: segments sorted by address, not overlapping, not empty.
#[derive(Clone, Debug)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Its kind.
    pub kind: InputKind,
    /// Its segments.
    pub segments: Vec<Segment>,
}

/// The ELF machine a board's code runs on, from its Rust target triple.
pub fn elf_machine_for(target: &str) -> Option<Machine> {
    if target.starts_with("thumb") || target.starts_with("arm") {
        Some(EM_ARM)
    } else if target.starts_with("riscv32") {
        Some(EM_RISCV)
    } else {
        None
    }
}

/// An input spec's file and, for `PATH@ADDRESS`, the raw binary's load address.
fn split_spec(spec: &str) -> (PathBuf, Option<u32>) {
    match spec.rsplit_once('@').map(|(p, a)| (p, parse_address(a))) {
        Some((path, Some(address))) => (PathBuf::from(path), Some(address)),
        _ => (PathBuf::from(spec), None),
    }
}

/// The file an input spec (`PATH` or `PATH@ADDRESS`) reads.
pub fn spec_path(spec: &str) -> PathBuf {
    split_spec(spec).0
}

impl Input {
    /// Reads `spec`: a path to an ELF or Intel HEX file, or `PATH@ADDRESS` for a raw binary.
    /// An ELF must be for `machine` when given.
    pub fn read(spec: &str, machine: Option<Machine>) -> Result<Input> {
        let (path, address) = split_spec(spec);
        let bytes = read_bounded(&path)?;
        let show = path.display();
        let (kind, segments) = match address {
            Some(address) => (InputKind::Raw, vec![Segment { address, bytes }]),
            None if bytes.starts_with(b"\x7fELF") => {
                (InputKind::Elf, elf_segments(&bytes, machine).with_context(|| format!("{show}"))?)
            }
            None if looks_like_hex(&bytes) => {
                (InputKind::IntelHex, hex_segments(&bytes).with_context(|| format!("{show}"))?)
            }
            None => bail!(
                "{show} is neither ELF nor Intel HEX; for a raw binary give its load address, \
                 as in {show}@0x10400"
            ),
        };
        let segments = tidy(segments).with_context(|| format!("{show}"))?;
        if segments.is_empty() {
            bail!("{show} has no loadable bytes");
        }
        Ok(Input { path, kind, segments })
    }

    /// First address.
    pub fn start(&self) -> u32 {
        self.segments[0].address
    }

    /// Address just past the last byte.
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end)
    }

    /// The bytes from `start()` to `end()`, gaps between segments filled with `fill` (the
    /// flash's erased value, so the gap is left as erased).
    pub fn flatten(&self, fill: u8) -> Vec<u8> {
        let start = u64::from(self.start());
        let mut out = vec![fill; (self.end() - start) as usize];
        for s in &self.segments {
            let at = (u64::from(s.address) - start) as usize;
            out[at..at + s.bytes.len()].copy_from_slice(&s.bytes);
        }
        out
    }
}

fn parse_address(text: &str) -> Option<u32> {
    let text = text.replace('_', "");
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    if meta.len() > MAX_INPUT_LEN {
        bail!(
            "{} is {} bytes; inputs larger than {MAX_INPUT_LEN} bytes are refused",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn looks_like_hex(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b':')
}

fn elf_segments(data: &[u8], machine: Option<Machine>) -> Result<Vec<Segment>> {
    if data.get(4) == Some(&2) {
        bail!("is a 64-bit ELF; boards run 32-bit code");
    }
    let elf = ElfFile32::<object::Endianness>::parse(data)
        .map_err(|err| anyhow!("not a valid ELF file: {err}"))?;
    let endian = elf.endian();
    let found = elf.elf_header().e_machine(endian);
    if let Some(expected) = machine.filter(|m| *m != found) {
        bail!(
            "is an ELF for machine {}, the board needs {}",
            machine_name(found),
            machine_name(expected)
        );
    }
    // What a segment loads is the allocated sections inside it. The bytes of a segment outside
    // its sections (the ELF and program headers that linkers often map into the first segment,
    // alignment padding) are not firmware, so they are left out, as probe-rs does.
    let sections: Vec<(u64, u64)> = elf
        .elf_section_table()
        .iter()
        .filter(|s| {
            s.sh_flags(endian).0 & SHF_ALLOC.0 != 0
                && s.sh_type(endian) != SHT_NOBITS
                && s.sh_size(endian) > 0
        })
        .map(|s| (u64::from(s.sh_offset(endian)), u64::from(s.sh_size(endian))))
        .collect();
    let mut segments = Vec::new();
    for header in elf.elf_program_headers() {
        if header.p_type(endian) != PT_LOAD || header.p_filesz(endian) == 0 {
            continue;
        }
        let bytes = header
            .data(endian, data)
            .map_err(|()| anyhow!("a PT_LOAD segment points outside the file"))?;
        let (offset, paddr) = (u64::from(header.p_offset(endian)), header.p_paddr(endian));
        let inside: Vec<(u64, u64)> = sections
            .iter()
            .filter(|(start, size)| *start >= offset && start + size <= offset + bytes.len() as u64)
            .map(|(start, size)| (start - offset, *size))
            .collect();
        if sections.is_empty() {
            // No section table (stripped to the bone): the segment is all there is.
            segments.push(Segment { address: paddr, bytes: bytes.to_vec() });
        }
        for (at, size) in inside {
            let address = u32::try_from(u64::from(paddr) + at)
                .map_err(|_| anyhow!("a section lies past 4 GiB"))?;
            segments.push(Segment {
                address,
                bytes: bytes[at as usize..(at + size) as usize].to_vec(),
            });
        }
    }
    Ok(segments)
}

fn machine_name(machine: Machine) -> String {
    match machine {
        EM_ARM => "ARM".into(),
        EM_RISCV => "RISC-V".into(),
        EM_X86_64 => "x86-64".into(),
        EM_386 => "x86".into(),
        EM_AARCH64 => "AArch64".into(),
        other => format!("#{other}"),
    }
}

fn hex_segments(bytes: &[u8]) -> Result<Vec<Segment>> {
    let text = std::str::from_utf8(bytes).map_err(|_| anyhow!("Intel HEX must be ASCII text"))?;
    let mut segments: Vec<Segment> = Vec::new();
    let mut base = 0u32;
    let mut ended = false;
    for (index, record) in ihex::Reader::new(text).enumerate() {
        let line = index + 1;
        let record = record.map_err(|err| anyhow!("record {line}: {err}"))?;
        if ended {
            bail!("record {line}: data after the end-of-file record");
        }
        match record {
            ihex::Record::Data { offset, value } => {
                let address = base
                    .checked_add(u32::from(offset))
                    .filter(|a| u64::from(*a) + value.len() as u64 <= 1 << 32)
                    .ok_or_else(|| anyhow!("record {line}: address past 4 GiB"))?;
                match segments.last_mut() {
                    Some(last) if last.end() == u64::from(address) => {
                        last.bytes.extend_from_slice(&value)
                    }
                    _ => segments.push(Segment { address, bytes: value }),
                }
            }
            ihex::Record::ExtendedSegmentAddress(segment) => base = u32::from(segment) << 4,
            ihex::Record::ExtendedLinearAddress(upper) => base = u32::from(upper) << 16,
            ihex::Record::StartSegmentAddress { .. } | ihex::Record::StartLinearAddress(_) => {}
            ihex::Record::EndOfFile => ended = true,
        }
    }
    if !ended {
        bail!("no end-of-file record: the file is truncated");
    }
    Ok(segments)
}

/// Sorts segments, drops empty ones, joins touching ones, refuses overlapping ones.
fn tidy(mut segments: Vec<Segment>) -> Result<Vec<Segment>> {
    segments.retain(|s| !s.bytes.is_empty());
    segments.sort_by_key(|s| s.address);
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for s in segments {
        if s.end() > 1 << 32 {
            bail!("a segment at {:#010x} runs past 4 GiB", s.address);
        }
        match out.last_mut() {
            Some(last) if last.end() > u64::from(s.address) => bail!(
                "bytes at {:#010x}..{:#010x} are given twice (segments overlap)",
                s.address,
                last.end().min(s.end())
            ),
            Some(last) if last.end() == u64::from(s.address) => {
                last.bytes.extend_from_slice(&s.bytes)
            }
            _ => out.push(s),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_hex_and_decimal() {
        assert_eq!(parse_address("0x18200"), Some(0x18200));
        assert_eq!(parse_address("0X1_8200"), Some(0x18200));
        assert_eq!(parse_address("4096"), Some(4096));
        assert_eq!(parse_address("0x1_0000_0000"), None);
        assert_eq!(parse_address("zz"), None);
    }

    #[test]
    fn segments_join_and_overlaps_are_refused() {
        let seg = |address, len| Segment { address, bytes: vec![1; len] };
        let joined = tidy(vec![seg(0x110, 0x10), seg(0x100, 0x10), seg(0x200, 0)]).unwrap();
        assert_eq!(joined, vec![seg(0x100, 0x20)]);
        let err = tidy(vec![seg(0x100, 0x10), seg(0x108, 0x10)]).unwrap_err().to_string();
        assert!(err.contains("0x00000108..0x00000110"), "{err}");
    }

    #[test]
    fn intel_hex_records_are_placed_by_their_extended_address() {
        let text = ":020000040001F9\n:0400000001020304F2\n:0400040005060708DE\n:00000001FF\n";
        let segments = hex_segments(text.as_bytes()).unwrap();
        assert_eq!(
            segments,
            vec![Segment { address: 0x1_0000, bytes: vec![1, 2, 3, 4, 5, 6, 7, 8] }]
        );
        let truncated = ":020000040001F9\n:0400000001020304F2\n";
        assert!(hex_segments(truncated.as_bytes()).unwrap_err().to_string().contains("truncated"));
        let bad_checksum = ":0400000001020304F3\n:00000001FF\n";
        assert!(
            hex_segments(bad_checksum.as_bytes()).unwrap_err().to_string().contains("record 1")
        );
    }
}
