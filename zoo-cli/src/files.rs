//! Output files: written whole or not at all (`weights::fsutil::write_atomic`), never over the command's
//! own input.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Refuses `out` when it is the same file as `input` (`zoo convert X --out X`), links included.
pub fn refuse_overwriting_input(input: &Path, out: &Path) -> Result<()> {
    if weights::fsutil::same_file(input, out).unwrap_or(false) {
        bail!("--out {} is the input file itself: choose another path", out.display());
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically, with the user's umask.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    weights::fsutil::write_bytes_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
