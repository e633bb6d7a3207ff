//! `imager run`: boot an image in QEMU. The board's whole flash is laid out as the flash plan
//! leaves it (`crate::plan`: the bootloader in its partition, the image's installed form in
//! slot A, a state log saying it is confirmed, everything else erased) and written into QEMU's flash through its gdbstub, not with
//! `-kernel`: QEMU reloads `-kernel` content at every guest reset, which would undo the
//! bootloader's swaps (see `firmware/device/NOTES.md`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use boards::Board;

use crate::input::{Input, elf_machine_for};

/// Reads a bootloader file (ELF, Intel HEX or `FILE@ADDRESS`) for `board`.
pub fn read_bootloader(spec: &str, board: &Board) -> Result<Input> {
    Input::read(spec, elf_machine_for(&board.target))
}

/// Where the UART goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serial {
    /// This terminal: console text shown, link frames hidden, keys typed sent.
    Stdio,
    /// A TCP server on loopback at this port (`--serial tcp:PORT`) relaying the raw UART; the
    /// machine starts once the first client (say, `imager gateway`) connected.
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

/// QEMU running a board, its UART connected to this process. Dropping it stops QEMU; so does
/// this process dying (on Linux QEMU gets SIGKILL when its parent goes).
pub struct Machine {
    child: Child,
    uart: TcpStream,
}

impl Machine {
    /// Starts QEMU for `board` with `flash` loaded and lets it run; `extra` arguments are
    /// passed on (e.g. `-icount shift=0`).
    pub fn start(board: &Board, flash: &[u8], qemu: &str, extra: &[String]) -> Result<Machine> {
        let machine = board.qemu_machine.as_deref().ok_or_else(|| {
            anyhow!("board {} has no qemu_machine: it cannot run in QEMU", board.name)
        })?;
        // Free ports on loopback: the gdbstub's, and ours that QEMU's UART connects to.
        let gdb_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let uart_listener = TcpListener::bind("127.0.0.1:0")?;
        let uart_port = uart_listener.local_addr()?.port();
        let mut command = qemu_command(qemu);
        command
            .args(["-M", machine, "-display", "none", "-monitor", "none", "-S"])
            .args(["-gdb", &format!("tcp:127.0.0.1:{gdb_port}")])
            .args(["-serial", &format!("tcp:127.0.0.1:{uart_port}")])
            .args(extra)
            .stdin(Stdio::null());
        let mut child = command.spawn().with_context(|| {
            format!("cannot start {qemu} (Debian: apt-get install qemu-system-arm)")
        })?;
        let uart = match accept_uart(&uart_listener, &mut child) {
            Ok(uart) => uart,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).with_context(|| format!("{qemu} did not connect its UART"));
            }
        };
        // From here on, dropping `machine` stops QEMU whatever fails.
        let machine = Machine { child, uart };
        machine.uart.set_nodelay(true)?;
        load(gdb_port, u64::from(board.flash.base), flash)?;
        Ok(machine)
    }

    /// The UART: bytes the device sends, and a way to send it bytes.
    pub fn uart(&self) -> Result<TcpStream> {
        Ok(self.uart.try_clone()?)
    }

    /// Waits for QEMU to exit.
    pub fn wait(&mut self) -> Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that runs `qemu`: on Linux through util-linux's `setpriv --pdeathsig KILL`
/// when it is there, so that the kernel kills QEMU if this process dies (even by a signal it
/// cannot catch); QEMU must never outlive `imager run`.
fn qemu_command(qemu: &str) -> Command {
    let setpriv = cfg!(target_os = "linux")
        && Command::new("setpriv")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if setpriv {
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--", qemu]);
        command
    } else {
        Command::new(qemu)
    }
}

/// Takes QEMU's UART connection, unless QEMU exits first or takes more than 10 s.
fn accept_uart(listener: &TcpListener, child: &mut Child) -> Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            bail!("it exited with {status}");
        }
        if Instant::now() > deadline {
            bail!("no connection within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Shows the machine's console on this terminal until QEMU exits: text printed, link frames
/// left out, typed bytes sent to the UART.
pub fn console(machine: &mut Machine) -> Result<std::process::ExitStatus> {
    let mut uart = machine.uart()?;
    let mut to_uart = machine.uart()?;
    std::thread::spawn(move || std::io::copy(&mut std::io::stdin(), &mut to_uart));
    let mut lines = crate::console::TextLines::default();
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        let n = match uart.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in lines.push(&buf[..n]) {
            writeln!(stdout, "{line}")?;
        }
        stdout.flush()?;
    }
    machine.wait()
}

/// Relays the raw UART to TCP clients on 127.0.0.1:`port`. The machine is started (by
/// `start`) once the first client connected, so that it sees every byte; later clients take
/// over from earlier ones. Returns when QEMU exits.
pub fn relay(
    port: u16,
    start: impl FnOnce() -> Result<Machine>,
) -> Result<std::process::ExitStatus> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    eprintln!(
        "imager: UART on tcp:127.0.0.1:{port}; waiting for a client (e.g. imager gateway --serial tcp:127.0.0.1:{port} ...)"
    );
    let (first, _) = listener.accept()?;
    first.set_nodelay(true)?;
    let mut machine = start()?;
    let uart = machine.uart()?;
    let current = std::sync::Arc::new(std::sync::Mutex::new(None::<TcpStream>));
    let attach = {
        let current = current.clone();
        move |client: TcpStream| -> Result<()> {
            let mut from_client = client.try_clone()?;
            let mut to_uart = uart.try_clone()?;
            std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_uart));
            *current.lock().map_err(|_| anyhow!("relay state poisoned"))? = Some(client);
            eprintln!("imager: serial client connected");
            Ok(())
        }
    };
    attach(first)?;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let _ = client.set_nodelay(true);
            if attach(client).is_err() {
                break;
            }
        }
    });
    let mut from_uart = machine.uart()?;
    let mut buf = [0u8; 4096];
    loop {
        let n = match from_uart.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut slot = current.lock().map_err(|_| anyhow!("relay state poisoned"))?;
        if let Some(client) = slot.as_mut()
            && client.write_all(&buf[..n]).is_err()
        {
            // The client left; what the device says until the next one connects is dropped.
            *slot = None;
            eprintln!("imager: serial client disconnected");
        }
    }
    machine.wait()
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

    #[test]
    fn serial_specs() {
        assert_eq!("tcp:4444".parse::<Serial>(), Ok(Serial::Tcp(4444)));
        assert!("tcp:x".parse::<Serial>().is_err());
    }
}
