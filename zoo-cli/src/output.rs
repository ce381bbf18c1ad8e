//! Standard output that reports failure: a full disk (`> /dev/full`) or a closed stdout is an error and a
//! non-zero exit, never a panic and never output silently lost.

use std::fmt::Arguments;
use std::io::Write;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

/// Writes one line to standard output (`outln!` is the macro form).
pub fn line(args: Arguments) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}")
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}"))
}

/// `println!` that returns an error instead of panicking when standard output cannot be written.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// Whether descriptor 1 was closed when the process started, recorded before Rust's runtime reopens a closed
/// standard descriptor on `/dev/null` (after which every write would succeed and the results be lost).
static STDOUT_CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static RECORD_STDOUT: extern "C" fn() = record_stdout;

#[cfg(target_os = "linux")]
extern "C" fn record_stdout() {
    // SAFETY: F_GETFD on a descriptor number only reads the descriptor table.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } == -1 {
        STDOUT_CLOSED_AT_START.store(true, Ordering::Relaxed);
    }
}

/// Fails when standard output was closed (`zoo ... >&-`): the results would be lost while zoo exits 0.
pub fn ensure_stdout_open() -> Result<()> {
    #[cfg(unix)]
    {
        // SAFETY: F_GETFD on a descriptor number only reads the descriptor table.
        let closed_now = unsafe { libc::fcntl(1, libc::F_GETFD) } == -1;
        if closed_now || STDOUT_CLOSED_AT_START.load(Ordering::Relaxed) {
            bail!("standard output is closed: results would be lost (redirect it to a file or /dev/null instead)");
        }
    }
    Ok(())
}
