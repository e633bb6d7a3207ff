//! `imager run`: boot an image in QEMU. The board's whole flash is laid out as a device would
//! hold it after the factory (the bootloader in its partition, the image's installed form in
//! slot A, everything else erased) and written into QEMU's flash through its gdbstub, not with
//! `-kernel`: QEMU reloads `-kernel` content at every guest reset, which would undo the
//! bootloader's swaps (see `firmware/device/NOTES.md`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use boards::Board;
use firmware::image::{TransportImage, installed_form};

use crate::input::{Input, elf_machine_for};

/// The board's whole flash as the factory leaves it: `bootloader` (if given) in the bootloader
/// partition, the installed form of `image` in slot A, the rest erased.
pub fn flash_image(board: &Board, image: &[u8], bootloader: Option<&Input>) -> Result<Vec<u8>> {
    let parsed = TransportImage::parse(image)?;
    let for_board = parsed.header().manifest().board();
    if for_board != board.name {
        bail!("the image is for board {for_board:?}, not {}", board.name);
    }
    let erased = board.flash.erased_value;
    let mut flash = vec![erased; board.flash.size as usize];
    let base = u64::from(board.flash.base);
    if let Some(bl) = bootloader {
        let part = board.partitions.bootloader;
        let (start, end) = (base + u64::from(part.offset), base + part.end());
        for s in &bl.segments {
            if u64::from(s.address) < start || s.end() > end {
                bail!(
                    "{}: bytes at {:#x}..{:#x} lie outside the bootloader partition {start:#x}..{end:#x}",
                    bl.path.display(),
                    s.address,
                    s.end()
                );
            }
            let at = (u64::from(s.address) - base) as usize;
            flash[at..at + s.bytes.len()].copy_from_slice(&s.bytes);
        }
    }
    let slot_a = board.slot_a_address();
    let installed = installed_form(image, slot_a, erased)?;
    let at = (u64::from(slot_a) - base) as usize;
    if installed.len() > board.partitions.slot_a.size as usize {
        bail!("the installed image ({} bytes) does not fit slot A", installed.len());
    }
    flash[at..at + installed.len()].copy_from_slice(&installed);
    Ok(flash)
}

/// Reads a bootloader file (ELF, Intel HEX or `FILE@ADDRESS`) for `board`.
pub fn read_bootloader(spec: &str, board: &Board) -> Result<Input> {
    Input::read(spec, elf_machine_for(&board.target))
}

/// Where the UART goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serial {
    /// This terminal.
    Stdio,
    /// A TCP server on loopback at this port (`--serial tcp:PORT`).
    Tcp(u16),
}

impl std::str::FromStr for Serial {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "stdio" {
            return Ok(Serial::Stdio);
        }
        let port = s
            .strip_prefix("tcp:")
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| format!("{s:?}: expected stdio or tcp:PORT"))?;
        Ok(Serial::Tcp(port))
    }
}

/// Starts QEMU for `board` with `flash` loaded; returns the running process. Its UART goes to
/// `serial` (with [`Serial::Stdio`] and `capture`, to the child's stdout pipe instead of this
/// process's); `extra` arguments are passed on (e.g. `-icount shift=0`).
pub fn start(
    board: &Board,
    flash: &[u8],
    serial: &Serial,
    capture: bool,
    qemu: &str,
    extra: &[String],
) -> Result<Child> {
    let machine = board.qemu_machine.as_deref().ok_or_else(|| {
        anyhow!("board {} has no qemu_machine: it cannot run in QEMU", board.name)
    })?;
    // A free port for the gdbstub, loopback only.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let serial_arg = match serial {
        Serial::Stdio => "stdio".to_owned(),
        Serial::Tcp(p) => format!("tcp:127.0.0.1:{p},server=on,wait=off"),
    };
    let mut child = Command::new(qemu)
        .args(["-M", machine, "-display", "none", "-monitor", "none", "-S"])
        .args(["-gdb", &format!("tcp:127.0.0.1:{port}"), "-serial", &serial_arg])
        .args(extra)
        .stdin(if *serial == Serial::Stdio && !capture { Stdio::inherit() } else { Stdio::null() })
        .stdout(if capture { Stdio::piped() } else { Stdio::inherit() })
        .spawn()
        .with_context(|| {
            format!("cannot start {qemu} (Debian: apt-get install qemu-system-arm)")
        })?;
    if let Err(e) = load(port, u64::from(board.flash.base), flash) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(child)
}

