//! Finding the image files under a directory, safely: for `zoo run DIR`, image folders, evaluation sets.
//!
//! [`walk`] yields paths lazily, in a deterministic order (depth first, each directory's entries sorted by
//! name), following symlinks. What could hang or mislead a plain recursive walk is handled:
//! - a directory reached a second time (a symlink loop such as `a -> .`, or two links to one directory)
//!   is not walked again, so the walk ends and every file is listed once ([`WalkIssue::AlreadyWalked`]);
//!   directories are told apart by device and inode, not by path;
//! - FIFOs, sockets and devices with an image extension are skipped, never opened
//!   ([`WalkIssue::NotRegular`]);
//! - unreadable directories and broken symlinks are reported ([`WalkIssue::Unreadable`],
//!   [`WalkIssue::BrokenLink`]); [`WalkWarning::input_missing`] tells the caller when the list may be
//!   incomplete, so it can exit non-zero.
//!
//! Issues come as `Err` items between the paths and the walk goes on after them:
//!
//! ```no_run
//! let mut incomplete = false;
//! for item in resnet::data::walk::walk("photos") {
//!     match item {
//!         Ok(path) => println!("{}", path.display()),
//!         Err(w) => {
//!             eprintln!("warning: {w}");
//!             incomplete |= w.input_missing();
//!         }
//!     }
//! }
//! # let _ = incomplete;
//! ```
//!
//! Memory: the names of the directories on the current path (one sorted listing per level) and one
//! identity per directory walked; never the list of files.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// File extensions of the formats [`super::decode`] reads (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp"];

/// Something the walk skipped, and why. The walk continues after it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {issue}", path.display())]
pub struct WalkWarning {
    /// The path concerned.
    pub path: PathBuf,
    /// What happened.
    pub issue: WalkIssue,
}

impl WalkWarning {
    /// Whether files may be missing from the walk because of this (an unreadable directory or entry, a
    /// broken link): a caller whose result must be complete should then exit non-zero. Loops and skipped
    /// special files are not missing input.
    pub fn input_missing(&self) -> bool {
        matches!(self.issue, WalkIssue::Unreadable(_) | WalkIssue::BrokenLink)
    }
}

/// Why a path was skipped.
#[derive(Debug, thiserror::Error)]
pub enum WalkIssue {
    /// A directory (or an entry's metadata) that cannot be read; the files under it are not listed.
    #[error("cannot read, skipped: {0}")]
    Unreadable(#[source] std::io::Error),
    /// A symlink whose target does not exist.
    #[error("broken symlink, skipped")]
    BrokenLink,
    /// A directory that was already walked (reached again through a symlink: a loop, or a second link).
    #[error("directory already walked (a symlink loop or a second link to it), not walked again")]
    AlreadyWalked,
    /// Not a regular file (`what`: a FIFO, a socket, a device): never opened.
    #[error("{0}, not a regular file: skipped")]
    NotRegular(&'static str),
}

/// A lazy, guarded walk under `root` for image files ([`IMAGE_EXTENSIONS`]); see the [module docs](self).
///
/// A `root` that is a regular file is yielded as it is, whatever its extension (it was named explicitly).
pub fn walk(root: impl AsRef<Path>) -> Walk {
    Walk {
        root: Some(root.as_ref().to_path_buf()),
        stack: Vec::new(),
        walked: HashSet::new(),
        extensions: Some(IMAGE_EXTENSIONS.iter().map(|e| e.to_string()).collect()),
    }
}

/// The iterator of [`walk`]: `Ok(path)` for each file, `Err` for each [`WalkWarning`].
#[derive(Debug)]
pub struct Walk {
    /// Not yet looked at.
    root: Option<PathBuf>,
    /// The directories being walked, each with its remaining sorted entries.
    stack: Vec<std::vec::IntoIter<PathBuf>>,
    /// Identities of the directories walked so far.
    walked: HashSet<DirId>,
    /// Lower-case extensions accepted; `None` = every file.
    extensions: Option<Vec<String>>,
}

impl Walk {
    /// Accepts files with these extensions instead of [`IMAGE_EXTENSIONS`] (case-insensitive, no dot).
    pub fn extensions(mut self, extensions: &[&str]) -> Self {
        self.extensions = Some(extensions.iter().map(|e| e.to_ascii_lowercase()).collect());
        self
    }

    /// Accepts every regular file.
    pub fn any_extension(mut self) -> Self {
        self.extensions = None;
        self
    }

    fn wanted(&self, path: &Path) -> bool {
        match &self.extensions {
            None => true,
            Some(exts) => path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e))),
        }
    }

    /// Starts walking `dir` unless it was walked already.
    fn enter(&mut self, dir: &Path, meta: &fs::Metadata) -> Option<Result<PathBuf, WalkWarning>> {
        if !self.walked.insert(dir_id(dir, meta)) {
            return Some(Err(warning(dir, WalkIssue::AlreadyWalked)));
        }
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => return Some(Err(warning(dir, WalkIssue::Unreadable(e)))),
        };
        let mut paths = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => paths.push(e.path()),
                // The listing broke off: report it, keep what was listed.
                Err(e) => {
                    paths.sort();
                    self.stack.push(paths.into_iter());
                    return Some(Err(warning(dir, WalkIssue::Unreadable(e))));
                }
            }
        }
        paths.sort();
        self.stack.push(paths.into_iter());
        None
    }

    /// What to do with one path (an entry or the root).
    fn visit(&mut self, path: PathBuf, is_root: bool) -> Option<Result<PathBuf, WalkWarning>> {
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                let issue = if is_link && e.kind() == std::io::ErrorKind::NotFound {
                    WalkIssue::BrokenLink
                } else {
                    WalkIssue::Unreadable(e)
                };
                return Some(Err(warning(&path, issue)));
            }
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            return self.enter(&path, &meta);
        }
        if ft.is_file() {
            return (is_root || self.wanted(&path)).then_some(Ok(path));
        }
        // A FIFO, socket or device: never opened. Reported if it would have been read.
        let what = weights::fsutil::non_regular_kind(ft).unwrap_or("not a regular file");
        (is_root || self.wanted(&path)).then(|| Err(warning(&path, WalkIssue::NotRegular(what))))
    }
}

