//! CBOR bodies with `minicbor` (no allocation): reading the fields of a request map, and the
//! encoder type responses are written with.
//!
//! Requests are maps with text keys; unknown keys are skipped (as Zephyr does), a value of the
//! wrong type refuses the request (`EINVAL`). Definite and indefinite maps are read; values are
//! borrowed from the packet. Nothing recurses: the walk is a loop over the top-level map and
//! `minicbor`'s `skip` is iterative without the `alloc` feature.

use super::error::{MgmtErr, Refusal};
use minicbor::data::Type;
use minicbor::encode::write::{Cursor, EndOfSlice};
use minicbor::{Decoder, Encoder};

/// The encoder responses are written with (into the response buffer).
pub type Body<'a> = Encoder<Cursor<&'a mut [u8]>>;

/// An encoding error: the response does not fit its buffer.
pub type EncodeError = minicbor::encode::Error<EndOfSlice>;

/// A body that is not the CBOR map the command expects.
pub const MALFORMED: Refusal = Refusal::mgmt(
    MgmtErr::Inval,
    "request body is not the CBOR map the command expects",
);
/// A response that does not fit the buffer.
pub const TOO_LARGE: Refusal = Refusal::mgmt(MgmtErr::MsgSize, "response too large");

impl From<EncodeError> for Refusal {
    fn from(_: EncodeError) -> Refusal {
        TOO_LARGE
    }
}

impl From<minicbor::decode::Error> for Refusal {
    fn from(_: minicbor::decode::Error) -> Refusal {
        MALFORMED
    }
}

/// Calls `field(key, decoder)` for each text key of the request map `body` (an empty body is an
/// empty map). `field` decodes the value and returns true, or returns false to have it skipped.
pub fn fields<'b>(
    body: &'b [u8],
    mut field: impl FnMut(&'b str, &mut Decoder<'b>) -> Result<bool, Refusal>,
) -> Result<(), Refusal> {
    if body.is_empty() {
        return Ok(());
    }
    let mut d = Decoder::new(body);
    let len = d.map()?;
    let mut seen = 0u64;
    loop {
        match len {
            Some(n) if seen == n => break,
            None if d.datatype()? == Type::Break => break,
            _ => {}
        }
        if d.datatype()? == Type::String {
            let key = d.str()?;
            if !field(key, &mut d)? {
                d.skip()?;
            }
        } else {
            d.skip()?;
            d.skip()?;
        }
        seen += 1;
    }
    Ok(())
}

/// An unsigned integer that fits u32.
pub fn u32_value(d: &mut Decoder<'_>) -> Result<u32, Refusal> {
    u32::try_from(d.u64()?).map_err(|_| MALFORMED)
}

/// A boolean, also accepted as the integers 0 and 1 (smpclient sends `force` that way).
pub fn flag(d: &mut Decoder<'_>) -> Result<bool, Refusal> {
    match d.datatype()? {
        Type::Bool => Ok(d.bool()?),
        _ => match d.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(MALFORMED),
        },
    }
}

/// Writes `f`'s response body into `buf`; returns its length.
pub fn write_body(
    buf: &mut [u8],
    f: impl FnOnce(&mut Body<'_>) -> Result<(), Refusal>,
) -> Result<usize, Refusal> {
    let mut e = Encoder::new(Cursor::new(buf));
    f(&mut e)?;
    Ok(e.into_writer().position())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_definite_and_indefinite_maps_and_skips_unknown_keys() {
        // {"off": 5, "x": [1, {"y": 2}], 7: 8, "data": h'0102'}
        let definite = [
            0xa4, 0x63, b'o', b'f', b'f', 0x05, 0x61, b'x', 0x82, 0x01, 0xa1, 0x61, b'y', 0x02,
            0x07, 0x08, 0x64, b'd', b'a', b't', b'a', 0x42, 1, 2,
        ];
        let mut indefinite = definite;
        indefinite[0] = 0xbf;
        let mut indefinite = std::vec::Vec::from(indefinite);
        indefinite.push(0xff);
        for body in [&definite[..], &indefinite[..]] {
            let (mut off, mut data) = (None, None);
            fields(body, |k, d| match k {
                "off" => {
                    off = Some(u32_value(d)?);
                    Ok(true)
                }
                "data" => {
                    data = Some(d.bytes()?);
                    Ok(true)
                }
                _ => Ok(false),
            })
            .unwrap();
            assert_eq!((off, data), (Some(5), Some(&[1u8, 2][..])));
        }
        assert!(fields(&[0xa1, 0x63, b'o'], |_, _| Ok(false)).is_err());
        assert!(fields(&[0x01], |_, _| Ok(false)).is_err());
        assert!(fields(&[], |_, _| Ok(false)).is_ok());
    }
}
