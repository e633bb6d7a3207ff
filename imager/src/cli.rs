//! Argument parsing and output for every command. Each command's work is a function in the
//! library (the ota-server commands' in [`crate::client`]); this module only turns arguments
//! into calls and results into text.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use boards::Catalog;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use firmware::image::{HeatshrinkParams, ImageSummary, TransportImage, Version};
use ota_proto::client::Blocking;
use ota_proto::{BoardName, DeviceFilter, DeviceId, DeviceState, EnvironmentName, NewDevice};
use serde::Serialize;
use strum::VariantArray;

use crate::board_list::BoardView;
use crate::client::{self, enroll};
use crate::fuse::{FuseRequest, fuse};
use crate::{keys, verify};

/// Fuse an application and its OS into one signed, immutable firmware image per board, check
/// such images, and release them through an ota-server.
#[derive(Parser, Debug)]
#[command(name = "imager", version, propagate_version = false, max_term_width = 100)]
pub struct Cli {
    /// Folder of extra board files (`NAME.toml`); they add to, or replace, the shipped boards.
    #[arg(long, global = true, env = "IMAGER_BOARDS", value_name = "DIR")]
    pub boards: Option<PathBuf>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate an Ed25519 key pair: PREFIX.pem (private, PKCS#8) and PREFIX.pub.pem (SPKI).
    Keygen(KeygenArgs),
    /// Build one signed image for a board from an OS, an app and data parts.
    Fuse(FuseArgs),
    /// Describe an image or patch file: id, board, version, components, signatures.
    Inspect(InspectArgs),
    /// Check an image file: intact, signed by a given key, every component's hash, fits its board.
    Verify(VerifyArgs),
    /// List the known boards, their partitions, and where to link the first component.
    Boards(BoardsArgs),
    /// Patches: make one from an image to its next release, or apply one as a device would.
    #[command(subcommand)]
    Delta(crate::delta::DeltaCommand),
    /// Trust statements (root of trust, key rotation and revocation), signed here with the
    /// root key(s): init, rotate, revoke, show.
    #[command(subcommand)]
    Trust(crate::trust::TrustCommand),
    /// Boot an image in QEMU (boards with a qemu_machine): bootloader and installed image laid
    /// into the flash, the UART on this terminal or a TCP port.
    Run(RunArgs),
    /// Program a board through a debug probe (probe-rs): bootloader, the image in slot A, a
    /// state log that marks it confirmed; the rest of every partition erased.
    Flash(FlashArgs),
    /// Write a factory programming file: what `imager flash` programs, as one Intel HEX, binary
    /// or ELF file.
    Factory(FactoryArgs),
    /// Bridge a device's serial link to the ota-server's device API: check-ins, events and the
    /// offered image in chunks; the device's console text is printed.
    Gateway(GatewayArgs),
    /// Upload an image file to the ota-server's repository.
    Push(PushArgs),
    /// List the images stored on the ota-server.
    Images(ClientArgs),
    /// Release an image to an environment whose release key the server holds (dev, test).
    Release(ReleaseArgs),
    /// Promote an image to an environment with a release statement signed here, with its key.
    Promote(PromoteArgs),
    /// Go back to the image an environment ran before its current release for a board.
    Rollback(RollbackArgs),
    /// Stop offering an environment's current release for a board.
    Pause(PauseArgs),
    /// Offer a paused (or halted) release again.
    Resume(PauseArgs),
    /// Show environments and how their current releases roll out.
    Status(StatusArgs),
    /// List devices, optionally filtered.
    Devices(DevicesArgs),
    /// Enroll a device (or a factory line's devices from a CSV file), or show one.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Show the audit log: who did what, newest first.
    Audit(AuditArgs),
}

/// `imager keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Path prefix: writes PREFIX.pem and PREFIX.pub.pem (a trailing `.pem` is the private
    /// key's name, not part of the prefix); never overwrites either.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
}

/// How components travel in the image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// heatshrink, with --window and --lookahead (a component it cannot shrink stays raw).
    Heatshrink,
    /// Every component raw.
    None,
}

