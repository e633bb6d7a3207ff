//! The flash plan: what a board's flash must hold for a device to start an image, and the
//! order to get it there. `imager flash` carries it out through a debug probe, `imager factory`
//! writes it as one programming file, `imager run` lays it into QEMU's flash: one plan, so
//! what a developer flashes, what the production line programs and what the emulator boots are
//! the same bytes.
//!
//! A plan erases every partition it touches, the state partition first (the bootloader's only
//! when a bootloader is given), then programs the bootloader, the image's installed form in
//! slot A and, last, a state log that says slot A's image is confirmed (see
//! `firmware::state::StateLog::initialize`). The state is erased first and written last so
//! that a device cut off half-way has no record naming an image that is not all there; and
//! every partition is erased whole, so the device afterwards reads exactly as
//! [`FlashPlan::flash`] says, whatever the flash held before.

use anyhow::{Context, Result, bail};
use boards::{Board, Partition, PartitionName};
use firmware::image::{ImageId, TransportImage, installed_form};
use firmware::sim::SimFlash;
use firmware::state::{ImageTag, StateLog};

use crate::input::Input;

/// A range of flash erased whole: one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Erase {
    /// The partition.
    pub partition: PartitionName,
    /// Absolute address of its first byte.
    pub address: u32,
    /// Its size in bytes.
    pub size: u32,
}

/// Bytes to program, into a range the plan erased first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The partition they go to.
    pub partition: PartitionName,
    /// Absolute address of the first byte.
    pub address: u32,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// What they are, for people.
    pub what: String,
}

impl Program {
    /// One past the last byte's address.
    pub fn end(&self) -> u64 {
        u64::from(self.address) + self.bytes.len() as u64
    }
}

/// Everything to do, in order: the erases, then the programs.
#[derive(Clone, Debug)]
pub struct FlashPlan {
    /// The board's name.
    pub board: String,
    /// The probe-rs chip name.
    pub chip: String,
    /// The installed image.
    pub image: ImageId,
    /// Its security counter: the device's minimum from now on.
    pub security_counter: u32,
    /// Partitions erased, in this order, before anything is programmed.
    pub erase: Vec<Erase>,
    /// Programmed in this order: bootloader, slot A, state.
    pub program: Vec<Program>,
    flash_base: u32,
    flash_size: u32,
    erased: u8,
}

impl FlashPlan {
    /// The plan that installs `image` (a `.fwi` file) on `board`, with `bootloader` in its
    /// partition if given (else that partition is left as it is).
    pub fn new(board: &Board, image: &[u8], bootloader: Option<&Input>) -> Result<FlashPlan> {
        let parsed = TransportImage::parse(image)?;
        let manifest = parsed.header().manifest();
        if manifest.board() != board.name {
            bail!("the image is for board {:?}, not {}", manifest.board(), board.name);
        }
        let id = parsed.header().id();
        let erased = board.flash.erased_value;
        let part = |name| board.partitions.get(name);
        let erase_of = |name| Erase {
            partition: name,
            address: board.address(part(name).offset),
            size: part(name).size,
        };

        // The state partition is erased first: a flash cut off after that holds a fresh log
        // (slot A boots confirmed if it is whole), never the old log naming an image whose
        // slot is already erased.
        let mut erase = vec![erase_of(PartitionName::State)];
        let mut program = Vec::new();
        if let Some(bl) = bootloader {
            erase.push(erase_of(PartitionName::Bootloader));
            program.extend(bootloader_programs(board, bl)?);
        }
        erase.extend([PartitionName::SlotA, PartitionName::SlotB].map(erase_of));

        // The device's own check that every component lies in slot A after the header, before
        // the installed form (as large as the highest component's end) is built.
        let layout = board.flash_layout().with_context(|| format!("board {}", board.name))?;
        manifest
            .check_layout(&layout.slot_layout(), parsed.header().len())
            .map_err(|e| anyhow::anyhow!("the image does not fit {}'s slot A: {e}", board.name))?;
        let slot_a = board.slot_a_address();
        let installed = installed_form(image, slot_a, erased)?;
        if installed.len() > part(PartitionName::SlotA).size as usize {
            bail!(
                "the installed image ({} bytes) does not fit slot A ({} bytes)",
                installed.len(),
                part(PartitionName::SlotA).size
            );
        }
        program.push(Program {
            partition: PartitionName::SlotA,
            address: slot_a,
            what: format!("image {id} {}, installed", manifest.version()),
            bytes: installed,
        });
        program.push(initial_state(board, &id, manifest.security_counter())?);

        Ok(FlashPlan {
            board: board.name.clone(),
            chip: board.chip.clone(),
            image: id,
            security_counter: manifest.security_counter(),
            erase,
            program,
            flash_base: board.flash.base,
            flash_size: board.flash.size,
            erased,
        })
    }

