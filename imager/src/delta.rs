//! `imager delta`: make a patch from one image to the next (`create`), and apply one with the
//! device's own code on a simulated flash (`apply`), which is how a patch is checked before a
//! server offers it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use boards::{Board, Catalog};
use ed25519_dalek::SigningKey;
use firmware::delta::{EncodedPatch, PatchOptions, PatchPrefix, PatchSummary, create_patch};
use firmware::image::{
    Header, ImageId, ReleaseStatement, SignedRelease, TransportImage, TrustedKey,
};
use firmware::sim::Rng;
use firmware::sim::device::{Identity, SimDevice};
use firmware::slot::{Place, read_installed};
use serde::Serialize;

use crate::verify::read_image_file;

/// What `delta create` made.
#[derive(Clone, Debug, Serialize)]
pub struct Created {
    /// The image the patch applies to.
    #[serde(serialize_with = "hex_id")]
    pub source: ImageId,
    /// The image it rebuilds.
    #[serde(serialize_with = "hex_id")]
    pub target: ImageId,
    /// Board of both.
    pub board: String,
    /// Size of the source image file.
    pub source_size: usize,
    /// Size of the target image file: what a device downloads without the patch.
    pub target_size: usize,
    /// Size of the patch: what it downloads with it.
    pub patch_size: usize,
    /// Patch size over target size.
    pub ratio: f64,
    /// Segments restart every `2^block_shift` installed bytes.
    pub block_shift: u8,
    /// The patch file.
    #[serde(skip)]
    pub patch: EncodedPatch,
}

/// The block shift `create` uses for `board` (see [`Board::patch_block_shift`]).
pub fn default_block_shift(board: &Board) -> Result<u8> {
    Ok(board.patch_block_shift()?)
}

/// Makes the patch from image file `source` to image file `target` (same board).
pub fn create(
    catalog: &Catalog,
    source: &[u8],
    target: &[u8],
    block_shift: Option<u8>,
) -> Result<Created> {
    let old = TransportImage::parse(source).context("source image")?;
    let new = TransportImage::parse(target).context("target image")?;
    let board_name = new.header().manifest().board();
    if old.header().manifest().board() != board_name {
        bail!(
            "the source image is for board {}, the target for {board_name}: a patch stays on one board",
            old.header().manifest().board()
        );
    }
    if old.header().id() == new.header().id() {
        bail!("source and target are the same image ({})", new.header().id());
    }
    let board = catalog.get(board_name).map_err(|err| anyhow!("{err}"))?;
    let block_shift = match block_shift {
        Some(shift) => shift,
        None => default_block_shift(board)?,
    };
    let options = PatchOptions { block_shift };
    let patch =
        create_patch(source, target, board.slot_a_address(), board.flash.erased_value, &options)?;
    Ok(Created {
        source: old.header().id(),
        target: new.header().id(),
        board: board_name.to_owned(),
        source_size: source.len(),
        target_size: target.len(),
        patch_size: patch.bytes.len(),
        ratio: patch.bytes.len() as f64 / target.len() as f64,
        block_shift,
        patch,
    })
}

/// What `delta apply` established.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// The rebuilt image: slot B holds it, its header signature by a trusted key and every
    /// component's hash checked by the device's agent.
    #[serde(serialize_with = "hex_id")]
    pub id: ImageId,
    /// The image the patch was applied to.
    #[serde(serialize_with = "hex_id")]
    pub source: ImageId,
    /// Board.
    pub board: String,
    /// Size of the patch.
    pub patch_size: usize,
    /// Erases the install took on the simulated flash.
    pub erases: u64,
    /// Bytes it programmed.
    pub programmed: u64,
    /// The rebuilt image's installed bytes (header and components, from slot A's start).
    #[serde(skip)]
    pub installed: Vec<u8>,
}

/// Applies `patch` to image file `source` as a device would: a simulated flash of the source's
/// board holds `source` in slot A, and the device's update agent takes the patch (in chunks of
/// 1 KiB) under a release statement for the patch's target. It checks what a device checks:
/// the source is the image in slot A, the header carried is signed by one of `keys`, every
/// component's hash, the body's CRC. `Ok` only if all of it passed.
pub fn apply(
    catalog: &Catalog,
    source: &[u8],
    patch: &[u8],
    keys: &[TrustedKey],
) -> Result<Applied> {
    let old = TransportImage::parse(source).context("source image")?;
    let prefix = PatchPrefix::parse(patch).context("patch")?;
    let board_name = old.header().manifest().board();
    let board = catalog.get(board_name).map_err(|err| anyhow!("{err}"))?;
    let layout = board.flash_layout()?;
    // The release statement is not what is checked here: the simulated device trusts a
    // throwaway environment key and is given a statement for the patch's own target.
    let environment = SigningKey::from_bytes(&[0x5A; 32]);
    let environment_key = TrustedKey::from_bytes(&environment.verifying_key().to_bytes())
        .map_err(|_| anyhow!("the simulation's environment key is weak"))?;
    let identity = Identity {
        board: board_name.to_owned(),
        build_keys: keys.to_vec(),
        environment: "apply".to_owned(),
        environment_keys: vec![environment_key],
    };
    let mut device = SimDevice::new(layout, identity);
    device.provision(source).context("source image")?;
    device.flash.reset_stats();
    let statement = ReleaseStatement::new(prefix.target, "apply", 1)
        .ok_or_else(|| anyhow!("release statement"))?;
    let release = SignedRelease::sign(&statement, &environment);
    let id = device
        .download_patch(&release, patch, 1024, &mut Rng::new(1))
        .map_err(|err| anyhow!("the device refused the patch: {err}"))?;
    let stats = device.flash.stats();
    let status = device.status().map_err(|err| anyhow!("state log: {err}"))?;
    let slot_b = match status.slot_b {
        firmware::update::SlotB::Pending(_) => device.state().map_err(|e| anyhow!("{e}"))?,
        other => bail!("slot B does not hold a pending image: {other:?}"),
    };
    let shift = match slot_b.phase {
        firmware::state::Phase::Swapping { pending, .. } => u32::from(pending.shift),
        _ => bail!("no update pending after the install"),
    };
    let header = Header::parse(patch.get(PatchPrefix::LEN..).unwrap_or_default())
        .context("the patch's target header")?;
    let target_len = firmware::slot::installed_len(&device.layout, &header) as usize;
    let mut installed = vec![0u8; target_len];
    let place = Place { slot: firmware::flash::Slot::B, shift };
    read_installed(&mut device.flash, &device.layout, place, 0, &mut installed)
        .map_err(|err| anyhow!("reading slot B: {err}"))?;
    Ok(Applied {
        id,
        source: old.header().id(),
        board: board_name.to_owned(),
        patch_size: patch.len(),
        erases: stats.erases,
        programmed: stats.programmed,
        installed,
    })
}

