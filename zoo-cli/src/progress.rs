//! Progress bars on stderr, shown only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps, hidden when stderr is not a terminal (pipes, CI logs) or for a single step.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if len < 2 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}").expect("valid template");
    ProgressBar::new(len)
        .with_style(style.progress_chars("=> "))
        .with_message(what.to_string())
}

/// A counter for work of unknown length (a streamed run), hidden when stderr is not a terminal.
pub fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {msg} {pos} {elapsed}").expect("valid template");
    ProgressBar::new_spinner()
        .with_style(style)
        .with_message(what.to_string())
}