    /// The whole flash after the plan ran on a flash that held nothing (every byte the erased
    /// value): what QEMU boots and what factory files hold.
    pub fn flash(&self) -> Vec<u8> {
        let mut flash = vec![self.erased; self.flash_size as usize];
        for p in &self.program {
            let at = (p.address - self.flash_base) as usize;
            flash[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
        }
        flash
    }

    /// The flash's first address.
    pub fn flash_base(&self) -> u32 {
        self.flash_base
    }

    /// The value of an erased byte.
    pub fn erased_value(&self) -> u8 {
        self.erased
    }

    /// Bytes programmed in all.
    pub fn program_bytes(&self) -> u64 {
        self.program.iter().map(|p| p.bytes.len() as u64).sum()
    }

    /// Bytes erased in all.
    pub fn erase_bytes(&self) -> u64 {
        self.erase.iter().map(|e| u64::from(e.size)).sum()
    }

    /// The plan for people: one line per step, in order.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "flash plan for {} ({}): image {}, security counter {}\n",
            self.board, self.chip, self.image, self.security_counter
        );
        for e in &self.erase {
            text += &format!(
                "  erase    {:#010x}..{:#010x}  {:>9} B  {}\n",
                e.address,
                u64::from(e.address) + u64::from(e.size),
                e.size,
                e.partition.as_str()
            );
        }
        for p in &self.program {
            text += &format!(
                "  program  {:#010x}..{:#010x}  {:>9} B  {}: {}\n",
                p.address,
                p.end(),
                p.bytes.len(),
                p.partition.as_str(),
                p.what
            );
        }
        text +=
            &format!("  {} B erased, {} B programmed\n", self.erase_bytes(), self.program_bytes());
        text
    }
}

/// The bootloader's segments, each inside the bootloader partition.
fn bootloader_programs(board: &Board, bl: &Input) -> Result<Vec<Program>> {
    let part = board.partitions.bootloader;
    let (start, end) = (
        u64::from(board.address(part.offset)),
        u64::from(board.address(part.offset)) + u64::from(part.size),
    );
    bl.segments
        .iter()
        .map(|s| {
            if u64::from(s.address) < start || s.end() > end {
                bail!(
                    "{}: bytes at {:#x}..{:#x} lie outside the bootloader partition {start:#x}..{end:#x}",
                    bl.path.display(),
                    s.address,
                    s.end()
                );
            }
            Ok(Program {
                partition: PartitionName::Bootloader,
                address: s.address,
                bytes: s.bytes.clone(),
                what: format!("bootloader ({})", bl.path.display()),
            })
        })
        .collect()
}

