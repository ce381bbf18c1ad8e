//! Files written whole or not at all, and input files opened without surprises.
//!
//! - [`write_atomic`]: a file appears at its path complete or not at all, and nothing is left behind
//!   when the writer fails, is interrupted (SIGINT/SIGTERM with [`crate::cleanup::install`]) or is
//!   killed (SIGKILL: on Linux the data lives in an anonymous `O_TMPFILE` until the end, which the kernel
//!   frees with the process). The file gets the mode `0666 & !umask`, like any file a program creates.
//! - [`same_file`]: whether two paths name the same file (to refuse `--out` equal to an input).
//! - [`open_regular`]: opens a file for reading only if it is a regular file, without blocking on a FIFO
//!   and without reading a device such as `/dev/zero`.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O error of [`write_atomic`] or [`open_regular`], naming the path and the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}: {source}", path.display())]
pub struct PathError {
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What was being done.
    pub what: &'static str,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

fn path_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |source| {
        io::Error::new(
            source.kind(),
            PathError {
                path: path.to_path_buf(),
                what,
                source,
            },
        )
    }
}

/// Writes `path` through `write`, atomically: readers see the old file or the complete new one, never
/// a part of it, and no temporary file is left behind in any case (an error of `write` or of the
/// final steps, a signal handled by [`crate::cleanup`], or SIGKILL on Linux).
///
/// `write` gets a buffered writer (also `Seek`); what it returns is passed on. A symlink at `path` is
/// followed: the file it points to is replaced. The new file has the mode `0666 & !umask` (not the
/// `0600` of a temporary file) and is synced to disk before it is renamed into place.
///
/// How: on Linux the data goes into an anonymous `O_TMPFILE` in the target directory, which is given a
/// name (`.<file>.<pid>.<n>.tmp`, registered with [`crate::cleanup`] for the instant it exists) and
/// renamed over `path` once complete. Where `O_TMPFILE` is not available (other systems, some file
/// systems, no `/proc`), a named temporary file of that name is used, registered the same way.
///
/// I/O errors name the path (their source is a [`PathError`]).
pub fn write_atomic<T, E, F>(path: impl AsRef<Path>, write: F) -> Result<T, E>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<T, E>,
    E: From<io::Error>,
{
    let target = follow_symlink(path.as_ref());
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))
        .map_err(path_err(&target, "cannot write"))?
        .to_string_lossy()
        .into_owned();
    let temp = Temp::create(&dir, &name).map_err(path_err(&dir, "cannot create a file in the directory"))?;
    let mut writer = BufWriter::with_capacity(1 << 20, temp.file()?);
    let value = write(&mut writer)?;
    let file = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(path_err(&target, "cannot write"))?;
    file.sync_all().map_err(path_err(&target, "cannot sync"))?;
    let mut temp = temp;
    temp.commit(&file, &dir, &name, &target)?;
    // The rename itself is durable once the directory is synced (best effort: not every file system can).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(value)
}

/// `path`, or the file a symlink at `path` points to (resolved relative to the link's directory).
fn follow_symlink(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    // A bounded number of hops: a link loop just stops being followed (the rename then fails cleanly).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&p) {
                Ok(t) if t.is_absolute() => p = t,
                Ok(t) => p = p.parent().map(|d| d.join(&t)).unwrap_or(t),
                Err(_) => break,
            },
            _ => break,
        }
    }
    p
}

