//! The serial link between a device and a gateway (`imager gateway`): the messages each side
//! sends and how they are framed on a UART. Both ends use this module, so the wire format is
//! written down once.
//!
//! # Framing
//!
//! ```text
//! 0x00  COBS( version:u8  postcard(message)  crc32:u32 LE )  0x00
//! ```
//!
//! COBS removes every zero byte from the frame, so `0x00` only ever delimits. The CRC-32
//! (ISO-HDLC) covers the version byte and the message. A device also prints plain text lines on
//! the same UART (its console); it ends each with a `0x00` too, so that everything between two
//! zero bytes is either exactly one frame or text. A reader splits the stream at zero bytes
//! ([`Splitter`]) and tries [`decode`] on each piece: what does not decode is text (or noise).
//!
//! # Exchanges
//!
//! The device asks, the gateway answers; every request has exactly one answer:
//!
//! | device sends         | gateway answers                                   |
//! |----------------------|---------------------------------------------------|
//! | [`Up::Status`]       | [`Down::Offer`], [`Down::NoUpdate`] or [`Down::Error`] |
//! | [`Up::Event`]        | [`Down::Recorded`] or [`Down::Error`]             |
//! | [`Up::Fetch`]        | [`Down::Data`] or [`Down::Error`]                 |
//!
//! A device that hears nothing within its timeout asks again; answers are idempotent.

use postcard::ser_flavors::crc::CrcModifier;
use postcard::ser_flavors::{Cobs, Slice};
use serde::{Deserialize, Serialize};

use crate::image::ImageId;
use crate::state::ImageTag;
use crate::update::Status;

/// Version of this protocol; the first byte of every frame.
pub const VERSION: u8 = 1;

/// Image bytes one [`Down::Data`] carries at most.
pub const MAX_DATA: usize = 512;

/// The largest frame either side sends, both delimiters included: a receiver with a buffer of
/// this size takes every frame.
pub const MAX_FRAME: usize = 640;

/// Bytes of text an event's detail carries at most.
pub const MAX_DETAIL: usize = 160;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Which image an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventImage {
    /// Its id.
    Id(ImageId),
    /// Only its tag (the first 8 bytes of its id), when that is all the device still knows: an
    /// image the bootloader reverted is gone from flash, and the state log keeps its tag. The
    /// gateway finds the id among the images it offered.
    Tag(ImageTag),
}

impl From<ImageId> for EventImage {
    fn from(id: ImageId) -> Self {
        EventImage::Id(id)
    }
}

impl core::fmt::Display for EventImage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EventImage::Id(id) => write!(f, "{id}"),
            EventImage::Tag(tag) => write!(f, "{tag}"),
        }
    }
}

/// A device's message to the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Up<'a> {
    /// A check-in: what the device runs and holds. Answered with an offer or not.
    Status(Status),
    /// A step of an update, for the server's record.
    Event {
        /// The image it is about.
        image: EventImage,
        /// What happened.
        kind: EventKind,
        /// Why, in words (a refusal's reason, say); at most [`MAX_DETAIL`] bytes.
        detail: &'a str,
    },
    /// Bytes `offset..offset + len` of the offered image's `.fwi` file.
    Fetch {
        /// The image offered.
        image: ImageId,
        /// First byte wanted.
        offset: u32,
        /// How many (at most [`MAX_DATA`]).
        len: u16,
    },
}

/// The gateway's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down<'a> {
    /// Nothing to install: check in again after this many seconds.
    NoUpdate {
        /// Seconds until the next check-in.
        check_again_s: u16,
    },
    /// An update to install.
    Offer {
        /// The image.
        image: ImageId,
        /// Size of its `.fwi` file.
        size: u32,
        /// The signed release statement (postcard), for the device to check with its
        /// environment's key.
        release: &'a [u8],
    },
    /// The bytes asked for (fewer only at the end of the file).
    Data {
        /// Where they start in the file.
        offset: u32,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// The event was recorded.
    Recorded,
    /// The gateway could not do what was asked (the server is unreachable or said no).
    Error {
        /// What went wrong, in words.
        message: &'a str,
    },
}

