//! Output files, written atomically: each goes to a temporary file in its directory first, and
//! only when every output of a command is complete are they renamed into place. A failure leaves
//! neither a partial file nor a complete one from an earlier step of the same command.

use crate::CliError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The outputs of one command, staged as temporary files until [`Outputs::commit`].
#[derive(Debug, Default)]
pub struct Outputs {
    staged: Vec<(PathBuf, PathBuf)>,
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn cannot_write(path: &Path, e: std::io::Error) -> CliError {
    CliError::input(format!("{}: cannot write: {e}", path.display()))
}

fn write_temp(temp: &Path, data: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(temp)?;
    f.write_all(data)?;
    f.sync_all()
}

impl Outputs {
    /// No outputs yet.
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// Writes `data` to a temporary file next to `path`.
    pub fn stage(&mut self, path: &Path, data: &[u8]) -> Result<(), CliError> {
        let temp = temp_path(path);
        if let Err(e) = write_temp(&temp, data, None) {
            let _ = std::fs::remove_file(&temp);
            return Err(cannot_write(path, e));
        }
        self.staged.push((temp, path.to_path_buf()));
        Ok(())
    }

    /// Renames every staged file into place. Should one rename fail, the outputs already renamed
    /// by this commit are removed again.
    pub fn commit(mut self) -> Result<(), CliError> {
        let staged = std::mem::take(&mut self.staged);
        let mut done: Vec<PathBuf> = Vec::new();
        for (i, (temp, path)) in staged.iter().enumerate() {
            if let Err(e) = std::fs::rename(temp, path) {
                for (t, _) in &staged[i..] {
                    let _ = std::fs::remove_file(t);
                }
                for p in &done {
                    let _ = std::fs::remove_file(p);
                }
                return Err(cannot_write(path, e));
            }
            done.push(path.clone());
        }
        Ok(())
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        for (temp, _) in &self.staged {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Writes one file atomically.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), CliError> {
    let mut o = Outputs::new();
    o.stage(path, data)?;
    o.commit()
}

/// Writes a private key atomically with mode 0600 (set before any byte is written). Without
/// `force` an existing file is never replaced (checked atomically: the temporary file is linked
/// to the name, which fails when the name exists).
pub fn write_private(path: &Path, data: &[u8], force: bool) -> Result<(), CliError> {
    let temp = temp_path(path);
    let _ = std::fs::remove_file(&temp);
    if let Err(e) = write_temp(&temp, data, Some(0o600)) {
        let _ = std::fs::remove_file(&temp);
        return Err(CliError::input(format!(
            "{}: cannot create: {e}",
            path.display()
        )));
    }
    let placed = if force {
        std::fs::rename(&temp, path)
    } else {
        std::fs::hard_link(&temp, path)
    };
    let _ = std::fs::remove_file(&temp);
    placed.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::input(format!(
                "{}: already exists; refusing to overwrite a key (use --force)",
                path.display()
            ))
        } else {
            CliError::input(format!("{}: cannot create: {e}", path.display()))
        }
    })
}