impl Iterator for Walk {
    type Item = Result<PathBuf, WalkWarning>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(root) = self.root.take() {
            if let Some(item) = self.visit(root, true) {
                return Some(item);
            }
        }
        loop {
            let top = self.stack.last_mut()?;
            let Some(path) = top.next() else {
                self.stack.pop();
                continue;
            };
            if let Some(item) = self.visit(path, false) {
                return Some(item);
            }
        }
    }
}

fn warning(path: &Path, issue: WalkIssue) -> WalkWarning {
    WalkWarning {
        path: path.to_path_buf(),
        issue,
    }
}

/// A directory's identity: device and inode on Unix, the canonical path elsewhere.
#[cfg(unix)]
type DirId = (u64, u64);
#[cfg(not(unix))]
type DirId = PathBuf;

#[cfg(unix)]
fn dir_id(_: &Path, meta: &fs::Metadata) -> DirId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dir_id(path: &Path, _: &fs::Metadata) -> DirId {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Paths relative to `root`, and the warnings as `path: kind`.
    fn run(w: Walk, root: &Path) -> (Vec<String>, Vec<String>) {
        let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).to_string_lossy().into_owned();
        let (mut files, mut warnings) = (Vec::new(), Vec::new());
        for item in w {
            match item {
                Ok(p) => files.push(rel(&p)),
                Err(e) => {
                    let kind = match e.issue {
                        WalkIssue::Unreadable(_) => "unreadable",
                        WalkIssue::BrokenLink => "broken",
                        WalkIssue::AlreadyWalked => "walked",
                        WalkIssue::NotRegular(_) => "special",
                    };
                    warnings.push(format!("{}: {kind}", rel(&e.path)));
                }
            }
        }
        (files, warnings)
    }

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn sorted_depth_first_with_extension_filter() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "b.png",
            "a.JPG",
            "notes.txt",
            "sub/c.jpeg",
            "sub/deeper/d.webp",
            "z/e.gif",
            "noext",
        ] {
            touch(&d.path().join(f));
        }
        let (files, warnings) = run(walk(d.path()), d.path());
        assert_eq!(files, ["a.JPG", "b.png", "sub/c.jpeg", "sub/deeper/d.webp", "z/e.gif"]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let (files, _) = run(walk(d.path()).extensions(&["txt"]), d.path());
        assert_eq!(files, ["notes.txt"]);
        assert_eq!(run(walk(d.path()).any_extension(), d.path()).0.len(), 7);
        // A root that is a file is yielded whatever its extension.
        let (files, _) = run(walk(d.path().join("notes.txt")), d.path());
        assert_eq!(files, ["notes.txt"]);
    }

    #[test]
    fn symlink_loops_end_and_list_each_image_once() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("cat.jpg"));
        touch(&d.path().join("sub/dog.png"));
        // Two links to the directory itself, one to its parent's... parent, and one to a sibling.
        symlink(".", d.path().join("self1")).unwrap();
        symlink(d.path(), d.path().join("self2")).unwrap();
        symlink("..", d.path().join("sub/up")).unwrap();
        symlink("sub", d.path().join("alias")).unwrap();
        let (files, warnings) = run(walk(d.path()), d.path());
        // `alias` sorts before `sub`: the directory is walked once, under the first name reached.
        assert_eq!(files, ["alias/dog.png", "cat.jpg"]);
        assert_eq!(
            warnings,
            ["alias/up: walked", "self1: walked", "self2: walked", "sub: walked"]
        );
        assert!(walk(d.path()).filter_map(Result::err).all(|w| !w.input_missing()));
    }

    #[test]
    fn symlinked_files_are_followed_and_broken_links_reported() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("real.jpg"));
        symlink("real.jpg", d.path().join("link.jpg")).unwrap();
        symlink("absent.jpg", d.path().join("broken.jpg")).unwrap();
        let (files, warnings) = run(walk(d.path()), d.path());
        assert_eq!(files, ["link.jpg", "real.jpg"]);
        assert_eq!(warnings, ["broken.jpg: broken"]);
        assert!(walk(d.path()).filter_map(Result::err).all(|w| w.input_missing()));
    }

    #[test]
    fn fifos_and_devices_are_skipped_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("a.jpg"));
        let fifo = d.path().join("pipe.jpg");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        symlink("/dev/zero", d.path().join("zero.png")).unwrap();
        symlink("/dev/null", d.path().join("null.txt")).unwrap();
        let (files, warnings) = run(walk(d.path()), d.path());
        assert_eq!(files, ["a.jpg"]);
        // `null.txt` would not have been read anyway: not reported.
        assert_eq!(warnings, ["pipe.jpg: special", "zero.png: special"]);
        let msg = walk(d.path()).find_map(Result::err).unwrap().to_string();
        assert!(msg.contains("pipe.jpg") && msg.contains("FIFO"), "{msg}");
    }

    #[test]
    fn unreadable_directories_are_reported_as_missing_input() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("a.jpg"));
        touch(&d.path().join("locked/secret.jpg"));
        let locked = d.path().join("locked");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads through permission bits: then the walk must simply list everything.
        let privileged = fs::read_dir(&locked).is_ok();
        let (files, warnings) = run(walk(d.path()), d.path());
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        if privileged {
            assert_eq!(files, ["a.jpg", "locked/secret.jpg"]);
            assert!(warnings.is_empty(), "{warnings:?}");
        } else {
            assert_eq!(files, ["a.jpg"]);
            assert_eq!(warnings, ["locked: unreadable"]);
        }
        // A root that does not exist.
        let w: Vec<_> = walk(d.path().join("absent")).collect();
        assert!(matches!(&w[..], [Err(e)] if e.input_missing()));
    }

    #[test]
    fn memory_stays_with_the_current_path() {
        // 20 directories of 50 files: the walk never holds more than one listing per level.
        let d = tempfile::tempdir().unwrap();
        for i in 0..20 {
            for j in 0..50 {
                touch(&d.path().join(format!("d{i:02}/f{j:02}.png")));
            }
        }
        let mut w = walk(d.path());
        let mut n = 0;
        let mut max_pending = 0;
        while let Some(item) = w.next() {
            item.unwrap();
            n += 1;
            max_pending = max_pending.max(w.stack.iter().map(|s| s.len()).sum::<usize>());
        }
        assert_eq!(n, 1000);
        assert!(max_pending < 20 + 50, "{max_pending} paths held at once");
    }
}
