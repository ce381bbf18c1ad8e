//! Progress bars on stderr, shown only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: no progress bars, no notes.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A note on stderr (what was written, what is resumed), unless `--quiet`.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::progress::quiet() {
            eprintln!($($arg)*);
        }
    };
}

/// A bar of `len` steps, hidden when stderr is not a terminal (pipes, CI logs), with `--quiet`, or for a single
/// step.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if len < 2 || quiet() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}").expect("valid template");
    ProgressBar::new(len)
        .with_style(style.progress_chars("=> "))
        .with_message(what.to_string())
}

/// A counter for work of unknown length (a streamed run), hidden when stderr is not a terminal or with
/// `--quiet`.
pub fn spinner(what: &str) -> ProgressBar {
    if quiet() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {msg} {pos} {elapsed}").expect("valid template");
    ProgressBar::new_spinner()
        .with_style(style)
        .with_message(what.to_string())
}
