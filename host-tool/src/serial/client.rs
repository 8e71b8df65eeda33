//! Request/response over a [`Link`]: framing from the device crate, sequence numbers, timeouts
//! and retries.

use super::link::{Endpoint, Link};
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};
use twinbank::protocol::message::{Request, Response};
use twinbank::protocol::{decode_frame, encode_frame, Envelope, MAX_FRAME};

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The link could not be opened or broke.
    Link(String),
    /// No (valid) answer within the timeout, after every try.
    NoResponse {
        /// Where.
        endpoint: String,
        /// Tries made.
        tries: u32,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Link(e) => f.write_str(e),
            ClientError::NoResponse { endpoint, tries } => {
                write!(
                    f,
                    "no response from device on {endpoint} after {tries} tries"
                )
            }
        }
    }
}

/// A connection to one device.
pub struct Client {
    endpoint: Endpoint,
    link: Option<Box<dyn Link>>,
    seq: u16,
    /// Time to wait for each answer.
    pub timeout: Duration,
    /// Attempts per request (the same sequence number each time: requests are idempotent).
    pub tries: u32,
    rx: Vec<u8>,
    /// Bytes sent and received, for the efficiency figure.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

impl Client {
    /// Opens the endpoint.
    pub fn connect(
        endpoint: Endpoint,
        timeout: Duration,
        tries: u32,
    ) -> Result<Client, ClientError> {
        let mut c = Client {
            endpoint,
            link: None,
            seq: (std::process::id() as u16) | 1,
            timeout,
            tries: tries.max(1),
            rx: Vec::new(),
            bytes_sent: 0,
            bytes_received: 0,
        };
        c.reopen()?;
        Ok(c)
    }

    fn reopen(&mut self) -> Result<(), ClientError> {
        self.link = None;
        let mut link = self
            .endpoint
            .open()
            .map_err(|e| ClientError::Link(format!("cannot open {}: {e}", self.endpoint)))?;
        link.set_read_timeout(Duration::from_millis(50))
            .map_err(|e| ClientError::Link(format!("{}: {e}", self.endpoint)))?;
        // A delimiter first: ends any partial frame the device may hold from an earlier client.
        link.write_all(&[0])
            .map_err(|e| ClientError::Link(format!("{}: {e}", self.endpoint)))?;
        self.link = Some(link);
        self.rx.clear();
        Ok(())
    }

    /// Sends `request` and waits for its answer, retrying on silence or a broken link.
    pub fn call(&mut self, request: &Request<'_>) -> Result<Response, ClientError> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let mut scratch = vec![0u8; MAX_FRAME];
        let mut frame = vec![0u8; MAX_FRAME + 8];
        let n = encode_frame(
            &Envelope {
                seq,
                body: request.clone(),
            },
            &mut scratch,
            &mut frame,
        )
        .map_err(|e| ClientError::Link(format!("cannot encode request: {e}")))?;
        for attempt in 0..self.tries {
            if self.link.is_none() && self.reopen().is_err() {
                std::thread::sleep(self.timeout.min(Duration::from_millis(500)));
                continue;
            }
            let sent = self
                .link
                .as_mut()
                .map(|l| l.write_all(&frame[..n]).and_then(|_| l.flush()));
            if let Some(Err(_)) = sent {
                self.link = None;
                continue;
            }
            self.bytes_sent += n as u64;
            match self.wait_for(seq) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {
                    if attempt + 1 < self.tries {
                        eprintln!("twinbank: no answer from {} yet, retrying", self.endpoint);
                    }
                }
                Err(()) => self.link = None,
            }
        }
        Err(ClientError::NoResponse {
            endpoint: self.endpoint.to_string(),
            tries: self.tries,
        })
    }

    /// Reads until a response with `seq` arrives (Some), the timeout passes (None) or the link
    /// breaks (Err). Undecodable frames (text the application prints) and stale answers are
    /// skipped.
    fn wait_for(&mut self, seq: u16) -> Result<Option<Response>, ()> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 4096];
        loop {
            while let Some(end) = self.rx.iter().position(|&b| b == 0) {
                let mut frame: Vec<u8> = self.rx.drain(..=end).collect();
                frame.pop();
                if frame.is_empty() {
                    continue;
                }
                if let Ok(env) = decode_frame::<Envelope<Response>>(&mut frame) {
                    if env.seq == seq {
                        return Ok(Some(env.body));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let Some(link) = self.link.as_mut() else {
                return Err(());
            };
            match link.read(&mut buf) {
                Ok(0) => return Err(()),
                Ok(k) => {
                    self.bytes_received += k as u64;
                    self.rx.extend_from_slice(&buf[..k]);
                    if self.rx.len() > 64 * 1024 {
                        self.rx.clear();
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(()),
            }
        }
    }
}
