//! A fake Hugging Face Hub for tests.
//!
//! [`FakeHub::start`] serves a few [`FakeRepo`]s on `127.0.0.1` (a free port) from a background
//! thread, answering with the headers of the real hub, as `hf-hub` 1.x and Python's
//! `huggingface_hub` expect them:
//!
//! | request | answer |
//! |---|---|
//! | HEAD/GET `/{owner}/{name}/resolve/{rev}/{file}`, small file | 200, `ETag: "<git blob sha1>"`, `X-Repo-Commit`, `Content-Length` |
//! | same, file of [`LFS_THRESHOLD`] bytes or more | 302 to `/__cdn__/<sha256>`, `X-Linked-Etag: "<sha256>"`, `X-Linked-Size`, `X-Repo-Commit` |
//! | GET `/__cdn__/<sha256>` | 200 with the bytes |
//! | `If-None-Match` equal to the etag | 304 |
//! | missing file / missing revision | 404, `X-Error-Code: EntryNotFound` (with `X-Repo-Commit`) / `RevisionNotFound` |
//! | missing repo, or private repo without [`FAKE_TOKEN`] | 401 without a token, 404 with one; `X-Error-Code: RepoNotFound` |
//! | GET `/api/models/{owner}/{name}[/revision/{rev}]` | JSON `{id, sha, private, siblings: [{rfilename}]}` |
//!
//! It never sends `X-Xet-Hash`. Every connection is closed after one answer. Failures are
//! scripted with [`FakeHub::inject`]. Tests that use it should set `NO_PROXY=127.0.0.1,localhost`
//! in the environment of the test run (reqwest applies `HTTP_PROXY` even to loopback addresses).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha1::Digest as _;

/// Files of this size or more are served as LFS files (302 to the CDN route, sha256 etag).
pub const LFS_THRESHOLD: usize = 1024;

/// The token that opens private repositories of a [`FakeHub`].
pub const FAKE_TOKEN: &str = "hf_fakeZooTokenDoNotPrint0123456789";

/// Hex sha256 of `data`: the etag (and blob name) of an LFS file.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

/// Hex git blob sha1 of `data` (`sha1("blob <len>\0" + data)`): the etag of a small file.
pub fn git_blob_sha1(data: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex(&h.finalize())
}

/// The etag under which the hub serves `data` (and the name of its blob in the cache).
pub fn etag_of(data: &[u8]) -> String {
    if data.len() >= LFS_THRESHOLD {
        sha256_hex(data)
    } else {
        git_blob_sha1(data)
    }
}

/// An endpoint where nothing listens (a port that was free a moment ago).
pub fn unreachable_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A repository of a [`FakeHub`]: one commit, with branch and tag names pointing at it.
#[derive(Debug, Clone)]
pub struct FakeRepo {
    /// `owner/name`.
    pub id: String,
    /// The commit sha (40 hex digits) every branch and tag points at.
    pub commit: String,
    /// Path in the repo and content.
    pub files: Vec<(String, Vec<u8>)>,
    /// Answers 401 (`RepoNotFound`) unless the request carries `Authorization: Bearer` [`FAKE_TOKEN`].
    pub private: bool,
    /// Branch names (`main` by default).
    pub branches: Vec<String>,
    /// Tag names.
    pub tags: Vec<String>,
}

impl FakeRepo {
    /// A public repo with a branch `main`; the commit sha is derived from the id.
    pub fn new(id: &str, files: Vec<(&str, Vec<u8>)>) -> Self {
        let commit = hex(&sha1::Sha1::digest(format!("commit of {id}").as_bytes()));
        FakeRepo {
            id: id.to_string(),
            commit,
            files: files.into_iter().map(|(n, d)| (n.to_string(), d)).collect(),
            private: false,
            branches: vec!["main".to_string()],
            tags: Vec::new(),
        }
    }

    /// Makes it private.
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// Sets the commit sha (40 hex digits).
    pub fn with_commit(mut self, commit: &str) -> Self {
        assert!(
            commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a commit sha"
        );
        self.commit = commit.to_ascii_lowercase();
        self
    }

    /// Adds a branch name.
    pub fn with_branch(mut self, name: &str) -> Self {
        self.branches.push(name.to_string());
        self
    }

    /// Adds a tag name.
    pub fn with_tag(mut self, name: &str) -> Self {
        self.tags.push(name.to_string());
        self
    }

    fn resolve(&self, rev: &str) -> Option<&str> {
        let hit = rev.eq_ignore_ascii_case(&self.commit)
            || self.branches.iter().any(|b| b == rev)
            || self.tags.iter().any(|t| t == rev);
        hit.then_some(self.commit.as_str())
    }
}

