//! The stable-Rust fuzz harness, run by `cargo test`: for every target of `zoo_fuzz::TARGETS`, its seed
//! corpus and then `ZOO_FUZZ_ITERS` mutated inputs (default: see `default_iters`) from the fixed seed
//! `ZOO_FUZZ_SEED`, in a child process (this binary again) that
//! - runs under a global allocator that refuses to hold more than `CAP` bytes at once (a refused
//!   allocation aborts with "memory allocation of N bytes failed"),
//! - reports each input before running it, so the parent knows which input crashed (a panic, an abort, a
//!   signal) or hung (no report within `PER_INPUT` seconds).
//!
//! A failing input is rebuilt from its index and saved to `target/fuzz-failures/<target>/`, and the test
//! fails naming it; copy it into `corpus/<target>/` with the fix. `cargo test -p zoo-fuzz --test mutation
//! -- npy` runs one target; `ZOO_FUZZ_ITERS=100000 ZOO_FUZZ_SEED=$RANDOM` makes a longer, different run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The most bytes a worker may hold at once.
const CAP: usize = 1 << 30;
/// An input that runs longer than this is a hang (a debug build on a busy 2-core machine is slow; a real
/// hang never ends). Counted in the worker's own CPU time where Linux reports it (see [`still_working`]):
/// a worker that other processes starved of CPU, or that was paused, is not hung.
const PER_INPUT: Duration = Duration::from_secs(60);
/// However starved, a worker that reports nothing for this long is a hang.
const WALL_LIMIT: Duration = Duration::from_secs(600);
const WORKER: &str = "ZOO_FUZZ_WORKER";

struct Capped;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

fn admit(size: usize) -> bool {
    let before = LIVE.fetch_add(size, Ordering::Relaxed);
    if before.saturating_add(size) > LIMIT.load(Ordering::Relaxed) {
        LIVE.fetch_sub(size, Ordering::Relaxed);
        return false;
    }
    true
}

// SAFETY: forwards to the system allocator; only counts, and refuses (null) over the limit.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !admit(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

/// Mutated inputs per target in a default (CI) run: a few minutes in all on 2 cores, debug build.
fn default_iters(target: &str) -> u64 {
    match target {
        "image" => 1500,
        "safetensors" => 3000,
        "pth" => 3000,
        "keras" => 2000,
        "npy" => 4000,
        _ => 1000,
    }
}

fn env_u64(key: &str) -> Option<u64> {
    let v = std::env::var(key).ok()?;
    v.trim().parse().ok().or_else(|| panic!("{key}={v:?} is not a number"))
}

fn main() {
    if let Ok(target) = std::env::var(WORKER) {
        worker(&target);
        return;
    }
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let seed = env_u64("ZOO_FUZZ_SEED").unwrap_or(0x200c_0ffe);
    let mut failures = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for (name, _) in zoo_fuzz::TARGETS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let iters = env_u64("ZOO_FUZZ_ITERS").unwrap_or_else(|| default_iters(name));
        let start = Instant::now();
        let f = campaign(name, seed, iters);
        println!(
            "fuzz {name}: {} inputs (seed {seed:#x}) in {:.1} s: {}",
            iters + zoo_fuzz::seeds(name).len() as u64,
            start.elapsed().as_secs_f64(),
            if f.is_empty() {
                "ok".to_string()
            } else {
                format!("{} FAILED", f.len())
            }
        );
        if f.is_empty() {
            passed += 1;
        } else {
            failed += 1;
        }
        failures.extend(f);
    }
    for f in &failures {
        eprintln!("{f}");
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Runs `iters` mutated inputs (after the seeds) of `target`, restarting the worker after a failure;
/// returns one message per failing input (at most 10).
fn campaign(target: &str, seed: u64, iters: u64) -> Vec<String> {
    let seeds = zoo_fuzz::seeds(target);
    let end = seeds.len() as u64 + iters;
    let mut next = 0;
    let mut failures = Vec::new();
    while next < end && failures.len() < 10 {
        match run_worker(target, seed, next, end) {
            Ok(()) => break,
            Err((index, what)) => {
                let input = zoo_fuzz::mutate::input(&seeds, seed, index);
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/fuzz-failures")
                    .join(target);
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("{seed:x}-{index}.bin"));
                let _ = std::fs::write(&path, &input);
                failures.push(format!(
                    "fuzz {target}: input {index} ({} bytes, saved to {}): {what}",
                    input.len(),
                    path.display()
                ));
                next = index + 1;
            }
        }
    }
    failures
}

