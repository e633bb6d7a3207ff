//! Reading a manifest from its postcard bytes in place, without serde.
//!
//! Serde hands a decoded value back by value through several layers; on a Cortex-M0 that cost
//! kilobytes of stack for a 660-byte manifest. This reader fills a `Manifest` where it lies and
//! accepts only the canonical encoding (shortest varints, nothing after the end), which is what
//! postcard's encoder writes: so one manifest has exactly one byte string, and one id.
//! Postcard wire format: <https://postcard.jamesmunns.com/wire-format>. Encoding stays with
//! serde and postcard (`Manifest::encode`); tests check the two agree.

use postcard::Error;

use super::ManifestError;

fn malformed(e: Error) -> ManifestError {
    ManifestError::Malformed(e)
}

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub(super) fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub(super) fn byte(&mut self) -> Result<u8, ManifestError> {
        let b = *self.bytes.get(self.at).ok_or(malformed(Error::DeserializeUnexpectedEnd))?;
        self.at += 1;
        Ok(b)
    }

    pub(super) fn take<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let end = self.at.checked_add(N).ok_or(malformed(Error::DeserializeUnexpectedEnd))?;
        let bytes =
            self.bytes.get(self.at..end).ok_or(malformed(Error::DeserializeUnexpectedEnd))?;
        self.at += N;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// An unsigned LEB128 varint of at most `max_bits` bits, in its shortest form.
    fn varint(&mut self, max_bits: u32) -> Result<u64, ManifestError> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7F);
            if shift > 0 && b == 0 {
                // A redundant zero byte: a longer encoding of a shorter number.
                return Err(ManifestError::NotCanonical);
            }
            if shift >= max_bits || (bits << shift) >> shift != bits {
                return Err(malformed(Error::DeserializeBadVarint));
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if max_bits < 64 && value >> max_bits != 0 {
            return Err(malformed(Error::DeserializeBadVarint));
        }
        Ok(value)
    }

    pub(super) fn u16(&mut self) -> Result<u16, ManifestError> {
        Ok(self.varint(16)? as u16)
    }

    pub(super) fn u32(&mut self) -> Result<u32, ManifestError> {
        Ok(self.varint(32)? as u32)
    }

    /// An enum variant index.
    pub(super) fn variant(&mut self) -> Result<u32, ManifestError> {
        self.u32()
    }

    /// A sequence or string length.
    pub(super) fn len(&mut self) -> Result<usize, ManifestError> {
        Ok(self.varint(32)? as usize)
    }

    /// A UTF-8 string of at most `N` bytes, into `out`.
    pub(super) fn string<const N: usize>(
        &mut self,
        out: &mut heapless::String<N>,
    ) -> Result<(), ManifestError> {
        let len = self.len()?;
        let end = self.at.checked_add(len).ok_or(malformed(Error::DeserializeUnexpectedEnd))?;
        let bytes =
            self.bytes.get(self.at..end).ok_or(malformed(Error::DeserializeUnexpectedEnd))?;
        let text = core::str::from_utf8(bytes).map_err(|_| malformed(Error::DeserializeBadUtf8))?;
        out.clear();
        out.push_str(text).map_err(|_| malformed(Error::DeserializeBadEncoding))?;
        self.at += len;
        Ok(())
    }
}