/// Which requests a [`Fault`] hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// HEAD of a resolve URL.
    Head,
    /// The GET that carries a file's bytes (the resolve GET of a small file, the CDN GET of an LFS file).
    Get,
    /// The JSON API.
    Api,
    /// Every request.
    Any,
}

/// What a [`Fault`] does to the answer. HEAD and API requests only know [`FaultKind::Status`] and
/// [`FaultKind::NoAnswer`] (other kinds are used up without effect there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status and a JSON error body (`{"error": ...}`), without the usual headers.
    Status(u16),
    /// Announce the full `Content-Length` but send only half the body, then close.
    Truncate,
    /// Send a body of the right length whose bytes differ from the file (so its sha differs).
    WrongBody,
    /// Accept the connection, read the request and never answer (the connection stays open until the
    /// client closes it or the hub is dropped).
    NoAnswer,
    /// Send the headers at once, then the body at this many bytes per second (at least 1), one small
    /// write at a time, until done, the client leaves or the hub is dropped.
    Trickle(u32),
    /// Send the headers and this many bytes of the body, then nothing more, holding the connection open.
    StallAfter(usize),
}

/// A scripted failure, see [`FakeHub::inject`].
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests for this file (path in the repo); `None` = any.
    pub file: Option<String>,
    /// Which requests.
    pub target: FaultTarget,
    /// What happens.
    pub kind: FaultKind,
    /// How many matching requests it hits (`usize::MAX` = all).
    pub times: usize,
}

#[derive(Default)]
struct State {
    repos: Vec<FakeRepo>,
    faults: Vec<Fault>,
    log: Vec<String>,
    body_delay: Duration,
}

struct Shared {
    state: Mutex<State>,
    count: AtomicUsize,
    stop: AtomicBool,
    addr: SocketAddr,
}

/// A fake hub serving on `127.0.0.1` until dropped. See the [module docs](self).
pub struct FakeHub {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHub").field("endpoint", &self.endpoint()).finish()
    }
}