/// `imager fuse`.
#[derive(Args, Debug)]
#[command(after_help = "Inputs are ELF (loadable segments at their load addresses), Intel HEX, \
or a raw binary with its address: app.bin@0x10400. Every byte must land in slot A after the \
image header: see `imager boards` for each board's link address.")]
pub struct FuseArgs {
    /// Board the image is for (see `imager boards`).
    #[arg(long, value_name = "NAME")]
    pub board: String,
    /// The OS: ELF, Intel HEX, or FILE@ADDRESS for a raw binary.
    #[arg(long, value_name = "FILE", required_unless_present = "app")]
    pub os: Option<String>,
    /// The application: ELF, Intel HEX, or FILE@ADDRESS for a raw binary.
    #[arg(long, value_name = "FILE")]
    pub app: Option<String>,
    /// A data part, NAME=FILE (NAME of [a-z0-9_-], at most 16 characters); repeatable.
    #[arg(long, value_name = "NAME=FILE", value_parser = parse_data)]
    pub data: Vec<(String, String)>,
    /// Image version, semantic: MAJOR.MINOR.PATCH[-PRE][+BUILD].
    #[arg(long, value_name = "SEMVER", value_parser = parse_version)]
    pub version: Version,
    /// Ed25519 private key (PKCS#8 PEM) to sign with; repeat to co-sign (at most 4).
    #[arg(long, value_name = "PEM", required = true)]
    pub key: Vec<PathBuf>,
    /// Anti-rollback counter: devices refuse images below the counter they stored.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub security_counter: u32,
    /// How components travel in the file.
    #[arg(long, value_enum, default_value_t = CompressionArg::Heatshrink)]
    pub compression: CompressionArg,
    /// heatshrink window, as a power of two (the device's decoder needs 2^N bytes of RAM).
    #[arg(long, value_name = "N", default_value_t = HeatshrinkParams::DEFAULT.window())]
    pub window: u8,
    /// heatshrink lookahead, as a power of two.
    #[arg(long, value_name = "N", default_value_t = HeatshrinkParams::DEFAULT.lookahead())]
    pub lookahead: u8,
    /// Output image file (.fwi); written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `imager inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image file, or patch file (`imager delta create`).
    pub file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `imager verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Image file.
    pub file: PathBuf,
    /// Ed25519 public key (SPKI PEM) to trust; repeatable.
    #[arg(long, value_name = "PEM", required = true)]
    pub pubkey: Vec<PathBuf>,
}

/// `imager run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Image file (.fwi); its board says which machine to emulate.
    pub image: PathBuf,
    /// Bootloader for the bootloader partition: ELF, Intel HEX or FILE@ADDRESS. Without it the
    /// partition is left erased (and nothing boots).
    #[arg(long, value_name = "FILE")]
    pub bootloader: Option<String>,
    /// Where the UART goes: stdio, or tcp:PORT (a server on 127.0.0.1 that `imager gateway`
    /// or a terminal can connect to).
    #[arg(long, default_value = "stdio")]
    pub serial: crate::run::Serial,
    /// The QEMU program.
    #[arg(long, default_value = "qemu-system-arm", env = "IMAGER_QEMU")]
    pub qemu: String,
    /// More QEMU arguments, e.g. --qemu-arg=-icount --qemu-arg=shift=0.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,
}

/// `imager flash`.
#[derive(Args, Debug)]
#[command(after_help = "The plan: erase the bootloader partition (with --bootloader), slot A, \
slot B and the state partition; program the bootloader, the image's installed form in slot A \
and, last, a state log saying that image is confirmed (its security counter becomes the \
device's minimum); reset the chip. --dry-run prints it without a probe. Check the board file \
against the chip first with `imager boards --check`.")]
pub struct FlashArgs {
    /// Image file (.fwi); its board says where everything goes.
    pub image: PathBuf,
    /// Bootloader for the bootloader partition: ELF, Intel HEX or FILE@ADDRESS. Without it the
    /// partition is left as it is.
    #[arg(long, value_name = "FILE")]
    pub bootloader: Option<String>,
    /// The probe to use, VID:PID or VID:PID:SERIAL (hex, as lsusb prints); needed only when
    /// several are attached.
    #[arg(long, value_name = "VID:PID[:SERIAL]", value_parser = crate::probe::parse_selector)]
    pub probe: Option<probe_rs::probe::DebugProbeSelector>,
    /// SWD/JTAG clock in kHz (default: the probe's).
    #[arg(long, value_name = "KHZ")]
    pub speed: Option<u32>,
    /// Read every programmed byte back and compare.
    #[arg(long)]
    pub verify: bool,
    /// Print the plan (ranges, sizes, what is erased) and stop; needs no probe.
    #[arg(long)]
    pub dry_run: bool,
}

