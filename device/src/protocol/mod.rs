//! The serial protocol between an operator's host tool (or a factory line) and a device.
//!
//! ```text
//!  message  = postcard(Envelope { seq, body: Request | Response })
//!  frame    = COBS( message ‖ CRC-32C(message) as u32 LE ) ‖ 0x00
//! ```
//! - COBS makes 0x00 a frame delimiter, so a receiver resynchronises on the next 0x00 after
//!   garbage, a truncated frame or a frame too large for its buffer.
//! - The CRC covers the whole message; a frame that fails it is answered with a
//!   [`FrameError::BadCrc`] error (sequence number 0, since its own cannot be trusted).
//! - Every request carries a sequence number that its response echoes, so a host that retries
//!   never mistakes a late answer for the current one.
//! - Frames are bounded by [`MAX_FRAME`]; the device side uses fixed buffers (no heap).
//!
//! Requests are idempotent where a retry can happen: `UploadBegin` resumes, `UploadChunk` accepts
//! bytes it already has, `Confirm` of a confirmed image is a no-op.

pub mod frame;
pub mod message;
pub mod server;

pub use frame::{decode_frame, encode_frame, FrameDecoder, FrameError};
pub use message::{Envelope, Request, Response, PROTOCOL_VERSION};
pub use server::Server;

/// Largest image bytes carried by one `UploadChunk`. With the framing overhead (≈ 20 bytes) the
/// payload is ≥ 97% of the bytes on the wire.
pub const MAX_CHUNK: usize = 1024;
/// Largest encoded frame (COBS, without the delimiter) either side accepts. A chunk frame of
/// [`MAX_CHUNK`] bytes needs ≈ 1045; the rest is headroom.
pub const MAX_FRAME: usize = 1100;
/// Largest decoded message (postcard + CRC).
pub const MAX_MESSAGE: usize = MAX_FRAME;