/// A step of an update, as devices report it (and the server records it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Started (or resumed) downloading.
    Downloading,
    /// Downloaded, verified and marked pending.
    Installed,
    /// Booted the new image on trial.
    Booted,
    /// Confirmed the new image.
    Confirmed,
    /// The bootloader reverted the new image.
    Reverted,
    /// Refused or failed the update; the detail says why.
    Failed,
}

impl EventKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Downloading => "downloading",
            EventKind::Installed => "installed",
            EventKind::Booted => "booted",
            EventKind::Confirmed => "confirmed",
            EventKind::Reverted => "reverted",
            EventKind::Failed => "failed",
        }
    }

    /// Parses a kind name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "downloading" => EventKind::Downloading,
            "installed" => EventKind::Installed,
            "booted" => EventKind::Booted,
            "confirmed" => EventKind::Confirmed,
            "reverted" => EventKind::Reverted,
            "failed" => EventKind::Failed,
            _ => return None,
        })
    }
}

/// Why a piece of the stream is not a frame, or a message could not be framed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LinkError {
    /// Not valid COBS: text, noise, or a frame cut short.
    #[error("not a COBS frame")]
    NotAFrame,
    /// Too short to hold a version byte and a CRC.
    #[error("frame of {0} bytes is too short")]
    TooShort(usize),
    /// The CRC does not match: bytes were lost or changed on the way.
    #[error("CRC mismatch")]
    Crc,
    /// The other end speaks another version of this protocol.
    #[error("frame of link protocol version {0}, this end speaks version {VERSION}")]
    Version(u8),
    /// The CRC matched but the message does not parse (or has bytes after its end).
    #[error("malformed message")]
    Malformed,
    /// The buffer is too small for the encoded message.
    #[error("message does not fit the frame buffer")]
    TooLarge,
}

/// Frames `message` into `out` (delimiters included); returns the frame's length.
pub fn encode<T: Serialize>(message: &T, out: &mut [u8]) -> Result<usize, LinkError> {
    let (first, rest) = out.split_first_mut().ok_or(LinkError::TooLarge)?;
    *first = 0;
    let cobs = Cobs::try_new(Slice::new(rest)).map_err(|_| LinkError::TooLarge)?;
    let flavor = CrcModifier::new(cobs, CRC.digest());
    let framed = postcard::serialize_with_flavor(&(VERSION, message), flavor)
        .map_err(|_| LinkError::TooLarge)?;
    Ok(1 + framed.len())
}

/// Decodes one piece of the stream (the bytes between two zero bytes, delimiters excluded).
/// COBS is undone in place, so the message may borrow from `piece`.
pub fn decode<'a, T: Deserialize<'a>>(piece: &'a mut [u8]) -> Result<T, LinkError> {
    let len = unframe(piece)?;
    parse(&piece[1..1 + len])
}

/// The first half of [`decode`]: undoes COBS in place and checks the CRC and the version.
/// Returns the message's length; its bytes are then `piece[1..1 + len]`.
pub fn unframe(piece: &mut [u8]) -> Result<usize, LinkError> {
    let len = cobs::decode_in_place(piece).map_err(|_| LinkError::NotAFrame)?;
    if len < 5 {
        return Err(LinkError::TooShort(len));
    }
    let (body, crc) = piece[..len].split_at(len - 4);
    if CRC.checksum(body).to_le_bytes() != crc {
        return Err(LinkError::Crc);
    }
    if body[0] != VERSION {
        return Err(LinkError::Version(body[0]));
    }
    Ok(len - 5)
}

/// The second half of [`decode`]: parses message bytes [`unframe`] left.
pub fn parse<'a, T: Deserialize<'a>>(message: &'a [u8]) -> Result<T, LinkError> {
    match postcard::take_from_bytes(message) {
        Ok((message, [])) => Ok(message),
        _ => Err(LinkError::Malformed),
    }
}

/// Splits a byte stream at zero bytes into pieces of at most `N` bytes: the bounded reader
/// both ends use. A piece longer than `N` is dropped whole (and said so), never truncated
/// into something that might decode.
pub struct Splitter<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Length of the last complete piece (still in `buf` until the next byte arrives).
    last: usize,
    overflow: bool,
}

