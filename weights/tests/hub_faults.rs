//! `weights::hub` against a hub that never answers, trickles or stalls, and partial downloads left by
//! killed processes. Every test runs its operation on a thread with a generous bound (a hang fails the
//! test instead of blocking the suite); the timeouts under test are 1 s or less.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use weights::hub::{Hub, HubError, HubOptions, TimeoutKind, TimeoutLimit};
use zoo_testkit::{etag_of, FakeHub, FakeRepo, Fault, FaultKind, FaultTarget};

const REPO: &str = "timm/resnet18.slow";
const WEIGHTS: &str = "model.safetensors";

fn weights_bytes() -> Vec<u8> {
    (0..40_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

fn repo() -> FakeRepo {
    FakeRepo::new(REPO, vec![(WEIGHTS, weights_bytes()), ("config.json", b"{}".to_vec())])
}

fn opts(endpoint: &str, cache: &Path, timeout: Duration) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        progress: false,
        download_timeout: timeout,
        etag_timeout: timeout,
        invalid: None,
    }
}

fn no_proxy() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
        std::env::set_var("no_proxy", "127.0.0.1,localhost");
    });
}

/// Runs `f` on a thread; a result that does not come within 30 s is a hang.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the hub operation hung")
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join(format!("models--{}", REPO.replace('/', "--")))
}

