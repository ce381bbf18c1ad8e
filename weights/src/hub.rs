//! Hugging Face Hub downloads with the Python cache layout.
//!
//! [`Hub`] downloads single files through [`hf_hub`] 1.x into the cache layout that Python's
//! `huggingface_hub` uses, so a file fetched by either one is found by the other:
//!
//! ```text
//! <cache_dir>/models--<owner>--<name>/
//!     blobs/<etag>                         the content (sha256 for LFS files, git blob sha1 otherwise)
//!     refs/<branch or tag>                 the commit sha the name resolved to
//!     snapshots/<commit>/<file>            relative symlink to ../../blobs/<etag>
//! ```
//!
//! What this module adds on top of `hf-hub`:
//! - the environment is resolved here ([`HubOptions::from_env`]), including `HF_HUB_OFFLINE`;
//! - a file already in the cache is returned without any request, also for branch and tag names
//!   (the ref is not refreshed; pin a commit sha or clear the ref to pick up a newer commit);
//! - every downloaded file is checked against the hub's checksum (sha256 for LFS files, the git
//!   blob sha1 otherwise) and its advertised size; a bad blob and its symlink are removed, because
//!   `hf-hub` 1.0 does not check the status of the GET nor the content;
//! - a progress bar on stderr;
//! - no request can hang: every operation runs under a watchdog (see [Timeouts](#timeouts)), and a
//!   transfer that times out, fails or is interrupted by a signal handled by [`crate::cleanup`] leaves
//!   nothing in the cache; `blobs/*.incomplete` files that a killed process left (their lock is free)
//!   are removed the first time a [`Hub`] touches that repository, offline too;
//! - errors ([`HubError`]) that say what to do next.
//!
//! # Timeouts
//!
//! `hf-hub` 1.0 sets no timeout on its HTTP clients (and one of them cannot be configured), so a server
//! that accepts a connection and never answers would hang a download forever. [`Hub`] therefore drives
//! `hf-hub`'s async client on a runtime of its own and cancels an operation (which closes its
//! connections) as soon as one of these rules is broken, `N` and `M` being
//! [`HubOptions::download_timeout`] (`HF_HUB_DOWNLOAD_TIMEOUT`, default 10 s, as in Python) and
//! [`HubOptions::etag_timeout`] (`HF_HUB_ETAG_TIMEOUT`, default 10 s):
//!
//! - metadata: the HEAD of a file (with its retries) and the file-list request must complete within `M`;
//! - the download request must bring its response headers within `N` after the metadata (plus the up
//!   to 10 s that `hf-hub` waits when another process holds the file's download lock);
//! - the body must keep moving: no `N` seconds without a byte, and every window of `N` seconds must
//!   bring at least [`MIN_BYTES_PER_WINDOW`] bytes (1 KiB), or the rest of the file if less. A body
//!   trickled at 1 B/s thus fails after `N` seconds; raising `N` lowers the minimum speed (1 KiB per
//!   `N` seconds) for a genuinely slow line.
//!
//! The error ([`HubError::Timeout`]) names the endpoint, repository and file, says what happened and how
//! far the transfer got, and which variable raises the limit.

use std::collections::HashSet;
use std::fs;
use std::future::Future;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hf_hub::progress::{DownloadEvent, FileStatus, Progress, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFError, HFRepository, RepoTypeModel};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The public Hugging Face Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// Retries after a transient failure (connect error, timeout, 408/429/5xx) by default.
const DEFAULT_RETRIES: usize = 4;

/// Default of [`HubOptions::download_timeout`] (`HF_HUB_DOWNLOAD_TIMEOUT`), as in Python's `huggingface_hub`.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`HubOptions::etag_timeout`] (`HF_HUB_ETAG_TIMEOUT`), as in Python's `huggingface_hub`.
pub const DEFAULT_ETAG_TIMEOUT: Duration = Duration::from_secs(10);
/// A download body must bring at least this many bytes (or the rest of the file) in every window of
/// [`HubOptions::download_timeout`] seconds, see [Timeouts](self#timeouts).
pub const MIN_BYTES_PER_WINDOW: u64 = 1024;
/// How long `hf-hub` itself waits for another process's download lock of the same file.
const HF_HUB_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long a failed download waits for its own lock to be free before it removes its partial file
/// (see `Hub::cleanup_incomplete`: a child process being started elsewhere holds the lock for a moment).
const OWN_LOCK_GRACE: Duration = Duration::from_millis(500);

