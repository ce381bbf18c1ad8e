//! `weights::hub` against the fake hub of `zoo_testkit`: each test has its own server and its
//! own cache directory, and passes `HubOptions` explicitly (no process environment is changed,
//! except `NO_PROXY` when a proxy is configured, see `guard_proxy`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use weights::hub::{Hub, HubError, HubOptions};
use zoo_testkit::{
    etag_of, git_blob_sha1, sha256_hex, unreachable_endpoint, FakeHub, FakeRepo, Fault, FaultKind, FaultTarget,
    FAKE_TOKEN, LFS_THRESHOLD,
};

const REPO: &str = "timm/resnet18.fake";
const WEIGHTS: &str = "model.safetensors";
const CONFIG: &str = "config.json";

/// reqwest sends even 127.0.0.1 through `HTTP(S)_PROXY`/`ALL_PROXY`. Where one is set, make sure
/// `NO_PROXY` covers loopback, once, before any client is built in this process.
fn guard_proxy() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let proxied = [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ]
        .iter()
        .any(|k| std::env::var_os(k).is_some());
        let covered = ["NO_PROXY", "no_proxy"]
            .iter()
            .any(|k| std::env::var(k).is_ok_and(|v| v.contains("127.0.0.1")));
        if proxied && !covered {
            std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
            std::env::set_var("no_proxy", "127.0.0.1,localhost");
        }
    });
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn weights_bytes() -> Vec<u8> {
    bytes(64 * 1024 + 123, 7)
}

fn config_bytes() -> Vec<u8> {
    br#"{"architecture": "resnet18", "num_classes": 1000}"#.to_vec()
}

fn repo() -> FakeRepo {
    FakeRepo::new(REPO, vec![(WEIGHTS, weights_bytes()), (CONFIG, config_bytes())])
}

fn opts(endpoint: &str, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        progress: false,
        download_timeout: weights::hub::DEFAULT_DOWNLOAD_TIMEOUT,
        etag_timeout: weights::hub::DEFAULT_ETAG_TIMEOUT,
        invalid: None,
    }
}

fn hub(endpoint: &str, cache: &Path) -> Hub {
    guard_proxy();
    // One retry keeps the failure tests fast.
    Hub::with_retries(opts(endpoint, cache), 1).unwrap()
}

fn repo_dir(cache: &Path, id: &str) -> PathBuf {
    cache.join(format!("models--{}", id.replace('/', "--")))
}