/// The state partition's first bytes after `StateLog::initialize` (the device's own code, run
/// here on a simulated flash of the board's geometry): slot A's image confirmed.
fn initial_state(board: &Board, id: &ImageId, security_counter: u32) -> Result<Program> {
    let layout = board.flash_layout().with_context(|| format!("board {}", board.name))?;
    let mut flash = SimFlash::new(&layout);
    StateLog::initialize(&mut flash, &layout, ImageTag::of(id), security_counter)
        .map_err(|e| anyhow::anyhow!("writing the initial state log: {e}"))?;
    let state: Partition = board.partitions.state;
    let bytes = flash.read_vec(state.offset, state.size as usize);
    // Programming erased bytes changes nothing: stop at the last write unit that holds data.
    let wu = board.flash.write_unit as usize;
    let used = bytes.iter().rposition(|&b| b != board.flash.erased_value).map_or(0, |i| i + 1);
    let used = used.div_ceil(wu) * wu;
    Ok(Program {
        partition: PartitionName::State,
        address: board.address(state.offset),
        bytes: bytes[..used].to_vec(),
        what: format!(
            "state log: image {} confirmed, minimum security counter {security_counter}",
            ImageTag::of(id)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InputKind, Segment};
    use firmware::image::{ComponentSource, ImageSpec, Role, encode_image};

    fn image(board: &str, security_counter: u32) -> Vec<u8> {
        image_at(board, security_counter, 0x1_0400)
    }

    fn image_at(board: &str, security_counter: u32, load_address: u32) -> Vec<u8> {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let spec = ImageSpec {
            board: board.into(),
            version: "1.0.0".parse().unwrap(),
            security_counter,
            compression: None,
            components: vec![ComponentSource {
                role: Role::Os,
                name: "os".into(),
                load_address,
                bytes: vec![0x5A; 3000],
            }],
            slot: None,
        };
        encode_image(&spec, &[key]).unwrap().bytes
    }

    fn bootloader(address: u32, len: usize) -> Input {
        Input {
            path: "bl.bin".into(),
            kind: InputKind::Raw,
            segments: vec![Segment { address, bytes: vec![0xB0; len] }],
        }
    }

    #[test]
    fn flash_holds_bootloader_installed_image_state_and_erased_rest() {
        let catalog = boards::Catalog::builtin().unwrap();
        let board = catalog.get("microbit").unwrap();
        let plan = FlashPlan::new(board, &image("microbit", 5), Some(&bootloader(0, 100))).unwrap();
        let flash = plan.flash();
        assert_eq!(flash.len(), 0x4_0000);
        assert!(flash[..100].iter().all(|&b| b == 0xB0));
        assert!(flash[100..0x1_0000].iter().all(|&b| b == 0xFF));
        assert_eq!(&flash[0x1_0000..0x1_0004], b"FWIM");
        assert!(flash[0x1_0400..0x1_0400 + 3000].iter().all(|&b| b == 0x5A));
        assert!(flash[0x1_0400 + 3000..0x3_E000].iter().all(|&b| b == 0xFF));
        assert!(flash[0x3_E000..0x3_E000 + 32].iter().any(|&b| b != 0xFF), "a state log");

        // The state is the device's own reading of it.
        let layout = board.flash_layout().unwrap();
        let mut sim = SimFlash::new(&layout);
        sim.load(0, &flash);
        let state = *StateLog::open(&mut sim, &layout).unwrap().state();
        assert_eq!(state.min_security_counter, 5);
        assert_eq!(state.outcome.map(|o| o.image), Some(ImageTag::of(&plan.image)));

        let erased: Vec<_> = plan.erase.iter().map(|e| e.partition.as_str()).collect();
        assert_eq!(erased, ["state", "bootloader", "slot_a", "slot_b"]);
        let programmed: Vec<_> = plan.program.iter().map(|p| p.partition.as_str()).collect();
        assert_eq!(programmed, ["bootloader", "slot_a", "state"]);
    }

    #[test]
    fn without_a_bootloader_its_partition_is_left_alone() {
        let catalog = boards::Catalog::builtin().unwrap();
        let board = catalog.get("microbit").unwrap();
        let plan = FlashPlan::new(board, &image("microbit", 0), None).unwrap();
        assert!(plan.erase.iter().all(|e| e.partition != PartitionName::Bootloader));
        assert!(plan.program.iter().all(|p| p.partition != PartitionName::Bootloader));
        assert!(plan.to_text().contains("erase    0x00026c00..0x0003e000      95232 B  slot_b"));
    }

    #[test]
    fn refusals() {
        let catalog = boards::Catalog::builtin().unwrap();
        let board = catalog.get("microbit").unwrap();
        let err = FlashPlan::new(board, &image("rpi-pico", 0), None).unwrap_err().to_string();
        assert!(err.contains("not microbit"), "{err}");
        let err = FlashPlan::new(board, &image("microbit", 0), Some(&bootloader(0xFF00, 0x200)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the bootloader partition"), "{err}");
        // A component past slot A (a signed image made without a board's layout): refused by
        // the device's own layout check, before anything as large as its address is built.
        let far = image_at("microbit", 0, 0xF000_0000);
        let err = FlashPlan::new(board, &far, None).unwrap_err().to_string();
        assert!(err.contains("does not fit microbit's slot A"), "{err}");
    }
}