/// Errors of [`Hub`]. Every message says what went wrong and what the user can do about it;
/// none contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Offline mode is on and the file (or the revision, when `filename` is `None`) is not cached.
    #[error(
        "{} of {repo_id} (revision {revision}) is not in the local cache ({}) and offline mode is on \
         (HF_HUB_OFFLINE=1): download it while online first, or unset HF_HUB_OFFLINE.",
        filename.as_deref().map(|f| format!("`{f}`")).unwrap_or_else(|| "the file list".to_string()),
        cache_dir.display()
    )]
    OfflineNotCached {
        /// `owner/name`.
        repo_id: String,
        /// Branch, tag or commit sha asked for.
        revision: String,
        /// The file asked for; `None` when listing files.
        filename: Option<String>,
        /// The cache searched.
        cache_dir: PathBuf,
    },

    /// The hub refused access (401 or 403).
    #[error(
        "{repo_id} on {endpoint}: access refused (HTTP {status}). {}",
        if *token_given {
            "The token given was rejected or has no access to this repository: check that it is valid \
             (HF_TOKEN, or `huggingface-cli login`) and that you accepted the repository's terms on the hub \
             if it is gated. Also check the repository name."
        } else {
            "The repository does not exist, or it is private or gated and a token is needed: set \
             HF_TOKEN=<your token> or run `huggingface-cli login`. Also check the repository name."
        }
    )]
    Unauthorized {
        /// `owner/name`.
        repo_id: String,
        /// The hub's base URL.
        endpoint: String,
        /// 401 or 403.
        status: u16,
        /// Whether a token was sent.
        token_given: bool,
    },

    /// The repository does not exist (or the token cannot see it).
    #[error("repository {repo_id} was not found on {endpoint}: check its name (`owner/name`)")]
    RepoNotFound {
        /// `owner/name`.
        repo_id: String,
        /// The hub's base URL.
        endpoint: String,
    },

    /// The branch, tag or commit does not exist in the repository.
    #[error(
        "revision `{revision}` was not found in {repo_id}: give an existing branch, tag or full 40-hex commit sha"
    )]
    RevisionNotFound {
        /// `owner/name`.
        repo_id: String,
        /// The revision asked for.
        revision: String,
    },

    /// The file does not exist in the repository at that revision.
    #[error(
        "`{filename}` does not exist in {repo_id} at revision {revision}; {}",
        if available.is_empty() {
            "the list of its files could not be fetched".to_string()
        } else {
            format!("files there: {}", available.join(", "))
        }
    )]
    FileNotFound {
        /// `owner/name`.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The missing file.
        filename: String,
        /// The files that do exist there (empty when they could not be listed).
        available: Vec<String>,
    },

    /// The hub could not be reached at all.
    #[error(
        "cannot reach the hub at {endpoint} ({reason}). Check the network connection, a proxy \
         (HTTPS_PROXY/NO_PROXY) or HF_ENDPOINT; to use only files already in the cache, set HF_HUB_OFFLINE=1"
    )]
    Network {
        /// The hub's base URL.
        endpoint: String,
        /// What the HTTP client said.
        reason: String,
    },

    /// The hub answered with a server error, also after retries.
    #[error(
        "the hub at {endpoint} answered HTTP {status} for {url}{}, also after retries: it is failing or \
         overloaded; try again later, or set HF_HUB_OFFLINE=1 to use files already in the cache",
        message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
    )]
    Server {
        /// The hub's base URL.
        endpoint: String,
        /// The HTTP status (5xx, or 429 when rate limited).
        status: u16,
        /// The URL that failed.
        url: String,
        /// The hub's error message, if any.
        message: Option<String>,
    },

    /// Any other unexpected answer of the hub.
    #[error("unexpected answer from the hub at {endpoint}: {detail}")]
    Http {
        /// The hub's base URL.
        endpoint: String,
        /// What was wrong with it.
        detail: String,
    },

    /// The download was cut short or its content does not match the hub's checksum. Nothing of
    /// it is left in the cache.
    #[error(
        "the download of `{filename}` from {repo_id} is incomplete or corrupt ({detail}); it was removed \
         from the cache. Run the command again; if this keeps happening the hub or a proxy is failing"
    )]
    Corrupt {
        /// `owner/name`.
        repo_id: String,
        /// The file.
        filename: String,
        /// Sizes and checksums, or the transfer error.
        detail: String,
    },

    /// An operation broke one of the [timeout rules](self#timeouts) and was cancelled; nothing of it was
    /// left in the cache.
    #[error(
        "{what}: {}{repo_id} on {endpoint}: {detail}. Nothing was written to the cache. If the hub or the \
         network is just slow, raise the limit with {variable}=<seconds> (now {}); otherwise check the \
         connection or proxy (HTTPS_PROXY/NO_PROXY), or set HF_HUB_OFFLINE=1 to use only cached files",
        filename.as_deref().map(|f| format!("`{f}` of ")).unwrap_or_default(),
        fmt_secs(*limit)
    )]
    Timeout {
        /// Timed out, stalled or too slow.
        what: TimeoutKind,
        /// The hub's base URL.
        endpoint: String,
        /// `owner/name`.
        repo_id: String,
        /// The file; `None` for the file list.
        filename: Option<String>,
        /// What happened, with the bytes received when a body had started.
        detail: String,
        /// The limit that was hit (its environment variable in the message).
        variable: TimeoutLimit,
        /// The limit.
        limit: Duration,
    },

    /// A signal handled by [`crate::cleanup`] interrupted the transfer, which was cancelled and removed.
    #[error(
        "the download of {} from {repo_id} was interrupted by signal {signal}; nothing was left in the cache",
        filename.as_deref().map(|f| format!("`{f}`")).unwrap_or_else(|| "the file list".to_string())
    )]
    Interrupted {
        /// `owner/name`.
        repo_id: String,
        /// The file; `None` for the file list.
        filename: Option<String>,
        /// The signal number.
        signal: i32,
    },

    /// Another process holds the download lock of this file for too long.
    #[error(
        "timed out waiting for another process downloading the same file (lock {}); wait for it to \
         finish, or remove the lock file if no download is running",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// Reading or writing the cache failed.
    #[error("cache error at {}: {source}; check that the directory is writable (HF_HUB_CACHE / HF_HOME)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The options are not usable (e.g. an endpoint that is not a URL) or the client failed otherwise.
    #[error("hub client error: {0}")]
    Client(String),
}

/// How an operation broke a [timeout rule](self#timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No complete answer within the limit.
    TimedOut,
    /// No byte arrived for the limit.
    Stalled,
    /// Bytes arrive, but slower than the minimum rate.
    TooSlow,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TimedOut => "timed out",
            Self::Stalled => "stalled",
            Self::TooSlow => "too slow",
        })
    }
}

/// Which limit of [`HubOptions`] a [`HubError::Timeout`] hit; it displays as the environment variable that
/// sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutLimit {
    /// `HF_HUB_ETAG_TIMEOUT`: metadata requests ([`HubOptions::etag_timeout`]).
    Etag,
    /// `HF_HUB_DOWNLOAD_TIMEOUT`: downloads ([`HubOptions::download_timeout`]).
    Download,
}