/// `imager factory`.
#[derive(Args, Debug)]
pub struct FactoryArgs {
    /// Image file (.fwi); its board says where everything goes.
    pub image: PathBuf,
    /// Bootloader for the bootloader partition: ELF, Intel HEX or FILE@ADDRESS.
    #[arg(long, value_name = "FILE")]
    pub bootloader: String,
    /// hex: Intel HEX (erased lines left out); bin: from the flash's base to the last
    /// programmed byte, gaps filled with the erased value; elf: one loadable segment per
    /// programmed range.
    #[arg(long)]
    pub format: crate::factory::Format,
    /// Output file (written whole or not at all).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `imager gateway`.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// The device's serial line, exposed over TCP: tcp:HOST:PORT (as `imager run --serial
    /// tcp:PORT` offers it).
    #[arg(long, value_name = "tcp:HOST:PORT")]
    pub serial: String,
    /// Seconds a device told "nothing on offer" waits before checking in again.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub interval: u16,
    /// Seconds to keep trying to connect to the serial line.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub connect_timeout: u64,
    /// The server, and the device's token (`imager device add` prints it).
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `imager boards`.
#[derive(Args, Debug)]
pub struct BoardsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Check every board file against probe-rs's built-in chip database (offline): the chip
    /// exists, its flash and RAM hold the board's, partitions lie on its sector grid. Fails if
    /// any board does not match.
    #[arg(long)]
    pub check: bool,
}

/// Where the ota-server is and who is asking: every server command takes these.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// The ota-server's URL, http://HOST:PORT (or several replicas' URLs, separated by commas:
    /// a request goes to another when one cannot be reached).
    #[arg(long, env = client::SERVER_VAR, value_name = "URL")]
    pub server: Option<String>,
    /// API token (its role decides what may be done).
    #[arg(long, env = client::TOKEN_VAR, value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// What every server command takes: `--json` and the server.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Print JSON (the server's answer) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

impl ServerArgs {
    fn connect(&self) -> Result<Blocking> {
        client::connect(self.server.as_deref(), self.token.as_deref())
    }
}

impl ClientArgs {
    fn connect(&self) -> Result<Blocking> {
        self.server.connect()
    }