/// Where the bytes go until the commit.
enum Temp {
    /// An `O_TMPFILE`: no name at all until it is linked.
    #[cfg(target_os = "linux")]
    Anonymous(File),
    /// A named file, removed on error, on drop and on a handled signal.
    Named {
        file: Option<File>,
        path: PathBuf,
        _guard: crate::cleanup::Registration,
    },
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
static FORCE_NAMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tests only: use the named temporary file (the fallback) even where `O_TMPFILE` works.
#[doc(hidden)]
pub fn force_named_temp_for_tests(on: bool) {
    FORCE_NAMED.store(on, Ordering::SeqCst);
}

/// `.<name>.<pid>.<n>.tmp` in `dir`: hidden, unique within the process, recognisable.
fn temp_name(dir: &Path, name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Keep it within NAME_MAX whatever the target's name length.
    let short: String = name.chars().take(200).collect();
    dir.join(format!(".{short}.{}.{n}.tmp", std::process::id()))
}

impl Temp {
    fn create(dir: &Path, name: &str) -> io::Result<Temp> {
        #[cfg(target_os = "linux")]
        if !FORCE_NAMED.load(Ordering::SeqCst) && Path::new("/proc/self/fd").is_dir() {
            use std::os::unix::fs::OpenOptionsExt;
            match OpenOptions::new()
                .write(true)
                .mode(0o666)
                .custom_flags(libc::O_TMPFILE)
                .open(dir)
            {
                Ok(f) => return Ok(Temp::Anonymous(f)),
                // Not supported by this kernel or file system: fall back to a named file.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {}
                Err(e) => return Err(e),
            }
        }
        let path = temp_name(dir, name);
        let (file, guard) = crate::cleanup::register_while(&path, || {
            let mut o = OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o666);
            o.open(&path)
        })?;
        Ok(Temp::Named {
            file: Some(file),
            path,
            _guard: guard,
        })
    }

    fn file(&self) -> io::Result<File> {
        match self {
            #[cfg(target_os = "linux")]
            Temp::Anonymous(f) => f.try_clone(),
            Temp::Named { file, .. } => file
                .as_ref()
                .ok_or_else(|| io::Error::other("temporary file already closed"))
                .and_then(File::try_clone),
        }
    }

    /// Puts the content at `target`. Consumes the temporary file (a later drop does nothing).
    fn commit(&mut self, file: &File, dir: &Path, name: &str, target: &Path) -> io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Temp::Anonymous(_) => {
                // Give the anonymous file a name (there is no "link over an existing file"), then rename
                // that name over the target. The name exists only between the two calls and is registered
                // for cleanup meanwhile.
                let tmp = temp_name(dir, name);
                let ((), guard) = crate::cleanup::register_while(&tmp, || link_anonymous(file, &tmp))
                    .map_err(path_err(dir, "cannot create a file in the directory"))?;
                let renamed = std::fs::rename(&tmp, target);
                if renamed.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                drop(guard);
                renamed.map_err(path_err(target, "cannot replace"))
            }
            Temp::Named { file: handle, path, .. } => {
                let _ = (dir, name, handle.take());
                let renamed = std::fs::rename(&*path, target);
                if renamed.is_err() {
                    let _ = std::fs::remove_file(&*path);
                }
                renamed.map_err(path_err(target, "cannot replace"))
            }
        }
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Temp::Named { file, path, .. } = self {
            // Still here (not committed): the write failed.
            if file.take().is_some() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Links an `O_TMPFILE` at `to` through its `/proc/self/fd` entry (which needs no privilege, unlike
/// `AT_EMPTY_PATH`).
#[cfg(target_os = "linux")]
fn link_anonymous(file: &File, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `a` and `b` are the same file (same device and inode, symlinks followed): `true` also for two
/// hard links or two spellings of one path. A path that does not exist is the same as nothing.
pub fn same_file(a: impl AsRef<Path>, b: impl AsRef<Path>) -> io::Result<bool> {
    let meta = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    let (Some(ma), Some(mb)) = (meta(a.as_ref())?, meta(b.as_ref())?) else {
        return Ok(false);
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(ma.dev() == mb.dev() && ma.ino() == mb.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        Ok(std::fs::canonicalize(a.as_ref())? == std::fs::canonicalize(b.as_ref())?)
    }
}

/// What a file that is not a regular file is, in words (`None` for a regular file or a symlink).
pub fn non_regular_kind(ft: std::fs::FileType) -> Option<&'static str> {
    if ft.is_file() || ft.is_symlink() {
        return None;
    }
    if ft.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if ft.is_socket() {
            return Some("a socket");
        }
        if ft.is_char_device() {
            return Some("a character device");
        }
        if ft.is_block_device() {
            return Some("a block device");
        }
    }
    Some("not a regular file")
}

/// The error inside the [`io::ErrorKind::InvalidInput`] error of [`open_regular`]: what the path is instead
/// of a regular file (`io_error.get_ref()` and downcast to get it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind}, not a regular file")]
pub struct NotRegularFile {
    /// From [`non_regular_kind`]: `a named pipe (FIFO)`, `a character device`, `a directory`, ...
    pub kind: &'static str,
}

/// Opens `path` for reading if it is a regular file (symlinks followed), with its metadata.
///
/// The file is opened with `O_NONBLOCK` and checked with `fstat` on the open descriptor, so a FIFO
/// cannot block the open and a device (`/dev/zero`), socket or directory is refused before anything is
/// read. The refusal is an [`io::ErrorKind::InvalidInput`] error saying what the path is instead.
pub fn open_regular(path: impl AsRef<Path>) -> io::Result<(File, Metadata)> {
    let path = path.as_ref();
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NONBLOCK);
    let file = o.open(path)?;
    let meta = file.metadata()?;
    if let Some(kind) = non_regular_kind(meta.file_type()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, NotRegularFile { kind }));
    }
    Ok((file, meta))
}