/// Every file under the repo's `blobs/` and `snapshots/` (complete or not).
fn leftovers(cache: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["blobs", "snapshots"] {
        let mut stack = vec![repo_dir(cache).join(sub)];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path().strip_prefix(cache).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

/// `get` of WEIGHTS with `fault` on `target`, under 1 s timeouts: the error, then the same client
/// downloads the file once the fault is gone.
fn timeout_case(target: FaultTarget, kind: FaultKind) -> (String, HubError) {
    no_proxy();
    let server = FakeHub::start(vec![repo()]);
    server.inject(Fault {
        file: None,
        target,
        kind,
        times: 1,
    });
    let cache = tempfile::tempdir().unwrap();
    let endpoint = server.endpoint();
    let o = opts(&endpoint, cache.path(), Duration::from_secs(1));
    let (err, hub) = bounded(move || {
        let hub = Hub::with_retries(o, 0).unwrap();
        (hub.get(REPO, None, WEIGHTS).unwrap_err(), hub)
    });
    assert!(
        leftovers(cache.path()).is_empty(),
        "left in the cache: {:?}",
        leftovers(cache.path())
    );
    let path = bounded(move || hub.get(REPO, None, WEIGHTS)).expect("the download works once the fault is gone");
    assert_eq!(fs::read(path).unwrap(), weights_bytes());
    let msg = err.to_string();
    for want in [endpoint.as_str(), REPO, WEIGHTS, "Nothing was written to the cache"] {
        assert!(msg.contains(want), "`{want}` missing from: {msg}");
    }
    (msg, err)
}

#[test]
fn head_that_never_answers_times_out() {
    let (msg, err) = timeout_case(FaultTarget::Head, FaultKind::NoAnswer);
    assert!(
        matches!(
            err,
            HubError::Timeout {
                variable: TimeoutLimit::Etag,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("metadata request got no complete answer within 1 s"),
        "{msg}"
    );
    assert!(msg.contains("HF_HUB_ETAG_TIMEOUT=<seconds> (now 1 s)"), "{msg}");
}

#[test]
fn download_that_never_answers_times_out() {
    let (msg, err) = timeout_case(FaultTarget::Get, FaultKind::NoAnswer);
    assert!(
        matches!(
            err,
            HubError::Timeout {
                variable: TimeoutLimit::Download,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("download request got no answer within 1 s"), "{msg}");
}

#[test]
fn body_trickled_at_a_few_bytes_per_second_is_too_slow() {
    // 10 B/s: a byte every 100 ms, so never silent for the 1 s limit, but far below 1 KiB per second.
    let (msg, err) = timeout_case(FaultTarget::Get, FaultKind::Trickle(10));
    assert!(
        matches!(
            err,
            HubError::Timeout {
                what: TimeoutKind::TooSlow,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("the minimum is 1024 bytes per 1 s") && msg.contains("of 40000 bytes"),
        "{msg}"
    );
    assert!(msg.contains("HF_HUB_DOWNLOAD_TIMEOUT"), "{msg}");
    // 1 B/s: one of the two body rules ends it, whichever the timing hits first.
    let (_, err) = timeout_case(FaultTarget::Get, FaultKind::Trickle(1));
    assert!(
        matches!(
            err,
            HubError::Timeout {
                what: TimeoutKind::TooSlow | TimeoutKind::Stalled,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn body_that_stalls_half_way_is_reported_with_its_progress() {
    let (msg, err) = timeout_case(FaultTarget::Get, FaultKind::StallAfter(20_000));
    assert!(
        matches!(
            err,
            HubError::Timeout {
                what: TimeoutKind::Stalled,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("no data arrived for 1 s after 20000 of 40000 bytes"),
        "{msg}"
    );
}

#[test]
fn slow_but_steady_body_is_not_a_stall() {
    // 8 KiB/s against a 0.5 s window (minimum 1 KiB per window): about 5 s for the file, never stalled.
    no_proxy();
    let server = FakeHub::start(vec![repo()]);
    server.fail_get(WEIGHTS, FaultKind::Trickle(8 * 1024), 1);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&server.endpoint(), cache.path(), Duration::from_millis(500));
    let path = bounded(move || Hub::with_retries(o, 0).unwrap().get(REPO, None, WEIGHTS)).unwrap();
    assert_eq!(fs::read(path).unwrap(), weights_bytes());
}

#[test]
fn file_list_that_never_answers_times_out() {
    no_proxy();
    let server = FakeHub::start(vec![repo()]);
    server.inject(Fault {
        file: None,
        target: FaultTarget::Api,
        kind: FaultKind::NoAnswer,
        times: 1,
    });
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&server.endpoint(), cache.path(), Duration::from_millis(500));
    let err = bounded(move || Hub::with_retries(o, 0).unwrap().list_files(REPO, None).unwrap_err());
    assert!(
        matches!(
            err,
            HubError::Timeout {
                filename: None,
                variable: TimeoutLimit::Etag,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("timed out: timm/resnet18.slow on http://127.0.0.1"),
        "{err}"
    );
}

#[test]
fn timeouts_come_from_the_environment_and_bad_values_are_refused() {
    let lookup = |vars: &'static [(&'static str, &'static str)]| {
        HubOptions::from_lookup(move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    };
    let o = lookup(&[]);
    assert_eq!(
        (o.download_timeout, o.etag_timeout),
        (Duration::from_secs(10), Duration::from_secs(10))
    );
    assert_eq!(o.invalid, None);
    let o = lookup(&[("HF_HUB_DOWNLOAD_TIMEOUT", "2.5"), ("HF_HUB_ETAG_TIMEOUT", " 30 ")]);
    assert_eq!(
        (o.download_timeout, o.etag_timeout),
        (Duration::from_millis(2500), Duration::from_secs(30))
    );
    for bad in ["abc", "0", "-3", "nan", "inf", "1e9"] {
        let vars: &'static [(&str, &str)] = Box::leak(Box::new([("HF_HUB_DOWNLOAD_TIMEOUT", bad)]));
        let o = lookup(vars);
        let why = o.invalid.clone().unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(why.contains("HF_HUB_DOWNLOAD_TIMEOUT") && why.contains(bad), "{why}");
        let err = Hub::new(o).unwrap_err().to_string();
        assert!(err.contains("HF_HUB_DOWNLOAD_TIMEOUT"), "{err}");
    }
}

#[test]
fn stale_partial_downloads_are_removed_at_next_use_even_offline() {
    let cache = tempfile::tempdir().unwrap();
    let blobs = repo_dir(cache.path()).join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    let locks = cache
        .path()
        .join(".locks")
        .join(repo_dir(cache.path()).file_name().unwrap());
    fs::create_dir_all(&locks).unwrap();
    let dead = etag_of(&weights_bytes());
    let alive = etag_of(b"another file being downloaded right now");
    // A killed process: its lock file exists, nobody holds it.
    fs::write(blobs.join(format!("{dead}.incomplete")), b"partial").unwrap();
    fs::write(locks.join(format!("{dead}.lock")), b"").unwrap();
    // A live download: its lock is held (here by this process, on another open file).
    fs::write(blobs.join(format!("{alive}.incomplete")), b"partial").unwrap();
    let held = fs::File::create(locks.join(format!("{alive}.lock"))).unwrap();
    held.lock().unwrap();
    // A partial download without any lock file (a cache copied from elsewhere).
    fs::write(blobs.join("0123.incomplete"), b"partial").unwrap();

    let mut o = opts("http://127.0.0.1:9", cache.path(), Duration::from_secs(1));
    o.offline = true;
    let hub = Hub::new(o).unwrap();
    assert_eq!(hub.cached(REPO, None, WEIGHTS), None);
    let mut left: Vec<String> = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [format!("{alive}.incomplete")]);
    drop(held);
}
