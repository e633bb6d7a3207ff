//! A device's console text on a UART it shares with the serial link (`firmware::link`): the
//! device ends every text line with a zero byte, as it ends frames, so the same bounded
//! splitter separates both; what does not decode as a frame is text.

use firmware::link::{self, Piece, Splitter};

/// The longest piece kept between two zero bytes; a longer one is dropped.
pub const MAX_PIECE: usize = 64 << 10;

/// At most `max` bytes of `text`, cut at a character boundary: what a device says in a frame is
/// held to the link's documented bounds before it goes anywhere else.
pub fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The lines of a piece of console text: `\r\n`, `\r` and `\n` each end a line. Other control
/// characters are shown escaped (`\u{1b}`), never passed on: the bytes come from a device, and
/// a terminal escape sequence in them would otherwise act on the operator's terminal.
pub fn lines_of(piece: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(piece);
    text.replace("\r\n", "\n").replace('\r', "\n").lines().map(printable).collect()
}

/// `line` with its control characters (all but tab) escaped.
pub fn printable(line: &str) -> String {
    line.chars()
        .flat_map(|c| {
            let escaped = c.is_control() && c != '\t';
            let shown: Vec<char> = if escaped { c.escape_default().collect() } else { vec![c] };
            shown
        })
        .collect()
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

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn terminal_escape_sequences_from_the_device_are_shown_not_obeyed() {
        assert_eq!(
            lines_of(b"ok\x1b[2J\x1b]0;owned\x07 done\tx\x7f"),
            ["ok\\u{1b}[2J\\u{1b}]0;owned\\u{7} done\tx\\u{7f}"]
        );
    }
}