/// `imager inspect` of a patch file: its description, as text or JSON.
pub fn inspect(path: &Path, file: &[u8], json: bool, out: &mut dyn Write) -> Result<()> {
    let summary = PatchSummary::of(file).with_context(|| format!("{}", path.display()))?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &summary)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", summary.to_text())?;
    }
    Ok(())
}

/// An image id in JSON: its hex form, as everywhere else.
fn hex_id<S: serde::Serializer>(id: &ImageId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

/// Whether `file` starts like a patch (rather than an image).
pub fn is_patch(file: &[u8]) -> bool {
    file.starts_with(&firmware::delta::PATCH_MAGIC)
}

/// `imager delta ...`.
#[derive(clap::Subcommand, Debug)]
pub enum DeltaCommand {
    /// Make a patch from an image to its next release: what a device running OLD downloads
    /// instead of NEW.
    Create(CreateArgs),
    /// Apply a patch to an image with the device's own update code on a simulated flash;
    /// prints the rebuilt image's id. Fails unless its header signature (by --pubkey) and
    /// every component's hash check.
    Apply(ApplyArgs),
}

/// `imager delta create`.
#[derive(clap::Args, Debug)]
#[command(after_help = "The patch names both images, carries NEW's header (manifest and \
signatures) unchanged, and codes NEW's components against OLD's installed bytes: a device \
rebuilds NEW in slot B from slot A and checks the same signature and hashes. Segments \
restart every 2^BLOCK_SHIFT installed bytes (default: 16 KiB or the board's erase unit, \
whichever is larger); a device resumes an interrupted download from a segment start. Format: \
docs/delta.md.")]
pub struct CreateArgs {
    /// The image the device runs (.fwi).
    pub old: PathBuf,
    /// The image to install (.fwi), for the same board.
    pub new: PathBuf,
    /// Output patch file; written atomically.
    #[arg(long, value_name = "PATCH")]
    pub out: PathBuf,
    /// Segments of 2^N installed bytes, 10..=16.
    #[arg(long, value_name = "N")]
    pub block_shift: Option<u8>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `imager delta apply`.
#[derive(clap::Args, Debug)]
#[command(after_help = "A simulated flash of OLD's board holds OLD in slot A; the device's \
update agent takes PATCH as it would over the air (after a release statement the simulation \
signs for the patch's target) and writes the rebuilt image into slot B, checking that OLD is \
the patch's source, the header's signature by a --pubkey key, every component's hash and the \
patch's checksums. Exit 0 only if all of them pass.")]
pub struct ApplyArgs {
    /// The image the patch applies to (.fwi).
    pub old: PathBuf,
    /// The patch.
    pub patch: PathBuf,
    /// Ed25519 public key (SPKI PEM) the rebuilt image must be signed by; repeatable.
    #[arg(long, value_name = "PEM", required = true)]
    pub pubkey: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `imager delta ...`, writing its output to `out`.
pub fn run(catalog: &Catalog, command: &DeltaCommand, out: &mut dyn Write) -> Result<()> {
    match command {
        DeltaCommand::Create(args) => {
            crate::write::refuse_input_as_output(&args.out, &[&args.old, &args.new])?;
            let old = read_image_file(&args.old)?;
            let new = read_image_file(&args.new)?;
            let created = create(catalog, &old, &new, args.block_shift)?;
            crate::write::atomically(&args.out, &created.patch.bytes)?;
            if args.json {
                serde_json::to_writer_pretty(&mut *out, &created)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{}: patch from {} to {} ({})",
                    args.out.display(),
                    created.source,
                    created.target,
                    created.board
                )?;
                writeln!(
                    out,
                    "full image {} bytes, patch {} bytes: {:.1}% of the full image",
                    created.target_size,
                    created.patch_size,
                    100.0 * created.ratio
                )?;
            }
        }
        DeltaCommand::Apply(args) => {
            let keys = args
                .pubkey
                .iter()
                .map(|p| crate::keys::read_public_key(p))
                .collect::<Result<Vec<_>>>()?;
            let old = read_image_file(&args.old)?;
            let patch = read_image_file(&args.patch)?;
            let applied = apply(catalog, &old, &patch, &keys)
                .with_context(|| format!("{}", args.patch.display()))?;
            if args.json {
                serde_json::to_writer_pretty(&mut *out, &applied)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", applied.id)?;
            }
        }
    }
    Ok(())
}
