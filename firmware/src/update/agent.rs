//! The update agent: fed a signed release statement and then the `.fwi` bytes in chunks of any
//! size, as they arrive. It checks everything it can before writing anything (the release's
//! environment key, environment and sequence; the image's board, build-key signature, id and
//! security counter, and whether it fits), then decodes each component as it streams in, writes
//! its installed form into slot B and hashes it, and at the end reads the whole image back from
//! slot B and checks it before marking it pending for the boot logic.
//!
//! A download survives resets: at erase-unit boundaries (every `checkpoint_every` bytes) it
//! records a checkpoint with the decoder's state. [`Agent::begin`] with the same release after
//! a reset continues from the last checkpoint and says from which transport offset to send.

use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

use super::writer::SlotWriter;
use crate::delta::{
    BodyDecoder, BodyError, BodyLayout, Image, MODEL_BYTES, Model, PatchError, PatchPrefix,
    StepError, source_range,
};
use crate::flash::io::{CHUNK, FlashError};
use crate::flash::{FlashLayout, Slot};
use crate::image::heatshrink::{Decoder, DecoderState};
use crate::image::{
    Component, Compression, Header, ImageError, ImageId, LayoutError, MAX_HEADER_LEN, Manifest,
    Prefix, Progress, ReleaseError, SignedRelease, TrustedKey, UnpackError, Unpacker,
    verify_header_bytes,
};
use crate::slot::{self, Checks, Place, SlotError};
use crate::state::{
    Checkpoint, Download, FailReason, ImageTag, Outcome, OutcomeKind, Pending, Phase, Record,
    State, StateError, StateLog, TransportForm, marker_area,
};

/// What the agent accepts.
#[derive(Clone, Copy, Debug)]
pub struct AgentConfig<'a> {
    /// This device's board name.
    pub board: &'a str,
    /// Build keys images must be signed by.
    pub build_keys: &'a [TrustedKey],
    /// This device's environment.
    pub environment: &'a str,
    /// Keys the environment's release statements are signed by.
    pub environment_keys: &'a [TrustedKey],
    /// Installed bytes between download checkpoints (rounded up to erase units).
    pub checkpoint_every: u32,
}

