//! The cursor that every layout in [`crate::wire`] is read and written with: the payer packet,
//! the issuer's answer, and the secret and answer bodies sealed inside them. A [`Reader`] takes
//! the next n bytes of its input, a [`Writer`] puts the next n bytes of its output, and each
//! field type says once, in its [`Codec`] impl, how many bytes it takes and how they look. A
//! field's offset is the sum of the lengths of the fields before it, so no offset is written
//! down anywhere, and a layout's size is the sum of its fields' `ENCODED_LEN`.
//!
//! The shape follows rustls' `msgs/codec.rs`. Unlike TLS, every field here has a fixed length,
//! so each type also states that length as a constant the message sizes are summed from.

use crate::wire::WireError;

/// Reads one `T` that must fill `bytes` exactly, as the decoders of whole messages do.
///
/// A wrong length is [`WireError::Length`], checked first so that a short or long message gets
/// the error that names its expected size. After the read, bytes left over are an error too:
/// the paired check that the layout and `T::ENCODED_LEN` agree.
pub(crate) fn read_exact<T: Codec>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() != T::ENCODED_LEN {
        return Err(WireError::Length { what, expected: T::ENCODED_LEN, actual: bytes.len() });
    }
    let mut reader = Reader::new(what, bytes);
    let value = T::read_from(&mut reader)?;
    reader.finish()?;
    Ok(value)
}

/// Writes `value` into `out`, which must be exactly `T::ENCODED_LEN` long: checked when the
/// call is compiled, so a caller cannot hand in a buffer of another size.
pub(crate) fn encode_into<T: Codec, const N: usize>(value: &T, out: &mut [u8; N]) {
    const { assert!(N == T::ENCODED_LEN, "the output buffer must be exactly the encoded length") };
    let mut writer = Writer::new(out);
    value.write_to(&mut writer);
    writer.finish();
}

/// A field type with a fixed-length wire form: how many bytes it takes, how it is written and
/// how it is read back.
///
/// `write_to` puts exactly `ENCODED_LEN` bytes, and a successful `read_from` takes exactly
/// `ENCODED_LEN` bytes. The leaf impls take and put their bytes as `[u8; ENCODED_LEN]` arrays,
/// so the compiler holds each constant to the type it converts; composite impls sum the
/// constants of their fields in the order they write them.
pub(crate) trait Codec: Sized {
    /// Bytes this type always takes on the wire.
    const ENCODED_LEN: usize;

    /// Appends the wire form at the writer's cursor.
    fn write_to(&self, writer: &mut Writer<'_>);

    /// Parses the wire form at the reader's cursor. Bad bytes are an error value, never a panic.
    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError>;
}

/// A cursor over bytes received from a peer: each `take` hands out the next bytes and moves
/// past them. Asking for more than is left is an error, so no read can index out of bounds.
/// No Debug: it may hold a decrypted secret.
pub(crate) struct Reader<'a> {
    /// What is being read ("payer packet", "answer", ...), for the errors.
    what: &'static str,
    bytes: &'a [u8],
    /// Offset of the next unread byte, never past `bytes.len()`.
    cursor: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the first byte of `bytes`.
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { what, bytes, cursor: 0 }
    }

    /// The next `len` bytes; the cursor moves past them. When fewer are left the result is
    /// [`WireError::Truncated`] and the cursor stays where it was.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let start = self.cursor;
        let taken = start.checked_add(len).and_then(|end| self.bytes.get(start..end));
        match taken {
            Some(taken) => {
                self.cursor = start + len;
                Ok(taken)
            }
            None => Err(WireError::Truncated { what: self.what, needed: len, left: self.left() }),
        }
    }

    /// The next `N` bytes as an array reference: the form the field types convert from.
    pub(crate) fn take_array<const N: usize>(&mut self) -> Result<&'a [u8; N], WireError> {
        let taken = self.take(N)?;
        // `take` returned exactly N bytes, so this conversion succeeds; an error value still
        // beats a panic should that ever change.
        <&[u8; N]>::try_from(taken).map_err(|_| WireError::Truncated { what: self.what, needed: N, left: self.left() })
    }

    /// Bytes not read yet.
    pub(crate) fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.cursor)
    }

    /// Ends the read: bytes after the last field are [`WireError::TrailingBytes`].
    pub(crate) fn finish(self) -> Result<(), WireError> {
        match self.left() {
            0 => Ok(()),
            left => Err(WireError::TrailingBytes { what: self.what, left }),
        }
    }
}