impl std::fmt::Display for TimeoutLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Etag => "HF_HUB_ETAG_TIMEOUT",
            Self::Download => "HF_HUB_DOWNLOAD_TIMEOUT",
        })
    }
}

/// Where and how to reach the hub. Build it with [`HubOptions::from_env`] or fill it in.
#[derive(Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL of the hub, without a trailing slash (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// The hub cache (`HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Access token, sent as `Authorization: Bearer` (`HF_TOKEN`, the file `HF_TOKEN_PATH`, `$HF_HOME/token`).
    ///
    /// With `None`, `hf-hub` 1.0 may still pick a token from the process environment by itself.
    pub token: Option<String>,
    /// Use the cache only and make no request at all (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Draw a progress bar on stderr during downloads.
    pub progress: bool,
    /// The download request must answer, and its body keep moving, within this (`HF_HUB_DOWNLOAD_TIMEOUT`,
    /// in seconds; default 10): see [Timeouts](self#timeouts).
    pub download_timeout: Duration,
    /// Metadata requests (a file's HEAD, the file list) must complete within this (`HF_HUB_ETAG_TIMEOUT`,
    /// in seconds; default 10).
    pub etag_timeout: Duration,
    /// A variable that was set to something unusable (e.g. `HF_HUB_DOWNLOAD_TIMEOUT=abc`), with why;
    /// [`Hub::new`] refuses options that have one rather than guess.
    pub invalid: Option<String>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .field("download_timeout", &self.download_timeout)
            .field("etag_timeout", &self.etag_timeout)
            .field("invalid", &self.invalid)
            .finish()
    }
}

impl HubOptions {
    /// Resolves the options from the process environment the way Python's `huggingface_hub` does;
    /// `progress` is on when stderr is a terminal.
    ///
    /// See [`HubOptions::from_lookup`] for the variables read.
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Resolves the options from `lookup` (an environment-variable getter), so that the
    /// resolution can be tested without touching the process environment:
    ///
    /// - `HF_HOME`: default `$XDG_CACHE_HOME/huggingface`, else `$HOME/.cache/huggingface`;
    /// - cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`;
    /// - endpoint: `HF_ENDPOINT` (trailing `/` removed), else `https://huggingface.co`;
    /// - token: `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the content of the file named by
    ///   `HF_TOKEN_PATH`, else of `$HF_HOME/token` (trimmed; empty means none); none at all when
    ///   `HF_HUB_DISABLE_IMPLICIT_TOKEN` is true;
    /// - offline: `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is `1`, `true`, `yes` or `on`;
    /// - timeouts: `HF_HUB_DOWNLOAD_TIMEOUT` and `HF_HUB_ETAG_TIMEOUT`, in seconds (decimals allowed,
    ///   more than 0 and at most a week); anything else is recorded in [`HubOptions::invalid`].
    ///
    /// Paths starting with `~/` are expanded with `HOME`. Empty variables count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let home = get("HOME").unwrap_or_else(|| "/tmp".to_string());
        let expand = |p: String| -> PathBuf {
            if p == "~" {
                PathBuf::from(&home)
            } else if let Some(rest) = p.strip_prefix("~/") {
                Path::new(&home).join(rest)
            } else {
                PathBuf::from(p)
            }
        };
        let hf_home = get("HF_HOME").map(&expand).unwrap_or_else(|| {
            get("XDG_CACHE_HOME")
                .map(&expand)
                .unwrap_or_else(|| Path::new(&home).join(".cache"))
                .join("huggingface")
        });
        let cache_dir = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(&expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let read_token = |path: PathBuf| -> Option<String> {
            let t = fs::read_to_string(path).ok()?;
            let t = t.trim();
            (!t.is_empty()).then(|| t.to_string())
        };
        let token = if get("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some_and(|v| is_true(&v)) {
            None
        } else {
            get("HF_TOKEN")
                .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
                .map(|t| t.trim().to_string())
                .or_else(|| get("HF_TOKEN_PATH").and_then(|p| read_token(expand(p))))
                .or_else(|| read_token(hf_home.join("token")))
        };
        let offline = get("HF_HUB_OFFLINE")
            .or_else(|| get("TRANSFORMERS_OFFLINE"))
            .is_some_and(|v| is_true(&v));
        let mut invalid = None;
        let mut timeout = |key: &str, default: Duration| match get(key) {
            None => default,
            Some(v) => match parse_seconds(&v) {
                Ok(d) => d,
                Err(why) => {
                    invalid.get_or_insert_with(|| format!("{key}={v:?} {why}"));
                    default
                }
            },
        };
        let download_timeout = timeout("HF_HUB_DOWNLOAD_TIMEOUT", DEFAULT_DOWNLOAD_TIMEOUT);
        let etag_timeout = timeout("HF_HUB_ETAG_TIMEOUT", DEFAULT_ETAG_TIMEOUT);
        HubOptions {
            endpoint,
            cache_dir,
            token,
            offline,
            progress: std::io::stderr().is_terminal(),
            download_timeout,
            etag_timeout,
            invalid,
        }
    }
}

/// Seconds as Python's `float()` reads them, more than 0 and at most a week.
fn parse_seconds(v: &str) -> Result<Duration, &'static str> {
    let s: f64 = v.trim().parse().map_err(|_| "is not a number of seconds")?;
    if !(s > 0.0 && s <= 7.0 * 86400.0) {
        return Err("is not a number of seconds between 0 (excluded) and 604800 (a week)");
    }
    Ok(Duration::from_secs_f64(s))
}

