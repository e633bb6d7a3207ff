//! `imager gateway`: bridges a device's serial link to the ota-server's device API.
//!
//! The device speaks [`firmware::link`] on its UART: console text lines and framed requests.
//! The gateway prints the text, answers each request from the server (check-in, events) or from
//! the image it fetched for the device's offer (image bytes in chunks), and says on stderr what
//! it did. It holds one device's token: one gateway per serial line.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use firmware::image::ImageId;
use firmware::link::{self, Down, EventImage, MAX_DATA, MAX_FRAME, Piece, Splitter, Up};
use firmware::state::ImageTag;
use ota_proto::client::{Blocking, Bytes};
use ota_proto::{CheckIn, NewEvent};

use crate::client::call;
use crate::console::{MAX_PIECE, lines_of};

/// Largest image file the gateway fetches for a device.
const MAX_IMAGE: usize = 16 << 20;

/// The gateway's state: the server, and the image it is feeding the device.
pub struct Gateway {
    client: Blocking,
    check_again_s: u16,
    offer: Option<Offered>,
    /// Images offered in this session, newest last (at most `OFFERED`): how an event that
    /// names an image by its tag alone is told which image it is.
    offered: Vec<ImageId>,
}

/// Offered images remembered for events by tag.
const OFFERED: usize = 16;

/// The image offered to the device, and the part of it fetched so far.
struct Offered {
    image: ImageId,
    url: String,
    size: u32,
    /// `bytes` start at this offset of the file.
    base: u32,
    bytes: Bytes,
}

/// Where the text and the gateway's notes go.
pub struct Output<'a> {
    /// The device's console text.
    pub console: &'a mut dyn Write,
    /// What the gateway does.
    pub notes: &'a mut dyn Write,
}

impl Gateway {
    /// A gateway to the server `client` talks to (with a device token); devices told nothing
    /// is on offer check in again after `check_again_s` seconds.
    pub fn new(client: Blocking, check_again_s: u16) -> Self {
        Gateway { client, check_again_s, offer: None, offered: Vec::new() }
    }

