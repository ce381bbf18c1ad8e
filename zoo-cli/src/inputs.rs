//! The inputs of `zoo run`: files as given, glob patterns (`'photos/*.jpg'`, for shells that did not expand
//! them), then the lines of a list file (`--files-from`, `-` for standard input), each read lazily;
//! directories walked lazily by the library's guarded walker ([`resnet::data::walk`]: symlink loops end,
//! FIFOs and devices are never opened, unreadable parts are reported), in order.

use std::io::BufRead;
use std::path::{Path, PathBuf};

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

/// A list of inputs, one per line, read as the walk goes.
pub struct ListFile {
    /// For messages: the file's path, or `standard input`.
    pub name: String,
    /// The lines.
    pub reader: Box<dyn BufRead + Send>,
    /// Lines read so far.
    pub line: usize,
}

impl ListFile {
    /// `--files-from PATH`, or standard input for `-`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Self {
                name: "standard input".into(),
                reader: Box::new(std::io::BufReader::new(std::io::stdin())),
                line: 0,
            });
        }
        let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("--files-from {}: {e}", path.display()))?;
        Ok(Self {
            name: path.display().to_string(),
            reader: Box::new(std::io::BufReader::new(file)),
            line: 0,
        })
    }
}

/// A lazy walk over the command line's inputs.
pub struct Inputs {
    /// The inputs still to start, in order.
    pending: std::vec::IntoIter<PathBuf>,
    /// The glob pattern being expanded.
    glob: Option<(String, glob::Paths, usize)>,
    /// The list file, read after the arguments.
    list: Option<ListFile>,
    /// The directory being walked, and how many files it gave so far.
    current: Option<(PathBuf, Walk, usize)>,
}

impl Inputs {
    /// The walk over `inputs`, in order, then over the lines of `list`.
    pub fn new(inputs: &[PathBuf], list: Option<ListFile>) -> Self {
        Self {
            pending: Vec::from(inputs).into_iter(),
            glob: None,
            list,
            current: None,
        }
    }

    /// The next input to start: an argument, a glob match, or a line of the list file.
    fn next_input(&mut self) -> Option<Result<PathBuf, String>> {
        loop {
            if let Some((pattern, paths, found)) = &mut self.glob {
                match paths.next() {
                    Some(Ok(p)) => {
                        *found += 1;
                        return Some(Ok(p));
                    }
                    Some(Err(e)) => return Some(Err(format!("{pattern}: {e}"))),
                    None => {
                        let (pattern, found) = (pattern.clone(), *found);
                        self.glob = None;
                        if found == 0 {
                            return Some(Err(format!("{pattern}: no file matches")));
                        }
                        continue;
                    }
                }
            }
            if let Some(input) = self.pending.next() {
                let text = input.to_string_lossy();
                let is_pattern = text.contains(['*', '?', '[']) && std::fs::symlink_metadata(&input).is_err();
                if !is_pattern {
                    return Some(Ok(input));
                }
                match glob::glob(&text) {
                    Ok(paths) => self.glob = Some((text.into_owned(), paths, 0)),
                    Err(e) => return Some(Err(format!("{text}: not a valid pattern: {e}"))),
                }
                continue;
            }
            let list = self.list.as_mut()?;
            let mut line = String::new();
            list.line += 1;
            match list.reader.read_line(&mut line) {
                Ok(0) => {
                    self.list = None;
                    return None;
                }
                Ok(_) => {
                    let entry = line.trim_end_matches(['\n', '\r']);
                    if !entry.trim().is_empty() {
                        return Some(Ok(PathBuf::from(entry)));
                    }
                }
                Err(e) => {
                    let msg = format!("{} line {}: cannot read: {e}", list.name, list.line);
                    self.list = None;
                    return Some(Err(msg));
                }
            }
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
            let input = match self.next_input()? {
                Ok(p) => p,
                Err(msg) => return Some(InputEvent::Problem(msg)),
            };
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