/// `10 s`, `0.5 s`.
fn fmt_secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn is_true(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// A Hugging Face Hub client bound to one cache, endpoint and token.
pub struct Hub {
    opts: HubOptions,
    client: HFClient,
    /// Drives `client`; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// Repositories whose stale `.incomplete` files were already swept by this client.
    swept: Mutex<HashSet<String>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Not a plain drop: that blocks, and panics inside an async context.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("opts", &self.opts).finish()
    }
}

impl Hub {
    /// A client with these options. Makes no request.
    pub fn new(opts: HubOptions) -> Result<Self, HubError> {
        Self::with_retries(opts, DEFAULT_RETRIES)
    }

    /// Like [`Hub::new`], retrying a transient failure (connect error, timeout, 408/429/5xx) at
    /// most `retries` times (exponential backoff from 0.2 s); `0` means a single try.
    pub fn with_retries(opts: HubOptions, retries: usize) -> Result<Self, HubError> {
        let mut builder = HFClient::builder()
            .endpoint(opts.endpoint.trim_end_matches('/'))
            .cache_dir(&opts.cache_dir)
            .retry_max_attempts(retries)
            .retry_base_delay(Duration::from_millis(100))
            .user_agent(concat!("zoo-weights/", env!("CARGO_PKG_VERSION"), "; hf-hub/1"));
        if let Some(token) = &opts.token {
            builder = builder.token(token.clone());
        }
        if let Some(why) = &opts.invalid {
            return Err(HubError::Client(why.clone()));
        }
        let client = builder
            .build()
            .map_err(|e| HubError::Client(format!("cannot use the endpoint `{}`: {e}", opts.endpoint)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HubError::Client(format!("cannot start the HTTP runtime: {e}")))?;
        Ok(Hub {
            opts,
            client,
            runtime: Some(runtime),
            swept: Mutex::new(HashSet::new()),
        })
    }

    /// [`Hub::new`] with [`HubOptions::from_env`].
    pub fn from_env() -> Result<Self, HubError> {
        Self::new(HubOptions::from_env())
    }

    /// The options this client uses.
    pub fn options(&self) -> &HubOptions {
        &self.opts
    }

    /// Path of the file in the snapshot dir, downloading it unless cached. revision None = "main".
    ///
    /// A cached file is returned without any request, also when `revision` is a branch or tag
    /// that was resolved before (through `refs/`). Otherwise the file is downloaded, checked
    /// against the hub's size and checksum, and linked into `snapshots/<commit>/`. In offline mode
    /// an uncached file is [`HubError::OfflineNotCached`].
    pub fn get(&self, repo_id: &str, revision: Option<&str>, filename: &str) -> Result<PathBuf, HubError> {
        let revision = revision.unwrap_or(DEFAULT_REVISION);
        if let Some(path) = self.cached(repo_id, Some(revision), filename) {
            return Ok(path);
        }
        if self.opts.offline {
            // Known not to exist (Python's `.no_exist` marker, written when the hub answered 404).
            if let Some(marker) = self.no_exist_marker(repo_id, revision, filename) {
                if marker.is_file() {
                    return Err(HubError::FileNotFound {
                        repo_id: repo_id.to_string(),
                        revision: revision.to_string(),
                        filename: filename.to_string(),
                        available: vec![],
                    });
                }
            }
            return Err(HubError::OfflineNotCached {
                repo_id: repo_id.to_string(),
                revision: revision.to_string(),
                filename: Some(filename.to_string()),
                cache_dir: self.opts.cache_dir.clone(),
            });
        }
        // A signal handler installed by `cleanup::install` waits for this guard: the partial download is
        // removed before the process exits.
        let busy = crate::cleanup::Busy::start();
        let handler = std::sync::Arc::new(DownloadProgress::new(filename, self.opts.progress));
        let progress: Progress = handler.clone().into();
        let repo = self.repo(repo_id);
        let download = repo
            .download_file()
            .filename(filename)
            .revision(revision)
            .progress(progress)
            .send();
        let result = self.watched(download, &handler.watch, repo_id, Some(filename));
        handler.finish();
        let result = match result {
            Ok(r) => r,
            Err(stop) => {
                // The transfer was cancelled: its lock is free now, so its `.incomplete` file goes.
                self.cleanup_incomplete(repo_id, OWN_LOCK_GRACE);
                drop(busy);
                return Err(self.stopped(stop, repo_id, Some(filename)));
            }
        };
        match result {
            Ok(path) => {
                if let Err(detail) = verify_snapshot_file(&path, handler.expected_size()) {
                    self.cleanup_incomplete(repo_id, OWN_LOCK_GRACE);
                    return Err(HubError::Corrupt {
                        repo_id: repo_id.to_string(),
                        filename: filename.to_string(),
                        detail,
                    });
                }
                Ok(path)
            }
            Err(e) => {
                self.cleanup_incomplete(repo_id, OWN_LOCK_GRACE);
                let err = self.map_download_error(e, repo_id, revision, filename);
                if matches!(err, HubError::FileNotFound { .. }) {
                    // Remember the 404 the way Python does, so that offline runs know the file is absent.
                    if let Some(marker) = self.no_exist_marker(repo_id, revision, filename) {
                        let _ = marker.parent().map(fs::create_dir_all);
                        let _ = fs::File::create(&marker);
                    }
                }
                Err(err)
            }
        }
    }

    /// `<repo>/.no_exist/<commit>/<file>`: Python's record that the file does not exist at that commit
    /// (`None` when the revision's commit is not known locally).
    fn no_exist_marker(&self, repo_id: &str, revision: &str, filename: &str) -> Option<PathBuf> {
        let commit = self.cached_commit(repo_id, revision)?;
        Some(self.repo_dir(repo_id).join(".no_exist").join(commit).join(filename))
    }

    /// The cached path if present, never touching the network.
    ///
    /// A commit sha is looked up in `snapshots/` directly, a branch or tag through `refs/`. The first
    /// call for a repository also removes the partial downloads that killed processes left in it.
    pub fn cached(&self, repo_id: &str, revision: Option<&str>, filename: &str) -> Option<PathBuf> {
        self.sweep(repo_id);
        let revision = revision.unwrap_or(DEFAULT_REVISION);
        let commit = self.cached_commit(repo_id, revision)?;
        let path = self.repo_dir(repo_id).join("snapshots").join(commit).join(filename);
        // `is_file` follows the symlink: a dangling link is not a cached file.
        path.is_file().then_some(path)
    }

    /// File names in the repo at that revision (from the API; from the cached snapshot when offline).
    ///
    /// Offline, these are only the files of that snapshot that were downloaded.
    pub fn list_files(&self, repo_id: &str, revision: Option<&str>) -> Result<Vec<String>, HubError> {
        let revision = revision.unwrap_or(DEFAULT_REVISION);
        self.sweep(repo_id);
        if self.opts.offline {
            let offline_err = || HubError::OfflineNotCached {
                repo_id: repo_id.to_string(),
                revision: revision.to_string(),
                filename: None,
                cache_dir: self.opts.cache_dir.clone(),
            };
            let commit = self.cached_commit(repo_id, revision).ok_or_else(offline_err)?;
            let dir = self.repo_dir(repo_id).join("snapshots").join(commit);
            if !dir.is_dir() {
                return Err(offline_err());
            }
            let mut files = Vec::new();
            walk_files(&dir, &dir, &mut files).map_err(|source| HubError::Io {
                path: dir.clone(),
                source,
            })?;
            files.sort();
            return Ok(files);
        }
        let busy = crate::cleanup::Busy::start();
        let repo = self.repo(repo_id);
        let request = repo.info().revision(revision).send();
        let info = self.watched(request, &Watch::new(), repo_id, None);
        drop(busy);
        let info = info
            .map_err(|stop| self.stopped(stop, repo_id, None))?
            .map_err(|e| self.map_error(e, repo_id, revision))?;
        let mut files: Vec<String> = info
            .siblings
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.rfilename)
            .collect();
        files.sort();
        Ok(files)
    }