/// Writes `flash` at `base` through QEMU's gdbstub, resets the machine (so it starts from the
/// new vector table) and lets it run.
fn load(port: u16, base: u64, flash: &[u8]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e).context("QEMU's gdbstub did not answer"),
        }
    };
    // Without it each 1 KiB packet waits for a delayed ACK: 11 s instead of 0.01 s.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut gdb = Gdb { reader: BufReader::new(stream.try_clone()?), writer: stream };
    for (i, chunk) in flash.chunks(1024).enumerate() {
        let address = base + (i * 1024) as u64;
        let reply =
            gdb.command(&format!("M{address:x},{:x}:{}", chunk.len(), hex::encode(chunk)))?;
        if reply != "OK" {
            bail!("QEMU refused the flash write at {address:#x}: {reply}");
        }
    }
    // `monitor system_reset`: the CPU takes its stack pointer and entry from the new table.
    gdb.command(&format!("qRcmd,{}", hex::encode("system_reset")))?;
    gdb.send("D")?;
    Ok(())
}

/// Just enough of the GDB remote protocol to write memory.
struct Gdb {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Gdb {
    fn send(&mut self, payload: &str) -> Result<()> {
        let sum = payload.bytes().fold(0u8, |s, b| s.wrapping_add(b));
        write!(self.writer, "${payload}#{sum:02x}")?;
        self.writer.flush()?;
        Ok(())
    }

    /// Sends a command and returns the payload of the reply packet (skipping console output
    /// packets `O...`).
    fn command(&mut self, payload: &str) -> Result<String> {
        self.send(payload)?;
        loop {
            let reply = self.packet()?;
            if reply.starts_with('O') && reply != "OK" {
                continue;
            }
            return Ok(reply);
        }
    }

    fn packet(&mut self) -> Result<String> {
        let mut byte = [0u8; 1];
        loop {
            self.reader.read_exact(&mut byte).context("QEMU's gdbstub closed the connection")?;
            match byte[0] {
                b'+' | b'-' => continue,
                b'$' => break,
                _ => continue,
            }
        }
        let mut payload = Vec::new();
        self.reader.read_until(b'#', &mut payload)?;
        payload.pop();
        let mut sum = [0u8; 2];
        self.reader.read_exact(&mut sum)?;
        self.writer.write_all(b"+")?;
        Ok(String::from_utf8_lossy(&payload).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InputKind, Segment};
    use firmware::image::{ComponentSource, ImageSpec, Role, encode_image};

    fn image(board: &str) -> Vec<u8> {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let spec = ImageSpec {
            board: board.into(),
            version: "1.0.0".parse().unwrap(),
            security_counter: 0,
            compression: None,
            components: vec![ComponentSource {
                role: Role::Os,
                name: "os".into(),
                load_address: 0x1_0400,
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
    fn flash_holds_bootloader_installed_image_and_erased_rest() {
        let catalog = boards::Catalog::builtin().unwrap();
        let board = catalog.get("microbit").unwrap();
        let flash = flash_image(board, &image("microbit"), Some(&bootloader(0, 100))).unwrap();
        assert_eq!(flash.len(), 0x4_0000);
        assert!(flash[..100].iter().all(|&b| b == 0xB0));
        assert!(flash[100..0x1_0000].iter().all(|&b| b == 0xFF));
        assert_eq!(&flash[0x1_0000..0x1_0004], b"FWIM");
        assert!(flash[0x1_0400..0x1_0400 + 3000].iter().all(|&b| b == 0x5A));
        assert!(flash[0x1_0400 + 3000..].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn refusals() {
        let catalog = boards::Catalog::builtin().unwrap();
        let board = catalog.get("microbit").unwrap();
        let err = flash_image(board, &image("rpi-pico"), None).unwrap_err().to_string();
        assert!(err.contains("not microbit"), "{err}");
        let err = flash_image(board, &image("microbit"), Some(&bootloader(0xFF00, 0x200)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the bootloader partition"), "{err}");
        assert_eq!("tcp:4444".parse::<Serial>(), Ok(Serial::Tcp(4444)));
        assert!("tcp:x".parse::<Serial>().is_err());
    }
}