/// Complete blobs (no `.incomplete`) of a repo in the cache.
fn blobs(cache: &Path, id: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo_dir(cache, id).join("blobs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|n| !n.ends_with(".incomplete"));
    v.sort();
    v
}

/// Everything under `snapshots/` (files and links), relative.
fn snapshot_entries(cache: &Path, id: &str) -> Vec<String> {
    all_files(&repo_dir(cache, id).join("snapshots"))
}

/// Every file and link under `dir` (none if it does not exist), relative and sorted.
fn all_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn from_lookup_resolves_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let lookup = |vars: &[(&str, String)]| {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        HubOptions::from_lookup(move |k| map.get(k).cloned())
    };

    // Nothing set: defaults under $HOME.
    let o = lookup(&[("HOME", "/home/u".into())]);
    assert_eq!(o.endpoint, "https://huggingface.co");
    assert_eq!(o.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
    assert_eq!(o.token, None);
    assert!(!o.offline);

    // XDG_CACHE_HOME, then HF_HOME, then HUGGINGFACE_HUB_CACHE, then HF_HUB_CACHE win.
    let o = lookup(&[("HOME", "/home/u".into()), ("XDG_CACHE_HOME", "/xdg".into())]);
    assert_eq!(o.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
    let o = lookup(&[("XDG_CACHE_HOME", "/xdg".into()), ("HF_HOME", "/hf".into())]);
    assert_eq!(o.cache_dir, PathBuf::from("/hf/hub"));
    let o = lookup(&[("HF_HOME", "/hf".into()), ("HUGGINGFACE_HUB_CACHE", "/old".into())]);
    assert_eq!(o.cache_dir, PathBuf::from("/old"));
    let o = lookup(&[
        ("HF_HOME", "/hf".into()),
        ("HUGGINGFACE_HUB_CACHE", "/old".into()),
        ("HF_HUB_CACHE", "/new".into()),
    ]);
    assert_eq!(o.cache_dir, PathBuf::from("/new"));
    let o = lookup(&[("HOME", "/home/u".into()), ("HF_HOME", "~/hf".into())]);
    assert_eq!(o.cache_dir, PathBuf::from("/home/u/hf/hub"));

    // Endpoint, trailing slash removed.
    let o = lookup(&[("HF_ENDPOINT", "http://mirror.example:8080/".into())]);
    assert_eq!(o.endpoint, "http://mirror.example:8080");

    // Offline.
    for (v, want) in [
        ("1", true),
        ("true", true),
        ("YES", true),
        ("on", true),
        ("0", false),
        ("", false),
    ] {
        assert_eq!(
            lookup(&[("HF_HUB_OFFLINE", v.into())]).offline,
            want,
            "HF_HUB_OFFLINE={v:?}"
        );
    }

    // Token: $HF_HOME/token < HF_TOKEN_PATH < HF_TOKEN.
    let home = tmp.path().join("hfhome");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join("token"), "hf_from_home\n").unwrap();
    let token_file = tmp.path().join("tok");
    fs::write(&token_file, "  hf_from_path \n").unwrap();
    let h = home.to_string_lossy().into_owned();
    let t = token_file.to_string_lossy().into_owned();
    assert_eq!(lookup(&[("HF_HOME", h.clone())]).token.as_deref(), Some("hf_from_home"));
    assert_eq!(
        lookup(&[("HF_HOME", h.clone()), ("HF_TOKEN_PATH", t.clone())])
            .token
            .as_deref(),
        Some("hf_from_path")
    );
    assert_eq!(
        lookup(&[
            ("HF_HOME", h.clone()),
            ("HF_TOKEN_PATH", t.clone()),
            ("HF_TOKEN", "hf_env".into())
        ])
        .token
        .as_deref(),
        Some("hf_env")
    );
    assert_eq!(
        lookup(&[("HF_HOME", h.clone()), ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1".into())]).token,
        None
    );
    // An empty HF_TOKEN counts as unset.
    assert_eq!(
        lookup(&[("HF_HOME", h.clone()), ("HF_TOKEN", "".into())])
            .token
            .as_deref(),
        Some("hf_from_home")
    );

    // Debug never shows the token.
    let o = lookup(&[("HF_TOKEN", "hf_secret_value".into())]);
    assert!(!format!("{o:?}").contains("hf_secret_value"));
}

#[test]
fn first_download_has_content_and_python_cache_layout() {
    let server = FakeHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&server.endpoint(), cache.path());
    let commit = repo().commit;

    let w = hub.get(REPO, None, WEIGHTS).unwrap();
    let c = hub.get(REPO, None, CONFIG).unwrap();
    assert_eq!(fs::read(&w).unwrap(), weights_bytes());
    assert_eq!(fs::read(&c).unwrap(), config_bytes());

    let rd = repo_dir(cache.path(), REPO);
    assert_eq!(rd, cache.path().join("models--timm--resnet18.fake"));
    assert_eq!(w, rd.join("snapshots").join(&commit).join(WEIGHTS));
    assert_eq!(c, rd.join("snapshots").join(&commit).join(CONFIG));

    // Exactly blobs/refs/snapshots, like Python's huggingface_hub.
    let mut top: Vec<String> = fs::read_dir(&rd)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["blobs", "refs", "snapshots"]);
    assert_eq!(fs::read_to_string(rd.join("refs/main")).unwrap().trim(), commit);

    // Blobs named by etag: sha256 for the LFS file, git blob sha1 for the small one.
    let w_etag = sha256_hex(&weights_bytes());
    let c_etag = git_blob_sha1(&config_bytes());
    assert!(weights_bytes().len() >= LFS_THRESHOLD && config_bytes().len() < LFS_THRESHOLD);
    let mut want = vec![w_etag.clone(), c_etag.clone()];
    want.sort();
    assert_eq!(blobs(cache.path(), REPO), want);

    // Snapshot entries are relative symlinks into blobs/.
    assert_eq!(
        fs::read_link(&w).unwrap(),
        PathBuf::from(format!("../../blobs/{w_etag}"))
    );
    assert_eq!(
        fs::read_link(&c).unwrap(),
        PathBuf::from(format!("../../blobs/{c_etag}"))
    );
    assert!(fs::symlink_metadata(&w).unwrap().file_type().is_symlink());

    // Nothing else at the cache root but the repo and the lock folder.
    for e in fs::read_dir(cache.path()).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(n == ".locks" || n == "models--timm--resnet18.fake", "unexpected {n}");
    }

    // The LFS file went through the redirect; no request carried a token.
    assert!(
        server.requests().iter().any(|r| r.starts_with("GET /__cdn__/")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn cache_hit_makes_no_request() {
    let server = FakeHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&server.endpoint(), cache.path());
    let first = hub.get(REPO, None, WEIGHTS).unwrap();
    let n = server.request_count();
    assert!(n >= 2);

    assert_eq!(hub.cached(REPO, None, WEIGHTS), Some(first.clone()));
    assert_eq!(hub.get(REPO, None, WEIGHTS).unwrap(), first);
    assert_eq!(hub.get(REPO, Some("main"), WEIGHTS).unwrap(), first);
    // A fresh client on the same cache (another run of the program) too.
    let again = self::hub(&server.endpoint(), cache.path());
    assert_eq!(again.get(REPO, None, WEIGHTS).unwrap(), first);
    assert_eq!(server.request_count(), n, "{:?}", server.requests());
    // Not cached: another file.
    assert_eq!(hub.cached(REPO, None, CONFIG), None);
}

#[test]
fn offline_uses_only_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let commit = repo().commit;
    {
        let server = FakeHub::start(vec![repo()]);
        hub(&server.endpoint(), cache.path()).get(REPO, None, WEIGHTS).unwrap();
    } // server gone

    // A server that must see no request, and one that does not exist at all.
    let watcher = FakeHub::start(vec![repo()]);
    for endpoint in [watcher.endpoint(), unreachable_endpoint()] {
        let mut o = opts(&endpoint, cache.path());
        o.offline = true;
        let hub = Hub::new(o).unwrap();

        let p = hub.get(REPO, None, WEIGHTS).unwrap();
        assert_eq!(fs::read(&p).unwrap(), weights_bytes());
        assert_eq!(hub.get(REPO, Some(&commit), WEIGHTS).unwrap(), p);
        assert_eq!(hub.list_files(REPO, None).unwrap(), vec![WEIGHTS.to_string()]);

        let err = hub.get(REPO, None, CONFIG).unwrap_err();
        assert!(matches!(err, HubError::OfflineNotCached { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(REPO) && msg.contains(CONFIG), "{msg}");
        // A library error names no command; the CLI adds `zoo download` itself.
        assert!(msg.contains("HF_HUB_OFFLINE") && !msg.contains("zoo "), "{msg}");

        let err = hub.get("other/repo", Some("v2"), WEIGHTS).unwrap_err();
        assert!(err.to_string().contains("other/repo"), "{err}");
        assert!(matches!(
            hub.list_files("other/repo", None),
            Err(HubError::OfflineNotCached { .. })
        ));
    }
    assert_eq!(watcher.request_count(), 0, "{:?}", watcher.requests());
}

#[test]
fn commit_sha_revision() {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let server = FakeHub::start(vec![repo().with_commit(commit)]);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&server.endpoint(), cache.path());

    let p = hub.get(REPO, Some(commit), CONFIG).unwrap();
    assert_eq!(
        p,
        repo_dir(cache.path(), REPO).join("snapshots").join(commit).join(CONFIG)
    );
    assert_eq!(fs::read(&p).unwrap(), config_bytes());
    // No ref is written for a commit sha.
    assert!(!repo_dir(cache.path(), REPO).join("refs").join(commit).exists());

    // Cached: no request, online or offline.
    let n = server.request_count();
    assert_eq!(hub.get(REPO, Some(commit), CONFIG).unwrap(), p);
    assert_eq!(server.request_count(), n);
    let mut o = opts(&unreachable_endpoint(), cache.path());
    o.offline = true;
    assert_eq!(Hub::new(o).unwrap().get(REPO, Some(commit), CONFIG).unwrap(), p);

    // An unknown commit is a revision error.
    let err = hub
        .get(REPO, Some("ffffffffffffffffffffffffffffffffffffffff"), CONFIG)
        .unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err:?}");
}

#[test]
fn branch_and_tag_revisions() {
    let r = repo().with_branch("dev").with_tag("v1.0");
    let commit = r.commit.clone();
    let server = FakeHub::start(vec![r]);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&server.endpoint(), cache.path());

    for rev in ["v1.0", "dev"] {
        let p = hub.get(REPO, Some(rev), CONFIG).unwrap();
        assert_eq!(
            p,
            repo_dir(cache.path(), REPO)
                .join("snapshots")
                .join(&commit)
                .join(CONFIG)
        );
        assert_eq!(
            fs::read_to_string(repo_dir(cache.path(), REPO).join("refs").join(rev))
                .unwrap()
                .trim(),
            commit
        );
        assert_eq!(hub.cached(REPO, Some(rev), CONFIG), Some(p));
    }
    // main was never resolved.
    assert_eq!(hub.cached(REPO, None, CONFIG), None);

    let err = hub.get(REPO, Some("no-such-branch"), CONFIG).unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");
}