impl FakeHub {
    /// Starts serving `repos` on a free port of 127.0.0.1.
    pub fn start(repos: Vec<FakeRepo>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                repos,
                ..State::default()
            }),
            count: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            addr,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-hub".to_string())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let _ = handle(&s, stream);
                    });
                }
            })
            .expect("spawn fake hub");
        FakeHub {
            shared,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// How many requests it has received (every HEAD, GET and API call, redirects followed included).
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// The requests received so far, as `"METHOD /path"`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Scripts a failure for the next `fault.times` matching requests.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Shorthand: the next `times` GETs of `file`'s bytes fail with `kind`.
    pub fn fail_get(&self, file: &str, kind: FaultKind, times: usize) {
        self.inject(Fault {
            file: Some(file.to_string()),
            target: FaultTarget::Get,
            kind,
            times,
        });
    }

    /// Removes every scripted failure.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Waits this long before sending the bytes of each file GET (to make downloads overlap).
    pub fn set_body_delay(&self, delay: Duration) {
        self.lock().body_delay = delay;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.shared.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

impl Request {
    fn bearer(&self) -> Option<&str> {
        self.headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many bytes of the body (a truncated transfer).
    send_only: Option<usize>,
    /// Sleep before the body.
    delay: Duration,
    /// How the body is sent.
    pace: Pace,
}

/// How a body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// All at once.
    Full,
    /// Nothing at all, not even the status line.
    Never,
    /// This many bytes per second.
    Trickle(u32),
    /// This many bytes, then silence.
    StallAfter(usize),
}

impl Response {
    fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            send_only: None,
            delay: Duration::ZERO,
            pace: Pace::Full,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    fn error(status: u16, code: Option<&str>, message: &str) -> Self {
        let mut r = Response::new(status)
            .header("Content-Type", "application/json")
            .header("X-Error-Message", message)
            .body(serde_json::json!({ "error": message }).to_string().into_bytes());
        if let Some(code) = code {
            r = r.header("X-Error-Code", code);
        }
        r
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 16 {
            return Ok(None);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some(Request { method, path, headers }))
}

fn handle(shared: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream)? else {
        return Ok(());
    };
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    shared.count.fetch_add(1, Ordering::SeqCst);
    let resp = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.log.push(format!("{} {}", req.method, req.path));
        route(&mut state, &req, shared.addr)
    };
    if resp.pace == Pace::Never {
        hold_open(shared, &mut stream);
        return Ok(());
    }
    write_response(shared, &mut stream, &req, resp)
}

/// Keeps the connection open without sending anything, until the client closes it or the hub stops.
fn hold_open(shared: &Shared, stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut sink = [0u8; 256];
    while !shared.stop.load(Ordering::SeqCst) {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

fn write_response(shared: &Shared, stream: &mut TcpStream, req: &Request, resp: Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !resp
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    if req.method != "HEAD" && resp.status != 304 {
        if !resp.delay.is_zero() {
            stream.flush()?;
            std::thread::sleep(resp.delay);
        }
        let n = resp.send_only.unwrap_or(resp.body.len()).min(resp.body.len());
        match resp.pace {
            Pace::Full | Pace::Never => stream.write_all(&resp.body[..n])?,
            Pace::Trickle(rate) => {
                // A write every 50 ms (or every 1/rate s when slower) of the bytes due by then.
                let rate = rate.max(1) as usize;
                let step = Duration::from_millis(50).max(Duration::from_secs(1) / rate as u32);
                let per_step = (rate * step.as_millis() as usize / 1000).max(1);
                let mut sent = 0;
                while sent < n {
                    if shared.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    let end = (sent + per_step).min(n);
                    stream.write_all(&resp.body[sent..end])?;
                    stream.flush()?;
                    sent = end;
                    std::thread::sleep(step);
                }
            }
            Pace::StallAfter(k) => {
                stream.write_all(&resp.body[..k.min(n)])?;
                stream.flush()?;
                hold_open(shared, stream);
                return Ok(());
            }
        }
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Let the client read everything before the socket goes away.
    let mut sink = [0u8; 256];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes a matching fault (decrementing its count).
fn take_fault(state: &mut State, target: FaultTarget, file: Option<&str>) -> Option<FaultKind> {
    let i = state.faults.iter().position(|f| {
        f.times > 0
            && (f.target == target || f.target == FaultTarget::Any)
            && match (&f.file, file) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
            }
    })?;
    let f = &mut state.faults[i];
    if f.times != usize::MAX {
        f.times -= 1;
    }
    Some(f.kind)
}

fn status_fault(status: u16) -> Response {
    let message = if status >= 500 {
        "Internal Error - We're working hard to fix this as soon as possible!"
    } else {
        "Scripted failure"
    };
    Response::error(status, None, message)
}

/// A connection that is never answered.
fn no_answer() -> Response {
    let mut r = Response::new(200);
    r.pace = Pace::Never;
    r
}

/// 401 (no token) or 404 (with a token) `RepoNotFound`, as the hub answers for a missing or
/// inaccessible repo.
fn repo_not_found(req: &Request) -> Response {
    let message = "Repository Not Found for url. Please make sure you specified the correct `repo_id` and \
                   `repo_type`. If you are trying to access a private or gated repo, make sure you are \
                   authenticated.";
    match req.bearer() {
        Some(t) if t == FAKE_TOKEN => Response::error(404, Some("RepoNotFound"), message),
        Some(_) => Response::error(401, Some("RepoNotFound"), "Invalid credentials in Authorization header"),
        None => Response::error(401, Some("RepoNotFound"), message),
    }
}

fn find_repo<'a>(state: &'a State, req: &Request, id: &str) -> Result<&'a FakeRepo, Response> {
    match state.repos.iter().find(|r| r.id == id) {
        Some(r) if !r.private || req.bearer() == Some(FAKE_TOKEN) => Ok(r),
        _ => Err(repo_not_found(req)),
    }
}

fn route(state: &mut State, req: &Request, addr: SocketAddr) -> Response {
    let path = req.path.split('?').next().unwrap_or_default().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let head = req.method == "HEAD";
    if req.method != "GET" && !head {
        return Response::error(405, None, "method not allowed");
    }

    // The JSON API.
    if segs.len() >= 4 && segs[0] == "api" && segs[1] == "models" {
        match take_fault(state, FaultTarget::Api, None) {
            Some(FaultKind::Status(s)) => return status_fault(s),
            Some(FaultKind::NoAnswer) => return no_answer(),
            _ => {}
        }
        let id = format!("{}/{}", percent_decode(segs[2]), percent_decode(segs[3]));
        let rev = match &segs[4..] {
            [] => "main".to_string(),
            ["revision", rev] => percent_decode(rev),
            _ => return Response::error(404, None, "Sorry, we can't find the page you are looking for."),
        };
        let repo = match find_repo(state, req, &id) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let Some(commit) = repo.resolve(&rev) else {
            return Response::error(404, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}"));
        };
        let body = serde_json::json!({
            "_id": format!("fake-{}", &commit[..12]),
            "id": repo.id,
            "modelId": repo.id,
            "author": repo.id.split('/').next(),
            "sha": commit,
            "private": repo.private,
            "disabled": false,
            "gated": false,
            "tags": [],
            "siblings": repo.files.iter().map(|(n, _)| serde_json::json!({ "rfilename": n })).collect::<Vec<_>>(),
        });
        return Response::new(200)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.to_string().into_bytes());
    }

    // The CDN.
    if segs.len() == 2 && segs[0] == "__cdn__" {
        let sha = segs[1];
        let found = state
            .repos
            .iter()
            .flat_map(|r| r.files.iter())
            .find(|(_, d)| sha256_hex(d) == sha)
            .cloned();
        let Some((name, data)) = found else {
            return Response::error(404, None, "no such blob");
        };
        return serve_bytes(state, req, &name, data, None);
    }

    // /{owner}/{name}/resolve/{rev}/{file...}
    if segs.len() >= 5 && segs[2] == "resolve" {
        let id = format!("{}/{}", percent_decode(segs[0]), percent_decode(segs[1]));
        let rev = percent_decode(segs[3]);
        let file = segs[4..]
            .iter()
            .map(|s| percent_decode(s))
            .collect::<Vec<_>>()
            .join("/");
        if head {
            match take_fault(state, FaultTarget::Head, Some(&file)) {
                Some(FaultKind::Status(s)) => return status_fault(s),
                Some(FaultKind::NoAnswer) => return no_answer(),
                _ => {}
            }
        }
        let repo = match find_repo(state, req, &id) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let Some(commit) = repo.resolve(&rev).map(str::to_string) else {
            return Response::error(404, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}"));
        };
        let Some((_, data)) = repo.files.iter().find(|(n, _)| *n == file).cloned() else {
            return Response::error(
                404,
                Some("EntryNotFound"),
                &format!("{file} does not exist on \"{rev}\""),
            )
            .header("X-Repo-Commit", commit);
        };
        let inm = req
            .headers
            .get("if-none-match")
            .map(|v| v.trim_start_matches("W/").trim_matches('"').to_string());
        if data.len() >= LFS_THRESHOLD {
            let sha = sha256_hex(&data);
            let pointer = format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {}\n",
                data.len()
            );
            let status = if inm.as_deref() == Some(sha.as_str()) { 304 } else { 302 };
            let mut r = Response::new(status)
                .header("ETag", format!("\"{}\"", git_blob_sha1(pointer.as_bytes())))
                .header("X-Linked-Etag", format!("\"{sha}\""))
                .header("X-Linked-Size", data.len().to_string())
                .header("X-Repo-Commit", commit)
                .header("Accept-Ranges", "bytes");
            if status == 302 {
                r = r.header("Location", format!("http://{addr}/__cdn__/{sha}"));
            }
            return r;
        }
        let etag = git_blob_sha1(&data);
        if inm.as_deref() == Some(etag.as_str()) {
            return Response::new(304)
                .header("ETag", format!("\"{etag}\""))
                .header("X-Repo-Commit", commit);
        }
        if head {
            return Response::new(200)
                .header("ETag", format!("\"{etag}\""))
                .header("X-Repo-Commit", commit)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", data.len().to_string());
        }
        return serve_bytes(state, req, &file, data, Some((etag, commit)));
    }

    Response::error(404, None, "Sorry, we can't find the page you are looking for.")
}