/// One worker over inputs `from..to`; `Err((index, what))` for the input that failed.
fn run_worker(target: &str, seed: u64, from: u64, to: u64) -> Result<(), (u64, String)> {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(WORKER, target)
        .env("ZOO_FUZZ_SEED", seed.to_string())
        .env("ZOO_FUZZ_FROM", from.to_string())
        .env("ZOO_FUZZ_TO", to.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker");
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut current = from;
    let mut done = false;
    // Since the last report: when it came, and the worker's CPU seconds at the first timeout after it.
    let mut quiet_since = std::time::Instant::now();
    let mut cpu_mark: Option<f64> = None;
    loop {
        match rx.recv_timeout(PER_INPUT) {
            Ok(line) => {
                if line == "done" {
                    done = true;
                } else {
                    current = line.trim().parse().unwrap_or(current);
                }
                quiet_since = std::time::Instant::now();
                cpu_mark = None;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if quiet_since.elapsed() < WALL_LIMIT && still_working(child.id(), &mut cpu_mark) {
                    continue;
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    current,
                    format!("no result within {} s of its CPU time (a hang)", PER_INPUT.as_secs()),
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().expect("wait for the worker");
    let stderr = err_thread.join().unwrap_or_default();
    if done && status.success() {
        return Ok(());
    }
    let tail: String = stderr
        .lines()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Err((current, format!("the worker died ({status}):\n{tail}")))
}

/// After a `PER_INPUT` without a report: true while the worker has not yet spent `PER_INPUT` of CPU time
/// on it (it was starved or paused: wait on), false for a hang (or where `/proc` cannot tell). The first
/// call after a report marks the worker's CPU time; later ones measure from that mark, so a worker that
/// spins is reported after two periods and one that blocks (asleep, not runnable) after one.
fn still_working(pid: u32, cpu_mark: &mut Option<f64>) -> bool {
    let Some((cpu, state)) = cpu_seconds(pid) else {
        return false;
    };
    match *cpu_mark {
        None => {
            *cpu_mark = Some(cpu);
            // Runnable but waiting for a core, or stopped (SIGSTOP): not hung yet. Asleep: blocked, a hang.
            matches!(state, 'R' | 'T' | 't')
        }
        Some(mark) => cpu - mark < PER_INPUT.as_secs_f64() && matches!(state, 'R' | 'T' | 't'),
    }
}

/// A process's CPU seconds (user + system) and state letter, from Linux's `/proc/PID/stat` (fields 3, 14
/// and 15; clock ticks of 1/100 s, the value every Linux architecture reports for `CLK_TCK`).
fn cpu_seconds(pid: u32) -> Option<(f64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((ticks / 100.0, state))
}

fn worker(target: &str) {
    let f = zoo_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map(|(_, f)| *f)
        .expect("known target");
    let seed = env_u64("ZOO_FUZZ_SEED").unwrap_or(0);
    let from = env_u64("ZOO_FUZZ_FROM").unwrap_or(0);
    let to = env_u64("ZOO_FUZZ_TO").unwrap_or(0);
    let seeds = zoo_fuzz::seeds(target);
    LIMIT.store(CAP, Ordering::SeqCst);
    let mut out = std::io::stdout().lock();
    for i in from..to {
        let input = zoo_fuzz::mutate::input(&seeds, seed, i);
        let _ = writeln!(out, "{i}");
        let _ = out.flush();
        f(&input);
    }
    zoo_fuzz::targets::remove_scratch();
    let _ = writeln!(out, "done");
    let _ = out.flush();
}