#[test]
fn private_repo_needs_a_token() {
    let server = FakeHub::start(vec![repo().private()]);
    let cache = tempfile::tempdir().unwrap();

    let err = hub(&server.endpoint(), cache.path())
        .get(REPO, None, CONFIG)
        .unwrap_err();
    assert!(
        matches!(
            err,
            HubError::Unauthorized {
                status: 401,
                token_given: false,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(REPO) && msg.contains("HF_TOKEN") && msg.contains("huggingface-cli login"),
        "{msg}"
    );
    assert!(snapshot_entries(cache.path(), REPO).is_empty() && blobs(cache.path(), REPO).is_empty());

    // A wrong token: refused, and never printed.
    let mut o = opts(&server.endpoint(), cache.path());
    o.token = Some("hf_wrongTokenValue42".to_string());
    let err = Hub::with_retries(o, 0).unwrap().get(REPO, None, CONFIG).unwrap_err();
    assert!(
        matches!(err, HubError::Unauthorized { token_given: true, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("hf_wrongTokenValue42") && !format!("{err:?}").contains("hf_wrongTokenValue42"));

    // The right token.
    let mut o = opts(&server.endpoint(), cache.path());
    o.token = Some(FAKE_TOKEN.to_string());
    let hub = Hub::with_retries(o, 0).unwrap();
    assert!(!format!("{hub:?}").contains(FAKE_TOKEN));
    let p = hub.get(REPO, None, WEIGHTS).unwrap();
    assert_eq!(fs::read(p).unwrap(), weights_bytes());
    assert_eq!(
        hub.list_files(REPO, None).unwrap(),
        vec![CONFIG.to_string(), WEIGHTS.to_string()]
    );

    // With the token, an error about another file does not show it either.
    let err = hub.get(REPO, None, "nope.bin").unwrap_err();
    assert!(!err.to_string().contains(FAKE_TOKEN) && !format!("{err:?}").contains(FAKE_TOKEN));
    // A missing repo with a token is a plain not-found.
    let err = hub.get("timm/does-not-exist", None, CONFIG).unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err:?}");
}

#[test]
fn missing_file_lists_the_existing_ones() {
    let server = FakeHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&server.endpoint(), cache.path());
    let err = hub.get(REPO, None, "pytorch_model.bin").unwrap_err();
    match &err {
        HubError::FileNotFound {
            filename, available, ..
        } => {
            assert_eq!(filename, "pytorch_model.bin");
            assert_eq!(available, &vec![CONFIG.to_string(), WEIGHTS.to_string()]);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("pytorch_model.bin") && msg.contains(WEIGHTS) && msg.contains(CONFIG),
        "{msg}"
    );
    assert!(server
        .requests()
        .iter()
        .any(|r| r.starts_with(&format!("GET /api/models/{REPO}/revision/main"))));
    assert!(snapshot_entries(cache.path(), REPO).is_empty());
}

#[test]
fn list_files_online() {
    let server = FakeHub::start(vec![repo().with_tag("v1")]);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&server.endpoint(), cache.path());
    assert_eq!(
        hub.list_files(REPO, None).unwrap(),
        vec![CONFIG.to_string(), WEIGHTS.to_string()]
    );
    assert_eq!(hub.list_files(REPO, Some("v1")).unwrap().len(), 2);
    assert!(matches!(
        hub.list_files(REPO, Some("v9")),
        Err(HubError::RevisionNotFound { .. })
    ));
    assert!(matches!(
        hub.list_files("x/y", None),
        Err(HubError::Unauthorized { status: 401, .. })
    ));
}

#[test]
fn server_error_on_head_is_clear_and_leaves_nothing() {
    let server = FakeHub::start(vec![repo()]);
    server.inject(Fault {
        file: None,
        target: FaultTarget::Head,
        kind: FaultKind::Status(500),
        times: usize::MAX,
    });
    let cache = tempfile::tempdir().unwrap();
    let err = hub(&server.endpoint(), cache.path())
        .get(REPO, None, WEIGHTS)
        .unwrap_err();
    assert!(matches!(err, HubError::Server { status: 500, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("500") && msg.contains(&server.endpoint()) && msg.contains("retries"),
        "{msg}"
    );
    assert!(blobs(cache.path(), REPO).is_empty() && snapshot_entries(cache.path(), REPO).is_empty());
    // It was retried.
    assert!(server.request_count() >= 2);
}

#[test]
fn server_error_on_get_is_not_saved_as_the_file() {
    for file in [WEIGHTS, CONFIG] {
        let server = FakeHub::start(vec![repo()]);
        server.fail_get(file, FaultKind::Status(500), usize::MAX);
        let cache = tempfile::tempdir().unwrap();
        let hub = hub(&server.endpoint(), cache.path());
        let err = hub.get(REPO, None, file).unwrap_err();
        assert!(matches!(err, HubError::Corrupt { .. }), "{file}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(file) && msg.contains("Internal Error"), "{msg}");
        assert!(blobs(cache.path(), REPO).is_empty(), "{:?}", all_files(cache.path()));
        assert!(
            snapshot_entries(cache.path(), REPO).is_empty(),
            "{:?}",
            all_files(cache.path())
        );
        assert_eq!(hub.cached(REPO, None, file), None);
    }
}

#[test]
fn a_single_server_error_is_retried() {
    let server = FakeHub::start(vec![repo()]);
    server.fail_get(WEIGHTS, FaultKind::Status(503), 1);
    let cache = tempfile::tempdir().unwrap();
    let p = hub(&server.endpoint(), cache.path()).get(REPO, None, WEIGHTS).unwrap();
    assert_eq!(fs::read(p).unwrap(), weights_bytes());
}

#[test]
fn truncated_or_wrong_body_leaves_no_blob_or_symlink() {
    let cases = [
        (WEIGHTS, FaultKind::Truncate, weights_bytes()),
        (CONFIG, FaultKind::Truncate, config_bytes()),
        (WEIGHTS, FaultKind::WrongBody, weights_bytes()),
        (CONFIG, FaultKind::WrongBody, config_bytes()),
    ];
    for (file, kind, content) in cases {
        let server = FakeHub::start(vec![repo()]);
        server.fail_get(file, kind, 1);
        let cache = tempfile::tempdir().unwrap();
        let hub = hub(&server.endpoint(), cache.path());
        let err = hub.get(REPO, None, file).unwrap_err();
        assert!(matches!(err, HubError::Corrupt { .. }), "{file} {kind:?}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(file) && msg.contains(REPO), "{msg}");
        if kind == FaultKind::WrongBody {
            assert!(msg.contains(&etag_of(&content)), "{msg}");
        }
        // Nothing where a complete file is expected, not even a partial download.
        let left = all_files(cache.path());
        assert!(blobs(cache.path(), REPO).is_empty(), "{file} {kind:?}: {left:?}");
        assert!(
            snapshot_entries(cache.path(), REPO).is_empty(),
            "{file} {kind:?}: {left:?}"
        );
        assert!(
            !left.iter().any(|f| f.ends_with(".incomplete")),
            "{file} {kind:?}: {left:?}"
        );
        assert_eq!(hub.cached(REPO, None, file), None);

        // The next try gets the good file.
        let p = hub.get(REPO, None, file).unwrap();
        assert_eq!(fs::read(p).unwrap(), content);
    }
}

/// A process started by another thread holds copies of every descriptor until it execs, the failed
/// download's lock included: the partial file must still go once that copy is closed.
#[cfg(unix)]
#[test]
fn a_process_started_meanwhile_does_not_keep_the_partial_file() {
    let server = FakeHub::start(vec![repo()]);
    server.fail_get(WEIGHTS, FaultKind::Truncate, usize::MAX);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("true").status();
            }
        });
        // Nothing in the loop panics: the spawner must be stopped before any assertion.
        let (mut left_over, mut wrong) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            let Ok(cache) = tempfile::tempdir() else { continue };
            match hub(&server.endpoint(), cache.path()).get(REPO, None, WEIGHTS) {
                Err(HubError::Corrupt { .. }) => {}
                other => wrong.push(format!("{other:?}")),
            }
            left_over.extend(
                all_files(cache.path())
                    .into_iter()
                    .filter(|f| f.ends_with(".incomplete")),
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(wrong.is_empty(), "{wrong:?}");
        assert!(left_over.is_empty(), "{left_over:?}");
    });
}

#[test]
fn network_failure_names_the_endpoint_and_offline_mode() {
    let endpoint = unreachable_endpoint();
    let cache = tempfile::tempdir().unwrap();
    let err = hub(&endpoint, cache.path()).get(REPO, None, WEIGHTS).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&endpoint) && msg.contains("HF_HUB_OFFLINE=1"), "{msg}");
    let err = hub(&endpoint, cache.path()).list_files(REPO, None).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err:?}");
    assert!(blobs(cache.path(), REPO).is_empty() && snapshot_entries(cache.path(), REPO).is_empty());
}

