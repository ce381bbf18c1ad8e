//! The machine's memory bandwidth of the moment: the yardstick for an op that moves more bytes than it
//! multiplies (a 1x1 conv over a large map, a pool, the classifier at batch 1). Each thread streams its own
//! share of a working set, `c[i] = a[i] + b[i]` over three arrays of f32 (the traffic of a conv's residual add:
//! two reads and a write), and the bandwidth is the bytes the program reads and writes over the time, counted
//! as [`crate::profile::OpRecord::bytes`] counts an op's (no write-allocate reads).
//!
//! The working set decides which level of the memory hierarchy answers: one larger than the caches measures
//! the memory's bandwidth; one of an op's size measures what that op can expect.
//!
//! ```
//! // 8 MiB streamed by one thread for about 20 ms: some GB/s on any machine.
//! let gbps = resnet::layers::engine::memory_bandwidth(1, 8 << 20, 20);
//! assert!(gbps > 0.1 && gbps < 10_000.0, "{gbps}");
//! ```

use std::time::{Duration, Instant};

/// GB/s (1e9 bytes) read and written by `threads` threads streaming a working set of about `bytes` bytes
/// together (each its own three arrays of `bytes / (3 threads)`, at least 4 KiB each), for about `millis` ms
/// after one untimed pass that touches every page.
pub fn memory_bandwidth(threads: usize, bytes: usize, millis: u64) -> f64 {
    let threads = threads.max(1);
    let len = (bytes / (3 * threads * 4)).max(1024);
    let budget = Duration::from_millis(millis.max(1));
    // Every thread allocates and touches its own arrays (first touch places them near it), waits for all
    // others, then runs passes until the budget is spent; the time is the slowest thread's.
    let ready = std::sync::Barrier::new(threads);
    let (passes, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let ready = &ready;
                s.spawn(move || {
                    let a = vec![1.0f32; len];
                    let b = vec![2.0f32; len];
                    let mut c = vec![0.0f32; len];
                    add(&a, &b, &mut c);
                    ready.wait();
                    let start = Instant::now();
                    let mut passes = 0usize;
                    while passes == 0 || start.elapsed() < budget {
                        add(&a, &b, &mut c);
                        std::hint::black_box(&mut c);
                        passes += 1;
                    }
                    (passes, start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, Duration::ZERO)))
            .fold((0usize, Duration::ZERO), |(p, t), (q, u)| (p + q, t.max(u)))
    });
    let moved = (passes * 3 * len * 4) as f64;
    moved / elapsed.as_secs_f64().max(1e-9) / 1e9
}

/// `c = a + b`, with the widest vectors this CPU has.
fn add(a: &[f32], b: &[f32], c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { add_avx512(a, b, c) };
    }
    add_plain(a, b, c)
}

fn add_plain(a: &[f32], b: &[f32], c: &mut [f32]) {
    for ((c, a), b) in c.iter_mut().zip(a).zip(b) {
        *c = a + b;
    }
}

/// The same loop, compiled for AVX-512 (the compiler vectorizes it with zmm registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_avx512(a: &[f32], b: &[f32], c: &mut [f32]) {
    for ((c, a), b) in c.iter_mut().zip(a).zip(b) {
        *c = a + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream computes what it claims (a wrong loop would time less work).
    #[test]
    fn the_stream_adds() {
        let a: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..1000).map(|i| 0.5 * i as f32).collect();
        let mut c = vec![0.0; 1000];
        add(&a, &b, &mut c);
        assert!(c.iter().enumerate().all(|(i, &v)| v == 1.5 * i as f32));
    }

    /// A working set in cache streams faster than one far beyond it: the measure sees the hierarchy (a
    /// bandwidth that ignored the arrays, or timed nothing, would not). Best of three, against the noise of a
    /// shared machine.
    #[test]
    fn cache_is_faster_than_memory() {
        let best = |bytes| (0..3).map(|_| memory_bandwidth(1, bytes, 30)).fold(0.0, f64::max);
        let (small, large) = (best(96 << 10), best(768 << 20));
        assert!(small > 1.2 * large, "96 KiB {small:.1} GB/s, 768 MiB {large:.1} GB/s");
    }
}