    fn repo(&self, repo_id: &str) -> HFRepository<RepoTypeModel> {
        let (owner, name) = hf_hub::split_id(repo_id);
        self.client.model(owner, name)
    }

    /// Runs `op` on this client's runtime under the watchdog: it is cancelled (dropped, which closes its
    /// connections and releases its download lock) when `watch` reports a broken rule or a handled signal
    /// arrives.
    ///
    /// The runtime is driven from a short-lived thread, so this also works when called from inside
    /// another async runtime.
    fn watched<F>(&self, op: F, watch: &Watch, repo_id: &str, filename: Option<&str>) -> Result<F::Output, Stop>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(Stop::Closed);
        };
        let shortest = self.opts.download_timeout.min(self.opts.etag_timeout);
        let tick = (shortest / 20).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let locks = self.lock_dir(repo_id);
        let _ = filename;
        let task = async {
            let mut op = std::pin::pin!(op);
            loop {
                match tokio::time::timeout(tick, op.as_mut()).await {
                    Ok(out) => return Ok(out),
                    Err(_) => {
                        if let Some(signal) = crate::cleanup::interrupted() {
                            return Err(Stop::Signal(signal));
                        }
                        if let Some(stall) = watch.check(Instant::now(), &self.opts, &locks) {
                            return Err(Stop::Stall(stall));
                        }
                    }
                }
            }
        };
        std::thread::scope(|s| match s.spawn(|| runtime.block_on(task)).join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }

    /// The error for a cancelled operation. For a signal, blocks until the handler ends the process.
    fn stopped(&self, stop: Stop, repo_id: &str, filename: Option<&str>) -> HubError {
        let filename = filename.map(str::to_string);
        let repo_id = repo_id.to_string();
        match stop {
            Stop::Signal(signal) => {
                crate::cleanup::wait_for_exit_if_interrupted();
                HubError::Interrupted {
                    repo_id,
                    filename,
                    signal,
                }
            }
            Stop::Stall(s) => HubError::Timeout {
                what: s.what,
                endpoint: self.opts.endpoint.clone(),
                repo_id,
                filename,
                detail: s.detail,
                variable: s.variable,
                limit: s.limit,
            },
            Stop::Closed => HubError::Client("the client is shutting down".to_string()),
        }
    }

    /// `<cache>/.locks/models--owner--name`, where `hf-hub` keeps the download locks of a repository.
    fn lock_dir(&self, repo_id: &str) -> PathBuf {
        let repo_dir = self.repo_dir(repo_id);
        let folder = repo_dir.file_name().map(|f| f.to_owned()).unwrap_or_default();
        self.opts.cache_dir.join(".locks").join(folder)
    }

    /// Removes the stale partial downloads of `repo_id`, once per repository and client.
    fn sweep(&self, repo_id: &str) {
        let first = self
            .swept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(repo_id.to_string());
        if first {
            self.cleanup_incomplete(repo_id, Duration::ZERO);
        }
    }

    /// `<cache>/models--owner--name`, as Python names it.
    fn repo_dir(&self, repo_id: &str) -> PathBuf {
        let folder = std::iter::once("models")
            .chain(repo_id.split('/'))
            .collect::<Vec<_>>()
            .join("--");
        self.opts.cache_dir.join(folder)
    }

    fn cached_commit(&self, repo_id: &str, revision: &str) -> Option<String> {
        if is_commit_sha(revision) {
            return Some(revision.to_ascii_lowercase());
        }
        let r = fs::read_to_string(self.repo_dir(repo_id).join("refs").join(revision)).ok()?;
        let r = r.trim();
        is_commit_sha(r).then(|| r.to_string())
    }

    /// Removes `blobs/*.incomplete` files that no process is writing (their `hf-hub` lock is free):
    /// what an interrupted transfer or a killed process leaves behind. Best effort (a read-only cache
    /// keeps them).
    ///
    /// `grace` is how long a held lock is waited for. After this process's own transfer failed, its
    /// lock is normally free at once, but a child process that another thread is starting at that moment
    /// holds a copy of the lock's descriptor until it execs (a `fork` copies every descriptor, close-on-exec
    /// ones included), so the lock can stay held for a few milliseconds after our transfer dropped it. A
    /// lock held longer than `grace` belongs to another download, whose file stays.
    fn cleanup_incomplete(&self, repo_id: &str, grace: Duration) {
        let repo_dir = self.repo_dir(repo_id);
        let Some(folder) = repo_dir.file_name().map(|f| f.to_owned()) else {
            return;
        };
        let Ok(entries) = fs::read_dir(repo_dir.join("blobs")) else {
            return;
        };
        let lock_dir = self.opts.cache_dir.join(".locks").join(&folder);
        let mut held: Vec<(PathBuf, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let etag = name.to_str()?.strip_suffix(".incomplete")?;
                Some((entry.path(), lock_dir.join(format!("{etag}.lock"))))
            })
            .collect();
        let start = Instant::now();
        loop {
            held.retain(|(file, lock)| !remove_if_unlocked(file, lock));
            if held.is_empty() || start.elapsed() >= grace {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn map_download_error(&self, e: HFError, repo_id: &str, revision: &str, filename: &str) -> HubError {
        match e {
            HFError::EntryNotFound { .. } => {
                // A missing revision is answered like a missing file: ask the API which one it is.
                match self.list_files(repo_id, Some(revision)) {
                    Ok(available) => HubError::FileNotFound {
                        repo_id: repo_id.to_string(),
                        revision: revision.to_string(),
                        filename: filename.to_string(),
                        available,
                    },
                    Err(
                        err @ (HubError::RevisionNotFound { .. }
                        | HubError::RepoNotFound { .. }
                        | HubError::Unauthorized { .. }),
                    ) => err,
                    Err(_) => HubError::FileNotFound {
                        repo_id: repo_id.to_string(),
                        revision: revision.to_string(),
                        filename: filename.to_string(),
                        available: Vec::new(),
                    },
                }
            }
            HFError::Request { ref source, .. } if source.is_body() || source.is_decode() => HubError::Corrupt {
                repo_id: repo_id.to_string(),
                filename: filename.to_string(),
                detail: format!("the transfer was cut short: {}", error_chain(source)),
            },
            e => self.map_error(e, repo_id, revision),
        }
    }

    fn map_error(&self, e: HFError, repo_id: &str, revision: &str) -> HubError {
        let endpoint = self.opts.endpoint.clone();
        let repo_not_found = || HubError::RepoNotFound {
            repo_id: repo_id.to_string(),
            endpoint: endpoint.clone(),
        };
        match e {
            HFError::AuthRequired { context } => HubError::Unauthorized {
                repo_id: repo_id.to_string(),
                endpoint,
                status: context.status.as_u16(),
                token_given: self.opts.token.is_some(),
            },
            HFError::Forbidden { context } => HubError::Unauthorized {
                repo_id: repo_id.to_string(),
                endpoint,
                status: context.status.as_u16(),
                token_given: self.opts.token.is_some(),
            },
            HFError::RepoNotFound { .. } => repo_not_found(),
            HFError::RevisionNotFound { context, .. } => {
                if context.as_ref().and_then(|c| c.error_code.as_deref()) == Some("RepoNotFound") {
                    repo_not_found()
                } else {
                    HubError::RevisionNotFound {
                        repo_id: repo_id.to_string(),
                        revision: revision.to_string(),
                    }
                }
            }
            HFError::EntryNotFound { path, .. } => HubError::FileNotFound {
                repo_id: repo_id.to_string(),
                revision: revision.to_string(),
                filename: path,
                available: Vec::new(),
            },
            HFError::RateLimited { context, .. } => HubError::Server {
                endpoint,
                status: context.status.as_u16(),
                url: context.url.clone(),
                message: Some(
                    context
                        .server_message
                        .clone()
                        .unwrap_or_else(|| "rate limited".to_string()),
                ),
            },
            HFError::Http { context } if context.status.is_server_error() => HubError::Server {
                endpoint,
                status: context.status.as_u16(),
                url: context.url.clone(),
                message: context.server_message.clone(),
            },
            HFError::Http { context } => match context.error_code.as_deref() {
                Some("RepoNotFound") => repo_not_found(),
                Some("RevisionNotFound") => HubError::RevisionNotFound {
                    repo_id: repo_id.to_string(),
                    revision: revision.to_string(),
                },
                _ => HubError::Http {
                    endpoint,
                    detail: format!(
                        "HTTP {} for {}{}",
                        context.status,
                        context.url,
                        context
                            .server_message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                },
            },
            HFError::Request { source, .. } => HubError::Network {
                endpoint,
                reason: error_chain(&source),
            },
            HFError::CacheLockTimeout { path } => HubError::Locked { path },
            HFError::Io(source) => HubError::Io {
                path: self.repo_dir(repo_id),
                source,
            },
            HFError::LocalEntryNotFound { path } => HubError::OfflineNotCached {
                repo_id: repo_id.to_string(),
                revision: revision.to_string(),
                filename: Some(path),
                cache_dir: self.opts.cache_dir.clone(),
            },
            HFError::MalformedResponse { what, url } => HubError::Http {
                endpoint,
                detail: format!("{what}{}", url.map(|u| format!(" ({u})")).unwrap_or_default()),
            },
            HFError::Json(e) => HubError::Http {
                endpoint,
                detail: format!("invalid JSON: {e}"),
            },
            other => HubError::Client(other.to_string()),
        }
    }
}

/// `error: cause: cause`, as the top-level message of reqwest errors is often vague.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn walk_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// Checks the blob behind `snapshot` against its name (the etag: sha256 for LFS files, git blob
/// sha1 otherwise) and `expected_size`. On a mismatch removes the blob and the symlink and says
/// what was wrong.
fn verify_snapshot_file(snapshot: &Path, expected_size: Option<u64>) -> Result<(), String> {
    // Another process may be re-creating the same symlink (remove + create): retry briefly.
    let mut link = fs::read_link(snapshot);
    for _ in 0..20 {
        match &link {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(50));
                link = fs::read_link(snapshot);
            }
            _ => break,
        }
    }
    let (blob, etag) = match link {
        Ok(target) => {
            let blob = snapshot.parent().map(|p| p.join(&target)).unwrap_or(target);
            let etag = blob
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            (blob, etag)
        }
        // Not a symlink (a copy, as on Windows): only the size can be checked.
        Err(_) => (snapshot.to_path_buf(), String::new()),
    };
    let bad = |detail: String| -> Result<(), String> {
        let _ = fs::remove_file(&blob);
        let _ = fs::remove_file(snapshot);
        Err(detail)
    };
    let size = match fs::metadata(&blob) {
        Ok(m) => m.len(),
        Err(e) => return bad(format!("the downloaded blob {} cannot be read: {e}", blob.display())),
    };
    if let Some(expected) = expected_size {
        if size != expected {
            let hint = server_text_hint(&blob);
            return bad(format!("got {size} bytes, the hub announced {expected}{hint}"));
        }
    }
    let actual = if is_sha256(&etag) {
        hash_file::<sha2::Sha256>(&blob, None)
    } else if is_commit_sha(&etag) {
        hash_file::<sha1::Sha1>(&blob, Some(format!("blob {size}\0").as_bytes()))
    } else {
        return Ok(());
    };
    match actual {
        Ok(actual) if actual == etag => Ok(()),
        Ok(actual) => {
            let kind = if etag.len() == 64 { "sha256" } else { "git sha1" };
            let hint = server_text_hint(&blob);
            bad(format!("{kind} is {actual}, the hub announced {etag}{hint}"))
        }
        Err(e) => bad(format!("the downloaded blob {} cannot be read: {e}", blob.display())),
    }
}

