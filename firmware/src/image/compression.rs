//! How a component travels in the transport file: raw, or as a heatshrink stream.
//!
//! A device decodes the window/lookahead pairs in [`HeatshrinkParams::SUPPORTED`]; the decoder
//! (`super::heatshrink`) needs a window of `2^window` bytes, at most [`MAX_WINDOW`]. Encoding
//! (hosts only) uses the `heatshrink-lib` crate, whose output is byte for byte the reference C
//! encoder's.

use core::fmt;
use serde::{Deserialize, Serialize};

/// The largest window of any supported pair, in bytes: the window buffer a device reserves.
pub const MAX_WINDOW: usize = 1 << 12;

/// Window and lookahead (both as powers of two) of a heatshrink stream.
///
/// Only pairs in [`HeatshrinkParams::SUPPORTED`] can be built, so a manifest that parses always
/// names a decoder the device has.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "(u8, u8)", into = "(u8, u8)")]
pub struct HeatshrinkParams {
    pair: Pair,
}

/// How a component's bytes are carried in the transport file.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Compression {
    /// The payload is the installed bytes.
    Raw,
    /// The payload is a heatshrink stream of the installed bytes.
    Heatshrink(HeatshrinkParams),
}

/// A heatshrink window/lookahead pair this build cannot decode.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("heatshrink window {0} / lookahead {1} is not supported (supported: {list})", list = SupportedList)]
pub struct UnsupportedParams(pub u8, pub u8);

/// Displays [`HeatshrinkParams::SUPPORTED`] as `w8/l4, ...`.
struct SupportedList;

impl fmt::Display for SupportedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in HeatshrinkParams::SUPPORTED.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}/{}", p.window(), p.lookahead())?;
        }
        Ok(())
    }
}

impl HeatshrinkParams {
    /// The pair `imager fuse` uses unless told otherwise; `docs/benchmarks.md` says why.
    pub const DEFAULT: HeatshrinkParams = HeatshrinkParams { pair: Pair::W11L4 };

    /// A supported pair, or why not.
    pub fn new(window: u8, lookahead: u8) -> Result<Self, UnsupportedParams> {
        Self::SUPPORTED
            .iter()
            .copied()
            .find(|p| p.window() == window && p.lookahead() == lookahead)
            .ok_or(UnsupportedParams(window, lookahead))
    }

    /// Window size as a power of two (the window is `2^window` bytes).
    pub fn window(self) -> u8 {
        self.pair.window()
    }

    /// Lookahead as a power of two (back-references copy up to `2^lookahead` bytes).
    pub fn lookahead(self) -> u8 {
        self.pair.lookahead()
    }

    /// Decoder RAM for this pair, in bytes: the window plus the decoder's state (under 32
    /// bytes on a 32-bit device).
    pub fn decoder_ram(self) -> usize {
        (1usize << self.window()) + 32
    }
}

impl TryFrom<(u8, u8)> for HeatshrinkParams {
    type Error = UnsupportedParams;
    fn try_from((window, lookahead): (u8, u8)) -> Result<Self, Self::Error> {
        Self::new(window, lookahead)
    }
}

impl From<HeatshrinkParams> for (u8, u8) {
    fn from(p: HeatshrinkParams) -> Self {
        (p.window(), p.lookahead())
    }
}

/// Declares the supported pairs once; generates the list and the encoder dispatch for them.
macro_rules! supported_params {
    ($($variant:ident = ($w:literal, $l:literal)),+ $(,)?) => {
        /// The supported pairs, one variant each, so an unsupported pair cannot exist.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        enum Pair {
            $($variant),+
        }

        impl Pair {
            fn window(self) -> u8 {
                match self { $(Pair::$variant => $w),+ }
            }

            fn lookahead(self) -> u8 {
                match self { $(Pair::$variant => $l),+ }
            }
        }

        impl HeatshrinkParams {
            /// Every window/lookahead pair this build can decode, smallest window first.
            pub const SUPPORTED: &[HeatshrinkParams] = &[$(HeatshrinkParams { pair: Pair::$variant }),+];
        }

        /// Compresses `data` as one heatshrink stream with `params`.
        #[cfg(feature = "std")]
        pub fn compress(params: HeatshrinkParams, data: &[u8]) -> alloc::vec::Vec<u8> {
            match params.pair {
                $(Pair::$variant => encode::<$w, $l, { 2 << $w }>(data)),+
            }
        }
    };
}

supported_params! {
    W8L4 = (8, 4),
    W10L4 = (10, 4),
    W11L4 = (11, 4),
    W12L5 = (12, 5),
}

#[cfg(feature = "std")]
fn encode<const W: usize, const L: usize, const BUF: usize>(data: &[u8]) -> alloc::vec::Vec<u8> {
    use heatshrink::encoder::HeatshrinkEncoder;
    use heatshrink::{Poll, SinkError};
    let mut encoder = alloc::boxed::Box::new(HeatshrinkEncoder::<W, L, BUF>::new());
    let mut out = alloc::vec::Vec::with_capacity(data.len() / 2 + 64);
    let mut buf = [0u8; 4096];
    let mut rest = data;
    loop {
        if !rest.is_empty() {
            match encoder.sink(rest) {
                Ok(n) => rest = &rest[n..],
                Err(SinkError::Full) => {}
                Err(SinkError::Misuse) => unreachable!("sink is only called before finish"),
            }
        }
        if rest.is_empty() {
            encoder.finish();
        }
        match encoder.poll(&mut buf) {
            Ok(Poll::More(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Poll::Empty(n)) => {
                out.extend_from_slice(&buf[..n]);
                if rest.is_empty() && encoder.finish() == heatshrink::Finish::Done {
                    return out;
                }
            }
            Err(_) => unreachable!("poll is given a non-empty buffer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_window_covers_every_pair() {
        assert!(HeatshrinkParams::SUPPORTED.iter().all(|p| 1usize << p.window() <= MAX_WINDOW));
        assert!(HeatshrinkParams::SUPPORTED.iter().any(|p| 1usize << p.window() == MAX_WINDOW));
    }

    #[test]
    fn only_supported_pairs_exist() {
        assert!(HeatshrinkParams::new(11, 4).is_ok());
        let err = HeatshrinkParams::new(13, 4).unwrap_err();
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            err.to_string(),
            "heatshrink window 13 / lookahead 4 is not supported (supported: 8/4, 10/4, 11/4, 12/5)"
        );
    }
}
