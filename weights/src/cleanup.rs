//! Cleanup on SIGINT, SIGTERM and SIGHUP: nothing half-written is left behind by an interrupted program.
//!
//! A program calls [`install`] once at startup. From then on, the first of those signals:
//! 1. marks the process as [`interrupted`], which running hub transfers notice within a fraction of a
//!    second: they cancel their request and remove their partial download;
//! 2. waits (at most [`GRACE`]) until every [`Busy`] guard is dropped, i.e. those transfers are done
//!    cleaning up;
//! 3. removes every path registered with [`remove_on_signal`] that is still registered (temporary files
//!    being written, see [`crate::fsutil::write_atomic`]);
//! 4. exits with `128 + signal` (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), as a shell reports a
//!    process killed by that signal.
//!
//! A second signal during the cleanup exits at once with the same status. Without [`install`] nothing
//! changes: signals keep their default action, [`interrupted`] stays `None`, registrations cost a lock.
//! SIGKILL cannot be caught: what it leaves is handled where it is found (the hub removes stale
//! `.incomplete` downloads; [`crate::fsutil::write_atomic`] on Linux writes into an anonymous file that
//! the kernel frees).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long the handler waits for [`Busy`] work to finish its own cleanup before exiting anyway.
pub const GRACE: Duration = Duration::from_secs(5);

/// The signals handled.
#[cfg(unix)]
const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

static INSTALLED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static BUSY: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Registry {
    next: u64,
    paths: HashMap<u64, PathBuf>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP (see the [module docs](self)). Idempotent.
///
/// Errors if a handler cannot be registered or its thread cannot be started. On systems without Unix
/// signals it does nothing.
pub fn install() -> io::Result<()> {
    #[cfg(unix)]
    {
        if INSTALLED.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let result = install_unix();
        if result.is_err() {
            INSTALLED.store(false, Ordering::SeqCst);
        }
        result
    }
    #[cfg(not(unix))]
    Ok(())
}

#[cfg(unix)]
fn install_unix() -> io::Result<()> {
    // A second signal once the first is being handled exits at once (the flag is set by the handler thread).
    let exiting = Arc::new(AtomicBool::new(false));
    for sig in SIGNALS {
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, exiting.clone())?;
    }
    let mut signals = signal_hook::iterator::Signals::new(SIGNALS)?;
    std::thread::Builder::new()
        .name("zoo-signal-cleanup".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                exiting.store(true, Ordering::SeqCst);
                handle(sig);
            }
        })?;
    Ok(())
}

/// What the handler thread does on the first signal; never returns.
#[cfg(unix)]
fn handle(sig: i32) -> ! {
    SIGNAL.store(sig, Ordering::SeqCst);
    let start = Instant::now();
    while BUSY.load(Ordering::SeqCst) > 0 && start.elapsed() < GRACE {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The lock is never released: no new path can be registered (nor created, see `register_while`)
    // between this cleanup and the exit.
    let reg = registry();
    for path in reg.paths.values() {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(128 + sig)
}

/// Whether [`install`] was called (and succeeded).
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

/// The signal received, once the handler has started (only after [`install`]).
pub fn interrupted() -> Option<i32> {
    Some(SIGNAL.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

/// Blocks forever when the process is exiting on a signal (the handler thread ends it): for work that has
/// cleaned up after noticing [`interrupted`] and must not go on to report an error or exit by itself.
/// Returns at once otherwise.
pub fn wait_for_exit_if_interrupted() {
    if interrupted().is_some() && is_installed() {
        loop {
            std::thread::park();
        }
    }
}

/// A path removed if a handled signal arrives while it is registered; dropping it unregisters the path
/// (it does not remove the file).
#[derive(Debug)]
#[must_use = "the path is unregistered when this is dropped"]
pub struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().paths.remove(&self.id);
    }
}

/// Registers `path` to be removed on a handled signal, until the returned guard is dropped.
pub fn remove_on_signal(path: impl Into<PathBuf>) -> Registration {
    let mut reg = registry();
    let id = reg.next;
    reg.next += 1;
    reg.paths.insert(id, path.into());
    Registration { id }
}

/// Registers `path` and runs `create` (which makes the file) under the registry's lock, so that a signal
/// cannot be handled between the two: the file is either created and registered, or not created.
pub fn register_while<T>(path: &Path, create: impl FnOnce() -> io::Result<T>) -> io::Result<(T, Registration)> {
    let mut reg = registry();
    let value = create()?;
    let id = reg.next;
    reg.next += 1;
    reg.paths.insert(id, path.to_path_buf());
    Ok((value, Registration { id }))
}

/// Work that must finish its own cleanup before a signal ends the process (at most [`GRACE`]).
#[derive(Debug)]
#[must_use = "the work is done when this is dropped"]
pub struct Busy(());

impl Busy {
    /// Marks work as running until the guard is dropped.
    pub fn start() -> Busy {
        BUSY.fetch_add(1, Ordering::SeqCst);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let ((), g) = register_while(&a, || std::fs::write(&a, b"x")).unwrap();
        assert!(registry().paths.values().any(|p| p == &a));
        drop(g);
        assert!(!registry().paths.values().any(|p| p == &a));
        assert!(a.exists(), "unregistering does not remove the file");
        let err = register_while(&dir.path().join("no/such/dir/f"), || {
            std::fs::write(dir.path().join("no/f"), b"")
        });
        assert!(err.is_err());
        assert!(
            !registry().paths.values().any(|p| p.ends_with("no/such/dir/f")),
            "a failed creation registers nothing"
        );
        assert_eq!(interrupted(), None);
    }
}