    /// Serves the link on `stream` until it closes.
    pub fn serve<S: Read + Write>(&mut self, stream: &mut S, out: &mut Output<'_>) -> Result<()> {
        let mut splitter = Box::new(Splitter::<MAX_PIECE>::new());
        let mut buf = [0u8; 4096];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the serial link"),
            };
            for &byte in &buf[..n] {
                let len = match splitter.push(byte) {
                    Piece::None => continue,
                    Piece::Overflow => {
                        writeln!(
                            out.notes,
                            "gateway: dropped a line longer than {MAX_PIECE} bytes"
                        )?;
                        continue;
                    }
                    Piece::Complete(piece) => match (piece.to_vec(), link::unframe(piece)) {
                        (_, Ok(len)) => Some(len),
                        (_, Err(link::LinkError::Version(v))) => {
                            writeln!(
                                out.notes,
                                "gateway: the device speaks link protocol version {v}, this gateway {}",
                                link::VERSION
                            )?;
                            None
                        }
                        // Not a frame: console text (unframe changed it in place; show the copy).
                        (text, Err(_)) => {
                            show_text(&text, out.console)?;
                            continue;
                        }
                    },
                };
                let Some(len) = len else { continue };
                let reply = match link::parse::<Up<'_>>(&splitter.last()[1..1 + len]) {
                    Ok(request) => self.answer(&request, out.notes)?,
                    Err(e) => {
                        writeln!(out.notes, "gateway: a frame from the device: {e}")?;
                        continue;
                    }
                };
                stream.write_all(&reply).context("writing to the serial link")?;
                stream.flush()?;
            }
        }
    }

    /// The framed answer to one request.
    fn answer(&mut self, request: &Up<'_>, notes: &mut dyn Write) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        let down = match request {
            Up::Status(status) => match self.checkin(status) {
                Ok(Some((image, size, release))) => {
                    writeln!(
                        notes,
                        "gateway: check-in: runs {}; offered {image} ({size} bytes)",
                        running(status)
                    )?;
                    data = release;
                    Down::Offer { image, size, release: &data }
                }
                Ok(None) => {
                    writeln!(
                        notes,
                        "gateway: check-in: runs {}; nothing offered",
                        running(status)
                    )?;
                    Down::NoUpdate { check_again_s: self.check_again_s }
                }
                Err(e) => self.failed(&mut data, notes, "check-in", e)?,
            },
            Up::Event { image, kind, detail } => match self.resolve(image) {
                Err(e) => self.failed(&mut data, notes, "event", e)?,
                Ok(image) => {
                    // The link documents at most MAX_DETAIL bytes; a longer one is cut, not
                    // passed on, and shown escaped.
                    let detail = crate::console::clip(detail, firmware::link::MAX_DETAIL);
                    let event = NewEvent {
                        image_id: image,
                        kind: *kind,
                        detail: (!detail.is_empty()).then(|| detail.to_string()),
                        transport: None,
                    };
                    let said = if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", crate::console::printable(detail))
                    };
                    match call(&self.client, |c| c.event(&event)) {
                        Ok(()) => {
                            // Noted once the server has it.
                            writeln!(notes, "gateway: event {} {image}{said}", kind.as_str())?;
                            Down::Recorded
                        }
                        Err(e) => self.failed(&mut data, notes, "event", e)?,
                    }
                }
            },
            Up::Fetch { image, offset, len } => match self.fetch(image, *offset, *len) {
                Ok(range) => {
                    if *offset == 0
                        || range.end == self.offer.as_ref().map_or(0, |o| o.size as usize)
                    {
                        let what = if *offset == 0 { "sending" } else { "sent" };
                        writeln!(notes, "gateway: {what} {image} (byte {offset})")?;
                    }
                    let offered = self.offer.as_ref().ok_or_else(|| anyhow!("no offer"))?;
                    let start = range.start - offered.base as usize;
                    data = offered.bytes[start..start + range.len()].to_vec();
                    Down::Data { offset: *offset, bytes: &data }
                }
                Err(e) => self.failed(&mut data, notes, "image", e)?,
            },
        };
        let mut frame = vec![0u8; MAX_FRAME];
        let n = link::encode(&down, &mut frame).map_err(|e| anyhow!("framing the answer: {e}"))?;
        frame.truncate(n);
        Ok(frame)
    }

    /// The image an event names: its id, or the offered image whose tag it gives.
    fn resolve(&self, image: &EventImage) -> Result<ImageId> {
        match *image {
            EventImage::Id(id) => Ok(id),
            EventImage::Tag(tag) => {
                self.offered.iter().rev().find(|id| ImageTag::of(id) == tag).copied().ok_or_else(
                    || anyhow!("the device names image {tag} by its tag only, and this gateway did not offer it"),
                )
            }
        }
    }

    /// Notes a failure and answers the device with its text (cut to fit a frame).
    fn failed<'a>(
        &self,
        store: &'a mut Vec<u8>,
        notes: &mut dyn Write,
        what: &str,
        error: anyhow::Error,
    ) -> Result<Down<'a>> {
        writeln!(notes, "gateway: {what}: {error:#}")?;
        let mut text = format!("{what}: {error:#}");
        let mut end = text.len().min(200);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        *store = text.into_bytes();
        Ok(Down::Error { message: std::str::from_utf8(store).unwrap_or("error") })
    }

    /// Checks in for the device; the offer, if any, as (image, size, release statement).
    fn checkin(
        &mut self,
        status: &firmware::update::Status,
    ) -> Result<Option<(ImageId, u32, Vec<u8>)>> {
        let report = CheckIn::from_status(status);
        let answer = call(&self.client, |c| c.checkin(&report))?;
        let Some(offer) = answer.offer else { return Ok(None) };
        let (image, release) = (offer.image_id, offer.release.0);
        let size = u32::try_from(offer.size)
            .ok()
            .filter(|&s| s as usize <= MAX_IMAGE)
            .ok_or_else(|| anyhow!("the offered image is too large ({} bytes)", offer.size))?;
        if self.offer.as_ref().is_none_or(|o| o.image != image) {
            self.offer =
                Some(Offered { image, url: offer.url, size, base: 0, bytes: Bytes::new() });
        }
        if !self.offered.contains(&image) {
            if self.offered.len() == OFFERED {
                self.offered.remove(0);
            }
            self.offered.push(image);
        }
        Ok(Some((image, size, release)))
    }

    /// Makes sure bytes `offset..offset + len` (cut at the end of the file) of the offered
    /// `image` are at hand, fetching from the server if not; returns the file range.
    fn fetch(&mut self, image: &ImageId, offset: u32, len: u16) -> Result<std::ops::Range<usize>> {
        let offered = match &mut self.offer {
            Some(o) if o.image == *image => o,
            _ => bail!("image {image} was not offered to this device"),
        };
        if usize::from(len) > MAX_DATA || offset >= offered.size {
            bail!("asked for bytes {offset}+{len} of a {}-byte file", offered.size);
        }
        let end = (offset + u32::from(len)).min(offered.size);
        let have = offered.base..offered.base + offered.bytes.len() as u32;
        if !(have.contains(&offset) && end <= have.end) {
            // Fetch from here to the end: a device that resumes after a reset asks for the rest.
            let url = &offered.url;
            let bytes = call(&self.client, |c| c.download(url, u64::from(offset), MAX_IMAGE))?;
            if u64::from(offset) + bytes.len() as u64 != u64::from(offered.size) {
                bail!(
                    "the server sent {} bytes from byte {offset} of a {}-byte image",
                    bytes.len(),
                    offered.size
                );
            }
            offered.base = offset;
            offered.bytes = bytes;
        }
        Ok(offset as usize..end as usize)
    }
}