/// A cursor over an output buffer the size of the whole layout: each `put` writes the next bytes
/// and moves past them.
///
/// Writers only ever see our own typed values, never peer input, and every field has a fixed
/// length, so a layout makes the same sequence of puts for every value it encodes. A put that
/// does not fit is therefore a bug in a layout, not in data: it writes nothing and is reported
/// by [`Writer::finish`]. No Debug: it may hold a secret's plaintext.
pub(crate) struct Writer<'a> {
    buffer: &'a mut [u8],
    /// Offset of the next byte to write, never past `buffer.len()`.
    cursor: usize,
    /// A put did not fit the buffer.
    overflowed: bool,
}

impl<'a> Writer<'a> {
    /// A writer at the first byte of `buffer`.
    pub(crate) fn new(buffer: &'a mut [u8]) -> Self {
        Self { buffer, cursor: 0, overflowed: false }
    }

    /// Writes `bytes` at the cursor.
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        if let Some(target) = self.next(bytes.len()) {
            target.copy_from_slice(bytes);
        }
    }

    /// Writes `N` bytes at the cursor: the form the field types convert to, so that the length
    /// a type declares is checked against the array it writes when the impl is compiled.
    pub(crate) fn put_array<const N: usize>(&mut self, bytes: &[u8; N]) {
        self.put(bytes);
    }

    /// Writes `len` zero bytes at the cursor (padding).
    pub(crate) fn put_zeros(&mut self, len: usize) {
        if let Some(target) = self.next(len) {
            target.fill(0);
        }
    }

    /// Ends the write, asserting that the layout filled the buffer exactly.
    ///
    /// Panics on a layout bug only, never on data (see the type's documentation): the sequence
    /// of puts is the same for every value, and the unit tests of every layout run it.
    pub(crate) fn finish(self) {
        assert!(
            !self.overflowed && self.cursor == self.buffer.len(),
            "a wire layout wrote {} of {} bytes{}",
            self.cursor,
            self.buffer.len(),
            if self.overflowed { " and a field did not fit" } else { "" },
        );
    }

    /// The next `len` bytes of the buffer, moving the cursor past them, or `None` (and the
    /// overflow noted) when they do not fit.
    fn next(&mut self, len: usize) -> Option<&mut [u8]> {
        let start = self.cursor;
        match start.checked_add(len).filter(|end| *end <= self.buffer.len()) {
            Some(end) => {
                self.cursor = end;
                self.buffer.get_mut(start..end)
            }
            None => {
                self.overflowed = true;
                None
            }
        }
    }
}

/// Big-endian integers, the byte order of every number on the wire.
macro_rules! big_endian_codec {
    ($($int:ty),*) => {$(
        impl Codec for $int {
            const ENCODED_LEN: usize = size_of::<$int>();

            fn write_to(&self, writer: &mut Writer<'_>) {
                writer.put_array::<{ Self::ENCODED_LEN }>(&self.to_be_bytes());
            }

            fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
                Ok(Self::from_be_bytes(*reader.take_array::<{ Self::ENCODED_LEN }>()?))
            }
        }
    )*};
}

big_endian_codec!(u8, u16, u64, i64);