/// When a bad blob is a short text (an error page saved by `hf-hub` 1.0, which does not check the
/// GET status), a quote of it.
fn server_text_hint(blob: &Path) -> String {
    let Ok(mut f) = fs::File::open(blob) else {
        return String::new();
    };
    let mut buf = Vec::new();
    if f.by_ref().take(4097).read_to_end(&mut buf).is_err() || buf.len() > 4096 || buf.is_empty() {
        return String::new();
    }
    match std::str::from_utf8(&buf) {
        Ok(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            let text: String = text.trim().chars().take(200).collect();
            format!("; the server sent instead: {text:?}")
        }
        _ => String::new(),
    }
}

fn hash_file<D: sha1::Digest>(path: &Path, prefix: Option<&[u8]>) -> std::io::Result<String> {
    let mut hasher = D::new();
    if let Some(p) = prefix {
        hasher.update(p);
    }
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Why the watchdog cancelled an operation.
enum Stop {
    /// A signal handled by [`crate::cleanup`].
    Signal(i32),
    /// A broken timeout rule.
    Stall(Stall),
    /// The client is being dropped.
    Closed,
}

/// A broken timeout rule, in words for [`HubError::Timeout`].
struct Stall {
    what: TimeoutKind,
    detail: String,
    variable: TimeoutLimit,
    limit: Duration,
}

/// Where an operation is, as far as its progress events tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the file's metadata arrived (its HEAD), or a metadata-only request.
    Metadata,
    /// Metadata known; waiting for the download lock and the download's response headers.
    Request,
    /// Receiving the body.
    Body,
    /// All bytes received (or none needed): only local work is left.
    Done,
}