    /// Writes `value` as pretty JSON with `--json`, else `text()`.
    fn emit<T: Serialize>(
        &self,
        out: &mut dyn Write,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> Result<()> {
        if self.json {
            serde_json::to_writer_pretty(&mut *out, value)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", text())?;
        }
        Ok(())
    }
}

/// `imager push`.
#[derive(Args, Debug)]
#[command(after_help = "Uploading an image the server already stores changes nothing and \
succeeds. The server checks the build signature against its trusted build keys.")]
pub struct PushArgs {
    /// Image file (.fwi), as `imager fuse` wrote it.
    pub file: PathBuf,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `imager release`.
#[derive(Args, Debug)]
#[command(after_help = "IMAGE_ID: the full 64-hex id, or a unique prefix of at least 8 hex \
digits. For an environment whose key is kept offline (prod), use `imager promote`.")]
pub struct ReleaseArgs {
    /// Environment to release to.
    pub env: EnvironmentName,
    /// The image: its id or a unique prefix of at least 8 hex digits.
    pub image_id: String,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `imager promote`.
#[derive(Args, Debug)]
#[command(after_help = "Reads the environment's next release sequence, checks that KEY is \
the environment's release key, signs the statement {image id, environment, sequence} here, \
and sends it. The server's promotion gate still applies (confirmed upstream first).")]
pub struct PromoteArgs {
    /// The image: its id or a unique prefix of at least 8 hex digits.
    pub image_id: String,
    /// Environment to promote to.
    #[arg(long, value_name = "ENV")]
    pub to: EnvironmentName,
    /// The environment's release private key (PKCS#8 PEM).
    #[arg(long, value_name = "PEM")]
    pub key: PathBuf,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `imager rollback`.
#[derive(Args, Debug)]
#[command(after_help = "Without --key the server signs the rollback (it must hold the \
environment's key); with --key the statement for the server's rollback target is signed here.")]
pub struct RollbackArgs {
    /// Environment to roll back.
    #[arg(long, value_name = "ENV")]
    pub env: EnvironmentName,
    /// Board whose release to roll back (needed when the environment has several).
    #[arg(long, value_name = "NAME")]
    pub board: Option<BoardName>,
    /// The environment's release private key (PKCS#8 PEM), to sign the rollback here.
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `imager pause` and `imager resume`.
#[derive(Args, Debug)]
pub struct PauseArgs {
    /// Environment.
    #[arg(long, value_name = "ENV")]
    pub env: EnvironmentName,
    /// Board whose current release it is (needed when the environment has several).
    #[arg(long, value_name = "NAME")]
    pub board: Option<BoardName>,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `imager status`.
#[derive(Args, Debug)]
#[command(after_help = "STAGE is the current stage of the rollout and the share of the \
environment's devices it covers; CONFIRMED, FAILED and IN-STAGE count that stage's devices. A \
halted rollout shows !! HALTED and why. --json prints an array of environments.")]
pub struct StatusArgs {
    /// Only this environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<EnvironmentName>,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The device states, as `--state` takes them (the API's names).
fn device_state() -> impl TypedValueParser<Value = DeviceState> {
    let names = DeviceState::VARIANTS.iter().map(|&s| <&'static str>::from(s));
    PossibleValuesParser::new(names).try_map(|name| name.parse::<DeviceState>())
}

/// `imager devices`.
#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Only devices in this environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<EnvironmentName>,
    /// Only devices in this state.
    #[arg(long, value_name = "STATE", value_parser = device_state())]
    pub state: Option<DeviceState>,
    /// Only devices running this image (id or unique prefix of at least 8 hex digits).
    #[arg(long, value_name = "ID")]
    pub image: Option<String>,
    /// Only devices of this board.
    #[arg(long, value_name = "NAME")]
    pub board: Option<BoardName>,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `imager device ...`.
#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Enroll a device and print its token (the server shows it only this once); or, with
    /// --from-csv, enroll a factory line's devices at once, their tokens written to a file.
    Add(DeviceAddArgs),
    /// Show one device and its update events.
    Show(DeviceShowArgs),
}

/// `imager device add`.
#[derive(Args, Debug)]
#[command(after_help = "--from-csv FILE: one device per line, `id,board,environment` (for \
example `sn-0001,microbit,test`); a first line naming those columns is a header; blank lines and \
lines starting with # are skipped. Every line is checked before anything is sent, and the \
server enrolls all the devices or none: a bad line is named by its number. The tokens go to the \
--out file (`id,token` lines; readable by you only; never overwritten), not to the terminal.")]
pub struct DeviceAddArgs {
    /// Device id: 1 to 64 characters of [A-Za-z0-9._:-].
    #[arg(required_unless_present = "from_csv", conflicts_with = "from_csv")]
    pub id: Option<DeviceId>,
    /// Its board.
    #[arg(long, value_name = "NAME", required_unless_present = "from_csv")]
    #[arg(conflicts_with = "from_csv")]
    pub board: Option<BoardName>,
    /// Its environment.
    #[arg(long, value_name = "ENV", required_unless_present = "from_csv")]
    #[arg(conflicts_with = "from_csv")]
    pub env: Option<EnvironmentName>,
    /// Enroll every device this CSV file lists (id,board,environment), all or none.
    #[arg(long, value_name = "FILE", requires = "out")]
    pub from_csv: Option<PathBuf>,
    /// With --from-csv: the new file the devices' tokens go to (id,token; mode 0600).
    #[arg(long, value_name = "TOKENS_FILE", requires = "from_csv")]
    pub out: Option<PathBuf>,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `imager device show`.
#[derive(Args, Debug)]
pub struct DeviceShowArgs {
    /// Device id.
    pub id: DeviceId,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `imager audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// At most this many entries (newest first); the server's default when left out.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Output and server.
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_data(text: &str) -> Result<(String, String), String> {
    let (name, file) = text.split_once('=').ok_or("expected NAME=FILE")?;
    let valid = firmware::image::is_valid_data_name(name);
    if !valid {
        return Err(format!(
            "data name {name:?} must be 1 to 16 characters of [a-z0-9_-], not os or app"
        ));
    }
    if file.is_empty() {
        return Err("expected NAME=FILE".into());
    }
    Ok((name.into(), file.into()))
}

fn parse_version(text: &str) -> Result<Version, String> {
    text.parse().map_err(|err| format!("{err}"))
}

/// Runs `imager` with the process's arguments; the exit code is 0 on success, 1 when the
/// command fails, 2 for a usage mistake.
pub fn main() -> ExitCode {
    quiet_panics();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(err.exit_code().clamp(0, 255) as u8);
        }
    };
    match run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<client::MissingSetting>().is_some() {
                // A usage mistake, like the ones clap reports.
                return ExitCode::from(2);
            }
            ExitCode::FAILURE
        }
    }
}

/// A panic is a bug, never a user mistake: say so in one line instead of a backtrace.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let place =
            info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error{place}: {info}; please report this as a bug");
    }));
}

/// Runs one parsed command, writing its output to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    let catalog = || match &cli.boards {
        Some(dir) => Catalog::with_dir(dir),
        None => Catalog::builtin(),
    };
    match &cli.command {
        Command::Keygen(args) => {
            let files = keys::keygen(&args.out)?;
            writeln!(out, "private key {}", files.private.display())?;
            writeln!(out, "public key  {}", files.public.display())?;
            writeln!(out, "key id      {}", files.key_id)?;
        }
        Command::Fuse(args) => {
            let compression = match args.compression {
                CompressionArg::None => None,
                CompressionArg::Heatshrink => {
                    Some(HeatshrinkParams::new(args.window, args.lookahead)?)
                }
            };
            let request = FuseRequest {
                board: args.board.clone(),
                os: args.os.clone(),
                app: args.app.clone(),
                data: args.data.clone(),
                version: args.version.clone(),
                security_counter: args.security_counter,
                keys: args.key.clone(),
                compression,
                out: args.out.clone(),
            };
            let image = fuse(&catalog()?, &request)?;
            let installed: u64 =
                image.manifest.components().iter().map(|c| u64::from(c.size())).sum();
            writeln!(
                out,
                "{}: image {} for {} version {}, {} component{}, {} bytes ({} installed)",
                args.out.display(),
                image.id,
                image.manifest.board(),
                image.manifest.version(),
                image.manifest.components().len(),
                if image.manifest.components().len() == 1 { "" } else { "s" },
                image.bytes.len(),
                installed
            )?;
        }
        Command::Delta(command) => crate::delta::run(&catalog()?, command, out)?,
        Command::Trust(command) => crate::trust::run(command, out)?,
        Command::Inspect(args) => {
            let file = verify::read_image_file(&args.file)?;
            if crate::delta::is_patch(&file) {
                return crate::delta::inspect(&args.file, &file, args.json, out);
            }
            let image =
                TransportImage::parse(&file).with_context(|| format!("{}", args.file.display()))?;
            let summary = ImageSummary::of(&image, file.len());
            if args.json {
                serde_json::to_writer_pretty(&mut *out, &summary)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", summary.to_text())?;
            }
        }
        Command::Verify(args) => {
            let keys =
                args.pubkey.iter().map(|p| keys::read_public_key(p)).collect::<Result<Vec<_>>>()?;
            let file = verify::read_image_file(&args.file)?;
            let verified = verify::verify(&catalog()?, &file, &keys)
                .with_context(|| format!("{}", args.file.display()))?;
            writeln!(out, "{}", verified.id)?;
        }
        Command::Run(args) => {
            let catalog = catalog()?;
            let (board, plan) = plan_of(&catalog, &args.image, args.bootloader.as_deref())?;
            let flash = plan.flash();
            let start = || crate::run::Machine::start(board, &flash, &args.qemu, &args.qemu_args);
            let status = match args.serial {
                crate::run::Serial::Stdio => crate::run::console(&mut start()?)?,
                crate::run::Serial::Tcp(port) => crate::run::relay(port, start)?,
            };
            if !status.success() {
                anyhow::bail!("{} exited with {status}", args.qemu);
            }
        }
        Command::Flash(args) => {
            let catalog = catalog()?;
            let (board, plan) = plan_of(&catalog, &args.image, args.bootloader.as_deref())?;
            crate::probe::ensure_matches_chip(board)?;
            write!(out, "{}", plan.to_text())?;
            if !args.dry_run {
                let options = crate::probe::ProbeOptions {
                    probe: args.probe.clone(),
                    speed_khz: args.speed,
                    verify: args.verify,
                };
                crate::probe::flash(&plan, &options, &indicatif::MultiProgress::new())?;
                let checked = if args.verify { ", read back and compared" } else { "" };
                writeln!(out, "flashed {}{checked}; the chip was reset", plan.board)?;
            }
        }
        Command::Factory(args) => {
            let bootloader = Path::new(&args.bootloader);
            crate::write::refuse_input_as_output(&args.out, &[&args.image, bootloader])?;
            let catalog = catalog()?;
            let (board, plan) = plan_of(&catalog, &args.image, Some(&args.bootloader))?;
            let bytes = crate::factory::factory(&plan, args.format)?;
            crate::write::atomically(&args.out, &bytes)?;
            writeln!(out, "{}: {} bytes for {}", args.out.display(), bytes.len(), board.name)?;
        }
        Command::Gateway(args) => {
            let address = args
                .serial
                .strip_prefix("tcp:")
                .ok_or_else(|| anyhow!("--serial {:?}: expected tcp:HOST:PORT", args.serial))?;
            let client = args.server.connect()?;
            let mut stream = crate::gateway::connect(
                address,
                std::time::Duration::from_secs(args.connect_timeout),
            )?;
            let mut gateway = crate::gateway::Gateway::new(client, args.interval.max(1));
            let mut notes = std::io::stderr();
            let mut output = crate::gateway::Output { console: out, notes: &mut notes };
            gateway.serve(&mut stream, &mut output)?;
            writeln!(notes, "gateway: the serial line closed")?;
        }
        Command::Boards(args) if args.check => {
            let registry = probe_rs::config::Registry::from_builtin_families();
            let checks: Vec<_> =
                catalog()?.boards().iter().map(|b| crate::chip::check(b, &registry)).collect();
            if args.json {
                serde_json::to_writer_pretty(&mut *out, &checks)?;
                writeln!(out)?;
            } else {
                checks.iter().try_for_each(|c| write!(out, "{}", c.to_text()))?;
            }
            let failed = checks.iter().filter(|c| !c.ok()).count();
            if failed > 0 {
                anyhow::bail!("{failed} of {} board files do not match their chip", checks.len());
            }
        }
        Command::Boards(args) => {
            let catalog = catalog()?;
            let views: Vec<BoardView> = catalog.boards().iter().map(BoardView::of).collect();
            if args.json {
                serde_json::to_writer_pretty(&mut *out, &views)?;
                writeln!(out)?;
            } else {
                for view in &views {
                    write!(out, "{}", view.to_text())?;
                }
            }
        }
        command => run_client(command, out)?,
    }
    Ok(())
}

/// Runs one ota-server command.
fn run_client(command: &Command, out: &mut dyn Write) -> Result<()> {
    use client::report;
    match command {
        Command::Push(a) => {
            let pushed = client::push(&a.client.connect()?, &a.file, true)?;
            a.client.emit(out, &pushed.image, || report::pushed(&pushed))
        }
        Command::Images(a) => {
            let images = client::list_images(&a.connect()?)?;
            a.emit(out, &images, || report::images(&images))
        }
        Command::Release(a) => {
            let release = client::release(&a.client.connect()?, &a.env, &a.image_id)?;
            a.client.emit(out, &release, || report::release(&release))
        }
        Command::Promote(a) => {
            let release = client::promote(&a.client.connect()?, &a.image_id, &a.to, &a.key)?;
            a.client.emit(out, &release, || report::release(&release))
        }
        Command::Rollback(a) => {
            let (board, key) = (a.board.as_ref(), a.key.as_deref());
            let release = client::rollback(&a.client.connect()?, &a.env, board, key)?;
            a.client.emit(out, &release, || report::release(&release))
        }
        Command::Pause(a) | Command::Resume(a) => {
            let pause = matches!(command, Command::Pause(_));
            let connection = a.client.connect()?;
            let release = client::set_paused(&connection, &a.env, a.board.as_ref(), pause)?;
            a.client.emit(out, &release, || report::release(&release))
        }
        Command::Status(a) => {
            let envs = client::environments(&a.client.connect()?, a.env.as_ref())?;
            a.client.emit(out, &envs, || report::status(&envs))
        }
        Command::Devices(a) => {
            let filter = DeviceFilter {
                environment: a.env.clone(),
                board: a.board.clone(),
                state: a.state,
                ..DeviceFilter::default()
            };
            let devices = client::devices(&a.client.connect()?, &filter, a.image.as_deref())?;
            a.client.emit(out, &devices, || report::devices(&devices))
        }
        Command::Device(DeviceCommand::Add(a)) => match (&a.from_csv, &a.out) {
            (Some(csv), Some(tokens)) => {
                let enrolled = enroll::enroll(&a.client.connect()?, csv, tokens)?;
                a.client.emit(out, &enrolled, || report::enrolled(csv, &enrolled))
            }
            _ => {
                let missing = || {
                    anyhow!(
                        "internal error: clap let `device add` through without ID, --board or --env"
                    )
                };
                let new = NewDevice {
                    id: a.id.clone().ok_or_else(missing)?,
                    board: a.board.clone().ok_or_else(missing)?,
                    environment: a.env.clone().ok_or_else(missing)?,
                };
                let created = client::add_device(&a.client.connect()?, &new)?;
                a.client.emit(out, &created, || report::device_created(&created))
            }
        },
        Command::Device(DeviceCommand::Show(a)) => {
            let detail = client::device(&a.client.connect()?, &a.id)?;
            a.client.emit(out, &detail, || report::device_detail(&detail))
        }
        Command::Audit(a) => {
            let entries = client::audit(&a.client.connect()?, a.limit)?;
            a.client.emit(out, &entries, || report::audit(&entries))
        }
        Command::Keygen(_)
        | Command::Fuse(_)
        | Command::Inspect(_)
        | Command::Verify(_)
        | Command::Boards(_)
        | Command::Delta(_)
        | Command::Trust(_)
        | Command::Run(_)
        | Command::Flash(_)
        | Command::Factory(_)
        | Command::Gateway(_) => {
            Err(anyhow!("internal error: {command:?} is not a server command"))
        }
    }
}

/// The board the image file at `path` is for, and the plan that installs it there with the
/// bootloader `bootloader` (ELF, Intel HEX or FILE@ADDRESS) if given.
fn plan_of<'c>(
    catalog: &'c Catalog,
    path: &Path,
    bootloader: Option<&str>,
) -> Result<(&'c boards::Board, crate::plan::FlashPlan)> {
    let file = verify::read_image_file(path)?;
    let image = TransportImage::parse(&file).with_context(|| format!("{}", path.display()))?;
    let board = catalog
        .get(image.header().manifest().board())
        .map_err(|err| anyhow!("{err}; pass its board file's folder with --boards"))?;
    let bootloader = bootloader.map(|b| crate::run::read_bootloader(b, board)).transpose()?;
    let plan = crate::plan::FlashPlan::new(board, &file, bootloader.as_ref())
        .with_context(|| format!("{}", path.display()))?;
    Ok((board, plan))
}