/// Opaque bytes of a fixed length: IVs, ciphertexts, MACs.
impl<const N: usize> Codec for [u8; N] {
    const ENCODED_LEN: usize = N;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array(self);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(*reader.take_array::<N>()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fmt::Debug;

    use super::*;

    /// Writes `value` with a writer of exactly `T::ENCODED_LEN` bytes (the writer asserts it
    /// filled them), reads it back with [`read_exact`] (which refuses leftovers) and compares.
    /// Returns the bytes for checks of the layout itself.
    pub(crate) fn round_trip<T: Codec + PartialEq + Debug>(value: &T) -> Vec<u8> {
        let mut bytes = vec![0xAA; T::ENCODED_LEN];
        let mut writer = Writer::new(&mut bytes);
        value.write_to(&mut writer);
        writer.finish();
        let back = read_exact::<T>("test value", &bytes).unwrap();
        assert_eq!(&back, value);
        bytes
    }

    #[test]
    fn integers_are_big_endian_and_round_trip() {
        assert_eq!(round_trip(&0x81u8), [0x81]);
        assert_eq!(round_trip(&978u16), [0x03, 0xD2]);
        assert_eq!(round_trip(&0x0102_0304_0506_0708u64), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(round_trip(&-2i64), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]);
        for value in [u64::MIN, u64::MAX] {
            round_trip(&value);
        }
        for value in [i64::MIN, 0, i64::MAX] {
            round_trip(&value);
        }
    }

    #[test]
    fn byte_arrays_round_trip_unchanged() {
        assert_eq!(round_trip(&[1u8, 2, 3]), [1, 2, 3]);
        assert_eq!(round_trip(&[0x5Au8; 16]), [0x5A; 16]);
        assert!(round_trip(&[0u8; 0]).is_empty());
    }

    #[test]
    fn fields_follow_each_other_without_offsets() {
        let mut bytes = [0u8; 11];
        let mut writer = Writer::new(&mut bytes);
        0x01u8.write_to(&mut writer);
        978u16.write_to(&mut writer);
        [7u8; 8].write_to(&mut writer);
        writer.finish();
        assert_eq!(bytes, [0x01, 0x03, 0xD2, 7, 7, 7, 7, 7, 7, 7, 7]);

        let mut reader = Reader::new("test", &bytes);
        assert_eq!(u8::read_from(&mut reader), Ok(0x01));
        assert_eq!(u16::read_from(&mut reader), Ok(978));
        assert_eq!(reader.left(), 8);
        assert_eq!(<[u8; 8]>::read_from(&mut reader), Ok([7; 8]));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn reading_past_the_end_is_an_error_and_leaves_the_cursor() {
        let mut reader = Reader::new("test", &[1, 2, 3]);
        assert_eq!(reader.take(2), Ok(&[1u8, 2][..]));
        assert_eq!(reader.take(2), Err(WireError::Truncated { what: "test", needed: 2, left: 1 }));
        assert_eq!(u16::read_from(&mut reader), Err(WireError::Truncated { what: "test", needed: 2, left: 1 }));
        assert_eq!(reader.take(usize::MAX), Err(WireError::Truncated { what: "test", needed: usize::MAX, left: 1 }));
        assert_eq!(reader.take_array::<1>(), Ok(&[3u8]));
        assert_eq!(reader.left(), 0);
        assert_eq!(
            u8::read_from(&mut Reader::new("empty", &[])),
            Err(WireError::Truncated { what: "empty", needed: 1, left: 0 })
        );
    }

    #[test]
    fn a_reader_not_fully_consumed_is_detected() {
        let mut reader = Reader::new("test", &[1, 2, 3]);
        assert_eq!(u16::read_from(&mut reader), Ok(0x0102));
        assert_eq!(reader.finish(), Err(WireError::TrailingBytes { what: "test", left: 1 }));
    }

    #[test]
    fn read_exact_refuses_any_other_length() {
        assert_eq!(read_exact::<u16>("test", &[0x12, 0x34]), Ok(0x1234));
        for bytes in [&[][..], &[1][..], &[1, 2, 3][..]] {
            assert_eq!(
                read_exact::<u16>("test", bytes),
                Err(WireError::Length { what: "test", expected: 2, actual: bytes.len() })
            );
        }
    }

    #[test]
    fn encode_into_fills_the_buffer() {
        let mut out = [0u8; 8];
        encode_into(&0x1122_3344_5566_7788u64, &mut out);
        assert_eq!(out, [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    }

    #[test]
    fn put_zeros_overwrites() {
        let mut bytes = [0xFFu8; 4];
        let mut writer = Writer::new(&mut bytes);
        writer.put(&[9]);
        writer.put_zeros(2);
        writer.put_array(&[9]);
        writer.finish();
        assert_eq!(bytes, [9, 0, 0, 9]);
    }

    #[test]
    #[should_panic(expected = "a wire layout wrote 1 of 2 bytes")]
    fn a_layout_shorter_than_its_buffer_is_caught() {
        let mut bytes = [0u8; 2];
        let mut writer = Writer::new(&mut bytes);
        writer.put(&[1]);
        writer.finish();
    }

    #[test]
    #[should_panic(expected = "a field did not fit")]
    fn a_layout_longer_than_its_buffer_is_caught() {
        let mut bytes = [0u8; 2];
        let mut writer = Writer::new(&mut bytes);
        writer.put(&[1]);
        writer.put(&[2, 3]);
        writer.finish();
    }

    #[test]
    fn a_put_that_does_not_fit_writes_nothing() {
        let mut bytes = [0u8; 2];
        let mut writer = Writer::new(&mut bytes);
        writer.put(&[1, 2, 3]);
        writer.put_zeros(usize::MAX);
        assert!(writer.overflowed);
        assert_eq!(writer.cursor, 0);
        assert_eq!(writer.buffer, [0, 0]);
    }
}