#[derive(Debug)]
struct WatchState {
    phase: Phase,
    /// When the current phase started.
    since: Instant,
    /// Announced size (0 = unknown) and bytes received.
    total: u64,
    bytes: u64,
    /// When the last byte arrived.
    last_byte: Instant,
    /// The current minimum-progress window: its start and the bytes received when it started.
    window_start: Instant,
    window_bytes: u64,
}

/// Liveness of one operation: fed by `hf-hub`'s progress events, checked by [`Hub::watched`].
#[derive(Debug)]
struct Watch(Mutex<WatchState>);

impl Watch {
    fn new() -> Self {
        let now = Instant::now();
        Watch(Mutex::new(WatchState {
            phase: Phase::Metadata,
            since: now,
            total: 0,
            bytes: 0,
            last_byte: now,
            window_start: now,
            window_bytes: 0,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metadata arrived; `total` bytes are to come.
    fn metadata_done(&self, total: u64) {
        let mut s = self.state();
        if s.phase == Phase::Metadata {
            s.phase = Phase::Request;
            s.since = Instant::now();
            s.total = total;
        }
    }

    /// `bytes` of the body received so far; `complete` once all are.
    fn body(&self, bytes: u64, complete: bool) {
        let mut s = self.state();
        let now = Instant::now();
        if complete {
            s.phase = Phase::Done;
            return;
        }
        if matches!(s.phase, Phase::Metadata | Phase::Request) {
            s.phase = Phase::Body;
            s.since = now;
            s.last_byte = now;
            s.window_start = now;
            s.window_bytes = bytes;
        }
        if bytes > s.bytes {
            s.bytes = bytes;
            s.last_byte = now;
        }
    }

    /// Which rule of [Timeouts](self#timeouts) is broken at `now`, if any. `locks` is the repository's
    /// lock directory (a lock held there by another process extends the wait for the download request).
    fn check(&self, now: Instant, opts: &HubOptions, locks: &Path) -> Option<Stall> {
        let mut s = self.state();
        let (n, m) = (opts.download_timeout, opts.etag_timeout);
        let download = |what, detail| Stall {
            what,
            detail,
            variable: TimeoutLimit::Download,
            limit: n,
        };
        match s.phase {
            Phase::Metadata if now.duration_since(s.since) >= m => Some(Stall {
                what: TimeoutKind::TimedOut,
                detail: format!("the metadata request got no complete answer within {}", fmt_secs(m)),
                variable: TimeoutLimit::Etag,
                limit: m,
            }),
            Phase::Request if now.duration_since(s.since) >= n => {
                let waited = now.duration_since(s.since);
                if waited < n + HF_HUB_LOCK_WAIT && lock_held_elsewhere(locks) {
                    return None;
                }
                Some(download(
                    TimeoutKind::TimedOut,
                    format!("the download request got no answer within {}", fmt_secs(n)),
                ))
            }
            Phase::Body if now.duration_since(s.last_byte) >= n => Some(download(
                TimeoutKind::Stalled,
                format!(
                    "no data arrived for {} after {}",
                    fmt_secs(n),
                    fmt_progress(s.bytes, s.total)
                ),
            )),
            Phase::Body if now.duration_since(s.window_start) >= n => {
                let got = s.bytes - s.window_bytes;
                let left = if s.total > 0 {
                    s.total.saturating_sub(s.window_bytes)
                } else {
                    u64::MAX
                };
                if got < MIN_BYTES_PER_WINDOW.min(left) {
                    return Some(download(
                        TimeoutKind::TooSlow,
                        format!(
                            "only {got} bytes arrived in the last {} (the minimum is {MIN_BYTES_PER_WINDOW} \
                             bytes per {}), after {}",
                            fmt_secs(n),
                            fmt_secs(n),
                            fmt_progress(s.bytes, s.total)
                        ),
                    ));
                }
                s.window_start = now;
                s.window_bytes = s.bytes;
                None
            }
            _ => None,
        }
    }
}

/// `5000 of 65659 bytes`.
fn fmt_progress(bytes: u64, total: u64) -> String {
    if total > 0 {
        format!("{bytes} of {total} bytes")
    } else {
        format!("{bytes} bytes (size unknown)")
    }
}

/// Removes the partial download `file` if no process holds its `hf-hub` lock `lock` (or there is no lock
/// file: nobody can be writing it). True when that is settled: the file removed (best effort), or its lock
/// cannot be opened (a read-only cache keeps the file); false while another descriptor holds the lock.
fn remove_if_unlocked(file: &Path, lock: &Path) -> bool {
    match fs::OpenOptions::new().write(true).open(lock) {
        // A lock file nobody holds: its writer ended or died.
        Ok(l) => {
            if l.try_lock().is_ok() {
                let _ = fs::remove_file(file);
                true
            } else {
                false
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = fs::remove_file(file);
            true
        }
        Err(_) => true,
    }
}

/// Whether another process holds a lock on a file in `dir` (Linux: from `/proc/locks`; elsewhere
/// assumed, so the wait for `hf-hub`'s lock is always allowed for).
fn lock_held_elsewhere(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = fs::read_dir(dir) else { return false };
        let inodes: HashSet<u64> = entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.ino())
            .collect();
        let Ok(locks) = fs::read_to_string("/proc/locks") else {
            return true;
        };
        let me = std::process::id().to_string();
        // `1: FLOCK  ADVISORY  WRITE 4242 00:2f:1234567 0 EOF`; waiters have an extra `->` field.
        locks.lines().any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() >= 6
                && f[1] != "->"
                && f[4] != me
                && f[5]
                    .rsplit(':')
                    .next()
                    .and_then(|i| i.parse::<u64>().ok())
                    .is_some_and(|i| inodes.contains(&i))
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        true
    }
}

/// `hf-hub` progress events → an indicatif bar on stderr and the [`Watch`]; also records the size the
/// hub announced.
struct DownloadProgress {
    filename: String,
    show: bool,
    /// Size from `X-Linked-Size` / `Content-Length`; 0 = unknown.
    expected: AtomicU64,
    bar: Mutex<Option<ProgressBar>>,
    watch: Watch,
}

impl DownloadProgress {
    fn new(filename: &str, show: bool) -> Self {
        DownloadProgress {
            filename: filename.to_string(),
            show,
            expected: AtomicU64::new(0),
            bar: Mutex::new(None),
            watch: Watch::new(),
        }
    }

    fn expected_size(&self) -> Option<u64> {
        Some(self.expected.load(Ordering::SeqCst)).filter(|&n| n > 0)
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

impl ProgressHandler for DownloadProgress {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(event) = event else {
            return;
        };
        match event {
            DownloadEvent::Start { total_bytes, .. } => {
                self.expected.store(*total_bytes, Ordering::SeqCst);
                self.watch.metadata_done(*total_bytes);
            }
            DownloadEvent::Progress { files } => {
                for f in files {
                    self.watch.body(f.bytes_completed, f.status == FileStatus::Complete);
                }
                if !self.show {
                    return;
                }
                let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
                for f in files {
                    // A bar only for a real transfer: `Started` is sent right before the GET.
                    if bar.is_none() && f.status == FileStatus::Started {
                        let b = ProgressBar::with_draw_target(Some(f.total_bytes), ProgressDrawTarget::stderr());
                        if let Ok(style) =
                            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                        {
                            b.set_style(style.progress_chars("=> "));
                        }
                        b.set_message(self.filename.clone());
                        *bar = Some(b);
                    }
                    if let Some(b) = bar.as_ref() {
                        b.set_position(f.bytes_completed);
                    }
                }
            }
            _ => {}
        }
    }
}