/// Reads a whole file opened by [`open_regular`], refusing more than `limit` bytes (also if the file
/// grows while it is read): the error is [`io::ErrorKind::InvalidData`] and says the limit.
pub fn read_capped(file: &mut File, len_hint: u64, limit: u64) -> io::Result<Vec<u8>> {
    if len_hint > limit {
        return Err(too_large(len_hint, limit));
    }
    let mut bytes = Vec::with_capacity(len_hint as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64, limit));
    }
    Ok(bytes)
}

fn too_large(size: u64, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{size} bytes is over the limit of {limit} bytes"),
    )
}

/// Writes all of `bytes` to `path` with [`write_atomic`].
pub fn write_bytes_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[cfg(unix)]
    fn umask() -> u32 {
        // Read without changing it (changing it is racy with other test threads creating files).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
    }

    #[test]
    fn writes_whole_file_with_umask_mode_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let n: usize = write_atomic(&path, |w| -> io::Result<usize> {
            w.write_all(b"hello ")?;
            w.write_all(b"world")?;
            Ok(11)
        })
        .unwrap();
        assert_eq!(n, 11);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(entries(dir.path()), ["out.bin"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o666 & !umask(), "mode {mode:o}");
        }
        // Replacing keeps one file with the new content.
        write_bytes_atomic(&path, b"again").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        assert_eq!(entries(dir.path()), ["out.bin"]);
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        let err = write_atomic(&path, |w| -> io::Result<()> {
            w.write_all(&[7u8; 3 << 20])?;
            Err(io::Error::other("serializer failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "serializer failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["out.bin"]);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent/out.bin");
        let err = write_bytes_atomic(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("absent"), "{err}");
        assert!(std::error::Error::source(&err).is_some() || err.get_ref().is_some());
    }

    #[cfg(unix)]
    #[test]
    fn symlink_target_is_replaced_not_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.bin");
        let link = dir.path().join("link.bin");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real.bin", &link).unwrap();
        write_bytes_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert_eq!(entries(dir.path()), ["link.bin", "real.bin"]);
    }

    #[test]
    fn same_file_sees_links_and_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let b = dir.path().join("b");
        std::fs::write(&b, b"x").unwrap();
        assert!(same_file(&a, &a).unwrap());
        assert!(same_file(&a, dir.path().join(".").join("a")).unwrap());
        assert!(!same_file(&a, &b).unwrap(), "equal content is not the same file");
        assert!(!same_file(&a, dir.path().join("absent")).unwrap());
        std::fs::hard_link(&a, dir.path().join("h")).unwrap();
        assert!(same_file(&a, dir.path().join("h")).unwrap());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&a, dir.path().join("s")).unwrap();
            assert!(same_file(dir.path().join("s"), &a).unwrap());
        }
    }

    #[cfg(unix)]
    #[test]
    fn open_regular_refuses_fifos_devices_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.jpg");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Nobody writes to the FIFO: a blocking open would hang here.
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("FIFO"), "{err}");
        let err = open_regular("/dev/zero").unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let err = open_regular(dir.path()).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        let (mut f, meta) = open_regular(&file).unwrap();
        assert_eq!(read_capped(&mut f, meta.len(), 5).unwrap(), b"12345");
        let (mut f, meta) = open_regular(&file).unwrap();
        let err = read_capped(&mut f, meta.len(), 4).unwrap_err();
        assert!(err.to_string().contains("over the limit of 4 bytes"), "{err}");
        // A file that claims less than it holds (it grew) is still capped.
        let (mut f, _) = open_regular(&file).unwrap();
        assert!(read_capped(&mut f, 0, 4).is_err());
    }
}
