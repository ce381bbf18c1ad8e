//! Nothing half-written survives a signal: child processes (this test binary, re-run in a child mode) are
//! killed with SIGTERM, SIGINT or SIGKILL in the middle of a hub download or of `fsutil::write_atomic`,
//! and the directories are checked afterwards.
#![cfg(unix)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weights::hub::{Hub, HubOptions};
use zoo_testkit::{FakeHub, FakeRepo, FaultKind};

const REPO: &str = "timm/resnet18.sig";
const WEIGHTS: &str = "model.safetensors";
const MODE: &str = "ZOO_SIGNAL_TEST_CHILD";

fn weights_bytes() -> Vec<u8> {
    (0..60_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 24) as u8)
        .collect()
}

fn opts(endpoint: &str, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        progress: false,
        download_timeout: Duration::from_secs(60),
        etag_timeout: Duration::from_secs(60),
        invalid: None,
    }
}

/// The child side, run by [`spawn`]: does nothing in a normal test run.
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var(MODE) else { return };
    weights::cleanup::install().unwrap();
    let arg = PathBuf::from(std::env::var("ZOO_SIGNAL_TEST_ARG").unwrap());
    match mode.as_str() {
        "download" => {
            let endpoint = std::env::var("ZOO_SIGNAL_TEST_ENDPOINT").unwrap();
            let hub = Hub::with_retries(opts(&endpoint, &arg), 0).unwrap();
            // The fake hub trickles the body: this is still running when the parent sends its signal.
            let r = hub.get(REPO, None, WEIGHTS);
            panic!("the download ended before the signal: {r:?}");
        }
        "write" | "write-named" => {
            weights::fsutil::force_named_temp_for_tests(mode == "write-named");
            let ready = arg.with_extension("ready");
            weights::fsutil::write_atomic(&arg, |w| -> std::io::Result<()> {
                use std::io::Write;
                w.write_all(&vec![1u8; 4 << 20])?;
                w.flush()?;
                fs::write(&ready, b"")?;
                loop {
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .unwrap();
        }
        other => panic!("unknown mode {other}"),
    }
}

fn spawn(mode: &str, arg: &Path, endpoint: Option<&str>) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_process_entry", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .env("ZOO_SIGNAL_TEST_ARG", arg)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(e) = endpoint {
        c.env("ZOO_SIGNAL_TEST_ENDPOINT", e);
    }
    c.spawn().unwrap()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child, sig: i32) -> std::process::ExitStatus {
    // SAFETY: plain syscall on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the child did not exit after signal {sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn blobs(cache: &Path) -> PathBuf {
    cache.join(format!("models--{}", REPO.replace('/', "--"))).join("blobs")
}

/// Starts a child downloading a trickled file and waits until its `.incomplete` blob exists.
fn download_child(server: &FakeHub, cache: &Path) -> Child {
    server.fail_get(WEIGHTS, FaultKind::Trickle(2000), usize::MAX);
    let child = spawn("download", cache, Some(&server.endpoint()));
    wait_until("the partial download", || {
        names(&blobs(cache)).iter().any(|n| n.ends_with(".incomplete"))
    });
    child
}

#[test]
fn sigterm_and_sigint_during_a_download_leave_no_partial_blob() {
    use std::os::unix::process::ExitStatusExt;
    let server = FakeHub::start(vec![FakeRepo::new(REPO, vec![(WEIGHTS, weights_bytes())])]);
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let cache = tempfile::tempdir().unwrap();
        let mut child = download_child(&server, cache.path());
        let status = kill(&mut child, sig);
        assert_eq!(
            status.code(),
            Some(code),
            "signal {sig}: {status:?} (signal {:?})",
            status.signal()
        );
        assert_eq!(names(&blobs(cache.path())), Vec::<String>::new(), "signal {sig}");
    }
}

#[test]
fn sigkill_during_a_download_leaves_a_partial_blob_that_the_next_run_removes() {
    use std::os::unix::process::ExitStatusExt;
    let server = FakeHub::start(vec![FakeRepo::new(REPO, vec![(WEIGHTS, weights_bytes())])]);
    let cache = tempfile::tempdir().unwrap();
    let mut child = download_child(&server, cache.path());
    let status = kill(&mut child, libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let left = names(&blobs(cache.path()));
    assert!(left.len() == 1 && left[0].ends_with(".incomplete"), "{left:?}");
    // The next use of the repository, offline, removes it (the dead process's lock is free).
    let mut o = opts("http://127.0.0.1:9", cache.path());
    o.offline = true;
    assert_eq!(Hub::new(o).unwrap().cached(REPO, None, WEIGHTS), None);
    assert_eq!(names(&blobs(cache.path())), Vec::<String>::new());
}

#[test]
fn signals_during_an_atomic_write_leave_nothing() {
    use std::os::unix::process::ExitStatusExt;
    // (mode, signal, expected exit code or None for "killed by the signal")
    let cases = [
        ("write", libc::SIGTERM, Some(143)),
        ("write", libc::SIGKILL, None),
        ("write-named", libc::SIGTERM, Some(143)),
        ("write-named", libc::SIGINT, Some(130)),
    ];
    for (mode, sig, code) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model.safetensors");
        fs::write(&out, b"previous version").unwrap();
        let mut child = spawn(mode, &out, None);
        wait_until("the writer", || out.with_extension("ready").exists());
        if mode == "write-named" {
            assert_eq!(
                names(dir.path()).len(),
                3,
                "the named temporary file exists while writing"
            );
        }
        let status = kill(&mut child, sig);
        match code {
            Some(c) => assert_eq!(status.code(), Some(c), "{mode} {sig}: {status:?}"),
            None => assert_eq!(status.signal(), Some(sig), "{mode} {sig}: {status:?}"),
        }
        assert_eq!(names(dir.path()), ["model.ready", "model.safetensors"], "{mode} {sig}");
        assert_eq!(fs::read(&out).unwrap(), b"previous version", "{mode} {sig}");
    }
}