/// What one byte completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Nothing yet.
    None,
    /// The bytes between two zero bytes (never empty).
    Complete(&'a mut [u8]),
    /// A piece longer than the buffer ended; its bytes are gone.
    Overflow,
}

impl<const N: usize> Default for Splitter<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Splitter<N> {
    /// An empty splitter.
    pub const fn new() -> Self {
        Splitter { buf: [0; N], len: 0, last: 0, overflow: false }
    }

    /// Takes the next byte of the stream.
    pub fn push(&mut self, byte: u8) -> Piece<'_> {
        if byte != 0 {
            if self.len < N {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflow = true;
            }
            return Piece::None;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.len = 0;
        self.last = if overflow { 0 } else { len };
        self.overflow = false;
        if overflow {
            Piece::Overflow
        } else if len == 0 {
            Piece::None
        } else {
            Piece::Complete(&mut self.buf[..len])
        }
    }

    /// The last complete piece, as the caller left it (after [`unframe`], the message is at
    /// `1..1 + len`). Valid until the next byte is pushed.
    pub fn last(&self) -> &[u8] {
        &self.buf[..self.last]
    }

    /// The bytes of the piece collected so far (text a reader may want to show before its
    /// terminating zero arrives).
    pub fn pending(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::SlotB;

    fn frame(message: &Up<'_>) -> std::vec::Vec<u8> {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(message, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn pieces(stream: &[u8]) -> std::vec::Vec<std::vec::Vec<u8>> {
        let mut splitter = Splitter::<MAX_FRAME>::new();
        let mut out = std::vec::Vec::new();
        for &b in stream {
            if let Piece::Complete(p) = splitter.push(b) {
                out.push(p.to_vec());
            }
        }
        out
    }

    fn status() -> Status {
        Status {
            running: Some((ImageId([7; 32]), "1.2.3".parse().unwrap())),
            trial: true,
            slot_b: SlotB::Previous(ImageId([0; 32])),
            outcome: None,
            min_security_counter: 3,
            release_sequence: 9,
        }
    }

    #[test]
    fn frames_round_trip_between_text_lines() {
        let messages = [
            Up::Status(status()),
            Up::Event {
                image: ImageId([0; 32]).into(),
                kind: EventKind::Failed,
                detail: "no\0zero",
            },
            Up::Event {
                image: EventImage::Tag(ImageTag([7; 8])),
                kind: EventKind::Reverted,
                detail: "NotConfirmed",
            },
            Up::Fetch { image: ImageId([1; 32]), offset: 4096, len: 512 },
        ];
        let mut stream = b"fwi demo os: ready\r\n\0".to_vec();
        for m in &messages {
            let f = frame(m);
            assert_eq!((f[0], f[f.len() - 1]), (0, 0));
            assert!(f[1..f.len() - 1].iter().all(|&b| b != 0), "COBS leaves no zero inside");
            stream.extend_from_slice(&f);
            stream.extend_from_slice(b"a text line\r\n\0");
        }
        let mut got = pieces(&stream);
        assert_eq!(got.len(), 1 + 2 * messages.len());
        let mut decoded = std::vec::Vec::new();
        for piece in got.iter_mut() {
            let text = piece.ends_with(b"\r\n");
            match decode::<Up<'_>>(piece) {
                Ok(m) => decoded.push(m),
                Err(e) => assert!(text, "only text fails: {e}"),
            }
        }
        assert_eq!(decoded, messages);
    }

    #[test]
    fn down_messages_round_trip() {
        let bytes = [0u8, 1, 2, 0, 255];
        let messages = [
            Down::NoUpdate { check_again_s: 30 },
            Down::Offer { image: ImageId([9; 32]), size: 40_000, release: &bytes },
            Down::Data { offset: 512, bytes: &[0u8; MAX_DATA] },
            Down::Recorded,
            Down::Error { message: "server unreachable" },
        ];
        for m in &messages {
            let mut out = [0u8; MAX_FRAME];
            let n = encode(m, &mut out).unwrap();
            let got = decode::<Down<'_>>(&mut out[1..n - 1]).unwrap();
            assert_eq!(&got, m);
        }
    }