/// The answer carrying a file's bytes, with the scripted GET faults applied.
fn serve_bytes(
    state: &mut State,
    req: &Request,
    file: &str,
    data: Vec<u8>,
    small: Option<(String, String)>,
) -> Response {
    let fault = if req.method == "GET" {
        take_fault(state, FaultTarget::Get, Some(file))
    } else {
        None
    };
    match fault {
        Some(FaultKind::Status(s)) => return status_fault(s),
        Some(FaultKind::NoAnswer) => return no_answer(),
        _ => {}
    }
    let len = data.len();
    let mut r = Response::new(200)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", len.to_string())
        .header("Accept-Ranges", "bytes");
    if let Some((etag, commit)) = small {
        r = r.header("ETag", format!("\"{etag}\"")).header("X-Repo-Commit", commit);
    }
    r.delay = state.body_delay;
    match fault {
        Some(FaultKind::Truncate) => {
            r.send_only = Some(len / 2);
            r.body(data)
        }
        Some(FaultKind::Trickle(rate)) => {
            r.pace = Pace::Trickle(rate);
            r.body(data)
        }
        Some(FaultKind::StallAfter(k)) => {
            r.pace = Pace::StallAfter(k);
            r.body(data)
        }
        Some(FaultKind::WrongBody) => {
            let mut bad = data;
            for b in bad.iter_mut() {
                *b ^= 0x5a;
            }
            r.body(bad)
        }
        _ => r.body(data),
    }
}
