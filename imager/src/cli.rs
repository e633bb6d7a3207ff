//! Argument parsing and output for every command. Each command's work is a function in the
//! library; this module only turns arguments into calls and results into text.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use boards::Catalog;
use clap::{Args, Parser, Subcommand, ValueEnum};
use firmware::image::{HeatshrinkParams, TransportImage, Version};

use crate::board_list::BoardView;
use crate::fuse::{FuseRequest, fuse};
use crate::summary::ImageSummary;
use crate::{keys, verify};

/// Fuse an application and its OS into one signed, immutable firmware image per board, and
/// check such images.
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
    /// Describe an image file: id, board, version, components, signatures.
    Inspect(InspectArgs),
    /// Check an image file: intact, signed by a given key, every component's hash, fits its board.
    Verify(VerifyArgs),
    /// List the known boards, their partitions, and where to link the first component.
    Boards(BoardsArgs),
}

/// `imager keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Path prefix: writes PREFIX.pem and PREFIX.pub.pem; never overwrites either.
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
    /// Image file.
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

/// `imager boards`.
#[derive(Args, Debug)]
pub struct BoardsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
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
        Command::Inspect(args) => {
            let file = read_image_file(&args.file)?;
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
            let file = read_image_file(&args.file)?;
            let verified = verify::verify(&catalog()?, &file, &keys)
                .with_context(|| format!("{}", args.file.display()))?;
            writeln!(out, "{}", verified.id)?;
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
    }
    Ok(())
}

/// Largest image file `inspect` and `verify` read: no board has more flash than this.
const MAX_IMAGE_FILE: u64 = 64 << 20;

fn read_image_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_IMAGE_FILE {
        return Err(anyhow!(
            "{}: {} bytes is larger than any image ({MAX_IMAGE_FILE} bytes)",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