    #[test]
    fn corrupt_pieces_are_refused_with_the_reason() {
        let good = frame(&Up::Fetch { image: ImageId([1; 32]), offset: 0, len: 512 });
        let inner = &good[1..good.len() - 1];
        // Every single-byte change of a frame is caught (by COBS or the CRC).
        for i in 0..inner.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut piece = inner.to_vec();
                piece[i] ^= flip;
                if piece[i] == 0 {
                    continue; // a zero would have split the piece on the wire
                }
                assert!(decode::<Up<'_>>(&mut piece).is_err(), "byte {i} ^ {flip:#x}");
            }
        }
        // Cut short at every length.
        for n in 0..inner.len() {
            assert!(decode::<Up<'_>>(&mut inner[..n].to_vec()).is_err(), "cut at {n}");
        }
        assert_eq!(decode::<Up<'_>>(&mut b"hello\r\n".to_vec()), Err(LinkError::NotAFrame));
        assert_eq!(decode::<Up<'_>>(&mut [2, 1].to_vec()), Err(LinkError::TooShort(1)));

        // Another version, and bytes after the message, with good CRCs.
        let raw_frame = |raw: &[u8]| {
            let mut body = raw.to_vec();
            body.extend_from_slice(&CRC.checksum(raw).to_le_bytes());
            let mut out = std::vec![0u8; body.len() + 8];
            let n = cobs::encode(&body, &mut out);
            out.truncate(n);
            out
        };
        assert_eq!(decode::<Down<'_>>(&mut raw_frame(&[2, 3])), Err(LinkError::Version(2)));
        assert_eq!(decode::<Down<'_>>(&mut raw_frame(&[VERSION, 3, 0])), Err(LinkError::Malformed));
        assert_eq!(decode::<Down<'_>>(&mut raw_frame(&[VERSION, 3])), Ok(Down::Recorded));
        // A message the receiving side does not know.
        assert_eq!(decode::<Down<'_>>(&mut raw_frame(&[VERSION, 42])), Err(LinkError::Malformed));
    }

    #[test]
    fn encode_refuses_a_buffer_too_small() {
        let m = Down::Data { offset: 0, bytes: &[1; MAX_DATA] };
        let mut small = [0u8; MAX_DATA];
        assert_eq!(encode(&m, &mut small), Err(LinkError::TooLarge));
        assert_eq!(encode(&m, &mut []), Err(LinkError::TooLarge));
    }

    #[test]
    fn the_largest_messages_fit_max_frame() {
        let detail = "x".repeat(MAX_DETAIL);
        let mut out = [0u8; MAX_FRAME];
        let release = [0xAB; 200];
        encode(&Down::Data { offset: u32::MAX, bytes: &[0xFF; MAX_DATA] }, &mut out).unwrap();
        encode(
            &Down::Offer { image: ImageId([0xFF; 32]), size: u32::MAX, release: &release },
            &mut out,
        )
        .unwrap();
        encode(
            &Up::Event {
                image: ImageId([0xFF; 32]).into(),
                kind: EventKind::Failed,
                detail: &detail,
            },
            &mut out,
        )
        .unwrap();
        encode(&Up::Status(status()), &mut out).unwrap();
    }

    #[test]
    fn splitter_is_bounded() {
        let mut s = Splitter::<4>::new();
        for &b in b"toolong" {
            assert_eq!(s.push(b), Piece::None);
        }
        assert_eq!(s.push(0), Piece::Overflow);
        for &b in b"ok" {
            s.push(b);
        }
        assert_eq!(s.pending(), b"ok");
        assert_eq!(s.push(0), Piece::Complete(&mut b"ok".to_vec()[..]));
        assert_eq!(s.last(), b"ok");
        assert_eq!(s.push(0), Piece::None, "empty pieces are skipped");
    }

    #[test]
    fn event_names() {
        for kind in [
            EventKind::Downloading,
            EventKind::Installed,
            EventKind::Booted,
            EventKind::Confirmed,
            EventKind::Reverted,
            EventKind::Failed,
        ] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("exploded"), None);
    }
}
