//! The inputs of `zoo run`: files as given, directories walked lazily by the library's guarded walker
//! ([`resnet::data::walk`]: symlink loops end, FIFOs and devices are never opened, unreadable parts are
//! reported), in order.

use std::path::PathBuf;

use resnet::data::walk::{walk, Walk, IMAGE_EXTENSIONS};

/// What the walk yields next.
pub enum InputEvent {
    /// A file to read.
    File(PathBuf),
    /// An input that cannot be (fully) read: reported, and the run exits non-zero.
    Problem(String),
    /// Something skipped that does not make the result incomplete (a second link to a directory).
    Note(String),
}

/// A lazy walk over the command line's inputs.
pub struct Inputs {
    /// The inputs still to start, in order.
    pending: std::vec::IntoIter<PathBuf>,
    /// The directory being walked, and how many files it gave so far.
    current: Option<(PathBuf, Walk, usize)>,
}

impl Inputs {
    /// The walk over `inputs`, in order.
    pub fn new(inputs: &[PathBuf]) -> Self {
        Self {
            pending: Vec::from(inputs).into_iter(),
            current: None,
        }
    }
}

impl Iterator for Inputs {
    type Item = InputEvent;

    fn next(&mut self) -> Option<InputEvent> {
        loop {
            if let Some((dir, w, found)) = &mut self.current {
                match w.next() {
                    Some(Ok(p)) => {
                        *found += 1;
                        return Some(InputEvent::File(p));
                    }
                    Some(Err(warning)) if warning.input_missing() => {
                        return Some(InputEvent::Problem(warning.to_string()))
                    }
                    Some(Err(warning)) => return Some(InputEvent::Note(warning.to_string())),
                    None => {
                        let (dir, found) = (dir.clone(), *found);
                        self.current = None;
                        if found == 0 {
                            return Some(InputEvent::Problem(format!(
                                "{}: the directory contains no images ({})",
                                dir.display(),
                                IMAGE_EXTENSIONS.join(", ")
                            )));
                        }
                    }
                }
                continue;
            }
            let input = self.pending.next()?;
            match std::fs::metadata(&input) {
                Ok(m) if m.is_dir() => self.current = Some((input.clone(), walk(&input), 0)),
                // A file named on the command line is read whatever its extension; the reader refuses
                // anything that is not a regular file.
                Ok(_) => return Some(InputEvent::File(input)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Some(InputEvent::Problem(format!(
                        "{}: no such file or directory",
                        input.display()
                    )))
                }
                Err(e) => return Some(InputEvent::Problem(format!("{}: cannot read: {e}", input.display()))),
            }
        }
    }
}
