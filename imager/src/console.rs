//! A device's console text on a UART it shares with the serial link (`firmware::link`): the
//! device ends every text line with a zero byte, as it ends frames, so the same bounded
//! splitter separates both; what does not decode as a frame is text.

use firmware::link::{self, Piece, Splitter};

/// The longest piece kept between two zero bytes; a longer one is dropped.
pub const MAX_PIECE: usize = 64 << 10;

/// The lines of a piece of console text: `\r\n`, `\r` and `\n` each end a line.
pub fn lines_of(piece: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(piece);
    text.replace("\r\n", "\n").replace('\r', "\n").lines().map(str::to_owned).collect()
}

/// Console text from UART bytes: the pieces between zero bytes that are not link frames, split
/// into lines.
pub struct TextLines {
    splitter: Box<Splitter<MAX_PIECE>>,
}

impl Default for TextLines {
    fn default() -> Self {
        TextLines { splitter: Box::new(Splitter::new()) }
    }
}

impl TextLines {
    /// Takes bytes; returns the text lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if let Piece::Complete(piece) = self.splitter.push(b) {
                // `unframe` works in place: keep the bytes to show them if it is text.
                let text = piece.to_vec();
                if link::unframe(piece).is_err() {
                    lines.extend(lines_of(&text));
                }
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware::link::{EventKind, Up};

    #[test]
    fn text_is_split_into_lines_and_frames_are_left_out() {
        let mut frame = [0u8; 256];
        let image = firmware::image::ImageId([9; 32]).into();
        let event = Up::Event { image, kind: EventKind::Booted, detail: "x" };
        let n = link::encode(&event, &mut frame).unwrap();
        let mut stream = b"fwi boot: starting\r\n\0".to_vec();
        stream.extend_from_slice(&frame[..n]);
        stream.extend_from_slice(b"one\rtwo\r\n\0no end yet");
        let mut lines = TextLines::default();
        // Any split of the stream gives the same lines.
        let (a, b) = stream.split_at(7);
        let mut got = lines.push(a);
        got.extend(lines.push(b));
        assert_eq!(got, ["fwi boot: starting", "one", "two"]);
        assert_eq!(lines.push(b"\0"), ["no end yet"]);
    }
}
