//! The 8-byte SMP header (big endian).
//!
//! ```text
//! byte 0   bits 3-4: version (0 = SMP v1, 1 = SMP v2), bits 0-2: op (0 read, 1 read response,
//!          2 write, 3 write response)
//! byte 1   flags
//! byte 2-3 body length
//! byte 4-5 group
//! byte 6   sequence number
//! byte 7   command
//! ```

/// Size of the header.
pub const HEADER_LEN: usize = 8;

const OP_MASK: u8 = 0b111;
const VERSION_SHIFT: u8 = 3;
const VERSION_MASK: u8 = 0b11;

/// The operation of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A read request.
    Read,
    /// The response to a read.
    ReadResponse,
    /// A write request.
    Write,
    /// The response to a write.
    WriteResponse,
}

impl Op {
    fn from_bits(b: u8) -> Option<Op> {
        match b {
            0 => Some(Op::Read),
            1 => Some(Op::ReadResponse),
            2 => Some(Op::Write),
            3 => Some(Op::WriteResponse),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Op::Read => 0,
            Op::ReadResponse => 1,
            Op::Write => 2,
            Op::WriteResponse => 3,
        }
    }

    /// The response op of a request op (`None` for a response).
    pub fn response(self) -> Option<Op> {
        match self {
            Op::Read => Some(Op::ReadResponse),
            Op::Write => Some(Op::WriteResponse),
            Op::ReadResponse | Op::WriteResponse => None,
        }
    }
}

/// The SMP version of a packet: it decides how errors are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SMP v1 (version bits 0): errors as `{rc}` (MCUmgr error codes), with `rsn` text.
    V1,
    /// SMP v2 (version bits 1): group errors as `{err: {group, rc}}`.
    V2,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Operation.
    pub op: Op,
    /// Version bits as sent (0 = v1, 1 = v2, more: a newer version than the device speaks).
    pub version_bits: u8,
    /// Flags (0).
    pub flags: u8,
    /// Body length.
    pub len: u16,
    /// Management group.
    pub group: u16,
    /// Sequence number, echoed in the response.
    pub seq: u8,
    /// Command in the group.
    pub cmd: u8,
}

impl Header {
    /// Decodes the header at the start of `packet` (`None` when shorter than a header or with
    /// an unknown op).
    pub fn parse(packet: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = packet.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            op: Op::from_bits(b[0] & OP_MASK)?,
            version_bits: (b[0] >> VERSION_SHIFT) & VERSION_MASK,
            flags: b[1],
            len: u16::from_be_bytes([b[2], b[3]]),
            group: u16::from_be_bytes([b[4], b[5]]),
            seq: b[6],
            cmd: b[7],
        })
    }

    /// The version, when the device speaks it.
    pub fn version(&self) -> Option<Version> {
        match self.version_bits {
            0 => Some(Version::V1),
            1 => Some(Version::V2),
            _ => None,
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [l0, l1] = self.len.to_be_bytes();
        let [g0, g1] = self.group.to_be_bytes();
        [
            ((self.version_bits & VERSION_MASK) << VERSION_SHIFT) | self.op.bits(),
            self.flags,
            l0,
            l1,
            g0,
            g1,
            self.seq,
            self.cmd,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_versions() {
        // An smpclient v2 image state read: op 0, version 1, group 1, seq 7, cmd 0.
        let b = [0x08, 0, 0, 1, 0, 1, 7, 0];
        let h = Header::parse(&b).unwrap();
        assert_eq!(
            (h.op, h.version(), h.len, h.group, h.seq, h.cmd),
            (Op::Read, Some(Version::V2), 1, 1, 7, 0)
        );
        assert_eq!(h.to_bytes(), b);
        assert_eq!(
            Header::parse(&[0x02, 0, 0, 0, 0, 0, 0, 0])
                .unwrap()
                .version(),
            Some(Version::V1)
        );
        assert_eq!(
            Header::parse(&[0x10, 0, 0, 0, 0, 0, 0, 0])
                .unwrap()
                .version(),
            None
        );
        assert!(Header::parse(&[0x04, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(Header::parse(&[0; 7]).is_none());
    }
}