/// An offer refused before anything was written: slot B, slot A and the state log are as
/// they were.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Refusal {
    /// The release statement is bad, for another environment, or not newer than the last.
    #[error("release: {0}")]
    Release(#[from] ReleaseError),
    /// The image header is bad, or not signed by a trusted build key.
    #[error("image: {0}")]
    Image(#[from] ImageError),
    /// The image is for another board.
    #[error("image is for board {image:?}, this device is {device:?}")]
    WrongBoard {
        /// Board in the image.
        image: crate::image::BoardName,
        /// This device's board.
        device: crate::image::BoardName,
    },
    /// The image is not the one the release names.
    #[error("image {got} is not the released image {released}")]
    WrongImage {
        /// The image streamed.
        got: ImageId,
        /// The image the release names.
        released: ImageId,
    },
    /// The image's security counter is below the device's minimum.
    #[error("security counter {counter} is below this device's minimum {min}")]
    Rollback {
        /// The image's counter.
        counter: u32,
        /// The device's minimum.
        min: u32,
    },
    /// The image does not fit slot A, or slot B with room for the swap.
    #[error("image too large: {0}")]
    TooLarge(LayoutError),
    /// The image does not leave slot B the room the swap needs.
    #[error("image of {units} erase units does not fit slot B with the room a swap needs")]
    NoRoomInSlotB {
        /// Erase units the image needs.
        units: u32,
    },
    /// An image runs on trial; it must confirm (or be reverted) first.
    #[error("the running image is on trial: confirm it first")]
    Busy,
    /// A component's heatshrink window (or a patch's model) is larger than the window this
    /// device lent the agent.
    #[error("component needs a {needed}-byte heatshrink window, this device has {have}")]
    WindowTooLarge {
        /// Window the component needs.
        needed: usize,
        /// Window this device lent the agent.
        have: usize,
    },
    /// The patch's fixed start is bad (damaged, another version, not a patch).
    #[error("patch: {0}")]
    Patch(#[from] PatchError),
    /// The patch rebuilds its image from another image than the one slot A holds: the server
    /// must send the full image (or a patch from this one).
    #[error("the patch applies to image {patch}, slot A holds image {slot_a}")]
    WrongSource {
        /// The source the patch names.
        patch: ImageId,
        /// The image in slot A.
        slot_a: ImageId,
    },
    /// Slot A holds no readable image header to patch.
    #[error("slot A holds no readable image to apply a patch to")]
    NoSource,
}

/// Why an update step failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum UpdateError {
    /// Refused before writing anything.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The stream turned out corrupt after writing began; the download is abandoned (and the
    /// outcome recorded). Slot A is untouched.
    #[error("corrupt image stream: {0}")]
    Corrupt(ImageError),
    /// A patch's body turned out corrupt after writing began; the download is abandoned (and
    /// the outcome recorded). Slot A is untouched.
    #[error("corrupt patch: {0}")]
    CorruptPatch(BodyError),
    /// What slot B holds failed its final check (after writing began); the download is
    /// abandoned and the outcome recorded. Slot A is untouched.
    #[error("the image written to slot B failed its check: {0}")]
    Failed(SlotError),
    /// `finish` before every byte arrived; the download can continue.
    #[error("incomplete: {received} of {expected} bytes received")]
    Incomplete {
        /// Transport bytes received.
        received: u32,
        /// Transport bytes expected (0 until the header arrived).
        expected: u32,
    },
    /// More bytes than the image has.
    #[error("bytes after the end of the image")]
    TrailingData,
    /// `feed` or `finish` without `begin`.
    #[error("no update in progress: call begin first")]
    NotStarted,
    /// The window buffer is smaller than the smallest supported heatshrink window.
    #[error("the agent needs a window buffer of at least 256 bytes")]
    WindowTooSmall,
    /// Flash failed.
    #[error("{0}")]
    Flash(#[from] FlashError),
    /// The state log failed.
    #[error("state log: {0}")]
    State(#[from] StateError),
}

impl From<SlotError> for UpdateError {
    fn from(e: SlotError) -> Self {
        match e {
            SlotError::Flash(f) => UpdateError::Flash(f),
            SlotError::Image(i) => UpdateError::Corrupt(i),
            other => UpdateError::Failed(other),
        }
    }
}

/// What `begin` decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Started {
    /// Send the `.fwi` from this offset (non-zero when a download continues after a reset).
    pub resume_from: u32,
}

/// The release being applied.
#[derive(Clone, Copy)]
struct Release {
    image: ImageId,
    sequence: u64,
}

/// Where the current download is.
enum Stage {
    /// Nothing in progress in this session.
    Idle,
    /// Collecting a patch's fixed start.
    PatchPrefix { have: usize },
    /// Collecting the (image's) header.
    Header { have: usize },
    /// Decoding components into slot B.
    Body(Body),
    /// Every component arrived and matched its hash.
    Complete(Body),
}

/// A download under way. The manifest is not kept: it is parsed again from the agent's header
/// buffer when a component starts (see [`component_at`]), which saves its 660 bytes of RAM for
/// the length of a download.
struct Body {
    /// Length of the header, at the start of the agent's header buffer.
    header_len: usize,
    shift: u8,
    group: u8,
    transport_len: u32,
    /// Transport bytes consumed.
    transport: u32,
    /// Component being decoded.
    index: usize,
    codec: Codec,
    out: Output,
}

/// Where the installed bytes go: slot B's writer, how far it got, the last durable point.
struct Output {
    writer: SlotWriter,
    /// Installed offset just past the last byte written.
    written_end: u32,
    last_checkpoint: u32,
}

/// How the components arrive.
// No allocator to box the larger variant into; the agent holds one of them for a download.
#[allow(clippy::large_enum_variant)]
enum Codec {
    /// As payloads of the image: where the current one is.
    Payload(Progress),
    /// As a patch body.
    Patch(PatchProgress),
}

/// Where a patch body is: the decoder (which spans components), the hash of the current
/// component so far, and whether the decoder was given the current component yet.
struct PatchProgress {
    decoder: BodyDecoder,
    hasher: Sha256,
    /// Transport offset of the body's first byte.
    body_start: u32,
    started: bool,
}

/// A patch whose fixed start was accepted: what the header and the body must match.
#[derive(Clone, Copy)]
struct PatchPlan {
    target: ImageId,
    layout: BodyLayout,
}

/// What [`Agent::check_header`] found: where slot B takes the image.
struct Accepted {
    shift: u8,
    group: u8,
    transport_len: u32,
}

/// The update agent. Holds the state log, a header buffer and a borrowed heatshrink window.
pub struct Agent<'w, 'l> {
    layout: &'l FlashLayout,
    config: AgentConfig<'l>,
    log: StateLog<'l>,
    window: &'w mut [u8],
    header: [u8; MAX_HEADER_LEN],
    release: Option<Release>,
    /// The form being downloaded.
    form: TransportForm,
    /// The patch being applied, once its fixed start was accepted.
    patch: Option<PatchPlan>,
    stage: Stage,
    /// The last offer refused in this session. Not written to flash: a refusal changes nothing,
    /// and a server repeating a bad offer must not wear the state log.
    last_refusal: Option<Refusal>,
}

impl<'w, 'l> Agent<'w, 'l> {
    /// An agent. `window` is the heatshrink decoder's RAM: [`crate::image::MAX_WINDOW`] bytes take every
    /// image; a device short of RAM may lend less (at least 256 bytes) and is then refused
    /// images compressed with a larger window.
    // Not inlined: on a device its temporaries (header, manifest, buffers) must leave the
    // stack when it returns, not stay in the caller's frame.
    #[inline(never)]
    pub fn new<F: NorFlash>(
        flash: &mut F,
        layout: &'l FlashLayout,
        config: AgentConfig<'l>,
        window: &'w mut [u8],
    ) -> Result<Self, UpdateError> {
        if window.len() < 256 {
            return Err(UpdateError::WindowTooSmall);
        }
        let log = StateLog::open(flash, layout)?;
        Ok(Agent {
            layout,
            config,
            log,
            window,
            header: [0; MAX_HEADER_LEN],
            release: None,
            form: TransportForm::Image,
            patch: None,
            stage: Stage::Idle,
            last_refusal: None,
        })
    }

    /// The last offer refused since this agent was made, and why: with [`super::status`], what
    /// the OS reports to the server.
    pub fn last_refusal(&self) -> Option<&Refusal> {
        self.last_refusal.as_ref()
    }

    /// The durable state.
    pub fn state(&self) -> &State {
        self.log.state()
    }

    /// Takes an offer: checks the signed release statement, and either starts a download or,
    /// for the release a reset interrupted, continues it.
    // Not inlined: on a device its temporaries (header, manifest, buffers) must leave the
    // stack when it returns, not stay in the caller's frame.
    #[inline(never)]
    pub fn begin<F: NorFlash>(
        &mut self,
        flash: &mut F,
        release: &[u8],
    ) -> Result<Started, UpdateError> {
        let result = self.begin_inner(flash, release, TransportForm::Image);
        self.note(&result);
        result
    }

    /// Takes an offer that comes as a patch against the image in slot A: exactly like
    /// [`Self::begin`], but `feed` then takes the patch (`crate::delta`) instead of the `.fwi`.
    /// The patch's fixed start is checked as soon as it arrives (its source must be the image
    /// in slot A: [`Refusal::WrongSource`] otherwise), then the image header it carries is
    /// checked as a full image's would be, all before anything is written. A download
    /// interrupted by a reset continues only in the form it started in: `begin_patch` after a
    /// `begin` (or the reverse) starts it again.
    #[inline(never)]
    pub fn begin_patch<F: NorFlash>(
        &mut self,
        flash: &mut F,
        release: &[u8],
    ) -> Result<Started, UpdateError> {
        // Any block shift: the form's kind is what `admit` compares.
        let form = TransportForm::Patch { block_shift: crate::delta::MIN_BLOCK_SHIFT };
        let result = self.begin_inner(flash, release, form);
        self.note(&result);
        result
    }

    /// Remembers a refusal for `last_refusal`.
    fn note<T>(&mut self, result: &Result<T, UpdateError>) {
        if let Err(UpdateError::Refused(refusal)) = result {
            self.last_refusal = Some(refusal.clone());
        }
    }

    fn begin_inner<F: NorFlash>(
        &mut self,
        flash: &mut F,
        release: &[u8],
        form: TransportForm,
    ) -> Result<Started, UpdateError> {
        self.stage = Stage::Idle;
        self.release = None;
        self.patch = None;
        self.form = form;
        // Each step in a frame of its own: this one stays small, so that the steps verifying a
        // signature (the release's here, the header's in `resume`) run on a shallow stack.
        let release = self.check_release(release)?;
        if let Some((download, checkpoint)) = self.admit(flash, release)? {
            match self.resume(flash, download, checkpoint) {
                Ok(started) => return Ok(started),
                Err(UpdateError::Flash(e)) => return Err(e.into()),
                Err(UpdateError::Refused(refusal)) => return Err(refusal.into()),
                // What slot B holds is not usable: start again from the beginning.
                Err(_) => {}
            }
        }
        self.patch = None;
        self.stage = match form {
            TransportForm::Image => Stage::Header { have: 0 },
            TransportForm::Patch { .. } => Stage::PatchPrefix { have: 0 },
        };
        Ok(Started { resume_from: 0 })
    }

    /// The release a signed statement names, if it is for this device: signed by an
    /// environment key, for this device's environment.
    #[inline(never)]
    fn check_release(&self, release: &[u8]) -> Result<Release, UpdateError> {
        let signed = SignedRelease::parse(release).map_err(Refusal::from)?;
        signed.verify(self.config.environment_keys).map_err(Refusal::from)?;
        let statement = signed.statement();
        if statement.environment() != self.config.environment {
            let got = statement.environment().try_into().unwrap_or_default();
            let expected = self.config.environment.try_into().unwrap_or_default();
            return Err(Refusal::Release(ReleaseError::WrongEnvironment { got, expected }).into());
        }
        Ok(Release { image: statement.image_id(), sequence: statement.sequence() })
    }

    /// Whether `release` may be applied now, by the state log; sets it as the release being
    /// applied. Returns the download to continue, if a reset interrupted this release's.
    #[inline(never)]
    fn admit<F: NorFlash>(
        &mut self,
        flash: &mut F,
        release: Release,
    ) -> Result<Option<(Download, Checkpoint)>, UpdateError> {
        // Read the log afresh: `confirm` (or another agent) may have written since.
        self.log = StateLog::open(flash, self.layout)?;
        let state = *self.log.state();
        let resume = match state.phase {
            Phase::Trial { .. } | Phase::Reverting { .. } => return Err(Refusal::Busy.into()),
            Phase::Downloading { download, checkpoint }
                if download.release_sequence == release.sequence
                    && download.image == ImageTag::of(&release.image) =>
            {
                let same_form = matches!(
                    (download.form, self.form),
                    (TransportForm::Image, TransportForm::Image)
                        | (TransportForm::Patch { .. }, TransportForm::Patch { .. })
                );
                checkpoint.filter(|_| same_form).map(|checkpoint| (download, checkpoint))
            }
            // While a download is under way, only a newer release replaces it.
            Phase::Downloading { download, .. }
                if release.sequence <= download.release_sequence =>
            {
                let (got, last) = (release.sequence, download.release_sequence);
                return Err(Refusal::Release(ReleaseError::Replayed { got, last }).into());
            }
            _ if release.sequence <= state.release_sequence => {
                let (got, last) = (release.sequence, state.release_sequence);
                return Err(Refusal::Release(ReleaseError::Replayed { got, last }).into());
            }
            _ => None,
        };
        self.release = Some(release);
        Ok(resume)
    }

    /// Continues `download` from `checkpoint`: rebuilds the decoder's window and the hash of the
    /// component so far from what slot B holds.
    #[inline(never)] // see `begin`
    fn resume<F: NorFlash>(
        &mut self,
        flash: &mut F,
        download: Download,
        cp: Checkpoint,
    ) -> Result<Started, UpdateError> {
        let release = self.release.ok_or(UpdateError::NotStarted)?;
        let place = Place { slot: Slot::B, shift: download.shift.into() };
        // Read back from flash: trusted only once checked again, like the first time. A header
        // damaged in flash (or not this release's) starts the download over: its signature is
        // checked first, so a damaged byte never passes for a refusal, which would refuse this
        // release for good. An authentic image this device cannot take (window, board, counter,
        // size) is refused, as it would be when it arrives.
        slot::read_installed(flash, self.layout, place, 0, &mut self.header[..Prefix::LEN])?;
        let prefix = Prefix::parse(&self.header[..Prefix::LEN]).map_err(UpdateError::Corrupt)?;
        let header_len = prefix.header_len();
        slot::read_installed(flash, self.layout, place, 0, &mut self.header[..header_len])?;
        verify_header_bytes(&self.header[..header_len], self.config.build_keys)
            .map_err(UpdateError::Corrupt)?;
        if let TransportForm::Patch { block_shift } = download.form {
            // Slot A has not changed since the patch's source was checked: no swap runs while
            // a download is under way.
            let (source_start, source_end) = self.source_of_slot_a(flash)?.1;
            let body_len = (download.transport_len as usize)
                .checked_sub(PatchPrefix::LEN + header_len)
                .ok_or(UpdateError::Corrupt(ImageError::NotAnImage))?
                as u32;
            // The body's CRC is known again when the last checkpoint's register is: see
            // `resume_body`.
            let layout =
                BodyLayout { body_len, body_crc: 0, block_shift, source_start, source_end };
            self.patch = Some(PatchPlan { target: release.image, layout });
        }
        let accepted = self.check_manifest(header_len, release).map_err(|e| match e {
            UpdateError::Refused(Refusal::Image(e)) => UpdateError::Corrupt(e),
            UpdateError::Refused(Refusal::WrongImage { .. }) => {
                UpdateError::Corrupt(ImageError::NotAnImage)
            }
            other => other,
        })?;
        self.resume_body(flash, download, cp, header_len, accepted.transport_len)
    }

    /// The rest of [`Self::resume`], once the header in slot B checked out.
    #[inline(never)]
    fn resume_body<F: NorFlash>(
        &mut self,
        flash: &mut F,
        download: Download,
        cp: Checkpoint,
        header_len: usize,
        transport_len: u32,
    ) -> Result<Started, UpdateError> {
        let place = Place { slot: Slot::B, shift: download.shift.into() };
        let (component, _) = component_at(&self.header[..header_len], usize::from(cp.component))?;
        let start = component.load_address() - self.layout.slot_layout().start;
        let produced = cp.installed_offset.saturating_sub(start).min(component.size());
        // The hash of the component so far, and (for heatshrink) the window, from flash.
        let mut hasher = Sha256::new();
        let mut chunk = [0u8; CHUNK];
        let heatshrink = match (self.patch, component.compression()) {
            (None, Compression::Heatshrink(p)) => Some(p),
            _ => None,
        };
        let keep = heatshrink.map_or(0, |p| produced.min(1 << p.window()));
        self.window.fill(0);
        let mut done = 0;
        while done < produced {
            let n = (produced - done).min(CHUNK as u32) as usize;
            slot::read_installed(flash, self.layout, place, start + done, &mut chunk[..n])?;
            hasher.update(&chunk[..n]);
            if let Some(p) = heatshrink {
                for (i, &byte) in chunk[..n].iter().enumerate() {
                    let position = done + i as u32;
                    if position >= produced - keep {
                        self.window[Decoder::window_slot(p, position)] = byte;
                    }
                }
            }
            done += n as u32;
        }
        let codec = match self.patch {
            Some(plan) => {
                let body_start = (PatchPrefix::LEN + header_len) as u32;
                let [a, b, c, d, e, f, g, h] = cp.decoder;
                let mut layout = plan.layout;
                layout.body_crc = u32::from_le_bytes([e, f, g, h]);
                self.patch = Some(PatchPlan { layout, ..plan });
                let crc = u32::from_le_bytes([a, b, c, d]);
                let mut decoder = BodyDecoder::new(layout, cp.payload_offset, crc);
                decoder.start_component(start, start + produced, start + component.size());
                Codec::Patch(PatchProgress { decoder, hasher, body_start, started: true })
            }
            None => {
                let decoder = DecoderState::from_bytes(cp.decoder)
                    .ok_or(UpdateError::Corrupt(ImageError::NotAnImage))?;
                Codec::Payload(Progress { decoder, consumed: cp.payload_offset, produced, hasher })
            }
        };
        self.stage = Stage::Body(Body {
            header_len,
            shift: download.shift,
            group: download.group,
            transport_len,
            transport: cp.transport_offset,
            index: usize::from(cp.component),
            codec,
            out: Output {
                writer: SlotWriter::new(place, cp.installed_offset),
                written_end: cp.installed_offset,
                last_checkpoint: cp.installed_offset,
            },
        });
        Ok(Started { resume_from: cp.transport_offset })
    }

    /// Feeds the next bytes of the `.fwi` (any size, in order). After an error the download
    /// stops here (a resumable one can be taken up again with `begin`).
    // Not inlined: on a device its temporaries (header, manifest, buffers) must leave the
    // stack when it returns, not stay in the caller's frame.
    #[inline(never)]
    pub fn feed<F: NorFlash>(&mut self, flash: &mut F, bytes: &[u8]) -> Result<(), UpdateError> {
        let result = self.feed_all(flash, bytes);
        if result.is_err() {
            self.stage = Stage::Idle;
        }
        self.note(&result);
        result
    }

    fn feed_all<F: NorFlash>(
        &mut self,
        flash: &mut F,
        mut bytes: &[u8],
    ) -> Result<(), UpdateError> {
        while !bytes.is_empty() {
            match &mut self.stage {
                Stage::Idle => return Err(UpdateError::NotStarted),
                Stage::Complete(_) => return Err(UpdateError::TrailingData),
                Stage::PatchPrefix { have } => {
                    let have = *have;
                    let n = (PatchPrefix::LEN - have).min(bytes.len());
                    self.header[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    let have = have + n;
                    self.stage = Stage::PatchPrefix { have };
                    // Checked as soon as the magic arrives, then when it is complete.
                    if let Err(e @ PatchError::NotAPatch) = PatchPrefix::parse(&self.header[..have])
                    {
                        return Err(Refusal::from(e).into());
                    }
                    if have == PatchPrefix::LEN {
                        self.accept_patch_prefix(flash)?;
                    }
                }
                Stage::Header { have } => {
                    // First the fixed prefix, which gives the header's length; then the rest.
                    let have = *have;
                    let wanted = match have.checked_sub(Prefix::LEN) {
                        None => Prefix::LEN,
                        Some(_) => self.header_len()?,
                    };
                    let n = (wanted - have).min(bytes.len());
                    self.header[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    let have = have + n;
                    self.stage = Stage::Header { have };
                    // Checked as soon as it is complete: a stream that is not an image stops here.
                    if have >= Prefix::LEN && have == self.header_len()? {
                        self.accept_header(flash, have)?;
                    }
                }
                Stage::Body(body) => {
                    let used = match body.codec {
                        Codec::Payload(_) => self.feed_payload(flash, bytes)?,
                        Codec::Patch(_) => self.feed_patch(flash, bytes)?,
                    };
                    bytes = &bytes[used..];
                }
            }
        }
        // A patch decoder holds body bytes ahead: the components they complete are decoded
        // now, not when (if ever) more bytes arrive.
        while let Stage::Body(Body {
            codec: Codec::Patch(PatchProgress { started: false, .. }),
            ..
        }) = &self.stage
        {
            self.feed_patch(flash, &[])?;
        }
        Ok(())
    }

    /// Takes a patch's complete fixed start (in the header buffer): its checksum and version,
    /// that it rebuilds the released image, from the image slot A holds, and that the window
    /// lent holds the decoder's model. Writes nothing.
    #[inline(never)]
    fn accept_patch_prefix<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), UpdateError> {
        let release = self.release.ok_or(UpdateError::NotStarted)?;
        let prefix = PatchPrefix::parse(&self.header[..PatchPrefix::LEN]).map_err(Refusal::from)?;
        if prefix.target != release.image {
            return Err(Refusal::WrongImage { got: prefix.target, released: release.image }.into());
        }
        let (slot_a, (source_start, source_end)) = self.source_of_slot_a(flash)?;
        if slot_a != prefix.source {
            return Err(Refusal::WrongSource { patch: prefix.source, slot_a }.into());
        }
        if self.window.len() < MODEL_BYTES {
            let have = self.window.len();
            return Err(Refusal::WindowTooLarge { needed: MODEL_BYTES, have }.into());
        }
        let layout = prefix.body_layout(source_start, source_end);
        self.patch = Some(PatchPlan { target: prefix.target, layout });
        self.form = TransportForm::Patch { block_shift: prefix.block_shift };
        self.stage = Stage::Header { have: 0 };
        Ok(())
    }

    /// The id of the image in slot A and the installed offsets a patch may copy from. Reads its
    /// header into a frame of its own (a header buffer and a parsed manifest, 1.7 KB), gone
    /// when it returns.
    #[inline(never)]
    fn source_of_slot_a<F: NorFlash>(
        &self,
        flash: &mut F,
    ) -> Result<(ImageId, (u32, u32)), UpdateError> {
        let mut buf = [0u8; MAX_HEADER_LEN];
        match slot::read_header(flash, self.layout, Place::A, &mut buf) {
            Ok(header) => {
                let range = source_range(header.manifest(), self.layout.slot_layout().start);
                Ok((header.id(), range))
            }
            Err(SlotError::Flash(e)) => Err(e.into()),
            Err(_) => Err(Refusal::NoSource.into()),
        }
    }

    /// Decodes patch body bytes into slot B; returns how many were used. Like
    /// [`Self::feed_payload`], it checkpoints at erase-unit boundaries, but only at those where
    /// a segment starts (where the decoder holds no state).
    #[inline(never)] // see `begin`
    fn feed_patch<F: NorFlash>(
        &mut self,
        flash: &mut F,
        input: &[u8],
    ) -> Result<usize, UpdateError> {
        let Stage::Body(body) = &mut self.stage else { return Ok(0) };
        let Codec::Patch(patch) = &mut body.codec else { return Ok(0) };
        let Some(plan) = self.patch else { return Err(UpdateError::NotStarted) };
        let layout = self.layout;
        let slot_start = layout.slot_layout().start;
        let (component, components) = component_at(&self.header[..body.header_len], body.index)?;
        let start = component.load_address() - slot_start;
        let end = start + component.size();
        let checkpoint_every = self.config.checkpoint_every.max(1);
        if !patch.started {
            patch.decoder.start_component(start, start, end);
            patch.hasher = Sha256::new();
            patch.started = true;
            // Its first segment starts afresh: a durable point if it is in a new unit.
            let cp = Checkpoint {
                transport_offset: patch.body_start + patch.decoder.consumed(),
                installed_offset: 0,
                component: body.index as u8,
                payload_offset: patch.decoder.consumed(),
                decoder: patch_checkpoint_state(&patch.decoder, &plan.layout),
            };
            checkpoint_component_start(
                flash,
                layout,
                &mut self.log,
                &mut body.out,
                start,
                checkpoint_every,
                cp,
            )?;
        }
        let Some(mut model) = Model::new(self.window) else {
            return Err(UpdateError::WindowTooSmall);
        };
        let mut used_total = 0;
        let mut out = [0u8; CHUNK];
        let result = loop {
            let position = patch.decoder.position();
            let boundary = next_segment_boundary(
                layout,
                &plan.layout,
                body.out.last_checkpoint + checkpoint_every,
                position,
            );
            let limit = (boundary - position).min(CHUNK as u32) as usize;
            let writer = &body.out.writer;
            let mut read = |image, at: u32, buf: &mut [u8]| match image {
                Image::Source => slot::read_installed(flash, layout, Place::A, at, buf),
                Image::Target => writer.read(flash, layout, at, buf),
            };
            let step =
                patch.decoder.step(&mut model, &input[used_total..], &mut out[..limit], &mut read);
            let (used, produced) = match step {
                Ok(step) => step,
                Err(StepError::Source(SlotError::Flash(e))) => return Err(e.into()),
                // The decoder reads only inside the source's components, which lie in slot A,
                // and inside what it rebuilt, which lies in slot B.
                Err(StepError::Source(_)) => {
                    break Err(BodyError::SourceOutside {
                        at: position,
                        from: position.into(),
                        len: 0,
                        start: plan.layout.source_start,
                        end: plan.layout.source_end,
                    });
                }
                Err(StepError::Body(e)) => break Err(e),
            };
            body.out.writer.write(flash, layout, position, &out[..produced])?;
            patch.hasher.update(&out[..produced]);
            used_total += used;
            body.transport += used as u32;
            if produced > 0 {
                body.out.written_end = position + produced as u32;
            }
            let at = position + produced as u32;
            if produced > 0 && at == boundary && patch.decoder.between_segments() && at < end {
                body.out.writer.flush(flash, layout)?;
                let cp = Checkpoint {
                    transport_offset: patch.body_start + patch.decoder.consumed(),
                    installed_offset: boundary,
                    component: body.index as u8,
                    payload_offset: patch.decoder.consumed(),
                    decoder: patch_checkpoint_state(&patch.decoder, &plan.layout),
                };
                self.log.append(flash, Record::Checkpoint(cp))?;
                body.out.last_checkpoint = boundary;
            }
            if patch.decoder.component_done() || (used == 0 && produced == 0) {
                break Ok(());
            }
        };
        let image = self.release.map(|r| ImageTag::of(&r.image)).unwrap_or_default();
        if let Err(e) = result {
            self.stage = Stage::Idle;
            self.abandon(flash, image, FailReason::Corrupt)?;
            return Err(UpdateError::CorruptPatch(e));
        }
        if !patch.decoder.component_done() {
            return Ok(used_total);
        }
        let actual: [u8; 32] = core::mem::take(&mut patch.hasher).finalize().into();
        let last = body.index + 1 == components;
        let fault = if actual != *component.sha256() {
            Some(UpdateError::Corrupt(component_error(
                &component,
                UnpackError::HashMismatch {
                    expected: crate::image::Sha256Digest(*component.sha256()),
                    actual: crate::image::Sha256Digest(actual),
                },
            )))
        } else if last {
            patch.decoder.finish().err().map(UpdateError::CorruptPatch)
        } else {
            None
        };
        if let Some(fault) = fault {
            self.stage = Stage::Idle;
            self.abandon(flash, image, FailReason::Corrupt)?;
            return Err(fault);
        }
        patch.started = false;
        body.index += 1;
        if last {
            let Stage::Body(body) = core::mem::replace(&mut self.stage, Stage::Idle) else {
                return Ok(used_total);
            };
            self.stage = Stage::Complete(body);
        }
        Ok(used_total)
    }

    /// The header's length, from the prefix collected so far.
    fn header_len(&self) -> Result<usize, UpdateError> {
        let prefix = Prefix::parse(&self.header[..Prefix::LEN]).map_err(Refusal::from)?;
        Ok(prefix.header_len())
    }

    /// Checks the complete header in the header buffer against the release, this device and
    /// the state log, signatures included; writes nothing.
    ///
    /// Ed25519 takes about 8 KB of stack on a Cortex-M0, so the signatures are verified from
    /// this small frame, not from one that holds the parsed header; what fails is reported in
    /// the order a reader expects: a header that is not an image, for another board or not
    /// the released one, then a bad signature, then the rest.
    #[inline(never)]
    fn check_header(&self, len: usize, release: Release) -> Result<Accepted, UpdateError> {
        let accepted = self.check_manifest(len, release);
        if let Err(UpdateError::Refused(
            Refusal::Image(_) | Refusal::WrongBoard { .. } | Refusal::WrongImage { .. },
        )) = accepted
        {
            return accepted;
        }
        verify_header_bytes(&self.header[..len], self.config.build_keys).map_err(Refusal::from)?;
        accepted
    }

    /// [`Self::check_header`] but for the signatures.
    #[inline(never)]
    fn check_manifest(&self, len: usize, release: Release) -> Result<Accepted, UpdateError> {
        let header = Header::parse(&self.header[..len]).map_err(Refusal::from)?;
        let manifest = header.manifest();
        if manifest.board() != self.config.board {
            return Err(Refusal::WrongBoard {
                image: manifest.board().try_into().unwrap_or_default(),
                device: self.config.board.try_into().unwrap_or_default(),
            }
            .into());
        }
        if let Some(plan) = self.patch
            && header.id() != plan.target
        {
            let mismatch = PatchError::TargetMismatch { named: plan.target, carried: header.id() };
            return Err(Refusal::Patch(mismatch).into());
        }
        if header.id() != release.image {
            return Err(Refusal::WrongImage { got: header.id(), released: release.image }.into());
        }
        let min = self.log.state().min_security_counter;
        if manifest.security_counter() < min {
            return Err(Refusal::Rollback { counter: manifest.security_counter(), min }.into());
        }
        manifest.check_layout(&self.layout.slot_layout(), len).map_err(Refusal::TooLarge)?;
        let units = self.layout.units_for(slot::installed_len(self.layout, &header));
        let (shift, group) =
            self.layout.swap_room(units).ok_or(Refusal::NoRoomInSlotB { units })?;
        let transport_len = match self.patch {
            // A patch carries no payloads: its model took the window's place (checked then).
            Some(plan) => PatchPrefix::LEN as u64 + len as u64 + u64::from(plan.layout.body_len),
            None => {
                check_windows(manifest, self.window.len())?;
                len as u64 + manifest.payload_len()
            }
        };
        let transport_len =
            u32::try_from(transport_len).map_err(|_| Refusal::NoRoomInSlotB { units })?;
        Ok(Accepted { shift, group, transport_len })
    }

    /// Takes a complete header: checks it and, if everything is acceptable, starts writing.
    /// Checking and writing are separate frames, neither inlined: the writing's buffers are
    /// not on the stack while Ed25519 runs.
    #[inline(never)] // see `begin`
    fn accept_header<F: NorFlash>(&mut self, flash: &mut F, len: usize) -> Result<(), UpdateError> {
        let release = self.release.ok_or(UpdateError::NotStarted)?;
        let accepted = self.check_header(len, release)?;
        self.start_body(flash, len, release, accepted)
    }

    /// Records the download and writes the checked header (`len` bytes) into slot B.
    #[inline(never)]
    fn start_body<F: NorFlash>(
        &mut self,
        flash: &mut F,
        len: usize,
        release: Release,
        accepted: Accepted,
    ) -> Result<(), UpdateError> {
        let Accepted { shift, group, transport_len } = accepted;
        // Everything checked: from here on, flash changes.
        let image = ImageTag::of(&release.image);
        let phase = self.log.state().phase;
        match phase {
            Phase::Downloading { download, .. } if download.image != image => {
                self.abandon(flash, download.image, FailReason::Superseded)?
            }
            Phase::Swapping { pending, .. } => {
                self.abandon(flash, pending.image, FailReason::Superseded)?
            }
            _ => {}
        }
        let download = Download {
            release_sequence: release.sequence,
            image,
            transport_len,
            shift,
            group,
            form: self.form,
        };
        self.log.append(flash, Record::Download(download))?;
        let place = Place { slot: Slot::B, shift: shift.into() };
        let (transport, codec) = match self.patch {
            Some(plan) => {
                let body_start = (PatchPrefix::LEN + len) as u32;
                let decoder = BodyDecoder::new(plan.layout, 0, crate::delta::CRC_START);
                let hasher = Sha256::new();
                (
                    body_start,
                    Codec::Patch(PatchProgress { decoder, hasher, body_start, started: false }),
                )
            }
            None => (len as u32, Codec::Payload(Progress::start())),
        };
        self.stage = Stage::Body(Body {
            header_len: len,
            shift,
            group,
            transport_len,
            transport,
            index: 0,
            codec,
            out: Output {
                writer: SlotWriter::new(place, 0),
                written_end: len as u32,
                last_checkpoint: 0,
            },
        });
        let Stage::Body(body) = &mut self.stage else { return Err(UpdateError::NotStarted) };
        body.out.writer.write(flash, self.layout, 0, &self.header[..len])?;
        Ok(())
    }

    fn abandon<F: NorFlash>(
        &mut self,
        flash: &mut F,
        image: ImageTag,
        reason: FailReason,
    ) -> Result<(), UpdateError> {
        let outcome = Outcome { kind: OutcomeKind::Failed(reason), image };
        self.log.append(flash, Record::Outcome(outcome))?;
        Ok(())
    }

    /// Decodes payload bytes of the current component into slot B; returns how many were used.
    #[inline(never)] // see `begin`
    fn feed_payload<F: NorFlash>(
        &mut self,
        flash: &mut F,
        input: &[u8],
    ) -> Result<usize, UpdateError> {
        let Stage::Body(body) = &mut self.stage else { return Ok(0) };
        let Codec::Payload(progress) = &mut body.codec else { return Ok(0) };
        let layout = self.layout;
        let slot_start = layout.slot_layout().start;
        let (component, components) = component_at(&self.header[..body.header_len], body.index)?;
        let start = component.load_address() - slot_start;
        let checkpoint_every = self.config.checkpoint_every.max(1);

        if progress.produced == 0 && progress.consumed == 0 {
            let cp = Checkpoint {
                transport_offset: body.transport,
                installed_offset: 0,
                component: body.index as u8,
                payload_offset: 0,
                decoder: DecoderState::START.to_bytes(),
            };
            checkpoint_component_start(
                flash,
                layout,
                &mut self.log,
                &mut body.out,
                start,
                checkpoint_every,
                cp,
            )?;
        }

        // A stream starts from a zeroed window (encoders may refer into it), so a new component
        // gets a fresh unpacker; one under way continues on the window it left.
        let starting = progress.consumed == 0 && progress.produced == 0;
        let unpacker = if starting {
            Unpacker::new(&component, self.window)
        } else {
            Unpacker::resume(&component, self.window, progress.clone())
        };
        let mut unpacker =
            unpacker.map_err(|e| UpdateError::Corrupt(component_error(&component, e)))?;
        let mut used_total = 0;
        let mut out = [0u8; CHUNK];
        let result = loop {
            let position = start + unpacker.produced();
            let boundary =
                next_boundary(layout, body.out.last_checkpoint + checkpoint_every, position);
            let limit = (boundary - position).min(CHUNK as u32) as usize;
            let (used, produced) = match unpacker.step(&input[used_total..], &mut out[..limit]) {
                Ok(step) => step,
                Err(e) => break Err(e),
            };
            body.out.writer.write(flash, layout, position, &out[..produced])?;
            used_total += used;
            body.transport += used as u32;
            if produced > 0 {
                body.out.written_end = position + produced as u32;
            }
            if produced > 0 && position + produced as u32 == boundary {
                body.out.writer.flush(flash, layout)?;
                let cp = Checkpoint {
                    transport_offset: body.transport,
                    installed_offset: boundary,
                    component: body.index as u8,
                    payload_offset: unpacker.consumed(),
                    decoder: unpacker.decoder_state().to_bytes(),
                };
                self.log.append(flash, Record::Checkpoint(cp))?;
                body.out.last_checkpoint = boundary;
            }
            if used == 0 && produced == 0 {
                break Ok(());
            }
        };
        let result = result.and_then(|()| {
            if unpacker.remaining_input() > 0 {
                *progress = unpacker.progress();
                return Ok(false);
            }
            unpacker.finish().map(|_| true)
        });
        match result {
            Ok(false) => Ok(used_total),
            Ok(true) => {
                body.index += 1;
                body.codec = Codec::Payload(Progress::start());
                if body.index == components {
                    let Stage::Body(body) = core::mem::replace(&mut self.stage, Stage::Idle) else {
                        return Ok(used_total);
                    };
                    self.stage = Stage::Complete(body);
                }
                Ok(used_total)
            }
            Err(e) => {
                let error = component_error(&component, e);
                let image = self.release.map(|r| ImageTag::of(&r.image)).unwrap_or_default();
                self.stage = Stage::Idle;
                self.abandon(flash, image, FailReason::Corrupt)?;
                Err(UpdateError::Corrupt(error))
            }
        }
    }

    /// Ends the download: reads the whole image back from slot B and checks it, then marks it
    /// pending: the boot logic swaps it in at the next reset.
    // Not inlined: on a device its temporaries (header, manifest, buffers) must leave the
    // stack when it returns, not stay in the caller's frame.
    #[inline(never)]
    pub fn finish<F: NorFlash>(&mut self, flash: &mut F) -> Result<ImageId, UpdateError> {
        let release = self.release.ok_or(UpdateError::NotStarted)?;
        let mut body = match core::mem::replace(&mut self.stage, Stage::Idle) {
            Stage::Complete(body) => body,
            Stage::Idle => return Err(UpdateError::NotStarted),
            other => {
                let base = if self.patch.is_some() { PatchPrefix::LEN } else { 0 };
                let (received, expected) = match &other {
                    Stage::PatchPrefix { have } => (*have as u32, 0),
                    Stage::Header { have } => ((base + *have) as u32, 0),
                    Stage::Body(b) => (b.transport, b.transport_len),
                    _ => (0, 0),
                };
                self.stage = other;
                return Err(UpdateError::Incomplete { received, expected });
            }
        };
        body.out.writer.flush(flash, self.layout)?;
        let place = Place { slot: Slot::B, shift: body.shift.into() };
        // The signatures were verified on the header as it arrived (`check_header`): slot B
        // must hold those very bytes, and the components their hashes. Comparing the header
        // costs a read; verifying it again would cost Ed25519's 8 KB of stack once more.
        let checks = Checks {
            keys: None,
            min_security_counter: self.log.state().min_security_counter,
            board: Some(self.config.board),
        };
        let checked = slot::check(flash, self.layout, place, &checks).and_then(|image| {
            slot::expect(flash, self.layout, place, 0, &self.header[..body.header_len])?;
            Ok(image)
        });
        let image = match checked {
            Ok(image) if image.id == release.image => image,
            Err(SlotError::Flash(e)) => return Err(e.into()),
            other => {
                self.abandon(flash, ImageTag::of(&release.image), FailReason::Corrupt)?;
                let problem = other.err().unwrap_or(SlotError::Image(ImageError::NotAnImage));
                return Err(UpdateError::Failed(problem));
            }
        };
        let old_units = slot::extent(flash, self.layout, Place::A).unwrap_or(0);
        let mut pending = Pending {
            release_sequence: release.sequence,
            image: ImageTag::of(&image.id),
            new_units: image.units as u16,
            old_units: old_units.min(u32::from(u16::MAX)) as u16,
            shift: body.shift,
            group: body.group,
            done: 0,
            markers: 0,
        };
        pending.markers = marker_area(self.layout, &pending);
        self.log.append(flash, Record::Pending(pending))?;
        Ok(image.id)
    }
}

/// Refuses an image with a component a window of `have` bytes cannot decode.
fn check_windows(manifest: &Manifest, have: usize) -> Result<(), UpdateError> {
    for component in manifest.components() {
        if let Compression::Heatshrink(params) = component.compression() {
            let needed = 1usize << params.window();
            if needed > have {
                return Err(Refusal::WindowTooLarge { needed, have }.into());
            }
        }
    }
    Ok(())
}

/// The first erase unit boundary (installed offset) at or after `at_least` and after
/// `position`; `u32::MAX` if the slot ends first.
fn next_boundary(layout: &FlashLayout, at_least: u32, position: u32) -> u32 {
    let a = layout.slot(Slot::A);
    layout
        .units()
        .filter(|u| u.offset >= a.offset && u.offset < a.end())
        .map(|u| u.offset - a.offset)
        .find(|&b| b >= at_least && b > position)
        .unwrap_or(u32::MAX)
}

/// Like [`next_boundary`], for a patch: the first erase unit boundary at or after `at_least`
/// and after `position` where a segment starts (a block boundary); `u32::MAX` if none.
fn next_segment_boundary(
    layout: &FlashLayout,
    body: &BodyLayout,
    at_least: u32,
    position: u32,
) -> u32 {
    let a = layout.slot(Slot::A);
    layout
        .units()
        .filter(|u| u.offset >= a.offset && u.offset < a.end())
        .map(|u| u.offset - a.offset)
        .find(|&b| b >= at_least && b > position && body.is_block_boundary(b))
        .unwrap_or(u32::MAX)
}

/// A component starting in a later unit than everything written so far: the unit it starts in
/// is a durable point too (the component's decoding starts from nothing). Records `cp` there
/// (its installed offset set to the unit's start) if it is `every` bytes past the last one.
fn checkpoint_component_start<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    log: &mut StateLog<'_>,
    body: &mut Output,
    start: u32,
    every: u32,
    cp: Checkpoint,
) -> Result<(), UpdateError> {
    let a = layout.slot(Slot::A).offset;
    let Some(unit) = layout.unit_containing(a + start) else { return Ok(()) };
    let boundary = unit.offset - a;
    if boundary < body.written_end || boundary < body.last_checkpoint + every {
        return Ok(());
    }
    // Everything below a checkpoint must be final: written, and the units of the gap before
    // this component erased (a resume starts after them).
    body.writer.flush(flash, layout)?;
    body.writer.prepare(flash, layout, boundary)?;
    log.append(flash, Record::Checkpoint(Checkpoint { installed_offset: boundary, ..cp }))?;
    body.last_checkpoint = boundary;
    Ok(())
}

/// What a patch checkpoint keeps in its decoder field: the body's CRC register so far, and the
/// CRC the patch gives (the fixed start is not sent again after a reset).
fn patch_checkpoint_state(decoder: &BodyDecoder, layout: &BodyLayout) -> [u8; 8] {
    let mut state = [0; 8];
    state[..4].copy_from_slice(&decoder.crc().to_le_bytes());
    state[4..].copy_from_slice(&layout.body_crc.to_le_bytes());
    state
}

/// Component `index` of the header `header` (already checked), and how many components it has.
/// Not inlined: the parsed header is on the stack only while this runs.
#[inline(never)]
fn component_at(header: &[u8], index: usize) -> Result<(Component, usize), UpdateError> {
    let header = Header::parse(header).map_err(UpdateError::Corrupt)?;
    let components = header.manifest().components();
    let component = components.get(index).ok_or(UpdateError::Corrupt(ImageError::NotAnImage))?;
    Ok((component.clone(), components.len()))
}

fn component_error(component: &crate::image::Component, error: UnpackError) -> ImageError {
    ImageError::Component { name: component.name().clone(), error }
}