#[test]
fn finds_a_file_cached_by_python() {
    // The layout huggingface_hub writes, made by hand.
    let cache = tempfile::tempdir().unwrap();
    let commit = "a".repeat(40);
    let rd = repo_dir(cache.path(), REPO);
    let etag = sha256_hex(&weights_bytes());
    fs::create_dir_all(rd.join("blobs")).unwrap();
    fs::create_dir_all(rd.join("refs")).unwrap();
    fs::create_dir_all(rd.join("snapshots").join(&commit)).unwrap();
    fs::write(rd.join("blobs").join(&etag), weights_bytes()).unwrap();
    fs::write(rd.join("refs/main"), &commit).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/{etag}"),
        rd.join("snapshots").join(&commit).join(WEIGHTS),
    )
    .unwrap();

    let server = FakeHub::start(vec![repo()]);
    let hub = hub(&server.endpoint(), cache.path());
    let p = hub.get(REPO, None, WEIGHTS).unwrap();
    assert_eq!(fs::read(&p).unwrap(), weights_bytes());
    assert_eq!(hub.get(REPO, Some(&commit), WEIGHTS).unwrap(), p);
    assert_eq!(server.request_count(), 0);
}

const CHILD_ENDPOINT: &str = "ZOO_HUB_TEST_CHILD_ENDPOINT";
const CHILD_CACHE: &str = "ZOO_HUB_TEST_CHILD_CACHE";

