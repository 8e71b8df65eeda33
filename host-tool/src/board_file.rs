//! The board description a command uses: `--board FILE` (or `TWINBANK_BOARD`), else
//! `twinbank.toml` in the current directory. A file named explicitly is always read and its
//! errors reported, even when the command line gives every value it would supply.

use crate::CliError;
use clap::Args;
use std::path::{Path, PathBuf};
use twinbank::board::{BoardDescription, BoardError};

/// The file looked for when `--board` is not given.
pub const DEFAULT_BOARD: &str = "twinbank.toml";

/// The `--board` option, shared by every subcommand that reads a board description.
#[derive(Args, Debug, Clone, Default)]
pub struct BoardArg {
    /// Board description file (flash layout, header size, device ids). Default: twinbank.toml in
    /// the current directory.
    #[arg(long, value_name = "FILE", env = "TWINBANK_BOARD")]
    pub board: Option<PathBuf>,
}

/// A loaded board description and where it came from.
#[derive(Debug, Clone)]
pub struct Board {
    /// The file.
    pub path: PathBuf,
    /// Its contents.
    pub desc: BoardDescription,
}

impl Board {
    /// An error about this board's contents, naming the file.
    pub fn error(&self, e: impl std::fmt::Display) -> CliError {
        CliError::input(format!("board description {}: {e}", self.path.display()))
    }

    /// The board's validated layout.
    pub fn layout(&self) -> Result<twinbank::Layout, CliError> {
        self.desc.layout().map_err(|e| self.error(e))
    }

    /// The board's device ids.
    pub fn ids(&self) -> Result<twinbank::DeviceIds, CliError> {
        self.desc.ids().map_err(|e| self.error(e))
    }
}

/// Loads and checks a board description; errors name the file.
pub fn load_board(path: &Path) -> Result<BoardDescription, CliError> {
    BoardDescription::load(path).map_err(|e| match e {
        BoardError::Io(_) | BoardError::Syntax(_) => {
            CliError::input(format!("board description {e}"))
        }
        other => CliError::input(format!("board description {}: {other}", path.display())),
    })
}

impl BoardArg {
    /// The board for a command that can do without one: a file given explicitly is always read
    /// (its errors reported); the default file is read when it exists.
    pub fn load(&self) -> Result<Option<Board>, CliError> {
        let path = match &self.board {
            Some(p) => p.clone(),
            None if Path::new(DEFAULT_BOARD).exists() => PathBuf::from(DEFAULT_BOARD),
            None => return Ok(None),
        };
        let desc = load_board(&path)?;
        Ok(Some(Board { path, desc }))
    }

    /// The board for a command (or an option) that needs one; `why` says what for.
    pub fn require(&self, why: &str) -> Result<Board, CliError> {
        self.load()?.ok_or_else(|| missing(why))
    }
}

/// The one hint every subcommand gives when it needs a board description and finds none.
pub fn missing(why: &str) -> CliError {
    CliError::input(format!(
        "no board description: {DEFAULT_BOARD} is not in the current directory; give --board FILE \
         (or set TWINBANK_BOARD) — needed for {why}"
    ))
}
