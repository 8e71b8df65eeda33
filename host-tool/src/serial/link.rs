//! The byte link to a device: a serial port (real or a pseudo-terminal) or a TCP socket.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A bidirectional byte stream with a read timeout.
pub trait Link: Read + Write {
    /// Sets how long one `read` may block.
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl Link for TcpStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        TcpStream::set_read_timeout(self, Some(timeout))
    }
}

/// A serial port opened with the `serialport` crate.
pub struct SerialLink(pub Box<dyn serialport::SerialPort>);

impl Read for SerialLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for SerialLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Link for SerialLink {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.0.set_timeout(timeout).map_err(io::Error::other)
    }
}

/// Where the device is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A serial device path (e.g. /dev/ttyUSB0, or the /dev/pts/N that `cargo xtask qemu` prints).
    Port {
        /// Path.
        path: String,
        /// Baud rate.
        baud: u32,
    },
    /// A TCP address (HOST:PORT) whose peer is the device's UART.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Port { path, .. } => f.write_str(path),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl Endpoint {
    /// Opens the link.
    pub fn open(&self) -> io::Result<Box<dyn Link>> {
        match self {
            Endpoint::Port { path, baud } => {
                let port = serialport::new(path, *baud)
                    .timeout(Duration::from_millis(100))
                    .open()
                    .map_err(io::Error::other)?;
                Ok(Box::new(SerialLink(port)))
            }
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                Ok(Box::new(s))
            }
        }
    }
}
