//! What `imager boards` shows: each board file plus the absolute addresses derived from it.

use boards::{Board, EraseLayout, PartitionName};
use serde::Serialize;

/// A board as `imager boards` shows it: the board file plus absolute addresses.
#[derive(Serialize)]
pub(crate) struct BoardView<'a> {
    #[serde(flatten)]
    board: &'a Board,
    /// Address of the first byte of each partition.
    partition_addresses: std::collections::BTreeMap<&'static str, u32>,
    /// Where the first component of an image must be linked: slot A + header.
    link_address: u32,
}

impl<'a> BoardView<'a> {
    pub(crate) fn of(board: &'a Board) -> Self {
        let partition_addresses = PartitionName::ALL
            .iter()
            .map(|p| (p.as_str(), board.address(board.partitions.get(*p).offset)))
            .collect();
        BoardView { board, partition_addresses, link_address: board.link_address() }
    }

    pub(crate) fn to_text(&self) -> String {
        let b = self.board;
        let size = |bytes: u32| {
            if bytes.is_multiple_of(1024) {
                format!("{} KiB", bytes / 1024)
            } else {
                format!("{bytes} B")
            }
        };
        let erase = match &b.flash.erase {
            EraseLayout::Uniform(unit) => format!("erase {}", size(*unit)),
            EraseLayout::Sectors(runs) => format!(
                "sectors {}",
                runs.iter()
                    .map(|r| format!("{}x{}", r.count, size(r.size)))
                    .collect::<Vec<_>>()
                    .join(" + ")
            ),
        };
        let mut text = format!("{}  {}\n", b.name, b.description);
        text += &format!(
            "  chip {}, target {}{}\n",
            b.chip,
            b.target,
            b.qemu_machine.as_ref().map(|m| format!(", qemu -M {m}")).unwrap_or_default()
        );
        text += &format!(
            "  flash {:#010x}, {}, {erase}, write {} B, erased {:#04x}; ram {:#010x}, {}\n",
            b.flash.base,
            size(b.flash.size),
            b.flash.write_unit,
            b.flash.erased_value,
            b.ram.base,
            size(b.ram.size)
        );
        for p in PartitionName::ALL {
            let part = b.partitions.get(p);
            let start = b.address(part.offset);
            text += &format!(
                "  {:<10}  {start:#010x}..{:#010x}  {:>8}\n",
                p.as_str(),
                u64::from(start) + u64::from(part.size),
                size(part.size)
            );
        }
        text += &format!(
            "  link the first component at {:#010x} (slot_a + {:#x} header)\n\n",
            self.link_address, b.image.header_size
        );
        text
    }
}
