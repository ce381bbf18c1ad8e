//! Output files: written whole or not at all, never over the command's own input.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Refuses `out` when it is the same file as `input` (`zoo convert X --out X`).
pub fn refuse_overwriting_input(input: &Path, out: &Path) -> Result<()> {
    if same_file(input, out) {
        bail!("--out {} is the input file itself: choose another path", out.display());
    }
    Ok(())
}

/// Whether two paths name the same existing file (through links too).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes `path` through `write` (which writes a whole file at the path it is given) into a temporary
/// file beside it, renamed over `path` only once complete.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".zoo-").tempfile_in(dir).with_context(|| format!("cannot write {}", path.display()))?;
    write(tmp.path()).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
