//! The inputs of `zoo run` (interim walker): files as given, directories searched recursively and lazily,
//! in sorted order; symlink loops and non-regular files reported instead of followed or read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Image file extensions picked up when an input is a directory (`.npy` only when named directly).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// What the walk yields next.
pub enum InputEvent {
    /// A regular file to read.
    File(PathBuf),
    /// Something the user should hear about (a missing input, an unreadable directory, a FIFO, a loop).
    Problem(String),
}

/// A lazy walk over the command line's inputs.
pub struct Inputs {
    /// What is still to do, popped from the end.
    stack: Vec<Step>,
    /// Directories already walked, by (device, inode): a second link to one is not walked again.
    seen_dirs: HashSet<(u64, u64)>,
    /// Files found under each directory given on the command line.
    found: Vec<usize>,
}

enum Step {
    /// A path, with the command-line directory it was found under (if any).
    Visit(PathBuf, Option<usize>),
    /// The end of command-line directory `i`'s tree.
    EndOf(usize, PathBuf),
}

impl Inputs {
    /// The walk over `inputs`, in order.
    pub fn new(inputs: &[PathBuf]) -> Self {
        let stack = inputs.iter().rev().map(|p| Step::Visit(p.clone(), None)).collect();
        Self { stack, seen_dirs: HashSet::new(), found: Vec::new() }
    }
}

/// (device, inode) of a directory.
fn dir_id(meta: &std::fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

impl Iterator for Inputs {
    type Item = InputEvent;

    fn next(&mut self) -> Option<InputEvent> {
        while let Some(step) = self.stack.pop() {
            let (path, root) = match step {
                Step::Visit(path, root) => (path, root),
                Step::EndOf(i, path) if self.found[i] == 0 => {
                    return Some(InputEvent::Problem(format!(
                        "{}: the directory contains no images ({})",
                        path.display(),
                        IMAGE_EXTENSIONS.join(", ")
                    )))
                }
                Step::EndOf(..) => continue,
            };
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if root.is_none() && e.kind() == std::io::ErrorKind::NotFound => {
                    return Some(InputEvent::Problem(format!("{}: no such file or directory", path.display())))
                }
                Err(e) => return Some(InputEvent::Problem(format!("{}: cannot read: {e}", path.display()))),
            };
            if meta.is_dir() {
                if !self.seen_dirs.insert(dir_id(&meta)) {
                    eprintln!("warning: {}: a link to a directory already searched; skipped", path.display());
                    continue;
                }
                let entries = match std::fs::read_dir(&path) {
                    Ok(e) => e,
                    Err(e) => return Some(InputEvent::Problem(format!("{}: cannot read directory: {e}", path.display()))),
                };
                let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                children.sort();
                let root = root.unwrap_or_else(|| {
                    self.found.push(0);
                    self.stack.push(Step::EndOf(self.found.len() - 1, path.clone()));
                    self.found.len() - 1
                });
                self.stack.extend(children.into_iter().rev().map(|p| Step::Visit(p, Some(root))));
                continue;
            }
            if root.is_some() && !has_image_extension(&path) {
                continue;
            }
            if !meta.is_file() {
                return Some(InputEvent::Problem(format!(
                    "{}: not a regular file (a FIFO, socket or device), not read",
                    path.display()
                )));
            }
            if let Some(i) = root {
                self.found[i] += 1;
            }
            return Some(InputEvent::File(path));
        }
        None
    }
}

fn has_image_extension(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}
