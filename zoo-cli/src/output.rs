//! Standard output that reports failure: a full disk (`> /dev/full`) or a closed stdout is an error and a
//! non-zero exit, never a panic and never output silently lost.

use std::fmt::Arguments;
use std::io::Write;

use anyhow::{bail, Result};

/// Writes one line to standard output (`outln!` is the macro form).
pub fn line(args: Arguments) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}").and_then(|()| out.flush()).map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}"))
}

/// `println!` that returns an error instead of panicking when standard output cannot be written.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// Fails when standard output is closed (`zoo ... >&-`): Rust's standard library drops writes to a closed
/// stdout without an error, which would lose every result while exiting 0.
pub fn ensure_stdout_open() -> Result<()> {
    #[cfg(unix)]
    {
        // SAFETY: F_GETFD on a descriptor number only reads the descriptor table.
        if unsafe { libc::fcntl(1, libc::F_GETFD) } == -1 {
            bail!("standard output is closed: results would be lost (redirect it to a file or /dev/null instead)");
        }
    }
    Ok(())
}
