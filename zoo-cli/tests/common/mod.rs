//! Helpers shared by the CLI tests: the binary with a clean environment, test data, output parsing.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// `zoo` with an environment that never touches the user's cache or a real hub.
pub fn zoo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zoo"));
    // Never touch the user's cache or a real hub from tests.
    c.env("HF_HOME", std::env::temp_dir().join("zoo-cli-tests-unused-hf-home"))
        .env("HF_ENDPOINT", zoo_testkit::unreachable_endpoint())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    c
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn cifar20() -> String {
    let shared = std::env::var_os("ZOO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"));
    shared
        .join("fixtures/cifar10-resnet/resnet20.safetensors")
        .display()
        .to_string()
}

/// Real test data fetched by scripts/fetch_test_data.sh; missing data fails in CI and is skipped loudly
/// elsewhere.
pub fn data(rel: &str) -> Option<PathBuf> {
    let p = root().join(".data").join(rel);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: run scripts/fetch_test_data.sh",
        p.display()
    );
    eprintln!("SKIPPED: {} is missing; run scripts/fetch_test_data.sh", p.display());
    None
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("zoo runs");
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// A shared CIFAR ResNet (`resnet20`, `resnet32`, ...) of `../shared`.
pub fn cifar(name: &str) -> PathBuf {
    let shared = std::env::var_os("ZOO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"));
    shared.join(format!("fixtures/cifar10-resnet/{name}.safetensors"))
}

/// Runs `cmd` with stdin closed, killing it after `secs`: a hang is a test failure, not a stuck CI job.
pub fn run_within(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("zoo starts");
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        so.read_to_end(&mut v).ok();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        se.read_to_end(&mut v).ok();
        v
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            child.kill().ok();
            child.wait().ok();
            panic!("zoo did not finish within {secs} s: {cmd:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The outcome every bad input must have: a non-zero exit with a message, and never a panic or an abort.
pub fn assert_clean_error(out: &Output, mentions: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure: {err}");
    assert!(!err.contains("panicked") && !err.contains("memory allocation"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), None, "killed by a signal: {err}");
    }
    for m in mentions {
        assert!(err.contains(m), "the message should mention `{m}`: {err}");
    }
}
