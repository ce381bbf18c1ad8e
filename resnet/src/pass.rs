//! One forward pass on the CPU thread pool, with the pool's other threads kept at hand between its ops.
//!
//! A pass is a chain of ops (a ResNet-50 has 53 convs), each cut into tasks on rayon's pool. Between two ops
//! the calling thread runs a little serial glue (the next op's output buffer, Candle's bookkeeping), tens of
//! microseconds; an idle rayon worker falls asleep within about as long, and waking it takes 50-100 µs on
//! the 2-vCPU machines we measure on. At batch 1 every op then starts on one thread and the second joins
//! late: ResNet-18 ran 1.66x faster on 2 threads than on 1, with ~2 ms of its ~13 lost to those starts.
//!
//! [`pass`] runs the pass inside the pool and gives each of the pool's other threads a *lingerer*: a task
//! that takes the pass's work as it appears (`rayon::yield_now`) and, when there is none, waits for it, but
//! only for [`linger`] (200 µs by default) at a time and never beyond the pass. So between the ops of one
//! pass the threads stay awake, as ONNX Runtime's spin by default, while no thread spins once the pass is
//! over or when the pass itself pauses for longer (a slow serial op, a caller's own work). The waits are
//! bounded, so lingerers of concurrent passes (several models run from a caller's threads, one pool) cannot
//! wait on one another for more than that: at worst one pass is held up by it. `ZOO_LINGER_US` sets the
//! bound (`0`: no lingerers, rayon's own idling).
//!
//! Only passes of fewer images than threads (batch 1 on 2 threads) run this way: with an image per thread
//! each op's tasks are whole images, a late thread costs them little (ResNet-50 at batch 8: within the
//! noise), and the pass stays on the caller's thread, so its activations come from that thread's allocator
//! arena as before (run from pool threads, batch-16 passes left one retained peak per thread's arena under
//! `zoo`'s keep-freed-memory allocator settings: +98 MB over 1000 images; a single arena instead cost bf16
//! batch 8 ~10 % in allocator contention).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a lingerer waits for work before it gives its thread back: `ZOO_LINGER_US` microseconds (read
/// once per process), else 200 µs. Zero turns lingering off.
pub fn linger() -> Duration {
    static LINGER: OnceLock<Duration> = OnceLock::new();
    *LINGER.get_or_init(|| {
        let us = std::env::var("ZOO_LINGER_US").ok().and_then(|v| v.trim().parse().ok());
        Duration::from_micros(us.unwrap_or(200).min(100_000))
    })
}

/// Runs `f`, one forward pass over `images` images, in the thread pool with a lingerer on each of its other
/// threads (see the module docs), where the pass's ops are cut within images: fewer images than threads.
/// With an image per thread or more, each op's tasks are whole images, long enough that a late thread
/// costs little, and `f` runs as it is (on the caller's thread, whose allocator arena then holds the
/// pass's activations as before), as it does where lingering is off or the pool has one thread.
pub fn pass<R: Send>(images: usize, f: impl FnOnce() -> R + Send) -> R {
    let wait = linger();
    let threads = rayon::current_num_threads();
    if wait.is_zero() || threads < 2 || images >= threads {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let owner = rayon::current_thread_index();
        let done = &done;
        for _ in 1..threads {
            s.spawn(move |_| {
                // Taken by the pass's own thread (while it waits inside the pass): nothing to keep awake.
                if rayon::current_thread_index() == owner {
                    return;
                }
                let mut idle = Instant::now();
                while !done.load(Ordering::Acquire) {
                    match rayon::yield_now() {
                        Some(rayon::Yield::Executed) => idle = Instant::now(),
                        _ if idle.elapsed() > wait => return,
                        _ => std::hint::spin_loop(),
                    }
                }
            });
        }
        let out = f();
        done.store(true, Ordering::Release);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// A pass gives what it computes, on any pool size, from outside the pool and from inside one of its
    /// tasks.
    #[test]
    fn a_pass_returns_its_result() {
        let sum = |n: u64| (0..n).into_par_iter().map(|i| i * i).sum::<u64>();
        assert_eq!(pass(1, || sum(1000)), 332_833_500);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(one.install(|| pass(1, || sum(1000))), 332_833_500);
        let nested: Vec<u64> = (0..8u64).into_par_iter().map(|k| pass(1, || sum(10 + k))).collect();
        assert_eq!(nested, (0..8u64).map(|k| sum(10 + k)).collect::<Vec<_>>());
    }

    /// The calling thread's CPU time so far, in clock ticks (user + system, from `/proc/thread-self/stat`).
    #[cfg(target_os = "linux")]
    fn cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th of them.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// While a pass pauses without work for the pool (here: sleeps 400 ms), its lingerer gives its thread
    /// back after the linger bound instead of spinning through the pause; with the bound removed it would
    /// burn ~40 ticks of CPU. Counted on the pool's own threads, whatever else the process runs meanwhile.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_pausing_pass_burns_no_core() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let cpu_ticks = || pool.broadcast(|_| cpu_ticks()).iter().sum::<u64>();
        let before = cpu_ticks();
        let out = pool.install(|| {
            pass(1, || {
                let a = (0..1000u64).into_par_iter().sum::<u64>();
                std::thread::sleep(Duration::from_millis(400));
                a + (0..1000u64).into_par_iter().sum::<u64>()
            })
        });
        assert_eq!(out, 2 * 499_500);
        let burnt = cpu_ticks() - before;
        assert!(burnt < 15, "{burnt} ticks of CPU during a 400 ms pause");
    }

    /// Concurrent passes from several of a caller's threads (more than the pool has), each waiting on its
    /// own nested parallel work, all finish: a lingerer that lands inside another pass holds it up for at
    /// most the linger bound.
    #[test]
    fn concurrent_passes_all_finish() {
        const ROUNDS: u64 = 400;
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..6u64 {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut total = 0u64;
                for round in 0..ROUNDS {
                    total += pass(1, || {
                        (0..64u64)
                            .into_par_iter()
                            .map(|i| (0..200u64).into_par_iter().map(|j| i * j + t + round).sum::<u64>())
                            .sum::<u64>()
                    });
                }
                tx.send((t, total)).unwrap();
            });
        }
        drop(tx);
        let mut seen = Vec::new();
        for _ in 0..6 {
            let (t, total) = rx
                .recv_timeout(Duration::from_secs(120))
                .expect("a pass never finished");
            let want: u64 = (0..ROUNDS)
                .map(|round| {
                    (0..64u64)
                        .map(|i| (0..200u64).map(|j| i * j + t + round).sum::<u64>())
                        .sum::<u64>()
                })
                .sum();
            assert_eq!(total, want, "thread {t}");
            seen.push(t);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
    }
}