/// "image (confirmed)" for notes.
fn running(status: &firmware::update::Status) -> String {
    match &status.running {
        Some((id, version)) => {
            format!("{id} {version} ({})", if status.trial { "on trial" } else { "confirmed" })
        }
        None => "no readable image".into(),
    }
}

/// Prints a console text piece (line ends normalised).
fn show_text(piece: &[u8], console: &mut dyn Write) -> Result<()> {
    for line in lines_of(piece) {
        writeln!(console, "{line}")?;
    }
    console.flush()?;
    Ok(())
}

/// Connects to a serial line exposed over TCP (`HOST:PORT`), trying for up to `patience`.
pub fn connect(address: &str, patience: Duration) -> Result<TcpStream> {
    let target = address
        .to_socket_addrs()
        .with_context(|| format!("serial address {address:?}: expected HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("serial address {address:?} resolves to nothing"))?;
    let deadline = Instant::now() + patience;
    loop {
        match TcpStream::connect(target) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot connect to the serial line at {address} (is `imager run --serial tcp:PORT` running?)")
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_by_tag_names_an_image_this_gateway_offered_or_is_refused() {
        let client = crate::client::connect(Some("http://127.0.0.1:9"), Some("token")).unwrap();
        let mut gateway = Gateway::new(client, 30);
        let (older, newer) = (ImageId([1; 32]), ImageId([2; 32]));
        let tag = |id: &ImageId| EventImage::Tag(ImageTag::of(id));
        let err = gateway.resolve(&tag(&newer)).unwrap_err().to_string();
        assert!(err.contains("0202020202020202") && err.contains("did not offer"), "{err}");
        gateway.offered = vec![older, newer];
        assert_eq!(gateway.resolve(&tag(&newer)).unwrap(), newer);
        assert_eq!(gateway.resolve(&tag(&older)).unwrap(), older);
        assert_eq!(gateway.resolve(&EventImage::Id(older)).unwrap(), older);
        assert!(gateway.resolve(&tag(&ImageId([3; 32]))).is_err());
    }
}
