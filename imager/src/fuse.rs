//! `imager fuse`: inputs for a board in, one signed image out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use boards::{Board, Catalog};
use firmware::image::{
    ComponentSource, EncodedImage, HeatshrinkParams, ImageSpec, Role, SlotLayout, Version,
    encode_image,
};

use crate::input::{Input, elf_machine_for};
use crate::{keys, write};

/// What to fuse.
#[derive(Clone, Debug)]
pub struct FuseRequest {
    /// Board name.
    pub board: String,
    /// The OS input (`os.elf`, `os.hex`, `os.bin@0x10400`).
    pub os: Option<String>,
    /// The app input.
    pub app: Option<String>,
    /// Data parts: (name, input).
    pub data: Vec<(String, String)>,
    /// Image version.
    pub version: Version,
    /// Anti-rollback counter.
    pub security_counter: u32,
    /// Private keys to sign with (one or more).
    pub keys: Vec<PathBuf>,
    /// Heatshrink parameters, or `None` to store components raw.
    pub compression: Option<HeatshrinkParams>,
    /// Output file.
    pub out: PathBuf,
}

/// The board's slot A as the image format sees it.
pub fn slot_layout(board: &Board) -> SlotLayout {
    SlotLayout {
        start: board.slot_a_address(),
        size: board.partitions.slot_a.size,
        header_size: board.image.header_size,
    }
}

/// One component read from its input file.
struct Loaded {
    role: Role,
    name: String,
    input: Input,
}

/// Reads the inputs, checks where they land, builds and signs the image, and writes it
/// atomically to `request.out`.
pub fn fuse(catalog: &Catalog, request: &FuseRequest) -> Result<EncodedImage> {
    let board = catalog.get(&request.board)?;
    if request.os.is_none() && request.app.is_none() {
        bail!("give --os, --app or both: an image needs an OS or an app");
    }
    let specs = request.os.iter().chain(&request.app).chain(request.data.iter().map(|(_, s)| s));
    let mut inputs: Vec<PathBuf> = specs.map(|s| crate::input::spec_path(s)).collect();
    inputs.extend(request.keys.iter().cloned());
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    write::refuse_input_as_output(&request.out, &inputs)?;
    let signing_keys =
        request.keys.iter().map(|path| keys::read_signing_key(path)).collect::<Result<Vec<_>>>()?;

    let machine = elf_machine_for(&board.target);
    let mut wanted: Vec<(Role, String, &str)> = Vec::new();
    wanted.extend(request.os.as_deref().map(|spec| (Role::Os, "os".to_owned(), spec)));
    wanted.extend(request.app.as_deref().map(|spec| (Role::App, "app".to_owned(), spec)));
    wanted
        .extend(request.data.iter().map(|(name, spec)| (Role::Data, name.clone(), spec.as_str())));
    let mut loaded = Vec::with_capacity(wanted.len());
    for (role, name, spec) in wanted {
        let input = Input::read(spec, machine).with_context(|| format!("component {name}"))?;
        loaded.push(Loaded { role, name, input });
    }

    check_placement(board, &mut loaded)?;

    let spec = ImageSpec {
        board: board.name.clone(),
        version: request.version.clone(),
        security_counter: request.security_counter,
        compression: request.compression,
        components: loaded
            .iter()
            .map(|l| ComponentSource {
                role: l.role,
                name: l.name.clone(),
                load_address: l.input.start(),
                bytes: l.input.flatten(board.flash.erased_value),
            })
            .collect(),
        slot: Some(slot_layout(board)),
    };
    let image = encode_image(&spec, &signing_keys)?;
    write::atomically(&request.out, &image.bytes)?;
    Ok(image)
}

/// Every segment must lie in slot A after the header, and components must not overlap; the
/// messages name the component, its file and the addresses. Leaves `loaded` sorted by address.
fn check_placement(board: &Board, loaded: &mut [Loaded]) -> Result<()> {
    let layout = slot_layout(board);
    let (area_start, area_end) = (layout.image_area_start(), layout.end());
    for l in loaded.iter() {
        for segment in &l.input.segments {
            if segment.address < area_start || segment.end() > area_end {
                bail!(
                    "component {} ({}): bytes at {:#010x}..{:#010x} lie outside slot A's image area \
                     {area_start:#010x}..{area_end:#010x} on board {}; link it at {area_start:#010x} \
                     or above (see `imager boards`)",
                    l.name,
                    l.input.path.display(),
                    segment.address,
                    segment.end(),
                    board.name,
                );
            }
        }
    }
    loaded.sort_by_key(|l| l.input.start());
    for pair in loaded.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.input.end() > u64::from(b.input.start()) {
            bail!(
                "components {} ({}, {:#010x}..{:#010x}) and {} ({}, {:#010x}..{:#010x}) overlap",
                a.name,
                a.input.path.display(),
                a.input.start(),
                a.input.end(),
                b.name,
                b.input.path.display(),
                b.input.start(),
                b.input.end(),
            );
        }
    }
    Ok(())
}