/// Run by `two_processes_download_the_same_file` in child processes; does nothing otherwise.
#[test]
fn child_download_same_file() {
    let (Ok(endpoint), Ok(cache)) = (std::env::var(CHILD_ENDPOINT), std::env::var(CHILD_CACHE)) else {
        return;
    };
    let hub = hub(&endpoint, Path::new(&cache));
    let p = hub.get(REPO, None, WEIGHTS).unwrap();
    assert_eq!(fs::read(p).unwrap(), weights_bytes(), "child got a bad file");
}

#[test]
fn two_processes_download_the_same_file() {
    let server = FakeHub::start(vec![repo()]);
    // Slow bodies, so that the two downloads overlap.
    server.set_body_delay(Duration::from_millis(400));
    let cache = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["child_download_same_file", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENDPOINT, server.endpoint())
                .env(CHILD_CACHE, cache.path())
                .env("NO_PROXY", "127.0.0.1,localhost")
                .env("no_proxy", "127.0.0.1,localhost")
                .env_remove("HF_HUB_OFFLINE")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect::<Vec<_>>() // both started before waiting for either
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect();
    for out in &children {
        assert!(
            out.status.success(),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The filter ran the child test, not zero tests.
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
    // Both went to the hub.
    let heads = server
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("HEAD /{REPO}/resolve/main/{WEIGHTS}")))
        .count();
    assert_eq!(heads, 2, "{:?}", server.requests());
    let hub = hub(&server.endpoint(), cache.path());
    let n = server.request_count();
    let p = hub.get(REPO, None, WEIGHTS).unwrap();
    assert_eq!(fs::read(p).unwrap(), weights_bytes());
    assert_eq!(server.request_count(), n);
    assert_eq!(blobs(cache.path(), REPO), vec![sha256_hex(&weights_bytes())]);
}
